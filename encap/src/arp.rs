//! ARP for Ethernet and IPv4 (RFC 826), the only kind the dataplane answers.
//!
//! Owns: the 28-byte packet view [`Packet`] and its [`Repr`]. Promises: [`Packet::new_checked`]
//! accepts only htype 1 (Ethernet), ptype 0x0800 (IPv4), hlen 6, plen 4 and at least 28 bytes
//! (trailing Ethernet padding is allowed and ignored); afterwards no accessor can panic.

use std::net::Ipv4Addr;

pub use crate::Error;

/// Length of an Ethernet/IPv4 ARP packet.
pub const LEN: usize = 28;

/// `operation` values.
pub const REQUEST: u16 = 1;
pub const REPLY: u16 = 2;

/// Field offsets.
pub mod field {
    use core::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// A view of an ARP packet (the Ethernet payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking; accessors panic if it is shorter than [`LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking its length and that it is Ethernet/IPv4 ARP.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < LEN {
            return Err(Error::Truncated);
        }
        if be16(b, field::HTYPE.start) != 1
            || be16(b, field::PTYPE.start) != 0x0800
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Error::UnsupportedArp);
        }
        Ok(Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn operation(&self) -> u16 {
        be16(self.buffer.as_ref(), field::OPER.start)
    }

    pub fn sender_mac(&self) -> [u8; 6] {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SHA]);
        m
    }

    pub fn sender_ip(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::SPA.start)
    }

    pub fn target_mac(&self) -> [u8; 6] {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::THA]);
        m
    }

    pub fn target_ip(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::TPA.start)
    }
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// The meaning of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl Repr {
    /// Reads a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Repr {
        Repr {
            op: packet.operation(),
            sender_mac: packet.sender_mac(),
            sender_ip: packet.sender_ip(),
            target_mac: packet.target_mac(),
            target_ip: packet.target_ip(),
        }
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        LEN
    }

    /// Writes the 28 bytes (htype 1, ptype 0x0800, hlen 6, plen 4 and the fields) at the start
    /// of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`LEN`].
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..LEN];
        b[field::HTYPE].copy_from_slice(&1u16.to_be_bytes());
        b[field::PTYPE].copy_from_slice(&0x0800u16.to_be_bytes());
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        b[field::OPER].copy_from_slice(&self.op.to_be_bytes());
        b[field::SHA].copy_from_slice(&self.sender_mac);
        b[field::SPA].copy_from_slice(&self.sender_ip.octets());
        b[field::THA].copy_from_slice(&self.target_mac);
        b[field::TPA].copy_from_slice(&self.target_ip.octets());
    }

    /// The reply to this request, sent by `our_mac` which owns `target_ip`.
    pub fn reply(&self, our_mac: [u8; 6]) -> Repr {
        Repr {
            op: REPLY,
            sender_mac: our_mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// ARP payloads of a real request / reply captured on a veth (Ethernet header removed).
    static REQUEST_BYTES: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a,
        0x4d, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x4d, 0x00, 0x02,
    ];
    static REPLY_BYTES: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x0a,
        0x4d, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x4d, 0x00, 0x01,
    ];

    #[test]
    fn parse_real_request_and_build_reply() {
        let p = Packet::new_checked(&REQUEST_BYTES[..]).unwrap();
        let r = Repr::parse(&p);
        assert_eq!(
            r,
            Repr {
                op: REQUEST,
                sender_mac: [2, 0, 0, 0, 0, 1],
                sender_ip: Ipv4Addr::new(10, 77, 0, 1),
                target_mac: [0; 6],
                target_ip: Ipv4Addr::new(10, 77, 0, 2),
            }
        );
        // The kernel's reply is exactly what Repr::reply + emit produce.
        let mut out = [0u8; 28];
        r.reply([2, 0, 0, 0, 0, 2]).emit(&mut out);
        assert_eq!(out, REPLY_BYTES);
        // Cross-check with etherparse.
        let e = etherparse::ArpPacketSlice::from_slice(&REPLY_BYTES)
            .unwrap()
            .to_packet()
            .try_eth_ipv4()
            .unwrap();
        assert_eq!(e.operation.0, REPLY);
        assert_eq!(e.sender_ipv4, [10, 77, 0, 2]);
        assert_eq!(e.target_mac, [2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn rejects() {
        assert_eq!(
            Packet::new_checked(&REQUEST_BYTES[..27]),
            Err(Error::Truncated)
        );
        for (at, v) in [(1, 6u8), (2, 0x86), (4, 8), (5, 16)] {
            let mut b = REQUEST_BYTES;
            b[at] = v;
            assert_eq!(
                Packet::new_checked(&b[..]),
                Err(Error::UnsupportedArp),
                "byte {at}"
            );
        }
        // Ethernet padding after the 28 bytes is fine.
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&REQUEST_BYTES);
        assert_eq!(
            Packet::new_checked(&padded[..]).unwrap().target_ip(),
            Ipv4Addr::new(10, 77, 0, 2)
        );
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(op in any::<u16>(), sm in any::<[u8; 6]>(), si in any::<u32>(),
                                 tm in any::<[u8; 6]>(), ti in any::<u32>()) {
            let r = Repr { op, sender_mac: sm, sender_ip: si.into(), target_mac: tm, target_ip: ti.into() };
            let mut b = [0u8; LEN];
            r.emit(&mut b);
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()), r);
        }

        #[test]
        fn random_bytes_never_panic(d in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = Packet::new_checked(&d[..]) {
                let _ = Repr::parse(&p);
            }
        }
    }
}
