//! Interoperability with the Linux kernel's own VXLAN device.
//!
//! - `kernel_fixture_frames`: frames the kernel's `vxlan` driver put on a veth (kept in
//!   `tests/data/kernel_vxlan.pcap`, see `tests/data/README.md`) are accepted by
//!   `vxlan::decapsulate`, and `vxlan::encapsulate` of the same inner frame with the same
//!   parameters rebuilds the kernel's bytes except the IPv4 identification (and so the IPv4
//!   header checksum), and, with sluice's own source-port hash, the UDP source port and UDP
//!   checksum.
//! - `live_kernel_vxlan` (root, `ip`, `tcpdump`, `ethtool` and `ping` needed; skipped with a
//!   note otherwise): builds two namespaces joined by a veth, a kernel VXLAN device in each
//!   (`dstport 8472`, one with `udpcsum`, one without), pings across, captures the underlay,
//!   and checks the same as above on the live frames; then sends frames built by
//!   `vxlan::encapsulate` (UDP checksum on and off) into the kernel peer and checks that the
//!   kernel answers them. With `SLUICE_CAPTURE_FIXTURES=1` it rewrites the fixture file.
//!   Namespaces are named `sl-t-<pid>-vxk-{a,b}` and deleted on success, failure and panic.

mod pcap;

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use encap::checksum;
use encap::ethernet::{self, ethertype};
use encap::icmpv4;
use encap::ipv4::{self, protocol};
use encap::vxlan::{self, Decap, Encap};

const MAC_VA: [u8; 6] = [2, 0, 0, 0, 1, 1];
const MAC_VB: [u8; 6] = [2, 0, 0, 0, 1, 2];
const MAC_VX_A: [u8; 6] = [2, 0, 0, 0, 2, 1];
const MAC_VX_B: [u8; 6] = [2, 0, 0, 0, 2, 2];
const UNDER_A: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const UNDER_B: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kernel_vxlan.pcap")
}

/// Byte offsets that legitimately differ between the kernel's frame and ours: the IPv4
/// identification (the kernel counts, sluice sends 0 on DF datagrams) and hence the IPv4
/// header checksum.
const IDENT_AND_IP_CSUM: [usize; 4] = [18, 19, 24, 25];
/// With sluice's own source port: also the UDP source port and the UDP checksum.
const PLUS_PORT_AND_UDP_CSUM: [usize; 8] = [18, 19, 24, 25, 34, 35, 40, 41];

fn diff_outside(a: &[u8], b: &[u8], allowed: &[usize]) -> Vec<usize> {
    assert_eq!(a.len(), b.len(), "frame lengths differ");
    (0..a.len())
        .filter(|i| a[*i] != b[*i] && !allowed.contains(i))
        .collect()
}

/// Encapsulates `inner` as the engine would: 128 bytes of headroom, `OVERHEAD` pushed.
fn encap_like_engine(inner: &[u8], e: &Encap, src_port: u16) -> Vec<u8> {
    let mut buf = vec![0u8; 128 + inner.len()];
    buf[128..].copy_from_slice(inner);
    let start = 128 - vxlan::OVERHEAD;
    let n = vxlan::encapsulate(&mut buf[start..], inner.len(), e, src_port).unwrap();
    buf[start..start + n].to_vec()
}

/// Decapsulates a kernel frame, rebuilds it with `vxlan::encapsulate`, and compares.
fn compare_with_kernel(frame: &[u8]) -> Decap {
    let d = vxlan::decapsulate(frame, vxlan::DEFAULT_PORT)
        .unwrap_or_else(|e| panic!("kernel frame refused: {e}: {frame:02x?}"));
    assert_eq!(d.vni, 1);
    assert_eq!(d.inner_offset, 50);
    assert_eq!(d.inner_offset + d.inner_len, frame.len());
    let inner = &frame[d.inner_range()];
    let kernel_udp_csum = u16::from_be_bytes([frame[40], frame[41]]);
    let e = Encap {
        src_mac: frame[6..12].try_into().unwrap(),
        dst_mac: frame[0..6].try_into().unwrap(),
        src_ip: d.outer_src,
        dst_ip: d.outer_dst,
        dst_port: vxlan::DEFAULT_PORT,
        vni: 1,
        ttl: 64,
        udp_checksum: kernel_udp_csum != 0,
    };
    assert_eq!(d.outer_src_mac, e.src_mac);

    let ours = encap_like_engine(inner, &e, d.src_port);
    assert_eq!(
        diff_outside(&ours, frame, &IDENT_AND_IP_CSUM),
        Vec::<usize>::new(),
        "\nours   {ours:02x?}\nkernel {frame:02x?}"
    );
    assert!(checksum::verify(&ours[14..34]));
    assert_eq!(&ours[18..20], &[0, 0]);
    assert_eq!(vxlan::decapsulate(&ours, vxlan::DEFAULT_PORT), Ok(d));

    let port = vxlan::source_port(inner);
    assert!(port >= 49152);
    let ours = encap_like_engine(inner, &e, port);
    assert_eq!(
        diff_outside(&ours, frame, &PLUS_PORT_AND_UDP_CSUM),
        Vec::<usize>::new()
    );
    assert_eq!(u16::from_be_bytes([ours[34], ours[35]]), port);
    let d2 = vxlan::decapsulate(&ours, vxlan::DEFAULT_PORT).unwrap();
    assert_eq!((d2.vni, d2.inner_range()), (1, d.inner_range()));
    d
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Inner {
    ArpRequest,
    ArpReply,
    EchoRequest { id: u16, seq: u16 },
    EchoReply { id: u16, seq: u16 },
}

/// What the inner frame of a decapsulated frame is (only the kinds this test expects).
fn classify(frame: &[u8], d: &Decap) -> Inner {
    let inner = ethernet::Frame::new_checked(&frame[d.inner_range()]).unwrap();
    match inner.ethertype() {
        ethertype::ARP => match inner.payload()[7] {
            1 => Inner::ArpRequest,
            2 => Inner::ArpReply,
            op => panic!("ARP opcode {op}"),
        },
        ethertype::IPV4 => {
            let ip = ipv4::Packet::new_checked(inner.payload()).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.protocol(), protocol::ICMP);
            let icmp = ip.payload();
            assert!(checksum::verify(icmp), "inner ICMP checksum");
            let id = u16::from_be_bytes([icmp[4], icmp[5]]);
            let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
            match icmp[0] {
                icmpv4::ECHO_REQUEST => {
                    assert_eq!((ip.src(), ip.dst()), (POD_A, POD_B));
                    Inner::EchoRequest { id, seq }
                }
                icmpv4::ECHO_REPLY => {
                    assert_eq!((ip.src(), ip.dst()), (POD_B, POD_A));
                    Inner::EchoReply { id, seq }
                }
                t => panic!("ICMP type {t}"),
            }
        }
        t => panic!("inner ethertype {t:#x}"),
    }
}

/// Checks a capture of the ping: every frame decapsulates and re-encapsulates like the
/// kernel's, echo requests (from the `udpcsum` side) carry a UDP checksum, echo replies (from
/// the `noudpcsum` side) carry 0. Returns the inner kinds in order.
fn check_capture(frames: &[Vec<u8>]) -> Vec<Inner> {
    let mut kinds = Vec::new();
    for f in frames {
        let d = compare_with_kernel(f);
        let k = classify(f, &d);
        let csum = u16::from_be_bytes([f[40], f[41]]);
        match k {
            Inner::EchoRequest { .. } | Inner::ArpRequest => {
                assert_eq!((d.outer_src, d.outer_dst), (UNDER_A, UNDER_B));
                assert_eq!(d.outer_src_mac, MAC_VA);
                assert_ne!(csum, 0, "the udpcsum side sends a UDP checksum");
                let inner = &f[d.inner_range()];
                assert_eq!(&inner[6..12], &MAC_VX_A);
            }
            Inner::EchoReply { .. } | Inner::ArpReply => {
                assert_eq!((d.outer_src, d.outer_dst), (UNDER_B, UNDER_A));
                assert_eq!(d.outer_src_mac, MAC_VB);
                assert_eq!(csum, 0, "the noudpcsum side sends no UDP checksum");
            }
        }
        kinds.push(k);
    }
    assert!(kinds.iter().any(|k| matches!(k, Inner::EchoRequest { .. })));
    assert!(kinds.iter().any(|k| matches!(k, Inner::EchoReply { .. })));
    kinds
}

#[test]
fn kernel_fixture_frames() {
    let frames = pcap::read(&fixture_path());
    let kinds = check_capture(&frames);
    // The capture of `ping -c 2` through a cold neighbour cache.
    assert_eq!(kinds.len(), 6, "{kinds:?}");
    assert_eq!(kinds[0], Inner::ArpRequest);
    assert_eq!(kinds[1], Inner::ArpReply);
    let echo: Vec<_> = kinds[2..].to_vec();
    let Inner::EchoRequest { id, .. } = echo[0] else {
        panic!("{echo:?}")
    };
    assert_eq!(
        echo,
        vec![
            Inner::EchoRequest { id, seq: 1 },
            Inner::EchoReply { id, seq: 1 },
            Inner::EchoRequest { id, seq: 2 },
            Inner::EchoReply { id, seq: 2 },
        ]
    );
    // The inner frame of an echo request is 14 + 20 + 8 + 24 bytes (ping -s 24).
    let d = vxlan::decapsulate(&frames[2], 8472).unwrap();
    assert_eq!(d.inner_len, 66);
    assert_eq!(frames[2].len(), 116);
    // The kernel's symmetric flow hash: one source port per flow, both directions.
    let ports: Vec<u16> = frames
        .iter()
        .map(|f| vxlan::decapsulate(f, 8472).unwrap().src_port)
        .collect();
    assert_eq!(ports, vec![35439, 35439, 41756, 41756, 41756, 41756]);
    // Only the configured port is accepted.
    assert_eq!(
        vxlan::decapsulate(&frames[2], vxlan::IANA_PORT),
        Err(vxlan::DecapError::WrongPort(8472))
    );
}

// ---------------------------------------------------------------------------------------------
// Live test against the kernel.

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace this test created; deleted on drop (success, failure or panic).
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        run(&["ip", "netns", "add", &name]);
        Netns(name)
    }
    fn exec(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "netns", "exec", &self.0];
        v.extend_from_slice(args);
        run(&v)
    }
    fn ip(&self, args: &str) {
        let mut v = vec!["ip", "-n", &self.0];
        v.extend(args.split_whitespace());
        run(&v);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A tcpdump this test started; stopped (by its pid) on drop.
struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    /// Starts `tcpdump` in `ns` on `dev` and returns once it is listening.
    fn start(ns: &Netns, dev: &str, filter: &str, count: usize, tag: &str) -> Capture {
        let file = std::env::temp_dir().join(format!("sl-t-{}-{tag}.pcap", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let count = count.to_string();
        let mut args = vec![
            "netns", "exec", &ns.0, "tcpdump", "-Z", "root", "-U", "-n", "-i", dev, "-c",
        ];
        args.push(&count);
        let fname = file.to_string_lossy().into_owned();
        args.extend(["-w", &fname]);
        args.extend(filter.split_whitespace());
        let mut child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpdump");
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        loop {
            line.clear();
            match err.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("tcpdump exited before listening");
                }
                Ok(_) if line.contains("listening on") => break,
                Ok(_) => {}
            }
        }
        // Keep draining stderr so tcpdump never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while err.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        Capture { child, file }
    }

    /// Waits (at most `timeout`) for tcpdump to reach its count, then stops it and returns the
    /// captured frames.
    fn finish(mut self, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        let frames = pcap::read(&self.file);
        let _ = std::fs::remove_file(&self.file);
        frames
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGINT lets tcpdump flush and close the file; it is our own child, by pid.
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.file);
    }
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Two namespaces, a veth underlay, a kernel VXLAN device in each.
fn topology() -> (Netns, Netns) {
    let pid = std::process::id();
    let a = Netns::new(format!("sl-t-{pid}-vxk-a"));
    let b = Netns::new(format!("sl-t-{pid}-vxk-b"));
    for ns in [&a, &b] {
        // No IPv6 router/neighbour solicitations in the capture.
        ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns.ip("link set lo up");
    }
    a.ip(&format!("link add va type veth peer name vb netns {}", b.0));
    a.ip(&format!("link set va address {}", mac_str(MAC_VA)));
    b.ip(&format!("link set vb address {}", mac_str(MAC_VB)));
    a.ip(&format!("addr add {UNDER_A}/24 dev va"));
    b.ip(&format!("addr add {UNDER_B}/24 dev vb"));
    // Software checksums on the underlay veths: with tx offload the kernel would hand the
    // outer UDP checksum over as CHECKSUM_PARTIAL and tcpdump would see its seed.
    a.exec(&["ethtool", "-K", "va", "tx", "off"]);
    b.exec(&["ethtool", "-K", "vb", "tx", "off"]);
    a.ip("link set va up");
    b.ip("link set vb up");
    a.ip(&format!(
        "link add vx0 address {} type vxlan id 1 dstport 8472 local {UNDER_A} remote {UNDER_B} \
         nolearning df set ttl 64 udpcsum",
        mac_str(MAC_VX_A)
    ));
    b.ip(&format!(
        "link add vx0 address {} type vxlan id 1 dstport 8472 local {UNDER_B} remote {UNDER_A} \
         nolearning df set ttl 64 noudpcsum",
        mac_str(MAC_VX_B)
    ));
    a.ip(&format!("addr add {POD_A}/24 dev vx0"));
    b.ip(&format!("addr add {POD_B}/24 dev vx0"));
    a.ip("link set vx0 up");
    b.ip("link set vx0 up");
    (a, b)
}

/// An inner Ethernet frame: ICMP echo request from pod A to pod B.
fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let data = b"sluice vxlan encap";
    let icmp_len = 8 + data.len();
    let mut f = vec![0u8; 14 + 20 + icmp_len];
    ethernet::emit_header(&mut f, MAC_VX_B, MAC_VX_A, ethertype::IPV4);
    ipv4::Repr {
        src: POD_A,
        dst: POD_B,
        protocol: protocol::ICMP,
        ttl: 64,
        ident: seq,
        dont_frag: true,
        payload_len: icmp_len as u16,
    }
    .emit(&mut f[14..]);
    let icmp = &mut f[34..];
    icmp[0] = icmpv4::ECHO_REQUEST;
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    icmp[6..8].copy_from_slice(&seq.to_be_bytes());
    icmp[8..].copy_from_slice(data);
    let c = checksum::data(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn live_kernel_vxlan() {
    let missing: Vec<_> = ["ip", "tcpdump", "ethtool", "ping", "sysctl"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    let root = run(&["id", "-u"]).trim() == "0";
    if !root || !missing.is_empty() {
        eprintln!("SKIP live_kernel_vxlan: needs root and {missing:?}");
        return;
    }
    let (a, b) = topology();

    // 1. The kernel's frames: ping across, capture on B's underlay veth.
    let cap = Capture::start(&b, "vb", "udp port 8472", 6, "vxk-ping");
    a.exec(&[
        "ping",
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        "2",
        "-s",
        "24",
        &POD_B.to_string(),
    ]);
    let frames = cap.finish(Duration::from_secs(3));
    let kinds = check_capture(&frames);
    eprintln!("live capture: {kinds:?}");
    if std::env::var_os("SLUICE_CAPTURE_FIXTURES").is_some() {
        let refs: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        pcap::write(&fixture_path(), &refs);
        eprintln!("wrote {}", fixture_path().display());
    }

    // 2. Our frames into the kernel: B's kernel VXLAN must accept them and answer.
    if !have("python3") {
        eprintln!("SKIP live_kernel_vxlan part 2 (sluice -> kernel): python3 missing");
        return;
    }
    let id = 0x5100 | (std::process::id() as u16 & 0xff);
    let mut hex = Vec::new();
    for (seq, udp_checksum) in [(1u16, true), (2, false)] {
        let inner = echo_request(id, seq);
        let e = Encap {
            src_mac: MAC_VA,
            dst_mac: MAC_VB,
            src_ip: UNDER_A,
            dst_ip: UNDER_B,
            dst_port: vxlan::DEFAULT_PORT,
            vni: 1,
            ttl: 64,
            udp_checksum,
        };
        let f = encap_like_engine(&inner, &e, vxlan::source_port(&inner));
        hex.push(f.iter().map(|b| format!("{b:02x}")).collect::<String>());
    }
    let cap = Capture::start(
        &a,
        "va",
        "udp port 8472 and src host 192.168.77.2",
        2,
        "vxk-in",
    );
    let mut send = vec![
        "python3",
        "-c",
        "import socket,sys\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n\
         s.bind((sys.argv[1],0))\nfor h in sys.argv[2:]: s.send(bytes.fromhex(h))",
        "va",
    ];
    send.extend(hex.iter().map(|s| s.as_str()));
    a.exec(&send);
    let replies = cap.finish(Duration::from_secs(3));
    let mut seqs = Vec::new();
    for r in &replies {
        let d = vxlan::decapsulate(r, vxlan::DEFAULT_PORT).unwrap();
        assert_eq!(d.vni, 1);
        match classify(r, &d) {
            Inner::EchoReply { id: rid, seq } if rid == id => seqs.push(seq),
            k => panic!("unexpected {k:?}"),
        }
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        vec![1, 2],
        "the kernel answered our VXLAN frames (UDP checksum on and off)"
    );
    drop((a, b));
}
