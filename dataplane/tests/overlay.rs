//! The overlay in the pipeline, frame by frame: encapsulation towards peers (VXLAN and UDP
//! mode), decapsulation from them, the checks that keep the pod network closed, the MTU rules.
//! Frames are built and judged with etherparse and the encap crate's own decapsulation.

use std::net::Ipv4Addr;
use std::time::Instant;

use dataplane::config::{OverlayConfig, OverlayMode, Peer, PortConfig, PortKind};
use dataplane::counters::{DropReason, Event};
use dataplane::packet::{Batch, Meta, Offload};
use dataplane::pipeline::Pipeline;
use dataplane::port::afpacket::RingKind;
use dataplane::route::Route;
use encap::offload::GsoKind;
use encap::{udp_encap, vxlan};
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, NetSlice, PacketBuilder, SlicedPacket,
    TransportSlice,
};

const GW: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
const A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 20);
const LOCAL_UL: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
const PEER_UL: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 2);
const STRANGER_UL: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 99);
const MAC_POD_PORT: [u8; 6] = [2, 0, 0, 0, 0, 0xa0];
const MAC_UPLINK: [u8; 6] = [2, 0, 0, 0, 0, 0xee];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xef];
const POD_A: [u8; 6] = [2, 0xaa, 0, 0, 0, 1];
const MY_VTEP: [u8; 6] = [2, 0x76, 0, 0, 0, 1];
const PEER_VTEP: [u8; 6] = [2, 0x76, 0, 0, 0, 2];
const UPLINK: u16 = 1;
const VNI: u32 = 1;

fn overlay_cfg(mode: OverlayMode) -> OverlayConfig {
    OverlayConfig {
        mode,
        uplink: PortConfig {
            name: "ul0".into(),
            kind: PortKind::AfPacket { ring: RingKind::V2 },
            mac: None,
        },
        local_ip: LOCAL_UL,
        prefix_len: 24,
        underlay_gateway: None,
        vtep_mac: MY_VTEP,
        mtu: 1500,
        ttl: 64,
        peers: vec![Peer {
            node: "node-2".into(),
            underlay_ip: PEER_UL,
            pod_cidr: Ipv4Addr::new(10, 244, 2, 0),
            pod_prefix_len: 24,
            vtep_mac: PEER_VTEP,
        }],
    }
}

const VXLAN: OverlayMode = OverlayMode::Vxlan {
    vni: VNI,
    port: 8472,
    udp_checksum: true,
};

fn pipeline(mode: OverlayMode) -> Pipeline {
    let mut p = Pipeline::new(
        GW,
        vec![MAC_POD_PORT, MAC_UPLINK],
        &[Route {
            prefix: A,
            len: 32,
            port: 0,
            via: None,
        }],
    );
    p.set_overlay(&overlay_cfg(mode), UPLINK);
    p
}

fn run_meta(p: &mut Pipeline, meta: Meta, frame: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut batch = Batch::new(4);
    let mut local = Batch::new(160);
    assert!(batch.push_copy(frame, meta));
    p.process(&mut batch, &mut local, Instant::now());
    let out = |b: &Batch| -> Vec<(u16, Vec<u8>)> {
        b.iter()
            .filter_map(|x| x.meta.out_port.map(|o| (o, x.data().to_vec())))
            .collect()
    };
    out(&batch).into_iter().chain(out(&local)).collect()
}

fn run(p: &mut Pipeline, port: u16, frame: &[u8]) -> Vec<(u16, Vec<u8>)> {
    run_meta(
        p,
        Meta {
            in_port: port,
            ..Meta::default()
        },
        frame,
    )
}

fn arp(
    op: ArpOperation,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    sender: ([u8; 6], Ipv4Addr),
    target: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    let a = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        op,
        &sender.0,
        &sender.1.octets(),
        &[0; 6],
        &target.octets(),
    )
    .unwrap();
    f.extend_from_slice(&a.to_bytes());
    f
}

fn udp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: &[u8],
    df: bool,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(4000, 5000);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    if !df {
        v[14 + 6] &= !0x40;
        v[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&v[14..34]);
        v[24..26].copy_from_slice(&c.to_be_bytes());
    }
    v
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The pod's frame to the remote pod, through the gateway.
fn to_remote(payload: &[u8]) -> Vec<u8> {
    udp(POD_A, MAC_POD_PORT, A, REMOTE, payload, true)
}

/// Teaches the pipeline the pod's MAC and the peer's underlay MAC.
fn learn(p: &mut Pipeline) {
    run(
        p,
        0,
        &arp(ArpOperation::REQUEST, POD_A, [0xff; 6], (POD_A, A), GW),
    );
    let out = run(
        p,
        UPLINK,
        &arp(
            ArpOperation::REQUEST,
            PEER_MAC,
            [0xff; 6],
            (PEER_MAC, PEER_UL),
            LOCAL_UL,
        ),
    );
    assert_eq!(out.len(), 1, "ARP for the underlay address is answered");
}

/// A VXLAN frame from `outer_src` carrying `inner` (an Ethernet frame), as a peer sends it.
fn vxlan_from(outer_src: Ipv4Addr, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; vxlan::OVERHEAD + inner.len()];
    buf[vxlan::OVERHEAD..].copy_from_slice(inner);
    let e = vxlan::Encap {
        src_mac: PEER_MAC,
        dst_mac: MAC_UPLINK,
        src_ip: outer_src,
        dst_ip: LOCAL_UL,
        dst_port: 8472,
        vni,
        ttl: 64,
        udp_checksum: true,
    };
    let n = vxlan::encapsulate(&mut buf, inner.len(), &e, 50000).unwrap();
    buf.truncate(n);
    buf
}

fn inner_from_remote() -> Vec<u8> {
    udp(PEER_VTEP, MY_VTEP, REMOTE, A, b"hello from node-2", true)
}

fn valid_ipv4(frame: &[u8]) -> SlicedPacket<'_> {
    let s = SlicedPacket::from_ethernet(frame).expect("etherparse parses the frame");
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "IPv4 header checksum"
    );
    if let Some(TransportSlice::Udp(u)) = &s.transport {
        if u.checksum() != 0 {
            let c = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
            assert_eq!(u.checksum(), c, "UDP checksum");
        }
    }
    s
}

#[test]
fn vxlan_encap_resolves_the_peer_then_sends_a_valid_frame() {
    let mut p = pipeline(VXLAN);
    run(
        &mut p,
        0,
        &arp(ArpOperation::REQUEST, POD_A, [0xff; 6], (POD_A, A), GW),
    );
    // The peer's underlay MAC is unknown: the packet waits, an ARP request goes out of the
    // uplink, from the underlay address.
    let out = run(&mut p, 0, &to_remote(b"payload"));
    assert_eq!(out.len(), 1, "{out:?}");
    let (port, req) = &out[0];
    assert_eq!(*port, UPLINK);
    let a = ArpPacket::from_slice(&req[14..]).unwrap();
    assert_eq!(a.sender_protocol_addr(), &LOCAL_UL.octets());
    assert_eq!(a.target_protocol_addr(), &PEER_UL.octets());
    assert_eq!(a.sender_hw_addr(), &MAC_UPLINK);
    // The peer answers: the held packet leaves, encapsulated.
    let reply = arp(
        ArpOperation::REPLY,
        PEER_MAC,
        MAC_UPLINK,
        (PEER_MAC, PEER_UL),
        LOCAL_UL,
    );
    let out = run(&mut p, UPLINK, &reply);
    assert_eq!(out.len(), 1, "{out:?}");
    let (port, f) = &out[0];
    assert_eq!(*port, UPLINK);
    assert_eq!(&f[0..6], &PEER_MAC);
    assert_eq!(&f[6..12], &MAC_UPLINK);
    valid_ipv4(f);
    let d = vxlan::decapsulate(f, 8472).unwrap();
    assert_eq!((d.outer_src, d.outer_dst, d.vni), (LOCAL_UL, PEER_UL, VNI));
    let inner = &f[d.inner_range()];
    assert_eq!(&inner[0..6], &PEER_VTEP);
    assert_eq!(&inner[6..12], &MY_VTEP);
    let s = valid_ipv4(inner);
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!()
    };
    assert_eq!(ip.header().ttl(), 63, "inner TTL decremented once");
    assert_eq!(p.counters.event_count(Event::Encapsulated), 1);
    // Next packets go straight out.
    let out = run(&mut p, 0, &to_remote(b"again"));
    assert_eq!(out.len(), 1);
    assert!(vxlan::decapsulate(&out[0].1, 8472).is_ok());
}

#[test]
fn vxlan_from_a_peer_reaches_the_local_pod() {
    let mut p = pipeline(VXLAN);
    learn(&mut p);
    let out = run(
        &mut p,
        UPLINK,
        &vxlan_from(PEER_UL, VNI, &inner_from_remote()),
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let (port, f) = &out[0];
    assert_eq!(*port, 0);
    assert_eq!(&f[0..6], &POD_A);
    assert_eq!(&f[6..12], &MAC_POD_PORT);
    let s = valid_ipv4(f);
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!()
    };
    assert_eq!(ip.header().ttl(), 63);
    assert_eq!(p.counters.event_count(Event::Decapsulated), 1);
}

#[test]
fn decap_refuses_strangers_wrong_vni_bad_flags_and_foreign_inner_frames() {
    let mut p = pipeline(VXLAN);
    learn(&mut p);
    let good = inner_from_remote();
    let mut cases: Vec<(Vec<u8>, DropReason)> = vec![
        (
            vxlan_from(STRANGER_UL, VNI, &good),
            DropReason::OverlayUnknownPeer,
        ),
        (vxlan_from(PEER_UL, 2, &good), DropReason::OverlayWrongVni),
    ];
    let mut bad_flags = vxlan_from(PEER_UL, VNI, &good);
    bad_flags[42] = 0x0c;
    // Fix the UDP checksum so that the flags are what is refused.
    bad_flags[40..42].copy_from_slice(&[0, 0]);
    cases.push((bad_flags, DropReason::VxlanBadFlags));
    let mut other_mac = good.clone();
    other_mac[0..6].copy_from_slice(&[2, 9, 9, 9, 9, 9]);
    cases.push((
        vxlan_from(PEER_UL, VNI, &other_mac),
        DropReason::OverlayInnerNotForUs,
    ));
    let mut arp_inside = good.clone();
    arp_inside[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    cases.push((
        vxlan_from(PEER_UL, VNI, &arp_inside),
        DropReason::OverlayInnerNotIpv4,
    ));
    let truncated = vxlan_from(PEER_UL, VNI, &good);
    cases.push((
        truncated[..30].to_vec(),
        DropReason::OverlayOuterIpv4Malformed,
    ));
    let mut bad_udp = vxlan_from(PEER_UL, VNI, &good);
    bad_udp[40] ^= 0xff;
    cases.push((bad_udp, DropReason::OverlayUdpChecksum));
    // A peer's frame whose inner packet is for another node's pod: never routed back out.
    let to_elsewhere = udp(
        PEER_VTEP,
        MY_VTEP,
        REMOTE,
        Ipv4Addr::new(10, 244, 3, 3),
        b"x",
        true,
    );
    cases.push((
        vxlan_from(PEER_UL, VNI, &to_elsewhere),
        DropReason::OverlayNoRoute,
    ));
    for (frame, reason) in cases {
        let before = p.counters.drops[reason as usize];
        let out = run(&mut p, UPLINK, &frame);
        assert!(out.is_empty(), "{reason:?}: {out:?}");
        assert_eq!(p.counters.drops[reason as usize], before + 1, "{reason:?}");
    }
    // Good traffic is unaffected.
    let out = run(&mut p, UPLINK, &vxlan_from(PEER_UL, VNI, &good));
    assert_eq!(out.len(), 1);
}

#[test]
fn underlay_arp_and_ping_are_for_the_underlay_address_only() {
    let mut p = pipeline(VXLAN);
    learn(&mut p);
    // ARP for the pods' gateway on the uplink: not answered (the underlay is not a pod link).
    let out = run(
        &mut p,
        UPLINK,
        &arp(
            ArpOperation::REQUEST,
            PEER_MAC,
            [0xff; 6],
            (PEER_MAC, PEER_UL),
            GW,
        ),
    );
    assert!(out.is_empty());
    // Ping to the underlay address: answered.
    let b = PacketBuilder::ethernet2(PEER_MAC, MAC_UPLINK)
        .ipv4(PEER_UL.octets(), LOCAL_UL.octets(), 64)
        .icmpv4_echo_request(1, 1);
    let mut ping = Vec::new();
    b.write(&mut ping, b"underlay").unwrap();
    let out = run(&mut p, UPLINK, &ping);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, UPLINK);
    valid_ipv4(&out[0].1);
    // IPv4 to another underlay address: not ours.
    let other = udp(PEER_MAC, MAC_UPLINK, PEER_UL, STRANGER_UL, b"x", true);
    let before = p.counters.drops[DropReason::UnderlayNotForUs as usize];
    assert!(run(&mut p, UPLINK, &other).is_empty());
    assert_eq!(
        p.counters.drops[DropReason::UnderlayNotForUs as usize],
        before + 1
    );
}

#[test]
fn df_packet_above_the_pod_mtu_gets_fragmentation_needed_with_the_pod_mtu() {
    let mut p = pipeline(VXLAN);
    learn(&mut p);
    // 1451 bytes of IPv4: one more than the pod MTU (1500 - 50).
    let big = to_remote(&vec![7u8; 1451 - 28]);
    let out = run(&mut p, 0, &big);
    assert_eq!(out.len(), 1, "{out:?}");
    let (port, f) = &out[0];
    assert_eq!(*port, 0, "the error goes back to the pod");
    let s = valid_ipv4(f);
    let Some(TransportSlice::Icmpv4(icmp)) = &s.transport else {
        panic!("not ICMP")
    };
    let raw = icmp.slice();
    assert_eq!(
        (raw[0], raw[1]),
        (3, 4),
        "destination unreachable, fragmentation needed"
    );
    assert_eq!(
        u16::from_be_bytes([raw[6], raw[7]]),
        1450,
        "next-hop MTU = pod MTU"
    );
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!()
    };
    assert_eq!(ip.header().source(), GW.octets());
    assert_eq!(p.counters.drops[DropReason::FragNeeded as usize], 1);
    // Exactly the pod MTU passes.
    let fits = to_remote(&vec![7u8; 1450 - 28]);
    let out = run(&mut p, 0, &fits);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].1.len(),
        14 + 1500,
        "outer frame = underlay MTU + Ethernet"
    );
}

#[test]
fn packet_without_df_above_the_pod_mtu_is_fragmented_then_encapsulated() {
    let mut p = pipeline(VXLAN);
    learn(&mut p);
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let big = udp(POD_A, MAC_POD_PORT, A, REMOTE, &payload, false);
    let out = run(&mut p, 0, &big);
    assert_eq!(
        out.len(),
        3,
        "3028 bytes of IPv4 in fragments of at most 1450"
    );
    let mut data = Vec::new();
    for (port, f) in &out {
        assert_eq!(*port, UPLINK);
        assert!(f.len() <= 14 + 1500);
        let d = vxlan::decapsulate(f, 8472).unwrap();
        let inner = &f[d.inner_range()];
        let ip = encap::ipv4::Packet::new_checked(&inner[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(usize::from(ip.frag_offset()), data.len());
        data.extend_from_slice(ip.payload());
    }
    assert_eq!(data.len(), 8 + payload.len());
    assert_eq!(&data[8..], &payload[..]);
    assert_eq!(p.counters.event_count(Event::Fragmented), 1);
}

#[test]
fn gso_super_frame_is_segmented_with_checksums_before_encapsulation() {
    let mut p = pipeline(VXLAN);
    learn(&mut p);
    // A TCP super-frame of 4000 payload bytes, MSS 1398, checksum left to "the device"
    // (pseudo-header sum only), as a veth hands it over with PACKET_VNET_HDR.
    let payload: Vec<u8> = (0..4000u32).map(|i| (i * 13 % 256) as u8).collect();
    let b = PacketBuilder::ethernet2(POD_A, MAC_POD_PORT)
        .ipv4(A.octets(), REMOTE.octets(), 64)
        .tcp(40000, 80, 1000, 65535);
    let mut f = Vec::new();
    b.write(&mut f, &payload).unwrap();
    // Replace the TCP checksum by the pseudo-header sum, as a GSO frame carries it.
    let tcp_at = 34;
    let len = (f.len() - tcp_at) as u32;
    let mut sum: u32 = 0;
    for w in [A.octets(), REMOTE.octets()] {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]))
            + u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    sum += 6 + len;
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[tcp_at + 16..tcp_at + 18].copy_from_slice(&(sum as u16).to_be_bytes());
    let meta = Meta {
        in_port: 0,
        out_port: None,
        offload: Offload {
            needs_csum: true,
            data_valid: false,
            csum_start: tcp_at as u16,
            csum_offset: 16,
            gso: GsoKind::TcpV4,
            gso_size: 1398,
            hdr_len: (tcp_at + 20) as u16,
        },
    };
    let out = run_meta(&mut p, meta, &f);
    assert_eq!(out.len(), 3, "4000 bytes at MSS 1398");
    let mut data = Vec::new();
    for (port, frame) in &out {
        assert_eq!(*port, UPLINK);
        assert!(frame.len() <= 14 + 1500);
        let d = vxlan::decapsulate(frame, 8472).unwrap();
        let inner = &frame[d.inner_range()];
        let s = SlicedPacket::from_ethernet(inner).unwrap();
        let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Tcp(t))) = (&s.net, &s.transport)
        else {
            panic!("not TCP/IPv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        let c = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
        assert_eq!(t.checksum(), c, "inner TCP checksum computed in software");
        data.extend_from_slice(t.payload());
    }
    assert_eq!(data, payload);
}

#[test]
fn udp_mode_round_trip() {
    let mode = OverlayMode::Udp { port: 8285 };
    let mut p = pipeline(mode);
    learn(&mut p);
    let out = run(&mut p, 0, &to_remote(b"flannel udp"));
    assert_eq!(out.len(), 1);
    let (port, f) = &out[0];
    assert_eq!(*port, UPLINK);
    valid_ipv4(f);
    let d = udp_encap::decapsulate_ip(f, 8285).unwrap();
    assert_eq!((d.outer_src, d.outer_dst), (LOCAL_UL, PEER_UL));
    let inner = encap::ipv4::Packet::new_checked(&f[d.inner_range()]).unwrap();
    assert_eq!((inner.src(), inner.dst(), inner.ttl()), (A, REMOTE, 63));
    // And back: the peer's UDP-mode frame reaches the pod.
    let reply = udp(PEER_VTEP, MY_VTEP, REMOTE, A, b"back", true);
    let mut buf = vec![0u8; udp_encap::OVERHEAD + reply.len() - 14];
    buf[udp_encap::OVERHEAD..].copy_from_slice(&reply[14..]);
    let e = udp_encap::UdpEncap {
        src_mac: PEER_MAC,
        dst_mac: MAC_UPLINK,
        src_ip: PEER_UL,
        dst_ip: LOCAL_UL,
        dst_port: 8285,
        ttl: 64,
        udp_checksum: true,
    };
    let n = udp_encap::encapsulate_ip(&mut buf, reply.len() - 14, &e, 8285).unwrap();
    let out = run(&mut p, UPLINK, &buf[..n]);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, 0);
    assert_eq!(&out[0].1[0..6], &POD_A);
    valid_ipv4(&out[0].1);
    // From a stranger: refused.
    let e = udp_encap::UdpEncap {
        src_ip: STRANGER_UL,
        ..e
    };
    let n = udp_encap::encapsulate_ip(&mut buf, reply.len() - 14, &e, 8285).unwrap();
    assert!(run(&mut p, UPLINK, &buf[..n]).is_empty());
    assert_eq!(p.counters.drops[DropReason::OverlayUnknownPeer as usize], 1);
}

#[test]
fn random_underlay_bytes_never_panic() {
    let mut p = pipeline(VXLAN);
    learn(&mut p);
    let good = vxlan_from(PEER_UL, VNI, &inner_from_remote());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..20_000 {
        let mut f = good.clone();
        // Flip a few bytes, sometimes truncate.
        for _ in 0..(i % 4 + 1) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (x as usize) % f.len();
            f[at] = (x >> 32) as u8;
        }
        if i % 3 == 0 {
            f.truncate((x as usize) % f.len());
        }
        let _ = run(&mut p, UPLINK, &f);
    }
}
