//! Pods on one node talk through the engine: TCP (10+ MB, every byte checked) and UDP, with
//! AF_PACKET ports and with TAP ports; the same traffic fails once the engine is stopped, so a
//! pass cannot come from the node's kernel (which keeps ip_forward=0 anyway).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use bench::testbed::{Cluster, NodeDef, PodDef, RingDef};
use bench::traffic;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const MB10: u64 = 10 * 1024 * 1024 + 12345;

fn one_node(pods: Vec<PodDef>) -> Cluster {
    Cluster::build(
        Path::new(BIN),
        vec![NodeDef::new("node-1", "10.244.1.0/24", pods)],
    )
    .expect("cluster builds")
}

fn exchange_then_fail_without_engine(c: &Cluster) {
    let (a, b) = (c.pod("a"), c.pod("b"));
    let node = c.node("node-1");
    assert_eq!(
        node.netns()
            .read_sysctl("net.ipv4.ip_forward")
            .unwrap()
            .trim(),
        "0"
    );

    let t = traffic::tcp_transfer(
        a.netns(),
        b.netns(),
        b.ip(),
        7001,
        MB10,
        Duration::from_secs(30),
    )
    .expect("TCP a -> b");
    assert_eq!(t.bytes, MB10);
    let t = traffic::tcp_transfer(
        b.netns(),
        a.netns(),
        a.ip(),
        7002,
        MB10,
        Duration::from_secs(30),
    )
    .expect("TCP b -> a");
    assert_eq!(t.bytes, MB10);
    let ok = traffic::udp_echo(
        a.netns(),
        b.netns(),
        b.ip(),
        7003,
        200,
        1200,
        Duration::from_secs(1),
    )
    .expect("UDP a <-> b");
    assert_eq!(ok, 200, "every UDP datagram echoed");

    let counters = node.counters().unwrap();
    let routed = counters["events"]["routed"].as_u64().unwrap();
    assert!(routed > 400, "the engine routed the traffic: {counters}");

    node.stop_engine().unwrap();
    let r = traffic::tcp_transfer(
        a.netns(),
        b.netns(),
        b.ip(),
        7004,
        1 << 20,
        Duration::from_secs(2),
    );
    assert!(r.is_err(), "TCP must fail without the engine, got {r:?}");
    let ok = traffic::udp_echo(
        a.netns(),
        b.netns(),
        b.ip(),
        7005,
        5,
        100,
        Duration::from_millis(300),
    )
    .unwrap_or(0);
    assert_eq!(ok, 0, "UDP must fail without the engine");
}

#[test]
fn pod_to_pod_afpacket() {
    let c = one_node(vec![
        PodDef::afpacket("a", Ipv4Addr::new(10, 244, 1, 10)),
        PodDef::afpacket("b", Ipv4Addr::new(10, 244, 1, 11)),
    ]);
    exchange_then_fail_without_engine(&c);
}

#[test]
fn pod_to_pod_tap() {
    let c = one_node(vec![
        PodDef::tap("a", Ipv4Addr::new(10, 244, 1, 10)),
        PodDef::tap("b", Ipv4Addr::new(10, 244, 1, 11)),
    ]);
    exchange_then_fail_without_engine(&c);
}

#[test]
fn pod_to_pod_afpacket_v3_ring() {
    // The block ring (TPACKET_V3): same traffic, frames handed over a block at a time.
    let c = one_node(vec![
        PodDef::afpacket("a", Ipv4Addr::new(10, 244, 1, 10)).with_ring(RingDef::V3),
        PodDef::afpacket("b", Ipv4Addr::new(10, 244, 1, 11)).with_ring(RingDef::V3),
    ]);
    let status = c.node("node-1").query("status").unwrap();
    let kinds: Vec<_> = status["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["afpacket/v3", "afpacket/v3"], "{status}");
    exchange_then_fail_without_engine(&c);
}

#[test]
fn pod_to_pod_afpacket_to_tap() {
    // Offloaded veth frames (GSO super-frames, partial checksums) are completed in software
    // on their way into a TAP; the receiver's byte check proves the segments are right.
    let c = one_node(vec![
        PodDef::afpacket("a", Ipv4Addr::new(10, 244, 1, 10)),
        PodDef::tap("b", Ipv4Addr::new(10, 244, 1, 11)),
    ]);
    exchange_then_fail_without_engine(&c);
}

#[test]
fn pod_to_pod_gateway_arp_ttl_and_icmp_errors() {
    let c = one_node(vec![
        PodDef::afpacket("a", Ipv4Addr::new(10, 244, 1, 10)),
        PodDef::tap("b", Ipv4Addr::new(10, 244, 1, 11)),
    ]);
    let (a, b) = (c.pod("a"), c.pod("b"));
    let node = c.node("node-1");
    let gw = node.gateway();

    // Pods ping their gateway.
    for p in [a, b] {
        let r = traffic::ping(p.netns(), gw, 3, &[]).unwrap();
        assert_eq!(
            r.received,
            3,
            "{} pings its gateway:\n{}",
            p.name(),
            r.output
        );
    }

    // ARP both ways: the pod resolved the gateway to the engine's MAC on its port, and the
    // engine learned the pod's MAC.
    let status = node.query("status").unwrap();
    let port_mac = |name: &str| {
        status["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["mac"].as_str().unwrap().to_string())
            .unwrap()
    };
    let a_gw_mac = port_mac(a.host_ifname().unwrap());
    let neigh = a.netns().ip(&["neigh", "show", &gw.to_string()]).unwrap();
    assert!(
        neigh.contains(&a_gw_mac),
        "pod a's ARP entry for the gateway {gw} is the engine's MAC {a_gw_mac}: {neigh}"
    );
    let learned = node.query("neighbours").unwrap();
    let mac_str = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    for p in [a, b] {
        let want = mac_str(p.mac().unwrap());
        assert!(
            learned
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["ip"] == p.ip().to_string() && n["mac"] == want),
            "engine learned {} at {want}: {learned}",
            p.ip()
        );
    }

    // TTL is decremented: b's replies (sent with 64) arrive at a with 63.
    let r = traffic::ping(a.netns(), b.ip(), 2, &[]).unwrap();
    assert_eq!(r.received, 2, "{}", r.output);
    assert!(r.output.contains("ttl=63"), "one router hop: {}", r.output);

    // A destination no route covers: ICMP net unreachable from the gateway, counted.
    let r = traffic::ping(a.netns(), Ipv4Addr::new(10, 99, 0, 1), 1, &[]).unwrap();
    assert!(
        r.output.contains(&format!("From {gw}"))
            && r.output.contains("Destination Net Unreachable"),
        "{}",
        r.output
    );
    // TTL 1 towards another pod: time exceeded from the gateway, counted.
    let r = traffic::ping(a.netns(), b.ip(), 1, &["-t", "1"]).unwrap();
    assert!(r.output.contains("Time to live exceeded"), "{}", r.output);
    let counters = node.counters().unwrap();
    assert!(
        counters["drops"]["no_route"].as_u64().unwrap() >= 1,
        "{counters}"
    );
    assert!(
        counters["drops"]["ttl_expired"].as_u64().unwrap() >= 1,
        "{counters}"
    );
    assert!(
        counters["events"]["icmp_error_sent"].as_u64().unwrap() >= 2,
        "{counters}"
    );
}
