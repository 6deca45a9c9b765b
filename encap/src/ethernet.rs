//! Ethernet II frames (no 802.1Q parsing: a VLAN tag shows up as ethertype [`ethertype::VLAN`]).
//!
//! Owns: the 14-byte header view [`Frame`], MAC address helpers and ethertype constants.
//! Promises: after [`Frame::new_checked`] succeeds no accessor or setter can panic; the
//! frame check sequence is not part of the buffer (ports hand frames without FCS).

use core::ops::Range;

pub use crate::Error;

/// Length of the Ethernet II header (destination, source, ethertype).
pub const HEADER_LEN: usize = 14;

/// The broadcast address ff:ff:ff:ff:ff:ff.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// EtherType values the dataplane looks at.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const IPV6: u16 = 0x86dd;
    pub const VLAN: u16 = 0x8100;
}

/// Field offsets.
pub mod field {
    use core::ops::{Range, RangeFrom};
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: RangeFrom<usize> = 14..;
}

/// True for group (multicast and broadcast) addresses: the I/G bit, the lowest bit of the
/// first octet, is set. Accepts `[u8; 6]`, `&[u8; 6]` or a slice; an empty slice is not
/// multicast.
pub fn is_multicast(mac: impl AsRef<[u8]>) -> bool {
    mac.as_ref().first().is_some_and(|b| b & 1 != 0)
}

/// True for ff:ff:ff:ff:ff:ff.
pub fn is_broadcast(mac: impl AsRef<[u8]>) -> bool {
    mac.as_ref() == BROADCAST
}

fn mac_at(b: &[u8], r: Range<usize>) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[r]);
    m
}

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking it; accessors panic if it is shorter than
    /// [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wraps a buffer, checking that it holds a whole header. Use this on untrusted input.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Checks that the buffer holds the 14-byte header.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole frame.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn dst(&self) -> [u8; 6] {
        mac_at(self.buffer.as_ref(), field::DST)
    }

    pub fn src(&self) -> [u8; 6] {
        mac_at(self.buffer.as_ref(), field::SRC)
    }

    pub fn ethertype(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::ETHERTYPE.start], b[field::ETHERTYPE.start + 1]])
    }

    /// Everything after the 14-byte header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac);
    }

    pub fn set_src(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac);
    }

    pub fn set_ethertype(&mut self, ethertype: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// Writes a 14-byte Ethernet header at the start of `buf`.
///
/// # Panics
/// If `buf` is shorter than [`HEADER_LEN`].
pub fn emit_header(buf: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    let mut f = Frame::new_unchecked(&mut buf[..HEADER_LEN]);
    f.set_dst(dst);
    f.set_src(src);
    f.set_ethertype(ethertype);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A real ARP request captured on a veth (10.77.0.1 asks for 10.77.0.2).
    static ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x4d,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x4d, 0x00, 0x02,
    ];

    #[test]
    fn parse_real_frame() {
        let f = Frame::new_checked(&ARP_REQUEST[..]).unwrap();
        assert_eq!(f.dst(), BROADCAST);
        assert_eq!(f.src(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.ethertype(), ethertype::ARP);
        assert_eq!(f.payload().len(), 28);
        assert!(is_multicast(f.dst()));
        assert!(is_broadcast(f.dst()));
        assert!(!is_multicast(f.src()));
        assert!(is_multicast([0x33, 0x33, 0, 0, 0, 0x16]));
        let group: &[u8; 6] = &[0x01, 0x00, 0x5e, 0, 0, 1];
        assert!(is_multicast(group));
        // Agrees with etherparse.
        let e = etherparse::Ethernet2Slice::from_slice_without_fcs(&ARP_REQUEST).unwrap();
        assert_eq!(e.ether_type().0, f.ethertype());
        assert_eq!(e.source(), f.src());
        assert_eq!(e.payload().payload, f.payload());
    }

    #[test]
    fn truncated() {
        assert_eq!(
            Frame::new_checked(&ARP_REQUEST[..13]),
            Err(Error::Truncated)
        );
        assert_eq!(Frame::new_checked(&[][..]), Err(Error::Truncated));
        let f = Frame::new_checked(&ARP_REQUEST[..14]).unwrap();
        assert!(f.payload().is_empty());
    }

    #[test]
    fn setters_write_bytes() {
        let mut b = [0u8; 20];
        emit_header(&mut b, BROADCAST, [2, 0, 0, 0, 0, 9], ethertype::IPV4);
        assert_eq!(
            &b[..14],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 9, 8, 0]
        );
        let mut f = Frame::new_checked(&mut b[..]).unwrap();
        f.set_ethertype(ethertype::VLAN);
        f.payload_mut()[0] = 0xaa;
        assert_eq!(f.ethertype(), 0x8100);
        assert_eq!(b[14], 0xaa);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(d in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(f) = Frame::new_checked(&d[..]) {
                let _ = (f.dst(), f.src(), f.ethertype(), f.payload());
                prop_assert!(d.len() >= HEADER_LEN);
            } else {
                prop_assert!(d.len() < HEADER_LEN);
            }
        }
    }
}
