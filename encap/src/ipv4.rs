//! IPv4 headers (RFC 791).
//!
//! Owns: the packet view [`Packet`], its [`Repr`] (20-byte headers without options) and the
//! protocol numbers the dataplane handles.
//!
//! Promises: [`Packet::new_checked`] returns a distinct [`Error`] per malformation, checked in
//! this order: [`Error::Truncated`] (< 20 bytes), [`Error::BadVersion`], [`Error::BadIhl`]
//! (IHL < 5), [`Error::HeaderTruncated`] (IHL * 4 > buffer), [`Error::BadTotalLength`] (total
//! length < header length or > buffer). It does not look at the checksum (see
//! [`Packet::verify_checksum`]) nor at fragmentation. Bytes after `total_len` (Ethernet padding)
//! are allowed and ignored by [`Packet::payload`]. After `new_checked` no accessor or setter
//! can panic. Plain setters do not touch the checksum; [`Packet::decrement_ttl`],
//! [`Packet::set_src_update_checksum`] and [`Packet::set_dst_update_checksum`] keep it correct
//! incrementally (RFC 1624).

use std::net::Ipv4Addr;

use crate::checksum;
pub use crate::Error;

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

/// IP protocol numbers.
pub mod protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// Field offsets.
pub mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking; accessors panic if it is shorter than 20 bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after validating the version and the three length fields.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Error::BadVersion);
        }
        let hlen = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hlen < HEADER_LEN {
            return Err(Error::BadIhl);
        }
        if hlen > b.len() {
            return Err(Error::HeaderTruncated);
        }
        let total = usize::from(be16(b, field::LENGTH.start));
        if total < hlen || total > b.len() {
            return Err(Error::BadTotalLength);
        }
        Ok(Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole buffer, including any bytes after `total_len`.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL * 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DSCP/ECN byte (formerly TOS).
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// The total length field: header plus payload, in bytes.
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH.start)
    }

    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT.start)
    }

    fn flags_offset(&self) -> u16 {
        be16(self.buffer.as_ref(), field::FLG_OFF.start)
    }

    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }

    /// Fragment offset in bytes (the field times 8).
    pub fn frag_offset(&self) -> u16 {
        (self.flags_offset() & OFFSET_MASK) << 3
    }

    /// True for any fragment (more fragments follow, or a nonzero offset).
    pub fn is_fragment(&self) -> bool {
        self.flags_offset() & (FLAG_MF | OFFSET_MASK) != 0
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    pub fn src(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::SRC.start)
    }

    pub fn dst(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::DST.start)
    }

    /// The header bytes, options included (clamped to the buffer).
    pub fn header(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..self.header_len().min(b.len())]
    }

    /// The options (empty for a 20-byte header).
    pub fn options(&self) -> &[u8] {
        let h = self.header();
        h.get(HEADER_LEN..).unwrap_or(&[])
    }

    fn payload_range(&self) -> core::ops::Range<usize> {
        let len = self.buffer.as_ref().len();
        let end = usize::from(self.total_len()).min(len);
        let start = self.header_len().min(end);
        start..end
    }

    /// The payload: bytes `header_len..total_len` (clamped to the buffer).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.payload_range()]
    }

    /// True when the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.header())
    }

    /// Partial sum of the TCP/UDP pseudo-header for this packet's addresses, protocol and
    /// payload length.
    pub fn pseudo_header_sum(&self) -> u32 {
        let plen = self.payload_range().len();
        checksum::pseudo_v4_len32(self.src(), self.dst(), self.protocol(), plen as u32)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn put16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    pub fn set_protocol(&mut self, p: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = p;
    }

    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    /// Sets the total length field. Accessors stay panic-free whatever the value.
    pub fn set_total_len(&mut self, len: u16) {
        self.put16(field::LENGTH.start, len);
    }

    pub fn set_ident(&mut self, id: u16) {
        self.put16(field::IDENT.start, id);
    }

    pub fn set_dont_frag(&mut self, df: bool) {
        let v = self.flags_offset();
        self.put16(
            field::FLG_OFF.start,
            if df { v | FLAG_DF } else { v & !FLAG_DF },
        );
    }

    pub fn set_checksum(&mut self, c: u16) {
        self.put16(field::CHECKSUM.start, c);
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::data(self.header());
        self.set_checksum(c);
    }

    /// Decrements the TTL and updates the header checksum incrementally (RFC 1624). Returns the
    /// new TTL. A TTL of 0 is left as it is (the caller should have answered with ICMP Time
    /// Exceeded before forwarding).
    pub fn decrement_ttl(&mut self) -> u8 {
        let ttl = self.ttl();
        if ttl == 0 {
            return 0;
        }
        let proto = self.protocol();
        let old = u16::from_be_bytes([ttl, proto]);
        let new = u16::from_be_bytes([ttl - 1, proto]);
        let c = checksum::update16(self.checksum(), old, new);
        self.set_ttl(ttl - 1);
        self.set_checksum(c);
        ttl - 1
    }

    /// Rewrites the source address and updates the header checksum incrementally. The caller
    /// still has to update a TCP/UDP checksum (see [`checksum::update32`]).
    pub fn set_src_update_checksum(&mut self, a: Ipv4Addr) {
        let c = checksum::update32(self.checksum(), self.src().into(), a.into());
        self.set_src(a);
        self.set_checksum(c);
    }

    /// Rewrites the destination address and updates the header checksum incrementally.
    pub fn set_dst_update_checksum(&mut self, a: Ipv4Addr) {
        let c = checksum::update32(self.checksum(), self.dst().into(), a.into());
        self.set_dst(a);
        self.set_checksum(c);
    }

    /// The header bytes, mutable.
    pub fn header_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let b = self.buffer.as_mut();
        let end = hl.min(b.len());
        &mut b[..end]
    }

    /// The payload (`header_len..total_len`, clamped), mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let r = self.payload_range();
        &mut self.buffer.as_mut()[r]
    }
}

/// An IPv4 header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
    /// Payload bytes after the header (total length - 20).
    pub payload_len: u16,
}

impl Repr {
    /// Reads a checked packet (options and DSCP/ECN are not represented).
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        let plen = p.payload_range().len();
        Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            // payload_range is within total_len, a u16.
            payload_len: u16::try_from(plen).unwrap_or(u16::MAX),
        }
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header (version 4, IHL 5, DSCP/ECN 0, no fragmentation) with its
    /// checksum at the start of `buf`. The total length is `20 + payload_len`, saturating at
    /// 65535 (a payload_len above 65515 is a caller bug).
    ///
    /// # Panics
    /// If `buf` is shorter than [`HEADER_LEN`].
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..HEADER_LEN];
        b[field::VER_IHL] = 0x45;
        b[field::DSCP_ECN] = 0;
        let total = self.payload_len.saturating_add(HEADER_LEN as u16);
        b[field::LENGTH].copy_from_slice(&total.to_be_bytes());
        b[field::IDENT].copy_from_slice(&self.ident.to_be_bytes());
        let fo: u16 = if self.dont_frag { FLAG_DF } else { 0 };
        b[field::FLG_OFF].copy_from_slice(&fo.to_be_bytes());
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = self.protocol;
        b[field::CHECKSUM].copy_from_slice(&[0, 0]);
        b[field::SRC].copy_from_slice(&self.src.octets());
        b[field::DST].copy_from_slice(&self.dst.octets());
        let c = checksum::data(b);
        b[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A real ICMP echo request (10.77.0.1 -> 10.77.0.2, ping -s 24) captured on a veth,
    /// Ethernet header removed.
    static ECHO_REQUEST: [u8; 52] = [
        0x45, 0x00, 0x00, 0x34, 0x9e, 0x9f, 0x40, 0x00, 0x40, 0x01, 0x87, 0x8d, 0x0a, 0x4d, 0x00,
        0x01, 0x0a, 0x4d, 0x00, 0x02, 0x08, 0x00, 0xac, 0xf0, 0x1e, 0x73, 0x00, 0x01, 0x02, 0xeb,
        0x07, 0x6b, 0x00, 0x00, 0x00, 0x00, 0xcf, 0xf4, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
        0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
    ];

    #[test]
    fn parse_real_packet() {
        let p = Packet::new_checked(&ECHO_REQUEST[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 52);
        assert_eq!(p.ident(), 0x9e9f);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), protocol::ICMP);
        assert_eq!(p.checksum(), 0x878d);
        assert!(p.verify_checksum());
        assert_eq!(p.src(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(p.header(), &ECHO_REQUEST[..20]);
        assert_eq!(p.payload(), &ECHO_REQUEST[20..]);
        assert!(p.options().is_empty());
        let e = etherparse::Ipv4HeaderSlice::from_slice(&ECHO_REQUEST).unwrap();
        assert_eq!(e.to_header().calc_header_checksum(), p.checksum());
        assert_eq!(e.identification(), p.ident());
    }

    #[test]
    fn errors_are_distinct() {
        let mut b = ECHO_REQUEST;
        assert_eq!(Packet::new_checked(&b[..19]), Err(Error::Truncated));
        b[0] = 0x65;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadVersion));
        b[0] = 0x44;
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadIhl));
        b[0] = 0x4f; // 60 bytes of header, 52 in the buffer
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::HeaderTruncated));
        b[0] = 0x45;
        b[3] = 19; // total length below the header
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadTotalLength));
        b[3] = 53; // total length beyond the buffer
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadTotalLength));
        b[3] = 20;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.payload().is_empty());
        // Ethernet padding after total_len is ignored.
        let mut padded = [0u8; 64];
        padded[..52].copy_from_slice(&ECHO_REQUEST);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload(), &ECHO_REQUEST[20..]);
        // The checksum is not checked by new_checked.
        let mut bad = ECHO_REQUEST;
        bad[11] ^= 1;
        let p = Packet::new_checked(&bad[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(
            Error::BadIhl.to_string(),
            "IPv4 header length (IHL) below 5 words"
        );
    }

    #[test]
    fn setters_keep_accessors_in_bounds() {
        let mut b = ECHO_REQUEST;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_total_len(9000);
        assert_eq!(p.payload().len(), 32);
        p.set_total_len(3);
        assert!(p.payload().is_empty());
        assert!(p.payload_mut().is_empty());
    }

    #[test]
    fn decrement_ttl_all_values() {
        for ttl in 0..=255u8 {
            let mut b = ECHO_REQUEST;
            let mut p = Packet::new_checked(&mut b[..]).unwrap();
            p.set_ttl(ttl);
            p.fill_checksum();
            let new = p.decrement_ttl();
            assert_eq!(new, ttl.saturating_sub(1));
            assert_eq!(p.ttl(), new);
            assert!(p.verify_checksum(), "ttl {ttl}");
            let incremental = p.checksum();
            p.fill_checksum();
            assert_eq!(incremental, p.checksum(), "ttl {ttl}");
        }
    }

    #[test]
    fn address_rewrite_keeps_checksum() {
        let mut b = ECHO_REQUEST;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.set_dst_update_checksum(Ipv4Addr::new(192, 168, 7, 9));
        p.set_src_update_checksum(Ipv4Addr::new(172, 16, 0, 1));
        assert!(p.verify_checksum());
        let c = p.checksum();
        p.fill_checksum();
        assert_eq!(c, p.checksum());
    }

    fn header_strategy() -> impl Strategy<Value = Vec<u8>> {
        (0usize..=10, proptest::collection::vec(any::<u8>(), 60)).prop_map(|(opt_words, mut v)| {
            let hl = 20 + opt_words * 4;
            v.truncate(hl);
            v[0] = 0x40 | (hl / 4) as u8;
            v[2..4].copy_from_slice(&(hl as u16).to_be_bytes());
            v
        })
    }

    proptest! {
        #[test]
        fn decrement_ttl_random_headers(mut h in header_strategy()) {
            let mut p = Packet::new_checked(&mut h[..]).unwrap();
            p.fill_checksum();
            let before = p.ttl();
            p.decrement_ttl();
            prop_assert_eq!(p.ttl(), before.saturating_sub(1));
            let incremental = p.checksum();
            p.fill_checksum();
            prop_assert_eq!(incremental, p.checksum());
            prop_assert!(p.verify_checksum());
        }

        #[test]
        fn emit_parse_round_trip(src in any::<u32>(), dst in any::<u32>(), protocol in any::<u8>(),
                                 ttl in any::<u8>(), ident in any::<u16>(), dont_frag in any::<bool>(),
                                 payload_len in 0u16..2000) {
            let r = Repr { src: src.into(), dst: dst.into(), protocol, ttl, ident, dont_frag, payload_len };
            let mut b = vec![0u8; 20 + usize::from(payload_len)];
            r.emit(&mut b);
            let p = Packet::new_checked(&b[..]).unwrap();
            prop_assert!(p.verify_checksum());
            prop_assert_eq!(Repr::parse(&p), r);
            // etherparse agrees on every field and on the checksum.
            let (e, _) = etherparse::Ipv4Header::from_slice(&b).unwrap();
            prop_assert_eq!(e.calc_header_checksum(), p.checksum());
            prop_assert_eq!(e.header_checksum, p.checksum());
            prop_assert_eq!(e.total_len, 20 + payload_len);
            prop_assert_eq!(e.dont_fragment, dont_frag);
            prop_assert_eq!(e.time_to_live, ttl);
            prop_assert_eq!(e.protocol.0, protocol);
            prop_assert_eq!(e.source, Ipv4Addr::from(src).octets());
        }

        #[test]
        fn random_bytes_never_panic(d in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Packet::new_checked(&d[..]) {
                let _ = (p.header(), p.payload(), p.options(), p.verify_checksum(), p.src(), p.dst(),
                         p.frag_offset(), p.pseudo_header_sum(), Repr::parse(&p));
                prop_assert!(p.header_len() <= usize::from(p.total_len()));
                prop_assert!(usize::from(p.total_len()) <= d.len());
            }
        }
    }
}
