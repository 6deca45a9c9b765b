//! UDP datagrams (RFC 768) over IPv4.
//!
//! Owns: the view [`Packet`] and its checksum rules. Promises: [`Packet::new_checked`] accepts
//! a buffer of at least 8 bytes whose length field is between 8 and the buffer length (bytes
//! after `len` are ignored); afterwards no accessor or setter can panic, even if `set_len`
//! writes a bad value (the payload is clamped to the buffer).
//!
//! Checksum rules: a stored checksum of 0 means "no checksum" ([`Packet::verify_checksum`]
//! accepts it); a computed checksum of 0 is sent as 0xffff ([`Packet::fill_checksum`]).

use std::net::Ipv4Addr;

use crate::checksum;
use crate::ipv4::protocol;
pub use crate::Error;

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// Field offsets.
pub mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking; accessors panic if it is shorter than 8 bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking the header length and the length field.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(u16::from_be_bytes([b[4], b[5]]));
        if len < HEADER_LEN || len > b.len() {
            return Err(Error::BadUdpLength);
        }
        Ok(Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn be16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    pub fn src_port(&self) -> u16 {
        self.be16(field::SRC_PORT.start)
    }

    pub fn dst_port(&self) -> u16 {
        self.be16(field::DST_PORT.start)
    }

    /// The length field: header plus payload.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        self.be16(field::LENGTH.start)
    }

    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM.start)
    }

    /// The datagram as the length field delimits it (clamped to the buffer).
    pub fn datagram(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..usize::from(self.len()).clamp(HEADER_LEN.min(b.len()), b.len())]
    }

    /// Bytes `8..len` (clamped to the buffer).
    pub fn payload(&self) -> &[u8] {
        self.datagram().get(HEADER_LEN..).unwrap_or(&[])
    }

    fn sum_with_pseudo(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
        let d = self.datagram();
        checksum::pseudo_v4_len32(src, dst, protocol::UDP, d.len() as u32) + checksum::sum(d)
    }

    /// True when the checksum is correct for this source and destination, or absent (0).
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0 || checksum::verify_sum(self.sum_with_pseudo(src, dst))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn put16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_src_port(&mut self, v: u16) {
        self.put16(field::SRC_PORT.start, v);
    }

    pub fn set_dst_port(&mut self, v: u16) {
        self.put16(field::DST_PORT.start, v);
    }

    pub fn set_len(&mut self, v: u16) {
        self.put16(field::LENGTH.start, v);
    }

    pub fn set_checksum(&mut self, v: u16) {
        self.put16(field::CHECKSUM.start, v);
    }

    /// Bytes `8..len` (clamped), mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.datagram().len();
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..len)
            .unwrap_or(&mut [])
    }

    /// Updates the checksum incrementally after a 16-bit word it covers (a port) changed from
    /// `old` to `new`, RFC 1624. A datagram without checksum (0) is left without; a result of 0
    /// is stored as 0xffff.
    pub fn update_checksum16(&mut self, old: u16, new: u16) {
        let c = self.checksum();
        if c != 0 {
            let n = checksum::update16(c, old, new);
            self.set_checksum(if n == 0 { 0xffff } else { n });
        }
    }

    /// Like [`Packet::update_checksum16`] for a 32-bit quantity it covers: an address of the
    /// pseudo-header (NAT).
    pub fn update_checksum32(&mut self, old: u32, new: u32) {
        let c = self.checksum();
        if c != 0 {
            let n = checksum::update32(c, old, new);
            self.set_checksum(if n == 0 { 0xffff } else { n });
        }
    }

    /// Computes the checksum with the IPv4 pseudo-header and stores it (0 is sent as 0xffff).
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let c = checksum::fold(self.sum_with_pseudo(src, dst));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

/// Writes an 8-byte UDP header at the start of `buf` with checksum 0 (fill it afterwards with
/// [`Packet::fill_checksum`] once the payload is in place).
///
/// # Panics
/// If `buf` is shorter than [`HEADER_LEN`].
pub fn emit_header(buf: &mut [u8], src_port: u16, dst_port: u16, payload_len: u16) {
    let mut p = Packet::new_unchecked(&mut buf[..HEADER_LEN]);
    p.set_src_port(src_port);
    p.set_dst_port(dst_port);
    p.set_len(payload_len.saturating_add(HEADER_LEN as u16));
    p.set_checksum(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

    /// A real UDP datagram ("hello sluice", 10.77.0.1:55835 -> 10.77.0.2:9999) captured on a
    /// veth with tx checksum offload: the checksum field still holds the pseudo-header sum
    /// (0x14c2), the kernel's CHECKSUM_PARTIAL state.
    static HELLO_PARTIAL: [u8; 20] = [
        0xda, 0x1b, 0x27, 0x0f, 0x00, 0x14, 0x14, 0xc2, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x73,
        0x6c, 0x75, 0x69, 0x63, 0x65,
    ];

    #[test]
    fn parse_real_datagram_and_fill() {
        let p = Packet::new_checked(&HELLO_PARTIAL[..]).unwrap();
        assert_eq!(p.src_port(), 55835);
        assert_eq!(p.dst_port(), 9999);
        assert_eq!(p.len(), 20);
        assert_eq!(p.payload(), b"hello sluice");
        // The partial value is the folded pseudo-header sum, not a valid checksum.
        assert_eq!(
            p.checksum(),
            !checksum::fold(checksum::pseudo_v4(A, B, 17, 20))
        );
        assert!(!p.verify_checksum(A, B));
        let mut b = HELLO_PARTIAL;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(A, B);
        assert!(p.verify_checksum(A, B));
        assert!(!p.verify_checksum(A, Ipv4Addr::new(10, 77, 0, 3)));
        let (h, payload) = etherparse::UdpHeader::from_slice(&b).unwrap();
        assert_eq!(
            h.calc_checksum_ipv4_raw(A.octets(), B.octets(), payload)
                .unwrap(),
            h.checksum
        );
    }

    #[test]
    fn zero_checksum_rules() {
        let mut b = HELLO_PARTIAL;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_checksum(0);
        assert!(p.verify_checksum(A, B), "0 means no checksum");
        // Find a payload whose checksum computes to 0: the field must then carry 0xffff.
        // With checksum field 0 and the 2 last payload bytes free, pick them so the sum is 0xffff.
        p.payload_mut()[10] = 0;
        p.payload_mut()[11] = 0;
        let s = checksum::pseudo_v4(A, B, 17, 20) + checksum::sum(&b);
        let fix = checksum::fold(s); // adding `fix` makes the sum fold to 0xffff
        b[18..20].copy_from_slice(&fix.to_be_bytes());
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(A, B);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(A, B));
    }

    #[test]
    fn length_errors() {
        assert_eq!(
            Packet::new_checked(&HELLO_PARTIAL[..7]),
            Err(Error::Truncated)
        );
        let mut b = HELLO_PARTIAL;
        b[5] = 7;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadUdpLength));
        b[5] = 21;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadUdpLength));
        b[5] = 10;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload(), b"he");
        let mut b = HELLO_PARTIAL;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_len(60000);
        assert_eq!(p.payload().len(), 12);
        p.set_len(2);
        assert!(p.payload().is_empty());
        assert!(p.payload_mut().is_empty());
    }

    proptest! {
        #[test]
        fn nat_rewrite_incremental_matches_full(src in any::<u32>(), dst in any::<u32>(), new_dst in any::<u32>(),
                                                sp in any::<u16>(), new_dp in any::<u16>(),
                                                data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (src, dst, new_dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst), Ipv4Addr::from(new_dst));
            let mut b = vec![0u8; 8 + data.len()];
            emit_header(&mut b, sp, 53, data.len() as u16);
            let mut p = Packet::new_checked(&mut b[..]).unwrap();
            p.payload_mut().copy_from_slice(&data);
            p.fill_checksum(src, dst);
            p.update_checksum32(dst.into(), new_dst.into());
            p.update_checksum16(53, new_dp);
            p.set_dst_port(new_dp);
            prop_assert!(p.verify_checksum(src, new_dst));
            prop_assert_ne!(p.checksum(), 0);
            let h = etherparse::UdpHeader { source_port: sp, destination_port: new_dp, length: b.len() as u16, checksum: 0 };
            let full = h.calc_checksum_ipv4_raw(src.octets(), new_dst.octets(), &data).unwrap();
            // Equal, up to the two representations of zero.
            let c = Packet::new_checked(&b[..]).unwrap().checksum();
            prop_assert!(c == full || (c, full) == (0xffff, 0) || (c, full) == (0, 0xffff), "{:#x} vs {:#x}", c, full);
            // No checksum stays no checksum.
            let mut p = Packet::new_checked(&mut b[..]).unwrap();
            p.set_checksum(0);
            p.update_checksum32(1, 2);
            prop_assert_eq!(p.checksum(), 0);
        }

        #[test]
        fn fill_matches_etherparse(src in any::<u32>(), dst in any::<u32>(), sp in any::<u16>(), dp in any::<u16>(),
                                   data in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            let mut b = vec![0u8; 8 + data.len()];
            emit_header(&mut b, sp, dp, data.len() as u16);
            let mut p = Packet::new_checked(&mut b[..]).unwrap();
            p.payload_mut().copy_from_slice(&data);
            p.fill_checksum(src, dst);
            prop_assert!(p.verify_checksum(src, dst));
            let c = p.checksum();
            let h = etherparse::UdpHeader { source_port: sp, destination_port: dp, length: b.len() as u16, checksum: 0 };
            prop_assert_eq!(h.calc_checksum_ipv4_raw(src.octets(), dst.octets(), &data).unwrap(), c);
        }

        #[test]
        fn random_bytes_never_panic(d in proptest::collection::vec(any::<u8>(), 0..40), src in any::<u32>()) {
            if let Ok(p) = Packet::new_checked(&d[..]) {
                let _ = (p.src_port(), p.dst_port(), p.payload(), p.verify_checksum(src.into(), src.into()));
                prop_assert!(usize::from(p.len()) <= d.len());
            }
        }
    }
}
