//! The IPv4 routing table: longest-prefix match.
//!
//! One hash map per prefix length in use, probed from the longest length down: a lookup costs
//! at most one probe per distinct prefix length (on a node: /32 pods, the pod CIDR, remote pod
//! CIDRs, a default route: a handful), independent of the number of routes.

use std::net::Ipv4Addr;

use rustc_hash::FxHashMap;

use crate::packet::PortId;

/// Where a prefix goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub prefix: Ipv4Addr,
    pub len: u8,
    /// Output port.
    pub port: PortId,
    /// Next hop; `None` = the destination itself is on the port's link.
    pub via: Option<Ipv4Addr>,
}

impl Route {
    pub fn next_hop(&self, dst: Ipv4Addr) -> Ipv4Addr {
        self.via.unwrap_or(dst)
    }
}

#[inline]
fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// (prefix length, prefix -> route), longest first.
    levels: Vec<(u8, FxHashMap<u32, Route>)>,
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace the route for `route.prefix/route.len` (host bits are cleared).
    pub fn insert(&mut self, mut route: Route) {
        route.len = route.len.min(32);
        let key = u32::from(route.prefix) & mask(route.len);
        route.prefix = Ipv4Addr::from(key);
        let pos = match self.levels.iter().position(|(l, _)| *l <= route.len) {
            Some(p) if self.levels[p].0 == route.len => p,
            Some(p) => {
                self.levels.insert(p, (route.len, FxHashMap::default()));
                p
            }
            None => {
                self.levels.push((route.len, FxHashMap::default()));
                self.levels.len() - 1
            }
        };
        self.levels[pos].1.insert(key, route);
    }

    pub fn remove(&mut self, prefix: Ipv4Addr, len: u8) -> Option<Route> {
        let key = u32::from(prefix) & mask(len);
        let pos = self.levels.iter().position(|(l, _)| *l == len)?;
        let r = self.levels[pos].1.remove(&key);
        if self.levels[pos].1.is_empty() {
            self.levels.remove(pos);
        }
        r
    }

    /// The most specific route covering `dst`.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<&Route> {
        let d = u32::from(dst);
        self.levels
            .iter()
            .find_map(|(len, m)| m.get(&(d & mask(*len))))
    }

    pub fn len(&self) -> usize {
        self.levels.iter().map(|(_, m)| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.levels.iter().flat_map(|(_, m)| m.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(p: &str, len: u8, port: PortId) -> Route {
        Route {
            prefix: p.parse().unwrap(),
            len,
            port,
            via: None,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = RouteTable::new();
        t.insert(r("0.0.0.0", 0, 9));
        t.insert(r("10.244.0.0", 16, 1));
        t.insert(r("10.244.1.0", 24, 2));
        t.insert(r("10.244.1.10", 32, 3));
        let look = |t: &RouteTable, a: &str| t.lookup(a.parse().unwrap()).map(|r| r.port);
        assert_eq!(look(&t, "10.244.1.10"), Some(3));
        assert_eq!(look(&t, "10.244.1.11"), Some(2));
        assert_eq!(look(&t, "10.244.7.1"), Some(1));
        assert_eq!(look(&t, "8.8.8.8"), Some(9));
        assert_eq!(t.len(), 4);
        t.remove("10.244.1.10".parse().unwrap(), 32);
        assert_eq!(look(&t, "10.244.1.10"), Some(2));
        t.remove("0.0.0.0".parse().unwrap(), 0);
        assert_eq!(look(&t, "8.8.8.8"), None);
    }

    #[test]
    fn host_bits_are_ignored_on_insert() {
        let mut t = RouteTable::new();
        t.insert(r("10.1.2.3", 8, 4));
        assert_eq!(
            t.lookup("10.200.0.1".parse().unwrap()).unwrap().prefix,
            "10.0.0.0".parse::<Ipv4Addr>().unwrap()
        );
    }
}
