//! pktgen: sluice's own packet generator and receiver (the kernel's pktgen module is not
//! available here).
//!
//! Owns: the generator ([`generate`], [`Generator`]), which sends prebuilt frames on an
//! AF_PACKET socket with `sendmmsg`, paced or as fast as possible (measured against a
//! `PACKET_TX_RING`: see `tx.rs`); the receiver ([`receive`], [`Receiver`]), which reads a
//! TPACKET_V2 `PACKET_RX_RING`, checks sequence numbers and measures one-way latency into an
//! HDR histogram; and the wire format they share (the [trailer](#the-trailer), the flows).
//!
//! # Promises
//! - No allocation and no per-packet syscall on the generator's path: the frame template is
//!   copied into each of the burst's buffers once; per packet only the varying fields (source
//!   address and port, sequence number, timestamp) and the checksums are written, and one
//!   `sendmmsg` sends a burst. Checksums come from partial sums precomputed over the
//!   template, so stamping a 1500-byte frame costs no more than a 64-byte one. Every checksum is complete and correct: the IPv4 header, the UDP or TCP
//!   checksum, and for VXLAN the inner ones and the outer UDP checksum (nothing is left to an
//!   offload).
//! - The receiver allocates only when it is opened (ring, sequence window, histogram, flow
//!   set); per frame it parses with bounds-checked reads and never panics on any input.
//! - Both run in the calling thread, in the calling thread's network namespace (enter one with
//!   [`crate::testbed::Netns::run`]). A [`Generator`] or [`Receiver`] opened in a namespace
//!   keeps its socket there and may be moved to another thread.
//!
//! # The trailer
//! Every frame carries 16 bytes at the start of its (innermost) UDP or TCP payload, all
//! big-endian: `magic: u32` ([`MAGIC`], "SLPG"), `seq: u32`, `tx_ns: u64`.
//! - `seq` is **global**: the generator numbers every frame it sends, across all flows, from
//!   0. It is 32 bits on the wire so that the whole trailer fits a 60-byte UDP frame (42 bytes
//!   of headers + 18 of payload); the receiver extends it to 64 bits (RFC 3550 style, relative
//!   to the highest number seen), which is exact as long as loss and reordering stay below
//!   2^31 frames.
//! - `tx_ns` is `CLOCK_MONOTONIC` in nanoseconds, read once per burst just before the burst
//!   is stamped and handed to the kernel. The receiver takes the arrival time on the same
//!   clock (see `rx.rs`: the kernel's receive time, converted): generator and receiver must
//!   run on the same machine (any namespaces, any processes).
//!
//! Frame sizes are Ethernet frames without FCS, `60..=9000` bytes; the smallest that holds the
//! trailer is [`min_frame_size`]: 60 for UDP, 70 for TCP SYN (54 bytes of headers), 108 for
//! VXLAN (50 bytes of outer headers around a 58-byte inner UDP frame). The rest of the payload
//! is zeros.
//!
//! # Flows
//! A flow is numbered `f` ([`FlowPattern`]: always 0; the frame's sequence number; or
//! `seq % n`). Flow `f` has source port `1024 + f % 64512` and, from flow 64512 on, a source
//! address that walks the hosts of the `/16` holding `src_ip`: host part `h0, h0+1, ...,
//! x.x.255.254, x.x.0.1, ...` where `h0` is `src_ip`'s (64512 x 65534, about 4.2 billion
//! distinct flows before they repeat). Topologies that route or filter on the source must
//! accept the whole `/16` (for instance `10.1.0.0/16` routed back towards the generator).
//! For VXLAN the inner packet carries the flow and the outer source port is
//! [`encap::vxlan::source_port`] of the inner frame, as Linux does.

#![warn(clippy::undocumented_unsafe_blocks)]

mod rx;
mod tx;
mod wire;

use std::net::Ipv4Addr;
use std::time::Duration;

pub use rx::{receive, Receiver, RecvConfig, RecvReport, FLOW_TRACK_MAX, SEQ_WINDOW};
pub use tx::{generate, GenReport, Generator, BURST, CATCHUP_MAX};
pub use wire::{
    flow_addr, flow_index, flow_port, min_frame_size, parse, Seen, Template, MAGIC, SRC_PORTS,
    SRC_PORT_BASE, TRAILER_LEN,
};

/// Smallest accepted `frame_size` (a minimum Ethernet frame without FCS).
pub const MIN_FRAME: usize = 60;
/// Largest accepted `frame_size` (a jumbo frame; the interface's MTU must allow it).
pub const MAX_FRAME: usize = 9000;

/// Which flows the generator's frames belong to (see the module header for the mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowPattern {
    /// Every frame in one flow.
    One,
    /// A new flow for every frame (flow number = sequence number).
    NewPerPacket,
    /// `n` flows (n >= 1), one frame each in turn.
    RoundRobin(u32),
}

/// What the generator sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// UDP to `dst_ip:dst_port`.
    Udp,
    /// TCP SYN to `dst_ip:dst_port`, the trailer as SYN payload (constant ISN, window 65535).
    TcpSyn,
    /// The UDP frame of [`Proto::Udp`] (inner MACs `src_mac` -> `dst_mac`) encapsulated in
    /// VXLAN: outer `src_mac` -> `outer_dst_mac`, `outer_src` -> `outer_dst`, UDP port `port`,
    /// outer UDP checksum computed.
    Vxlan {
        vni: u32,
        outer_src: Ipv4Addr,
        outer_dst: Ipv4Addr,
        outer_dst_mac: [u8; 6],
        port: u16,
    },
}

/// How to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenConfig {
    /// Interface to send on (in the calling thread's namespace).
    pub ifname: String,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub dst_port: u16,
    /// Ethernet frame size without FCS, [`MIN_FRAME`]`..=`[`MAX_FRAME`] and at least
    /// [`min_frame_size`] of the protocol (for VXLAN: the outer frame).
    pub frame_size: usize,
    /// Frames per second; `None` = as fast as possible.
    pub rate_pps: Option<u64>,
    /// Stop after this long ...
    pub duration: Duration,
    /// ... or after this many frames, whichever comes first.
    pub count: Option<u64>,
    pub flows: FlowPattern,
    pub proto: Proto,
}

/// Why a [`GenConfig`] is refused (returned inside an `io::Error` of kind `InvalidInput`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("frame_size {size} is outside {MIN_FRAME}..={MAX_FRAME}")]
    FrameSize { size: usize },
    #[error("frame_size {size} is too small for {proto}: at least {min} bytes are needed for its headers and the 16-byte trailer")]
    TooSmallForProto {
        size: usize,
        proto: &'static str,
        min: usize,
    },
    #[error("FlowPattern::RoundRobin(0): at least one flow is needed")]
    NoFlows,
    #[error("rate_pps 0: use a positive rate, or None for as fast as possible")]
    ZeroRate,
    #[error("VXLAN VNI {vni} does not fit in 24 bits")]
    Vni { vni: u32 },
    #[error(
        "frame_size {size} exceeds what {ifname} can send: MTU {mtu} + 14-byte Ethernet header"
    )]
    AboveMtu {
        size: usize,
        ifname: String,
        mtu: usize,
    },
}

impl From<ConfigError> for std::io::Error {
    fn from(e: ConfigError) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e)
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of the trailer's timestamps.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec; clock_gettime only writes it. CLOCK_MONOTONIC
    // always exists on Linux, so the call cannot fail (a failure would leave zeros).
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts);
    }
    // Both fields are non-negative for CLOCK_MONOTONIC.
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// The index of interface `ifname` in the calling thread's namespace.
fn ifindex(ifname: &str) -> std::io::Result<libc::c_int> {
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad interface name {ifname:?}"),
        )
    };
    if ifname.is_empty() || ifname.len() > 15 {
        return Err(bad());
    }
    let cname = std::ffi::CString::new(ifname).map_err(|_| bad())?;
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if idx == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("pktgen: no interface named {ifname} in this namespace"),
        ));
    }
    libc::c_int::try_from(idx).map_err(|_| std::io::Error::other("interface index out of range"))
}

fn os_err(ifname: &str, what: &str) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("pktgen on {ifname}: {what}: {e}"))
}

pub(crate) use dataplane::port::afpacket::setsockopt_int;

/// A fresh non-blocking `AF_PACKET`/`SOCK_RAW` socket with protocol 0: it receives nothing
/// until it is bound with a protocol, so no frame of another interface reaches it.
fn packet_socket(ifname: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(os_err(ifname, "socket(AF_PACKET)"));
    }
    // SAFETY: `raw` is a fresh descriptor that nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) })
}

/// Binds a packet socket to interface `ifindex` with `protocol` (host order; 0 = send only).
fn bind_packet(
    fd: std::os::fd::RawFd,
    ifname: &str,
    ifindex: libc::c_int,
    protocol: u16,
) -> std::io::Result<()> {
    // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: `sll` is a live sockaddr_ll and the length passed is its size.
    let rc = unsafe {
        libc::bind(
            fd,
            (&raw const sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(os_err(ifname, "bind"));
    }
    Ok(())
}

/// A shared memory-mapped packet ring; unmapped on drop.
struct Mapping {
    base: std::ptr::NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes of the ring(s) the kernel allocated for socket `fd`.
    fn new(fd: std::os::fd::RawFd, ifname: &str, len: usize) -> std::io::Result<Mapping> {
        // SAFETY: maps the ring the kernel just allocated for this socket; the result is
        // checked, and the mapping is owned by the returned value (unmapped by its Drop).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_err(ifname, "mmap of the packet ring"));
        }
        let base = std::ptr::NonNull::new(base.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned NULL"))?;
        Ok(Mapping { base, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe exactly the mapping created in `new`, owned by this
        // value; no reference into it outlives it (its owners hold no borrowed slices).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// The status word of a ring slot, shared with the kernel.
///
/// # Safety
/// `p` must point into a live ring mapping, 4-byte aligned, at a `tp_status` word.
unsafe fn status_word<'a>(p: *mut u8) -> &'a std::sync::atomic::AtomicU32 {
    // SAFETY: guaranteed by the caller; the kernel only accesses the word with aligned 32-bit
    // loads and stores, so viewing it as an atomic is sound.
    unsafe { std::sync::atomic::AtomicU32::from_ptr(p.cast()) }
}

/// Lowers the calling thread's timer slack to 1 µs (so that short sleeps end on time) until
/// dropped, then restores it.
struct TimerSlack {
    old: Option<libc::c_ulong>,
}

impl TimerSlack {
    const NS: libc::c_ulong = 1_000;

    fn set() -> TimerSlack {
        // SAFETY: PR_GET_TIMERSLACK takes no pointer and returns the calling thread's slack.
        let old = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
        // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only the calling thread.
        let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, Self::NS, 0, 0, 0) };
        TimerSlack {
            old: (rc == 0 && old > 0).then_some(old as libc::c_ulong),
        }
    }
}

impl Drop for TimerSlack {
    fn drop(&mut self) {
        if let Some(old) = self.old {
            // SAFETY: as in `set`.
            unsafe {
                libc::prctl(libc::PR_SET_TIMERSLACK, old, 0, 0, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_slack_is_set_and_restored() {
        // SAFETY: as in TimerSlack::set.
        let get = || unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
        let before = get();
        {
            let _s = TimerSlack::set();
            assert_eq!(get(), 1_000);
        }
        assert_eq!(get(), before);
    }

    #[test]
    fn monotonic_clock_advances() {
        let a = monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = monotonic_ns();
        assert!(b >= a + 2_000_000, "{a} {b}");
    }
}
