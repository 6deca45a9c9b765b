//! Packet buffers and batches.
//!
//! A [`PacketBuf`] is one preallocated buffer with headroom in front of the frame, so that
//! later stages (overlay encapsulation) can prepend headers without copying. A [`Batch`] is a
//! fixed set of buffers that a port fills on receive and that the pipeline works on in place.
//! Nothing here allocates after construction: the packet path reuses the same buffers forever.

/// Bytes kept free in front of every received frame (outer Ethernet + IPv4 + UDP + VXLAN is 50).
pub const HEADROOM: usize = 128;
/// The largest frame a buffer holds: a 64 KiB GSO super-frame plus its Ethernet header.
pub const MAX_FRAME: usize = 65536 + 14 + 4;
/// Total size of one buffer.
pub const BUF_CAP: usize = HEADROOM + MAX_FRAME;

/// Identifies a port inside one engine (index into the engine's port table).
pub type PortId = u16;

pub use encap::offload::{GsoKind, Offload};

/// Per-packet metadata carried through the pipeline.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta {
    /// Port the frame arrived on.
    pub in_port: PortId,
    /// Port the pipeline decided to send it out of; `None` = dropped or consumed.
    pub out_port: Option<PortId>,
    pub offload: Offload,
}

/// One packet buffer: `[headroom | frame | free]`.
pub struct PacketBuf {
    buf: Box<[u8]>,
    head: usize,
    len: usize,
    pub meta: Meta,
}

impl Default for PacketBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl PacketBuf {
    pub fn new() -> Self {
        PacketBuf {
            buf: vec![0u8; BUF_CAP].into_boxed_slice(),
            head: HEADROOM,
            len: 0,
            meta: Meta::default(),
        }
    }

    /// Forget the frame and metadata; the buffer is ready to receive again.
    pub fn reset(&mut self) {
        self.head = HEADROOM;
        self.len = 0;
        self.meta = Meta::default();
    }

    /// The frame, starting with the Ethernet header.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.len]
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.head + self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The space a port writes a received frame into (everything after the headroom).
    /// Call [`PacketBuf::set_len`] afterwards with the number of bytes written.
    pub fn rx_space(&mut self) -> &mut [u8] {
        self.head = HEADROOM;
        &mut self.buf[HEADROOM..]
    }

    /// Set the frame length (bytes from the current head). Clamped to the buffer's capacity.
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(self.buf.len() - self.head);
    }

    /// Copy `frame` in as the whole frame (after the standard headroom). Returns false, leaving
    /// the buffer empty, if it does not fit.
    pub fn fill(&mut self, frame: &[u8]) -> bool {
        self.head = HEADROOM;
        if frame.len() > MAX_FRAME {
            self.len = 0;
            return false;
        }
        self.buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        self.len = frame.len();
        true
    }

    /// Grow the frame at the front by `n` bytes (taken from the headroom) and return the whole
    /// frame. `None` if the headroom is too small.
    pub fn push_front(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.head {
            return None;
        }
        self.head -= n;
        self.len += n;
        Some(self.data_mut())
    }

    /// Remove `n` bytes from the front of the frame. `false` if the frame is shorter.
    pub fn pull_front(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.head += n;
        self.len -= n;
        true
    }

    /// Space available behind the frame, for growing it in place.
    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.head - self.len
    }

    /// The frame plus `extra` bytes behind it (for building a larger packet in place);
    /// `None` if the buffer cannot hold it. Call [`PacketBuf::set_len`] with the final length.
    pub fn data_with_tail(&mut self, extra: usize) -> Option<&mut [u8]> {
        if extra > self.tailroom() {
            return None;
        }
        let end = self.head + self.len + extra;
        Some(&mut self.buf[self.head..end])
    }
}

/// A fixed set of buffers: ports append received frames, the pipeline processes them in place.
pub struct Batch {
    bufs: Vec<PacketBuf>,
    len: usize,
}

impl Batch {
    /// A batch of `cap` buffers, all allocated now.
    pub fn new(cap: usize) -> Self {
        Batch {
            bufs: (0..cap).map(|_| PacketBuf::new()).collect(),
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.bufs.len()
    }

    /// Empty the batch (buffers are kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The next free buffer, reset, for a port to receive into. The frame only counts once
    /// [`Batch::commit`] is called. `None` when the batch is full.
    pub fn next_free(&mut self) -> Option<&mut PacketBuf> {
        let b = self.bufs.get_mut(self.len)?;
        b.reset();
        Some(b)
    }

    /// Count the buffer returned by the last [`Batch::next_free`] as received.
    pub fn commit(&mut self) {
        if self.len < self.bufs.len() {
            self.len += 1;
        }
    }

    /// Append a copy of `frame` (tests, pcap replay, locally generated packets).
    pub fn push_copy(&mut self, frame: &[u8], meta: Meta) -> bool {
        match self.next_free() {
            Some(b) => {
                if !b.fill(frame) {
                    return false;
                }
                b.meta = meta;
                self.commit();
                true
            }
            None => false,
        }
    }

    pub fn get(&self, i: usize) -> &PacketBuf {
        &self.bufs[..self.len][i]
    }

    pub fn get_mut(&mut self, i: usize) -> &mut PacketBuf {
        &mut self.bufs[..self.len][i]
    }

    pub fn iter(&self) -> impl Iterator<Item = &PacketBuf> {
        self.bufs[..self.len].iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut PacketBuf> {
        self.bufs[..self.len].iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_push_and_pull() {
        let mut b = PacketBuf::new();
        assert!(b.fill(&[1, 2, 3]));
        let d = b.push_front(2).unwrap();
        d[0] = 9;
        d[1] = 8;
        assert_eq!(b.data(), &[9, 8, 1, 2, 3]);
        assert!(b.pull_front(2));
        assert_eq!(b.data(), &[1, 2, 3]);
        assert!(b.push_front(HEADROOM + 1).is_none());
        assert!(!b.pull_front(4));
    }

    #[test]
    fn batch_fills_and_clears() {
        let mut batch = Batch::new(2);
        assert!(batch.push_copy(&[1], Meta::default()));
        assert!(batch.push_copy(&[2, 2], Meta::default()));
        assert!(!batch.push_copy(&[3], Meta::default()));
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.get(1).data(), &[2, 2]);
        batch.clear();
        assert!(batch.is_empty());
    }
}
