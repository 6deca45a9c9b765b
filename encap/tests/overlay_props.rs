//! Properties and a drop-reason table for the overlay formats (`vxlan`, `udp_encap`, `flow`).
//!
//! - Round trips: `encapsulate` then `decapsulate` gives back the inner bytes, VNI, addresses
//!   and ports, for random inner frames, VNIs, parameters and UDP checksum on/off; etherparse
//!   agrees on the outer headers and their checksums.
//! - Robustness: random bytes and mutated valid frames never panic; every truncation of a valid
//!   frame is an error; with the UDP checksum on, every single-byte corruption after the MAC
//!   addresses is refused.
//! - A table, one row per `DecapError` variant: input frame, expected verdict.
//! - Flow hash: stable per flow, within 49152..=65535, spread over the range.

use std::net::Ipv4Addr;

use encap::checksum;
use encap::ethernet::{self, ethertype};
use encap::flow;
use encap::ipv4::{self, protocol};
use encap::udp;
use encap::udp_encap::{self, UdpEncap};
use encap::vxlan::{self, DecapError, Encap};
use encap::Error;
use proptest::prelude::*;

fn encap_params(udp_checksum: bool) -> Encap {
    Encap {
        src_mac: [2, 0, 0, 0, 1, 1],
        dst_mac: [2, 0, 0, 0, 1, 2],
        src_ip: Ipv4Addr::new(192, 168, 77, 1),
        dst_ip: Ipv4Addr::new(192, 168, 77, 2),
        dst_port: vxlan::DEFAULT_PORT,
        vni: 1,
        ttl: 64,
        udp_checksum,
    }
}

/// An inner IPv4 packet (protocol `proto`, `payload` after a 20-byte header).
fn ipv4_packet(src: u32, dst: u32, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20 + payload.len()];
    ipv4::Repr {
        src: src.into(),
        dst: dst.into(),
        protocol: proto,
        ttl: 64,
        ident: 0x1234,
        dont_frag: true,
        payload_len: payload.len() as u16,
    }
    .emit(&mut p);
    p[20..].copy_from_slice(payload);
    p
}

fn with_ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + payload.len()];
    ethernet::emit_header(&mut f, [2, 0, 0, 0, 2, 2], [2, 0, 0, 0, 2, 1], ethertype);
    f[14..].copy_from_slice(payload);
    f
}

/// The reference inner frame: an ICMP echo request between two pods.
fn inner_echo() -> Vec<u8> {
    let mut icmp = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(b"sluice!!");
    let c = checksum::data(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let ip = ipv4_packet(0x0af4_0101, 0x0af4_0202, protocol::ICMP, &icmp);
    with_ethernet(ethertype::IPV4, &ip)
}

fn vxlan_frame(inner: &[u8], e: &Encap, src_port: u16) -> Vec<u8> {
    let mut b = vec![0u8; vxlan::OVERHEAD + inner.len()];
    b[vxlan::OVERHEAD..].copy_from_slice(inner);
    let n = vxlan::encapsulate(&mut b, inner.len(), e, src_port).unwrap();
    assert_eq!(n, b.len());
    b
}

fn udp_mode_frame(inner_ip: &[u8], e: &UdpEncap, src_port: u16) -> Vec<u8> {
    let mut b = vec![0u8; udp_encap::OVERHEAD + inner_ip.len()];
    b[udp_encap::OVERHEAD..].copy_from_slice(inner_ip);
    let n = udp_encap::encapsulate_ip(&mut b, inner_ip.len(), e, src_port).unwrap();
    assert_eq!(n, b.len());
    b
}

/// Recomputes the outer IPv4 header checksum and, when present, the UDP checksum (after a
/// test changed a field on purpose). Assumes a 20-byte outer IPv4 header.
fn fix(f: &mut [u8]) {
    let mut ip = ipv4::Packet::new_unchecked(&mut f[14..]);
    ip.fill_checksum();
    let (src, dst) = (ip.src(), ip.dst());
    let total = usize::from(ip.total_len()).min(f.len() - 14);
    if total >= 28 && f[40..42] != [0, 0] {
        let dgram = &mut f[34..14 + total];
        let len = usize::from(u16::from_be_bytes([dgram[4], dgram[5]]));
        if (8..=dgram.len()).contains(&len) {
            udp::Packet::new_unchecked(&mut dgram[..len]).fill_checksum(src, dst);
        }
    }
}

fn set16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

// ---------------------------------------------------------------------------------------------
// The drop-reason table.

type Mutation = fn(&mut Vec<u8>);

#[test]
fn vxlan_drop_reason_table() {
    let table: &[(&str, bool, Mutation, Result<(), DecapError>)] = &[
        ("valid, UDP checksum", true, |_| {}, Ok(())),
        ("valid, no UDP checksum", false, |_| {}, Ok(())),
        (
            "Ethernet padding after the IPv4 packet",
            true,
            |f| f.extend_from_slice(&[0; 10]),
            Ok(()),
        ),
        (
            "runt",
            true,
            |f| f.truncate(13),
            Err(DecapError::EthernetTruncated),
        ),
        (
            "ARP",
            true,
            |f| set16(f, 12, 0x0806),
            Err(DecapError::NotIpv4(0x0806)),
        ),
        (
            "802.1Q tag",
            true,
            |f| set16(f, 12, 0x8100),
            Err(DecapError::NotIpv4(0x8100)),
        ),
        (
            "outer IPv6 version",
            true,
            |f| f[14] = 0x65,
            Err(DecapError::OuterIpv4(Error::BadVersion)),
        ),
        (
            "outer IHL 4",
            true,
            |f| f[14] = 0x44,
            Err(DecapError::OuterIpv4(Error::BadIhl)),
        ),
        (
            "outer cut at 30 bytes",
            true,
            |f| f.truncate(30),
            Err(DecapError::OuterIpv4(Error::Truncated)),
        ),
        (
            "outer total length beyond the frame",
            true,
            |f| {
                let t = f.len() as u16 - 13;
                set16(f, 16, t);
                fix(f)
            },
            Err(DecapError::OuterIpv4(Error::BadTotalLength)),
        ),
        (
            "outer header checksum",
            true,
            |f| f[25] ^= 0x40,
            Err(DecapError::OuterChecksum),
        ),
        (
            "outer TTL changed, checksum not",
            false,
            |f| f[22] -= 1,
            Err(DecapError::OuterChecksum),
        ),
        (
            "first fragment (MF)",
            true,
            |f| {
                f[20] |= 0x20;
                fix(f)
            },
            Err(DecapError::Fragment),
        ),
        (
            "later fragment (offset)",
            true,
            |f| {
                f[21] = 0xb9;
                fix(f)
            },
            Err(DecapError::Fragment),
        ),
        (
            "TCP",
            false,
            |f| {
                f[23] = 6;
                fix(f)
            },
            Err(DecapError::NotUdp(6)),
        ),
        (
            "IANA port",
            false,
            |f| {
                set16(f, 36, 4789);
                fix(f)
            },
            Err(DecapError::WrongPort(4789)),
        ),
        (
            "IPv4 payload shorter than a UDP header",
            false,
            |f| {
                f.truncate(40);
                set16(f, 16, 26);
                fix(f)
            },
            Err(DecapError::UdpLength),
        ),
        (
            "UDP length one short",
            false,
            |f| {
                let l = u16::from_be_bytes([f[38], f[39]]);
                set16(f, 38, l - 1);
            },
            Err(DecapError::UdpLength),
        ),
        (
            "UDP length one long",
            false,
            |f| {
                let l = u16::from_be_bytes([f[38], f[39]]);
                set16(f, 38, l + 1);
            },
            Err(DecapError::UdpLength),
        ),
        (
            "UDP length 7",
            false,
            |f| set16(f, 38, 7),
            Err(DecapError::UdpLength),
        ),
        (
            "UDP checksum wrong",
            true,
            |f| f[41] ^= 1,
            Err(DecapError::UdpChecksum),
        ),
        (
            "inner byte corrupted under a UDP checksum",
            true,
            |f| f[70] ^= 0x80,
            Err(DecapError::UdpChecksum),
        ),
        (
            "inner byte corrupted, no UDP checksum",
            false,
            |f| f[90] ^= 0x80,
            Ok(()),
        ),
        ("UDP checksum zeroed", true, |f| set16(f, 40, 0), Ok(())),
        (
            "VXLAN header cut to 7",
            true,
            |f| {
                f.truncate(49);
                set16(f, 16, 35);
                set16(f, 38, 15);
                fix(f)
            },
            Err(DecapError::Truncated),
        ),
        (
            "no UDP payload",
            true,
            |f| {
                f.truncate(42);
                set16(f, 16, 28);
                set16(f, 38, 8);
                fix(f)
            },
            Err(DecapError::Truncated),
        ),
        (
            "I flag clear",
            true,
            |f| {
                f[42] = 0;
                fix(f)
            },
            Err(DecapError::BadFlags { flags: 0 }),
        ),
        (
            "GBP flag",
            true,
            |f| {
                f[42] = 0x88;
                fix(f)
            },
            Err(DecapError::BadFlags { flags: 0x88 }),
        ),
        (
            "GPE P flag",
            true,
            |f| {
                f[42] = 0x0c;
                fix(f)
            },
            Err(DecapError::BadFlags { flags: 0x0c }),
        ),
        (
            "reserved bits after the flags",
            true,
            |f| {
                f[44] = 1;
                fix(f)
            },
            Err(DecapError::BadFlags { flags: 0x08 }),
        ),
        (
            "last reserved byte",
            true,
            |f| {
                f[49] = 0x80;
                fix(f)
            },
            Err(DecapError::BadFlags { flags: 0x08 }),
        ),
        (
            "inner frame of 13 bytes",
            true,
            |f| {
                f.truncate(63);
                set16(f, 16, 49);
                set16(f, 38, 29);
                fix(f)
            },
            Err(DecapError::InnerTruncated),
        ),
        (
            "inner Ethernet header only",
            true,
            |f| {
                f[62] = 0x08;
                f[63] = 0x06;
                f.truncate(64);
                set16(f, 16, 50);
                set16(f, 38, 30);
                fix(f)
            },
            Ok(()),
        ),
        (
            "inner IPv4 cut to 10 bytes",
            true,
            |f| {
                f.truncate(74);
                set16(f, 16, 60);
                set16(f, 38, 40);
                fix(f)
            },
            Err(DecapError::InnerIpv4(Error::Truncated)),
        ),
        (
            "inner IPv4 cut after its header",
            true,
            |f| {
                f.truncate(84);
                set16(f, 16, 70);
                set16(f, 38, 50);
                fix(f)
            },
            Err(DecapError::InnerIpv4(Error::BadTotalLength)),
        ),
        (
            "inner IPv4 version 5",
            true,
            |f| {
                f[64] = 0x55;
                fix(f)
            },
            Err(DecapError::InnerIpv4(Error::BadVersion)),
        ),
        (
            "inner IHL 15 beyond the packet",
            true,
            |f| {
                f.truncate(94);
                set16(f, 16, 80);
                set16(f, 38, 60);
                f[64] = 0x4f;
                fix(f)
            },
            Err(DecapError::InnerIpv4(Error::HeaderTruncated)),
        ),
        (
            "inner IPv4 with a wrong header checksum is passed on",
            true,
            |f| {
                f[75] ^= 1;
                fix(f)
            },
            Ok(()),
        ),
    ];
    let inner = inner_echo();
    for (what, udp_checksum, mutate, want) in table {
        let mut f = vxlan_frame(&inner, &encap_params(*udp_checksum), 50000);
        mutate(&mut f);
        let got = vxlan::decapsulate(&f, vxlan::DEFAULT_PORT);
        match (got, want) {
            (Ok(d), Ok(())) => {
                assert_eq!(d.vni, 1, "{what}");
                assert!(d.inner_offset + d.inner_len <= f.len(), "{what}");
            }
            (got, want) => assert_eq!(got.map(|_| ()), *want, "{what}"),
        }
    }
}

#[test]
fn outer_ipv4_options_are_skipped() {
    let inner = inner_echo();
    let f = vxlan_frame(&inner, &encap_params(true), 50000);
    // Insert 4 bytes of options (NOP x 4) into the outer header.
    let mut g = f[..34].to_vec();
    g.extend_from_slice(&[1, 1, 1, 1]);
    g.extend_from_slice(&f[34..]);
    g[14] = 0x46;
    let total = u16::from_be_bytes([g[16], g[17]]) + 4;
    set16(&mut g, 16, total);
    let mut ip = ipv4::Packet::new_unchecked(&mut g[14..]);
    ip.fill_checksum();
    let d = vxlan::decapsulate(&g, vxlan::DEFAULT_PORT).unwrap();
    assert_eq!(d.inner_offset, 54);
    assert_eq!(&g[d.inner_range()], &inner[..]);
}

#[test]
fn udp_mode_drop_reasons() {
    let inner = inner_echo()[14..].to_vec();
    let e = UdpEncap {
        src_mac: [2, 0, 0, 0, 1, 1],
        dst_mac: [2, 0, 0, 0, 1, 2],
        src_ip: Ipv4Addr::new(192, 168, 77, 1),
        dst_ip: Ipv4Addr::new(192, 168, 77, 2),
        dst_port: udp_encap::DEFAULT_PORT,
        ttl: 64,
        udp_checksum: false,
    };
    let f = udp_mode_frame(&inner, &e, 8285);
    let d = udp_encap::decapsulate_ip(&f, 8285).unwrap();
    assert_eq!((d.inner_offset, d.inner_len), (42, inner.len()));
    assert_eq!(
        udp_encap::decapsulate_ip(&f, vxlan::DEFAULT_PORT),
        Err(DecapError::WrongPort(8285))
    );
    // A VXLAN frame is not a flannel-UDP frame (its payload is not IPv4), and vice versa.
    let vx = vxlan_frame(&inner_echo(), &encap_params(false), 1);
    assert_eq!(
        udp_encap::decapsulate_ip(&vx, 8472),
        Err(DecapError::InnerIpv4(Error::BadVersion))
    );
    assert_eq!(
        vxlan::decapsulate(&f, 8285),
        Err(DecapError::BadFlags { flags: 0x45 })
    );
    // Empty payload, inner IPv4 shorter than the UDP payload (trailing bytes).
    let mut g = f[..42].to_vec();
    set16(&mut g, 16, 28);
    set16(&mut g, 38, 8);
    fix(&mut g);
    assert_eq!(
        udp_encap::decapsulate_ip(&g, 8285),
        Err(DecapError::InnerIpv4(Error::Truncated))
    );
    let mut g = f.clone();
    g.extend_from_slice(&[0, 0]);
    let (t, l) = (
        u16::from_be_bytes([g[16], g[17]]),
        u16::from_be_bytes([g[38], g[39]]),
    );
    set16(&mut g, 16, t + 2);
    set16(&mut g, 38, l + 2);
    fix(&mut g);
    assert_eq!(
        udp_encap::decapsulate_ip(&g, 8285),
        Err(DecapError::InnerIpv4(Error::BadTotalLength))
    );
}

// ---------------------------------------------------------------------------------------------
// Properties.

fn mac() -> impl Strategy<Value = [u8; 6]> {
    any::<[u8; 6]>()
}

/// An inner Ethernet frame: a valid IPv4 packet (TCP/UDP/ICMP/other, random payload), or a
/// non-IPv4 frame with random payload.
fn inner_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            prop::sample::select(vec![1u8, 6, 17, 47, 132]),
            prop::collection::vec(any::<u8>(), 0..1480)
        )
            .prop_map(|(s, d, p, payload)| with_ethernet(
                ethertype::IPV4,
                &ipv4_packet(s, d, p, &payload)
            )),
        (
            any::<u16>().prop_filter("not IPv4", |t| *t != ethertype::IPV4),
            prop::collection::vec(any::<u8>(), 0..1500)
        )
            .prop_map(|(t, payload)| with_ethernet(t, &payload)),
    ]
}

fn encap_strategy() -> impl Strategy<Value = Encap> {
    (
        mac(),
        mac(),
        any::<u32>(),
        any::<u32>(),
        prop::sample::select(vec![vxlan::DEFAULT_PORT, vxlan::IANA_PORT, 1, 65535]),
        0..=vxlan::VNI_MAX,
        1..=255u8,
        any::<bool>(),
    )
        .prop_map(
            |(src_mac, dst_mac, s, d, dst_port, vni, ttl, udp_checksum)| Encap {
                src_mac,
                dst_mac,
                src_ip: s.into(),
                dst_ip: d.into(),
                dst_port,
                vni,
                ttl,
                udp_checksum,
            },
        )
}

/// A valid VXLAN frame with random contents, and its parameters.
fn valid_frame() -> impl Strategy<Value = (Vec<u8>, Encap, Vec<u8>)> {
    (inner_frame(), encap_strategy()).prop_map(|(inner, e)| {
        let f = vxlan_frame(&inner, &e, vxlan::source_port(&inner));
        (f, e, inner)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn vxlan_round_trip((f, e, inner) in valid_frame(), headroom in 0usize..80) {
        let d = vxlan::decapsulate(&f, e.dst_port).unwrap();
        prop_assert_eq!(&f[d.inner_range()], &inner[..]);
        prop_assert_eq!(d.vni, e.vni);
        prop_assert_eq!(d.outer_src, e.src_ip);
        prop_assert_eq!(d.outer_dst, e.dst_ip);
        prop_assert_eq!(d.outer_src_mac, e.src_mac);
        prop_assert_eq!(d.src_port, vxlan::source_port(&inner));
        prop_assert!((49152..=65535).contains(&d.src_port));
        prop_assert_eq!(f.len(), vxlan::OVERHEAD + inner.len());
        prop_assert_eq!(&f[..6], &e.dst_mac[..]);
        // etherparse agrees on the outer headers and both checksums.
        let (eth, rest) = etherparse::Ethernet2Header::from_slice(&f).unwrap();
        prop_assert_eq!(eth.ether_type.0, ethertype::IPV4);
        let (ip, rest) = etherparse::Ipv4Header::from_slice(rest).unwrap();
        prop_assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        prop_assert!(ip.dont_fragment);
        prop_assert_eq!(ip.time_to_live, e.ttl);
        prop_assert_eq!(ip.identification, 0);
        let (udp_h, payload) = etherparse::UdpHeader::from_slice(rest).unwrap();
        prop_assert_eq!(udp_h.destination_port, e.dst_port);
        prop_assert_eq!(usize::from(udp_h.length), 16 + inner.len());
        if e.udp_checksum {
            let c = udp_h.calc_checksum_ipv4_raw(ip.source, ip.destination, payload).unwrap();
            prop_assert_eq!(udp_h.checksum, c);
        } else {
            prop_assert_eq!(udp_h.checksum, 0);
        }
        prop_assert_eq!(&payload[..8], &[8, 0, 0, 0, (e.vni >> 16) as u8, (e.vni >> 8) as u8, e.vni as u8, 0][..]);
        // The same frame built with more headroom in front: identical bytes.
        let mut b = vec![0xeeu8; headroom + vxlan::OVERHEAD + inner.len()];
        b[headroom + vxlan::OVERHEAD..].copy_from_slice(&inner);
        let n = vxlan::encapsulate(&mut b[headroom..], inner.len(), &e, d.src_port).unwrap();
        prop_assert_eq!(&b[headroom..headroom + n], &f[..]);
    }

    #[test]
    fn udp_mode_round_trip(s in any::<u32>(), d in any::<u32>(), payload in prop::collection::vec(any::<u8>(), 0..1472),
                           e in encap_strategy(), src_port in any::<u16>()) {
        let inner = ipv4_packet(s, d, protocol::UDP, &payload);
        let ue = UdpEncap { src_mac: e.src_mac, dst_mac: e.dst_mac, src_ip: e.src_ip, dst_ip: e.dst_ip,
                            dst_port: e.dst_port, ttl: e.ttl, udp_checksum: e.udp_checksum };
        let f = udp_mode_frame(&inner, &ue, src_port);
        let dec = udp_encap::decapsulate_ip(&f, e.dst_port).unwrap();
        prop_assert_eq!(&f[dec.inner_offset..dec.inner_offset + dec.inner_len], &inner[..]);
        prop_assert_eq!((dec.outer_src, dec.outer_dst, dec.outer_src_mac, dec.src_port),
                        (e.src_ip, e.dst_ip, e.src_mac, src_port));
        prop_assert_eq!(f[40..42] == [0, 0], !e.udp_checksum);
        let p = udp_encap::source_port(&inner);
        prop_assert!(p >= 49152);
        // Every truncation is an error.
        for n in 0..f.len() {
            prop_assert!(udp_encap::decapsulate_ip(&f[..n], e.dst_port).is_err(), "cut at {}", n);
        }
    }

    #[test]
    fn every_truncation_is_an_error((f, e, _) in valid_frame()) {
        for n in 0..f.len() {
            prop_assert!(vxlan::decapsulate(&f[..n], e.dst_port).is_err(), "cut at {}", n);
        }
        prop_assert!(vxlan::decapsulate(&f, e.dst_port).is_ok());
    }

    #[test]
    fn single_byte_corruption_is_caught_under_udp_checksum((f, e, _) in valid_frame(),
                                                          at in any::<prop::sample::Index>(),
                                                          x in 1..=255u8) {
        prop_assume!(e.udp_checksum);
        let at = 12 + at.index(f.len() - 12);
        let mut g = f.clone();
        g[at] ^= x;
        let zeroed_checksum = g[40..42] == [0, 0];
        let r = vxlan::decapsulate(&g, e.dst_port);
        if !zeroed_checksum {
            prop_assert!(r.is_err(), "byte {} ^ {:#x} accepted", at, x);
        }
    }

    #[test]
    fn random_bytes_never_panic(d in prop::collection::vec(any::<u8>(), 0..200), port in any::<u16>()) {
        if let Ok(x) = vxlan::decapsulate(&d, port) {
            prop_assert!(x.inner_offset + x.inner_len <= d.len());
        }
        if let Ok(x) = udp_encap::decapsulate_ip(&d, port) {
            prop_assert!(x.inner_offset + x.inner_len <= d.len());
        }
        let _ = (vxlan::source_port(&d), udp_encap::source_port(&d));
        if let Ok(p) = vxlan::Packet::new_checked(&d[..]) {
            let _ = (p.flags(), p.vni(), p.inner(), vxlan::check(&p));
        }
    }

    #[test]
    fn mutated_frames_never_panic((f, e, _) in valid_frame(),
                                  muts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                                  cut in any::<prop::sample::Index>(), do_cut in any::<bool>(), refix in any::<bool>()) {
        let mut g = f.clone();
        for (i, v) in &muts {
            let i = i.index(g.len());
            g[i] = *v;
        }
        if refix {
            fix(&mut g);
        }
        if do_cut {
            g.truncate(cut.index(g.len() + 1));
        }
        if let Ok(x) = vxlan::decapsulate(&g, e.dst_port) {
            prop_assert!(x.inner_offset + x.inner_len <= g.len());
            prop_assert!(x.vni <= vxlan::VNI_MAX);
            prop_assert!(x.inner_len >= ethernet::HEADER_LEN);
        }
        let _ = udp_encap::decapsulate_ip(&g, e.dst_port);
    }

    #[test]
    fn same_flow_same_port(s in any::<u32>(), d in any::<u32>(), sp in any::<u16>(), dp in any::<u16>(),
                           a in prop::collection::vec(any::<u8>(), 0..100),
                           b in prop::collection::vec(any::<u8>(), 0..100)) {
        // Two packets of one TCP flow with different payloads, idents and TTLs.
        let mut t1 = vec![0u8; 20];
        t1[..4].copy_from_slice(&[(sp >> 8) as u8, sp as u8, (dp >> 8) as u8, dp as u8]);
        let mut t2 = t1.clone();
        t1.extend_from_slice(&a);
        t2[4] = 0x55;
        t2.extend_from_slice(&b);
        let p1 = with_ethernet(ethertype::IPV4, &ipv4_packet(s, d, protocol::TCP, &t1));
        let mut p2 = with_ethernet(ethertype::IPV4, &ipv4_packet(s, d, protocol::TCP, &t2));
        p2[14 + 8] = 3;
        p2[0] ^= 0xff;
        let port = vxlan::source_port(&p1);
        prop_assert_eq!(port, vxlan::source_port(&p2));
        prop_assert!(port >= flow::EPHEMERAL_MIN);
        prop_assert_eq!(udp_encap::source_port(&p1[14..]), udp_encap::source_port(&p2[14..]));
        prop_assert_eq!(udp_encap::source_port(&p1[14..]), port);
    }
}

/// A small deterministic generator (xorshift64*), so the spread test is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn flow_ports_spread_over_the_range() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut buckets = [0u32; 16];
    let mut ports = std::collections::HashSet::new();
    const FLOWS: u32 = 10_000;
    for _ in 0..FLOWS {
        let r = rng.next();
        let proto = if r & 1 == 0 {
            protocol::TCP
        } else {
            protocol::UDP
        };
        let l4 = [
            (r >> 8) as u8,
            (r >> 16) as u8,
            (r >> 24) as u8,
            (r >> 32) as u8,
            0,
            0,
            0,
            0,
        ];
        let r2 = rng.next();
        let f = with_ethernet(
            ethertype::IPV4,
            &ipv4_packet(r2 as u32, (r2 >> 32) as u32, proto, &l4),
        );
        let p = vxlan::source_port(&f);
        assert!(p >= 49152, "{p}");
        buckets[usize::from((p - 49152) / 1024)] += 1;
        ports.insert(p);
    }
    // Expected 625 per bucket; a uniform hash stays far inside [400, 850] (> 9 sigma).
    for (i, n) in buckets.iter().enumerate() {
        assert!(
            (400..=850).contains(n),
            "bucket {i}: {n} of {FLOWS}: {buckets:?}"
        );
    }
    // 10k flows over 16384 ports: a uniform hash hits about 7,300 distinct ports.
    assert!(ports.len() > 6800, "{} distinct ports", ports.len());

    // Flows that differ only in the source port, as a client's connections do, spread too.
    let mut buckets = [0u32; 16];
    for sp in 0..FLOWS as u16 {
        let l4 = [(sp >> 8) as u8, sp as u8, 0, 80, 0, 0, 0, 0];
        let f = with_ethernet(
            ethertype::IPV4,
            &ipv4_packet(0x0af4_0101, 0x0af4_0202, protocol::TCP, &l4),
        );
        buckets[usize::from((vxlan::source_port(&f) - 49152) / 1024)] += 1;
    }
    for (i, n) in buckets.iter().enumerate() {
        assert!(
            (400..=850).contains(n),
            "sequential ports, bucket {i}: {n}: {buckets:?}"
        );
    }
}
