//! The overlay's decapsulation is closed: crafted underlay frames injected at node-1's uplink
//! from the other end of the underlay (a packet socket on node-2's `ul0`) are dropped and
//! counted under their reason (unknown outer source, wrong VNI, bad VXLAN flags, truncated
//! outer and inner headers, bad checksums, ...), while good frames in the same bursts are
//! delivered and TCP between the pods keeps working. And the MTU: a pod misconfigured with
//! MTU 1500 gets ICMP fragmentation-needed with the pod MTU (1450) for a DF packet too big for
//! the tunnel; with the pod MTU restored, TCP works.
//!
//! Frames are built by hand here (etherparse for the ordinary headers), independently of
//! the `encap` crate the engine uses.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use bench::testbed::{Cluster, NodeDef, NodeHandle, OverlayDef, PodDef, UPLINK};
use bench::traffic;
use dataplane::packet::{Batch, Meta};
use dataplane::port::afpacket::{AfPacketOptions, AfPacketPort};
use dataplane::port::Port;
use etherparse::PacketBuilder;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const EACH: usize = 5;
const VXLAN_PORT: u16 = 8472;
const VNI: u32 = 1;
/// The pods' UDP ports of the injected good frames.
const GOOD_SRC_PORT: u16 = 5555;
const GOOD_DST_PORT: u16 = 5556;

fn cluster() -> Cluster {
    Cluster::build_overlay(
        Path::new(BIN),
        OverlayDef::vxlan(),
        vec![
            NodeDef::new(
                "node-1",
                "10.244.1.0/24",
                vec![PodDef::afpacket("a", Ipv4Addr::new(10, 244, 1, 10))],
            ),
            NodeDef::new(
                "node-2",
                "10.244.2.0/24",
                vec![PodDef::afpacket("b", Ipv4Addr::new(10, 244, 2, 10))],
            ),
        ],
    )
    .expect("cluster builds")
}

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// The engine's MAC on its uplink (from `status`; the interface's own if not listed).
fn uplink_mac(node: &NodeHandle) -> [u8; 6] {
    let status = node.query("status").unwrap();
    status["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == UPLINK))
        .and_then(|p| p["mac"].as_str())
        .map(parse_mac)
        .unwrap_or_else(|| node.netns().mac(UPLINK).unwrap())
}

/// What every frame is built from.
struct Wire {
    /// Outer: node-2's ul0 -> node-1's uplink.
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    /// Inner: node-2's VTEP -> node-1's VTEP, pod b -> pod a.
    vtep_src: [u8; 6],
    vtep_dst: [u8; 6],
    pod_src: Ipv4Addr,
    pod_dst: Ipv4Addr,
}

impl Wire {
    /// An inner Ethernet frame: UDP from pod b to pod a.
    fn inner(&self, dst_mac: [u8; 6]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(self.vtep_src, dst_mac)
            .ipv4(self.pod_src.octets(), self.pod_dst.octets(), 64)
            .udp(GOOD_SRC_PORT, GOOD_DST_PORT)
            .write(&mut v, b"injected through the underlay")
            .unwrap();
        v
    }

    /// A VXLAN header (flags, VNI) followed by `inner`.
    fn vxlan(flags: u8, vni: u32, inner: &[u8]) -> Vec<u8> {
        let vni = vni.to_be_bytes();
        let mut v = vec![flags, 0, 0, 0, vni[1], vni[2], vni[3], 0];
        v.extend_from_slice(inner);
        v
    }

    /// Outer Ethernet + IPv4 + UDP (checksums computed) around `payload`.
    fn outer(&self, src: Ipv4Addr, dst: Ipv4Addr, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2(self.src_mac, self.dst_mac)
            .ipv4(src.octets(), dst.octets(), 64)
            .udp(49999, dst_port)
            .write(&mut v, payload)
            .unwrap();
        v
    }

    fn good(&self) -> Vec<u8> {
        let payload = Wire::vxlan(0x08, VNI, &self.inner(self.vtep_dst));
        self.outer(self.src_ip, self.dst_ip, VXLAN_PORT, &payload)
    }

    /// (drop reason, frame) for every malformation.
    fn cases(&self) -> Vec<(&'static str, Vec<u8>)> {
        let inner = self.inner(self.vtep_dst);
        let to_us = |payload: &[u8]| self.outer(self.src_ip, self.dst_ip, VXLAN_PORT, payload);
        let good = self.good();
        let mut c = vec![
            (
                "overlay_unknown_peer",
                self.outer(
                    Ipv4Addr::new(192, 168, 100, 77),
                    self.dst_ip,
                    VXLAN_PORT,
                    &Wire::vxlan(0x08, VNI, &inner),
                ),
            ),
            ("overlay_wrong_vni", to_us(&Wire::vxlan(0x08, 2, &inner))),
            // The I flag clear.
            ("vxlan_bad_flags", to_us(&Wire::vxlan(0x00, VNI, &inner))),
            // A UDP payload shorter than the VXLAN header.
            ("vxlan_truncated", to_us(&[0x08, 0, 0, 0])),
            // 10 bytes of inner Ethernet header.
            (
                "overlay_inner_truncated",
                to_us(&Wire::vxlan(0x08, VNI, &inner[..10])),
            ),
            // An inner IPv4 header cut at 12 bytes.
            (
                "overlay_inner_ipv4_malformed",
                to_us(&Wire::vxlan(0x08, VNI, &inner[..14 + 12])),
            ),
            // The outer IPv4 header cut at 12 bytes.
            ("overlay_outer_ipv4_malformed", good[..14 + 12].to_vec()),
            // Not for our VTEP MAC.
            (
                "overlay_inner_not_for_us",
                to_us(&Wire::vxlan(
                    0x08,
                    VNI,
                    &self.inner([0x02, 0x42, 0, 0, 0, 0x99]),
                )),
            ),
            // To another underlay address (sent to our MAC all the same).
            (
                "underlay_not_for_us",
                self.outer(
                    self.src_ip,
                    Ipv4Addr::new(192, 168, 100, 99),
                    VXLAN_PORT,
                    &Wire::vxlan(0x08, VNI, &inner),
                ),
            ),
            // To our address, another UDP port.
            (
                "overlay_wrong_port",
                self.outer(
                    self.src_ip,
                    self.dst_ip,
                    4789,
                    &Wire::vxlan(0x08, VNI, &inner),
                ),
            ),
        ];
        // The inner frame is IPv6.
        let mut v6 = inner.clone();
        v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        c.push((
            "overlay_inner_not_ipv4",
            to_us(&Wire::vxlan(0x08, VNI, &v6)),
        ));
        // Outer UDP checksum wrong.
        let mut f = good.clone();
        f[14 + 20 + 6] ^= 0x5a;
        c.push(("overlay_udp_checksum", f));
        // Outer IPv4 header checksum wrong.
        let mut f = good.clone();
        f[14 + 10] ^= 0x5a;
        c.push(("overlay_outer_ipv4_checksum", f));
        // UDP length 2 short of the IPv4 payload.
        let mut f = good.clone();
        let len = u16::from_be_bytes([f[14 + 24], f[14 + 25]]) - 2;
        f[14 + 24..14 + 26].copy_from_slice(&len.to_be_bytes());
        c.push(("overlay_udp_length", f));
        c
    }
}

/// Sends `frames` out of node-2's `ul0` (to node-1's uplink) from a packet socket of our own.
fn inject(node2: &NodeHandle, frames: &[Vec<u8>]) {
    node2.netns().run(move || {
        let opts = AfPacketOptions {
            vnet_hdr: false,
            ..AfPacketOptions::default()
        };
        let mut port = AfPacketPort::open(UPLINK, &opts).expect("packet socket on node-2's ul0");
        let mut batch = Batch::new(frames.len());
        for f in frames {
            assert!(batch.push_copy(f, Meta::default()));
        }
        let idx: Vec<u16> = (0..frames.len() as u16).collect();
        let r = port.tx_burst(&batch, &idx);
        assert_eq!(r.sent, frames.len(), "all frames injected: {r:?}");
    });
}

fn drops(node: &NodeHandle) -> serde_json::Value {
    node.counters().expect("counters")["drops"].clone()
}

#[test]
fn overlay_malformed_underlay_frames_are_counted_and_tcp_flows() {
    let c = cluster();
    let (n1, n2) = (c.node("node-1"), c.node("node-2"));
    let (a, b) = (c.pod("a"), c.pod("b"));
    // Everything resolved and flowing first.
    assert_eq!(
        traffic::udp_echo(
            a.netns(),
            b.netns(),
            b.ip(),
            7701,
            20,
            500,
            Duration::from_secs(1)
        )
        .unwrap(),
        20
    );
    let wire = Wire {
        src_mac: n2.netns().mac(UPLINK).unwrap(),
        dst_mac: uplink_mac(n1),
        src_ip: n2.underlay_ip().unwrap(),
        dst_ip: n1.underlay_ip().unwrap(),
        vtep_src: n2.vtep_mac().unwrap(),
        vtep_dst: n1.vtep_mac().unwrap(),
        pod_src: b.ip(),
        pod_dst: a.ip(),
    };
    let cases = wire.cases();
    let good = wire.good();
    // Pod a listens for the good injected frames.
    let sink = a
        .netns()
        .run(|| UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, GOOD_DST_PORT)).unwrap());
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let before = drops(n1);

    std::thread::scope(|s| {
        // TCP b -> a all along.
        let tcp = s.spawn(|| {
            traffic::tcp_transfer(
                b.netns(),
                a.netns(),
                a.ip(),
                7702,
                10 << 20,
                Duration::from_secs(60),
            )
        });
        // Bad frames and good ones in the same bursts, spread over the transfer.
        for _ in 0..EACH {
            let mut burst: Vec<Vec<u8>> = cases.iter().map(|(_, f)| f.clone()).collect();
            burst.push(good.clone());
            inject(n2, &burst);
            std::thread::sleep(Duration::from_millis(50));
        }
        let t = tcp
            .join()
            .unwrap()
            .expect("TCP b -> a during the injection");
        assert_eq!(t.bytes, 10 << 20);
    });

    // Every good injected frame reached pod a.
    let mut got = 0;
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(2);
    while got < EACH && Instant::now() < deadline {
        if let Ok((n, from)) = sink.recv_from(&mut buf) {
            assert_eq!(&buf[..n], b"injected through the underlay");
            assert_eq!(from, SocketAddrV4::new(b.ip(), GOOD_SRC_PORT).into());
            got += 1;
        }
    }
    assert_eq!(got, EACH, "good frames in the bursts delivered");

    let after = drops(n1);
    let delta = |reason: &str| {
        let get = |v: &serde_json::Value| {
            v[reason]
                .as_u64()
                .unwrap_or_else(|| panic!("no drops.{reason}: {after}"))
        };
        get(&after) - get(&before)
    };
    let mut wrong = Vec::new();
    for (reason, _) in &cases {
        let d = delta(reason);
        if d != EACH as u64 {
            wrong.push(format!("{reason}: {d}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "each reason counts its {EACH} frames; wrong: {wrong:?}\n{after}"
    );
    assert!(n1.engine_running(), "the engine survived");
    assert_eq!(
        traffic::udp_echo(
            a.netns(),
            b.netns(),
            b.ip(),
            7703,
            50,
            1000,
            Duration::from_secs(1)
        )
        .unwrap(),
        50
    );
}

#[test]
fn overlay_malformed_mtu_too_big_gets_frag_needed() {
    let c = cluster();
    let n1 = c.node("node-1");
    let (a, b) = (c.pod("a"), c.pod("b"));
    let pod_mtu = c.overlay().unwrap().pod_mtu();
    assert_eq!(pod_mtu, 1450);
    let frag_needed = || {
        drops(n1)["frag_needed"]
            .as_u64()
            .expect("drops.frag_needed")
    };

    // A misconfigured pod: eth0 at the underlay's 1500.
    a.netns()
        .ip(&["link", "set", "dev", "eth0", "mtu", "1500"])
        .unwrap();
    // A DF packet of exactly the pod MTU fits the tunnel.
    let p = traffic::ping(a.netns(), b.ip(), 1, &["-M", "do", "-s", "1422"]).unwrap();
    assert_eq!(p.received, 1, "{}", p.output);
    let before = frag_needed();
    // 1500 bytes with DF: fragmentation needed, next-hop MTU 1450, from a's gateway.
    let p = traffic::ping(a.netns(), b.ip(), 1, &["-M", "do", "-s", "1472"]).unwrap();
    assert_eq!(p.received, 0, "{}", p.output);
    assert!(
        p.output
            .contains(&format!("From {} icmp_seq=1 Frag needed", a.gateway()))
            && p.output.contains(&format!("mtu = {pod_mtu}")),
        "{}",
        p.output
    );
    assert!(frag_needed() > before, "frag_needed counted");
    // The pod's kernel learned the path MTU from it.
    let route = a
        .netns()
        .ip(&["route", "get", &b.ip().to_string()])
        .unwrap();
    assert!(route.contains(&format!("mtu {pod_mtu}")), "{route}");

    // With the documented pod MTU (and the learned one forgotten), TCP works both ways.
    a.netns()
        .ip(&["link", "set", "dev", "eth0", "mtu", &pod_mtu.to_string()])
        .unwrap();
    a.netns().ip(&["route", "flush", "cache"]).unwrap();
    for (from, to, port) in [(a, b, 7801), (b, a, 7802)] {
        let t = traffic::tcp_transfer(
            from.netns(),
            to.netns(),
            to.ip(),
            port,
            10 << 20,
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("TCP {} -> {}: {e}", from.name(), to.name()));
        assert_eq!(t.bytes, 10 << 20);
    }
}
