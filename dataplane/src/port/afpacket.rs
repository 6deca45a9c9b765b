//! AF_PACKET port: any Linux interface (the underlay uplink, the engine's end of a veth),
//! received through a memory-mapped `PACKET_RX_RING` and transmitted with `sendmmsg`.
//!
//! Written directly on `libc`. Setup order matters and is:
//! 1. `socket(AF_PACKET, SOCK_RAW, 0)`: protocol 0 receives nothing until bound, so no frame
//!    of another interface can slip into the ring;
//! 2. `PACKET_VNET_HDR` (must precede the ring);
//! 3. `PACKET_IGNORE_OUTGOING`: the kernel never hands a packet socket the frames that socket
//!    sent itself, but without this option it hands it every other outgoing frame of the
//!    interface (another socket of the engine, the node's own kernel), which would loop;
//! 4. `PACKET_VERSION`, `PACKET_RX_RING`, `mmap`;
//! 5. `bind` to the interface with `ETH_P_ALL`.
//!
//! # Ring versions and their latency trade-off
//! - [`RingKind::V2`]: one fixed-size slot per frame. The kernel hands each frame over as soon
//!   as it is written, so latency is minimal at any rate; but every slot must hold the largest
//!   frame (a 64 KiB GSO super-frame), so the ring holds few frames ([`V2_FRAME_NR`]) whatever
//!   their size, and a burst of small frames fills it quickly.
//! - [`RingKind::V3`]: large blocks packed with variable-size frames, handed over a whole block
//!   at a time: when the block is full, or when its retire timer ([`V3_RETIRE_TOV_MS`], at least
//!   1 ms) fires. Many more frames fit in the same memory and there is one status check per
//!   block, which is great for throughput; but at low rates a frame may wait up to the timer
//!   before the engine sees it: up to a millisecond per hop. Measure latency, not only packets/s.
//!
//! # Offloads
//! With `vnet_hdr` on (the default) the kernel writes a `virtio_net_hdr` just before each
//! frame's MAC header; it becomes `meta.offload` (checksum still to compute, GSO super-frame),
//! so a veth's offloaded frames keep their shape through the engine. On TX every frame is
//! preceded by the header built from its `meta.offload`, and the kernel or the next device
//! completes the work. With `vnet_hdr` off, received frames carry no offload state: use it
//! only where senders complete their checksums (a physical NIC, a veth whose peer has tx
//! offloads off); frames the engine transmits with offload state are then completed in
//! software first.
//!
//! # Drops
//! [`Port::take_device_drops`] adds the kernel's ring-full drops (`PACKET_STATISTICS.tp_drops`,
//! which resets on read) to the frames this port skipped itself: truncated by the ring
//! (`tp_snaplen < tp_len`), with a `virtio_net_hdr` that does not parse, or too large for a
//! packet buffer.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::ffi::CString;
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

use encap::offload::{emit_vnet_hdr, parse_vnet_hdr, segment, Offload, VNET_HDR_LEN};

use super::tap::check_ifname;
use super::{Mac, Port, TxResult};
use crate::packet::{Batch, PortId, BUF_CAP};

/// Which `PACKET_RX_RING` layout to use (see the module header for the latency trade-off).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RingKind {
    /// `TPACKET_V2`: one slot per frame, handed over immediately.
    #[default]
    V2,
    /// `TPACKET_V3`: blocks of frames, handed over when full or on the retire timer.
    V3,
}

/// How to open an [`AfPacketPort`].
#[derive(Clone, Debug)]
pub struct AfPacketOptions {
    pub ring: RingKind,
    /// Exchange `virtio_net_hdr` with the kernel (`PACKET_VNET_HDR`), keeping offloads.
    pub vnet_hdr: bool,
    /// The engine's MAC on this port; `None` = the interface's own address.
    pub mac: Option<Mac>,
    /// The largest frame the port must receive whole (Ethernet header included). `None`: a
    /// 64 KiB GSO super-frame (pod ports). A V2 ring then gets slots just big enough
    /// ([`v2_frame_size`]), so the same memory holds many more frames: an underlay uplink,
    /// which only ever receives MTU-sized frames, holds 8704 frames in 17 MiB instead of 255.
    /// Bigger frames arrive truncated and are dropped as `rx_ring`.
    pub max_frame: Option<usize>,
}

impl Default for AfPacketOptions {
    fn default() -> Self {
        AfPacketOptions {
            ring: RingKind::V2,
            vnet_hdr: true,
            mac: None,
            max_frame: None,
        }
    }
}

/// Where the kernel puts a frame in a V2 slot, at most (32-byte `tpacket2_hdr`, `sockaddr_ll`,
/// alignment, 10-byte vnet header): a slot must hold this plus the frame.
const V2_FRAME_OFFSET_MAX: usize = 96;

/// The V2 slot size for frames of at most `max_frame` bytes: the smallest power of two from
/// 2 KiB that holds the frame after its header, at most [`V2_FRAME_SIZE`] (`None` too).
pub fn v2_frame_size(max_frame: Option<usize>) -> u32 {
    match max_frame {
        None => V2_FRAME_SIZE,
        Some(n) => {
            let need = n.saturating_add(V2_FRAME_OFFSET_MAX).max(2048);
            let p = need.checked_next_power_of_two().unwrap_or(usize::MAX);
            u32::try_from(p).map_or(V2_FRAME_SIZE, |p| p.min(V2_FRAME_SIZE))
        }
    }
}

/// V2 slot size: 17 pages. The kernel puts the frame at offset 76 in its slot (32-byte
/// `tpacket2_hdr`, `sockaddr_ll`, alignment, 10-byte vnet header), so a 64 KiB GSO super-frame
/// plus its Ethernet header (65549 bytes) fits with room to spare. Smaller slots would let the
/// ring hold more frames in the same memory, but super-frames would be truncated (and dropped).
pub const V2_FRAME_SIZE: u32 = 17 * 4096;
/// V2 block size. The kernel allocates each block as a power-of-two run of pages, so blocks are
/// 1 MiB (15 slots, 4 KiB unused) rather than one 68 KiB slot each (which would waste 60 KiB).
pub const V2_BLOCK_SIZE: u32 = 1 << 20;
/// V2 block count: 17 MiB of ring, 255 frames of slack before the kernel drops.
pub const V2_BLOCK_NR: u32 = 17;
/// V2 slots in the ring.
pub const V2_FRAME_NR: u32 = (V2_BLOCK_SIZE / V2_FRAME_SIZE) * V2_BLOCK_NR;

/// V3 block size: holds a 64 KiB super-frame and hundreds of small frames.
pub const V3_BLOCK_SIZE: u32 = 1 << 20;
/// V3 block count: 64 MiB of ring per port. Fewer blocks save memory but give less slack
/// when the engine is descheduled.
pub const V3_BLOCK_NR: u32 = 64;
/// V3 nominal frame size (only for the kernel's `tp_frame_nr` bookkeeping: V3 packs frames).
const V3_FRAME_SIZE: u32 = 2048;
/// V3 block retire timeout in milliseconds: the longest a frame waits in a partly filled block.
pub const V3_RETIRE_TOV_MS: u32 = 1;

/// Messages prepared per `sendmmsg` call (larger bursts are sent in several calls).
const TX_CHUNK: usize = 64;

const TPACKET_V2: libc::c_int = 1;
const TPACKET_V3: libc::c_int = 2;

fn os_err(ifname: &str, what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("AF_PACKET on {ifname}: {what}: {e}"))
}

/// The memory-mapped RX ring; unmapped on drop.
struct Ring {
    base: NonNull<u8>,
    len: usize,
    block_size: usize,
    block_nr: usize,
    frame_size: usize,
    frames_per_block: usize,
    frame_nr: usize,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe exactly the mapping created in `open` and owned by this
        // `Ring`; no reference into it outlives the port (frames are copied out).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

impl Ring {
    /// Start of V2 slot `i` (`i < frame_nr`). Slots never straddle blocks.
    fn slot(&self, i: usize) -> *mut u8 {
        let off = (i / self.frames_per_block) * self.block_size
            + (i % self.frames_per_block) * self.frame_size;
        debug_assert!(off + self.frame_size <= self.len);
        // SAFETY: `off` is inside the mapping (checked by construction of the ring geometry).
        unsafe { self.base.as_ptr().add(off) }
    }

    /// Start of V3 block `i` (`i < block_nr`).
    fn block(&self, i: usize) -> *mut u8 {
        debug_assert!((i + 1) * self.block_size <= self.len);
        // SAFETY: `i * block_size` is inside the mapping (`i < block_nr`).
        unsafe { self.base.as_ptr().add(i * self.block_size) }
    }
}

/// The status word the kernel and the engine pass ownership with.
///
/// # Safety
/// `p` must point into the live ring mapping, 4-byte aligned, at a `tp_status`/`block_status`.
unsafe fn status_word<'a>(p: *mut u8) -> &'a AtomicU32 {
    // SAFETY: guaranteed by the caller; the kernel only accesses the word with aligned 32-bit
    // loads and stores, so viewing it as an atomic is sound.
    unsafe { AtomicU32::from_ptr(p.cast()) }
}

/// What the ring header says about one frame (the fields `deliver` needs from V2 and V3).
#[derive(Clone, Copy)]
struct FrameInfo {
    /// Offset of the MAC header from the frame's ring header.
    mac: u16,
    /// Bytes captured in the ring.
    snaplen: u32,
    /// Bytes of the frame on the wire.
    len: u32,
}

/// Where the V3 reader stands in the current block (resumable across `rx_burst` calls).
#[derive(Default)]
struct V3Cursor {
    block: usize,
    /// The current block is ours and `left`/`offset` are valid.
    open: bool,
    left: u32,
    offset: usize,
}

/// Prepared `sendmmsg` arrays, allocated once.
struct TxArrays {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<[libc::iovec; 2]>,
    vnet: Vec<[u8; VNET_HDR_LEN]>,
    /// (frame start, length) of each prepared message.
    frames: Vec<(*const u8, usize)>,
}

/// An AF_PACKET socket bound to one interface, with its RX ring.
pub struct AfPacketPort {
    // Field order: the ring is unmapped before the socket is closed.
    ring: Ring,
    fd: OwnedFd,
    name: String,
    mac: Mac,
    kind: RingKind,
    vnet_hdr: bool,
    next_slot: usize,
    v3: V3Cursor,
    tx: TxArrays,
    /// Scratch space for completing offloads in software when `vnet_hdr` is off.
    scratch: Box<[u8]>,
    /// Frames skipped by this port since the last `take_device_drops`.
    skipped: u64,
}

// SAFETY: the raw pointers inside (`Ring::base`, the prepared `sendmmsg` arrays) point only to
// memory this port owns exclusively (its mapping, its own vectors) or, during one `tx_burst`
// call, to the caller's batch; nothing is shared with another thread, so moving the port to
// another thread is sound.
unsafe impl Send for AfPacketPort {}

/// `setsockopt` of an `int` option; returns the raw result (< 0 on error, errno set).
/// Shared with the benchmark generator, which sets up its own packet sockets.
pub fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> libc::c_int {
    // SAFETY: `val` is a live c_int and the length passed is its size.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const val).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    }
}

impl AfPacketPort {
    /// Open the interface `ifname` of the calling thread's network namespace.
    pub fn open(ifname: &str, opts: &AfPacketOptions) -> io::Result<AfPacketPort> {
        check_ifname(ifname)?;
        let cname = CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("AF_PACKET: no interface named {ifname}"),
            ));
        }
        let ifindex = libc::c_int::try_from(ifindex)
            .map_err(|_| io::Error::other("interface index out of range"))?;

        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(os_err(ifname, "socket"));
        }
        // SAFETY: `raw` is a fresh descriptor that nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let s = fd.as_raw_fd();

        if opts.vnet_hdr && setsockopt_int(s, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1) < 0 {
            return Err(os_err(ifname, "setsockopt PACKET_VNET_HDR"));
        }
        if setsockopt_int(s, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1) < 0 {
            return Err(os_err(ifname, "setsockopt PACKET_IGNORE_OUTGOING"));
        }
        let version = match opts.ring {
            RingKind::V2 => TPACKET_V2,
            RingKind::V3 => TPACKET_V3,
        };
        if setsockopt_int(s, libc::SOL_PACKET, libc::PACKET_VERSION, version) < 0 {
            return Err(os_err(ifname, "setsockopt PACKET_VERSION"));
        }

        let (block_size, block_nr, frame_size) = match opts.ring {
            RingKind::V2 => (V2_BLOCK_SIZE, V2_BLOCK_NR, v2_frame_size(opts.max_frame)),
            RingKind::V3 => (V3_BLOCK_SIZE, V3_BLOCK_NR, V3_FRAME_SIZE),
        };
        let frames_per_block = block_size / frame_size;
        let frame_nr = frames_per_block * block_nr;
        let rc = match opts.ring {
            RingKind::V2 => {
                let req = libc::tpacket_req {
                    tp_block_size: block_size,
                    tp_block_nr: block_nr,
                    tp_frame_size: frame_size,
                    tp_frame_nr: frame_nr,
                };
                // SAFETY: `req` is a live tpacket_req and the length passed is its size.
                unsafe {
                    libc::setsockopt(
                        s,
                        libc::SOL_PACKET,
                        libc::PACKET_RX_RING,
                        (&raw const req).cast(),
                        size_of::<libc::tpacket_req>() as libc::socklen_t,
                    )
                }
            }
            RingKind::V3 => {
                let req = libc::tpacket_req3 {
                    tp_block_size: block_size,
                    tp_block_nr: block_nr,
                    tp_frame_size: frame_size,
                    tp_frame_nr: frame_nr,
                    tp_retire_blk_tov: V3_RETIRE_TOV_MS,
                    tp_sizeof_priv: 0,
                    tp_feature_req_word: 0,
                };
                // SAFETY: `req` is a live tpacket_req3 and the length passed is its size.
                unsafe {
                    libc::setsockopt(
                        s,
                        libc::SOL_PACKET,
                        libc::PACKET_RX_RING,
                        (&raw const req).cast(),
                        size_of::<libc::tpacket_req3>() as libc::socklen_t,
                    )
                }
            }
        };
        if rc < 0 {
            return Err(os_err(ifname, "setsockopt PACKET_RX_RING"));
        }

        let len = block_size as usize * block_nr as usize;
        // SAFETY: maps the ring the kernel just allocated for this socket; the result is checked,
        // and the mapping is owned by `Ring` (unmapped on every later error path by its Drop).
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                s,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_err(ifname, "mmap of the RX ring"));
        }
        let base = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        let ring = Ring {
            base,
            len,
            block_size: block_size as usize,
            block_nr: block_nr as usize,
            frame_size: frame_size as usize,
            frames_per_block: frames_per_block as usize,
            frame_nr: frame_nr as usize,
        };

        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a live sockaddr_ll and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                s,
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(os_err(ifname, "bind"));
        }
        // Binding to an interface that is down leaves ENETDOWN pending on the socket, which
        // would make poll() report an error forever; read it (clearing it) now.
        let mut soerr: libc::c_int = 0;
        let mut soerr_len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `soerr`/`soerr_len` are live and sized for SO_ERROR's c_int.
        unsafe {
            libc::getsockopt(
                s,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&raw mut soerr).cast(),
                &raw mut soerr_len,
            )
        };

        let mac = match opts.mac {
            Some(m) => m,
            None => hw_addr(s, ifname)?,
        };

        let tx = TxArrays {
            // SAFETY: mmsghdr is a plain C struct for which all-zero bytes are a valid value.
            msgs: (0..TX_CHUNK)
                .map(|_| unsafe { std::mem::zeroed() })
                .collect(),
            iovs: (0..TX_CHUNK)
                .map(|_| {
                    [libc::iovec {
                        iov_base: ptr::null_mut(),
                        iov_len: 0,
                    }; 2]
                })
                .collect(),
            vnet: vec![[0u8; VNET_HDR_LEN]; TX_CHUNK],
            frames: Vec::with_capacity(TX_CHUNK),
        };
        let scratch = if opts.vnet_hdr {
            Box::default()
        } else {
            vec![0u8; BUF_CAP].into_boxed_slice()
        };
        Ok(AfPacketPort {
            ring,
            fd,
            name: ifname.to_string(),
            mac,
            kind: opts.ring,
            vnet_hdr: opts.vnet_hdr,
            next_slot: 0,
            v3: V3Cursor::default(),
            tx,
            scratch,
            skipped: 0,
        })
    }

    /// Copy one ring frame into the next free buffer of `batch`. `frame` points at the frame's
    /// ring header; `avail` bytes from there lie inside the current slot/block.
    fn deliver(
        &mut self,
        frame: *const u8,
        avail: usize,
        info: FrameInfo,
        id: PortId,
        batch: &mut Batch,
    ) {
        let mac = usize::from(info.mac);
        let snap = info.snaplen as usize;
        if info.snaplen < info.len || mac.checked_add(snap).is_none_or(|end| end > avail) {
            self.skipped += 1;
            return;
        }
        let mut offload = Offload::default();
        if self.vnet_hdr {
            let Some(vstart) = mac.checked_sub(VNET_HDR_LEN) else {
                self.skipped += 1;
                return;
            };
            let mut v = [0u8; VNET_HDR_LEN];
            // SAFETY: `vstart..mac` lies inside the slot (`mac <= avail`), which the kernel does
            // not touch while we own it (status USER, read with Acquire); copied, not referenced.
            unsafe { ptr::copy_nonoverlapping(frame.add(vstart), v.as_mut_ptr(), VNET_HDR_LEN) };
            match parse_vnet_hdr(&v) {
                Ok(o) => offload = o,
                Err(_) => {
                    self.skipped += 1;
                    return;
                }
            }
        }
        let Some(buf) = batch.next_free() else { return };
        let dst = buf.rx_space();
        if snap > dst.len() {
            self.skipped += 1;
            return;
        }
        // SAFETY: source `mac..mac + snap` lies inside the slot (checked above) and is owned by
        // us until we hand the slot back; the destination has at least `snap` bytes.
        unsafe { ptr::copy_nonoverlapping(frame.add(mac), dst.as_mut_ptr(), snap) };
        buf.set_len(snap);
        buf.meta.in_port = id;
        buf.meta.offload = offload;
        batch.commit();
    }

    fn rx_v2(&mut self, id: PortId, batch: &mut Batch) -> usize {
        let start = batch.len();
        while !batch.is_full() {
            let slot = self.ring.slot(self.next_slot);
            // SAFETY: `slot` is the 16-byte aligned start of a slot in the live mapping;
            // `tp_status` is the first field of `tpacket2_hdr`.
            let status = unsafe { status_word(slot) };
            // Acquire pairs with the kernel's write barrier before it sets TP_STATUS_USER: the
            // header and frame bytes it wrote are visible once we see the flag.
            if status.load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                break;
            }
            // SAFETY: the slot holds a tpacket2_hdr at its start, ours while the status is USER.
            let h = unsafe { ptr::read(slot.cast::<libc::tpacket2_hdr>()) };
            let info = FrameInfo {
                mac: h.tp_mac,
                snaplen: h.tp_snaplen,
                len: h.tp_len,
            };
            self.deliver(slot, self.ring.frame_size, info, id, batch);
            // Release: all our reads of the slot happen before the kernel may reuse it.
            status.store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.next_slot = (self.next_slot + 1) % self.ring.frame_nr;
        }
        batch.len() - start
    }

    fn rx_v3(&mut self, id: PortId, batch: &mut Batch) -> usize {
        // Offsets inside struct tpacket_block_desc (its header union is 8-byte aligned).
        const BLOCK_STATUS: usize = 8;
        const NUM_PKTS: usize = 12;
        const OFFSET_TO_FIRST: usize = 16;
        let start = batch.len();
        let bsize = self.ring.block_size;
        while !batch.is_full() {
            let block = self.ring.block(self.v3.block);
            // SAFETY: `block` is the page-aligned start of a block in the live mapping and
            // `block_status` sits at offset 8 of `tpacket_block_desc`.
            let status = unsafe { status_word(block.add(BLOCK_STATUS)) };
            if !self.v3.open {
                // Acquire pairs with the kernel's write barrier before it closes the block.
                if status.load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
                    break;
                }
                // SAFETY: both words lie in the block descriptor of a block we now own.
                let (num, first) = unsafe {
                    (
                        ptr::read(block.add(NUM_PKTS).cast::<u32>()),
                        ptr::read(block.add(OFFSET_TO_FIRST).cast::<u32>()),
                    )
                };
                self.v3 = V3Cursor {
                    block: self.v3.block,
                    open: true,
                    left: num,
                    offset: first as usize,
                };
            }
            while self.v3.left > 0 && !batch.is_full() {
                let off = self.v3.offset;
                if off
                    .checked_add(size_of::<libc::tpacket3_hdr>())
                    .is_none_or(|end| end > bsize)
                {
                    // A kernel layout we do not understand: give the rest of the block up.
                    self.skipped += u64::from(self.v3.left);
                    self.v3.left = 0;
                    break;
                }
                // SAFETY: `off + sizeof(tpacket3_hdr) <= block_size` (checked) and the block is
                // ours until handed back; read_unaligned needs no alignment guarantee.
                let h = unsafe { ptr::read_unaligned(block.add(off).cast::<libc::tpacket3_hdr>()) };
                // SAFETY: `off < block_size`, inside the block.
                let frame = unsafe { block.add(off) };
                let info = FrameInfo {
                    mac: h.tp_mac,
                    snaplen: h.tp_snaplen,
                    len: h.tp_len,
                };
                self.deliver(frame, bsize - off, info, id, batch);
                self.v3.left -= 1;
                self.v3.offset = off.saturating_add(h.tp_next_offset as usize);
                if self.v3.left > 0 && h.tp_next_offset == 0 {
                    self.skipped += u64::from(self.v3.left);
                    self.v3.left = 0;
                }
            }
            if self.v3.left > 0 {
                // The batch is full: resume in this block on the next call.
                break;
            }
            // Release: all our reads of the block happen before the kernel may refill it.
            status.store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.v3 = V3Cursor {
                block: (self.v3.block + 1) % self.ring.block_nr,
                ..V3Cursor::default()
            };
        }
        batch.len() - start
    }

    /// Send the prepared messages; returns (sent, dropped).
    fn flush_tx(&mut self) -> (usize, usize) {
        let count = self.tx.frames.len();
        if count == 0 {
            return (0, 0);
        }
        let niov = if self.vnet_hdr { 2 } else { 1 };
        for (k, &(p, l)) in self.tx.frames.iter().enumerate() {
            let iov = &mut self.tx.iovs[k];
            if self.vnet_hdr {
                iov[0] = libc::iovec {
                    iov_base: self.tx.vnet[k].as_mut_ptr().cast(),
                    iov_len: VNET_HDR_LEN,
                };
                iov[1] = libc::iovec {
                    iov_base: p.cast_mut().cast(),
                    iov_len: l,
                };
            } else {
                iov[0] = libc::iovec {
                    iov_base: p.cast_mut().cast(),
                    iov_len: l,
                };
            }
            let m = &mut self.tx.msgs[k];
            m.msg_hdr.msg_name = ptr::null_mut();
            m.msg_hdr.msg_namelen = 0;
            m.msg_hdr.msg_iov = iov.as_mut_ptr();
            m.msg_hdr.msg_iovlen = niov;
            m.msg_hdr.msg_control = ptr::null_mut();
            m.msg_hdr.msg_controllen = 0;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
        let (mut sent, mut dropped, mut at, mut eintr) = (0, 0, 0, 0);
        while at < count {
            // SAFETY: `msgs[at..count]` are initialised above; each points to iovecs in
            // `self.tx.iovs`, vnet headers in `self.tx.vnet` and frame bytes in the caller's
            // batch, all alive and unmoved for the duration of the call; the kernel only reads
            // them (and writes `msg_len`). MSG_DONTWAIT: never blocks.
            let rc = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    self.tx.msgs.as_mut_ptr().add(at),
                    (count - at) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                sent += rc as usize;
                at += rc as usize;
                continue;
            }
            let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            match errno {
                libc::EINTR if eintr < 4 => eintr += 1,
                // This one frame is refused (too large, malformed): skip it, send the rest.
                libc::EMSGSIZE | libc::EINVAL | libc::EFAULT => {
                    dropped += 1;
                    at += 1;
                }
                // Device full, down or gone: the rest of the burst is dropped.
                _ => {
                    dropped += count - at;
                    break;
                }
            }
        }
        self.tx.frames.clear();
        (sent, dropped)
    }

    /// Complete a frame's offloads in software and send each resulting frame (vnet_hdr off).
    fn send_completed(&mut self, frame: &[u8], o: &Offload) -> bool {
        let fd = self.fd.as_raw_fd();
        let mut all_ok = true;
        let seg = segment(frame, o, &mut self.scratch, |f| {
            if all_ok {
                // SAFETY: `f` is a live slice for the duration of the call; the kernel only
                // reads it. The socket is bound, so no destination address is needed.
                let n = unsafe { libc::send(fd, f.as_ptr().cast(), f.len(), libc::MSG_DONTWAIT) };
                all_ok = n >= 0;
            }
        });
        seg.is_ok() && all_ok
    }
}

/// The interface's hardware address (`SIOCGIFHWADDR`).
fn hw_addr(s: RawFd, ifname: &str) -> io::Result<Mac> {
    let mut ifr = MaybeUninit::<libc::ifreq>::zeroed();
    // SAFETY: an all-zero ifreq is valid; we write the name (shorter than IFNAMSIZ, checked by
    // `check_ifname`, so the NUL terminator stays) and pass the struct to the ioctl it is made for.
    let rc = unsafe {
        let r = ifr.as_mut_ptr();
        for (i, b) in ifname.bytes().enumerate() {
            (*r).ifr_name[i] = b as libc::c_char;
        }
        libc::ioctl(s, libc::SIOCGIFHWADDR, r)
    };
    if rc < 0 {
        return Err(os_err(ifname, "SIOCGIFHWADDR"));
    }
    // SAFETY: the ioctl succeeded, so `ifru_hwaddr` holds the address.
    let sa = unsafe { ifr.assume_init().ifr_ifru.ifru_hwaddr };
    let d = sa.sa_data;
    Ok([
        d[0] as u8, d[1] as u8, d[2] as u8, d[3] as u8, d[4] as u8, d[5] as u8,
    ])
}

impl Port for AfPacketPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self) -> Mac {
        self.mac
    }

    fn rx_burst(&mut self, id: PortId, batch: &mut Batch) -> io::Result<usize> {
        Ok(match self.kind {
            RingKind::V2 => self.rx_v2(id, batch),
            RingKind::V3 => self.rx_v3(id, batch),
        })
    }

    fn tx_burst(&mut self, batch: &Batch, idx: &[u16]) -> TxResult {
        let mut res = TxResult::default();
        self.tx.frames.clear();
        for &i in idx {
            let i = usize::from(i);
            if i >= batch.len() {
                res.dropped += 1;
                continue;
            }
            let pkt = batch.get(i);
            if !self.vnet_hdr && !pkt.meta.offload.is_plain() {
                // Keep the burst's order: what is prepared goes first.
                let (s, d) = self.flush_tx();
                res.sent += s;
                res.dropped += d;
                if self.send_completed(pkt.data(), &pkt.meta.offload) {
                    res.sent += 1;
                } else {
                    res.dropped += 1;
                }
                continue;
            }
            let k = self.tx.frames.len();
            if self.vnet_hdr {
                self.tx.vnet[k] = emit_vnet_hdr(&pkt.meta.offload);
            }
            let d = pkt.data();
            self.tx.frames.push((d.as_ptr(), d.len()));
            if self.tx.frames.len() == TX_CHUNK {
                let (s, d) = self.flush_tx();
                res.sent += s;
                res.dropped += d;
            }
        }
        let (s, d) = self.flush_tx();
        res.sent += s;
        res.dropped += d;
        res
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn take_device_drops(&mut self) -> u64 {
        let mut st = libc::tpacket_stats_v3 {
            tp_packets: 0,
            tp_drops: 0,
            tp_freeze_q_cnt: 0,
        };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st`/`len` are live; the kernel writes at most `len` bytes (a tpacket_stats
        // for V2, whose first two fields match, or a tpacket_stats_v3) and resets its counters.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut st).cast(),
                &raw mut len,
            )
        };
        let kernel = if rc == 0 { u64::from(st.tp_drops) } else { 0 };
        kernel + std::mem::take(&mut self.skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_geometry() {
        // Every V2 slot holds a 64 KiB super-frame behind the kernel's 76-byte prefix.
        assert!(V2_FRAME_SIZE as usize >= 76 + crate::packet::MAX_FRAME);
        assert_eq!(V2_FRAME_SIZE % 16, 0, "TPACKET_ALIGNMENT");
        assert_eq!(V2_FRAME_NR, 255);
        assert!(V2_BLOCK_SIZE.is_power_of_two() && V3_BLOCK_SIZE.is_power_of_two());
        assert!(V3_BLOCK_SIZE as usize > 76 + crate::packet::MAX_FRAME);
    }

    #[test]
    fn v2_slots_shrink_to_the_largest_frame() {
        assert_eq!(v2_frame_size(None), V2_FRAME_SIZE);
        assert_eq!(v2_frame_size(Some(1514)), 2048);
        assert_eq!(v2_frame_size(Some(0)), 2048);
        assert_eq!(v2_frame_size(Some(9014)), 16384);
        assert_eq!(v2_frame_size(Some(65549)), V2_FRAME_SIZE);
        assert_eq!(v2_frame_size(Some(usize::MAX)), V2_FRAME_SIZE);
        // 17 blocks of 1 MiB hold 8704 MTU-sized slots.
        assert_eq!(
            (V2_BLOCK_SIZE / v2_frame_size(Some(1514))) * V2_BLOCK_NR,
            8704
        );
    }

    #[test]
    fn open_refuses_bad_and_missing_interfaces() {
        let e = AfPacketPort::open("a/b", &AfPacketOptions::default())
            .err()
            .expect("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = AfPacketPort::open("sl-nonexistent", &AfPacketOptions::default())
            .err()
            .expect("refused");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("sl-nonexistent"), "{e}");
    }

    #[test]
    fn default_options() {
        let o = AfPacketOptions::default();
        assert_eq!(o.ring, RingKind::V2);
        assert!(o.vnet_hdr);
        assert_eq!(o.mac, None);
    }
}
