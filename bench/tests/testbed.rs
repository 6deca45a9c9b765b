//! Tests of the namespace testbed (run as root; they need no engine).
//!
//! The engine half of `Cluster` is exercised with a fake engine: this test binary itself,
//! re-executed through a small shell script as `fake_engine_entry`, which speaks the admin
//! protocol (`dataplane::admin`) and creates the TAPs a real engine would.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bench::testbed::{self, veth, Cluster, Netns, NodeDef, PodDef, PortKindDef, RAW_TABLE};

fn netns_list() -> HashSet<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn root_has_link(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .expect("ip link")
        .status
        .success()
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

#[test]
fn netns_is_created_with_lo_up_and_deleted_on_drop() {
    let ns = Netns::new("create").unwrap();
    let name = ns.name().to_string();
    assert!(
        name.starts_with(&format!("sl{}-", std::process::id())) && name.ends_with("-create"),
        "{name}"
    );
    assert!(netns_list().contains(&name));
    assert!(Path::new("/var/run/netns").join(&name).exists());
    let lo = ns.ip(&["-o", "link", "show", "lo"]).unwrap();
    assert!(lo.contains("UP"), "lo not up: {lo}");
    assert_eq!(ns.links().unwrap(), vec!["lo".to_string()]);
    drop(ns);
    assert!(
        !netns_list().contains(&name),
        "{name} still listed after drop"
    );
    assert!(!Path::new("/var/run/netns").join(&name).exists());
}

#[test]
fn netns_names_are_unique_and_sane() {
    let a = Netns::new("same").unwrap();
    let b = Netns::new("same").unwrap();
    assert_ne!(a.name(), b.name());
    let c = Netns::new("a role/with spaces and a very long tail").unwrap();
    // Sanitized and cut to 16 characters.
    assert!(c.name().ends_with("-a-role-with-spac"), "{}", c.name());
    assert!(c
        .name()
        .chars()
        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'));
}

#[test]
fn ip_errors_carry_command_and_stderr() {
    let ns = Netns::new("iperr").unwrap();
    let e = ns
        .ip(&["link", "show", "dev", "nosuchif0"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("ip -n {} link show dev nosuchif0", ns.name())),
        "{e}"
    );
    assert!(e.contains("nosuchif0") && e.contains("exist"), "{e}");
    let out = ns
        .exec(&["sh", "-c", "echo out; echo err >&2; exit 3"])
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
}

#[test]
fn run_executes_inside_the_namespace() {
    let a = Netns::new("runa").unwrap();
    let b = Netns::new("runb").unwrap();
    // The thread's own view of interfaces is the namespace's: only lo.
    let devs = a.run(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap());
    let names: Vec<&str> = devs
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(names, vec!["lo"], "{devs}");
    // A listener opened in A lives in A: reachable from A, refused from B (whose lo is empty).
    let listener = a.run(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap();
    let refused = b.run(|| TcpStream::connect(addr).map(drop).unwrap_err().kind());
    assert_eq!(refused, std::io::ErrorKind::ConnectionRefused);
    let accepted = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        buf
    });
    a.run(|| {
        TcpStream::connect(addr)
            .unwrap()
            .write_all(b"inside a")
            .unwrap()
    });
    assert_eq!(accepted.join().unwrap(), "inside a");
    // Borrowing from the caller works (scoped thread).
    let local = String::from("borrowed");
    assert_eq!(a.run(|| local.len()), 8);
}

#[test]
fn run_propagates_a_panic_and_spawn_enters_too() {
    let ns = Netns::new("runpanic").unwrap();
    let r = std::panic::catch_unwind(|| ns.run(|| panic!("boom inside")));
    let payload = r.unwrap_err();
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert_eq!(msg, "boom inside");
    let h = ns.spawn(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap());
    let devs = h.join().unwrap();
    assert_eq!(devs.lines().count(), 3, "{devs}");
}

#[test]
fn veth_connects_two_namespaces() {
    let a = Netns::new("vetha").unwrap();
    let b = Netns::new("vethb").unwrap();
    let (ia, ib) = (
        format!("tbva{}", std::process::id() % 10000),
        "tbvb".to_string(),
    );
    veth(&a, &ia, &b, &ib).unwrap();
    assert!(a.links().unwrap().contains(&ia));
    assert!(b.links().unwrap().contains(&ib));
    assert!(!a.links().unwrap().contains(&ib));
    assert!(
        !root_has_link(&ia),
        "veth end {ia} appeared in the root namespace"
    );
    a.ip(&["addr", "add", "10.99.0.1/24", "dev", &ia]).unwrap();
    b.ip(&["addr", "add", "10.99.0.2/24", "dev", &ib]).unwrap();
    assert_ne!(a.mac(&ia).unwrap(), b.mac(&ib).unwrap());
    let listener = b.run(|| TcpListener::bind("10.99.0.2:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    let server = b.spawn(move || {
        let (mut s, peer) = listener.accept().unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        (buf, peer)
    });
    a.run(|| {
        let mut s = TcpStream::connect(SocketAddr::from((ip(10, 99, 0, 2), port))).unwrap();
        s.write_all(b"hello over veth").unwrap();
    });
    let (msg, peer) = server.join().unwrap();
    assert_eq!(msg, "hello over veth");
    assert_eq!(peer.ip(), ip(10, 99, 0, 1));
    // Bad names are refused before anything is created.
    let e = veth(&a, "0123456789abcdef", &b, "x").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("0123456789abcdef"), "{e}");
}

#[test]
fn sysctl_is_per_namespace() {
    let ns = Netns::new("sysctl").unwrap();
    ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(ns.read_sysctl("net.ipv4.ip_forward").unwrap(), "1");
    ns.sysctl("net.ipv4.ip_forward", "0").unwrap();
    assert_eq!(ns.read_sysctl("net.ipv4.ip_forward").unwrap(), "0");
    assert!(ns.sysctl("net.ipv4.ip_forward;reboot", "1").is_err());
    assert!(ns.sysctl("net.ipv4.ip_forward", "1 2=3").is_err());
    let e = ns
        .read_sysctl("net.ipv4.no_such_knob")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no_such_knob"), "{e}");
}

#[test]
fn a_panic_still_removes_namespaces_and_clusters() {
    let names = Mutex::new(Vec::<String>::new());
    let dir = Mutex::new(PathBuf::new());
    let r = std::panic::catch_unwind(|| {
        let a = Netns::new("panica").unwrap();
        names.lock().unwrap().push(a.name().to_string());
        let cluster = Cluster::build_network_only(vec![NodeDef::new(
            "node-1",
            "10.244.1.0/24",
            vec![PodDef::afpacket("a", ip(10, 244, 1, 10))],
        )])
        .unwrap();
        names
            .lock()
            .unwrap()
            .push(cluster.node("node-1").netns().name().to_string());
        names
            .lock()
            .unwrap()
            .push(cluster.pod("a").netns().name().to_string());
        *dir.lock().unwrap() = cluster.dir().to_path_buf();
        panic!("test body failed");
    });
    assert!(r.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 3);
    let list = netns_list();
    for n in &names {
        assert!(!list.contains(n), "{n} left behind after a panic");
    }
    let dir = dir.into_inner().unwrap();
    assert!(
        dir.starts_with(std::env::temp_dir()) && !dir.exists(),
        "{}",
        dir.display()
    );
}

#[test]
fn sweep_removes_namespaces_and_dirs_of_dead_processes_only() {
    // A pid that ran and is gone (reaped).
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = format!("sl{dead}-0-stale");
    let stale_dir = std::env::temp_dir().join(format!("sluice-tb-{dead}-0"));
    let added = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(added.success());
    std::fs::create_dir_all(stale_dir.join("sub")).unwrap();
    let live = Netns::new("live").unwrap();
    // (Another test process's sweep may remove it first: that is the point of sweeping.)
    testbed::sweep_stale();
    let list = netns_list();
    let gone = !list.contains(&stale);
    if !gone {
        // Do not leak it even if the assertion below fails.
        let _ = Command::new("ip").args(["netns", "del", &stale]).status();
    }
    assert!(gone, "stale {stale} not swept");
    assert!(!stale_dir.exists(), "stale dir not swept");
    assert!(list.contains(live.name()), "live namespace swept");
}

fn raw_counter(node: &Netns, family: &str) -> u64 {
    let text = node
        .exec_ok(&["nft", "list", "table", family, RAW_TABLE])
        .unwrap();
    let rest = text
        .split("counter packets ")
        .nth(1)
        .unwrap_or_else(|| panic!("{text}"));
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn network_only_cluster_is_wired_as_promised() {
    let cluster = Cluster::build_network_only(vec![
        NodeDef::new(
            "node-1",
            "10.244.1.0/24",
            vec![
                PodDef::afpacket("a", ip(10, 244, 1, 10)),
                PodDef::afpacket("b", ip(10, 244, 1, 11)),
                PodDef::tap("t", ip(10, 244, 1, 12)),
            ],
        ),
        NodeDef::new("node-2", "10.244.2.0/24", vec![]),
    ])
    .unwrap();
    let node = cluster.node("node-1");
    assert_eq!(node.gateway(), ip(10, 244, 1, 1));
    assert_eq!(cluster.node("node-2").gateway(), ip(10, 244, 2, 1));
    for n in cluster.nodes() {
        let ns = n.netns();
        assert_eq!(ns.read_sysctl("net.ipv4.ip_forward").unwrap(), "0");
        assert_eq!(ns.read_sysctl("net.ipv4.conf.all.forwarding").unwrap(), "0");
        assert!(!n.engine_running());
    }
    // Node 1 holds exactly lo and the two host ends: up, without any address.
    let hosts: Vec<String> = ["a", "b"]
        .iter()
        .map(|p| cluster.pod(p).host_ifname().unwrap().to_string())
        .collect();
    assert_eq!(node.engine_interfaces(), hosts.as_slice());
    let mut links = node.netns().links().unwrap();
    links.sort();
    let mut want = vec!["lo".to_string(), hosts[0].clone(), hosts[1].clone()];
    want.sort();
    assert_eq!(links, want);
    for h in &hosts {
        assert!(h.len() <= 15, "{h}");
        assert!(!root_has_link(h), "{h} in the root namespace");
        let link = node.netns().ip(&["-o", "link", "show", "dev", h]).unwrap();
        assert!(link.contains(",UP"), "{link}");
        let addrs = node.netns().ip(&["-o", "addr", "show", "dev", h]).unwrap();
        assert_eq!(addrs.trim(), "", "node kernel has an address on {h}");
    }
    // Pods: eth0 with IP/32, up, a link route to the gateway and a default route via it.
    let a = cluster.pod("a");
    assert_eq!(
        (a.ifname(), a.node(), a.kind()),
        ("eth0", "node-1", PortKindDef::AfPacket)
    );
    let addr = a
        .netns()
        .ip(&["-o", "-4", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert!(addr.contains("inet 10.244.1.10/32"), "{addr}");
    let routes = a.netns().ip(&["route", "show"]).unwrap();
    assert!(
        routes.contains("default via 10.244.1.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("10.244.1.1 dev eth0 scope link"),
        "{routes}"
    );
    let mac = a.mac().unwrap();
    let shown = a
        .netns()
        .ip(&["-o", "link", "show", "dev", "eth0"])
        .unwrap();
    let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert!(shown.contains(&hex.join(":")), "{shown}");
    // Offloads stay on in pods.
    if let Ok(k) = a.netns().exec_ok(&["ethtool", "-k", "eth0"]) {
        assert!(k.contains("tx-checksumming: on"), "{k}");
    }
    // A TAP pod has nothing until an engine creates its TAP.
    let t = cluster.pod("t");
    assert_eq!(t.kind(), PortKindDef::Tap);
    assert!(t.ifname().starts_with("tap") && t.ifname().len() <= 15);
    assert_eq!(t.netns().links().unwrap(), vec!["lo".to_string()]);
    assert!(t.mac().is_err());
    // The cluster file says all of it.
    let yaml = std::fs::read_to_string(cluster.config_path()).unwrap();
    for want in [
        format!("  name: {}\n", cluster.name()),
        "  cluster_cidr: 10.244.0.0/16\n".to_string(),
        "  - name: node-1\n    pod_cidr: 10.244.1.0/24\n    gateway: 10.244.1.1\n".to_string(),
        format!("    admin_socket: {:?}\n", node.admin_socket().to_str().unwrap()),
        format!(
            "      - name: a\n        ip: 10.244.1.10\n        port:\n          kind: afpacket\n          interface: \"{}\"\n",
            hosts[0]
        ),
        format!(
            "      - name: t\n        ip: 10.244.1.12\n        port:\n          kind: tap\n          interface: \"{}\"\n          netns: \"{}\"\n",
            t.ifname(),
            t.netns().name()
        ),
        "  - name: node-2\n    pod_cidr: 10.244.2.0/24\n    gateway: 10.244.2.1\n".to_string(),
        "    pods: []\n".to_string(),
    ] {
        assert!(yaml.contains(&want), "missing {want:?} in\n{yaml}");
    }
    assert!(node.admin_socket().starts_with(cluster.dir()));
    // ... and the control plane reads it back as written.
    let loaded = control::config::load(cluster.config_path()).unwrap();
    assert_eq!(loaded.name, cluster.name());
    assert_eq!(loaded.nodes.len(), 2);
    let n1 = &loaded.nodes[0];
    assert_eq!(
        (n1.name.as_str(), n1.gateway),
        ("node-1", ip(10, 244, 1, 1))
    );
    assert_eq!(n1.admin_socket, node.admin_socket());
    let pods: Vec<(&str, Ipv4Addr, PortKindDef, &str, Option<&str>)> = n1
        .pods
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.ip,
                p.port.kind,
                p.port.interface.as_str(),
                p.port.netns.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        pods,
        vec![
            (
                "a",
                ip(10, 244, 1, 10),
                PortKindDef::AfPacket,
                hosts[0].as_str(),
                None
            ),
            (
                "b",
                ip(10, 244, 1, 11),
                PortKindDef::AfPacket,
                hosts[1].as_str(),
                None
            ),
            (
                "t",
                ip(10, 244, 1, 12),
                PortKindDef::Tap,
                t.ifname(),
                Some(t.netns().name())
            ),
        ]
    );
    assert!(loaded.nodes[1].pods.is_empty());
    // The node kernel drops what arrives on engine interfaces: IPv4 in raw prerouting...
    let host_mac = node.netns().mac(&hosts[0]).unwrap();
    let lladdr: Vec<String> = host_mac.iter().map(|b| format!("{b:02x}")).collect();
    a.netns()
        .ip(&[
            "neigh",
            "add",
            "10.244.1.1",
            "lladdr",
            &lladdr.join(":"),
            "dev",
            "eth0",
        ])
        .unwrap();
    assert_eq!(raw_counter(node.netns(), "ip"), 0);
    a.netns().run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..3 {
            s.send_to(b"for the engine", "10.244.1.1:9").unwrap();
        }
    });
    wait_for("3 drops in ip raw", || raw_counter(node.netns(), "ip") >= 3);
    // ... and ARP in the arp family's input hook (pod b resolves its gateway).
    let b = cluster.pod("b");
    b.netns().run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"x", "10.244.1.1:9").unwrap();
    });
    wait_for("an ARP drop", || raw_counter(node.netns(), "arp") >= 1);
    // Node 2 has no engine interfaces, hence no raw table.
    assert!(cluster
        .node("node-2")
        .netns()
        .exec_ok(&["nft", "list", "tables"])
        .unwrap()
        .trim()
        .is_empty());
    // Drop removes every namespace and the temp dir.
    let names: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| n.netns().name().to_string())
        .chain(cluster.pods().iter().map(|p| p.netns().name().to_string()))
        .collect();
    assert_eq!(names.len(), 5);
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    let list = netns_list();
    for n in &names {
        assert!(!list.contains(n), "{n} left behind");
    }
    assert!(!dir.exists());
}

#[test]
fn bad_definitions_are_refused_and_leave_nothing() {
    let before = netns_list();
    let cases = [
        (
            vec![NodeDef::new("node-1", "10.244.1.0", vec![])],
            "bad pod_cidr \"10.244.1.0\"",
        ),
        (
            vec![NodeDef::new("Node_1", "10.244.1.0/24", vec![])],
            "bad node name \"Node_1\"",
        ),
        (
            vec![
                NodeDef::new(
                    "n1",
                    "10.244.1.0/24",
                    vec![PodDef::afpacket("a", ip(10, 244, 1, 2))],
                ),
                NodeDef::new(
                    "n2",
                    "10.244.2.0/24",
                    vec![PodDef::tap("a", ip(10, 244, 2, 2))],
                ),
            ],
            "duplicate pod name \"a\"",
        ),
    ];
    for (nodes, want) in cases {
        let e = Cluster::build_network_only(nodes).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains(want), "{e} lacks {want}");
    }
    let e = Cluster::build(Path::new("/nonexistent/sluice"), vec![]).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/sluice"), "{e}");
    let ours = format!("sl{}-", std::process::id());
    let leaked: Vec<String> = netns_list()
        .difference(&before)
        .filter(|n| n.starts_with(&ours))
        .cloned()
        .collect();
    // Other tests run in parallel: only namespaces of failed builds would have role node-1/n1/n2/a.
    assert!(
        leaked
            .iter()
            .all(|n| !n.ends_with("-Node_1") && !n.ends_with("-n1") && !n.ends_with("-n2")),
        "{leaked:?}"
    );
}

// ---- the fake engine -------------------------------------------------------------------------

const FAKE_ARGS: &str = "SLUICE_FAKE_ENGINE_ARGS";
const FAKE_MODE: &str = "SLUICE_FAKE_ENGINE_MODE";

/// A stand-in for `sluice run`, a no-op unless started by a fake-engine script: reads the
/// cluster file, creates and moves its node's TAPs, answers `status` and `counters`.
#[test]
fn fake_engine_entry() {
    let Ok(args) = std::env::var(FAKE_ARGS) else {
        return;
    };
    let mode = std::env::var(FAKE_MODE).unwrap_or_default();
    let argv: Vec<&str> = args.split_whitespace().collect();
    let arg = |flag: &str| {
        let i = argv.iter().position(|a| *a == flag).expect(flag);
        argv[i + 1].to_string()
    };
    let (config, node) = (arg("--config"), arg("--node"));
    println!("fake engine for node {node}, config {config}, mode {mode}");
    if mode == "exit" {
        println!("boom: fake engine refuses to start");
        std::process::exit(3);
    }
    let text = std::fs::read_to_string(&config).unwrap();
    let mut in_node = false;
    let (mut socket, mut kind, mut iface) = (None, String::new(), String::new());
    let mut taps = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("  - name: ") {
            in_node = name == node;
        } else if in_node {
            let l = line.trim();
            let unquote = |v: &str| serde_json::from_str::<String>(v).unwrap();
            if let Some(v) = l.strip_prefix("admin_socket: ") {
                socket = Some(unquote(v));
            } else if let Some(v) = l.strip_prefix("kind: ") {
                kind = v.to_string();
            } else if let Some(v) = l.strip_prefix("interface: ") {
                iface = unquote(v);
            } else if let Some(v) = l.strip_prefix("netns: ") {
                assert_eq!(kind, "tap");
                taps.push((iface.clone(), unquote(v)));
            }
        }
    }
    for (tap, ns) in &taps {
        // A TAP left from an earlier (fake) engine would block the move.
        let _ = Command::new("ip")
            .args(["-n", ns, "link", "del", tap])
            .output();
        let st = Command::new("ip")
            .args(["tuntap", "add", "dev", tap, "mode", "tap"])
            .status();
        assert!(st.unwrap().success());
        let st = Command::new("ip")
            .args(["link", "set", tap, "netns", ns])
            .status();
        assert!(st.unwrap().success());
        println!("moved {tap} into {ns}");
    }
    let socket = socket.expect("admin_socket of my node");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).unwrap();
    println!("fake engine ready");
    let mut served = 0u64;
    for conn in listener.incoming() {
        let mut conn = conn.unwrap();
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line).unwrap();
        served += 1;
        let answer = match line.trim() {
            "status" => {
                serde_json::json!({"node": node, "ready": mode != "never-ready", "ports": []})
            }
            "counters" => serde_json::json!({"rx_frames": 42, "served": served}),
            other => serde_json::json!({"error": format!("unknown command {other:?}")}),
        };
        let _ = conn.write_all(answer.to_string().as_bytes());
    }
}

static SCRIPT_ID: AtomicU32 = AtomicU32::new(0);

/// A script that runs this test binary as the fake engine; removed on drop.
struct FakeEngine(PathBuf);

impl FakeEngine {
    fn new(mode: &str) -> FakeEngine {
        let exe = std::env::current_exe().unwrap();
        let path = std::env::temp_dir().join(format!(
            "sluice-fake-engine-{}-{}.sh",
            std::process::id(),
            SCRIPT_ID.fetch_add(1, Ordering::Relaxed)
        ));
        let script = format!(
            "#!/bin/sh\nexec env {FAKE_ARGS}=\"$*\" {FAKE_MODE}={mode} '{}' fake_engine_entry \
             --exact --nocapture --test-threads=1\n",
            exe.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeEngine(path)
    }
}

impl Drop for FakeEngine {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn cluster_starts_waits_for_and_stops_engines() {
    let fake = FakeEngine::new("serve");
    let cluster = Cluster::build(
        &fake.0,
        vec![NodeDef::new(
            "node-1",
            "10.244.1.0/24",
            vec![
                PodDef::afpacket("a", ip(10, 244, 1, 10)),
                PodDef::tap("t", ip(10, 244, 1, 12)),
            ],
        )],
    )
    .unwrap();
    let node = cluster.node("node-1");
    let pid = node.engine_pid().expect("engine runs");
    // The engine runs in the node namespace.
    let ns_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let node_ns = node
        .netns()
        .run(|| std::fs::read_link("/proc/thread-self/ns/net").unwrap());
    assert_eq!(ns_of(pid), node_ns);
    assert_ne!(ns_of(std::process::id()), node_ns);
    let c = node.counters().unwrap();
    assert_eq!(c["rx_frames"], 42);
    let status = node.query("status").unwrap();
    assert_eq!(status["node"], "node-1");
    let e = node.query("bogus").unwrap_err().to_string();
    assert!(e.contains("bogus"), "{e}");
    assert!(
        node.engine_log().contains("fake engine ready"),
        "{}",
        node.engine_log()
    );
    // The TAP the engine moved into pod t is configured like an eth0.
    let t = cluster.pod("t");
    let addr = t
        .netns()
        .ip(&["-o", "-4", "addr", "show", "dev", t.ifname()])
        .unwrap();
    assert!(addr.contains("inet 10.244.1.12/32"), "{addr}");
    let routes = t.netns().ip(&["route", "show"]).unwrap();
    assert!(
        routes.contains(&format!("default via 10.244.1.1 dev {}", t.ifname())),
        "{routes}"
    );
    assert!(t.mac().is_ok());
    // Starting twice is refused; stop then start works and reconfigures the TAP.
    let e = node.start_engine().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    node.stop_engine().unwrap();
    assert!(node.engine_pid().is_none());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "engine {pid} survived stop"
    );
    assert!(node.counters().is_err());
    node.start_engine().unwrap();
    let pid2 = node.engine_pid().unwrap();
    assert_ne!(pid, pid2);
    assert_eq!(node.engine_log().matches("fake engine ready").count(), 2);
    let addr = t
        .netns()
        .ip(&["-o", "-4", "addr", "show", "dev", t.ifname()])
        .unwrap();
    assert!(addr.contains("inet 10.244.1.12/32"), "{addr}");
    // Drop kills the engine before deleting its namespace.
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    assert!(
        !Path::new(&format!("/proc/{pid2}")).exists(),
        "engine {pid2} survived drop"
    );
    assert!(!dir.exists());
}

#[test]
fn an_engine_that_exits_fails_the_build_with_its_log() {
    let fake = FakeEngine::new("exit");
    let before = netns_list();
    let e = Cluster::build(
        &fake.0,
        vec![NodeDef::new(
            "n-exit",
            "10.244.7.0/24",
            vec![PodDef::afpacket("p-exit", ip(10, 244, 7, 2))],
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("node n-exit: engine exited"), "{e}");
    assert!(e.contains("boom: fake engine refuses to start"), "{e}");
    let leaked: Vec<String> = netns_list()
        .difference(&before)
        .filter(|n| n.starts_with(&format!("sl{}-", std::process::id())))
        .filter(|n| n.ends_with("-n-exit") || n.ends_with("-p-exit"))
        .cloned()
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}

// ---- overlay clusters ------------------------------------------------------------------------

use bench::testbed::{
    default_vtep_mac, mac_string, DataplaneDef, OverlayDef, OverlayModeDef, KERNEL_VTEP,
    UNDERLAY_BRIDGE, UPLINK,
};

/// `(ifindex, peer ifindex)` of a veth end, from `ip -o link` ("5: ul0@if4: ...").
fn veth_ends(ns: &Netns, ifname: &str) -> (u32, u32) {
    let line = ns.ip(&["-o", "link", "show", "dev", ifname]).unwrap();
    let (index, rest) = line.split_once(": ").unwrap();
    let name = rest.split(':').next().unwrap();
    let peer = name.split_once("@if").unwrap_or_else(|| panic!("{line}")).1;
    (index.trim().parse().unwrap(), peer.parse().unwrap())
}

fn mtu_of(ns: &Netns, ifname: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(&ns.ip(&["-j", "link", "show", "dev", ifname]).unwrap()).unwrap();
    v[0]["mtu"].as_u64().unwrap()
}

fn addrs_of(ns: &Netns, ifname: &str) -> String {
    ns.ip(&["-o", "-4", "addr", "show", "dev", ifname])
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn overlay_two_nodes_share_one_veth_underlay() {
    let cluster = Cluster::build_overlay_network_only(
        OverlayDef::vxlan(),
        vec![
            NodeDef::new(
                "node-1",
                "10.244.1.0/24",
                vec![
                    PodDef::afpacket("a", ip(10, 244, 1, 10)),
                    PodDef::tap("t", ip(10, 244, 1, 11)),
                ],
            ),
            NodeDef::new(
                "node-2",
                "10.244.2.0/24",
                vec![PodDef::afpacket("b", ip(10, 244, 2, 10))],
            ),
        ],
    )
    .unwrap();
    assert!(cluster.underlay_netns().is_none(), "2 nodes need no bridge");
    assert_eq!(cluster.overlay().unwrap().pod_mtu(), 1450);
    let (n1, n2) = (cluster.node("node-1"), cluster.node("node-2"));
    // ul0 <-> ul0: each end's peer is the other.
    let (i1, p1) = veth_ends(n1.netns(), UPLINK);
    let (i2, p2) = veth_ends(n2.netns(), UPLINK);
    assert_eq!((p1, p2), (i2, i1));
    for (i, n) in [n1, n2].into_iter().enumerate() {
        assert_eq!(n.dataplane(), DataplaneDef::Sluice);
        assert_eq!(n.uplink(), Some("ul0"));
        assert_eq!(n.underlay_ip(), Some(ip(192, 168, 100, i as u8 + 1)));
        assert_eq!(n.vtep_mac(), Some(default_vtep_mac(n.name())));
        assert_eq!(
            n.vtep_mac().unwrap(),
            dataplane::port::derived_mac(&format!("vtep/{}", n.name()))
        );
        // The engine owns ul0: no address in the node kernel, forwarding off, raw drop on it.
        assert_eq!(addrs_of(n.netns(), UPLINK), "");
        assert_eq!(n.netns().read_sysctl("net.ipv4.ip_forward").unwrap(), "0");
        assert_eq!(
            n.engine_interfaces().last().map(String::as_str),
            Some(UPLINK)
        );
        let raw = n
            .netns()
            .exec_ok(&["nft", "list", "table", "ip", RAW_TABLE])
            .unwrap();
        assert!(raw.contains("\"ul0\""), "{raw}");
        assert_eq!(mtu_of(n.netns(), UPLINK), 1500);
    }
    assert_eq!(n1.engine_interfaces().len(), 2, "a's host end, then ul0");
    // Pods get the pod MTU; the host end keeps 1500 (so a misconfigured pod's big frame
    // reaches the engine, which answers it with fragmentation-needed).
    let a = cluster.pod("a");
    assert_eq!(mtu_of(a.netns(), "eth0"), 1450);
    assert_eq!(mtu_of(n1.netns(), a.host_ifname().unwrap()), 1500);
    // The cluster file carries the overlay and each node's underlay.
    let yaml = std::fs::read_to_string(cluster.config_path()).unwrap();
    for want in [
        "  cluster_cidr: 10.244.0.0/16\n  overlay:\n    mode: vxlan\n    mtu: 1500\nnodes:\n"
            .to_string(),
        format!(
            "    underlay:\n      interface: \"ul0\"\n      address: 192.168.100.1/24\n      vtep_mac: \"{}\"\n    pods:\n",
            mac_string(n1.vtep_mac().unwrap())
        ),
        format!(
            "    underlay:\n      interface: \"ul0\"\n      address: 192.168.100.2/24\n      vtep_mac: \"{}\"\n",
            mac_string(n2.vtep_mac().unwrap())
        ),
    ] {
        assert!(yaml.contains(&want), "missing {want:?} in\n{yaml}");
    }
    assert!(!yaml.contains("dataplane:"), "{yaml}");
    // ... and the control plane reads it.
    let loaded = control::config::load(cluster.config_path())
        .unwrap_or_else(|e| panic!("the control plane refuses the overlay file: {e}\n{yaml}"));
    assert_eq!(loaded.nodes.len(), 2);
    assert_eq!(loaded.overlay.map(|o| o.pod_mtu()), Some(1450));
    for (n, l) in [n1, n2].into_iter().zip(&loaded.nodes) {
        let u = l.underlay.as_ref().expect("an underlay");
        assert_eq!(u.address, n.underlay_ip().unwrap());
        assert_eq!(u.interface.as_deref(), Some(UPLINK));
        assert_eq!(u.vtep_mac, n.vtep_mac().unwrap());
        assert_eq!(u.vtep_mac, control::config::default_vtep_mac(n.name()));
        assert_eq!(l.dataplane, control::config::Dataplane::Sluice);
    }
    // The underlay goes away with the cluster.
    let names = [n1.netns().name().to_string(), n2.netns().name().to_string()];
    drop(cluster);
    let list = netns_list();
    assert!(names.iter().all(|n| !list.contains(n)));
}

#[test]
fn overlay_three_nodes_meet_on_a_bridge() {
    let overlay = OverlayDef {
        mtu: 1400,
        port: Some(9999),
        ..OverlayDef::udp()
    };
    assert_eq!(overlay.pod_mtu(), 1372);
    assert_eq!(overlay.effective_port(), 9999);
    let nodes = (1..=3)
        .map(|i| {
            NodeDef::new(
                &format!("node-{i}"),
                &format!("10.244.{i}.0/24"),
                vec![PodDef::afpacket(&format!("p{i}"), ip(10, 244, i, 10))],
            )
        })
        .collect();
    let cluster = Cluster::build_overlay_network_only(overlay, nodes).unwrap();
    let ul = cluster.underlay_netns().expect("a bridge namespace");
    let ul_name = ul.name().to_string();
    assert!(ul_name.ends_with("-underlay"), "{ul_name}");
    // br0 and one enslaved port per node, each the peer of that node's ul0.
    let ports: serde_json::Value = serde_json::from_str(
        &ul.ip(&["-j", "link", "show", "master", UNDERLAY_BRIDGE])
            .unwrap(),
    )
    .unwrap();
    let mut port_names: Vec<&str> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ifname"].as_str().unwrap())
        .collect();
    port_names.sort();
    assert_eq!(port_names, ["u0", "u1", "u2"]);
    assert_eq!(mtu_of(ul, UNDERLAY_BRIDGE), 1400);
    for (i, node) in cluster.nodes().iter().enumerate() {
        let (index, peer) = veth_ends(node.netns(), UPLINK);
        let (port_index, port_peer) = veth_ends(ul, &format!("u{i}"));
        assert_eq!((peer, port_peer), (port_index, index), "{}", node.name());
        assert_eq!(mtu_of(node.netns(), UPLINK), 1400);
        assert_eq!(mtu_of(ul, &format!("u{i}")), 1400);
        assert_eq!(addrs_of(node.netns(), UPLINK), "");
        let pod = &cluster.pods()[i];
        assert_eq!(mtu_of(pod.netns(), "eth0"), 1372);
    }
    // Nothing of the underlay namespace's own: no addresses, no IPv6.
    assert_eq!(
        ul.ip(&["-o", "addr", "show", "scope", "global"]).unwrap(),
        ""
    );
    let yaml = std::fs::read_to_string(cluster.config_path()).unwrap();
    assert!(
        yaml.contains("  overlay:\n    mode: udp\n    port: 9999\n    mtu: 1400\n"),
        "{yaml}"
    );
    assert!(yaml.contains("address: 192.168.100.3/24"), "{yaml}");
    drop(cluster);
    assert!(
        !netns_list().contains(&ul_name),
        "underlay namespace left behind"
    );
}

#[test]
fn overlay_kernel_nodes_are_set_up_as_flannel_does() {
    // node-1 runs (a fake) sluice; node-2 and node-3 are kernel nodes, whose pods talk
    // through the kernel's own VXLAN with no engine at all: the setup is complete.
    let fake = FakeEngine::new("serve");
    let cluster = Cluster::build_overlay(
        &fake.0,
        OverlayDef::vxlan(),
        vec![
            NodeDef::new(
                "node-1",
                "10.244.1.0/24",
                vec![PodDef::afpacket("a", ip(10, 244, 1, 10))],
            ),
            NodeDef::new(
                "node-2",
                "10.244.2.0/24",
                vec![PodDef::afpacket("b", ip(10, 244, 2, 10))],
            )
            .kernel(),
            NodeDef::new(
                "node-3",
                "10.244.3.0/24",
                vec![PodDef::afpacket("c", ip(10, 244, 3, 10))],
            )
            .kernel(),
        ],
    )
    .unwrap();
    let (n1, n2, n3) = (
        cluster.node("node-1"),
        cluster.node("node-2"),
        cluster.node("node-3"),
    );
    assert!(n1.engine_running());
    for n in [n2, n3] {
        assert_eq!(n.dataplane(), DataplaneDef::Kernel);
        assert!(!n.engine_running());
        assert!(n.engine_interfaces().is_empty());
        let e = n.start_engine().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::Unsupported, "{e}");
    }
    let ns = n2.netns();
    assert_eq!(ns.read_sysctl("net.ipv4.ip_forward").unwrap(), "1");
    assert!(
        addrs_of(ns, UPLINK).contains("inet 192.168.100.2/24"),
        "{}",
        addrs_of(ns, UPLINK)
    );
    // The GSO tunnel offloads are off on the kernel node's ul0 (see testbed).
    let k = ns.exec_ok(&["ethtool", "-k", UPLINK]).unwrap();
    assert!(k.contains("tx-udp_tnl-segmentation: off"), "{k}");
    assert!(k.contains("tx-udp_tnl-csum-segmentation: off"), "{k}");
    // flannel.1: VNI 1, port 8472, local 192.168.100.2, on ul0, no learning, VTEP MAC, MTU.
    let v: serde_json::Value = serde_json::from_str(
        &ns.ip(&["-d", "-j", "link", "show", "dev", KERNEL_VTEP])
            .unwrap(),
    )
    .unwrap();
    let link = &v[0];
    let data = &link["linkinfo"]["info_data"];
    assert_eq!(link["linkinfo"]["info_kind"], "vxlan", "{link}");
    assert_eq!(data["id"], 1, "{link}");
    assert_eq!(data["port"], 8472, "{link}");
    assert_eq!(data["local"], "192.168.100.2", "{link}");
    assert_eq!(data["learning"], false, "{link}");
    assert_eq!(
        link["address"],
        mac_string(n2.vtep_mac().unwrap()),
        "{link}"
    );
    assert_eq!(link["mtu"], 1450, "{link}");
    assert!(link["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert!(addrs_of(ns, KERNEL_VTEP).contains("inet 10.244.2.0/32"));
    // For each other node: route, permanent neighbour, FDB entry.
    let routes = ns.ip(&["route", "show"]).unwrap();
    let neigh = ns.ip(&["neigh", "show", "dev", KERNEL_VTEP]).unwrap();
    let fdb = ns
        .exec_ok(&["bridge", "fdb", "show", "dev", KERNEL_VTEP])
        .unwrap();
    for peer in [n1, n3] {
        let cidr = peer.pod_cidr();
        let net = cidr.split('/').next().unwrap();
        let mac = mac_string(peer.vtep_mac().unwrap());
        let want_route = format!("{cidr} via {net} dev {KERNEL_VTEP} onlink");
        assert!(routes.contains(&want_route), "{want_route} in\n{routes}");
        let want_neigh = format!("{net} lladdr {mac} PERMANENT");
        assert!(neigh.contains(&want_neigh), "{want_neigh} in\n{neigh}");
        let want_fdb = format!("{mac} dst {}", peer.underlay_ip().unwrap());
        assert!(fdb.contains(&want_fdb), "{want_fdb} in\n{fdb}");
    }
    // Pods: the host end carries the gateway /32 and a /32 route to the pod; pod MTU.
    let b = cluster.pod("b");
    let host = b.host_ifname().unwrap();
    assert!(addrs_of(ns, host).contains("inet 10.244.2.1/32"));
    assert!(
        routes.contains(&format!("10.244.2.10 dev {host}")),
        "{routes}"
    );
    assert_eq!(mtu_of(b.netns(), "eth0"), 1450);
    // The cluster file says node-2 is a kernel node, without pods for an engine.
    let yaml = std::fs::read_to_string(cluster.config_path()).unwrap();
    assert!(
        yaml.contains("  - name: node-2\n    pod_cidr: 10.244.2.0/24\n")
            && yaml.contains("    dataplane: kernel\n    underlay:\n"),
        "{yaml}"
    );
    let loaded = control::config::load(cluster.config_path())
        .unwrap_or_else(|e| panic!("the control plane refuses the file: {e}\n{yaml}"));
    let kinds: Vec<_> = loaded.nodes.iter().map(|n| n.dataplane).collect();
    use control::config::Dataplane;
    assert_eq!(
        kinds,
        [Dataplane::Sluice, Dataplane::Kernel, Dataplane::Kernel]
    );
    // The kernel nodes' pods talk through VXLAN on the bridge: ping and TCP, both ways.
    let c = cluster.pod("c");
    let out = b
        .netns()
        .exec(&[
            "ping",
            "-n",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            "10.244.3.10",
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let t = bench::traffic::tcp_transfer(
        c.netns(),
        b.netns(),
        b.ip(),
        7100,
        1 << 20,
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(t.bytes, 1 << 20);
    let stats: serde_json::Value = serde_json::from_str(
        &ns.ip(&["-s", "-j", "link", "show", "dev", KERNEL_VTEP])
            .unwrap(),
    )
    .unwrap();
    assert!(
        stats[0]["stats64"]["rx"]["packets"].as_u64().unwrap() > 100,
        "{stats}"
    );
}

#[test]
fn overlay_definitions_are_checked() {
    let pods = |n: u8| vec![PodDef::afpacket(&format!("q{n}"), ip(10, 244, n, 10))];
    let two = |second: NodeDef| vec![NodeDef::new("n1", "10.244.1.0/24", pods(1)), second];
    let cases: Vec<(Option<OverlayDef>, Vec<NodeDef>, &str)> = vec![
        (
            None,
            vec![NodeDef::new("n1", "10.244.1.0/24", vec![]).kernel()],
            "needs a VXLAN overlay",
        ),
        (
            Some(OverlayDef::udp()),
            two(NodeDef::new("n2", "10.244.2.0/24", pods(2)).kernel()),
            "needs a VXLAN overlay",
        ),
        (
            Some(OverlayDef::vxlan()),
            two(NodeDef::new(
                "n2",
                "10.244.2.0/24",
                vec![PodDef::tap("q2", ip(10, 244, 2, 10))],
            )
            .kernel()),
            "kernel nodes have veth (afpacket) pods only",
        ),
        (
            Some(OverlayDef::vxlan()),
            vec![NodeDef::new("n1", "10.244.1.0/24", vec![])],
            "an overlay joins 2..=253 nodes, not 1",
        ),
        (
            Some(OverlayDef {
                vni: Some(7),
                ..OverlayDef::udp()
            }),
            two(NodeDef::new("n2", "10.244.2.0/24", pods(2))),
            "VXLAN settings",
        ),
        (
            Some(OverlayDef {
                vni: Some(1 << 24),
                ..OverlayDef::vxlan()
            }),
            two(NodeDef::new("n2", "10.244.2.0/24", pods(2))),
            "does not fit 24 bits",
        ),
        (
            Some(OverlayDef {
                mtu: 100,
                ..OverlayDef::vxlan()
            }),
            two(NodeDef::new("n2", "10.244.2.0/24", pods(2))),
            "want mtu in 118..=9000",
        ),
    ];
    for (overlay, nodes, want) in cases {
        let e = match overlay {
            Some(o) => Cluster::build_overlay_network_only(o, nodes),
            None => Cluster::build_network_only(nodes),
        }
        .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains(want), "{e} lacks {want}");
    }
    assert_eq!(OverlayDef::vxlan().effective_port(), 8472);
    assert_eq!(OverlayDef::udp().effective_port(), 8285);
    assert_eq!(OverlayDef::udp().pod_mtu(), 1472);
    assert!(OverlayDef::vxlan().effective_udp_checksum());
    assert!(!OverlayDef::udp().effective_udp_checksum());
    assert_eq!(OverlayModeDef::Vxlan.as_str(), "vxlan");
}
