//! Wire formats of sluice: Ethernet, ARP, IPv4, ICMPv4, UDP, TCP, Internet checksums, and the
//! completion of checksum / segmentation offload (`virtio_net_hdr`). No I/O, no allocation,
//! no `unsafe`.
//!
//! # What this crate owns
//! - [`checksum`]: the RFC 1071 Internet checksum (fast partial sums, folding, pseudo-headers,
//!   RFC 1624 incremental updates).
//! - [`ethernet`], [`arp`], [`ipv4`], [`icmpv4`], [`udp`], [`tcp`]: zero-copy views over
//!   caller-owned buffers, in the style of smoltcp's `wire` module.
//! - [`offload`]: parsing and emitting `struct virtio_net_hdr`, completing a partial transport
//!   checksum and cutting TCP/UDP GSO super-frames into wire-ready frames.
//! - [`vxlan`] (RFC 7348) and [`udp_encap`] (flannel's UDP mode): encapsulation written into
//!   the headroom in front of an inner frame, all outer checksums computed in software, and
//!   decapsulation that names every reason it refuses a frame; [`flow`]: the inner-flow hash
//!   that picks the outer UDP source port.
//!
//! # What it promises
//! - Every view is a `Packet<T: AsRef<[u8]>>` (Ethernet: `Frame<T>`) built with `new_checked`,
//!   which validates the lengths once. **When parsing untrusted input it is necessary to use
//!   `new_checked`**: afterwards no accessor can panic, whatever the bytes say, even after
//!   length fields are changed through setters (payload accessors clamp to the buffer).
//!   `new_unchecked` skips the validation for buffers the caller built itself; accessors on a
//!   too-short unchecked buffer panic.
//! - Setters exist only when `T: AsMut<[u8]>`; they never change the buffer's length.
//! - Checksums are never verified implicitly: parsing a packet with a bad checksum succeeds and
//!   each view offers `verify_checksum` so that the caller can count that case separately.
//! - `Repr::emit` writes into a caller-provided buffer and panics only when that buffer is
//!   shorter than the documented length (a programming error, not bad input).
//! - Offload functions ([`offload::segment`], [`offload::complete_checksum`],
//!   [`offload::parse_vnet_hdr`]) return an [`offload::OffloadError`] for every malformed input
//!   and never panic: they run on frames sent by pods.
//!
//! # Errors
//! One shared [`Error`] enum covers every header view; each protocol module re-exports it as
//! `module::Error` (so `encap::ipv4::Error::BadIhl` and `encap::Error::BadIhl` are the same
//! value). The variants are distinct so that the engine can count each reason separately.
//! [`offload`] has its own [`offload::OffloadError`].
#![forbid(unsafe_code)]

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod flow;
pub mod icmpv4;
pub mod ipv4;
pub mod offload;
pub mod tcp;
pub mod udp;
pub mod udp_encap;
pub mod vxlan;

/// Why a header view refused a buffer (`new_checked`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the protocol's fixed header.
    #[error("buffer shorter than the fixed header")]
    Truncated,
    /// IPv4: the version nibble is not 4.
    #[error("IPv4 version field is not 4")]
    BadVersion,
    /// IPv4: the IHL field is below 5 (20 bytes).
    #[error("IPv4 header length (IHL) below 5 words")]
    BadIhl,
    /// IPv4: IHL * 4 is larger than the buffer.
    #[error("IPv4 header length (IHL) exceeds the buffer")]
    HeaderTruncated,
    /// IPv4: total length smaller than the header or larger than the buffer.
    #[error("IPv4 total length smaller than the header or larger than the buffer")]
    BadTotalLength,
    /// ARP: not Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4).
    #[error("ARP packet is not Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4)")]
    UnsupportedArp,
    /// TCP: data offset below 5 words or beyond the buffer.
    #[error("TCP data offset below 5 words or beyond the buffer")]
    BadDataOffset,
    /// UDP: length field below 8 or larger than the buffer.
    #[error("UDP length field below 8 or larger than the buffer")]
    BadUdpLength,
}
