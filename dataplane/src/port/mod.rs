//! Ports: where frames enter and leave the engine.
//!
//! Every port offers the same small batch interface ([`Port`]): receive a burst of frames into a
//! [`Batch`], transmit a burst of frames chosen by index from a batch. Kinds:
//! - [`afpacket`]: AF_PACKET on a named interface, memory-mapped RX ring (TPACKET_V2 or V3),
//!   batched TX with `sendmmsg`, `PACKET_VNET_HDR` so offloaded veth frames keep their shape;
//! - [`tap`]: a TAP device the engine creates (and may move into a pod's namespace);
//! - [`memory`]: in-memory queues, for tests and benchmarks without root;
//! - [`pcap`]: replay a capture file as received frames / write transmitted frames to one.
//!
//! `unsafe` lives only in [`afpacket`] and [`tap`] (rings, ioctls, netlink), each block explained.

use std::io;
use std::os::fd::RawFd;

use crate::packet::{Batch, PacketBuf, PortId};

pub mod afpacket;
pub mod memory;
pub mod pcap;
pub mod tap;

/// A 48-bit Ethernet address.
pub type Mac = [u8; 6];

/// What a transmit burst did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxResult {
    /// Frames handed to the device (a GSO super-frame segmented in software counts once).
    pub sent: usize,
    /// Frames that could not be sent (device full, error): the caller counts them as drops.
    pub dropped: usize,
}

/// The batch receive/transmit interface every port implements.
pub trait Port: Send {
    /// Interface name (for counters and logs).
    fn name(&self) -> &str;

    /// The MAC address the engine uses as its own on this port (the gateway MAC pods see).
    fn mac(&self) -> Mac;

    /// Append received frames to `batch` until it is full or nothing more is waiting.
    /// Sets each frame's `meta.offload` (and `meta.in_port` to `id`). Never blocks.
    /// Returns how many frames were appended.
    fn rx_burst(&mut self, id: PortId, batch: &mut Batch) -> io::Result<usize>;

    /// Transmit the frames `batch[i]` for each `i` in `idx`. Frames whose `meta.offload` is not
    /// plain are handed on as they are if the device accepts offloads, otherwise completed in
    /// software first (checksum computed, super-frame segmented). Never blocks.
    fn tx_burst(&mut self, batch: &Batch, idx: &[u16]) -> TxResult;

    /// File descriptor to wait on for readability, if the port has one (memory/pcap ports don't).
    fn raw_fd(&self) -> Option<RawFd>;

    /// Frames that the device itself dropped since the last call (e.g. ring full:
    /// `PACKET_STATISTICS.tp_drops`). Ports that cannot tell return 0.
    fn take_device_drops(&mut self) -> u64 {
        0
    }
}

/// A locally administered unicast MAC derived from a port name (FNV-1a), stable across
/// restarts, for ports that have no hardware address of their own (TAP, pcap, memory).
pub fn derived_mac(name: &str) -> Mac {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    // 0x02: locally administered, unicast.
    [0x02, b[1], b[2], b[3], b[4], b[5]]
}

/// Hand one frame to `send`, first completing in software whatever offload work it carries
/// (checksum, GSO segmentation) for ports whose device cannot. True if every resulting frame
/// was sent; a frame whose offload state does not parse is not sent.
pub fn send_completed(
    pkt: &PacketBuf,
    scratch: &mut [u8],
    mut send: impl FnMut(&[u8]) -> bool,
) -> bool {
    if pkt.meta.offload.is_plain() {
        return send(pkt.data());
    }
    let mut all_ok = true;
    let seg = encap::offload::segment(pkt.data(), &pkt.meta.offload, scratch, |f| {
        if all_ok {
            all_ok = send(f);
        }
    });
    seg.is_ok() && all_ok
}
