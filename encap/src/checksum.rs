//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Owns: partial sums ([`sum`]), folding to the stored form ([`fold`], [`data`]), the IPv4
//! pseudo-header ([`pseudo_v4`]), incremental updates of a stored checksum field
//! ([`update16`], [`update32`]) and verification ([`verify`]).
//!
//! Promises: nothing here panics or allocates. A partial sum returned by [`sum`] or
//! [`pseudo_v4`] is at most `0x3_fffc` (in practice `sum` returns at most `0xffff`), so a
//! caller can add thousands of partial sums with plain `u32` `+` and fold once. Partial sums
//! of consecutive byte ranges may be added as long as every range but the last has an even
//! length (the 16-bit word alignment must not shift).

use std::net::Ipv4Addr;

/// Ones'-complement partial sum of `data` read as big-endian 16-bit words (an odd last byte
/// is padded with a zero byte on the right). Not complemented; see [`fold`].
///
/// The result is reduced to at most `0xffff` (carries are folded in), which keeps it
/// congruent to the 16-bit word sum and lets callers add partial sums without overflow.
/// Works 8 bytes at a time.
pub fn sum(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        if let Ok(w) = <[u8; 8]>::try_from(c) {
            let w = u64::from_be_bytes(w);
            // Two 32-bit halves: each addition adds < 2^33, so `acc` cannot overflow before
            // 2^31 chunks (16 GiB), far beyond any frame.
            acc += (w >> 32) + (w & 0xffff_ffff);
        }
    }
    let mut rest = chunks.remainder();
    if rest.len() >= 4 {
        let (head, tail) = rest.split_at(4);
        if let Ok(w) = <[u8; 4]>::try_from(head) {
            acc += u64::from(u32::from_be_bytes(w));
        }
        rest = tail;
    }
    if rest.len() >= 2 {
        let (head, tail) = rest.split_at(2);
        if let Ok(w) = <[u8; 2]>::try_from(head) {
            acc += u64::from(u16::from_be_bytes(w));
        }
        rest = tail;
    }
    if let Some(&b) = rest.first() {
        acc += u64::from(b) << 8;
    }
    fold64(acc)
}

/// Folds a 64-bit accumulator to 16 bits with end-around carries (2^16 = 1 mod 0xffff, so
/// every step keeps the value congruent). Never turns a nonzero sum into zero.
fn fold64(mut acc: u64) -> u32 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves acc <= 0xffff.
    (acc & 0xffff) as u32
}

/// Folds the carries of a partial sum and returns the complemented 16-bit checksum, ready to
/// be stored in a header field.
pub fn fold(sum: u32) -> u16 {
    let folded = fold64(u64::from(sum));
    // fold64 returns at most 0xffff.
    !((folded & 0xffff) as u16)
}

/// The checksum of `data` ready to store: `fold(sum(data))`.
pub fn data(data: &[u8]) -> u16 {
    fold(sum(data))
}

/// Partial sum of the IPv4 pseudo-header (source, destination, zero, protocol, transport
/// length) used by TCP and UDP.
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    pseudo_v4_len32(src, dst, proto, u32::from(len))
}

/// [`pseudo_v4`] with a 32-bit length, as Linux computes it (`csum_tcpudp_nofold`): the length
/// is added as a 32-bit quantity, so a length above 0xffff does not silently wrap.
pub(crate) fn pseudo_v4_len32(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u32) -> u32 {
    let s = u32::from(src);
    let d = u32::from(dst);
    (s >> 16)
        + (s & 0xffff)
        + (d >> 16)
        + (d & 0xffff)
        + u32::from(proto)
        + (len >> 16)
        + (len & 0xffff)
}

/// Updates a stored checksum field `csum` after a 16-bit word of the covered data changed
/// from `old` to `new` (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`).
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!csum) + u32::from(!old) + u32::from(new);
    fold(s)
}

/// Updates a stored checksum field `csum` after a 32-bit (word-aligned) quantity of the covered
/// data, such as an IPv4 address or a TCP sequence number, changed from `old` to `new`.
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!csum) + ((!old) >> 16) + ((!old) & 0xffff) + (new >> 16) + (new & 0xffff);
    fold(s)
}

/// True when `data`, which includes its stored checksum field, sums to `0xffff` (the
/// checksum is correct). All-zero data does not verify.
pub fn verify(data: &[u8]) -> bool {
    fold(sum(data)) == 0
}

/// True when the partial sum `s` (already including the stored checksum) folds to `0xffff`.
pub fn verify_sum(s: u32) -> bool {
    fold(s) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::checksum::Sum16BitWords;
    use proptest::prelude::*;

    /// Byte-by-byte reference: RFC 1071 in its plainest form.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            acc += u64::from(u16::from_be_bytes([data[i], data[i + 1]]));
            i += 2;
        }
        if i < data.len() {
            acc += u64::from(data[i]) << 8;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    /// The IPv4 header of a real ICMP echo request (10.77.0.1 -> 10.77.0.2, captured on a
    /// veth), checksum 0x878d.
    static IPV4_HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x34, 0x9e, 0x9f, 0x40, 0x00, 0x40, 0x01, 0x87, 0x8d, 0x0a, 0x4d, 0x00,
        0x01, 0x0a, 0x4d, 0x00, 0x02,
    ];

    #[test]
    fn real_header_verifies_and_recomputes() {
        assert!(verify(&IPV4_HEADER));
        let mut h = IPV4_HEADER;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(data(&h), 0x878d);
        h[11] = 1;
        assert!(!verify(&h));
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to 0xddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&d), 0xddf2);
        assert_eq!(data(&d), !0xddf2);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(data(&[]), 0xffff);
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0xff; 64]), 0xffff);
        assert_eq!(data(&[0xff; 64]), 0);
        assert!(!verify(&[0u8; 20]));
        assert_eq!(fold(0x1_0000), !1);
        assert_eq!(fold(0xffff_ffff), 0);
    }

    #[test]
    fn pseudo_header_matches_hand_sum() {
        let s = pseudo_v4(
            Ipv4Addr::new(10, 77, 0, 1),
            Ipv4Addr::new(10, 77, 0, 2),
            17,
            20,
        );
        assert_eq!(s, 0x0a4d + 0x0001 + 0x0a4d + 0x0002 + 17 + 20);
    }

    proptest! {
        #[test]
        fn sum_matches_reference_and_etherparse(d in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let ours = data(&d);
            prop_assert_eq!(ours, reference(&d));
            // etherparse sums in native byte order; `to_be` turns its result into the stored value.
            prop_assert_eq!(ours, Sum16BitWords::new().add_slice(&d).ones_complement().to_be());
            prop_assert!(sum(&d) <= 0xffff);
        }

        #[test]
        fn partial_sums_concatenate(a in proptest::collection::vec(any::<u8>(), 0..200),
                                    b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut a = a;
            if a.len() % 2 == 1 { a.pop(); }
            let mut whole = a.clone();
            whole.extend_from_slice(&b);
            prop_assert_eq!(fold(sum(&a) + sum(&b)), data(&whole));
        }

        #[test]
        fn filled_checksum_verifies(d in proptest::collection::vec(any::<u8>(), 2..500), at in any::<usize>()) {
            let mut d = d;
            if d.len() % 2 == 1 { d.push(0); }
            let at = (at % (d.len() / 2)) * 2;
            d[at] = 0;
            d[at + 1] = 0;
            let c = data(&d);
            d[at..at + 2].copy_from_slice(&c.to_be_bytes());
            prop_assert!(verify(&d));
        }

        #[test]
        fn update16_matches_recompute(d in proptest::collection::vec(any::<u8>(), 4..200),
                                      at in any::<usize>(), new in any::<u16>()) {
            let mut d = d;
            if d.len() % 2 == 1 { d.push(0); }
            let words = d.len() / 2;
            // Word 0 holds the checksum, another word changes.
            let at = 1 + at % (words - 1);
            d[0] = 0;
            d[1] = 0;
            let c = data(&d);
            let old = u16::from_be_bytes([d[2 * at], d[2 * at + 1]]);
            d[2 * at..2 * at + 2].copy_from_slice(&new.to_be_bytes());
            d[0..2].copy_from_slice(&c.to_be_bytes());
            let updated = update16(c, old, new);
            // Compare against a full recompute, allowing only the +0/-0 ambiguity that
            // RFC 1624 documents for data that sums to zero.
            d[0] = 0;
            d[1] = 0;
            let full = data(&d);
            prop_assert!(updated == full || (updated ^ full) == 0xffff && d.iter().all(|&b| b == 0),
                "updated {:#x} full {:#x}", updated, full);
            d[0..2].copy_from_slice(&updated.to_be_bytes());
            if d[2..].iter().any(|&b| b != 0) {
                prop_assert!(verify(&d));
            }
        }

        #[test]
        fn update32_matches_recompute(mut d in proptest::collection::vec(any::<u8>(), 12), new in any::<u32>()) {
            d[0] = 0;
            d[1] = 0;
            d[8..12].copy_from_slice(&[0x0a, 0, 0, 1]);
            let c = data(&d);
            let old = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
            d[4..8].copy_from_slice(&new.to_be_bytes());
            prop_assert_eq!(update32(c, old, new), data(&d));
        }
    }
}
