//! Neighbours: IPv4 -> MAC per port, learned from ARP, and packets held while resolving.
//!
//! An entry is created or refreshed by every ARP packet whose sender is on the port (requests
//! and replies). A packet whose next hop is unknown is copied into a small preallocated pool and
//! an ARP request goes out; the request is retried [`MAX_TRIES`] times, [`RETRY`] apart, and when
//! nobody answers the held packets are handed back for an ICMP host unreachable. At most
//! [`HOLD_PER_NEIGHBOUR`] packets wait per neighbour and [`POOL`] in all; more are dropped and
//! counted (Linux's `unres_qlen` plays the same role).
//!
//! Entries do not expire yet: a pod's MAC changes only when its interface is recreated, which
//! re-announces it through ARP when it next talks to its gateway.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::packet::{PacketBuf, PortId};
use crate::port::Mac;

pub const MAX_TRIES: u8 = 3;
pub const RETRY: Duration = Duration::from_millis(1000);
pub const HOLD_PER_NEIGHBOUR: usize = 8;
pub const POOL: usize = 64;

type Key = (PortId, Ipv4Addr);

struct Pending {
    tries: u8,
    next: Instant,
    held: Vec<usize>,
}

/// What [`Neighbours::hold`] did with a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Hold {
    /// Held; this is the first packet for the neighbour: send an ARP request now.
    Resolve,
    /// Held behind an ARP request already under way.
    Queued,
    /// Not held (queue or pool full): drop it.
    Full,
}

/// A timer outcome from [`Neighbours::expire`].
pub enum Due {
    /// Send another ARP request for the neighbour.
    Retry(PortId, Ipv4Addr),
    /// Resolution failed; these pool slots hold the packets that waited (release them after use).
    Failed(Vec<usize>),
}

pub struct Neighbours {
    entries: FxHashMap<Key, Mac>,
    pending: FxHashMap<Key, Pending>,
    pool: Vec<PacketBuf>,
    free: Vec<usize>,
}

impl Default for Neighbours {
    fn default() -> Self {
        Self::new()
    }
}

impl Neighbours {
    pub fn new() -> Self {
        Neighbours {
            entries: FxHashMap::default(),
            pending: FxHashMap::default(),
            pool: (0..POOL).map(|_| PacketBuf::new()).collect(),
            free: (0..POOL).rev().collect(),
        }
    }

    #[inline]
    pub fn lookup(&self, port: PortId, ip: Ipv4Addr) -> Option<Mac> {
        self.entries.get(&(port, ip)).copied()
    }

    /// Record `ip` at `mac` on `port`. Returns whether the table changed, and the pool slots of
    /// packets that were waiting for this neighbour (send them, then [`Neighbours::release`]).
    pub fn learn(&mut self, port: PortId, ip: Ipv4Addr, mac: Mac) -> (bool, Vec<usize>) {
        let changed = self.entries.insert((port, ip), mac) != Some(mac);
        let held = self
            .pending
            .remove(&(port, ip))
            .map(|p| p.held)
            .unwrap_or_default();
        (changed, held)
    }

    /// Hold a copy of `pkt` until `ip` on `port` resolves.
    pub fn hold(&mut self, port: PortId, ip: Ipv4Addr, pkt: &PacketBuf, now: Instant) -> Hold {
        let first = !self.pending.contains_key(&(port, ip));
        let p = self.pending.entry((port, ip)).or_insert_with(|| Pending {
            tries: 1,
            next: now + RETRY,
            held: Vec::new(),
        });
        if p.held.len() >= HOLD_PER_NEIGHBOUR {
            return Hold::Full;
        }
        let Some(slot) = self.free.pop() else {
            return if first { Hold::Resolve } else { Hold::Full };
        };
        let b = &mut self.pool[slot];
        b.fill(pkt.data());
        b.meta = pkt.meta;
        p.held.push(slot);
        if first {
            Hold::Resolve
        } else {
            Hold::Queued
        }
    }

    /// A held packet.
    pub fn held(&self, slot: usize) -> &PacketBuf {
        &self.pool[slot]
    }

    pub fn release(&mut self, slots: &[usize]) {
        self.free.extend_from_slice(slots);
    }

    /// The earliest time [`Neighbours::expire`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.next).min()
    }

    /// Retries and failures due at `now`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Due>) {
        let mut failed = Vec::new();
        for (key, p) in self.pending.iter_mut() {
            if p.next > now {
                continue;
            }
            if p.tries >= MAX_TRIES {
                failed.push(*key);
            } else {
                p.tries += 1;
                p.next = now + RETRY;
                out.push(Due::Retry(key.0, key.1));
            }
        }
        for key in failed {
            if let Some(p) = self.pending.remove(&key) {
                out.push(Due::Failed(p.held));
            }
        }
    }

    /// (port, ip, mac) of every entry, for introspection.
    pub fn entries(&self) -> impl Iterator<Item = (PortId, Ipv4Addr, Mac)> + '_ {
        self.entries.iter().map(|(&(p, ip), &m)| (p, ip, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_then_learn_releases_in_order() {
        let mut n = Neighbours::new();
        let ip: Ipv4Addr = "10.0.0.2".parse().unwrap();
        let now = Instant::now();
        let mut pkt = PacketBuf::new();
        pkt.fill(&[1]);
        assert_eq!(n.hold(1, ip, &pkt, now), Hold::Resolve);
        pkt.fill(&[2]);
        assert_eq!(n.hold(1, ip, &pkt, now), Hold::Queued);
        let (changed, held) = n.learn(1, ip, [2, 0, 0, 0, 0, 1]);
        assert!(changed);
        assert_eq!(
            held.iter()
                .map(|&s| n.held(s).data()[0])
                .collect::<Vec<_>>(),
            vec![1, 2]
        );
        n.release(&held);
        assert_eq!(n.lookup(1, ip), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(n.lookup(2, ip), None);
        assert!(!n.learn(1, ip, [2, 0, 0, 0, 0, 1]).0);
    }

    #[test]
    fn retries_then_fails_and_queue_is_bounded() {
        let mut n = Neighbours::new();
        let ip: Ipv4Addr = "10.0.0.3".parse().unwrap();
        let t0 = Instant::now();
        let pkt = PacketBuf::new();
        for i in 0..HOLD_PER_NEIGHBOUR + 2 {
            let h = n.hold(0, ip, &pkt, t0);
            if i >= HOLD_PER_NEIGHBOUR {
                assert_eq!(h, Hold::Full);
            }
        }
        let mut due = Vec::new();
        n.expire(t0, &mut due);
        assert!(due.is_empty());
        let mut retries = 0;
        let mut failed = 0;
        let mut t = t0;
        for _ in 0..MAX_TRIES + 1 {
            t += RETRY;
            due.clear();
            n.expire(t, &mut due);
            for d in &due {
                match d {
                    Due::Retry(..) => retries += 1,
                    Due::Failed(h) => failed += h.len(),
                }
            }
        }
        assert_eq!(retries, usize::from(MAX_TRIES - 1));
        assert_eq!(failed, HOLD_PER_NEIGHBOUR);
        assert!(n.next_deadline().is_none());
    }
}
