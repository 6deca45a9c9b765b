//! flannel's UDP backend on the wire, and the outer Ethernet/IPv4/UDP layer shared with
//! [`crate::vxlan`].
//!
//! Owns: the flannel UDP tunnel format (the inner IPv4 packet, without Ethernet header, is the
//! whole UDP payload; port [`DEFAULT_PORT`] 8285), its encapsulation into headroom
//! ([`encapsulate_ip`]) and its validated decapsulation ([`decapsulate_ip`]); the tunnel
//! decapsulation error [`DecapError`] (also `vxlan::DecapError`); and, crate-private, the one
//! function that writes an outer Ethernet + IPv4 + UDP header and the one that checks it,
//! used by both tunnels.
//!
//! Promises:
//! - Encapsulation writes every outer checksum in software: the IPv4 header checksum always,
//!   the UDP checksum over the whole datagram when [`UdpEncap::udp_checksum`] is set (else 0,
//!   which RFC 768 allows for IPv4). Nothing is left to an offload, so the checksum-offload
//!   stalls of flannel#1282 / calico#3145 cannot happen on frames built here. The outer IPv4
//!   header has no options, DSCP/ECN 0, Don't Fragment set and identification 0 (an atomic
//!   datagram: RFC 6864 section 4.1 lets the source put any value there, and Linux's GRO
//!   accepts a fixed ID on DF packets).
//! - Decapsulation takes a whole outer Ethernet frame from the underlay, never panics, never
//!   allocates, and returns a distinct [`DecapError`] per reason, checked in the order the
//!   variants are declared, so that the engine can count each drop reason by name.
//!
//! What flannel itself does: `flanneld` reads IPv4 packets from its TUN device (`flannel0`,
//! no packet information header) and `sendto`s each one unchanged, from its socket bound to
//! 8285, to the peer's 8285. Its outer UDP source port is therefore 8285; sluice may use
//! 8285 too or a flow hash ([`source_port`]): receivers do not look at it.
//!
//! The pod MTU in UDP mode is the underlay MTU less [`MTU_OVERHEAD`] (28: outer IPv4 + UDP).

use std::net::Ipv4Addr;

use crate::ethernet::{self, ethertype};
use crate::ipv4::{self, protocol};
use crate::{flow, udp, Error};

/// flannel's default UDP port for its UDP backend.
pub const DEFAULT_PORT: u16 = 8285;

/// Headroom an encapsulation writes in front of the inner IPv4 packet: outer Ethernet (14) +
/// IPv4 (20) + UDP (8).
pub const OVERHEAD: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN;

/// What the tunnel costs at layer 3 (outer IPv4 + UDP): the pod MTU is the underlay MTU less
/// this (1472 on a 1500-byte underlay), as flannel configures `flannel0`.
pub const MTU_OVERHEAD: usize = ipv4::HEADER_LEN + udp::HEADER_LEN;

/// The largest UDP payload an outer IPv4 packet can carry (65535 - 20 - 8).
const MAX_UDP_PAYLOAD: usize = u16::MAX as usize - ipv4::HEADER_LEN - udp::HEADER_LEN;

/// Offset of the UDP header in a frame built by [`emit_outer`].
const UDP_AT: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN;

/// Parameters of the outer headers for one peer (built once per peer by the engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpEncap {
    /// Source MAC of the outer frame: the local underlay interface.
    pub src_mac: [u8; 6],
    /// Destination MAC of the outer frame: the next hop towards the peer on the underlay.
    pub dst_mac: [u8; 6],
    /// Local underlay address.
    pub src_ip: Ipv4Addr,
    /// The peer node's underlay address.
    pub dst_ip: Ipv4Addr,
    /// The peer's tunnel port ([`DEFAULT_PORT`] for flannel).
    pub dst_port: u16,
    /// TTL of the outer IPv4 header (64 is what Linux uses).
    pub ttl: u8,
    /// Compute the outer UDP checksum (true), or send 0 = no checksum (false).
    pub udp_checksum: bool,
}

/// Why a tunnel frame was refused. One variant per drop reason, in the order they are checked;
/// shared by [`decapsulate_ip`] and [`crate::vxlan::decapsulate`] (`vxlan::DecapError` is this
/// type). [`DecapError::name`] gives a stable counter name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecapError {
    /// The outer frame is shorter than an Ethernet header (14 bytes).
    #[error("outer frame shorter than an Ethernet header")]
    EthernetTruncated,
    /// The outer ethertype is not IPv4 (802.1Q-tagged underlay frames included).
    #[error("outer ethertype {0:#06x} is not IPv4")]
    NotIpv4(u16),
    /// The outer IPv4 header is refused by [`ipv4::Packet::new_checked`] (truncated, bad
    /// version, IHL or total length).
    #[error("outer IPv4 header: {0}")]
    OuterIpv4(Error),
    /// The outer IPv4 header checksum is wrong.
    #[error("outer IPv4 header checksum is wrong")]
    OuterChecksum,
    /// The outer IPv4 packet is a fragment (MF set or a nonzero offset): not reassembled.
    #[error("outer IPv4 packet is a fragment")]
    Fragment,
    /// The outer IPv4 protocol is not UDP.
    #[error("outer IPv4 protocol {0} is not UDP")]
    NotUdp(u8),
    /// The outer UDP destination port is not the tunnel's.
    #[error("outer UDP destination port {0} is not the tunnel port")]
    WrongPort(u16),
    /// The UDP header is cut short, or its length field differs from the IPv4 payload length.
    #[error("outer UDP length field disagrees with the IPv4 payload length")]
    UdpLength,
    /// A nonzero outer UDP checksum is wrong (a zero checksum is accepted).
    #[error("outer UDP checksum is wrong")]
    UdpChecksum,
    /// VXLAN: the UDP payload is shorter than the 8-byte VXLAN header.
    #[error("UDP payload shorter than the 8-byte VXLAN header")]
    Truncated,
    /// VXLAN: the I flag is clear or a reserved bit is set (see [`crate::vxlan::check`]).
    #[error("VXLAN flags {flags:#04x}: I flag clear or reserved bits set")]
    BadFlags { flags: u8 },
    /// VXLAN: the inner Ethernet header is cut short (fewer than 14 bytes after VXLAN).
    #[error("inner Ethernet header truncated")]
    InnerTruncated,
    /// The inner IPv4 header (VXLAN: when the inner ethertype is IPv4; UDP mode: always) is
    /// refused by [`ipv4::Packet::new_checked`]; `Truncated`, `HeaderTruncated` and
    /// `BadTotalLength` are truncated inner headers. In UDP mode an inner total length that
    /// differs from the UDP payload length is `BadTotalLength` too.
    #[error("inner IPv4 header: {0}")]
    InnerIpv4(Error),
}

impl DecapError {
    /// A stable snake_case name for counters and logs.
    pub const fn name(&self) -> &'static str {
        match self {
            DecapError::EthernetTruncated => "overlay_ethernet_truncated",
            DecapError::NotIpv4(_) => "overlay_not_ipv4",
            DecapError::OuterIpv4(_) => "overlay_outer_ipv4_malformed",
            DecapError::OuterChecksum => "overlay_outer_ipv4_checksum",
            DecapError::Fragment => "overlay_outer_fragment",
            DecapError::NotUdp(_) => "overlay_not_udp",
            DecapError::WrongPort(_) => "overlay_wrong_port",
            DecapError::UdpLength => "overlay_udp_length",
            DecapError::UdpChecksum => "overlay_udp_checksum",
            DecapError::Truncated => "vxlan_truncated",
            DecapError::BadFlags { .. } => "vxlan_bad_flags",
            DecapError::InnerTruncated => "overlay_inner_truncated",
            DecapError::InnerIpv4(_) => "overlay_inner_ipv4_malformed",
        }
    }
}

/// A validated flannel-UDP frame: where the inner IPv4 packet is, and who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decap {
    /// Outer IPv4 source: the peer node's underlay address (check it against the peer list).
    pub outer_src: Ipv4Addr,
    /// Outer IPv4 destination (this node's underlay address, or not: the engine decides).
    pub outer_dst: Ipv4Addr,
    /// Source MAC of the outer frame.
    pub outer_src_mac: [u8; 6],
    /// Outer UDP source port.
    pub src_port: u16,
    /// Offset of the inner IPv4 packet in the frame.
    pub inner_offset: usize,
    /// Length of the inner IPv4 packet (its total length).
    pub inner_len: usize,
}

impl Decap {
    /// The byte range of the inner IPv4 packet in the outer frame.
    pub fn inner_range(&self) -> core::ops::Range<usize> {
        self.inner_offset..self.inner_offset + self.inner_len
    }
}

/// The outer headers of a tunnel frame that [`parse_outer`] accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outer {
    pub src_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    /// Offset of the UDP payload in the frame.
    pub payload_offset: usize,
    /// Length of the UDP payload (UDP length - 8).
    pub payload_len: usize,
}

/// Writes the outer Ethernet + IPv4 + UDP headers into `buf[..OVERHEAD]` in front of a UDP
/// payload of `payload_len` bytes that is already at `buf[OVERHEAD..]`, with every checksum
/// computed here. Returns the frame length `OVERHEAD + payload_len`.
///
/// Errors: `Error::Truncated` if `buf` is shorter than `OVERHEAD + payload_len`,
/// `Error::BadTotalLength` if the outer IPv4 total length would exceed 65535.
pub(crate) fn emit_outer(
    buf: &mut [u8],
    payload_len: usize,
    e: &UdpEncap,
    src_port: u16,
) -> Result<usize, Error> {
    if payload_len > MAX_UDP_PAYLOAD {
        return Err(Error::BadTotalLength);
    }
    let total = OVERHEAD + payload_len;
    let frame = buf.get_mut(..total).ok_or(Error::Truncated)?;
    // Both fit in u16: payload_len <= 65507.
    let udp_len = (udp::HEADER_LEN + payload_len) as u16;
    ethernet::emit_header(frame, e.dst_mac, e.src_mac, ethertype::IPV4);
    ipv4::Repr {
        src: e.src_ip,
        dst: e.dst_ip,
        protocol: protocol::UDP,
        ttl: e.ttl,
        ident: 0,
        dont_frag: true,
        payload_len: udp_len,
    }
    .emit(&mut frame[ethernet::HEADER_LEN..]);
    let dgram = &mut frame[UDP_AT..];
    udp::emit_header(dgram, src_port, e.dst_port, payload_len as u16);
    if e.udp_checksum {
        udp::Packet::new_unchecked(dgram).fill_checksum(e.src_ip, e.dst_ip);
    }
    Ok(total)
}

/// Checks the outer Ethernet, IPv4 and UDP headers of a tunnel frame addressed to UDP `port`
/// (the checks of [`DecapError`] up to `UdpChecksum`, in that order).
pub(crate) fn parse_outer(frame: &[u8], port: u16) -> Result<Outer, DecapError> {
    let eth = ethernet::Frame::new_checked(frame).map_err(|_| DecapError::EthernetTruncated)?;
    if eth.ethertype() != ethertype::IPV4 {
        return Err(DecapError::NotIpv4(eth.ethertype()));
    }
    let ip = ipv4::Packet::new_checked(eth.payload()).map_err(DecapError::OuterIpv4)?;
    if !ip.verify_checksum() {
        return Err(DecapError::OuterChecksum);
    }
    if ip.is_fragment() {
        return Err(DecapError::Fragment);
    }
    if ip.protocol() != protocol::UDP {
        return Err(DecapError::NotUdp(ip.protocol()));
    }
    let ip_payload = ip.payload();
    if ip_payload.len() < udp::HEADER_LEN {
        return Err(DecapError::UdpLength);
    }
    let dgram = udp::Packet::new_unchecked(ip_payload);
    if dgram.dst_port() != port {
        return Err(DecapError::WrongPort(dgram.dst_port()));
    }
    if usize::from(dgram.len()) != ip_payload.len() {
        return Err(DecapError::UdpLength);
    }
    let (src_ip, dst_ip) = (ip.src(), ip.dst());
    if !dgram.verify_checksum(src_ip, dst_ip) {
        return Err(DecapError::UdpChecksum);
    }
    Ok(Outer {
        src_mac: eth.src(),
        src_ip,
        dst_ip,
        src_port: dgram.src_port(),
        payload_offset: ethernet::HEADER_LEN + ip.header_len() + udp::HEADER_LEN,
        payload_len: ip_payload.len() - udp::HEADER_LEN,
    })
}

/// The outer UDP source port for an inner IPv4 packet: a hash of its flow in the range
/// 49152..=65535 (see [`crate::flow`]). flanneld itself sends from 8285; either works.
pub fn source_port(inner_ip: &[u8]) -> u16 {
    flow::ipv4_source_port(inner_ip)
}

/// Encapsulates, in place, the inner IPv4 packet at `buf[OVERHEAD..OVERHEAD + inner_ip_len]`:
/// writes the outer Ethernet, IPv4 and UDP headers into `buf[..OVERHEAD]` and returns the
/// frame length `OVERHEAD + inner_ip_len` (the frame is `buf[..returned]`).
///
/// The inner packet is not inspected. Errors: `Error::Truncated` if `buf` is shorter than
/// `OVERHEAD + inner_ip_len`, `Error::BadTotalLength` if the outer IPv4 packet would exceed
/// 65535 bytes.
pub fn encapsulate_ip(
    buf: &mut [u8],
    inner_ip_len: usize,
    e: &UdpEncap,
    src_port: u16,
) -> Result<usize, Error> {
    emit_outer(buf, inner_ip_len, e, src_port)
}

/// Validates a whole flannel-UDP frame from the underlay and locates the inner IPv4 packet.
///
/// Checks the outer headers (see [`DecapError`]; the UDP destination port must be `port`, a
/// zero UDP checksum is accepted, a nonzero one must be right), then that the UDP payload is
/// an IPv4 packet [`ipv4::Packet::new_checked`] accepts and whose total length is exactly the
/// UDP payload length (`InnerIpv4(..)` otherwise). The inner header checksum is not verified:
/// the receiving pod's stack does that, as with the kernel's tunnels.
pub fn decapsulate_ip(frame: &[u8], port: u16) -> Result<Decap, DecapError> {
    let o = parse_outer(frame, port)?;
    let end = o.payload_offset + o.payload_len;
    let inner = frame
        .get(o.payload_offset..end)
        .ok_or(DecapError::UdpLength)?;
    let ip = ipv4::Packet::new_checked(inner).map_err(DecapError::InnerIpv4)?;
    if usize::from(ip.total_len()) != inner.len() {
        return Err(DecapError::InnerIpv4(Error::BadTotalLength));
    }
    Ok(Decap {
        outer_src: o.src_ip,
        outer_dst: o.dst_ip,
        outer_src_mac: o.src_mac,
        src_port: o.src_port,
        inner_offset: o.payload_offset,
        inner_len: o.payload_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum;

    /// The IPv4 ICMP echo request of `ipv4.rs`'s tests (captured on a veth).
    static ECHO_REQUEST: [u8; 52] = [
        0x45, 0x00, 0x00, 0x34, 0x9e, 0x9f, 0x40, 0x00, 0x40, 0x01, 0x87, 0x8d, 0x0a, 0x4d, 0x00,
        0x01, 0x0a, 0x4d, 0x00, 0x02, 0x08, 0x00, 0xac, 0xf0, 0x1e, 0x73, 0x00, 0x01, 0x02, 0xeb,
        0x07, 0x6b, 0x00, 0x00, 0x00, 0x00, 0xcf, 0xf4, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
    ];

    const E: UdpEncap = UdpEncap {
        src_mac: [2, 0, 0, 0, 1, 1],
        dst_mac: [2, 0, 0, 0, 1, 2],
        src_ip: Ipv4Addr::new(192, 168, 77, 1),
        dst_ip: Ipv4Addr::new(192, 168, 77, 2),
        dst_port: DEFAULT_PORT,
        ttl: 64,
        udp_checksum: true,
    };

    fn build(e: &UdpEncap) -> ([u8; 128], usize) {
        let mut b = [0u8; 128];
        b[OVERHEAD..OVERHEAD + 52].copy_from_slice(&ECHO_REQUEST);
        let n = encapsulate_ip(&mut b, 52, e, 8285).unwrap();
        (b, n)
    }

    #[test]
    fn encapsulate_writes_expected_outer_bytes() {
        let (b, n) = build(&E);
        assert_eq!(n, 94);
        let expect_head: [u8; 38] = [
            2, 0, 0, 0, 1, 2, 2, 0, 0, 0, 1, 1, 0x08, 0x00, // Ethernet
            0x45, 0x00, 0x00, 80, 0x00, 0x00, 0x40, 0x00, 64, 17, 0, 0, // IPv4 (csum below)
            192, 168, 77, 1, 192, 168, 77, 2, //
            0x20, 0x5d, 0x20, 0x5d, // UDP 8285 -> 8285
        ];
        let mut head = [0u8; 38];
        head.copy_from_slice(&b[..38]);
        head[24] = 0;
        head[25] = 0;
        assert_eq!(head, expect_head);
        assert!(checksum::verify(&b[14..34]));
        assert_eq!(&b[38..40], &[0, 60]);
        assert!(udp::Packet::new_checked(&b[34..n])
            .unwrap()
            .verify_checksum(E.src_ip, E.dst_ip));
        assert_ne!(&b[40..42], &[0, 0]);
        assert_eq!(&b[42..n], &ECHO_REQUEST);
        let d = decapsulate_ip(&b[..n], DEFAULT_PORT).unwrap();
        assert_eq!(
            d,
            Decap {
                outer_src: E.src_ip,
                outer_dst: E.dst_ip,
                outer_src_mac: E.src_mac,
                src_port: 8285,
                inner_offset: 42,
                inner_len: 52,
            }
        );
        let (b, n) = build(&UdpEncap {
            udp_checksum: false,
            ..E
        });
        assert_eq!(&b[40..42], &[0, 0]);
        assert!(decapsulate_ip(&b[..n], DEFAULT_PORT).is_ok());
    }

    #[test]
    fn encapsulate_errors() {
        let mut b = [0u8; 93];
        assert_eq!(encapsulate_ip(&mut b, 52, &E, 1), Err(Error::Truncated));
        let mut big = vec![0u8; 70000];
        assert_eq!(
            encapsulate_ip(&mut big, 65508, &E, 1),
            Err(Error::BadTotalLength)
        );
        assert_eq!(encapsulate_ip(&mut big, 65507, &E, 1), Ok(65549));
        let ip = ipv4::Packet::new_checked(&big[14..65549]).unwrap();
        assert_eq!(ip.total_len(), 65535);
        assert!(ip.verify_checksum());
    }

    #[test]
    fn decap_errors_in_order() {
        let (b, n) = build(&E);
        let f = &b[..n];
        let with = |at: usize, v: u8| {
            let mut c = b;
            c[at] = v;
            c
        };
        assert_eq!(
            decapsulate_ip(&f[..13], 8285),
            Err(DecapError::EthernetTruncated)
        );
        assert_eq!(
            decapsulate_ip(&with(12, 0x86)[..n], 8285),
            Err(DecapError::NotIpv4(0x8600))
        );
        assert_eq!(
            decapsulate_ip(&f[..n - 1], 8285),
            Err(DecapError::OuterIpv4(Error::BadTotalLength))
        );
        assert_eq!(
            decapsulate_ip(&with(24, b[24] ^ 1)[..n], 8285),
            Err(DecapError::OuterChecksum)
        );
        assert_eq!(
            decapsulate_ip(&f[..n], 8472),
            Err(DecapError::WrongPort(8285))
        );
        // Corrupt one inner byte: the UDP checksum catches it; with checksum 0 it passes.
        let c = with(60, b[60] ^ 0x10);
        assert_eq!(decapsulate_ip(&c[..n], 8285), Err(DecapError::UdpChecksum));
        let mut c = with(60, b[60] ^ 0x10);
        c[40] = 0;
        c[41] = 0;
        assert!(decapsulate_ip(&c[..n], 8285).is_ok());
        // UDP length one short of the IPv4 payload.
        let mut c = b;
        c[39] -= 1;
        c[40] = 0;
        c[41] = 0;
        assert_eq!(decapsulate_ip(&c[..n], 8285), Err(DecapError::UdpLength));
        // Inner version 6.
        let mut c = with(42, 0x65);
        c[40] = 0;
        c[41] = 0;
        assert_eq!(
            decapsulate_ip(&c[..n], 8285),
            Err(DecapError::InnerIpv4(Error::BadVersion))
        );
        assert_eq!(
            DecapError::InnerIpv4(Error::BadVersion).to_string(),
            "inner IPv4 header: IPv4 version field is not 4"
        );
        assert_eq!(DecapError::UdpChecksum.name(), "overlay_udp_checksum");
    }
}
