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

/// Splits the IPv4 packet `packet` (checked, DF ignored: the caller decides whether it may be
/// fragmented) into fragments of at most `mtu` bytes each (RFC 791 section 3.2), calling
/// `emit` once per fragment in order; returns how many. A packet that fits is emitted once,
/// unchanged, without copying.
///
/// Each fragment carries the original header with its total length, the MF flag and the
/// fragment offset (relative to the original's own offset: a fragment can be fragmented again)
/// set, and its checksum recomputed; the first keeps every option, the others only the options
/// whose "copied" bit is set (padded to a 4-byte multiple with end-of-option bytes). Payload
/// pieces are multiples of 8 bytes except the last; the last keeps the original's MF flag.
/// Bytes after the total length (Ethernet padding) are ignored.
///
/// `scratch` must hold `mtu` bytes. Errors (nothing is emitted): the packet does not parse
/// ([`Packet::new_checked`]), `scratch` is shorter than `mtu` (`Truncated`), or `mtu` leaves
/// no room for 8 payload bytes after a header (`BadTotalLength`).
pub fn fragment(
    packet: &[u8],
    mtu: usize,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, Error> {
    let p = Packet::new_checked(packet)?;
    let total = usize::from(p.total_len());
    if total <= mtu {
        emit(&packet[..total]);
        return Ok(1);
    }
    if scratch.len() < mtu {
        return Err(Error::Truncated);
    }
    let hl = p.header_len();
    // Options copied into every fragment (RFC 791: type octet's high bit).
    let mut later_opts = [0u8; 40];
    let mut later_len = 0;
    let opts = p.options();
    let mut i = 0;
    while i < opts.len() {
        let t = opts[i];
        let len = match t {
            0 => break,
            1 => 1,
            _ => match opts.get(i + 1) {
                Some(&l) if usize::from(l) >= 2 && i + usize::from(l) <= opts.len() => {
                    usize::from(l)
                }
                _ => break,
            },
        };
        if t & 0x80 != 0 {
            later_opts[later_len..later_len + len].copy_from_slice(&opts[i..i + len]);
            later_len += len;
        }
        i += len;
    }
    let later_hl = HEADER_LEN + later_len.div_ceil(4) * 4;
    let first_room = mtu.saturating_sub(hl) / 8 * 8;
    let later_room = mtu.saturating_sub(later_hl) / 8 * 8;
    if first_room == 0 || later_room == 0 {
        return Err(Error::BadTotalLength);
    }
    let payload = &packet[hl..total];
    let base = usize::from(p.frag_offset());
    let orig_mf = p.more_frags();
    let mut off = 0;
    let mut n = 0;
    while off < payload.len() {
        let (h, room) = if off == 0 {
            (hl, first_room)
        } else {
            (later_hl, later_room)
        };
        let take = room.min(payload.len() - off);
        let last = off + take == payload.len();
        let out = &mut scratch[..h + take];
        if off == 0 {
            out[..hl].copy_from_slice(&packet[..hl]);
        } else {
            out[..HEADER_LEN].copy_from_slice(&packet[..HEADER_LEN]);
            out[HEADER_LEN..HEADER_LEN + later_len].copy_from_slice(&later_opts[..later_len]);
            out[HEADER_LEN + later_len..later_hl].fill(0);
            out[field::VER_IHL] = 0x40 | (later_hl / 4) as u8;
        }
        out[h..].copy_from_slice(&payload[off..off + take]);
        let frag_off = ((base + off) / 8) as u16 & OFFSET_MASK;
        let df = p.flags_offset() & FLAG_DF;
        let mf = if !last || orig_mf { FLAG_MF } else { 0 };
        let mut f = Packet::new_unchecked(&mut out[..]);
        f.put16(field::FLG_OFF.start, df | mf | frag_off);
        f.set_total_len((h + take) as u16);
        f.fill_checksum();
        emit(out);
        n += 1;
        off += take;
    }
    Ok(n)
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

    fn packet_with(payload_len: usize, df: bool, options: &[u8]) -> Vec<u8> {
        let hl = HEADER_LEN + options.len();
        let mut b = vec![0u8; hl + payload_len];
        Repr {
            src: Ipv4Addr::new(10, 244, 1, 10),
            dst: Ipv4Addr::new(10, 244, 2, 10),
            protocol: protocol::UDP,
            ttl: 63,
            ident: 0x1234,
            dont_frag: df,
            payload_len: payload_len as u16,
        }
        .emit(&mut b);
        b[HEADER_LEN..hl].copy_from_slice(options);
        b[0] = 0x40 | (hl / 4) as u8;
        let total = (hl + payload_len) as u16;
        b[2..4].copy_from_slice(&total.to_be_bytes());
        for (i, x) in b[hl..].iter_mut().enumerate() {
            *x = (i * 7 % 251) as u8;
        }
        Packet::new_unchecked(&mut b[..]).fill_checksum();
        b
    }

    fn frags(packet: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        let mut scratch = vec![0u8; mtu];
        let mut out = Vec::new();
        fragment(packet, mtu, &mut scratch, |f| out.push(f.to_vec())).unwrap();
        out
    }

    /// Reassembles fragments (by offset) and checks every header.
    fn reassemble(fs: &[Vec<u8>], mtu: usize) -> Vec<u8> {
        let mut data = Vec::new();
        for (i, f) in fs.iter().enumerate() {
            let p = Packet::new_checked(&f[..]).unwrap();
            assert!(p.verify_checksum(), "fragment {i}");
            assert!(f.len() <= mtu, "fragment {i} is {} > {mtu}", f.len());
            assert_eq!(usize::from(p.total_len()), f.len());
            assert_eq!(usize::from(p.frag_offset()), data.len(), "fragment {i}");
            assert_eq!(p.more_frags(), i + 1 < fs.len(), "fragment {i}");
            assert_eq!(p.ident(), 0x1234);
            if i + 1 < fs.len() {
                assert_eq!(p.payload().len() % 8, 0);
            }
            data.extend_from_slice(p.payload());
        }
        data
    }

    #[test]
    fn fragments_reassemble_to_the_original() {
        let pkt = packet_with(3000, false, &[]);
        let fs = frags(&pkt, 1450);
        assert_eq!(fs.len(), 3);
        assert_eq!(fs[0].len(), 20 + 1424);
        assert_eq!(reassemble(&fs, 1450), pkt[20..].to_vec());
        // Fits: emitted as it is.
        assert_eq!(frags(&pkt, 3020), vec![pkt.clone()]);
    }

    #[test]
    fn only_copied_options_follow_into_later_fragments() {
        // A copied option (type 0x94: router alert, 4 bytes) and a non-copied one (NOP, 1
        // byte; padded with EOL to 8 bytes of options).
        let opts = [0x01, 0x94, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00];
        let pkt = packet_with(2000, false, &opts);
        let fs = frags(&pkt, 1000);
        assert_eq!(&fs[0][20..28], &opts);
        for f in &fs[1..] {
            let p = Packet::new_checked(&f[..]).unwrap();
            assert_eq!(p.header_len(), 24);
            assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
        }
        let mut data = Vec::new();
        for f in &fs {
            data.extend_from_slice(Packet::new_checked(&f[..]).unwrap().payload());
        }
        assert_eq!(data, pkt[28..].to_vec());
    }

    #[test]
    fn a_fragment_fragments_again_with_its_offset() {
        let mut pkt = packet_with(2000, false, &[]);
        // Pretend it is the middle fragment of something bigger: offset 800, MF set.
        pkt[6..8].copy_from_slice(&(0x2000u16 | 100).to_be_bytes());
        Packet::new_unchecked(&mut pkt[..]).fill_checksum();
        let fs = frags(&pkt, 1000);
        let first = Packet::new_checked(&fs[0][..]).unwrap();
        assert_eq!(first.frag_offset(), 800);
        let last = Packet::new_checked(&fs[fs.len() - 1][..]).unwrap();
        assert!(
            last.more_frags(),
            "the original had MF: so does its last piece"
        );
    }

    #[test]
    fn fragment_errors_emit_nothing() {
        let pkt = packet_with(100, true, &[]);
        let mut called = false;
        let mut small = [0u8; 10];
        assert_eq!(
            fragment(&pkt, 60, &mut small, |_| called = true),
            Err(Error::Truncated)
        );
        let mut scratch = [0u8; 64];
        assert_eq!(
            fragment(&pkt, 27, &mut scratch, |_| called = true),
            Err(Error::BadTotalLength)
        );
        assert_eq!(
            fragment(&pkt[..10], 60, &mut scratch, |_| called = true),
            Err(Error::Truncated)
        );
        assert!(!called);
    }

    proptest! {
        #[test]
        fn fragmenting_never_panics_and_always_reassembles(
            len in 0usize..5000, mtu in 28usize..3000, df: bool,
        ) {
            let pkt = packet_with(len, df, &[]);
            let mut scratch = vec![0u8; mtu];
            let mut out = Vec::new();
            if fragment(&pkt, mtu, &mut scratch, |f| out.push(f.to_vec())).is_ok() {
                if pkt.len() <= mtu {
                    prop_assert_eq!(out, vec![pkt.clone()]);
                } else {
                    prop_assert_eq!(reassemble(&out, mtu), pkt[20..].to_vec());
                }
            }
        }

        #[test]
        fn fragment_of_garbage_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..200), mtu in 0usize..300,
        ) {
            let mut scratch = vec![0u8; 300];
            let _ = fragment(&data, mtu, &mut scratch, |_| {});
        }
    }
}
