//! Malformed frames injected into the engine's ports are dropped and counted under their
//! reason, while good traffic keeps flowing. Frames are injected from inside the pod namespace
//! with a packet socket on the pod's interface (veth for one pod, TAP for the other). A frame
//! shorter than an Ethernet header cannot cross a veth or TAP (the kernel pads what a packet
//! socket sends to the link header length), so that case goes through `sluice replay`, which
//! feeds a pcap file into the same pipeline.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bench::testbed::{Cluster, NodeDef, PodDef, PodHandle};
use bench::traffic;
use dataplane::packet::{Batch, Meta};
use dataplane::port::afpacket::{AfPacketOptions, AfPacketPort};
use dataplane::port::pcap::PcapWriter;
use dataplane::port::Port;
use etherparse::PacketBuilder;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const EACH: usize = 5;

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn udp(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(1111, 2222)
        .write(&mut v, b"malformed?")
        .unwrap();
    v
}

/// (drop reason counter, frame) for every malformation a link can carry.
fn cases(good: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut c = Vec::new();
    c.push(("ipv4_truncated", good[..14 + 12].to_vec()));
    let mut f = good.to_vec();
    f[14] = 0x65;
    c.push(("ipv4_bad_version", f));
    let mut f = good.to_vec();
    f[14] = 0x44;
    c.push(("ipv4_bad_ihl", f));
    let mut f = good.to_vec();
    f[14] = 0x4f;
    c.push(("ipv4_header_truncated", f));
    let mut f = good.to_vec();
    f[16..18].copy_from_slice(&1400u16.to_be_bytes());
    c.push(("ipv4_bad_total_length", f));
    let mut f = good.to_vec();
    f[25] ^= 0xff;
    c.push(("ipv4_bad_checksum", f));
    let mut f = good.to_vec();
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    c.push(("eth_unknown_ethertype", f));
    let mut f = good.to_vec();
    f[0..6].copy_from_slice(&[0x02, 0x42, 0, 0, 0, 0x99]);
    c.push(("eth_not_for_us", f));
    c
}

fn inject(pod: &PodHandle, frames: &[Vec<u8>]) {
    let ifname = pod.ifname().to_string();
    pod.netns().run(move || {
        let opts = AfPacketOptions {
            vnet_hdr: false,
            ..AfPacketOptions::default()
        };
        let mut port = AfPacketPort::open(&ifname, &opts).expect("packet socket in the pod");
        let mut batch = Batch::new(frames.len());
        for f in frames {
            assert!(batch.push_copy(f, Meta::default()));
        }
        let idx: Vec<u16> = (0..frames.len() as u16).collect();
        let r = port.tx_burst(&batch, &idx);
        assert_eq!(r.sent, frames.len(), "all frames injected: {r:?}");
    });
}

#[test]
fn malformed_frames_are_counted_and_good_traffic_flows() {
    let c = Cluster::build(
        Path::new(BIN),
        vec![NodeDef::new(
            "node-1",
            "10.244.1.0/24",
            vec![
                PodDef::afpacket("a", Ipv4Addr::new(10, 244, 1, 10)),
                PodDef::tap("b", Ipv4Addr::new(10, 244, 1, 11)),
            ],
        )],
    )
    .unwrap();
    let (a, b) = (c.pod("a"), c.pod("b"));
    let node = c.node("node-1");
    // Resolve everything once so good traffic is known to flow before the injection.
    assert_eq!(
        traffic::udp_echo(
            a.netns(),
            b.netns(),
            b.ip(),
            9000,
            20,
            200,
            Duration::from_secs(1)
        )
        .unwrap(),
        20
    );
    let status = node.query("status").unwrap();
    let engine_mac = |ifname: &str| {
        parse_mac(
            status["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == ifname)
                .unwrap()["mac"]
                .as_str()
                .unwrap(),
        )
    };
    let before = node.counters().unwrap();

    let a_good = udp(
        a.mac().unwrap(),
        engine_mac(a.host_ifname().unwrap()),
        a.ip(),
        b.ip(),
    );
    let b_good = udp(b.mac().unwrap(), engine_mac(b.ifname()), b.ip(), a.ip());
    let a_cases = cases(&a_good);
    let b_cases = cases(&b_good);
    // Interleave: bad frames and good ones in the same bursts.
    let mut burst_a = Vec::new();
    let mut burst_b = Vec::new();
    for _ in 0..EACH {
        for (_, f) in &a_cases {
            burst_a.push(f.clone());
        }
        burst_a.push(a_good.clone());
        for (_, f) in &b_cases {
            burst_b.push(f.clone());
        }
    }
    inject(a, &burst_a);
    inject(b, &burst_b);
    // Good traffic keeps flowing, both ways, after the injection.
    assert_eq!(
        traffic::udp_echo(
            a.netns(),
            b.netns(),
            b.ip(),
            9001,
            50,
            1000,
            Duration::from_secs(1)
        )
        .unwrap(),
        50
    );
    assert_eq!(
        traffic::udp_echo(
            b.netns(),
            a.netns(),
            a.ip(),
            9002,
            50,
            1000,
            Duration::from_secs(1)
        )
        .unwrap(),
        50
    );

    let after = node.counters().unwrap();
    let delta = |reason: &str| {
        after["drops"][reason].as_u64().unwrap() - before["drops"][reason].as_u64().unwrap()
    };
    for (reason, _) in &a_cases {
        assert_eq!(
            delta(reason),
            2 * EACH as u64,
            "{reason}: {EACH} injected on each port\n{after}"
        );
    }
    let port_drops = |ifname: &str| {
        after["ports"][ifname]["rx_dropped"].as_u64().unwrap()
            - before["ports"][ifname]["rx_dropped"].as_u64().unwrap()
    };
    assert!(port_drops(a.host_ifname().unwrap()) >= (EACH * a_cases.len()) as u64);
    assert!(port_drops(b.ifname()) >= (EACH * b_cases.len()) as u64);
    assert!(node.engine_running(), "the engine survived");
}

#[test]
fn malformed_truncated_ethernet_through_replay() {
    // Frames no kernel link would carry, replayed from a pcap file into the pipeline.
    let dir = std::env::temp_dir().join(format!("sluice-malformed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("cluster.yaml");
    std::fs::write(
        &cfg,
        "cluster: { name: replay, cluster_cidr: 10.244.0.0/16 }\nnodes:\n  - name: n1\n    pod_cidr: 10.244.1.0/24\n    admin_socket: /tmp/unused-replay.sock\n    pods:\n      - { name: a, ip: 10.244.1.10, port: { kind: afpacket, interface: pa, mac: \"02:00:00:00:00:0a\" } }\n      - { name: b, ip: 10.244.1.11, port: { kind: afpacket, interface: pb, mac: \"02:00:00:00:00:0b\" } }\n",
    )
    .unwrap();
    let input = dir.join("in.pcap");
    {
        let mut w = PcapWriter::new(std::fs::File::create(&input).unwrap()).unwrap();
        let ping = {
            let mut v = Vec::new();
            PacketBuilder::ethernet2([2, 0xaa, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0x0a])
                .ipv4([10, 244, 1, 10], [10, 244, 1, 1], 64)
                .icmpv4_echo_request(1, 1)
                .write(&mut v, b"ping")
                .unwrap();
            v
        };
        for len in [0usize, 1, 6, 13] {
            w.write_frame(&ping[..len]).unwrap();
            w.write_frame(&ping).unwrap();
        }
        w.flush().unwrap();
    }
    let out = Command::new(BIN)
        .args([
            "replay",
            "--config",
            cfg.to_str().unwrap(),
            "--node",
            "n1",
            "--input",
            &format!("pa={}", input.display()),
            "--out-dir",
        ])
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().take(2).eq(["eth_truncated", "4"])),
        "4 truncated frames counted:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().take(2).eq(["icmp_echo_replied", "4"])),
        "every good ping answered:\n{text}"
    );
    // The replies were written to the port's output capture.
    let mut r = dataplane::port::pcap::PcapReader::new(
        std::fs::File::open(dir.join("out/pa.pcap")).unwrap(),
    )
    .unwrap();
    let mut n = 0;
    while let Some(f) = r.next_frame().unwrap() {
        assert_eq!(&f[0..6], &[2, 0xaa, 0, 0, 0, 1]);
        n += 1;
    }
    assert_eq!(n, 4);
    std::fs::remove_dir_all(&dir).unwrap();
}
