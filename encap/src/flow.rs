//! Flow hashing for tunnel entropy: the outer UDP source port of an encapsulated packet.
//!
//! Owns: the hash of an inner flow ([`hash_frame`] for an Ethernet frame, [`hash_ipv4`] for a
//! bare IPv4 packet) and its mapping into a port range ([`port_in_range`]), with the IANA
//! dynamic range [`EPHEMERAL_MIN`]`..=`[`EPHEMERAL_MAX`] that RFC 7348 section 5 recommends
//! for the VXLAN source port.
//!
//! Promises: every function is total. It reads untrusted bytes, never panics, never
//! allocates, and is deterministic (no per-process seed): the same inner flow always gets the
//! same port, on every node and across restarts, so a flow's packets keep one underlay path
//! (ECMP, RSS) and stay in order.
//!
//! What a flow is, the way Linux's flow dissector sees it for `udp_flow_src_port`:
//! - IPv4 (ethertype 0x0800 with a header that [`ipv4::Packet::new_checked`] accepts): source
//!   and destination address and protocol, plus the two ports for TCP, UDP, UDP-Lite, SCTP and
//!   DCCP when the transport header's first 4 bytes are present. Fragments (first or not) are
//!   hashed without ports, so every fragment of a datagram takes the same path.
//! - Anything else (ARP, IPv6, a malformed IPv4 header, a runt frame): the destination and
//!   source MAC addresses and the ethertype, i.e. the bytes that exist.
//!
//! The hash itself is not Linux's (jhash of the dissected keys with a boot-time random seed):
//! sluice's ports differ from the kernel's for the same flow, which is fine, since the
//! receiver never looks at the source port.

use crate::ethernet::{self, ethertype};
use crate::ipv4;

/// Lowest port of the IANA dynamic/private range (RFC 6335), RFC 7348's recommendation.
pub const EPHEMERAL_MIN: u16 = 49152;
/// Highest port of the IANA dynamic/private range.
pub const EPHEMERAL_MAX: u16 = 65535;

/// IP protocols whose first 4 payload bytes are a source and a destination port.
fn has_ports(proto: u8) -> bool {
    matches!(
        proto,
        ipv4::protocol::TCP | ipv4::protocol::UDP | 33 /* DCCP */ | 132 /* SCTP */ | 136 /* UDP-Lite */
    )
}

/// 64-bit multiplicative mixing step (golden-ratio constant, then a rotation so that the high
/// bits of one word reach the low bits of the next).
fn mix(h: u64, v: u64) -> u64 {
    (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
}

/// MurmurHash3's 64-bit finalizer (full avalanche), folded to 32 bits.
fn finish(mut h: u64) -> u32 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    // The high half is the best mixed; the cast keeps exactly those 32 bits.
    (h >> 32) as u32
}

/// Domain separators, so that an IPv4 key and a MAC key with equal numbers do not collide
/// by construction.
const SEED_IPV4: u64 = 0x736c_7569_6365_0004;
const SEED_ETH: u64 = 0x736c_7569_6365_0002;

/// Hash of a bare IPv4 packet's flow (addresses, protocol, ports when present and the packet
/// is not a fragment). `None` when `packet` is not an IPv4 header that
/// [`ipv4::Packet::new_checked`] accepts.
pub fn hash_ipv4(packet: &[u8]) -> Option<u32> {
    let p = ipv4::Packet::new_checked(packet).ok()?;
    let mut h = mix(SEED_IPV4, u64::from(u32::from(p.src())));
    h = mix(h, u64::from(u32::from(p.dst())));
    let proto = p.protocol();
    let ports = if has_ports(proto) && !p.is_fragment() {
        p.payload()
            .get(..4)
            .map(|b| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
    } else {
        None
    };
    // Bit 8 marks "ports present", so (proto, no ports) differs from (proto, ports 0:0).
    h = mix(h, u64::from(proto) | (u64::from(ports.is_some()) << 8));
    if let Some(ports) = ports {
        h = mix(h, ports);
    }
    Some(finish(h))
}

/// Hash of an Ethernet frame's flow: [`hash_ipv4`] of the payload for IPv4, else the MAC
/// addresses and ethertype (whatever of the first 14 bytes exists).
pub fn hash_frame(frame: &[u8]) -> u32 {
    if let Ok(f) = ethernet::Frame::new_checked(frame) {
        if f.ethertype() == ethertype::IPV4 {
            if let Some(h) = hash_ipv4(f.payload()) {
                return h;
            }
        }
    }
    let head = frame.get(..ethernet::HEADER_LEN).unwrap_or(frame);
    let mut h = SEED_ETH ^ (head.len() as u64);
    for chunk in head.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = mix(h, u64::from_be_bytes(w));
    }
    finish(h)
}

/// Maps a 32-bit hash uniformly onto `min..=max` (multiply-shift, as Linux's
/// `udp_flow_src_port` does, but with `max` reachable). If `max < min` the two are swapped.
pub fn port_in_range(hash: u32, min: u16, max: u16) -> u16 {
    let (lo, hi) = if max < min { (max, min) } else { (min, max) };
    let span = u64::from(hi - lo) + 1;
    // (hash * span) >> 32 < span <= 65536, and lo + that <= hi: no overflow, fits in u16.
    let off = (u64::from(hash) * span) >> 32;
    lo + u16::try_from(off).unwrap_or(0)
}

/// The outer UDP source port for an inner Ethernet frame: [`hash_frame`] mapped into
/// [`EPHEMERAL_MIN`]`..=`[`EPHEMERAL_MAX`].
pub fn frame_source_port(frame: &[u8]) -> u16 {
    port_in_range(hash_frame(frame), EPHEMERAL_MIN, EPHEMERAL_MAX)
}

/// The outer UDP source port for a bare inner IPv4 packet (a packet that is not valid IPv4
/// gets one fixed port of the range).
pub fn ipv4_source_port(packet: &[u8]) -> u16 {
    port_in_range(
        hash_ipv4(packet).unwrap_or_else(|| finish(SEED_IPV4)),
        EPHEMERAL_MIN,
        EPHEMERAL_MAX,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 28];
        ethernet::emit_header(
            &mut f,
            [2, 0, 0, 0, 0, 2],
            [2, 0, 0, 0, 0, 1],
            ethertype::IPV4,
        );
        ipv4::Repr {
            src: src.into(),
            dst: dst.into(),
            protocol: ipv4::protocol::UDP,
            ttl: 64,
            ident: 1,
            dont_frag: true,
            payload_len: 8,
        }
        .emit(&mut f[14..]);
        crate::udp::emit_header(&mut f[34..], sport, dport, 0);
        f
    }

    #[test]
    fn port_range_edges() {
        assert_eq!(port_in_range(0, EPHEMERAL_MIN, EPHEMERAL_MAX), 49152);
        assert_eq!(port_in_range(u32::MAX, EPHEMERAL_MIN, EPHEMERAL_MAX), 65535);
        assert_eq!(port_in_range(u32::MAX, 0, 65535), 65535);
        assert_eq!(port_in_range(0x8000_0000, 0, 65535), 32768);
        assert_eq!(port_in_range(12345, 8472, 8472), 8472);
        assert_eq!(port_in_range(u32::MAX, 100, 10), 100);
    }

    #[test]
    fn ports_and_fields_matter() {
        let a = udp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53);
        let b = udp_frame([10, 0, 0, 1], [10, 0, 0, 2], 1001, 53);
        assert_eq!(hash_frame(&a), hash_frame(&a.clone()));
        assert_ne!(hash_frame(&a), hash_frame(&b));
        assert_eq!(hash_frame(&a), hash_ipv4(&a[14..]).unwrap());
        // The MACs do not matter for IPv4.
        let mut c = a.clone();
        c[0] = 0x42;
        assert_eq!(hash_frame(&a), hash_frame(&c));
        // A fragment drops the ports: two fragments of different "ports" hash alike.
        let mut fa = a.clone();
        let mut fb = b.clone();
        for f in [&mut fa, &mut fb] {
            f[14 + 6] |= 0x20; // MF
        }
        assert_eq!(hash_frame(&fa), hash_frame(&fb));
        assert_ne!(hash_frame(&fa), hash_frame(&a));
        // Non-IPv4 and runts hash their MAC bytes without panicking.
        assert_ne!(hash_frame(&[1, 2, 3]), hash_frame(&[1, 2, 4]));
        let _ = hash_frame(&[]);
        assert!(hash_ipv4(&[0x45]).is_none());
        let p = ipv4_source_port(&[0x45]);
        assert!(p >= EPHEMERAL_MIN);
    }
}
