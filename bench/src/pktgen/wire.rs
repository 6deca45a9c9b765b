//! The generator's frames: templates built once per run, the per-packet stamp (flow fields,
//! trailer, checksums from precomputed partial sums), the flow mapping, and the receiver's
//! parser that finds the trailer in a (possibly truncated) frame.
//!
//! Promises: [`Template::stamp`] leaves every checksum of the frame correct (tests compare
//! each against a full recomputation and against etherparse); [`parse`] never panics, whatever
//! the bytes, and reads only inside the slice it is given.

use std::net::Ipv4Addr;

use encap::checksum::{fold, pseudo_v4, sum};
use encap::ethernet::{self, ethertype};
use encap::{ipv4, tcp, udp, vxlan};

use super::{ConfigError, FlowPattern, GenConfig, Proto, MAX_FRAME, MIN_FRAME};

/// The trailer's magic number, "SLPG".
pub const MAGIC: u32 = 0x534c_5047;
/// Bytes of the trailer: magic (4), sequence number (4), TX timestamp (8).
pub const TRAILER_LEN: usize = 16;
/// The first source port of the flows.
pub const SRC_PORT_BASE: u16 = 1024;
/// Source ports per source address (1024..=65535).
pub const SRC_PORTS: u64 = 65536 - SRC_PORT_BASE as u64;
/// Host numbers of a /16 walked by the flows' source addresses (.0.1 to .255.254).
const HOSTS: u64 = 65534;
/// TTL of every generated IPv4 header.
const TTL: u8 = 64;
/// Initial sequence number of the generated SYNs.
const TCP_ISN: u32 = 0x5eed_0000;
/// Window of the generated SYNs.
const TCP_WINDOW: u16 = 65535;

const ETH: usize = ethernet::HEADER_LEN;
const IP: usize = ipv4::HEADER_LEN;
const UDP: usize = udp::HEADER_LEN;
const TCP: usize = tcp::HEADER_LEN;

/// The smallest frame of `proto` that holds the trailer.
pub fn min_frame_size(proto: &Proto) -> usize {
    let inner_udp = ETH + IP + UDP + TRAILER_LEN;
    let n = match proto {
        Proto::Udp => inner_udp,
        Proto::TcpSyn => ETH + IP + TCP + TRAILER_LEN,
        Proto::Vxlan { .. } => vxlan::OVERHEAD + inner_udp,
    };
    n.max(MIN_FRAME)
}

fn proto_name(proto: &Proto) -> &'static str {
    match proto {
        Proto::Udp => "UDP",
        Proto::TcpSyn => "TCP SYN",
        Proto::Vxlan { .. } => "VXLAN",
    }
}

/// The flow of the frame with sequence number `seq`.
pub fn flow_index(pattern: FlowPattern, seq: u64) -> u64 {
    match pattern {
        FlowPattern::One => 0,
        FlowPattern::NewPerPacket => seq,
        FlowPattern::RoundRobin(n) => seq % u64::from(n.max(1)),
    }
}

/// The source port of flow `f`.
pub fn flow_port(f: u64) -> u16 {
    // f % SRC_PORTS < 64512, so the sum stays below 65536.
    SRC_PORT_BASE + (f % SRC_PORTS) as u16
}

/// The source address of flow `f`: `base` for the first [`SRC_PORTS`] flows, then the next
/// hosts of `base`'s /16 in turn (skipping .0.0 and .255.255).
pub fn flow_addr(base: Ipv4Addr, f: u64) -> Ipv4Addr {
    let i = f / SRC_PORTS;
    if i == 0 {
        return base;
    }
    let b = u32::from(base);
    let h0 = u64::from(b & 0xffff);
    // Hosts 1..=65534: h0 -> h0 + 1 -> ... -> 65534 -> 1 -> ...
    let h = (h0 + HOSTS - 1 + i) % HOSTS + 1;
    // h <= 65534.
    Ipv4Addr::from((b & 0xffff_0000) | h as u32)
}

/// What varies from one frame to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Source address of the (inner) IPv4 header.
    pub src_ip: Ipv4Addr,
    /// Source port of the (inner) UDP or TCP header.
    pub src_port: u16,
    /// The trailer's sequence number (the low 32 bits of the generator's count).
    pub seq: u32,
    /// The trailer's timestamp (`CLOCK_MONOTONIC` ns).
    pub tx_ns: u64,
}

/// Sum of the 16-bit words of a 32-bit value.
fn words32(v: u32) -> u32 {
    (v >> 16) + (v & 0xffff)
}

/// Sum of the 16-bit words of a 64-bit value.
fn words64(v: u64) -> u32 {
    words32((v >> 32) as u32) + words32(v as u32)
}

/// A UDP checksum of 0 means "none": a computed 0 is sent as 0xffff (RFC 768).
fn udp_csum(c: u16) -> u16 {
    if c == 0 {
        0xffff
    } else {
        c
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Where the varying fields of a template are, and the partial sums of everything else.
#[derive(Debug, Clone)]
struct Layout {
    /// Offset of the (inner) IPv4 header.
    ip: usize,
    /// Offset of the (inner) UDP/TCP header.
    l4: usize,
    /// Offset of the (inner) UDP/TCP checksum field.
    l4_csum: usize,
    /// Offset of the trailer.
    trailer: usize,
    /// The inner transport is UDP (a computed 0 is sent as 0xffff).
    l4_udp: bool,
    /// VXLAN: offset of the outer UDP header.
    outer_udp: Option<usize>,
    /// Sum of the IPv4 header with source address and checksum zero.
    ip_base: u32,
    /// Sum of the pseudo-header (source zero) and the segment with source port, checksum,
    /// sequence number and timestamp zero.
    l4_base: u32,
    /// VXLAN: the same for the outer UDP checksum (outer pseudo-header and datagram with the
    /// outer source port, the outer checksum and every inner varying field zero).
    outer_base: u32,
}

/// A frame with its varying fields zeroed, and how to stamp them.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Box<[u8]>,
    layout: Layout,
}

impl Template {
    /// Builds the template of `cfg` (its frame size, protocol and addresses; the flows'
    /// fields and the trailer's sequence and timestamp are zero, the magic is in place).
    pub fn build(cfg: &GenConfig) -> Result<Template, ConfigError> {
        let size = cfg.frame_size;
        if !(MIN_FRAME..=MAX_FRAME).contains(&size) {
            return Err(ConfigError::FrameSize { size });
        }
        let min = min_frame_size(&cfg.proto);
        if size < min {
            return Err(ConfigError::TooSmallForProto {
                size,
                proto: proto_name(&cfg.proto),
                min,
            });
        }
        if let FlowPattern::RoundRobin(0) = cfg.flows {
            return Err(ConfigError::NoFlows);
        }
        let mut b = vec![0u8; size].into_boxed_slice();
        let layout = match cfg.proto {
            Proto::Udp => emit_inner(&mut b, 0, cfg, false),
            Proto::TcpSyn => emit_inner(&mut b, 0, cfg, true),
            Proto::Vxlan {
                vni,
                outer_src,
                outer_dst,
                outer_dst_mac,
                port,
            } => {
                if vni > vxlan::VNI_MAX {
                    return Err(ConfigError::Vni { vni });
                }
                let mut l = emit_inner(&mut b, vxlan::OVERHEAD, cfg, false);
                let e = vxlan::Encap {
                    src_mac: cfg.src_mac,
                    dst_mac: outer_dst_mac,
                    src_ip: outer_src,
                    dst_ip: outer_dst,
                    dst_port: port,
                    vni,
                    ttl: TTL,
                    udp_checksum: false,
                };
                // Sizes were checked above: the buffer holds OVERHEAD + an inner frame of at
                // least 58 bytes and at most 9000 in all.
                vxlan::encapsulate(&mut b, size - vxlan::OVERHEAD, &e, 0)
                    .map_err(|_| ConfigError::FrameSize { size })?;
                let o = ETH + IP;
                // The outer datagram with every varying field still zero.
                let pseudo =
                    pseudo_v4(outer_src, outer_dst, ipv4::protocol::UDP, (size - o) as u16);
                l.outer_base = pseudo + sum(&b[o..]);
                l.outer_udp = Some(o);
                l
            }
        };
        Ok(Template { bytes: b, layout })
    }

    /// The frame with its varying fields zero: copy it into each TX buffer once.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Frame length.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false (frames are at least 60 bytes); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Writes the varying fields of `s` and every checksum into `frame`, a copy of
    /// [`Template::bytes`] (possibly stamped before). Does nothing if `frame` is shorter than
    /// the template.
    #[inline]
    pub fn stamp(&self, frame: &mut [u8], s: &Stamp) {
        if frame.len() < self.bytes.len() {
            return;
        }
        let l = &self.layout;
        let src = u32::from(s.src_ip);
        let ipw = words32(src);
        let seqw = words32(s.seq);
        let tsw = words64(s.tx_ns);

        frame[l.ip + 12..l.ip + 16].copy_from_slice(&src.to_be_bytes());
        let ip_c = fold(l.ip_base + ipw);
        put16(frame, l.ip + 10, ip_c);

        put16(frame, l.l4, s.src_port);
        frame[l.trailer + 4..l.trailer + 8].copy_from_slice(&s.seq.to_be_bytes());
        frame[l.trailer + 8..l.trailer + 16].copy_from_slice(&s.tx_ns.to_be_bytes());
        let mut l4_c = fold(l.l4_base + ipw + u32::from(s.src_port) + seqw + tsw);
        if l.l4_udp {
            l4_c = udp_csum(l4_c);
        }
        put16(frame, l.l4_csum, l4_c);

        if let Some(o) = l.outer_udp {
            let inner = &frame[o + UDP + vxlan::HEADER_LEN..self.bytes.len()];
            let sport = vxlan::source_port(inner);
            put16(frame, o, sport);
            // The outer datagram covers the inner frame: its varying words, both inner
            // checksums, and the outer source port.
            let c = fold(
                l.outer_base
                    + u32::from(sport)
                    + ipw
                    + u32::from(ip_c)
                    + u32::from(s.src_port)
                    + u32::from(l4_c)
                    + seqw
                    + tsw,
            );
            put16(frame, o + 6, udp_csum(c));
        }
    }
}

/// Writes the Ethernet/IPv4/UDP-or-TCP frame with the trailer's magic at `b[at..]` (to the
/// end of `b`) with every varying field zero, and returns its layout and partial sums.
/// `b.len() - at` is at least the protocol's minimum (checked by the caller).
fn emit_inner(b: &mut [u8], at: usize, cfg: &GenConfig, tcp_syn: bool) -> Layout {
    let f = &mut b[at..];
    let n = f.len();
    ethernet::emit_header(f, cfg.dst_mac, cfg.src_mac, ethertype::IPV4);
    let ip = ETH;
    let l4 = ip + IP;
    let l4_len = n - l4;
    let proto = if tcp_syn {
        ipv4::protocol::TCP
    } else {
        ipv4::protocol::UDP
    };
    ipv4::Repr {
        src: Ipv4Addr::UNSPECIFIED,
        dst: cfg.dst_ip,
        protocol: proto,
        ttl: TTL,
        ident: 0,
        dont_frag: true,
        // n <= 9000.
        payload_len: l4_len as u16,
    }
    .emit(&mut f[ip..]);
    // The header checksum emit computed covers the zero source; stamp recomputes it.
    put16(f, ip + 10, 0);
    let (l4_csum, trailer) = if tcp_syn {
        let mut t = tcp::Packet::new_unchecked(&mut f[l4..]);
        t.set_src_port(0);
        t.set_dst_port(cfg.dst_port);
        t.set_seq(TCP_ISN);
        t.set_ack(0);
        t.set_header_len(TCP);
        t.set_flags(tcp::SYN);
        t.set_window(TCP_WINDOW);
        t.set_checksum(0);
        t.set_urgent(0);
        (l4 + 16, l4 + TCP)
    } else {
        udp::emit_header(&mut f[l4..], 0, cfg.dst_port, (l4_len - UDP) as u16);
        (l4 + 6, l4 + UDP)
    };
    f[trailer..trailer + 4].copy_from_slice(&MAGIC.to_be_bytes());
    let ip_base = sum(&f[ip..l4]);
    let l4_base =
        pseudo_v4(Ipv4Addr::UNSPECIFIED, cfg.dst_ip, proto, l4_len as u16) + sum(&f[l4..]);
    Layout {
        ip: at + ip,
        l4: at + l4,
        l4_csum: at + l4_csum,
        trailer: at + trailer,
        l4_udp: !tcp_syn,
        outer_udp: None,
        ip_base,
        l4_base,
        outer_base: 0,
    }
}

/// What the receiver learns from one frame carrying the trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The trailer's 32-bit sequence number.
    pub seq: u32,
    /// The trailer's timestamp.
    pub tx_ns: u64,
    /// Source address of the packet carrying the trailer (inner one for VXLAN).
    pub src_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

impl Seen {
    /// The flow key the receiver counts: (source address, source port, destination port).
    pub fn flow_key(&self) -> u64 {
        (u64::from(u32::from(self.src_ip)) << 32)
            | (u64::from(self.src_port) << 16)
            | u64::from(self.dst_port)
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Finds the trailer in an Ethernet frame: IPv4 (not a later fragment), then UDP or TCP
/// whose payload starts with [`MAGIC`], or UDP whose payload is a VXLAN header (I flag set)
/// followed by such a frame (one level of encapsulation). The frame may be truncated (a ring
/// slot holds its first bytes only): only the headers and the trailer must be present. No
/// checksum is verified.
pub fn parse(frame: &[u8]) -> Option<Seen> {
    parse_at(frame, true)
}

fn parse_at(frame: &[u8], outer: bool) -> Option<Seen> {
    if be16(frame, 12)? != ethertype::IPV4 {
        return None;
    }
    let ip = frame.get(ETH..)?;
    let vihl = *ip.first()?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < IP {
        return None;
    }
    if be16(ip, 6)? & 0x1fff != 0 {
        // A later fragment: no transport header.
        return None;
    }
    // Ignore Ethernet padding when the whole packet is present; keep a truncated one as is.
    let total = usize::from(be16(ip, 2)?);
    let ip = ip.get(..total).unwrap_or(ip);
    let proto = *ip.get(9)?;
    let src_ip = Ipv4Addr::from(be32(ip, 12)?);
    let l4 = ip.get(ihl..)?;
    let src_port = be16(l4, 0)?;
    let dst_port = be16(l4, 2)?;
    let payload = match proto {
        ipv4::protocol::UDP => l4.get(UDP..)?,
        ipv4::protocol::TCP => {
            let doff = usize::from(*l4.get(12)? >> 4) * 4;
            if doff < TCP {
                return None;
            }
            l4.get(doff..)?
        }
        _ => return None,
    };
    if be32(payload, 0)? == MAGIC {
        return Some(Seen {
            seq: be32(payload, 4)?,
            tx_ns: be64(payload, 8)?,
            src_ip,
            src_port,
            dst_port,
        });
    }
    if outer && proto == ipv4::protocol::UDP && payload.first()? & vxlan::FLAG_I != 0 {
        return parse_at(payload.get(vxlan::HEADER_LEN..)?, false);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use std::time::Duration;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);

    fn cfg(proto: Proto, size: usize) -> GenConfig {
        GenConfig {
            ifname: "x".into(),
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: SRC,
            dst_ip: DST,
            dst_port: 9,
            frame_size: size,
            rate_pps: None,
            duration: Duration::from_secs(1),
            count: None,
            flows: FlowPattern::One,
            proto,
        }
    }

    fn vx() -> Proto {
        Proto::Vxlan {
            vni: 42,
            outer_src: Ipv4Addr::new(192, 168, 0, 1),
            outer_dst: Ipv4Addr::new(192, 168, 0, 2),
            outer_dst_mac: [2, 0, 0, 0, 0, 3],
            port: vxlan::IANA_PORT,
        }
    }

    /// Checks an IPv4/UDP-or-TCP frame with etherparse, returning (src, sport, payload).
    fn check_inner(frame: &[u8]) -> (Ipv4Addr, u16, Vec<u8>) {
        let p = SlicedPacket::from_ethernet(frame).expect("etherparse parses the frame");
        let Some(NetSlice::Ipv4(ip)) = p.net else {
            panic!("not IPv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
        let payload = ip.payload().payload;
        match p.transport {
            Some(TransportSlice::Udp(u)) => {
                let uh = u.to_header();
                let want = uh.calc_checksum_ipv4(&h, u.payload()).unwrap();
                assert_eq!(uh.checksum, want, "UDP checksum");
                (
                    Ipv4Addr::from(h.source),
                    uh.source_port,
                    u.payload().to_vec(),
                )
            }
            Some(TransportSlice::Tcp(t)) => {
                let th = t.to_header();
                let want = th.calc_checksum_ipv4(&h, t.payload()).unwrap();
                assert_eq!(th.checksum, want, "TCP checksum");
                assert!(th.syn && !th.ack && !th.rst);
                (
                    Ipv4Addr::from(h.source),
                    th.source_port,
                    t.payload().to_vec(),
                )
            }
            _ => panic!("no transport in {payload:?}"),
        }
    }

    fn stamped(t: &Template, s: &Stamp) -> Vec<u8> {
        let mut f = t.bytes().to_vec();
        // Stamp twice: a buffer is reused from one frame to the next.
        t.stamp(
            &mut f,
            &Stamp {
                src_ip: Ipv4Addr::new(10, 1, 7, 7),
                src_port: 5555,
                seq: 0xdead_beef,
                tx_ns: u64::MAX,
            },
        );
        t.stamp(&mut f, s);
        f
    }

    fn stamps() -> Vec<Stamp> {
        let mut v = Vec::new();
        for (i, tx_ns) in [0u64, 1, 0x0123_4567_89ab_cdef, u64::MAX]
            .into_iter()
            .enumerate()
        {
            for f in [0u64, 1, 64511, 64512, 1_000_000, 4_227_000_000] {
                v.push(Stamp {
                    src_ip: flow_addr(SRC, f),
                    src_port: flow_port(f),
                    seq: (f as u32)
                        .wrapping_mul(2_654_435_761)
                        .wrapping_add(i as u32),
                    tx_ns,
                });
            }
        }
        v
    }

    #[test]
    fn udp_frames_have_correct_checksums_and_trailer() {
        for size in [60, 61, 64, 128, 1500, 1514, 9000] {
            let t = Template::build(&cfg(Proto::Udp, size)).unwrap();
            assert_eq!(t.len(), size);
            for s in stamps() {
                let f = stamped(&t, &s);
                let (src, sport, payload) = check_inner(&f);
                assert_eq!((src, sport), (s.src_ip, s.src_port));
                assert_eq!(payload.len(), size - 42);
                assert_eq!(&payload[..4], b"SLPG");
                assert_eq!(payload[4..8], s.seq.to_be_bytes());
                assert_eq!(payload[8..16], s.tx_ns.to_be_bytes());
                assert!(payload[16..].iter().all(|&b| b == 0));
                let seen = parse(&f).unwrap();
                assert_eq!(
                    seen,
                    Seen {
                        seq: s.seq,
                        tx_ns: s.tx_ns,
                        src_ip: s.src_ip,
                        src_port: s.src_port,
                        dst_port: 9
                    }
                );
            }
        }
    }

    #[test]
    fn exact_bytes_of_a_60_byte_udp_frame() {
        let t = Template::build(&cfg(Proto::Udp, 60)).unwrap();
        let f = stamped(
            &t,
            &Stamp {
                src_ip: SRC,
                src_port: 1024,
                seq: 1,
                tx_ns: 2,
            },
        );
        let mut ip = f[14..34].to_vec();
        assert_eq!(
            ip,
            [0x45, 0, 0, 46, 0, 0, 0x40, 0, 64, 17, ip[10], ip[11], 10, 1, 0, 1, 10, 2, 0, 1]
        );
        assert!(encap::checksum::verify(&ip));
        ip[10] = 0;
        ip[11] = 0;
        assert_eq!(
            u16::from_be_bytes([f[24], f[25]]),
            encap::checksum::data(&ip)
        );
        assert_eq!(f[34..40], [0x04, 0x00, 0x00, 0x09, 0x00, 26]);
        assert_eq!(
            f[42..58],
            [b'S', b'L', b'P', b'G', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]
        );
        let mut u = udp::Packet::new_checked(f[34..].to_vec()).unwrap();
        assert!(u.verify_checksum(SRC, DST));
        let c = u.checksum();
        u.fill_checksum(SRC, DST);
        assert_eq!(u.checksum(), c);
    }

    #[test]
    fn tcp_syn_frames_have_correct_checksums() {
        for size in [70, 71, 1500] {
            let t = Template::build(&cfg(Proto::TcpSyn, size)).unwrap();
            for s in stamps() {
                let f = stamped(&t, &s);
                let (src, sport, payload) = check_inner(&f);
                assert_eq!((src, sport), (s.src_ip, s.src_port));
                assert_eq!(payload.len(), size - 54);
                let seen = parse(&f).unwrap();
                assert_eq!((seen.seq, seen.tx_ns, seen.dst_port), (s.seq, s.tx_ns, 9));
            }
        }
    }

    #[test]
    fn vxlan_frames_have_correct_outer_and_inner_checksums() {
        for size in [108, 109, 1514, 9000] {
            let t = Template::build(&cfg(vx(), size)).unwrap();
            for s in stamps() {
                let f = stamped(&t, &s);
                let p = SlicedPacket::from_ethernet(&f).unwrap();
                let Some(NetSlice::Ipv4(ip)) = p.net else {
                    panic!()
                };
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum());
                assert_eq!(Ipv4Addr::from(h.source), Ipv4Addr::new(192, 168, 0, 1));
                let Some(TransportSlice::Udp(u)) = p.transport else {
                    panic!()
                };
                let uh = u.to_header();
                assert_eq!(uh.destination_port, 4789);
                assert_ne!(uh.checksum, 0, "outer UDP checksum computed");
                assert_eq!(uh.checksum, uh.calc_checksum_ipv4(&h, u.payload()).unwrap());
                // The decapsulation of the encap crate agrees, and so does its source port.
                let d = vxlan::decapsulate(&f, 4789).unwrap();
                assert_eq!(d.vni, 42);
                let inner = &f[d.inner_range()];
                assert_eq!(uh.source_port, vxlan::source_port(inner));
                let (src, sport, payload) = check_inner(inner);
                assert_eq!((src, sport), (s.src_ip, s.src_port));
                assert_eq!(payload.len(), size - 50 - 42);
                assert_eq!(&inner[..12], &[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
                let seen = parse(&f).unwrap();
                assert_eq!(
                    (seen.seq, seen.tx_ns, seen.src_ip),
                    (s.seq, s.tx_ns, s.src_ip)
                );
                assert_eq!(seen.dst_port, 9, "the inner packet's port");
            }
        }
    }

    #[test]
    fn config_errors_name_the_problem() {
        let e = Template::build(&cfg(Proto::Udp, 59)).unwrap_err();
        assert_eq!(e, ConfigError::FrameSize { size: 59 });
        assert!(Template::build(&cfg(Proto::Udp, 9001)).is_err());
        let e = Template::build(&cfg(Proto::TcpSyn, 69)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "frame_size 69 is too small for TCP SYN: at least 70 bytes are needed for its headers and the 16-byte trailer"
        );
        let e = Template::build(&cfg(vx(), 107)).unwrap_err();
        assert!(e.to_string().contains("at least 108"), "{e}");
        let mut c = cfg(Proto::Udp, 64);
        c.flows = FlowPattern::RoundRobin(0);
        assert_eq!(Template::build(&c).unwrap_err(), ConfigError::NoFlows);
        let mut c = cfg(vx(), 200);
        if let Proto::Vxlan { vni, .. } = &mut c.proto {
            *vni = 1 << 24;
        }
        assert_eq!(
            Template::build(&c).unwrap_err(),
            ConfigError::Vni { vni: 1 << 24 }
        );
        assert_eq!(min_frame_size(&Proto::Udp), 60);
        assert_eq!(min_frame_size(&Proto::TcpSyn), 70);
        assert_eq!(min_frame_size(&vx()), 108);
    }

    #[test]
    fn flows_map_to_ports_then_addresses_of_the_16() {
        assert_eq!(flow_index(FlowPattern::One, 123), 0);
        assert_eq!(flow_index(FlowPattern::NewPerPacket, 123), 123);
        assert_eq!(flow_index(FlowPattern::RoundRobin(10), 123), 3);
        assert_eq!(flow_port(0), 1024);
        assert_eq!(flow_port(64511), 65535);
        assert_eq!(flow_port(64512), 1024);
        assert_eq!(flow_addr(SRC, 64511), SRC);
        assert_eq!(flow_addr(SRC, 64512), Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(
            flow_addr(SRC, 64512 * 65533),
            Ipv4Addr::new(10, 1, 255, 254)
        );
        assert_eq!(flow_addr(SRC, 64512 * 65534), SRC);
        let hi = Ipv4Addr::new(10, 1, 255, 254);
        assert_eq!(flow_addr(hi, 64512), Ipv4Addr::new(10, 1, 0, 1));
        // Distinct (address, port) pairs at the start and at the end of the cycle, which
        // then starts again.
        let cycle = SRC_PORTS * HOSTS;
        let mut seen = std::collections::HashSet::new();
        for f in (0..200_000u64).chain(cycle - 70_000..cycle) {
            assert!(
                seen.insert((flow_addr(SRC, f), flow_port(f))),
                "flow {f} repeats"
            );
        }
        assert_eq!((flow_addr(SRC, cycle), flow_port(cycle)), (SRC, 1024));
    }

    #[test]
    fn parse_refuses_other_frames_without_panicking() {
        let t = Template::build(&cfg(Proto::Udp, 64)).unwrap();
        let f = stamped(
            &t,
            &Stamp {
                src_ip: SRC,
                src_port: 1024,
                seq: 7,
                tx_ns: 9,
            },
        );
        // Every truncation short of the trailer's end fails, none panics.
        for n in 0..f.len() {
            assert_eq!(parse(&f[..n]).is_some(), n >= 58, "cut at {n}");
        }
        let mut g = f.clone();
        g[42] ^= 1;
        assert_eq!(parse(&g), None, "wrong magic");
        let mut g = f.clone();
        g[12] = 0x86;
        assert_eq!(parse(&g), None, "not IPv4");
        let mut g = f.clone();
        g[14 + 6] = 0x20;
        g[14 + 7] = 0x01;
        assert_eq!(parse(&g), None, "later fragment");
        let mut g = f.clone();
        g[14] = 0x44;
        assert_eq!(parse(&g), None, "bad IHL");
        let mut g = f.clone();
        g[14 + 9] = 1;
        assert_eq!(parse(&g), None, "ICMP");
        // Ethernet padding after a short IPv4 packet is ignored: total length 28 leaves no
        // payload for the trailer although the bytes are still there.
        let mut g = f.clone();
        g[16] = 0;
        g[17] = 28;
        assert_eq!(parse(&g), None, "trailer beyond the IPv4 total length");
        // Arbitrary bytes never panic.
        let mut x: u64 = 0x1234_5678;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut g = f.clone();
            g[(x % 64) as usize] = (x >> 8) as u8;
            g[((x >> 16) % 64) as usize] = (x >> 24) as u8;
            let _ = parse(&g[..((x >> 32) % 65) as usize]);
        }
    }
}
