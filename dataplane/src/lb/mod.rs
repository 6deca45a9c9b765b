//! Endpoint choice for services: which endpoint a *new* flow to a service goes to.
//!
//! Owns, per service, the endpoint list with each endpoint's condition, the state of the
//! selection algorithm ([`Selector`]: random, round robin, least connections, source hash,
//! Maglev) and the ClientIP session-affinity table. It does no I/O and knows nothing of packets
//! or conntrack: the caller (the service table) asks [`Balancer::pick`] once per new flow and
//! keeps established flows on the endpoint they got.
//!
//! What it promises:
//! - only *serving* endpoints get new flows, as kube-proxy reads EndpointSlices: the
//!   [`Condition::Ready`] ones; when none is ready, the serving-but-terminating ones
//!   ([`Condition::Terminating`]) if [`Policy::terminating_fallback`] allows it; otherwise none
//!   ([`Balancer::pick`] returns `None`: the caller rejects the connection);
//! - [`Selector::Random`] (the default, as kube-proxy's iptables mode) is uniform over the serving
//!   endpoints, drawn from a per-balancer wyrand state seeded by the caller (reproducible);
//! - [`Selector::SourceHash`] and [`Selector::Maglev`] hash with fixed, unseeded functions, so every
//!   node picks the same endpoint for the same client or flow when it knows the same endpoints;
//! - session affinity (ClientIP, default timeout [`DEFAULT_AFFINITY_TIMEOUT`] = 10800 s) sends a
//!   client's new flows to the endpoint it got last, while that endpoint still serves and less than
//!   the timeout has passed since the client's last new flow (kube-proxy's `recent` match counts
//!   the same way). The table is bounded ([`Policy::affinity_capacity`]); when full, the client
//!   seen longest ago is forgotten and counted. Expiry pops from the old end of a recency list, a
//!   bounded number per pick: never a scan of the table;
//! - no input makes it panic: empty lists, a short `active` slice, time going backwards.
//!
//! Costs: [`Balancer::pick`] is O(1) for every selector but least connections (O(serving
//! endpoints), as IPVS's `lc`), and allocates only when affinity remembers a new client and the
//! table has not yet reached its high-water mark. [`Balancer::set_endpoints`] is O(endpoints), plus
//! the table build for Maglev (about `M ln M` probes: a few milliseconds at 65537).

pub mod maglev;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

pub use maglev::{Maglev, DEFAULT_TABLE_SIZE};

/// The session-affinity timeout Kubernetes defaults `timeoutSeconds` to (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: Duration = Duration::from_secs(10800);
/// The largest `timeoutSeconds` Kubernetes accepts (1 day).
pub const MAX_AFFINITY_TIMEOUT: Duration = Duration::from_secs(86400);
/// Clients remembered per service by default for session affinity.
pub const DEFAULT_AFFINITY_CAPACITY: usize = 65536;
/// Expired affinity entries removed at most per pick (the rest go on later picks, or when looked up).
const EXPIRE_PER_PICK: usize = 8;

const FLOW_SEED: u64 = 0x736c_7569_6365_666c; // "sluicefl"
const SOURCE_SEED: u64 = 0x736c_7569_6365_7372; // "sluicesr"

/// An endpoint's place in the list given to [`Balancer::set_endpoints`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointIdx(pub u32);

impl EndpointIdx {
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// Whether an endpoint may get new flows (EndpointSlice conditions, as kube-proxy reads them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    /// Ready: gets new flows.
    Ready,
    /// Terminating but still serving: keeps its flows; gets new ones only when no endpoint of
    /// the service is ready (and the policy allows the fallback).
    Terminating,
    /// Neither: gets no new flows.
    NotServing,
}

impl Condition {
    /// From an EndpointSlice endpoint's `conditions`; absent fields read as Kubernetes says
    /// (ready and serving: unknown means true; terminating: unknown means false). An endpoint
    /// marked ready is ready even while terminating (`publishNotReadyAddresses`), as in kube-proxy.
    pub fn from_endpoint_slice(
        ready: Option<bool>,
        serving: Option<bool>,
        terminating: Option<bool>,
    ) -> Self {
        let ready = ready.unwrap_or(true);
        let serving = serving.unwrap_or(ready);
        let terminating = terminating.unwrap_or(false);
        if ready {
            Condition::Ready
        } else if serving && terminating {
            Condition::Terminating
        } else {
            Condition::NotServing
        }
    }
}

/// One endpoint of a service: where flows go and whether new ones may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub condition: Condition,
}

impl Endpoint {
    pub fn new(addr: SocketAddr, condition: Condition) -> Self {
        Endpoint { addr, condition }
    }
}

/// How a new flow's endpoint is chosen among the serving ones (a Service's scheduler).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Selector {
    /// Uniformly at random (kube-proxy's iptables mode).
    #[default]
    Random,
    /// In turn, in the order of the endpoint list.
    RoundRobin,
    /// The endpoint with the fewest active flows, as the caller reports them; ties go to the
    /// first tied endpoint at or after a rotating cursor, so a burst of new flows arriving before
    /// the counts move is spread rather than piled on one endpoint.
    LeastConnections,
    /// A fixed hash of the client IP modulo the number of serving endpoints: a client sticks to
    /// one endpoint while the serving set does not change.
    SourceHash,
    /// Maglev consistent hashing of the flow's 5-tuple over a table of `table_size` entries
    /// (a prime; [`DEFAULT_TABLE_SIZE`]).
    Maglev { table_size: usize },
}

impl Selector {
    /// Maglev with the default table size.
    pub fn maglev() -> Self {
        Selector::Maglev {
            table_size: DEFAULT_TABLE_SIZE,
        }
    }

    /// The name `sluice services` shows (IPVS's scheduler names where they exist).
    pub fn name(self) -> &'static str {
        match self {
            Selector::Random => "random",
            Selector::RoundRobin => "rr",
            Selector::LeastConnections => "lc",
            Selector::SourceHash => "sh",
            Selector::Maglev { .. } => "maglev",
        }
    }
}

/// A service's load-balancing settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub selector: Selector,
    /// ClientIP session affinity with this timeout (`sessionAffinityConfig.clientIP.timeoutSeconds`);
    /// `None` for `sessionAffinity: None`.
    pub affinity: Option<Duration>,
    /// Clients remembered for affinity; the one seen longest ago is forgotten when full.
    pub affinity_capacity: usize,
    /// When no endpoint is ready, give new flows to serving terminating endpoints (kube-proxy
    /// does since Kubernetes 1.26) instead of rejecting them.
    pub terminating_fallback: bool,
    /// Seed of the random selector's generator.
    pub seed: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            selector: Selector::Random,
            affinity: None,
            affinity_capacity: DEFAULT_AFFINITY_CAPACITY,
            terminating_fallback: true,
            seed: 0x5eed,
        }
    }
}

/// The flow a choice is made for, as the first packet carries it (before any NAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: u8,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
}

impl FlowKey {
    /// A fixed (unseeded, same on every node) hash of the 5-tuple; no allocation.
    pub fn hash(&self) -> u64 {
        let mut buf = [0u8; 37];
        let mut n = 0;
        let mut put = |b: &[u8]| {
            buf[n..n + b.len()].copy_from_slice(b);
            n += b.len();
        };
        put(&[self.proto]);
        put_ip(&mut put, self.src);
        put(&self.src_port.to_be_bytes());
        put_ip(&mut put, self.dst);
        put(&self.dst_port.to_be_bytes());
        hash_bytes(FLOW_SEED, &buf[..n])
    }
}

fn put_ip(put: &mut impl FnMut(&[u8]), ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => put(&a.octets()),
        IpAddr::V6(a) => put(&a.octets()),
    }
}

/// An endpoint address as bytes (IP octets, then the port big-endian): the Maglev key.
fn addr_key(addr: SocketAddr) -> ([u8; 18], usize) {
    let mut buf = [0u8; 18];
    let n = match addr.ip() {
        IpAddr::V4(a) => {
            buf[..4].copy_from_slice(&a.octets());
            4
        }
        IpAddr::V6(a) => {
            buf[..16].copy_from_slice(&a.octets());
            16
        }
    };
    buf[n..n + 2].copy_from_slice(&addr.port().to_be_bytes());
    (buf, n + 2)
}

/// A fixed 64-bit hash of a short byte string: 8-byte words folded with wyhash's multiply-mix,
/// then murmur3's finalizer. Stable across processes, versions and machines (it is part of the
/// cross-node agreement of source hash and Maglev), not meant to resist chosen inputs.
pub(crate) fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    const P0: u64 = 0xa076_1d64_78bd_642f;
    const P1: u64 = 0xe703_7ed1_a0b4_28db;
    let mut h = seed ^ P0 ^ (bytes.len() as u64);
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = mum(h ^ u64::from_le_bytes(w), P1);
    }
    fmix64(h)
}

fn mum(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r ^ (r >> 64)) as u64
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// wyrand: a 64-bit generator with one add and one multiply per number; plenty for spreading flows.
#[derive(Debug, Clone)]
struct WyRand(u64);

impl WyRand {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        mum(self.0, self.0 ^ 0xe703_7ed1_a0b4_28db)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for any n < 2^32).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

/// ClientIP affinity: client -> (endpoint address, last new flow), in a slab with an intrusive
/// recency list (most recent at `head`). Since every entry has the same timeout, the list's tail
/// is also the entry to expire or evict first.
#[derive(Debug)]
struct AffinityTable {
    timeout: Duration,
    capacity: usize,
    map: FxHashMap<IpAddr, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    evicted: u64,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    client: IpAddr,
    endpoint: SocketAddr,
    seen: Instant,
    prev: u32,
    next: u32,
}

const NIL: u32 = u32::MAX;

impl AffinityTable {
    fn new(timeout: Duration, capacity: usize) -> Self {
        AffinityTable {
            timeout,
            capacity,
            map: FxHashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            evicted: 0,
        }
    }

    fn expired(&self, s: &Slot, now: Instant) -> bool {
        now.saturating_duration_since(s.seen) >= self.timeout
    }

    fn unlink(&mut self, i: u32) {
        let Slot { prev, next, .. } = self.slots[i as usize];
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        self.slots[i as usize].prev = NIL;
        self.slots[i as usize].next = self.head;
        match self.head {
            NIL => self.tail = i,
            h => self.slots[h as usize].prev = i,
        }
        self.head = i;
    }

    fn remove(&mut self, i: u32) {
        self.unlink(i);
        let client = self.slots[i as usize].client;
        self.map.remove(&client);
        self.free.push(i);
    }

    /// The client's endpoint if remembered and not expired (an expired entry is removed).
    fn get(&mut self, client: IpAddr, now: Instant) -> Option<SocketAddr> {
        let i = *self.map.get(&client)?;
        let s = self.slots[i as usize];
        if self.expired(&s, now) {
            self.remove(i);
            return None;
        }
        Some(s.endpoint)
    }

    /// Remembers (or refreshes) the client's endpoint as of `now`.
    fn set(&mut self, client: IpAddr, endpoint: SocketAddr, now: Instant) {
        if let Some(&i) = self.map.get(&client) {
            let s = &mut self.slots[i as usize];
            s.endpoint = endpoint;
            s.seen = now;
            self.unlink(i);
            self.push_front(i);
            return;
        }
        if self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity && self.tail != NIL {
            self.remove(self.tail);
            self.evicted += 1;
        }
        let slot = Slot {
            client,
            endpoint,
            seen: now,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                // capacity <= u32::MAX - 1 is checked by Balancer::new, so this fits.
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.push_front(i);
        self.map.insert(client, i);
    }

    /// Removes up to `budget` expired entries from the old end of the list.
    fn expire(&mut self, now: Instant, budget: usize) {
        for _ in 0..budget {
            let t = self.tail;
            if t == NIL || !self.expired(&self.slots[t as usize], now) {
                return;
            }
            self.remove(t);
        }
    }
}

/// One service's endpoints and the state to choose among them.
#[derive(Debug)]
pub struct Balancer {
    policy: Policy,
    endpoints: Vec<Endpoint>,
    /// Endpoints that get new flows, in list order.
    serving: Vec<EndpointIdx>,
    /// Endpoint address -> its position in `serving` (for affinity).
    serving_by_addr: FxHashMap<SocketAddr, u32>,
    rng: WyRand,
    cursor: usize,
    maglev: Option<Maglev>,
    affinity: Option<AffinityTable>,
}

impl Balancer {
    /// A balancer with no endpoints. Refuses a Maglev size that is not a prime (or too large), an
    /// affinity timeout of zero or over a day (Kubernetes' bounds), and an affinity capacity of
    /// zero or over 2^32 - 2.
    pub fn new(policy: Policy) -> Result<Self, String> {
        let maglev = match policy.selector {
            Selector::Maglev { table_size } => Some(Maglev::new(table_size)?),
            _ => None,
        };
        let affinity = match policy.affinity {
            None => None,
            Some(t) => {
                if t.is_zero() || t > MAX_AFFINITY_TIMEOUT {
                    return Err(format!(
                        "session affinity timeout {}s: must be 1 to {} seconds",
                        t.as_secs_f64(),
                        MAX_AFFINITY_TIMEOUT.as_secs()
                    ));
                }
                if policy.affinity_capacity == 0 || policy.affinity_capacity >= NIL as usize {
                    return Err(format!(
                        "session affinity capacity {}: must be 1 to {}",
                        policy.affinity_capacity,
                        NIL - 1
                    ));
                }
                Some(AffinityTable::new(t, policy.affinity_capacity))
            }
        };
        Ok(Balancer {
            rng: WyRand(policy.seed),
            policy,
            endpoints: Vec::new(),
            serving: Vec::new(),
            serving_by_addr: FxHashMap::default(),
            cursor: 0,
            maglev,
            affinity,
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replaces the endpoint list (the indices [`Balancer::pick`] returns refer to it). Refuses a
    /// list naming one address twice or longer than 2^32 - 1, or too long for the Maglev table,
    /// leaving the previous list in place. Affinity entries of endpoints that are gone or no
    /// longer serving stop applying (and are dropped when next looked up).
    pub fn set_endpoints(&mut self, endpoints: &[Endpoint]) -> Result<(), String> {
        if endpoints.len() >= u32::MAX as usize {
            return Err(format!("{} endpoints: too many", endpoints.len()));
        }
        let mut seen: FxHashMap<SocketAddr, ()> = FxHashMap::default();
        for e in endpoints {
            if seen.insert(e.addr, ()).is_some() {
                return Err(format!("endpoint {}: listed twice", e.addr));
            }
        }
        let serving = serving_set(endpoints, self.policy.terminating_fallback);
        if let Some(m) = &mut self.maglev {
            let keys: Vec<([u8; 18], usize)> = serving
                .iter()
                .map(|i| addr_key(endpoints[i.get()].addr))
                .collect();
            let keys: Vec<&[u8]> = keys.iter().map(|(b, n)| &b[..*n]).collect();
            m.build(&keys)?;
        }
        self.serving_by_addr = serving
            .iter()
            .enumerate()
            .map(|(pos, i)| (endpoints[i.get()].addr, pos as u32))
            .collect();
        self.serving = serving;
        self.endpoints = endpoints.to_vec();
        Ok(())
    }

    /// The endpoint list as last set.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    pub fn endpoint(&self, idx: EndpointIdx) -> Option<&Endpoint> {
        self.endpoints.get(idx.get())
    }

    /// The endpoints new flows go to now.
    pub fn serving(&self) -> &[EndpointIdx] {
        &self.serving
    }

    /// Clients remembered for session affinity.
    pub fn affinity_clients(&self) -> usize {
        self.affinity.as_ref().map_or(0, |a| a.map.len())
    }

    /// Clients forgotten because the affinity table was full.
    pub fn affinity_evictions(&self) -> u64 {
        self.affinity.as_ref().map_or(0, |a| a.evicted)
    }

    /// The endpoint for a new flow, or `None` when no endpoint serves (reject the flow).
    /// `active[i]` is the number of active flows of endpoint `i` (only least connections reads it;
    /// missing entries count as 0). `now` is the caller's clock, for affinity.
    pub fn pick(&mut self, flow: &FlowKey, now: Instant, active: &[u32]) -> Option<EndpointIdx> {
        if self.serving.is_empty() {
            return None;
        }
        if let Some(aff) = &mut self.affinity {
            aff.expire(now, EXPIRE_PER_PICK);
            if let Some(addr) = aff.get(flow.src, now) {
                if let Some(&pos) = self.serving_by_addr.get(&addr) {
                    aff.set(flow.src, addr, now);
                    return self.serving.get(pos as usize).copied();
                }
            }
        }
        let n = self.serving.len();
        let pos = match self.policy.selector {
            Selector::Random => self.rng.below(n),
            Selector::RoundRobin => {
                let pos = self.cursor % n;
                self.cursor = pos + 1;
                pos
            }
            Selector::LeastConnections => {
                let start = self.cursor % n;
                let load = |pos: usize| {
                    let i = self.serving[pos].get();
                    active.get(i).copied().unwrap_or(0)
                };
                let mut best = start;
                let mut best_load = load(start);
                for k in 1..n {
                    let pos = (start + k) % n;
                    let l = load(pos);
                    if l < best_load {
                        best = pos;
                        best_load = l;
                    }
                }
                self.cursor = best + 1;
                best
            }
            Selector::SourceHash => {
                let (buf, len) = addr_key(SocketAddr::new(flow.src, 0));
                (hash_bytes(SOURCE_SEED, &buf[..len - 2]) % n as u64) as usize
            }
            Selector::Maglev { .. } => self.maglev.as_ref()?.lookup(flow.hash())?,
        };
        let idx = *self.serving.get(pos)?;
        if let Some(aff) = &mut self.affinity {
            let addr = self.endpoints.get(idx.get())?.addr;
            aff.set(flow.src, addr, now);
        }
        Some(idx)
    }
}

/// Ready endpoints; when there are none, the serving terminating ones if allowed.
fn serving_set(endpoints: &[Endpoint], terminating_fallback: bool) -> Vec<EndpointIdx> {
    let with = |c: Condition| -> Vec<EndpointIdx> {
        endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.condition == c)
            .map(|(i, _)| EndpointIdx(i as u32))
            .collect()
    };
    let ready = with(Condition::Ready);
    if ready.is_empty() && terminating_fallback {
        with(Condition::Terminating)
    } else {
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    fn ep(i: u8, c: Condition) -> Endpoint {
        Endpoint::new(
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, i), 8080)),
            c,
        )
    }

    fn ready(n: u8) -> Vec<Endpoint> {
        (1..=n).map(|i| ep(i, Condition::Ready)).collect()
    }

    fn flow(client: u32, port: u16) -> FlowKey {
        FlowKey {
            proto: 6,
            src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | client)),
            src_port: port,
            dst: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
            dst_port: 80,
        }
    }

    fn balancer(selector: Selector, endpoints: &[Endpoint]) -> Balancer {
        let mut b = Balancer::new(Policy {
            selector,
            ..Policy::default()
        })
        .unwrap();
        b.set_endpoints(endpoints).unwrap();
        b
    }

    const ALL: [Selector; 5] = [
        Selector::Random,
        Selector::RoundRobin,
        Selector::LeastConnections,
        Selector::SourceHash,
        Selector::Maglev { table_size: 251 },
    ];

    #[test]
    fn random_is_uniform_over_three_backends() {
        let mut b = balancer(Selector::Random, &ready(3));
        let now = Instant::now();
        let mut counts = [0u32; 3];
        for i in 0..30_000 {
            let idx = b.pick(&flow(7, i as u16), now, &[]).unwrap();
            counts[idx.get()] += 1;
        }
        let expected = 10_000.0;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (f64::from(c) - expected).powi(2) / expected)
            .sum();
        // 2 degrees of freedom: P(chi2 > 13.82) = 0.001 for a uniform source.
        assert!(chi2 < 13.82, "chi-square {chi2:.2} for counts {counts:?}");
    }

    #[test]
    fn random_differs_by_seed_and_repeats_with_the_same_seed() {
        let picks = |seed| {
            let mut b = Balancer::new(Policy {
                seed,
                ..Policy::default()
            })
            .unwrap();
            b.set_endpoints(&ready(5)).unwrap();
            let now = Instant::now();
            (0..64)
                .map(|_| b.pick(&flow(1, 1), now, &[]).unwrap().get())
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(1), picks(1));
        assert_ne!(picks(1), picks(2));
    }

    #[test]
    fn round_robin_cycles_exactly() {
        let mut b = balancer(Selector::RoundRobin, &ready(3));
        let now = Instant::now();
        let got: Vec<usize> = (0..7)
            .map(|i| b.pick(&flow(i, 1), now, &[]).unwrap().get())
            .collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2, 0]);
        // Endpoint 1 starts terminating: the cycle goes on (cursor at 1 of 2) and skips it.
        let mut eps = ready(3);
        eps[1].condition = Condition::Terminating;
        b.set_endpoints(&eps).unwrap();
        let got: Vec<usize> = (0..4)
            .map(|i| b.pick(&flow(i, 1), now, &[]).unwrap().get())
            .collect();
        assert_eq!(got, [2, 0, 2, 0]);
    }

    #[test]
    fn least_connections_picks_the_least_and_rotates_ties() {
        let mut b = balancer(Selector::LeastConnections, &ready(4));
        let now = Instant::now();
        assert_eq!(b.pick(&flow(1, 1), now, &[5, 3, 1, 4]).unwrap().get(), 2);
        assert_eq!(b.pick(&flow(1, 2), now, &[0, 3, 1, 4]).unwrap().get(), 0);
        assert_eq!(b.pick(&flow(1, 3), now, &[9, 9, 9, 2]).unwrap().get(), 3);
        // Ties: the first tied endpoint at or after the cursor, so equal loads take turns.
        let mut b = balancer(Selector::LeastConnections, &ready(3));
        let got: Vec<usize> = (0..6)
            .map(|i| b.pick(&flow(1, i), now, &[2, 2, 2]).unwrap().get())
            .collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2]);
        let got: Vec<usize> = (0..4)
            .map(|i| b.pick(&flow(1, i), now, &[1, 7, 1]).unwrap().get())
            .collect();
        assert_eq!(got, [0, 2, 0, 2]);
        // Counts missing from the slice are zero: endpoint 2 has none.
        assert_eq!(b.pick(&flow(1, 9), now, &[1, 1]).unwrap().get(), 2);
        // Non-serving endpoints are never chosen, however idle.
        let mut eps = ready(3);
        eps[0].condition = Condition::NotServing;
        b.set_endpoints(&eps).unwrap();
        for i in 0..5 {
            assert_ne!(b.pick(&flow(1, i), now, &[0, 5, 5]).unwrap().get(), 0);
        }
    }

    #[test]
    fn source_hash_is_stable_and_spreads() {
        let mut b = balancer(Selector::SourceHash, &ready(4));
        let now = Instant::now();
        let mut counts = [0u32; 4];
        for client in 0..2000u32 {
            let first = b.pick(&flow(client, 1000), now, &[]).unwrap();
            for port in [1001, 40000, 65535] {
                assert_eq!(b.pick(&flow(client, port), now, &[]).unwrap(), first);
            }
            counts[first.get()] += 1;
        }
        // 2000 clients over 4 endpoints: 500 expected, sd ~19; 400..600 is over 5 sd.
        for c in counts {
            assert!((400..=600).contains(&c), "{counts:?}");
        }
        // Same answer from another balancer (another node).
        let mut other = balancer(Selector::SourceHash, &ready(4));
        for client in 0..100u32 {
            assert_eq!(
                b.pick(&flow(client, 1), now, &[]),
                other.pick(&flow(client, 2), now, &[])
            );
        }
    }

    #[test]
    fn maglev_balancer_agrees_across_nodes_and_list_orders() {
        let eps = ready(10);
        let mut a = balancer(Selector::maglev(), &eps);
        let mut rev = eps.clone();
        rev.reverse();
        let mut b = balancer(Selector::maglev(), &rev);
        let now = Instant::now();
        for i in 0..5000u32 {
            let f = flow(i, (i % 60000) as u16);
            let x = a.pick(&f, now, &[]).unwrap();
            let y = b.pick(&f, now, &[]).unwrap();
            assert_eq!(a.endpoint(x).unwrap().addr, b.endpoint(y).unwrap().addr);
            // Same flow, same endpoint.
            assert_eq!(a.pick(&f, now, &[]), Some(x));
        }
    }

    #[test]
    fn maglev_balancer_refuses_bad_table_size() {
        let e = Balancer::new(Policy {
            selector: Selector::Maglev { table_size: 65536 },
            ..Policy::default()
        })
        .unwrap_err();
        assert!(e.contains("65536") && e.contains("prime"), "{e}");
        let mut b = balancer(Selector::Maglev { table_size: 5 }, &ready(5));
        let e = b.set_endpoints(&ready(6)).unwrap_err();
        assert!(e.contains("do not fit"), "{e}");
        assert_eq!(b.endpoints().len(), 5, "a refused list leaves the old one");
    }

    fn affinity_balancer(selector: Selector, capacity: usize) -> Balancer {
        let mut b = Balancer::new(Policy {
            selector,
            affinity: Some(DEFAULT_AFFINITY_TIMEOUT),
            affinity_capacity: capacity,
            ..Policy::default()
        })
        .unwrap();
        b.set_endpoints(&ready(3)).unwrap();
        b
    }

    #[test]
    fn affinity_holds_until_timeout_then_repicks() {
        let mut b = affinity_balancer(Selector::RoundRobin, 16);
        let t0 = Instant::now();
        let a = b.pick(&flow(1, 1), t0, &[]).unwrap();
        assert_eq!(a.get(), 0);
        // Other clients move the cycle on; client 1 keeps its endpoint, refreshed by each new flow.
        assert_eq!(b.pick(&flow(2, 1), t0, &[]).unwrap().get(), 1);
        let mut t = t0;
        for _ in 0..3 {
            t += DEFAULT_AFFINITY_TIMEOUT - Duration::from_secs(1);
            assert_eq!(b.pick(&flow(1, 2), t, &[]), Some(a));
        }
        // Client 2 was last seen at t0: long expired, it re-picks (next in the cycle).
        assert_eq!(b.pick(&flow(2, 2), t, &[]).unwrap().get(), 2);
        assert_eq!(b.pick(&flow(3, 1), t, &[]).unwrap().get(), 0);
        // Exactly the timeout after client 1's last new flow: it re-picks, the cycle's next.
        t += DEFAULT_AFFINITY_TIMEOUT;
        assert_eq!(b.pick(&flow(1, 3), t, &[]).unwrap().get(), 1);
        assert_eq!(b.pick(&flow(1, 4), t, &[]).unwrap().get(), 1);
    }

    #[test]
    fn affinity_keeps_random_on_one_endpoint_and_expires_without_scans() {
        let mut b = affinity_balancer(Selector::Random, 1000);
        let t0 = Instant::now();
        for client in 0..100u32 {
            let first = b.pick(&flow(client, 1), t0, &[]).unwrap();
            for port in 2..20 {
                assert_eq!(b.pick(&flow(client, port), t0, &[]), Some(first));
            }
        }
        assert_eq!(b.affinity_clients(), 100);
        // After the timeout each pick removes a bounded number of expired entries.
        let later = t0 + DEFAULT_AFFINITY_TIMEOUT;
        b.pick(&flow(5000, 1), later, &[]).unwrap();
        assert_eq!(b.affinity_clients(), 100 - EXPIRE_PER_PICK + 1);
        for i in 0..20 {
            b.pick(&flow(6000 + i, 1), later, &[]).unwrap();
        }
        assert_eq!(b.affinity_clients(), 21);
    }

    #[test]
    fn affinity_table_is_bounded_and_forgets_the_oldest() {
        let mut b = affinity_balancer(Selector::RoundRobin, 4);
        let t0 = Instant::now();
        for c in 0..4u32 {
            b.pick(&flow(c, 1), t0 + Duration::from_secs(u64::from(c)), &[]);
        }
        // Client 0 comes back (refreshed), then a fifth client evicts client 1, the oldest.
        let t = t0 + Duration::from_secs(10);
        assert_eq!(b.pick(&flow(0, 2), t, &[]).unwrap().get(), 0);
        b.pick(&flow(4, 1), t, &[]);
        assert_eq!(b.affinity_clients(), 4);
        assert_eq!(b.affinity_evictions(), 1);
        // Client 1 had endpoint 1; forgotten, it takes the next in the cycle (after 4's pick at 1).
        assert_eq!(b.pick(&flow(1, 2), t, &[]).unwrap().get(), 2);
        assert_eq!(b.affinity_evictions(), 2);
        // Client 2 (endpoint 2) was evicted by that: it re-picks, the cycle's next (0).
        assert_eq!(b.pick(&flow(2, 2), t, &[]).unwrap().get(), 0);
        assert_eq!(b.affinity_evictions(), 3);
        // Client 0, refreshed at t, is still held on endpoint 0 (the cycle is at 1).
        assert_eq!(b.pick(&flow(0, 3), t, &[]).unwrap().get(), 0);
        assert_eq!(b.affinity_clients(), 4);
    }

    #[test]
    fn affinity_does_not_hold_a_removed_or_terminating_endpoint() {
        let mut b = affinity_balancer(Selector::RoundRobin, 16);
        let t = Instant::now();
        assert_eq!(b.pick(&flow(1, 1), t, &[]).unwrap().get(), 0);
        let mut eps = ready(3);
        eps[0].condition = Condition::Terminating;
        b.set_endpoints(&eps).unwrap();
        let moved = b.pick(&flow(1, 2), t, &[]).unwrap();
        assert_ne!(moved.get(), 0);
        assert_eq!(b.pick(&flow(1, 3), t, &[]), Some(moved));
        // Indices shift when an earlier endpoint leaves: affinity follows the address.
        assert_eq!(
            b.endpoint(moved).unwrap().addr,
            ep(3, Condition::Ready).addr
        );
        b.set_endpoints(&[ep(2, Condition::Ready), ep(3, Condition::Ready)])
            .unwrap();
        assert_eq!(b.pick(&flow(1, 4), t, &[]).unwrap().get(), 1);
        // Its endpoint removed altogether, the client re-picks among the rest.
        b.set_endpoints(&[ep(2, Condition::Ready)]).unwrap();
        assert_eq!(b.pick(&flow(1, 5), t, &[]).unwrap().get(), 0);
    }

    #[test]
    fn no_serving_endpoints_gives_none() {
        let now = Instant::now();
        for s in ALL {
            let mut b = balancer(s, &[]);
            assert_eq!(b.pick(&flow(1, 1), now, &[]), None, "{s:?}");
            b.set_endpoints(&[ep(1, Condition::NotServing), ep(2, Condition::NotServing)])
                .unwrap();
            assert_eq!(b.pick(&flow(1, 1), now, &[0, 0]), None, "{s:?}");
            b.set_endpoints(&ready(2)).unwrap();
            assert!(b.pick(&flow(1, 1), now, &[]).is_some(), "{s:?}");
            b.set_endpoints(&[]).unwrap();
            assert_eq!(b.pick(&flow(1, 1), now, &[]), None, "{s:?}");
        }
    }

    #[test]
    fn terminating_endpoints_only_when_none_is_ready_and_allowed() {
        let now = Instant::now();
        let mixed = [
            ep(1, Condition::Terminating),
            ep(2, Condition::Ready),
            ep(3, Condition::Terminating),
            ep(4, Condition::NotServing),
        ];
        let only_terminating = [
            ep(1, Condition::Terminating),
            ep(2, Condition::NotServing),
            ep(3, Condition::Terminating),
        ];
        for s in ALL {
            let mut b = balancer(s, &mixed);
            for i in 0..200 {
                assert_eq!(b.pick(&flow(i, 1), now, &[]).unwrap().get(), 1, "{s:?}");
            }
            b.set_endpoints(&only_terminating).unwrap();
            let mut seen = [false; 3];
            for i in 0..200 {
                let idx = b.pick(&flow(i, i as u16), now, &[]).unwrap().get();
                assert!(idx == 0 || idx == 2, "{s:?} picked {idx}");
                seen[idx] = true;
            }
            assert!(seen[0] && seen[2], "{s:?} used only one of two: {seen:?}");

            let mut strict = Balancer::new(Policy {
                selector: s,
                terminating_fallback: false,
                ..Policy::default()
            })
            .unwrap();
            strict.set_endpoints(&only_terminating).unwrap();
            assert_eq!(strict.pick(&flow(1, 1), now, &[]), None, "{s:?}");
            strict.set_endpoints(&mixed).unwrap();
            assert_eq!(strict.pick(&flow(1, 1), now, &[]).unwrap().get(), 1);
        }
    }

    #[test]
    fn conditions_read_as_kube_proxy_reads_endpoint_slices() {
        use Condition::*;
        let c = Condition::from_endpoint_slice;
        assert_eq!(c(None, None, None), Ready);
        assert_eq!(c(Some(true), None, None), Ready);
        assert_eq!(c(Some(true), Some(true), Some(true)), Ready);
        assert_eq!(c(Some(false), Some(true), Some(true)), Terminating);
        assert_eq!(c(Some(false), None, Some(true)), NotServing);
        assert_eq!(c(Some(false), Some(false), Some(true)), NotServing);
        assert_eq!(c(Some(false), Some(true), Some(false)), NotServing);
        assert_eq!(c(Some(false), None, None), NotServing);
    }

    #[test]
    fn bad_lists_and_settings_are_refused() {
        let mut b = balancer(Selector::Random, &ready(2));
        let e = b
            .set_endpoints(&[ep(1, Condition::Ready), ep(1, Condition::Terminating)])
            .unwrap_err();
        assert!(e.contains("10.244.1.1:8080") && e.contains("twice"), "{e}");
        assert_eq!(b.endpoints(), &ready(2)[..]);
        for t in [
            Duration::ZERO,
            MAX_AFFINITY_TIMEOUT + Duration::from_secs(1),
        ] {
            let e = Balancer::new(Policy {
                affinity: Some(t),
                ..Policy::default()
            })
            .unwrap_err();
            assert!(e.contains("timeout"), "{e}");
        }
        let e = Balancer::new(Policy {
            affinity: Some(DEFAULT_AFFINITY_TIMEOUT),
            affinity_capacity: 0,
            ..Policy::default()
        })
        .unwrap_err();
        assert!(e.contains("capacity"), "{e}");
    }

    #[test]
    fn flow_hash_is_fixed() {
        // The hash is part of the cross-node agreement: pin it so a change is noticed.
        let f = flow(1, 1234);
        assert_eq!(f.hash(), 0xad8b_2c15_9bfc_335b);
        assert_eq!(hash_bytes(0, b"10.244.1.1:8080"), 0xcc1d_3844_12dc_c403);
        let mut g = f;
        g.src_port = 1235;
        assert_ne!(f.hash(), g.hash());
        assert_eq!(hash_bytes(0, b""), hash_bytes(0, b""));
        assert_ne!(hash_bytes(0, b"a"), hash_bytes(1, b"a"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn condition() -> impl Strategy<Value = Condition> {
            prop_oneof![
                Just(Condition::Ready),
                Just(Condition::Terminating),
                Just(Condition::NotServing)
            ]
        }

        proptest! {
            #[test]
            fn pick_never_panics_and_only_serving_endpoints_get_flows(
                conds in proptest::collection::vec(condition(), 0..12),
                sel in 0usize..5,
                fallback in any::<bool>(),
                affinity in any::<bool>(),
                active in proptest::collection::vec(any::<u32>(), 0..16),
                clients in proptest::collection::vec((any::<u32>(), any::<u16>(), 0u64..100_000), 1..40),
            ) {
                let mut b = Balancer::new(Policy {
                    selector: ALL[sel],
                    affinity: affinity.then_some(Duration::from_secs(60)),
                    affinity_capacity: 4,
                    terminating_fallback: fallback,
                    seed: 9,
                }).unwrap();
                let eps: Vec<Endpoint> =
                    conds.iter().enumerate().map(|(i, &c)| ep(i as u8, c)).collect();
                b.set_endpoints(&eps).unwrap();
                let any_ready = conds.contains(&Condition::Ready);
                let any_term = conds.contains(&Condition::Terminating);
                let t0 = Instant::now();
                for (c, port, secs) in clients {
                    let got = b.pick(&flow(c, port), t0 + Duration::from_secs(secs), &active);
                    match got {
                        None => prop_assert!(!(any_ready || fallback && any_term)),
                        Some(i) => {
                            let want = if any_ready { Condition::Ready } else { Condition::Terminating };
                            prop_assert_eq!(eps[i.get()].condition, want);
                        }
                    }
                    prop_assert!(b.affinity_clients() <= 4);
                }
            }
        }
    }
}
