//! TCP segments (RFC 9293) over IPv4: the header view and the checksum. No state machine
//! (the engine's own stack is smoltcp).
//!
//! Owns: the view [`Packet`] and the flag bits. Promises: [`Packet::new_checked`] accepts a
//! buffer of at least 20 bytes whose data offset is at least 5 words and fits in the buffer;
//! afterwards no accessor or setter can panic. TCP has no length field: the segment is the
//! whole buffer, so give the view exactly the IPv4 payload (`ipv4::Packet::payload`). The
//! checksum covers the whole buffer.

use std::net::Ipv4Addr;

use crate::checksum;
use crate::ipv4::protocol;
pub use crate::Error;

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

// Flag bits of byte 13.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

/// The flag bits again, under a module name (`tcp::flags::SYN`).
pub mod flags {
    pub use super::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};
}

/// Field offsets.
pub mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    /// Data offset in the high nibble (the low nibble holds reserved bits and NS).
    pub const DATA_OFFSET: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// A view of a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking; accessors panic if it is shorter than 20 bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking the header length and the data offset.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let hl = usize::from(b[field::DATA_OFFSET] >> 4) * 4;
        if hl < HEADER_LEN || hl > b.len() {
            return Err(Error::BadDataOffset);
        }
        Ok(Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn be16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    fn be32(&self, at: usize) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    pub fn src_port(&self) -> u16 {
        self.be16(field::SRC_PORT.start)
    }

    pub fn dst_port(&self) -> u16 {
        self.be16(field::DST_PORT.start)
    }

    pub fn seq(&self) -> u32 {
        self.be32(field::SEQ.start)
    }

    pub fn ack(&self) -> u32 {
        self.be32(field::ACK.start)
    }

    /// Header length in bytes (data offset * 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// The flag byte (FIN .. CWR); NS is not included.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn window(&self) -> u16 {
        self.be16(field::WINDOW.start)
    }

    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM.start)
    }

    pub fn urgent(&self) -> u16 {
        self.be16(field::URGENT.start)
    }

    fn header_end(&self) -> usize {
        let b = self.buffer.as_ref();
        self.header_len().clamp(HEADER_LEN.min(b.len()), b.len())
    }

    /// The options bytes (clamped to the buffer).
    pub fn options(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(HEADER_LEN..self.header_end())
            .unwrap_or(&[])
    }

    /// Everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_end()..]
    }

    fn sum_with_pseudo(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
        let b = self.buffer.as_ref();
        checksum::pseudo_v4_len32(src, dst, protocol::TCP, b.len() as u32) + checksum::sum(b)
    }

    /// True when the checksum over the whole buffer with the IPv4 pseudo-header is correct.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        checksum::verify_sum(self.sum_with_pseudo(src, dst))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn put16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn put32(&mut self, at: usize, v: u32) {
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_src_port(&mut self, v: u16) {
        self.put16(field::SRC_PORT.start, v);
    }

    pub fn set_dst_port(&mut self, v: u16) {
        self.put16(field::DST_PORT.start, v);
    }

    pub fn set_seq(&mut self, v: u32) {
        self.put32(field::SEQ.start, v);
    }

    pub fn set_ack(&mut self, v: u32) {
        self.put32(field::ACK.start, v);
    }

    /// Sets the data offset from a header length in bytes (rounded down to words, at most 60).
    /// Accessors stay panic-free whatever the value.
    pub fn set_header_len(&mut self, len: usize) {
        let words = (len / 4).min(15) as u8;
        let b = self.buffer.as_mut();
        b[field::DATA_OFFSET] = (words << 4) | (b[field::DATA_OFFSET] & 0x0f);
    }

    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::FLAGS] = f;
    }

    pub fn set_window(&mut self, v: u16) {
        self.put16(field::WINDOW.start, v);
    }

    pub fn set_checksum(&mut self, v: u16) {
        self.put16(field::CHECKSUM.start, v);
    }

    pub fn set_urgent(&mut self, v: u16) {
        self.put16(field::URGENT.start, v);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_end();
        &mut self.buffer.as_mut()[start..]
    }

    /// Updates the checksum incrementally after a 16-bit word it covers (a port) changed from
    /// `old` to `new` (RFC 1624).
    pub fn update_checksum16(&mut self, old: u16, new: u16) {
        let c = checksum::update16(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// Updates the checksum incrementally after a 32-bit quantity it covers (a pseudo-header
    /// address, for NAT) changed from `old` to `new` (RFC 1624).
    pub fn update_checksum32(&mut self, old: u32, new: u32) {
        let c = checksum::update32(self.checksum(), old, new);
        self.set_checksum(c);
    }

    /// Computes the checksum over the whole buffer with the IPv4 pseudo-header and stores it.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let c = checksum::fold(self.sum_with_pseudo(src, dst));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

    /// A real SYN-ACK (10.77.0.2:5001 -> 10.77.0.1:39638, MSS 1460, SACK, timestamps,
    /// window scale 10) sent by the kernel on a veth, TCP part only. Its checksum is still
    /// the pseudo-header sum 0x14cb (tx checksum offload).
    static SYN_ACK_PARTIAL: [u8; 40] = [
        0x13, 0x89, 0x9a, 0xd6, 0xaa, 0xfe, 0x5e, 0xab, 0x17, 0xe5, 0xcb, 0x68, 0xa0, 0x12, 0xfe,
        0x88, 0x14, 0xcb, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0xda, 0xcb,
        0x2d, 0x91, 0xdb, 0x28, 0xa1, 0x66, 0x01, 0x03, 0x03, 0x0a,
    ];

    #[test]
    fn parse_real_segment_and_fill() {
        let p = Packet::new_checked(&SYN_ACK_PARTIAL[..]).unwrap();
        assert_eq!(p.src_port(), 5001);
        assert_eq!(p.dst_port(), 39638);
        assert_eq!(p.seq(), 0xaafe5eab);
        assert_eq!(p.ack(), 0x17e5cb68);
        assert_eq!(p.header_len(), 40);
        assert_eq!(p.flags(), SYN | ACK);
        assert_eq!(p.window(), 65160);
        assert_eq!(
            p.checksum(),
            !checksum::fold(checksum::pseudo_v4(B, A, 6, 40))
        );
        assert_eq!(p.options(), &SYN_ACK_PARTIAL[20..]);
        assert!(p.payload().is_empty());
        assert!(!p.verify_checksum(B, A));
        let mut b = SYN_ACK_PARTIAL;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(B, A);
        assert!(p.verify_checksum(B, A));
        let (h, payload) = etherparse::TcpHeader::from_slice(&b).unwrap();
        assert!(h.syn && h.ack && !h.fin);
        assert_eq!(
            h.calc_checksum_ipv4_raw(B.octets(), A.octets(), payload)
                .unwrap(),
            h.checksum
        );
    }

    #[test]
    fn data_offset_errors() {
        assert_eq!(
            Packet::new_checked(&SYN_ACK_PARTIAL[..19]),
            Err(Error::Truncated)
        );
        let mut b = SYN_ACK_PARTIAL;
        b[12] = 0x40;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadDataOffset));
        b[12] = 0xb0;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadDataOffset));
        assert_eq!(
            Packet::new_checked(&SYN_ACK_PARTIAL[..39]),
            Err(Error::BadDataOffset)
        );
        assert_eq!(
            Packet::new_checked(&b[..30]).unwrap_err().to_string(),
            "TCP data offset below 5 words or beyond the buffer"
        );
        let mut b = SYN_ACK_PARTIAL;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_header_len(60);
        assert!(p.payload().is_empty());
        assert_eq!(p.options().len(), 20);
        p.set_header_len(8);
        assert_eq!(p.payload().len(), 20);
        assert!(p.options().is_empty());
    }

    proptest! {
        #[test]
        fn nat_rewrite_incremental_matches_full(src in any::<u32>(), dst in any::<u32>(), new_src in any::<u32>(),
                                                new_sp in any::<u16>(), seq in any::<u32>(),
                                                data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (src, dst, new_src) = (Ipv4Addr::from(src), Ipv4Addr::from(dst), Ipv4Addr::from(new_src));
            let mut b = vec![0u8; 20 + data.len()];
            let mut p = Packet::new_unchecked(&mut b[..]);
            p.set_header_len(20);
            p.set_src_port(8080);
            p.set_dst_port(443);
            p.set_seq(seq);
            p.set_flags(ACK);
            p.payload_mut().copy_from_slice(&data);
            p.fill_checksum(src, dst);
            p.update_checksum32(src.into(), new_src.into());
            p.update_checksum16(8080, new_sp);
            p.set_src_port(new_sp);
            prop_assert!(p.verify_checksum(new_src, dst));
            let c = p.checksum();
            let (h, payload) = etherparse::TcpHeader::from_slice(&b).unwrap();
            let full = h.calc_checksum_ipv4_raw(new_src.octets(), dst.octets(), payload).unwrap();
            prop_assert!(c == full || c ^ full == 0xffff && data.iter().all(|&x| x == 0), "{:#x} vs {:#x}", c, full);
        }

        #[test]
        fn fill_matches_etherparse(src in any::<u32>(), dst in any::<u32>(), sp in any::<u16>(), dp in any::<u16>(),
                                   seq in any::<u32>(), ack in any::<u32>(), flags in any::<u8>(), win in any::<u16>(),
                                   opt_words in 0usize..=10,
                                   data in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let hl = 20 + opt_words * 4;
            let mut b = vec![0u8; hl + data.len()];
            // NOP options.
            b[20..hl].fill(1);
            let mut p = Packet::new_unchecked(&mut b[..]);
            p.set_header_len(hl);
            p.set_src_port(sp);
            p.set_dst_port(dp);
            p.set_seq(seq);
            p.set_ack(ack);
            p.set_flags(flags);
            p.set_window(win);
            p.payload_mut().copy_from_slice(&data);
            p.fill_checksum(src, dst);
            prop_assert!(p.verify_checksum(src, dst));
            let c = p.checksum();
            let p = Packet::new_checked(&b[..]).unwrap();
            prop_assert_eq!((p.seq(), p.ack(), p.flags(), p.window(), p.header_len()), (seq, ack, flags, win, hl));
            prop_assert_eq!(p.payload(), &data[..]);
            let (h, payload) = etherparse::TcpHeader::from_slice(&b).unwrap();
            prop_assert_eq!(h.calc_checksum_ipv4_raw(src.octets(), dst.octets(), payload).unwrap(), c);
            prop_assert_eq!(h.sequence_number, seq);
            prop_assert_eq!(h.fin, flags & FIN != 0);
            prop_assert_eq!(h.cwr, flags & CWR != 0);
        }

        #[test]
        fn random_bytes_never_panic(d in proptest::collection::vec(any::<u8>(), 0..80), src in any::<u32>()) {
            if let Ok(p) = Packet::new_checked(&d[..]) {
                let _ = (p.options(), p.payload(), p.verify_checksum(src.into(), src.into()), p.flags());
                prop_assert!(p.header_len() <= d.len());
            }
        }
    }
}
