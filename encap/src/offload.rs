//! Checksum and segmentation offload state (`virtio_net_hdr` semantics) and its completion in
//! software.
//!
//! Owns: [`Offload`] / [`GsoKind`] (what a frame still needs), the Linux `struct
//! virtio_net_hdr` wire format ([`parse_vnet_hdr`], [`emit_vnet_hdr`]), completing a partial
//! transport checksum ([`complete_checksum`]) and cutting TCP/IPv4 and UDP/IPv4 GSO
//! super-frames into wire-ready frames ([`segment`]).
//!
//! Promises: every function here takes frames sent by pods and returns an [`OffloadError`] for
//! every malformed input; none panics, allocates or does I/O. [`segment`] builds each output
//! frame in a caller-provided scratch buffer and lends it to a callback, so one buffer serves a
//! whole super-frame. Frames it emits carry correct IPv4 header checksums and full TCP/UDP
//! checksums; the kernel's `hdr_len` hint is never trusted, header lengths are read from the
//! headers themselves.
//!
//! Not supported (an error, never a wrong frame): TCP over IPv6 segmentation
//! ([`OffloadError::Unsupported`]), the old UFO gso_type 3, VLAN-tagged GSO frames, IPv4 "BIG
//! TCP" super-frames above 64 KiB (total length 0). The ECN bit of `gso_type` (0x80) is
//! accepted and not represented in [`Offload`]: segmentation clears CWR after the first
//! segment, which is what the kernel does for such frames.

use crate::checksum;
use crate::ethernet::{self, ethertype};
use crate::ipv4::{self, protocol};
use crate::tcp;
use crate::udp;

/// Segmentation offload kinds, as in `virtio_net_hdr.gso_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GsoKind {
    #[default]
    None,
    TcpV4,
    TcpV6,
    UdpL4,
}

/// Checksum and segmentation state of a frame, with the semantics of `virtio_net_hdr`.
///
/// A frame read from a veth with `PACKET_VNET_HDR` may carry a transport checksum that is not
/// yet computed (`needs_csum`: the 16-bit field at `csum_start + csum_offset` holds only the
/// pseudo-header sum) and may be a TCP "super-frame" of up to 64 KiB to be cut into
/// `gso_size`-byte segments. A port that cannot hand such a frame on as it is (TAP, pcap,
/// memory) completes it in software before transmitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offload {
    /// The transport checksum must still be computed (VIRTIO_NET_HDR_F_NEEDS_CSUM).
    pub needs_csum: bool,
    /// The checksum was verified by the sender's side (VIRTIO_NET_HDR_F_DATA_VALID).
    pub data_valid: bool,
    /// Offset from the start of the frame where checksumming starts.
    pub csum_start: u16,
    /// Offset from `csum_start` of the 16-bit checksum field.
    pub csum_offset: u16,
    pub gso: GsoKind,
    /// Payload bytes per segment (the MSS for TCP).
    pub gso_size: u16,
    /// Length of all headers (Ethernet to transport) in front of the payload.
    pub hdr_len: u16,
}

impl Offload {
    /// True when the frame is complete as it is: nothing left to compute or segment.
    pub fn is_plain(&self) -> bool {
        !self.needs_csum && self.gso == GsoKind::None
    }
}

/// Offset of the checksum in a UDP header (`csum_offset` of a UDP frame).
const UDP_CSUM_OFFSET: u16 = 6;

/// Length of `struct virtio_net_hdr` (without `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;

/// Raw values of `struct virtio_net_hdr` fields.
pub mod vnet {
    pub const F_NEEDS_CSUM: u8 = 1;
    pub const F_DATA_VALID: u8 = 2;
    pub const GSO_NONE: u8 = 0;
    pub const GSO_TCPV4: u8 = 1;
    /// Old UDP fragmentation offload (UFO): refused.
    pub const GSO_UDP: u8 = 3;
    pub const GSO_TCPV6: u8 = 4;
    pub const GSO_UDP_L4: u8 = 5;
    /// Flag bit: the TCP super-frame carries ECN (CWR set on the first segment only).
    pub const GSO_ECN: u8 = 0x80;
}

/// Longest header stack [`segment`] handles: Ethernet + IPv4 with options + TCP with options.
pub const MAX_HEADERS_LEN: usize = ethernet::HEADER_LEN + 60 + 60;

/// Why an offload operation refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("virtio_net_hdr needs 10 bytes, got {len}")]
    VnetTruncated { len: usize },
    #[error("unsupported virtio_net_hdr gso_type {0:#04x} (UFO and unknown types are refused)")]
    BadGsoType(u8),
    #[error("GSO frame with gso_size 0")]
    ZeroGsoSize,
    #[error("checksum field at csum_start {start} + csum_offset {offset} does not fit a {len}-byte frame")]
    BadCsumOffsets { start: u16, offset: u16, len: usize },
    #[error("segmentation of TCP over IPv6 is not supported")]
    Unsupported,
    #[error("GSO frame is not IPv4 (ethertype {ethertype:#06x})")]
    NotIpv4 { ethertype: u16 },
    #[error("GSO type {gso:?} on IP protocol {protocol}")]
    WrongProtocol { gso: GsoKind, protocol: u8 },
    #[error("GSO frame is an IPv4 fragment")]
    Fragment,
    #[error("malformed GSO frame: {0}")]
    Malformed(#[from] crate::Error),
    #[error("scratch buffer of {have} bytes, {need} needed")]
    ScratchTooSmall { need: usize, have: usize },
}

fn le16(b: &[u8; VNET_HDR_LEN], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Parses a little-endian `struct virtio_net_hdr` at the start of `b` (as read before a frame
/// from a packet socket with `PACKET_VNET_HDR` or a TAP with `IFF_VNET_HDR`).
///
/// Refuses: fewer than 10 bytes, gso_type 3 (UFO) or unknown, a GSO type with gso_size 0.
/// Unknown flag bits are ignored, as is the ECN bit of gso_type.
pub fn parse_vnet_hdr(b: &[u8]) -> Result<Offload, OffloadError> {
    let h: &[u8; VNET_HDR_LEN] = b
        .get(..VNET_HDR_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(OffloadError::VnetTruncated { len: b.len() })?;
    let gso = match h[1] & !vnet::GSO_ECN {
        vnet::GSO_NONE => GsoKind::None,
        vnet::GSO_TCPV4 => GsoKind::TcpV4,
        vnet::GSO_TCPV6 => GsoKind::TcpV6,
        vnet::GSO_UDP_L4 => GsoKind::UdpL4,
        _ => return Err(OffloadError::BadGsoType(h[1])),
    };
    let o = Offload {
        needs_csum: h[0] & vnet::F_NEEDS_CSUM != 0,
        data_valid: h[0] & vnet::F_DATA_VALID != 0,
        hdr_len: le16(h, 2),
        gso_size: le16(h, 4),
        csum_start: le16(h, 6),
        csum_offset: le16(h, 8),
        gso,
    };
    if o.gso != GsoKind::None && o.gso_size == 0 {
        return Err(OffloadError::ZeroGsoSize);
    }
    Ok(o)
}

/// Writes `o` as a little-endian `struct virtio_net_hdr`.
pub fn emit_vnet_hdr(o: &Offload) -> [u8; VNET_HDR_LEN] {
    let mut h = [0u8; VNET_HDR_LEN];
    h[0] = if o.needs_csum { vnet::F_NEEDS_CSUM } else { 0 }
        | if o.data_valid { vnet::F_DATA_VALID } else { 0 };
    h[1] = match o.gso {
        GsoKind::None => vnet::GSO_NONE,
        GsoKind::TcpV4 => vnet::GSO_TCPV4,
        GsoKind::TcpV6 => vnet::GSO_TCPV6,
        GsoKind::UdpL4 => vnet::GSO_UDP_L4,
    };
    h[2..4].copy_from_slice(&o.hdr_len.to_le_bytes());
    h[4..6].copy_from_slice(&o.gso_size.to_le_bytes());
    h[6..8].copy_from_slice(&o.csum_start.to_le_bytes());
    h[8..10].copy_from_slice(&o.csum_offset.to_le_bytes());
    h
}

/// Completes a partial checksum in place, as the kernel's `skb_checksum_help` does: sums
/// `frame[csum_start..]`, seeded by the 16-bit value already in the checksum field (the
/// pseudo-header sum the sender's stack put there), and stores the complemented result at
/// `csum_start + csum_offset`. A UDP checksum (`csum_offset` 6) that computes to 0 is stored
/// as 0xffff, the same value in ones' complement, because 0 means "no checksum" in UDP; any
/// other (TCP's, `csum_offset` 16) is stored as computed, 0 included (RFC 1624: 0xffff would
/// be a checksum no computation yields).
///
/// Does nothing when `o.needs_csum` is false. Fails if the field does not fit in the frame.
pub fn complete_checksum(frame: &mut [u8], o: &Offload) -> Result<(), OffloadError> {
    if !o.needs_csum {
        return Ok(());
    }
    let bad = OffloadError::BadCsumOffsets {
        start: o.csum_start,
        offset: o.csum_offset,
        len: frame.len(),
    };
    let start = usize::from(o.csum_start);
    let at = start + usize::from(o.csum_offset);
    let covered = frame.get(start..).ok_or(bad)?;
    if at + 2 > frame.len() {
        return Err(bad);
    }
    let c = checksum::data(covered);
    let c = if c == 0 && o.csum_offset == UDP_CSUM_OFFSET {
        0xffff
    } else {
        c
    };
    frame
        .get_mut(at..at + 2)
        .ok_or(bad)?
        .copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Turns one frame (Ethernet, no virtio header) with offload state `o` into wire-ready frames
/// and calls `emit` once for each; returns how many were emitted.
///
/// - Plain frames (`o.is_plain()`): emitted once, unchanged, without copying.
/// - [`GsoKind::None`] with `needs_csum`: copied to `scratch`, checksum completed, emitted.
/// - [`GsoKind::TcpV4`]: cut into segments of at most `gso_size` payload bytes. Each gets the
///   Ethernet, IPv4 (options included) and TCP (options included) headers of the super-frame
///   with: IPv4 total length, ident + i, header checksum recomputed; TCP sequence number
///   advanced by the bytes before it, FIN and PSH only on the last segment, CWR only on the
///   first, full TCP checksum.
/// - [`GsoKind::UdpL4`] (IPv4): cut into datagrams of at most `gso_size` payload bytes, each
///   with its own IPv4 total length, ident + i, header checksum, UDP length and full UDP
///   checksum.
/// - TCP over IPv6 ([`GsoKind::TcpV6`]) is refused with [`OffloadError::Unsupported`].
///
/// A super-frame whose payload fits in one segment (or is empty) gives one frame. `scratch`
/// must hold the largest output frame: the whole frame for `GsoKind::None`, the headers plus
/// `gso_size` bytes for GSO ([`MAX_HEADERS_LEN`] + `gso_size` always suffices). Bytes after
/// the IPv4 total length (Ethernet padding) are dropped from GSO output.
///
/// Errors are detected before the first `emit` call, so a refused frame emits nothing.
pub fn segment(
    frame: &[u8],
    o: &Offload,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    match o.gso {
        GsoKind::None => {
            if !o.needs_csum {
                emit(frame);
                return Ok(1);
            }
            let have = scratch.len();
            let out = scratch
                .get_mut(..frame.len())
                .ok_or(OffloadError::ScratchTooSmall {
                    need: frame.len(),
                    have,
                })?;
            out.copy_from_slice(frame);
            complete_checksum(out, o)?;
            emit(out);
            Ok(1)
        }
        GsoKind::TcpV6 => Err(OffloadError::Unsupported),
        GsoKind::TcpV4 | GsoKind::UdpL4 => segment_v4(frame, o, scratch, &mut emit),
    }
}

/// Where the headers of an IPv4 GSO super-frame end.
struct Layout {
    /// Offset of the transport header (Ethernet + IPv4 header).
    l4: usize,
    /// Offset of the payload (all headers).
    payload: usize,
    /// End of the IPv4 packet (Ethernet + total length).
    end: usize,
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    ident: u16,
    /// TCP only: sequence number and flags of the super-frame.
    seq: u32,
    flags: u8,
}

fn layout_v4(frame: &[u8], gso: GsoKind) -> Result<Layout, OffloadError> {
    let eth = ethernet::Frame::new_checked(frame)?;
    match eth.ethertype() {
        ethertype::IPV4 => {}
        // UDP GSO over IPv6 is legal; it is just not implemented here.
        ethertype::IPV6 => return Err(OffloadError::Unsupported),
        other => return Err(OffloadError::NotIpv4 { ethertype: other }),
    }
    let ip = ipv4::Packet::new_checked(eth.payload())?;
    if ip.is_fragment() {
        return Err(OffloadError::Fragment);
    }
    let want = if gso == GsoKind::TcpV4 {
        protocol::TCP
    } else {
        protocol::UDP
    };
    if ip.protocol() != want {
        return Err(OffloadError::WrongProtocol {
            gso,
            protocol: ip.protocol(),
        });
    }
    let l4 = ethernet::HEADER_LEN + ip.header_len();
    let (l4_len, seq, flags) = if gso == GsoKind::TcpV4 {
        let t = tcp::Packet::new_checked(ip.payload())?;
        (t.header_len(), t.seq(), t.flags())
    } else if ip.payload().len() < udp::HEADER_LEN {
        return Err(crate::Error::Truncated.into());
    } else {
        (udp::HEADER_LEN, 0, 0)
    };
    Ok(Layout {
        l4,
        payload: l4 + l4_len,
        end: ethernet::HEADER_LEN + usize::from(ip.total_len()),
        src: ip.src(),
        dst: ip.dst(),
        ident: ip.ident(),
        seq,
        flags,
    })
}

fn segment_v4(
    frame: &[u8],
    o: &Offload,
    scratch: &mut [u8],
    emit: &mut impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    if o.gso_size == 0 {
        return Err(OffloadError::ZeroGsoSize);
    }
    let mss = usize::from(o.gso_size);
    let lay = layout_v4(frame, o.gso)?;
    // layout_v4 checked payload <= end <= frame.len().
    let headers = frame.get(..lay.payload).ok_or(crate::Error::Truncated)?;
    let payload = frame
        .get(lay.payload..lay.end)
        .ok_or(crate::Error::Truncated)?;
    let need = lay.payload + mss.min(payload.len());
    let have = scratch.len();
    if have < need {
        return Err(OffloadError::ScratchTooSmall { need, have });
    }
    scratch[..lay.payload].copy_from_slice(headers);

    let count = payload.len().div_ceil(mss).max(1);
    for i in 0..count {
        let start = i * mss;
        let chunk = payload
            .get(start..(start + mss).min(payload.len()))
            .unwrap_or(&[]);
        let n = lay.payload + chunk.len();
        let out = &mut scratch[..n];
        out[lay.payload..].copy_from_slice(chunk);

        // Lengths below the super-frame's, which fit in u16.
        let l4_len = u16::try_from(n - lay.l4).map_err(|_| crate::Error::BadTotalLength)?;
        let ip_len =
            u16::try_from(n - ethernet::HEADER_LEN).map_err(|_| crate::Error::BadTotalLength)?;
        // The counters wrap like the kernel's.
        let i16 = (i & 0xffff) as u16;
        {
            let mut ip = ipv4::Packet::new_unchecked(&mut out[ethernet::HEADER_LEN..lay.l4]);
            ip.set_total_len(ip_len);
            ip.set_ident(lay.ident.wrapping_add(i16));
            ip.fill_checksum();
        }
        let seg = &mut out[lay.l4..];
        if o.gso == GsoKind::TcpV4 {
            let mut t = tcp::Packet::new_checked(seg)?;
            // i * mss < 2^16 * 2^16: the offset fits in u32, and sequence numbers wrap.
            t.set_seq(lay.seq.wrapping_add((start & 0xffff_ffff) as u32));
            let mut f = lay.flags;
            if i + 1 < count {
                f &= !(tcp::FIN | tcp::PSH);
            }
            if i > 0 {
                f &= !tcp::CWR;
            }
            t.set_flags(f);
            t.fill_checksum(lay.src, lay.dst);
        } else {
            let mut u = udp::Packet::new_unchecked(seg);
            u.set_len(l4_len);
            u.fill_checksum(lay.src, lay.dst);
        }
        emit(out);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TcpHeader, TransportSlice};
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    static UDP_CSUM_PARTIAL: &[u8] = include_bytes!("../tests/data/udp_csum_partial.vnet");
    static UDP_GSO_3500: &[u8] = include_bytes!("../tests/data/udp_gso_3500.vnet");
    static TCP_SYN_CSUM_PARTIAL: &[u8] = include_bytes!("../tests/data/tcp_syn_csum_partial.vnet");
    static TCP_GSO_7240: &[u8] = include_bytes!("../tests/data/tcp_gso_7240.vnet");
    static TCP_GSO_7240_B: &[u8] = include_bytes!("../tests/data/tcp_gso_7240_b.vnet");
    static TCP_GSO_5520: &[u8] = include_bytes!("../tests/data/tcp_gso_5520.vnet");
    /// Initial sequence number of the captured client (its SYN).
    const CLIENT_ISN: u32 = 0x17e5cb67;

    /// What etherparse sees in one emitted frame.
    #[derive(Debug)]
    struct Checked {
        ident: u16,
        ip_total: u16,
        seq: u32,
        fin: bool,
        psh: bool,
        cwr: bool,
        ece: bool,
        ack: bool,
        udp_len: u16,
        payload: Vec<u8>,
    }

    /// Parses `frame` with etherparse and asserts that the IPv4 header checksum and the
    /// TCP/UDP checksum are right (recomputed by etherparse, not by us).
    fn judge(frame: &[u8]) -> Checked {
        let s = SlicedPacket::from_ethernet(frame).expect("etherparse slices the frame");
        let Some(NetSlice::Ipv4(ip)) = &s.net else {
            panic!("not IPv4")
        };
        let h = ip.header().to_header();
        assert_eq!(
            h.calc_header_checksum(),
            h.header_checksum,
            "IPv4 header checksum"
        );
        assert_eq!(
            usize::from(h.total_len) + 14,
            frame.len(),
            "IPv4 total length"
        );
        let (src, dst) = (h.source, h.destination);
        let mut c = Checked {
            ident: h.identification,
            ip_total: h.total_len,
            seq: 0,
            fin: false,
            psh: false,
            cwr: false,
            ece: false,
            ack: false,
            udp_len: 0,
            payload: Vec::new(),
        };
        match s.transport {
            Some(TransportSlice::Tcp(t)) => {
                assert_eq!(
                    t.calc_checksum_ipv4(src, dst).unwrap(),
                    t.checksum(),
                    "TCP checksum"
                );
                c.seq = t.sequence_number();
                c.fin = t.fin();
                c.psh = t.psh();
                c.cwr = t.cwr();
                c.ece = t.ece();
                c.ack = t.ack();
                c.payload = t.payload().to_vec();
            }
            Some(TransportSlice::Udp(u)) => {
                let hdr = u.to_header();
                assert_ne!(u.checksum(), 0, "UDP checksum present");
                assert_eq!(
                    hdr.calc_checksum_ipv4_raw(src, dst, u.payload()).unwrap(),
                    u.checksum(),
                    "UDP checksum"
                );
                assert_eq!(usize::from(u.length()), 8 + u.payload().len(), "UDP length");
                c.udp_len = u.length();
                c.payload = u.payload().to_vec();
            }
            other => panic!("unexpected transport {other:?}"),
        }
        c
    }

    fn run(frame: &[u8], o: &Offload) -> Result<Vec<Vec<u8>>, OffloadError> {
        let mut scratch = vec![0u8; 70_000];
        let mut out = Vec::new();
        let n = segment(frame, o, &mut scratch, |f| out.push(f.to_vec()))?;
        assert_eq!(n, out.len(), "returned count equals emit calls");
        Ok(out)
    }

    fn split(capture: &[u8]) -> (Offload, &[u8]) {
        let o = parse_vnet_hdr(capture).unwrap();
        assert_eq!(
            emit_vnet_hdr(&o),
            capture[..VNET_HDR_LEN],
            "vnet header round trip"
        );
        (o, &capture[VNET_HDR_LEN..])
    }

    #[test]
    fn real_udp_checksum_partial() {
        let (o, frame) = split(UDP_CSUM_PARTIAL);
        assert_eq!(
            o,
            Offload {
                needs_csum: true,
                data_valid: false,
                csum_start: 34,
                csum_offset: 6,
                gso: GsoKind::None,
                gso_size: 0,
                hdr_len: 0,
            }
        );
        let out = run(frame, &o).unwrap();
        assert_eq!(out.len(), 1);
        let c = judge(&out[0]);
        assert_eq!(c.payload, b"hello sluice");
        // Only the two checksum bytes changed.
        let diff: Vec<usize> = (0..frame.len())
            .filter(|&i| frame[i] != out[0][i])
            .collect();
        assert_eq!(diff, vec![40, 41]);
        // complete_checksum in place gives the same bytes.
        let mut f = frame.to_vec();
        complete_checksum(&mut f, &o).unwrap();
        assert_eq!(f, out[0]);
    }

    #[test]
    fn real_tcp_syn_checksum_partial() {
        let (o, frame) = split(TCP_SYN_CSUM_PARTIAL);
        assert!(o.needs_csum && o.gso == GsoKind::None && o.csum_offset == 16);
        let out = run(frame, &o).unwrap();
        assert_eq!(out.len(), 1);
        let c = judge(&out[0]);
        assert_eq!(c.seq, CLIENT_ISN);
        assert!(!c.ack);
    }

    /// Checks a captured TCP super-frame: segment sizes, checksums, sequence numbers,
    /// identifiers, flags, and the payload against the known stream pattern.
    fn check_real_tcp(capture: &[u8], expect_sizes: &[usize], psh: bool) {
        let (o, frame) = split(capture);
        assert_eq!(o.gso, GsoKind::TcpV4);
        assert_eq!(
            (o.gso_size, o.hdr_len, o.csum_start, o.csum_offset),
            (1448, 66, 34, 16)
        );
        let orig = ipv4::Packet::new_checked(&frame[14..]).unwrap();
        let ident0 = orig.ident();
        let seq0 = tcp::Packet::new_checked(orig.payload()).unwrap().seq();
        let out = run(frame, &o).unwrap();
        let sizes: Vec<usize> = out.iter().map(|f| f.len() - 66).collect();
        assert_eq!(sizes, expect_sizes);
        let mut seq = seq0;
        for (i, f) in out.iter().enumerate() {
            let c = judge(f);
            assert_eq!(c.ident, ident0.wrapping_add(i as u16));
            assert_eq!(c.seq, seq);
            assert!(c.ack && !c.fin && !c.cwr);
            assert_eq!(
                c.psh,
                psh && i + 1 == out.len(),
                "PSH only on the last segment"
            );
            for (k, b) in c.payload.iter().enumerate() {
                let stream_off = seq.wrapping_sub(CLIENT_ISN + 1) as usize + k;
                assert_eq!(
                    *b,
                    (stream_off * 7 % 256) as u8,
                    "payload byte {stream_off}"
                );
            }
            seq = seq.wrapping_add(c.payload.len() as u32);
            // Headers other than the patched fields are the super-frame's.
            assert_eq!(f[..16], frame[..16]);
            assert_eq!(f[20..24], frame[20..24]); // flags/fragment, TTL, protocol
            assert_eq!(f[26..38], frame[26..38]); // addresses, ports
            assert_eq!(f[42..47], frame[42..47]); // ack number, data offset
            assert_eq!(f[52..66], frame[52..66]); // urgent pointer, options
        }
    }

    #[test]
    fn real_tcp_gso_frames() {
        check_real_tcp(TCP_GSO_7240, &[1448; 5], true);
        check_real_tcp(TCP_GSO_7240_B, &[1448; 5], true);
        check_real_tcp(TCP_GSO_5520, &[1448, 1448, 1448, 1176], true);
    }

    #[test]
    fn real_udp_gso_frame() {
        let (o, frame) = split(UDP_GSO_3500);
        assert_eq!((o.gso, o.gso_size, o.hdr_len), (GsoKind::UdpL4, 1000, 42));
        let ident0 = ipv4::Packet::new_checked(&frame[14..]).unwrap().ident();
        let out = run(frame, &o).unwrap();
        assert_eq!(out.len(), 4);
        let mut all = Vec::new();
        for (i, f) in out.iter().enumerate() {
            let c = judge(f);
            assert_eq!(c.ident, ident0.wrapping_add(i as u16));
            let want = if i < 3 { 1000 } else { 500 };
            assert_eq!(c.payload.len(), want);
            assert_eq!(c.udp_len as usize, 8 + want);
            assert_eq!(c.ip_total as usize, 28 + want);
            all.extend(c.payload);
        }
        let expect: Vec<u8> = (0..3500).map(|i| (i % 251) as u8).collect();
        assert_eq!(all, expect);
    }

    #[test]
    fn plain_frame_is_emitted_unchanged_without_scratch() {
        let (_, frame) = split(UDP_CSUM_PARTIAL);
        let mut got = Vec::new();
        let n = segment(frame, &Offload::default(), &mut [], |f| {
            got.push(f.to_vec())
        })
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(got, vec![frame.to_vec()]);
        // data_valid alone is still plain.
        let o = Offload {
            data_valid: true,
            ..Offload::default()
        };
        assert_eq!(segment(frame, &o, &mut [], |_| {}), Ok(1));
    }

    #[test]
    fn vnet_header_errors_and_flags() {
        assert_eq!(
            parse_vnet_hdr(&[1, 0, 0]),
            Err(OffloadError::VnetTruncated { len: 3 })
        );
        let mut h = [0u8; 10];
        h[1] = vnet::GSO_UDP;
        h[4] = 100;
        assert_eq!(parse_vnet_hdr(&h), Err(OffloadError::BadGsoType(3)));
        h[1] = 2;
        assert_eq!(parse_vnet_hdr(&h), Err(OffloadError::BadGsoType(2)));
        h[1] = vnet::GSO_TCPV4 | vnet::GSO_ECN;
        assert_eq!(parse_vnet_hdr(&h).unwrap().gso, GsoKind::TcpV4);
        h[4] = 0;
        assert_eq!(parse_vnet_hdr(&h), Err(OffloadError::ZeroGsoSize));
        h = [
            vnet::F_DATA_VALID | 0x40,
            vnet::GSO_NONE,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        let o = parse_vnet_hdr(&h).unwrap();
        assert!(o.data_valid && !o.needs_csum && o.is_plain());
        assert_eq!(
            OffloadError::BadGsoType(3).to_string(),
            "unsupported virtio_net_hdr gso_type 0x03 (UFO and unknown types are refused)"
        );
    }

    #[test]
    fn refusals() {
        let (o, frame) = split(TCP_GSO_7240);
        let v6 = Offload {
            gso: GsoKind::TcpV6,
            ..o
        };
        assert_eq!(run(frame, &v6), Err(OffloadError::Unsupported));
        // Too small a scratch buffer: refused before emitting anything.
        let mut small = [0u8; 1000];
        let mut calls = 0;
        assert_eq!(
            segment(frame, &o, &mut small, |_| calls += 1),
            Err(OffloadError::ScratchTooSmall {
                need: 66 + 1448,
                have: 1000
            })
        );
        assert_eq!(calls, 0);
        // The TCP frame claimed as UDP GSO.
        let u = Offload {
            gso: GsoKind::UdpL4,
            ..o
        };
        assert_eq!(
            run(frame, &u),
            Err(OffloadError::WrongProtocol {
                gso: GsoKind::UdpL4,
                protocol: 6
            })
        );
        let mut f = frame.to_vec();
        f[12] = 0x81;
        assert_eq!(
            run(&f, &o),
            Err(OffloadError::NotIpv4 { ethertype: 0x8100 })
        );
        let mut f = frame.to_vec();
        f[20] |= 0x20; // more fragments
        assert_eq!(run(&f, &o), Err(OffloadError::Fragment));
        let mut f = frame.to_vec();
        f[14 + 20 + 12] = 0x40; // TCP data offset 4
        assert_eq!(
            run(&f, &o),
            Err(OffloadError::Malformed(crate::Error::BadDataOffset))
        );
        assert_eq!(
            run(&frame[..100], &o),
            Err(OffloadError::Malformed(crate::Error::BadTotalLength))
        );
        assert_eq!(
            run(&frame[..30], &o),
            Err(OffloadError::Malformed(crate::Error::Truncated))
        );
        let z = Offload { gso_size: 0, ..o };
        assert_eq!(run(frame, &z), Err(OffloadError::ZeroGsoSize));
        // Checksum offsets outside the frame.
        let (c, small_frame) = split(UDP_CSUM_PARTIAL);
        let bad = Offload {
            csum_offset: 20,
            ..c
        };
        let len = small_frame.len();
        assert_eq!(
            run(small_frame, &bad),
            Err(OffloadError::BadCsumOffsets {
                start: 34,
                offset: 20,
                len
            })
        );
        let bad = Offload {
            csum_start: 200,
            ..c
        };
        assert!(matches!(
            run(small_frame, &bad),
            Err(OffloadError::BadCsumOffsets { .. })
        ));
        let mut f = small_frame.to_vec();
        assert!(complete_checksum(&mut f, &bad).is_err());
        assert_eq!(f, small_frame, "a refused frame is left untouched");
    }

    /// Builds an Ethernet/IPv4/TCP super-frame with etherparse, then puts the pseudo-header sum
    /// into the checksum field as the kernel does for CHECKSUM_PARTIAL.
    fn tcp_superframe(
        payload: &[u8],
        seq: u32,
        flags: u8,
        tcp_opt_words: usize,
        ip_opt_words: usize,
    ) -> Vec<u8> {
        let mut t = TcpHeader::new(40000, 80, seq, 5000);
        t.fin = flags & tcp::FIN != 0;
        t.psh = flags & tcp::PSH != 0;
        t.cwr = flags & tcp::CWR != 0;
        t.ece = flags & tcp::ECE != 0;
        t.ack = true;
        t.acknowledgment_number = 0x01020304;
        t.set_options_raw(&vec![1u8; tcp_opt_words * 4]).unwrap();
        let mut ip = etherparse::Ipv4Header::new(
            0,
            64,
            etherparse::IpNumber::TCP,
            [10, 0, 0, 1],
            [10, 0, 1, 2],
        )
        .unwrap();
        ip.identification = 0xfffe;
        ip.dont_fragment = true;
        ip.options = etherparse::Ipv4Options::try_from(&vec![1u8; ip_opt_words * 4][..]).unwrap();
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
            .tcp_header(t);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        let l4 = 14 + 20 + ip_opt_words * 4;
        let tcp_len = (v.len() - l4) as u16;
        let pseudo = !checksum::fold(checksum::pseudo_v4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 1, 2),
            6,
            tcp_len,
        ));
        v[l4 + 16..l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
        v
    }

    fn udp_superframe(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 1, 2], 64)
            .udp(5353, 53);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    fn tcp_offload(frame: &[u8], mss: u16) -> Offload {
        let l4 = 14 + usize::from(frame[14] & 0xf) * 4;
        Offload {
            needs_csum: true,
            data_valid: false,
            csum_start: l4 as u16,
            csum_offset: 16,
            gso: GsoKind::TcpV4,
            gso_size: mss,
            // A deliberately wrong hint: segment must not use it.
            hdr_len: 54,
        }
    }

    #[test]
    fn empty_and_exact_payloads() {
        let f = tcp_superframe(&[], 7, tcp::FIN | tcp::PSH | tcp::CWR, 0, 0);
        let out = run(&f, &tcp_offload(&f, 100)).unwrap();
        assert_eq!(out.len(), 1);
        let c = judge(&out[0]);
        assert!(c.fin && c.psh && c.cwr && c.payload.is_empty());
        let f = tcp_superframe(&[9; 300], 7, tcp::FIN, 0, 0);
        let out = run(&f, &tcp_offload(&f, 100)).unwrap();
        assert_eq!(out.len(), 3);
        let seqs: Vec<u32> = out.iter().map(|f| judge(f).seq).collect();
        assert_eq!(seqs, vec![7, 107, 207]);
    }

    #[test]
    fn sequence_and_ident_wrap() {
        let f = tcp_superframe(&[1; 30], u32::MAX - 5, 0, 0, 0);
        let out = run(&f, &tcp_offload(&f, 10)).unwrap();
        let got: Vec<(u32, u16)> = out
            .iter()
            .map(|f| judge(f))
            .map(|c| (c.seq, c.ident))
            .collect();
        assert_eq!(got, vec![(u32::MAX - 5, 0xfffe), (4, 0xffff), (14, 0)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn tcp_segmentation_properties(len in 0usize..20_000, mss in 1u16..3000, seq in any::<u32>(),
                                       flags in any::<u8>(), tcp_opt in 0usize..=10, ip_opt in 0usize..=10,
                                       fill in any::<u8>()) {
            let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(fill)).collect();
            let flags = flags & (tcp::FIN | tcp::PSH | tcp::CWR | tcp::ECE);
            let f = tcp_superframe(&payload, seq, flags, tcp_opt, ip_opt);
            let out = run(&f, &tcp_offload(&f, mss)).unwrap();
            let expect_n = len.div_ceil(usize::from(mss)).max(1);
            prop_assert_eq!(out.len(), expect_n);
            let mut all = Vec::new();
            let mut next_seq = seq;
            for (i, frame) in out.iter().enumerate() {
                let c = judge(frame);
                let last = i + 1 == out.len();
                prop_assert!(c.payload.len() <= usize::from(mss));
                prop_assert!(last || c.payload.len() == usize::from(mss));
                prop_assert_eq!(c.seq, next_seq);
                prop_assert_eq!(c.ident, 0xfffeu16.wrapping_add(i as u16));
                prop_assert_eq!(c.fin, last && flags & tcp::FIN != 0);
                prop_assert_eq!(c.psh, last && flags & tcp::PSH != 0);
                prop_assert_eq!(c.cwr, i == 0 && flags & tcp::CWR != 0);
                prop_assert_eq!(c.ece, flags & tcp::ECE != 0);
                prop_assert!(c.ack);
                next_seq = next_seq.wrapping_add(c.payload.len() as u32);
                all.extend(c.payload);
            }
            prop_assert_eq!(all, payload);
        }

        #[test]
        fn udp_segmentation_properties(len in 0usize..20_000, size in 1u16..3000) {
            let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let f = udp_superframe(&payload);
            let o = Offload { needs_csum: true, csum_start: 34, csum_offset: 6, gso: GsoKind::UdpL4,
                              gso_size: size, ..Offload::default() };
            let out = run(&f, &o).unwrap();
            prop_assert_eq!(out.len(), len.div_ceil(usize::from(size)).max(1));
            let mut all = Vec::new();
            for frame in &out {
                let c = judge(frame);
                prop_assert!(c.payload.len() <= usize::from(size));
                all.extend(c.payload);
            }
            prop_assert_eq!(all, payload);
        }

        #[test]
        fn vnet_round_trip(needs_csum in any::<bool>(), data_valid in any::<bool>(), gso in 0u8..4,
                           gso_size in 1u16.., hdr_len in any::<u16>(), csum_start in any::<u16>(),
                           csum_offset in any::<u16>()) {
            let gso = [GsoKind::None, GsoKind::TcpV4, GsoKind::TcpV6, GsoKind::UdpL4][usize::from(gso)];
            let o = Offload { needs_csum, data_valid, csum_start, csum_offset, gso, gso_size, hdr_len };
            prop_assert_eq!(parse_vnet_hdr(&emit_vnet_hdr(&o)), Ok(o));
        }

        /// Fuzz-style: random headers and random frames never panic.
        #[test]
        fn random_input_never_panics(h in any::<[u8; 10]>(),
                                     frame in proptest::collection::vec(any::<u8>(), 0..300),
                                     scratch_len in 0usize..400) {
            let _ = parse_vnet_hdr(&h);
            let _ = parse_vnet_hdr(&frame);
            let o = Offload {
                needs_csum: h[0] & 1 != 0,
                data_valid: h[0] & 2 != 0,
                csum_start: u16::from(h[1]),
                csum_offset: u16::from(h[2]),
                gso: [GsoKind::None, GsoKind::TcpV4, GsoKind::TcpV6, GsoKind::UdpL4][usize::from(h[3] & 3)],
                gso_size: u16::from_le_bytes([h[4], h[5] & 0x7]),
                hdr_len: u16::from_le_bytes([h[6], h[7]]),
            };
            let mut scratch = vec![0u8; scratch_len];
            let mut emitted = 0;
            let r = segment(&frame, &o, &mut scratch, |f| { emitted += 1; assert!(f.len() <= frame.len().max(scratch_len)); });
            if let Ok(n) = r { prop_assert_eq!(n, emitted); } else { prop_assert_eq!(emitted, 0); }
            let mut f = frame.clone();
            let _ = complete_checksum(&mut f, &o);
            // Every header view on the same bytes.
            let _ = crate::ethernet::Frame::new_checked(&frame[..]);
            let _ = crate::arp::Packet::new_checked(&frame[..]);
            let _ = crate::ipv4::Packet::new_checked(&frame[..]);
            let _ = crate::icmpv4::Packet::new_checked(&frame[..]);
            let _ = crate::udp::Packet::new_checked(&frame[..]);
            let _ = crate::tcp::Packet::new_checked(&frame[..]);
        }

        /// Fuzz-style on structure: a valid super-frame with random bytes overwritten, random
        /// gso_size, a random cut, never panics; a success still gives frames etherparse accepts
        /// with valid checksums.
        #[test]
        fn mutated_superframes_never_panic(len in 0usize..4000, mss in 1u16..2000, cut in any::<usize>(),
                                           muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
                                           udp in any::<bool>()) {
            let payload = vec![0x5a; len];
            let mut f = if udp { udp_superframe(&payload) } else { tcp_superframe(&payload, 1, tcp::PSH, 3, 1) };
            for (at, v) in muts {
                // Mostly in the headers, where it matters.
                let at = at % f.len().min(80);
                f[at] = v;
            }
            let cut = f.len() - cut % (f.len().min(60) + 1);
            let f = &f[..cut];
            let o = Offload { gso: if udp { GsoKind::UdpL4 } else { GsoKind::TcpV4 }, gso_size: mss, ..Offload::default() };
            let mut scratch = vec![0u8; 4200];
            let mut frames = Vec::new();
            if segment(f, &o, &mut scratch, |s| frames.push(s.to_vec())).is_ok() {
                for s in &frames {
                    // Our own views agree the output is well-formed and checksummed.
                    let ip = ipv4::Packet::new_checked(&s[14..]).unwrap();
                    prop_assert!(ip.verify_checksum());
                    prop_assert_eq!(usize::from(ip.total_len()) + 14, s.len());
                    if udp {
                        let u = udp::Packet::new_checked(ip.payload()).unwrap();
                        prop_assert!(u.verify_checksum(ip.src(), ip.dst()));
                    } else {
                        let t = tcp::Packet::new_checked(ip.payload()).unwrap();
                        prop_assert!(t.verify_checksum(ip.src(), ip.dst()));
                    }
                }
            }
        }
    }

    /// A checksum that computes to zero: TCP keeps 0x0000, UDP sends 0xffff (0 = none).
    #[test]
    fn zero_result_is_mangled_for_udp_only() {
        for (offset, want) in [(16u16, 0x0000u16), (6, 0xffff)] {
            // Covered bytes: a 20-byte "header" whose checksum field (at `offset`) is 0, then
            // two bytes chosen so that everything sums to 0xffff (negative zero).
            let mut frame = vec![0u8; 14 + 22];
            for (i, b) in frame[14..34].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(37);
            }
            frame[14 + usize::from(offset)..14 + usize::from(offset) + 2].fill(0);
            let partial = crate::checksum::sum(&frame[14..34]);
            let fill = 0xffff - partial;
            frame[34..36].copy_from_slice(&(fill as u16).to_be_bytes());
            let o = Offload {
                needs_csum: true,
                csum_start: 14,
                csum_offset: offset,
                ..Offload::default()
            };
            complete_checksum(&mut frame, &o).unwrap();
            let at = 14 + usize::from(offset);
            assert_eq!(
                u16::from_be_bytes([frame[at], frame[at + 1]]),
                want,
                "csum_offset {offset}"
            );
        }
    }
}
