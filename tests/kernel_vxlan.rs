//! sluice's VXLAN interoperates with the kernel's: node-1 runs the sluice engine, node-2 is a
//! flannel-style kernel node (`flannel.1`, VNI 1, port 8472, flannel's routes, neighbour and
//! FDB entries, no engine). Pods on both sides talk both ways: TCP of 10+ MB (every byte
//! checked), UDP echo, ping. Both sides count the tunnel traffic (the engine's events, the
//! kernel's `flannel.1` statistics), and tshark checks what sluice put on the wire.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use bench::testbed::{
    tshark_fields, Capture, Cluster, NodeDef, OverlayDef, PodDef, KERNEL_VTEP, TSHARK_JUDGE, UPLINK,
};
use bench::traffic;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const MB10: u64 = 10 * 1024 * 1024 + 999;
const TIMEOUT: Duration = Duration::from_secs(60);

fn cluster() -> Cluster {
    Cluster::build_overlay(
        Path::new(BIN),
        OverlayDef::vxlan(),
        vec![
            NodeDef::new(
                "node-1",
                "10.244.1.0/24",
                vec![
                    PodDef::afpacket("a", Ipv4Addr::new(10, 244, 1, 10)),
                    PodDef::tap("t", Ipv4Addr::new(10, 244, 1, 11)),
                ],
            ),
            NodeDef::new(
                "node-2",
                "10.244.2.0/24",
                vec![PodDef::afpacket("b", Ipv4Addr::new(10, 244, 2, 10))],
            )
            .kernel(),
        ],
    )
    .expect("cluster builds")
}

fn event(c: &Cluster, name: &str) -> u64 {
    let counters = c.node("node-1").counters().expect("counters");
    counters["events"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no events.{name}: {counters}"))
}

/// (rx packets, tx packets) of a link of the kernel node.
fn kernel_packets(c: &Cluster, link: &str) -> (u64, u64) {
    let out = c
        .node("node-2")
        .netns()
        .ip(&["-s", "-j", "link", "show", "dev", link])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v[0]["stats64"];
    (
        s["rx"]["packets"].as_u64().unwrap(),
        s["tx"]["packets"].as_u64().unwrap(),
    )
}

fn tcp(c: &Cluster, from: &str, to: &str, port: u16, bytes: u64) {
    let (a, b) = (c.pod(from), c.pod(to));
    let t = traffic::tcp_transfer(a.netns(), b.netns(), b.ip(), port, bytes, TIMEOUT)
        .unwrap_or_else(|e| {
            panic!(
                "TCP {from} -> {to}: {e}\nnode-1 counters: {}",
                c.node("node-1").counters().unwrap_or_default()
            )
        });
    assert_eq!(t.bytes, bytes);
    eprintln!(
        "TCP {from} -> {to}: {} bytes at {:.0} Mbit/s",
        t.bytes,
        t.mbit_per_s()
    );
}

fn udp_and_ping(c: &Cluster, from: &str, to: &str, port: u16) {
    let (a, b) = (c.pod(from), c.pod(to));
    let ok = traffic::udp_echo(
        a.netns(),
        b.netns(),
        b.ip(),
        port,
        100,
        1200,
        Duration::from_secs(1),
    )
    .unwrap();
    assert_eq!(ok, 100, "UDP {from} <-> {to}: every datagram echoed");
    let p = traffic::ping(a.netns(), b.ip(), 3, &[]).unwrap();
    assert_eq!(p.received, 3, "ping {from} -> {to}:\n{}", p.output);
}

#[test]
fn kernel_vxlan_sluice_and_flannel_node_talk_both_ways() {
    let c = cluster();
    let node1 = c.node("node-1");
    assert!(node1.engine_running());
    assert!(!c.node("node-2").engine_running());
    assert_eq!(
        node1.netns().read_sysctl("net.ipv4.ip_forward").unwrap(),
        "0"
    );
    let (enc0, dec0) = (
        event(&c, "overlay_encapsulated"),
        event(&c, "overlay_decapsulated"),
    );
    let (krx0, ktx0) = kernel_packets(&c, KERNEL_VTEP);
    let (_, utx0) = kernel_packets(&c, UPLINK);

    // Watch node-1's uplink during the first transfer: the frames sluice sends must be what
    // the kernel expects (the kernel's own frames are its business).
    let pcap = c.dir().join("ul0.pcap");
    let cap = Capture::start(node1.netns(), UPLINK, "udp", &pcap).unwrap();
    tcp(&c, "a", "b", 7601, MB10);
    let stats = cap.stop().unwrap();
    tcp(&c, "b", "a", 7602, MB10);
    // The TAP pod too, both ways.
    tcp(&c, "t", "b", 7603, 2 << 20);
    tcp(&c, "b", "t", 7604, 2 << 20);
    udp_and_ping(&c, "a", "b", 7611);
    udp_and_ping(&c, "b", "a", 7612);
    udp_and_ping(&c, "t", "b", 7613);
    udp_and_ping(&c, "b", "t", 7614);

    let (enc, dec) = (
        event(&c, "overlay_encapsulated"),
        event(&c, "overlay_decapsulated"),
    );
    let (krx, ktx) = kernel_packets(&c, KERNEL_VTEP);
    let (_, utx) = kernel_packets(&c, UPLINK);
    assert!(enc > enc0 + 7000, "encapsulated {enc0} -> {enc}");
    assert!(dec > dec0 + 7000, "decapsulated {dec0} -> {dec}");
    assert!(krx > krx0 + 7000, "flannel.1 rx {krx0} -> {krx}");
    // flannel.1 counts the pods' GSO super-frames once each; ul0 counts the segments.
    assert!(ktx > ktx0 + 1000, "flannel.1 tx {ktx0} -> {ktx}");
    assert!(utx > utx0 + 7000, "ul0 tx {utx0} -> {utx}");

    let mut args = vec!["-d", "udp.port==8472,vxlan"];
    args.extend(TSHARK_JUDGE);
    args.extend(["-Y", "ip.src==192.168.100.1"]);
    let rows = tshark_fields(
        &stats.path,
        &args,
        &[
            "frame.number",
            "frame.len",
            "vxlan.vni",
            "eth.dst",
            "ip.checksum.status",
            "udp.checksum.status",
            "tcp.checksum.status",
        ],
    )
    .unwrap();
    let vtep2 = bench::testbed::mac_string(c.node("node-2").vtep_mac().unwrap());
    let mut tcp_frames = 0;
    for row in &rows {
        let f = |i: usize| row.get(i).map(String::as_str).unwrap_or("");
        let what = format!("{row:?}");
        assert!(f(1).parse::<usize>().unwrap() <= 1514, "{what}");
        assert_eq!(f(2), "1", "VNI: {what}");
        // Outer destination MAC, then the inner one: node-2's flannel.1.
        assert_eq!(f(3).split(',').nth(1), Some(vtep2.as_str()), "{what}");
        assert_eq!(f(4), "1,1", "IPv4 checksums: {what}");
        assert_eq!(f(5).split(',').next(), Some("1"), "UDP checksum: {what}");
        if !f(6).is_empty() {
            assert_eq!(f(6), "1", "TCP checksum: {what}");
            tcp_frames += 1;
        }
    }
    assert!(
        tcp_frames > 5000,
        "only {tcp_frames} of sluice's frames judged"
    );
}
