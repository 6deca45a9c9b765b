//! The receiver: a TPACKET_V2 `PACKET_RX_RING` of small slots, the trailer's sequence numbers
//! (loss, reordering, duplicates), one-way latency into an HDR histogram, distinct flows.
//!
//! Why its own ring rather than the engine's `AfPacketPort`: that port's V2 slots hold a 64 KiB
//! GSO super-frame each (255 slots in 17 MiB) and it copies every frame into a packet buffer,
//! while V3 hands frames over a block at a time (up to a millisecond late, which would be
//! measured as latency). Here a slot is [`RX_SLOT`] bytes: the kernel copies only the first
//! ~450 bytes of a frame (headers and trailer are all the receiver reads; the wire length
//! still counts in full), 32768 slots absorb long bursts in 16 MiB, and each frame is handed
//! over as soon as it is written. The socket sets `PACKET_IGNORE_OUTGOING`, so frames sent on
//! the interface by its own namespace are not counted.
//!
//! Waiting: after a drain that found frames the receiver naps [`RX_NAP_US`] (a plain sleep,
//! the thread's timer slack lowered to 1 µs); only after a drain that found nothing does it
//! sleep in `poll(2)` (at most 10 ms, to notice `stop`). While traffic flows nobody waits on
//! the socket, so the kernel does not wake the receiver for every frame: measured here, that
//! per-frame wake-up cost the sender's core (on veth the receive path runs there) a third of
//! its rate.
//!
//! # Counting
//! - `received`: frames carrying the trailer (and, if asked, to the expected port), duplicates
//!   included; `bytes`: their lengths on the wire (Ethernet without FCS); `other`: every other
//!   frame.
//! - The 32-bit sequence number is extended to 64 bits relative to the highest seen so far.
//!   `lost` = highest + 1 - (received - duplicates): frames are counted from number 0, so
//!   open the receiver before the generator starts, and use one receiver per generator run.
//! - `reordered`: frames arriving after a higher number (across all flows: the sequence is
//!   global); `duplicates`: a number seen again, detected within the last [`SEQ_WINDOW`]
//!   numbers (an older one counts as reordered and is assumed not to be a duplicate).
//! - Latency: the arrival time minus the trailer's timestamp (both `CLOCK_MONOTONIC`). The
//!   arrival time is the ring's `tp_sec/tp_nsec` when the kernel took it itself on delivering
//!   the frame to this socket (no `TP_STATUS_TS_*` flag: it then reads `CLOCK_REALTIME` in
//!   `tpacket_rcv`), converted to `CLOCK_MONOTONIC` with the offset between the two clocks
//!   sampled at every drain (they tick together; a step of the wall clock mid-run spoils at
//!   most one drain, and a converted time outside [sent, now] is not used). So neither the nap
//!   nor a wake-up from `poll` is counted as latency. When the frame carried an older
//!   `skb->tstamp` (`TP_STATUS_TS_SOFTWARE`: some socket on the machine enabled timestamps, and
//!   the stamp may come from an earlier hop or another clock), the receiver uses
//!   `CLOCK_MONOTONIC` read when it takes the frame from the ring instead, which may add up to
//!   the nap (~20-30 µs) at high rates.
//! - `flows`: distinct (source address, source port, destination port) of the packets carrying
//!   the trailer, exact up to [`FLOW_TRACK_MAX`] (then it stops growing).
//! - `ring_drops`: frames the kernel dropped because the ring was full (the receiver could not
//!   keep up): they show in `lost` too, and this says that the receiver lost them.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::wire::parse;
use super::{
    bind_packet, ifindex, monotonic_ns, os_err, packet_socket, setsockopt_int, status_word,
    Mapping, TimerSlack,
};

/// Duplicates are detected among the last this many sequence numbers.
pub const SEQ_WINDOW: u64 = 1 << 20;
/// Distinct flows counted exactly up to this many.
pub const FLOW_TRACK_MAX: usize = 1 << 20;
/// RX slot size: the tpacket2 header and the first ~450 bytes of the frame.
const RX_SLOT: usize = 512;
const RX_BLOCK: usize = 1 << 20;
const RX_BLOCKS: usize = 16;
/// Nap after a drain that found frames (µs).
pub const RX_NAP_US: u64 = 20;
/// Slack allowed when checking a converted ring timestamp against [sent, now] (ns).
const TS_SLOP_NS: u64 = 2_000;
/// Timestamp flags saying the ring's time came from `skb->tstamp` or hardware.
const TS_FLAGS: u32 =
    libc::TP_STATUS_TS_SOFTWARE | libc::TP_STATUS_TS_SYS_HARDWARE | libc::TP_STATUS_TS_RAW_HARDWARE;
/// Longest sleep in poll(2) before looking at `stop` and the deadline again.
const POLL_MAX_MS: u64 = 10;
/// Frames handled between two looks at `stop`.
const DRAIN_MAX: usize = 4096;
/// Latencies above this (ns) are recorded as this.
const LATENCY_MAX_NS: u64 = 60_000_000_000;
const ETH_P_ALL: u16 = 0x0003;
const TPACKET_V2: libc::c_int = 1;

/// How to receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvConfig {
    /// Interface to receive on (in the calling thread's namespace).
    pub ifname: String,
    /// Stop after this long (or earlier, when `stop` is set).
    pub duration: Duration,
    /// Count only frames whose trailer-carrying packet (the inner one for VXLAN) goes to this
    /// UDP/TCP port; the others count as `other`.
    pub expect_dst_port: Option<u16>,
}

/// What a receiver saw (see the module header for the exact meaning of each count).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecvReport {
    pub received: u64,
    pub bytes: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicates: u64,
    /// Frames per second between the first and the last frame received.
    pub pps: f64,
    /// One-way latency percentiles and maximum, in microseconds (0 when nothing arrived).
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Distinct flows (exact up to [`FLOW_TRACK_MAX`]).
    pub flows: u64,
    /// Frames without the trailer, or to another port than `expect_dst_port`.
    pub other: u64,
    /// Frames the kernel dropped because the receiver's ring was full.
    pub ring_drops: u64,
}

/// Loss, reordering and duplicates from 32-bit sequence numbers extended to 64 bits.
struct SeqTracker {
    /// Bit `n % SEQ_WINDOW` is set when number `n` (within the window below `max`) was seen.
    seen: Box<[u64]>,
    max: Option<u64>,
    received: u64,
    duplicates: u64,
    reordered: u64,
}

impl SeqTracker {
    fn new() -> SeqTracker {
        SeqTracker {
            seen: vec![0u64; (SEQ_WINDOW / 64) as usize].into_boxed_slice(),
            max: None,
            received: 0,
            duplicates: 0,
            reordered: 0,
        }
    }

    /// The 64-bit number closest to the highest seen whose low 32 bits are `s`.
    fn extend(&self, s: u32) -> u64 {
        let Some(m) = self.max else {
            return u64::from(s);
        };
        let cand = (m & !0xffff_ffff) | u64::from(s);
        if cand > m && cand - m > 1 << 31 && cand >= 1 << 32 {
            cand - (1 << 32)
        } else if cand < m && m - cand > 1 << 31 {
            cand + (1 << 32)
        } else {
            cand
        }
    }

    fn bit(n: u64) -> (usize, u64) {
        let i = n % SEQ_WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn test_and_set(&mut self, n: u64) -> bool {
        let (w, b) = Self::bit(n);
        match self.seen.get_mut(w) {
            Some(word) => {
                let was = *word & b != 0;
                *word |= b;
                was
            }
            None => false,
        }
    }

    fn clear(&mut self, n: u64) {
        let (w, b) = Self::bit(n);
        if let Some(word) = self.seen.get_mut(w) {
            *word &= !b;
        }
    }

    fn observe(&mut self, s: u32) {
        let n = self.extend(s);
        self.received += 1;
        match self.max {
            Some(m) if n <= m => {
                if m - n >= SEQ_WINDOW {
                    self.reordered += 1;
                } else if self.test_and_set(n) {
                    self.duplicates += 1;
                } else {
                    self.reordered += 1;
                }
            }
            Some(m) => {
                if n - m >= SEQ_WINDOW {
                    self.seen.fill(0);
                } else {
                    for k in m + 1..n {
                        self.clear(k);
                    }
                }
                self.clear(n);
                self.test_and_set(n);
                self.max = Some(n);
            }
            None => {
                self.test_and_set(n);
                self.max = Some(n);
            }
        }
    }

    fn lost(&self) -> u64 {
        self.max.map_or(0, |m| {
            (m + 1).saturating_sub(self.received - self.duplicates)
        })
    }
}

/// `CLOCK_MONOTONIC` now, and `CLOCK_REALTIME - CLOCK_MONOTONIC` (ns), sampled together.
fn clock_offset() -> (u64, i128) {
    let a = monotonic_ns();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec; clock_gettime only writes it.
    unsafe {
        libc::clock_gettime(libc::CLOCK_REALTIME, &raw mut ts);
    }
    let b = monotonic_ns();
    let rt = i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec);
    (b, rt - i128::from(a / 2 + b / 2))
}

/// The `CLOCK_MONOTONIC` time of a ring timestamp (`CLOCK_REALTIME` ns), if it is plausible
/// for a frame sent at `tx_ns` and read at `now`; a converted time slightly before `tx_ns`
/// (within the sampling slop) counts as `tx_ns`.
fn arrival(ring_rt: u64, rt_minus_mono: i128, tx_ns: u64, now: u64) -> Option<u64> {
    if ring_rt == 0 {
        return None;
    }
    let t = u64::try_from(i128::from(ring_rt) - rt_minus_mono).ok()?;
    (t.saturating_add(TS_SLOP_NS) >= tx_ns && t <= now.saturating_add(TS_SLOP_NS))
        .then_some(t.max(tx_ns))
}

/// A cheap hasher for the flow set's `u64` keys (the splitmix64 finaliser).
#[derive(Default)]
struct FlowHasher(u64);

impl Hasher for FlowHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// An open receiver: socket bound, ring mapped, counters at zero.
pub struct Receiver {
    cfg: RecvConfig,
    // Field order: the ring is unmapped before the socket is closed.
    map: Mapping,
    fd: OwnedFd,
    slots: usize,
    slots_per_block: usize,
    head: usize,
    seq: SeqTracker,
    hist: Histogram<u64>,
    max_ns: u64,
    flows: HashSet<u64, BuildHasherDefault<FlowHasher>>,
    bytes: u64,
    other: u64,
    first_ns: Option<u64>,
    last_ns: u64,
    ring_drops: u64,
}

// SAFETY: the ring mapping is owned exclusively by this receiver and only accessed through
// it; moving it to another thread is sound (the kernel side does not care which thread reads).
unsafe impl Send for Receiver {}

/// Opens a receiver on `cfg.ifname` in the calling thread's namespace and runs it until
/// `cfg.duration` has passed or `stop` is set.
pub fn receive(cfg: &RecvConfig, stop: &AtomicBool) -> io::Result<RecvReport> {
    Receiver::open(cfg)?.run(stop)
}

impl Receiver {
    /// Opens the socket and its ring on `cfg.ifname`; frames are captured from here on (the
    /// ring holds 32768 of them until [`Receiver::run`] reads it).
    pub fn open(cfg: &RecvConfig) -> io::Result<Receiver> {
        let ifname = cfg.ifname.as_str();
        let idx = ifindex(ifname)?;
        let fd = packet_socket(ifname)?;
        let s = fd.as_raw_fd();
        if setsockopt_int(s, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1) < 0 {
            return Err(os_err(ifname, "setsockopt PACKET_IGNORE_OUTGOING"));
        }
        if setsockopt_int(s, libc::SOL_PACKET, libc::PACKET_VERSION, TPACKET_V2) < 0 {
            return Err(os_err(ifname, "setsockopt PACKET_VERSION"));
        }
        let slots_per_block = RX_BLOCK / RX_SLOT;
        let slots = slots_per_block * RX_BLOCKS;
        let req = libc::tpacket_req {
            tp_block_size: RX_BLOCK as u32,
            tp_block_nr: RX_BLOCKS as u32,
            tp_frame_size: RX_SLOT as u32,
            tp_frame_nr: slots as u32,
        };
        // SAFETY: `req` is a live tpacket_req and the length passed is its size.
        let rc = unsafe {
            libc::setsockopt(
                s,
                libc::SOL_PACKET,
                libc::PACKET_RX_RING,
                (&raw const req).cast(),
                size_of::<libc::tpacket_req>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(os_err(ifname, "setsockopt PACKET_RX_RING"));
        }
        let map = Mapping::new(s, ifname, RX_BLOCK * RX_BLOCKS)?;
        let hist = Histogram::new_with_bounds(1, LATENCY_MAX_NS, 3)
            .map_err(|e| io::Error::other(format!("latency histogram: {e:?}")))?;
        let flows =
            HashSet::with_capacity_and_hasher(FLOW_TRACK_MAX, BuildHasherDefault::default());
        bind_packet(s, ifname, idx, ETH_P_ALL)?;
        Ok(Receiver {
            cfg: cfg.clone(),
            map,
            fd,
            slots,
            slots_per_block,
            head: 0,
            seq: SeqTracker::new(),
            hist,
            max_ns: 0,
            flows,
            bytes: 0,
            other: 0,
            first_ns: None,
            last_ns: 0,
            ring_drops: 0,
        })
    }

    fn slot(&self, i: usize) -> *mut u8 {
        let off = (i / self.slots_per_block) * RX_BLOCK + (i % self.slots_per_block) * RX_SLOT;
        debug_assert!(off + RX_SLOT <= self.map.len);
        // SAFETY: `off + RX_SLOT <= len` by construction of the geometry (`i < slots`).
        unsafe { self.map.base.as_ptr().add(off) }
    }

    /// Handles up to `max` frames waiting in the ring; returns how many.
    fn drain(&mut self, max: usize) -> usize {
        let (now, rt_minus_mono) = clock_offset();
        let mut n = 0;
        while n < max {
            let p = self.slot(self.head);
            // SAFETY: `p` is the 16-byte aligned start of a slot in the live mapping, where
            // tpacket2_hdr's tp_status sits.
            let status = unsafe { status_word(p) };
            // Acquire pairs with the kernel's barrier before it hands the slot over.
            let st = status.load(Ordering::Acquire);
            if st & libc::TP_STATUS_USER == 0 {
                break;
            }
            // SAFETY: the slot is ours (TP_STATUS_USER) until handed back below; the header
            // lies at its start, inside the mapping; read_unaligned needs no alignment.
            let h = unsafe { std::ptr::read_unaligned(p.cast::<libc::tpacket2_hdr>()) };
            let mac = usize::from(h.tp_mac);
            let snap = (h.tp_snaplen as usize).min(RX_SLOT.saturating_sub(mac));
            let frame: &[u8] = if mac < RX_SLOT {
                // SAFETY: `mac + snap <= RX_SLOT`: the bytes lie inside our slot, which the
                // kernel does not write until we hand it back, after the last use of `frame`.
                unsafe { std::slice::from_raw_parts(p.add(mac), snap) }
            } else {
                &[]
            };
            match parse(frame) {
                Some(s) if self.cfg.expect_dst_port.is_none_or(|d| d == s.dst_port) => {
                    let ring_rt = u64::from(h.tp_sec) * 1_000_000_000 + u64::from(h.tp_nsec);
                    let rx_ns = if st & TS_FLAGS == 0 {
                        // A frame that arrived during this drain is checked against a fresh
                        // reading of the clock.
                        arrival(ring_rt, rt_minus_mono, s.tx_ns, now)
                            .or_else(|| arrival(ring_rt, rt_minus_mono, s.tx_ns, monotonic_ns()))
                    } else {
                        None
                    }
                    .unwrap_or_else(monotonic_ns);
                    self.seq.observe(s.seq);
                    self.bytes += u64::from(h.tp_len);
                    let lat = rx_ns.saturating_sub(s.tx_ns);
                    self.hist.saturating_record(lat.max(1));
                    self.max_ns = self.max_ns.max(lat);
                    if self.flows.len() < FLOW_TRACK_MAX {
                        self.flows.insert(s.flow_key());
                    }
                    self.first_ns.get_or_insert(rx_ns);
                    self.last_ns = rx_ns;
                }
                _ => self.other += 1,
            }
            // Release: our reads of the slot happen before the kernel may refill it.
            status.store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.head = (self.head + 1) % self.slots;
            n += 1;
        }
        n
    }

    /// Waits up to `ms` milliseconds for the ring to become readable.
    fn wait(&self, ms: u64) -> io::Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one live pollfd; poll only writes its `revents`.
        let rc = unsafe { libc::poll(&raw mut pfd, 1, ms.min(POLL_MAX_MS) as libc::c_int) };
        if rc < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Err(os_err(&self.cfg.ifname, "poll"));
        }
        if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
            return Err(io::Error::other(format!(
                "pktgen receiver on {}: socket error (interface gone?)",
                self.cfg.ifname
            )));
        }
        Ok(())
    }

    /// Frames the kernel dropped for a full ring since the last call.
    fn take_ring_drops(&self) -> u64 {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st`/`len` are live; the kernel writes at most `len` bytes (a tpacket_stats
        // for TPACKET_V2) and resets its counters.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut st).cast(),
                &raw mut len,
            )
        };
        if rc == 0 {
            u64::from(st.tp_drops)
        } else {
            0
        }
    }

    /// Receives until `cfg.duration` has passed since the call or `stop` is set, then reads
    /// what is already in the ring and reports. Counters accumulate over calls.
    pub fn run(&mut self, stop: &AtomicBool) -> io::Result<RecvReport> {
        let _slack = TimerSlack::set();
        let dur_ns = u64::try_from(self.cfg.duration.as_nanos()).unwrap_or(u64::MAX);
        let deadline = monotonic_ns().saturating_add(dur_ns);
        loop {
            let n = self.drain(DRAIN_MAX);
            let now = monotonic_ns();
            if stop.load(Ordering::Relaxed) || now >= deadline {
                break;
            }
            if n == 0 {
                self.wait((deadline - now).div_ceil(1_000_000))?;
            } else if n < DRAIN_MAX {
                std::thread::sleep(Duration::from_micros(RX_NAP_US));
            }
        }
        while self.drain(DRAIN_MAX) > 0 {}
        self.ring_drops += self.take_ring_drops();
        Ok(self.report())
    }

    /// The counters so far.
    fn report(&self) -> RecvReport {
        let received = self.seq.received;
        let span = self
            .last_ns
            .saturating_sub(self.first_ns.unwrap_or(self.last_ns));
        let pps = if received >= 2 && span > 0 {
            (received - 1) as f64 * 1e9 / span as f64
        } else {
            0.0
        };
        let q = |quantile: f64| {
            if self.hist.is_empty() {
                0.0
            } else {
                self.hist.value_at_quantile(quantile).min(self.max_ns) as f64 / 1000.0
            }
        };
        RecvReport {
            received,
            bytes: self.bytes,
            lost: self.seq.lost(),
            reordered: self.seq.reordered,
            duplicates: self.seq.duplicates,
            pps,
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: self.max_ns as f64 / 1000.0,
            flows: self.flows.len() as u64,
            other: self.other,
            ring_drops: self.ring_drops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: impl IntoIterator<Item = u32>) -> SeqTracker {
        let mut t = SeqTracker::new();
        for s in seqs {
            t.observe(s);
        }
        t
    }

    fn counts(t: &SeqTracker) -> (u64, u64, u64, u64) {
        (t.received, t.lost(), t.reordered, t.duplicates)
    }

    #[test]
    fn in_order_stream_has_no_loss() {
        let t = run(0..10_000);
        assert_eq!(counts(&t), (10_000, 0, 0, 0));
        assert_eq!(counts(&run([])), (0, 0, 0, 0));
    }

    #[test]
    fn loss_reordering_and_duplicates() {
        // 0..10 without 3 and 7; 5 arrives late; 8 twice.
        let t = run([0, 1, 2, 4, 6, 5, 8, 8, 9]);
        assert_eq!(counts(&t), (9, 2, 1, 1));
        // Loss at the start counts (numbers start at 0).
        assert_eq!(counts(&run([5, 6])), (2, 5, 0, 0));
        // A late frame that fills a gap reduces the loss.
        assert_eq!(counts(&run([0, 2, 1])), (3, 0, 1, 0));
        // The duplicate of the highest.
        assert_eq!(counts(&run([0, 1, 1])), (3, 0, 0, 1));
    }

    #[test]
    fn sequence_numbers_wrap_past_32_bits() {
        let start = u32::MAX - 1000;
        let mut t = SeqTracker::new();
        t.max = Some(u64::from(start) - 1);
        t.received = u64::from(start);
        for k in 0..3000u64 {
            t.observe((u64::from(start) + k) as u32);
        }
        assert_eq!(t.max, Some(u64::from(start) + 2999));
        assert_eq!((t.lost(), t.reordered, t.duplicates), (0, 0, 0));
        // A late frame from before the wrap is recognised as late, not as far ahead.
        t.observe(u32::MAX);
        assert_eq!((t.duplicates, t.reordered), (1, 0));
        t.observe(start - 2);
        assert_eq!(t.reordered, 1);
    }

    #[test]
    fn old_frames_beyond_the_window_count_as_reordered() {
        let mut t = run([0]);
        t.observe((SEQ_WINDOW + 10) as u32);
        t.observe(0);
        assert_eq!((t.duplicates, t.reordered), (0, 1), "too old to tell");
        t.observe((SEQ_WINDOW + 10) as u32);
        assert_eq!(t.duplicates, 1);
        // Jumping ahead clears the window: number n + SEQ_WINDOW is not a duplicate of n.
        let mut t = run([1]);
        t.observe((SEQ_WINDOW + 1) as u32);
        assert_eq!(t.duplicates, 0);
    }

    #[test]
    fn ring_timestamps_convert_to_monotonic_when_plausible() {
        let off = 1_700_000_000_000_000_000i128;
        let mono = |t: u64| (i128::from(t) + off) as u64;
        assert_eq!(arrival(mono(5_000), off, 1_000, 9_000), Some(5_000));
        // Slightly before the send (clock sampling): clamped to the send time.
        assert_eq!(arrival(mono(900), off, 1_000, 9_000), Some(1_000));
        // Far before the send (another clock, an earlier hop) or after now: not used.
        assert_eq!(arrival(mono(1), off, 1_000_000, 9_000_000), None);
        assert_eq!(arrival(mono(20_000), off, 1_000, 9_000), None);
        assert_eq!(arrival(0, off, 1_000, 9_000), None);
        assert_eq!(
            arrival(5, off, 1_000, 9_000),
            None,
            "negative after conversion"
        );
        let (now, o) = clock_offset();
        assert!(o > 0, "the wall clock is after boot");
        let rt = u64::try_from(i128::from(now) + o).unwrap();
        let t = arrival(rt, o, now - 10, monotonic_ns()).unwrap();
        assert!(t.abs_diff(now) < TS_SLOP_NS, "{t} {now}");
    }

    #[test]
    fn flow_hasher_spreads_keys() {
        let h = |v: u64| {
            let mut f = FlowHasher::default();
            f.write_u64(v);
            f.finish()
        };
        assert_ne!(h(1) & 0xffff, h(1 << 32) & 0xffff);
        let mut s: HashSet<u64, BuildHasherDefault<FlowHasher>> = HashSet::default();
        for k in 0..1000u64 {
            s.insert(k << 32);
        }
        assert_eq!(s.len(), 1000);
    }
}
