//! IPv4 prefixes and MAC addresses as the control plane reads them from text.
//!
//! Owns [`Ipv4Net`] (a network address plus prefix length, always stored with the host
//! bits cleared when parsed) and [`parse_mac`]. Promises: parsing never panics on any
//! input, rejects ambiguous forms (host bits set, leading zeros, missing `/len`) with a
//! message that says what was expected, and every method on `Ipv4Net` is total, even on a
//! value built by hand with `prefix_len > 32` (treated as 32).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 prefix such as `10.244.1.0/24`. `addr` is the network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

/// Why a string is not a valid IPv4 prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ipv4NetError {
    #[error("`{0}` is not in CIDR notation (expected a.b.c.d/len, e.g. 10.244.0.0/16)")]
    NotCidr(String),
    #[error("`{0}` is not an IPv4 address (expected four numbers 0-255 separated by dots, e.g. 10.244.0.0)")]
    BadAddress(String),
    #[error("prefix length `{0}` is not a number from 0 to 32")]
    BadPrefix(String),
    #[error("{input} has host bits set (expected the network address: {network})")]
    HostBitsSet { input: String, network: Ipv4Net },
}

impl Ipv4Net {
    /// A prefix from an address and a length; the host bits of `addr` must be zero.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Ipv4Net, Ipv4NetError> {
        if prefix_len > 32 {
            return Err(Ipv4NetError::BadPrefix(prefix_len.to_string()));
        }
        let net = Ipv4Net { addr, prefix_len };
        if net.network() != addr {
            return Err(Ipv4NetError::HostBitsSet {
                input: format!("{addr}/{prefix_len}"),
                network: Ipv4Net {
                    addr: net.network(),
                    prefix_len,
                },
            });
        }
        Ok(net)
    }

    fn len(&self) -> u8 {
        self.prefix_len.min(32)
    }

    /// The netmask as a host-order integer (`/24` -> `0xffff_ff00`).
    pub fn mask(&self) -> u32 {
        match self.len() {
            0 => 0,
            n => u32::MAX << (32 - u32::from(n)),
        }
    }

    /// The network address (all host bits zero).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address (all host bits one).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// The first usable host address: network + 1, or the network address itself for
    /// `/31` and `/32`, which have no separate network and broadcast address (RFC 3021).
    pub fn first_host(&self) -> Ipv4Addr {
        let net = u32::from(self.network());
        if self.len() >= 31 {
            Ipv4Addr::from(net)
        } else {
            Ipv4Addr::from(net + 1)
        }
    }

    /// The last usable host address: broadcast - 1, or the broadcast address itself for
    /// `/31` and `/32`.
    pub fn last_host(&self) -> Ipv4Addr {
        let bcast = u32::from(self.broadcast());
        if self.len() >= 31 {
            Ipv4Addr::from(bcast)
        } else {
            Ipv4Addr::from(bcast - 1)
        }
    }

    /// Whether `ip` lies in this prefix (network and broadcast addresses included).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether `other` lies entirely inside this prefix.
    pub fn contains_net(&self, other: &Ipv4Net) -> bool {
        other.len() >= self.len() && self.contains(other.network())
    }

    /// Whether the two prefixes share at least one address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// Whether `ip` is a usable host address of this prefix (inside it, and for prefixes
    /// up to `/30` neither the network nor the broadcast address).
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        self.contains(Ipv4Addr::from(ip))
            && ip >= u32::from(self.first_host())
            && ip <= u32::from(self.last_host())
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Net {
    type Err = Ipv4NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((addr, len)) = s.split_once('/') else {
            return Err(Ipv4NetError::NotCidr(s.to_string()));
        };
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| Ipv4NetError::BadAddress(addr.to_string()))?;
        // Digits only: u8::from_str would accept a leading '+'.
        let prefix_len = match len.parse::<u8>() {
            Ok(n) if n <= 32 && !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(Ipv4NetError::BadPrefix(len.to_string())),
        };
        Ipv4Net::new(addr, prefix_len).map_err(|e| match e {
            Ipv4NetError::HostBitsSet { network, .. } => Ipv4NetError::HostBitsSet {
                input: s.to_string(),
                network,
            },
            other => other,
        })
    }
}

/// Parses a MAC address written as six two-digit hex bytes separated by colons,
/// `aa:bb:cc:dd:ee:ff` (either case). Returns a message saying what was expected otherwise.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bad =
        || format!("`{s}` is not a MAC address (expected six hex bytes like 02:00:00:00:00:01)");
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in out.iter_mut() {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_displays() {
        let n = net("10.244.1.0/24");
        assert_eq!(n.addr, Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(n.prefix_len, 24);
        assert_eq!(n.to_string(), "10.244.1.0/24");
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(net("10.1.2.3/32").to_string(), "10.1.2.3/32");
    }

    #[test]
    fn rejects_host_bits_and_names_the_network() {
        let err = "10.244.1.5/24".parse::<Ipv4Net>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "10.244.1.5/24 has host bits set (expected the network address: 10.244.1.0/24)"
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "10.244.1.0",
            "10.244.1.0/",
            "10.244.1.0/33",
            "10.244.1.0/-1",
            "10.244.1.0/+8",
            "10.244.1/24",
            "10.244.1.0.0/24",
            "010.1.1.0/24",
            "300.1.1.0/24",
            "10.1.1.0/24/1",
            "a.b.c.d/8",
            " 10.0.0.0/8",
            "10.0.0.0/ 8",
            "10.0.0.0/08x",
        ] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad:?} was accepted");
        }
        assert!(matches!(
            "10.0.0.0".parse::<Ipv4Net>(),
            Err(Ipv4NetError::NotCidr(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Ipv4Net>(),
            Err(Ipv4NetError::BadPrefix(_))
        ));
        assert!(matches!(
            "1.2.3/8".parse::<Ipv4Net>(),
            Err(Ipv4NetError::BadAddress(_))
        ));
    }

    #[test]
    fn masks_and_bounds() {
        let n = net("10.244.1.0/24");
        assert_eq!(n.mask(), 0xffff_ff00);
        assert_eq!(n.network(), Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 244, 1, 255));
        assert_eq!(n.first_host(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(n.last_host(), Ipv4Addr::new(10, 244, 1, 254));
        assert_eq!(net("0.0.0.0/0").mask(), 0);
        assert_eq!(net("0.0.0.0/0").broadcast(), Ipv4Addr::BROADCAST);
        assert_eq!(net("1.2.3.4/32").mask(), u32::MAX);
        assert_eq!(net("1.2.3.4/32").first_host(), Ipv4Addr::new(1, 2, 3, 4));
        assert_eq!(net("1.2.3.4/31").last_host(), Ipv4Addr::new(1, 2, 3, 5));
        let n30 = net("10.0.0.4/30");
        assert_eq!(
            (n30.first_host(), n30.last_host()),
            (Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6))
        );
    }

    #[test]
    fn contains_and_overlaps() {
        let c = net("10.244.0.0/16");
        assert!(c.contains(Ipv4Addr::new(10, 244, 255, 255)));
        assert!(c.contains(Ipv4Addr::new(10, 244, 0, 0)));
        assert!(!c.contains(Ipv4Addr::new(10, 245, 0, 0)));
        assert!(!c.contains(Ipv4Addr::new(10, 243, 255, 255)));
        assert!(c.contains_net(&net("10.244.1.0/24")));
        assert!(!c.contains_net(&net("10.0.0.0/8")));
        assert!(!c.contains_net(&net("10.245.1.0/24")));
        assert!(c.overlaps(&net("10.0.0.0/8")));
        assert!(net("10.0.0.0/8").overlaps(&c));
        assert!(!c.overlaps(&net("10.96.0.0/12")));
        assert!(net("10.244.1.0/24").overlaps(&net("10.244.1.128/25")));
        assert!(!net("10.244.1.0/24").overlaps(&net("10.244.2.0/24")));
        assert!(net("0.0.0.0/0").overlaps(&net("192.168.0.1/32")));
        let n = net("10.244.1.0/24");
        assert!(!n.is_host(Ipv4Addr::new(10, 244, 1, 0)));
        assert!(!n.is_host(Ipv4Addr::new(10, 244, 1, 255)));
        assert!(n.is_host(Ipv4Addr::new(10, 244, 1, 1)));
        assert!(!n.is_host(Ipv4Addr::new(10, 244, 2, 1)));
    }

    #[test]
    fn hand_built_values_never_panic() {
        let n = Ipv4Net {
            addr: Ipv4Addr::new(10, 1, 2, 3),
            prefix_len: 200,
        };
        assert_eq!(n.mask(), u32::MAX);
        assert_eq!(n.network(), Ipv4Addr::new(10, 1, 2, 3));
        assert!(n.contains(Ipv4Addr::new(10, 1, 2, 3)));
        let n = Ipv4Net {
            addr: Ipv4Addr::new(10, 1, 2, 3),
            prefix_len: 24,
        };
        assert_eq!(n.network(), Ipv4Addr::new(10, 1, 2, 0));
        assert!(Ipv4Net::new(Ipv4Addr::new(10, 1, 2, 3), 24).is_err());
        assert!(Ipv4Net::new(Ipv4Addr::new(10, 1, 2, 0), 33).is_err());
        assert_eq!(
            Ipv4Net::new(Ipv4Addr::new(10, 1, 2, 0), 24),
            Ok(net("10.1.2.0/24"))
        );
    }

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:00:00:00:01"), Ok([2, 0, 0, 0, 0, 1]));
        assert_eq!(
            parse_mac("AA:bb:Cc:dD:ee:FF"),
            Ok([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
        );
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "02-00-00-00-00-01",
            "2:0:0:0:0:1",
            "02:00:00:00:00:0g",
            "0200.0000.0001",
            "02:00:00:00:00:01:",
            "+2:00:00:00:00:01",
        ] {
            let err = parse_mac(bad).unwrap_err();
            assert!(err.contains("expected six hex bytes"), "{bad:?}: {err}");
        }
        assert_eq!(format_mac(&[2, 0, 0, 0, 0, 0xab]), "02:00:00:00:00:ab");
    }
}
