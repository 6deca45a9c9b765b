//! The pipeline as a table: input frame -> expected verdict and output bytes (Katran's habit).
//! Frames are built with etherparse, an independent implementation, which also judges the
//! checksums of everything the engine emits.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dataplane::counters::{DropReason, Event};
use dataplane::packet::{Batch, Meta};
use dataplane::pipeline::Pipeline;
use dataplane::route::Route;
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, LinkSlice, NetSlice, PacketBuilder,
    SlicedPacket, TransportSlice,
};

const GW: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
const A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const B: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 11);
const MAC0: [u8; 6] = [2, 0, 0, 0, 0, 0xa0];
const MAC1: [u8; 6] = [2, 0, 0, 0, 0, 0xa1];
const POD_A: [u8; 6] = [2, 0xaa, 0, 0, 0, 1];
const POD_B: [u8; 6] = [2, 0xbb, 0, 0, 0, 1];

fn pipeline() -> Pipeline {
    Pipeline::new(
        GW,
        vec![MAC0, MAC1],
        &[
            Route {
                prefix: A,
                len: 32,
                port: 0,
                via: None,
            },
            Route {
                prefix: B,
                len: 32,
                port: 1,
                via: None,
            },
        ],
    )
}

/// Run one frame arriving on `port`; returns (out port, bytes) of every frame that leaves,
/// the processed frame first, then what the engine originated.
fn run(p: &mut Pipeline, port: u16, frame: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut batch = Batch::new(4);
    let mut local = Batch::new(8);
    assert!(batch.push_copy(
        frame,
        Meta {
            in_port: port,
            ..Meta::default()
        }
    ));
    p.process(&mut batch, &mut local, Instant::now());
    out(&batch).into_iter().chain(out(&local)).collect()
}

fn out(b: &Batch) -> Vec<(u16, Vec<u8>)> {
    b.iter()
        .filter_map(|x| x.meta.out_port.map(|o| (o, x.data().to_vec())))
        .collect()
}

fn arp(
    op: ArpOperation,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    sender: ([u8; 6], Ipv4Addr),
    target: ([u8; 6], Ipv4Addr),
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
        &target.0,
        &target.1.octets(),
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
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.octets(), dst.octets(), ttl)
        .udp(4000, 5000);
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn ping(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.octets(), dst.octets(), 64)
        .icmpv4_echo_request(7, 1);
    let mut v = Vec::new();
    b.write(&mut v, b"abcdefgh").unwrap();
    v
}

/// Checks every checksum of an Ethernet/IPv4 frame with etherparse; returns the parse.
fn valid(frame: &[u8]) -> SlicedPacket<'_> {
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
    match &s.transport {
        Some(TransportSlice::Icmpv4(i)) => {
            let icmp = i.header();
            assert_eq!(
                icmp.checksum,
                icmp.icmp_type.calc_checksum(i.payload()),
                "ICMP checksum"
            );
        }
        Some(TransportSlice::Udp(u)) => {
            let c = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
            assert_eq!(u.checksum(), c, "UDP checksum");
        }
        _ => {}
    }
    s
}

fn learn(p: &mut Pipeline) {
    assert_eq!(
        run(
            p,
            0,
            &arp(
                ArpOperation::REQUEST,
                POD_A,
                [0xff; 6],
                (POD_A, A),
                ([0; 6], GW)
            )
        )
        .len(),
        1
    );
    assert_eq!(
        run(
            p,
            1,
            &arp(
                ArpOperation::REQUEST,
                POD_B,
                [0xff; 6],
                (POD_B, B),
                ([0; 6], GW)
            )
        )
        .len(),
        1
    );
}

#[test]
fn arp_for_the_gateway_is_answered_and_the_sender_learned() {
    let mut p = pipeline();
    let o = run(
        &mut p,
        0,
        &arp(
            ArpOperation::REQUEST,
            POD_A,
            [0xff; 6],
            (POD_A, A),
            ([0; 6], GW),
        ),
    );
    assert_eq!(o.len(), 1);
    let (port, f) = &o[0];
    assert_eq!(*port, 0);
    assert_eq!(&f[0..6], &POD_A);
    assert_eq!(&f[6..12], &MAC0);
    let a = ArpPacket::from_slice(&f[14..]).unwrap();
    assert_eq!(a.operation, ArpOperation::REPLY);
    assert_eq!(a.sender_hw_addr(), &MAC0);
    assert_eq!(a.sender_protocol_addr(), &GW.octets());
    assert_eq!(a.target_hw_addr(), &POD_A);
    assert_eq!(a.target_protocol_addr(), &A.octets());
    assert_eq!(p.neigh.lookup(0, A), Some(POD_A));
    assert_eq!(p.counters.event_count(Event::ArpReplied), 1);
}

#[test]
fn proxy_arp_answers_for_pods_behind_other_ports_only() {
    let mut p = pipeline();
    let o = run(
        &mut p,
        0,
        &arp(
            ArpOperation::REQUEST,
            POD_A,
            [0xff; 6],
            (POD_A, A),
            ([0; 6], B),
        ),
    );
    assert_eq!(o.len(), 1);
    assert_eq!(
        ArpPacket::from_slice(&o[0].1[14..])
            .unwrap()
            .sender_protocol_addr(),
        &B.octets()
    );
    // A probe for the pod's own address (duplicate address detection) is not answered.
    let o = run(
        &mut p,
        0,
        &arp(
            ArpOperation::REQUEST,
            POD_A,
            [0xff; 6],
            (POD_A, Ipv4Addr::UNSPECIFIED),
            ([0; 6], A),
        ),
    );
    assert!(o.is_empty());
    let o = run(
        &mut p,
        0,
        &arp(
            ArpOperation::REQUEST,
            POD_A,
            [0xff; 6],
            (POD_A, A),
            ([0; 6], Ipv4Addr::new(192, 0, 2, 1)),
        ),
    );
    assert!(o.is_empty());
    assert_eq!(p.counters.drop_count(DropReason::ArpNotForUs), 2);
}

#[test]
fn ping_to_the_gateway_is_answered() {
    let mut p = pipeline();
    let o = run(&mut p, 0, &ping(POD_A, MAC0, A, GW));
    assert_eq!(o.len(), 1);
    let (port, f) = &o[0];
    assert_eq!(*port, 0);
    let s = valid(f);
    let Some(LinkSlice::Ethernet2(e)) = &s.link else {
        panic!()
    };
    assert_eq!(e.destination(), POD_A);
    assert_eq!(e.source(), MAC0);
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!()
    };
    assert_eq!(ip.header().source_addr(), GW);
    assert_eq!(ip.header().destination_addr(), A);
    let Some(TransportSlice::Icmpv4(i)) = &s.transport else {
        panic!()
    };
    assert!(
        matches!(i.icmp_type(), etherparse::Icmpv4Type::EchoReply(e) if e.id == 7 && e.seq == 1)
    );
    assert_eq!(i.payload(), b"abcdefgh");
}

#[test]
fn routed_packet_has_ttl_decremented_and_macs_rewritten() {
    let mut p = pipeline();
    learn(&mut p);
    let o = run(&mut p, 0, &udp(POD_A, MAC0, A, B, 64, b"hello"));
    assert_eq!(o.len(), 1);
    let (port, f) = &o[0];
    assert_eq!(*port, 1);
    let s = valid(f);
    let Some(LinkSlice::Ethernet2(e)) = &s.link else {
        panic!()
    };
    assert_eq!((e.destination(), e.source()), (POD_B, MAC1));
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!()
    };
    assert_eq!(ip.header().ttl(), 63);
    assert_eq!(ip.payload().payload.len(), 8 + 5);
    assert_eq!(p.counters.event_count(Event::Routed), 1);
}

#[test]
fn ethernet_padding_is_removed_before_forwarding() {
    let mut p = pipeline();
    learn(&mut p);
    let mut f = udp(POD_A, MAC0, A, B, 64, b"x");
    let unpadded = f.len();
    f.resize(60, 0);
    let o = run(&mut p, 0, &f);
    assert_eq!(o[0].1.len(), unpadded);
}

#[test]
fn unknown_neighbour_is_resolved_and_the_held_packet_released() {
    let mut p = pipeline();
    let o = run(&mut p, 0, &udp(POD_A, MAC0, A, B, 64, b"held"));
    // The packet is held, an ARP request for B goes out of port 1 from the gateway address.
    assert_eq!(o.len(), 1);
    let (port, req) = &o[0];
    assert_eq!(*port, 1);
    assert_eq!(&req[0..6], &[0xff; 6]);
    let a = ArpPacket::from_slice(&req[14..]).unwrap();
    assert_eq!(a.operation, ArpOperation::REQUEST);
    assert_eq!(a.sender_protocol_addr(), &GW.octets());
    assert_eq!(a.target_protocol_addr(), &B.octets());
    // B answers: the held packet leaves, addressed to B.
    let o = run(
        &mut p,
        1,
        &arp(ArpOperation::REPLY, POD_B, MAC1, (POD_B, B), (MAC1, GW)),
    );
    assert_eq!(o.len(), 1);
    let (port, f) = &o[0];
    assert_eq!(*port, 1);
    assert_eq!(&f[0..6], &POD_B);
    let s = valid(f);
    let Some(TransportSlice::Udp(u)) = &s.transport else {
        panic!()
    };
    assert_eq!(u.payload(), b"held");
}

#[test]
fn unresolvable_neighbour_gets_host_unreachable_after_retries() {
    let mut p = pipeline();
    learn(&mut p);
    // Forget nothing: route C (no such pod answers) through port 1.
    let c = Ipv4Addr::new(10, 244, 1, 12);
    p.routes.insert(Route {
        prefix: c,
        len: 32,
        port: 1,
        via: None,
    });
    let o = run(&mut p, 0, &udp(POD_A, MAC0, A, c, 64, b"lost"));
    assert_eq!(o.len(), 1, "one ARP request");
    let mut local = Batch::new(8);
    let mut t = Instant::now();
    let mut requests = 1;
    let mut errors = Vec::new();
    for _ in 0..5 {
        t += Duration::from_millis(1100);
        local.clear();
        p.timers(&mut local, t);
        for b in local.iter() {
            if b.data()[12..14] == [0x08, 0x06] {
                requests += 1;
            } else {
                errors.push((b.meta.out_port, b.data().to_vec()));
            }
        }
    }
    assert_eq!(requests, 3);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, Some(0));
    let s = valid(&errors[0].1);
    let Some(TransportSlice::Icmpv4(i)) = &s.transport else {
        panic!()
    };
    assert!(matches!(
        i.icmp_type(),
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Host
        )
    ));
    assert_eq!(p.counters.drop_count(DropReason::NeighbourUnresolved), 1);
}

#[test]
fn no_route_sends_net_unreachable_quoting_the_packet() {
    let mut p = pipeline();
    let orig = udp(POD_A, MAC0, A, Ipv4Addr::new(192, 0, 2, 9), 64, b"nowhere");
    let o = run(&mut p, 0, &orig);
    assert_eq!(o.len(), 1);
    let (port, f) = &o[0];
    assert_eq!(*port, 0);
    let s = valid(f);
    let Some(LinkSlice::Ethernet2(e)) = &s.link else {
        panic!()
    };
    assert_eq!((e.destination(), e.source()), (POD_A, MAC0));
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!()
    };
    assert_eq!(
        (ip.header().source_addr(), ip.header().destination_addr()),
        (GW, A)
    );
    let Some(TransportSlice::Icmpv4(i)) = &s.transport else {
        panic!()
    };
    assert!(matches!(
        i.icmp_type(),
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Network
        )
    ));
    assert_eq!(
        i.payload(),
        &orig[14..],
        "the whole original datagram is quoted"
    );
    assert_eq!(p.counters.drop_count(DropReason::NoRoute), 1);
    assert_eq!(p.counters.event_count(Event::IcmpErrorSent), 1);
}

#[test]
fn ttl_one_sends_time_exceeded() {
    let mut p = pipeline();
    learn(&mut p);
    let o = run(&mut p, 0, &udp(POD_A, MAC0, A, B, 1, b"ttl"));
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].0, 0);
    let s = valid(&o[0].1);
    let Some(TransportSlice::Icmpv4(i)) = &s.transport else {
        panic!()
    };
    assert!(matches!(
        i.icmp_type(),
        etherparse::Icmpv4Type::TimeExceeded(
            etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit
        )
    ));
    assert_eq!(p.counters.drop_count(DropReason::TtlExpired), 1);
}

#[test]
fn no_icmp_error_about_an_icmp_error() {
    let mut p = pipeline();
    let b = PacketBuilder::ethernet2(POD_A, MAC0)
        .ipv4(A.octets(), [192, 0, 2, 1], 64)
        .icmpv4(etherparse::Icmpv4Type::TimeExceeded(
            etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
        ));
    let mut f = Vec::new();
    b.write(&mut f, &[0u8; 28]).unwrap();
    assert!(run(&mut p, 0, &f).is_empty());
    assert_eq!(p.counters.drop_count(DropReason::NoRoute), 1);
    assert_eq!(p.counters.event_count(Event::IcmpErrorSent), 0);
}

#[test]
fn malformed_frames_are_dropped_under_their_reason() {
    let good = udp(POD_A, MAC0, A, B, 64, b"good");
    let set = |f: &mut Vec<u8>, i: usize, v: u8| f[i] = v;
    let mut cases: Vec<(&str, Vec<u8>, DropReason)> = Vec::new();
    cases.push((
        "truncated ethernet",
        good[..10].to_vec(),
        DropReason::EthTruncated,
    ));
    cases.push((
        "truncated ipv4",
        good[..14 + 12].to_vec(),
        DropReason::Ipv4Truncated,
    ));
    let mut f = good.clone();
    set(&mut f, 14, 0x65);
    cases.push((
        "version 6 in an IPv4 ethertype",
        f,
        DropReason::Ipv4BadVersion,
    ));
    let mut f = good.clone();
    set(&mut f, 14, 0x44);
    cases.push(("IHL 4", f, DropReason::Ipv4BadIhl));
    let mut f = good.clone();
    set(&mut f, 14, 0x4f);
    cases.push((
        "IHL 15 beyond the frame",
        f,
        DropReason::Ipv4HeaderTruncated,
    ));
    let mut f = good.clone();
    f[16..18].copy_from_slice(&500u16.to_be_bytes());
    cases.push((
        "total length beyond the frame",
        f,
        DropReason::Ipv4BadTotalLength,
    ));
    let mut f = good.clone();
    f[24] ^= 0x55;
    cases.push(("bad header checksum", f, DropReason::Ipv4BadChecksum));
    let mut f = good.clone();
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    cases.push(("unknown ethertype", f, DropReason::UnknownEthertype));
    let mut f = good.clone();
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    cases.push(("IPv6", f, DropReason::Ipv6));
    let mut f = good.clone();
    f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    cases.push(("VLAN tag", f, DropReason::VlanTagged));
    let mut f = good.clone();
    f[0..6].copy_from_slice(&[2, 9, 9, 9, 9, 9]);
    cases.push(("unicast to another MAC", f, DropReason::NotForUs));
    let mut f = arp(
        ArpOperation::REQUEST,
        POD_A,
        [0xff; 6],
        (POD_A, A),
        ([0; 6], GW),
    );
    f.truncate(14 + 20);
    cases.push(("truncated ARP", f, DropReason::ArpMalformed));
    cases.push((
        "multicast source",
        udp(POD_A, MAC0, Ipv4Addr::new(224, 0, 0, 1), B, 64, b"m"),
        DropReason::Ipv4Martian,
    ));
    cases.push((
        "multicast destination",
        udp(POD_A, MAC0, A, Ipv4Addr::new(239, 1, 1, 1), 64, b"m"),
        DropReason::Ipv4Multicast,
    ));
    cases.push((
        "gateway, not ICMP",
        udp(POD_A, MAC0, A, GW, 64, b"m"),
        DropReason::LocalUnsupported,
    ));

    for (what, frame, reason) in cases {
        let mut p = pipeline();
        learn(&mut p);
        let o = run(&mut p, 0, &frame);
        assert!(o.is_empty(), "{what}: nothing leaves, got {o:?}");
        assert_eq!(
            p.counters.drop_count(reason),
            1,
            "{what}: counted under {}",
            reason.name()
        );
        assert_eq!(p.counters.ports[0].rx_dropped, 1, "{what}");
        // Good traffic still flows after it.
        assert_eq!(run(&mut p, 0, &good).len(), 1, "{what}: good frame after");
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut p = pipeline();
    learn(&mut p);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let good = udp(POD_A, MAC0, A, B, 64, &[7u8; 100]);
    for i in 0..20_000 {
        let mut f = good.clone();
        let n = (i % 40) + 1;
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let pos = (x as usize) % f.len();
            f[pos] = (x >> 32) as u8;
        }
        f.truncate((x >> 40) as usize % (f.len() + 1));
        let _ = run(&mut p, (i % 2) as u16, &f);
    }
}
