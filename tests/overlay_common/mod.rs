//! What the overlay tests share (`cross_node` for VXLAN, `udp_encap` for flannel's UDP mode):
//! the clusters, the traffic, the judge of the underlay, and the two scenarios themselves.
//! Pods on different nodes talk over sluice's overlay: 2 nodes on one veth underlay and 3 nodes
//! on a bridge (every pair). TCP of 10+ MB (every byte checked), UDP echo and ping; the engines
//! count what they encapsulated and decapsulated. tshark, as an independent judge, decodes the
//! underlay during a transfer. The node kernels cannot have moved anything (ip_forward=0, no
//! address on the engine's links): once an engine stops, the traffic through it stops too.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use bench::testbed::{
    tshark_fields, Capture, Cluster, NodeDef, OverlayDef, OverlayModeDef, PodDef, TSHARK_JUDGE,
    UPLINK,
};
use bench::traffic;

pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");
pub const MB10: u64 = 10 * 1024 * 1024 + 4321;
pub const TIMEOUT: Duration = Duration::from_secs(60);

pub fn pod_ip(node: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, node, 10)
}

/// Nodes `node-1..=n` on `overlay`, pod `p<i>` on node i; pod `p3` (if any) is a TAP pod,
/// the others veth.
pub fn cluster(n: u8, overlay: OverlayDef) -> Cluster {
    let nodes = (1..=n)
        .map(|i| {
            let name = format!("p{i}");
            let pod = if i == 3 {
                PodDef::tap(&name, pod_ip(i))
            } else {
                PodDef::afpacket(&name, pod_ip(i))
            };
            NodeDef::new(&format!("node-{i}"), &format!("10.244.{i}.0/24"), vec![pod])
        })
        .collect();
    Cluster::build_overlay(Path::new(BIN), overlay, nodes).expect("cluster builds")
}

pub fn event(c: &Cluster, node: &str, name: &str) -> u64 {
    let counters = c.node(node).counters().expect("counters");
    counters["events"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no events.{name} on {node}: {counters}"))
}

/// The node kernels have no way to move pod traffic themselves.
pub fn assert_node_kernels_idle(c: &Cluster) {
    for n in c.nodes() {
        assert_eq!(
            n.netns().read_sysctl("net.ipv4.ip_forward").unwrap(),
            "0",
            "{}",
            n.name()
        );
        let addrs = n
            .netns()
            .ip(&["-o", "-4", "addr", "show", "dev", UPLINK])
            .unwrap();
        assert_eq!(addrs.trim(), "", "{} has an address on ul0", n.name());
    }
}

/// TCP `bytes` from pod `from` to pod `to` (verified), 100 UDP echoes, 3 pings.
pub fn exchange(c: &Cluster, from: &str, to: &str, port: u16, bytes: u64) {
    let (a, b) = (c.pod(from), c.pod(to));
    let t = traffic::tcp_transfer(a.netns(), b.netns(), b.ip(), port, bytes, TIMEOUT)
        .unwrap_or_else(|e| panic!("TCP {from} -> {to}: {e}"));
    assert_eq!(t.bytes, bytes);
    eprintln!(
        "TCP {from} -> {to}: {} bytes at {:.0} Mbit/s",
        t.bytes,
        t.mbit_per_s()
    );
    let ok = traffic::udp_echo(
        a.netns(),
        b.netns(),
        b.ip(),
        port + 1,
        100,
        1000,
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(ok, 100, "UDP {from} <-> {to}: every datagram echoed");
    let p = traffic::ping(a.netns(), b.ip(), 3, &[]).unwrap();
    assert_eq!(p.received, 3, "ping {from} -> {to}:\n{}", p.output);
}

/// tshark's verdict on a capture of the underlay: every tunnel frame is UDP to the overlay's
/// port between known underlay addresses, VXLAN with its VNI or (UDP mode) a bare inner IPv4
/// packet, all four checksums good where present (outer IPv4 and UDP, inner IPv4 and TCP), no
/// frame beyond the underlay MTU. Returns how many TCP-carrying tunnel frames it saw.
pub fn judge_capture(path: &Path, underlay: &[Ipv4Addr], overlay: &OverlayDef) -> usize {
    let port = overlay.effective_port();
    let vxlan = overlay.mode == OverlayModeDef::Vxlan;
    let port_rule = format!("udp.port=={port},{}", if vxlan { "vxlan" } else { "ip" });
    let mut args = vec!["-d", port_rule.as_str()];
    args.extend(TSHARK_JUDGE);
    let rows = tshark_fields(
        path,
        &args,
        &[
            "frame.number",
            "frame.len",
            "eth.type",
            "ip.src",
            "udp.dstport",
            "vxlan.vni",
            "ip.checksum.status",
            "udp.checksum.status",
            "tcp.checksum.status",
            "_ws.malformed",
            "_ws.expert.message",
            "ip.proto",
        ],
    )
    .expect("tshark decodes the capture");
    let mut tcp_frames = 0;
    let mut tunnel_frames = 0;
    for row in &rows {
        let f = |i: usize| row.get(i).map(String::as_str).unwrap_or("");
        let what = format!("frame {}: {row:?}", f(0));
        // eth.type repeats for the inner frame: outer first.
        if f(2).split(',').next() == Some("0x0806") {
            continue; // underlay ARP
        }
        if f(11).split(',').next() == Some("2") {
            // IGMP membership reports the node kernels send when ul0 comes up (source 0.0.0.0:
            // ul0 has no address there): underlay noise, not sluice's.
            continue;
        }
        tunnel_frames += 1;
        let len: usize = f(1).parse().unwrap();
        assert!(len <= 1514, "larger than the underlay MTU: {what}");
        let srcs: Vec<&str> = f(3).split(',').collect();
        assert_eq!(srcs.len(), 2, "outer and inner IPv4: {what}");
        let outer: Ipv4Addr = srcs[0].parse().unwrap();
        assert!(underlay.contains(&outer), "outer source: {what}");
        assert_eq!(
            f(4).split(',').next(),
            Some(port.to_string().as_str()),
            "{what}"
        );
        assert_eq!(f(11).split(',').next(), Some("17"), "outer UDP: {what}");
        if vxlan {
            assert_eq!(f(5), overlay.effective_vni().to_string(), "VNI: {what}");
        }
        // Checksum status: 1 = good (0 bad, 2 unverified, 3 not present).
        assert_eq!(f(6), "1,1", "outer and inner IPv4 checksums: {what}");
        assert_eq!(
            f(7).split(',').next(),
            Some("1"),
            "outer UDP checksum: {what}"
        );
        if !f(8).is_empty() {
            assert_eq!(f(8), "1", "inner TCP checksum: {what}");
            tcp_frames += 1;
        }
        assert_eq!(f(9), "", "malformed: {what}");
    }
    assert!(tunnel_frames > 0, "no tunnel frames captured");
    tcp_frames
}

pub fn underlay_ips(c: &Cluster) -> Vec<Ipv4Addr> {
    c.nodes().iter().map(|n| n.underlay_ip().unwrap()).collect()
}

/// Two nodes on one veth pair: both directions, the judge on node-1's uplink, counters,
/// idle node kernels, and no traffic once node-2's engine stops. TCP ports from `port_base`.
pub fn two_nodes(overlay: OverlayDef, port_base: u16) {
    let c = cluster(2, overlay.clone());
    assert!(c.underlay_netns().is_none());
    assert_node_kernels_idle(&c);
    let (e1, d2) = (
        event(&c, "node-1", "overlay_encapsulated"),
        event(&c, "node-2", "overlay_decapsulated"),
    );

    // The judge watches node-1's uplink during a transfer each way.
    let pcap = c.dir().join("ul0.pcap");
    let cap = Capture::start(c.node("node-1").netns(), UPLINK, "", &pcap).unwrap();
    exchange(&c, "p1", "p2", port_base + 1, MB10);
    exchange(&c, "p2", "p1", port_base + 11, MB10);
    let stats = cap.stop().unwrap();
    eprintln!(
        "captured {} frames ({} dropped by the kernel)",
        stats.captured, stats.dropped_by_kernel
    );
    let tcp = judge_capture(&pcap, &underlay_ips(&c), &overlay);
    // 2 x 10 MB in segments of at most pod MTU - 40 bytes, plus ACKs (the capture may miss a few).
    assert!(tcp > 10_000, "only {tcp} TCP frames judged");

    for (node, name, before) in [
        ("node-1", "overlay_encapsulated", e1),
        ("node-2", "overlay_decapsulated", d2),
    ] {
        let now = event(&c, node, name);
        assert!(now >= before + 7000, "{node} {name}: {before} -> {now}");
    }
    for node in ["node-2", "node-1"] {
        for name in ["overlay_encapsulated", "overlay_decapsulated"] {
            assert!(event(&c, node, name) > 7000, "{node} {name}");
        }
    }
    assert_node_kernels_idle(&c);

    // Without node-2's engine nothing crosses: the node kernels never forwarded.
    c.node("node-2").stop_engine().unwrap();
    let r = traffic::tcp_transfer(
        c.pod("p1").netns(),
        c.pod("p2").netns(),
        pod_ip(2),
        port_base + 21,
        1 << 20,
        Duration::from_secs(2),
    );
    assert!(r.is_err(), "TCP must fail without node-2's engine: {r:?}");
    let p = traffic::ping(c.pod("p1").netns(), pod_ip(2), 2, &[]).unwrap();
    assert_eq!(p.received, 0, "{}", p.output);
}

/// Three nodes on a bridge: every pair both ways, the judge on the bridge, counters, and
/// node-2's engine stopping cuts exactly the pairs through it. TCP ports from `port_base`.
pub fn three_nodes(overlay: OverlayDef, port_base: u16) {
    let c = cluster(3, overlay.clone());
    let ul = c.underlay_netns().expect("a bridge namespace");
    assert_node_kernels_idle(&c);
    let pairs = [("p1", "p2"), ("p2", "p3"), ("p3", "p1")];

    // The judge watches the bridge during the first pair's transfer.
    let pcap = c.dir().join("br0.pcap");
    let cap = Capture::start(ul, "br0", "", &pcap).unwrap();
    exchange(&c, pairs[0].0, pairs[0].1, port_base + 101, MB10);
    let stats = cap.stop().unwrap();
    eprintln!(
        "captured {} frames ({} dropped by the kernel)",
        stats.captured, stats.dropped_by_kernel
    );
    let tcp = judge_capture(&stats.path, &underlay_ips(&c), &overlay);
    assert!(tcp > 5000, "only {tcp} TCP frames judged");

    for (i, (from, to)) in pairs.iter().enumerate().skip(1) {
        exchange(&c, from, to, port_base + 101 + 10 * i as u16, MB10);
    }
    // And the other direction of every pair, lighter.
    for (i, (from, to)) in pairs.iter().enumerate() {
        exchange(&c, to, from, port_base + 201 + 10 * i as u16, 1 << 20);
    }
    for n in c.nodes() {
        for name in ["overlay_encapsulated", "overlay_decapsulated"] {
            assert!(
                event(&c, n.name(), name) > 7000,
                "{} {name}: {}",
                n.name(),
                n.counters().unwrap()
            );
        }
    }
    assert_node_kernels_idle(&c);

    // node-2's engine stops: 1 <-> 2 and 2 <-> 3 stop, 1 <-> 3 goes on (it never crossed 2).
    c.node("node-2").stop_engine().unwrap();
    for (from, to, works) in [("p1", "p2", false), ("p3", "p2", false), ("p1", "p3", true)] {
        let p = traffic::ping(c.pod(from).netns(), c.pod(to).ip(), 2, &[]).unwrap();
        if works {
            assert_eq!(p.received, 2, "{from} -> {to}:\n{}", p.output);
        } else {
            assert_eq!(p.received, 0, "{from} -> {to}:\n{}", p.output);
        }
    }
}
