//! VXLAN (RFC 7348): the 8-byte header, encapsulation of an Ethernet frame into headroom and
//! validated decapsulation of a whole underlay frame.
//!
//! Owns: the header view [`Packet`] (flags, 24-bit VNI, the inner frame), the header check
//! [`check`], [`encapsulate`] with its per-peer parameters [`Encap`], [`decapsulate`] and its
//! result [`Decap`], and the outer UDP source port [`source_port`]. The outer Ethernet/IPv4/UDP
//! code is shared with [`crate::udp_encap`]; so is [`DecapError`].
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Promises:
//! - After [`Packet::new_checked`] (at least 8 bytes) no accessor or setter can panic.
//! - [`encapsulate`] computes every outer checksum in software (IPv4 header always, UDP over the
//!   whole datagram when enabled, else 0): no checksum is left to an offload, so the stalls of
//!   flannel#1282 / calico#3145 cannot happen with frames built here. The outer IPv4 header
//!   has DF set, identification 0, DSCP/ECN 0 (see [`crate::udp_encap`]).
//! - [`decapsulate`] never panics and returns one [`DecapError`] variant per drop reason.
//!   It does not know VNIs or peers: the engine checks [`Decap::vni`] and [`Decap::outer_src`].
//!
//! Header validation, a deliberate choice: RFC 7348 says reserved bits "MUST be set to zero on
//! transmission and ignored on receipt", but a VXLAN header with the I flag clear carries no
//! valid VNI, and a reserved bit set usually means an extension sluice does not speak (GBP's G
//! bit and policy ID, GPE's P bit and next protocol, RCO). [`check`] therefore refuses the I
//! flag clear and any reserved bit set anywhere in the 8 bytes ([`DecapError::BadFlags`]),
//! which is exactly what Linux's `vxlan_rcv` does by default ("more robust and provides a
//! little more security"): sluice and the kernel drop the same frames.
//!
//! MTU: an inner frame costs [`OVERHEAD`] = 50 bytes of underlay frame and the pod MTU is the
//! underlay MTU less [`MTU_OVERHEAD`] (50: outer IPv4 + UDP + VXLAN + inner Ethernet), 1450 on
//! a 1500-byte underlay, as flannel configures `flannel.1`.

use core::ops::Range;
use std::net::Ipv4Addr;

use crate::ethernet::{self, ethertype};
use crate::udp_encap::{self, UdpEncap};
use crate::{flow, ipv4, udp, Error};

pub use crate::udp_encap::DecapError;

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid. The only flag a VXLAN header may carry.
pub const FLAG_I: u8 = 0x08;
/// UDP port of flannel's VXLAN backend and Linux's default (pre-IANA) port.
pub const DEFAULT_PORT: u16 = 8472;
/// The IANA-assigned VXLAN port (RFC 7348).
pub const IANA_PORT: u16 = 4789;
/// Headroom an encapsulation writes in front of the inner Ethernet frame: outer Ethernet (14)
/// + IPv4 (20) + UDP (8) + VXLAN (8).
pub const OVERHEAD: usize = udp_encap::OVERHEAD + HEADER_LEN;
/// What the tunnel costs at layer 3: the pod MTU is the underlay MTU less this (outer IPv4 20
/// + UDP 8 + VXLAN 8 + inner Ethernet 14).
pub const MTU_OVERHEAD: usize = udp_encap::MTU_OVERHEAD + HEADER_LEN + ethernet::HEADER_LEN;
/// The largest VNI (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;

/// Field offsets.
pub mod field {
    use core::ops::{Range, RangeFrom};
    pub const FLAGS: usize = 0;
    /// The 24 reserved bits after the flags.
    pub const RESERVED_1: Range<usize> = 1..4;
    pub const VNI: Range<usize> = 4..7;
    /// The last reserved byte.
    pub const RESERVED_2: usize = 7;
    pub const INNER: RangeFrom<usize> = 8..;
}

/// A view of a VXLAN header and the inner frame after it (the UDP payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking; accessors panic if it is shorter than 8 bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that it holds the 8-byte header (`Error::Truncated`
    /// otherwise). The flags are not checked here: see [`check`].
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole buffer: header and inner frame.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The 8-bit flags field (`FLAG_I` in a valid header).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The 24-bit VXLAN Network Identifier.
    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }

    /// True when the 24 bits after the flags and the last byte are all zero.
    pub fn reserved_zero(&self) -> bool {
        let b = self.buffer.as_ref();
        b[field::RESERVED_1] == [0, 0, 0] && b[field::RESERVED_2] == 0
    }

    /// The inner Ethernet frame (everything after the header).
    pub fn inner(&self) -> &[u8] {
        &self.buffer.as_ref()[field::INNER]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the VNI; only its low 24 bits are stored (a VNI above [`VNI_MAX`] is a
    /// configuration error the control plane refuses).
    pub fn set_vni(&mut self, vni: u32) {
        let [_, a, b, c] = (vni & VNI_MAX).to_be_bytes();
        self.buffer.as_mut()[field::VNI].copy_from_slice(&[a, b, c]);
    }

    /// Zeroes both reserved fields.
    pub fn clear_reserved(&mut self) {
        let b = self.buffer.as_mut();
        b[field::RESERVED_1].copy_from_slice(&[0, 0, 0]);
        b[field::RESERVED_2] = 0;
    }

    /// The inner Ethernet frame, mutable.
    pub fn inner_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::INNER]
    }
}

/// Writes a valid 8-byte VXLAN header (I flag, `vni`'s low 24 bits, reserved fields zero) at
/// the start of `buf`.
///
/// # Panics
/// If `buf` is shorter than [`HEADER_LEN`].
pub fn emit_header(buf: &mut [u8], vni: u32) {
    let mut p = Packet::new_unchecked(&mut buf[..HEADER_LEN]);
    p.set_flags(FLAG_I);
    p.clear_reserved();
    p.set_vni(vni);
}

/// The receive-side header check: `Ok(vni)` when the flags are exactly [`FLAG_I`] and every
/// reserved bit is zero, else [`DecapError::BadFlags`] (the module header explains why
/// reserved bits are refused rather than ignored, as Linux does).
pub fn check<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<u32, DecapError> {
    if p.flags() != FLAG_I || !p.reserved_zero() {
        return Err(DecapError::BadFlags { flags: p.flags() });
    }
    Ok(p.vni())
}

/// Per-peer parameters of a VXLAN encapsulation (built once per peer by the engine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Encap {
    /// Source MAC of the outer frame: the local underlay interface.
    pub src_mac: [u8; 6],
    /// Destination MAC of the outer frame: the next hop towards the peer on the underlay.
    pub dst_mac: [u8; 6],
    /// Local underlay address (the VTEP address).
    pub src_ip: Ipv4Addr,
    /// The peer VTEP's underlay address.
    pub dst_ip: Ipv4Addr,
    /// The peer's VXLAN port ([`DEFAULT_PORT`] 8472 for flannel and Linux, or [`IANA_PORT`]).
    pub dst_port: u16,
    /// The VNI (24 bits; only the low 24 bits are used).
    pub vni: u32,
    /// TTL of the outer IPv4 header (64 is what Linux uses).
    pub ttl: u8,
    /// Compute the outer UDP checksum (true), or send 0 = no checksum (false, Linux's default
    /// `noudpcsum`). Receivers accept both.
    pub udp_checksum: bool,
}

impl Encap {
    fn outer(&self) -> UdpEncap {
        UdpEncap {
            src_mac: self.src_mac,
            dst_mac: self.dst_mac,
            src_ip: self.src_ip,
            dst_ip: self.dst_ip,
            dst_port: self.dst_port,
            ttl: self.ttl,
            udp_checksum: self.udp_checksum,
        }
    }
}

/// The outer UDP source port for an inner Ethernet frame, RFC 7348 section 5: a hash of the
/// inner flow (IPv4 addresses, protocol and ports; else the MAC addresses) in the dynamic
/// range 49152..=65535, as Linux's `udp_flow_src_port` does (see [`crate::flow`]).
pub fn source_port(inner_frame: &[u8]) -> u16 {
    flow::frame_source_port(inner_frame)
}

/// Encapsulates, in place, the inner Ethernet frame at `buf[OVERHEAD..OVERHEAD + inner_len]`:
/// writes outer Ethernet, IPv4 (DF, checksum), UDP (length; checksum over the whole datagram
/// when `e.udp_checksum`, else 0) and VXLAN headers into `buf[..OVERHEAD]`, and returns the
/// frame length `OVERHEAD + inner_len` (the frame is `buf[..returned]`).
///
/// The engine pushes [`OVERHEAD`] bytes of headroom in front of the inner frame and hands the
/// whole slice; `src_port` is normally [`source_port`] of the inner frame.
///
/// Errors (nothing is written then): `Error::Truncated` if `inner_len` is shorter than an
/// Ethernet header or `buf` is shorter than `OVERHEAD + inner_len`; `Error::BadTotalLength`
/// if the outer IPv4 packet would exceed 65535 bytes (`inner_len` > 65499). The inner frame is
/// not otherwise inspected.
pub fn encapsulate(
    buf: &mut [u8],
    inner_len: usize,
    e: &Encap,
    src_port: u16,
) -> Result<usize, Error> {
    if inner_len < ethernet::HEADER_LEN || buf.len() < OVERHEAD + inner_len {
        return Err(Error::Truncated);
    }
    if ipv4::HEADER_LEN + udp::HEADER_LEN + HEADER_LEN + inner_len > usize::from(u16::MAX) {
        return Err(Error::BadTotalLength);
    }
    emit_header(&mut buf[udp_encap::OVERHEAD..OVERHEAD], e.vni);
    udp_encap::emit_outer(buf, HEADER_LEN + inner_len, &e.outer(), src_port)
}

/// A validated VXLAN frame: where the inner Ethernet frame is, its VNI, and who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decap {
    /// Outer IPv4 source: the peer VTEP (check it against the peer list).
    pub outer_src: Ipv4Addr,
    /// Outer IPv4 destination (this node's VTEP address, or not: the engine decides).
    pub outer_dst: Ipv4Addr,
    /// Source MAC of the outer frame.
    pub outer_src_mac: [u8; 6],
    /// Outer UDP source port.
    pub src_port: u16,
    /// The VNI (check it against the configured one).
    pub vni: u32,
    /// Offset of the inner Ethernet frame in the outer frame.
    pub inner_offset: usize,
    /// Length of the inner Ethernet frame.
    pub inner_len: usize,
}

impl Decap {
    /// The byte range of the inner Ethernet frame in the outer frame.
    pub fn inner_range(&self) -> Range<usize> {
        self.inner_offset..self.inner_offset + self.inner_len
    }
}

/// Validates a whole VXLAN frame from the underlay and locates the inner Ethernet frame.
///
/// In this order (one [`DecapError`] each): outer Ethernet present and IPv4; outer IPv4
/// accepted by [`ipv4::Packet::new_checked`] with a correct header checksum, not a fragment,
/// protocol UDP; UDP destination port `port`; UDP length equal to the IPv4 payload length
/// (bytes after the IPv4 total length, Ethernet padding, are ignored); UDP checksum correct
/// when nonzero (zero is accepted); VXLAN header present and valid ([`check`]); an inner
/// Ethernet header present; and, when the inner ethertype is IPv4, an inner IPv4 header that
/// [`ipv4::Packet::new_checked`] accepts (its checksum is not verified, the pod's stack does
/// that; inner Ethernet padding is allowed).
pub fn decapsulate(frame: &[u8], port: u16) -> Result<Decap, DecapError> {
    let o = udp_encap::parse_outer(frame, port)?;
    let payload = frame
        .get(o.payload_offset..o.payload_offset + o.payload_len)
        .ok_or(DecapError::UdpLength)?;
    let vx = Packet::new_checked(payload).map_err(|_| DecapError::Truncated)?;
    let vni = check(&vx)?;
    let inner = ethernet::Frame::new_checked(vx.inner()).map_err(|_| DecapError::InnerTruncated)?;
    if inner.ethertype() == ethertype::IPV4 {
        ipv4::Packet::new_checked(inner.payload()).map_err(DecapError::InnerIpv4)?;
    }
    Ok(Decap {
        outer_src: o.src_ip,
        outer_dst: o.dst_ip,
        outer_src_mac: o.src_mac,
        src_port: o.src_port,
        vni,
        inner_offset: o.payload_offset + HEADER_LEN,
        inner_len: o.payload_len - HEADER_LEN,
    })
}

const _: () = assert!(OVERHEAD == 50 && MTU_OVERHEAD == 50);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_view() {
        let h = [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, 0xaa];
        let p = Packet::new_checked(&h[..]).unwrap();
        assert_eq!(p.flags(), FLAG_I);
        assert_eq!(p.vni(), 0x123456);
        assert_eq!(p.inner(), &[0xaa]);
        assert_eq!(check(&p), Ok(0x123456));
        assert_eq!(Packet::new_checked(&h[..7]), Err(Error::Truncated));
        let p = Packet::new_checked(&h[..8]).unwrap();
        assert!(p.inner().is_empty());

        let mut b = [0xffu8; 10];
        emit_header(&mut b, 0x0100_0001);
        assert_eq!(&b[..8], &[0x08, 0, 0, 0, 0, 0, 1, 0]);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.inner_mut()[1] = 7;
        p.set_vni(VNI_MAX);
        assert_eq!(p.vni(), VNI_MAX);
        assert_eq!(b[9], 7);
    }

    #[test]
    fn encapsulate_errors_write_nothing() {
        let e = Encap {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(192, 168, 0, 1),
            dst_ip: Ipv4Addr::new(192, 168, 0, 2),
            dst_port: DEFAULT_PORT,
            vni: 7,
            ttl: 64,
            udp_checksum: true,
        };
        let mut b = vec![0xaau8; OVERHEAD + 65500];
        assert_eq!(encapsulate(&mut b, 13, &e, 1), Err(Error::Truncated));
        assert_eq!(encapsulate(&mut b[..63], 14, &e, 1), Err(Error::Truncated));
        assert_eq!(
            encapsulate(&mut b, 65500, &e, 1),
            Err(Error::BadTotalLength)
        );
        assert!(b.iter().all(|&x| x == 0xaa));
        assert_eq!(encapsulate(&mut b, 65499, &e, 1), Ok(OVERHEAD + 65499));
        let d = decapsulate(&b, DEFAULT_PORT).unwrap();
        assert_eq!((d.vni, d.inner_offset, d.inner_len), (7, 50, 65499));
        let ip = ipv4::Packet::new_checked(&b[14..]).unwrap();
        assert_eq!(ip.total_len(), 65535);
    }

    #[test]
    fn check_refuses_flags_and_reserved_bits() {
        let ok = [0x08, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(check(&Packet::new_unchecked(&ok[..])), Ok(1));
        for (at, v) in [
            (0, 0x00),
            (0, 0x88),
            (0, 0x0c),
            (0, 0x09),
            (1, 1),
            (3, 0x80),
            (7, 3),
        ] {
            let mut h = ok;
            h[at] = v;
            let want = DecapError::BadFlags { flags: h[0] };
            assert_eq!(check(&Packet::new_unchecked(&h[..])), Err(want), "{at} {v}");
        }
        assert_eq!(
            DecapError::BadFlags { flags: 0 }.to_string(),
            "VXLAN flags 0x00: I flag clear or reserved bits set"
        );
    }
}
