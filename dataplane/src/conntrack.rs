//! Connection tracking: the flows the engine has seen, both directions, with the NAT applied.
//!
//! Owns a bounded table of flows. A flow is keyed by its *original* 5-tuple (as the first packet
//! carried it) and by its *reply* tuple (what the answer carries once the flow's [`Nat`] was
//! applied); both tuples sit in one hash index pointing at the same entry, as nf_conntrack does,
//! so a packet in either direction is found with one hash lookup and told its [`Dir`]. The caller
//! rewrites the packet to [`Conntrack::rewrite`] (DNAT to the endpoint on the way in, back to the
//! service address on the way out).
//!
//! What it promises:
//! - **Bounded.** The capacity is fixed at construction: the entries are one preallocated slab
//!   with a free list and the index is sized for two keys per entry, so neither ever grows. When
//!   the table is full an insert reclaims an expired flow, else evicts the oldest non-assured flow
//!   (as the kernel's `early_drop`), else fails with [`InsertError::Full`] so that a flood of new
//!   flows cannot push out established ones. Every case is counted in [`Stats`].
//! - **Expiry without scans.** Each flow sits in one LRU list per timeout class (a TCP state, UDP
//!   unreplied / stream, ICMP). All members of a class share its timeout, so a list ordered by last
//!   refresh is ordered by deadline: [`Conntrack::expire`] pops expired heads, at most `max` per
//!   call, and costs O(classes + removed). Every tracked packet refreshes its flow (moves it to the
//!   tail of its class).
//! - **Kernel timeouts and states.** TCP follows the transition table of nf_conntrack
//!   (`net/netfilter/nf_conntrack_proto_tcp.c`) without its sequence-window checks, with its
//!   default timeouts ([`Timeouts::default`]); an unanswered flow is capped at the 5 min "unack"
//!   timeout; a SYN on a TIME_WAIT or CLOSE flow ends it so the caller creates a fresh one (the
//!   kernel's reopen). UDP gets 30 s, and 120 s once replies were seen and the flow is older than
//!   2 s (`nf_conntrack_proto_udp.c`: a single DNS question and answer stays at 30 s). ICMP 30 s.
//! - **One flow per tuple.** [`Conntrack::get_or_insert`] finds a flow created earlier in the same
//!   batch instead of creating a second (the kernel's insert race, kubernetes#56903, cannot happen:
//!   the table has one writer, the engine thread that owns it).
//! - **No panic, no I/O, no clock.** Time is passed in as nanoseconds from any monotonic origin
//!   (e.g. `start.elapsed().as_nanos() as u64`), so tests drive it. It must not go backwards: a
//!   time going backwards only delays expiry (lists stop being ordered), it never corrupts them.
//! - **ICMP errors.** An ICMP error quotes the header of the packet it answers: its flow is
//!   `lookup` of the quoted tuple *reversed* (the quoted packet went the other way), giving the
//!   error's direction `dir`: the outer header is rewritten to `rewrite(id, dir)` as any packet,
//!   the quoted one to `rewrite(id, dir).reversed()` (tested for a UDP flow's port unreachable;
//!   the pipeline does not translate ICMP errors yet).
//!
//! Memory: [`ENTRY_BYTES`] per slab entry plus two index slots per flow (see
//! [`Conntrack::memory_bytes`]): 80 B + 2 index slots of 20 B (+1 control byte) at most 7/8 full in
//! a power-of-two table, 164 B per flow in all; Linux's conntrack takes ~300 B.

use std::fmt;
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use rustc_hash::FxHashMap;

/// Nanoseconds from the caller's monotonic origin.
pub type Nanos = u64;

/// The largest capacity (the index stores the slot in 31 bits, the direction in the 32nd).
pub const MAX_CAPACITY: usize = (1 << 31) - 1;
/// When full, how many entries from the head of each class list are probed for a non-assured one.
pub const EVICT_PROBE: usize = 8;
/// A UDP flow with replies gets the stream timeout only once it is older than this.
pub const UDP_STREAM_AFTER: Duration = Duration::from_secs(2);
/// Bytes of one slab entry (the index adds two slots per flow on top: see
/// [`Conntrack::memory_bytes`]).
pub const ENTRY_BYTES: usize = size_of::<Entry>();

/// TCP flag bits as in the TCP header's flags byte.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// The transport protocols tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Proto {
    Icmp = 1,
    Tcp = 6,
    Udp = 17,
}

impl Proto {
    /// From the IPv4 protocol number; `None` for protocols not tracked.
    pub fn from_ip(proto: u8) -> Option<Proto> {
        match proto {
            1 => Some(Proto::Icmp),
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Icmp => "icmp",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// A 5-tuple as a packet carries it. For ICMP echo the identifier is in both port fields
/// (see [`Tuple::icmp_echo`]), so the request and its reply have mirrored tuples like TCP/UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: Proto,
}

impl Tuple {
    pub fn new(proto: Proto, src: SocketAddrV4, dst: SocketAddrV4) -> Tuple {
        Tuple {
            src: *src.ip(),
            dst: *dst.ip(),
            src_port: src.port(),
            dst_port: dst.port(),
            proto,
        }
    }

    /// An ICMP echo request or reply with identifier `id`.
    pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Tuple {
        Tuple {
            src,
            dst,
            src_port: id,
            dst_port: id,
            proto: Proto::Icmp,
        }
    }

    /// The tuple of a packet going the other way.
    pub fn reversed(&self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            proto: self.proto,
        }
    }

    pub fn src_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.src, self.src_port)
    }

    pub fn dst_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.dst, self.dst_port)
    }
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}:{} -> {}:{}",
            self.proto.name(),
            self.src,
            self.src_port,
            self.dst,
            self.dst_port
        )
    }
}

/// The translation applied to the original direction (and reversed on replies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Nat {
    /// DNAT: original-direction packets go to this address (the service endpoint). For ICMP the
    /// port is ignored.
    pub endpoint: Option<SocketAddrV4>,
    /// SNAT: original-direction packets leave from this address (e.g. the node, for
    /// externalTrafficPolicy Cluster). For ICMP the port is the echo identifier used.
    pub snat: Option<SocketAddrV4>,
}

/// Which way a packet goes relative to the flow's first packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Original,
    Reply,
}

/// TCP states, named and ordered as nf_conntrack's (`None` for UDP and ICMP flows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    None = 0,
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
    SynSent2,
}

impl TcpState {
    const ALL: [TcpState; 10] = [
        TcpState::None,
        TcpState::SynSent,
        TcpState::SynRecv,
        TcpState::Established,
        TcpState::FinWait,
        TcpState::CloseWait,
        TcpState::LastAck,
        TcpState::TimeWait,
        TcpState::Close,
        TcpState::SynSent2,
    ];

    /// The name `conntrack -L` prints.
    pub fn name(self) -> &'static str {
        match self {
            TcpState::None => "NONE",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::Established => "ESTABLISHED",
            TcpState::FinWait => "FIN_WAIT",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::SynSent2 => "SYN_SENT2",
        }
    }
}

/// One tracked flow, as callers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The tuple of the first packet.
    pub original: Tuple,
    /// The tuple replies carry (after the NAT).
    pub reply: Tuple,
    pub nat: Nat,
    pub tcp: TcpState,
    /// A packet was seen in the reply direction.
    pub seen_reply: bool,
    /// The flow proved itself (TCP handshake done, UDP answered): not evicted when full.
    pub assured: bool,
    pub created: Nanos,
    /// When it expires unless another packet refreshes it.
    pub deadline: Nanos,
}

impl Flow {
    fn placeholder() -> Flow {
        let t = Tuple::icmp_echo(Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, 0);
        Flow {
            original: t,
            reply: t,
            nat: Nat::default(),
            tcp: TcpState::None,
            seen_reply: false,
            assured: false,
            created: 0,
            deadline: 0,
        }
    }
}

/// Per-class timeouts; [`Timeouts::default`] is nf_conntrack's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_syn_sent: Duration,
    pub tcp_syn_recv: Duration,
    pub tcp_established: Duration,
    pub tcp_fin_wait: Duration,
    pub tcp_close_wait: Duration,
    pub tcp_last_ack: Duration,
    pub tcp_time_wait: Duration,
    pub tcp_close: Duration,
    pub tcp_syn_sent2: Duration,
    /// Cap for a TCP flow that has seen no reply yet (`nf_conntrack_tcp_timeout_unacknowledged`).
    pub tcp_unack: Duration,
    pub udp: Duration,
    pub udp_stream: Duration,
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        const fn s(secs: u64) -> Duration {
            Duration::from_secs(secs)
        }
        Timeouts {
            tcp_syn_sent: s(120),
            tcp_syn_recv: s(60),
            tcp_established: s(5 * 24 * 3600),
            tcp_fin_wait: s(120),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_time_wait: s(120),
            tcp_close: s(10),
            tcp_syn_sent2: s(120),
            tcp_unack: s(300),
            udp: s(30),
            udp_stream: s(120),
            icmp: s(30),
        }
    }
}

// Timeout classes: one LRU list each. TCP classes are the TcpState discriminants minus one.
const C_TCP_UNACK: usize = 9;
const C_UDP: usize = 10;
const C_UDP_STREAM: usize = 11;
const C_ICMP: usize = 12;
const CLASSES: usize = 13;

fn as_nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Timeouts {
    fn by_class(&self) -> [Nanos; CLASSES] {
        [
            as_nanos(self.tcp_syn_sent),
            as_nanos(self.tcp_syn_recv),
            as_nanos(self.tcp_established),
            as_nanos(self.tcp_fin_wait),
            as_nanos(self.tcp_close_wait),
            as_nanos(self.tcp_last_ack),
            as_nanos(self.tcp_time_wait),
            as_nanos(self.tcp_close),
            as_nanos(self.tcp_syn_sent2),
            as_nanos(self.tcp_unack),
            as_nanos(self.udp),
            as_nanos(self.udp_stream),
            as_nanos(self.icmp),
        ]
    }
}

/// What the state machine made of a packet of a known flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accounted: state advanced (or kept) and the deadline refreshed.
    Accept,
    /// Possibly valid, not understood (e.g. a late SYN-ACK): forward it, the flow is untouched.
    Ignore,
    /// Invalid for the flow's state (e.g. an ACK before any SYN-ACK): the flow is untouched; the
    /// caller drops and counts it, as kube-proxy drops conntrack INVALID packets.
    Invalid,
}

/// Names a flow. Stale after the flow is removed: every accessor then returns `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId {
    slot: u32,
    gen: u32,
}

/// A packet matched to a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    pub id: FlowId,
    pub dir: Dir,
    pub verdict: Verdict,
}

/// The result of [`Conntrack::get_or_insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    pub tracked: Tracked,
    /// The flow was created by this call (false: it existed, e.g. from earlier in the batch).
    pub created: bool,
    /// The table was full and a live, non-assured flow was evicted to make room: log it.
    pub evicted: bool,
}

/// Why no flow was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    #[error("conntrack table full: no expired or non-assured flow to evict")]
    Full,
    #[error("reply tuple {0} already belongs to another flow (NAT clash)")]
    Clash(Tuple),
    #[error("TCP packet cannot start a flow (only SYN, or ACK for a pick-up, can)")]
    NotNew,
}

/// Counters of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Stats {
    pub entries: u64,
    pub capacity: u64,
    pub inserts: u64,
    /// Live flows evicted because the table was full.
    pub evictions: u64,
    /// Flows removed because their deadline passed (by `expire` or reclaimed by an insert).
    pub expirations: u64,
    /// Flows removed by `remove` / `remove_where`.
    pub removals: u64,
    /// Inserts refused: table full of assured flows.
    pub full: u64,
    /// Inserts refused: reply tuple in use.
    pub clashes: u64,
    /// TCP flows ended by a new SYN in TIME_WAIT / CLOSE.
    pub reopens: u64,
}

const NIL: u32 = u32::MAX;
const FREE: u8 = u8::MAX;
const DIR_REPLY: u32 = 1 << 31;

struct Entry {
    flow: Flow,
    prev: u32,
    next: u32,
    gen: u32,
    /// Timeout class (list it is on), or FREE.
    class: u8,
}

/// The connection tracking table. See the module docs.
pub struct Conntrack {
    slab: Vec<Entry>,
    index: FxHashMap<Tuple, u32>,
    heads: [u32; CLASSES],
    tails: [u32; CLASSES],
    free: u32,
    timeouts: [Nanos; CLASSES],
    udp_stream_after: Nanos,
    stats: Stats,
}

// TCP transitions, nf_conntrack's `tcp_conntracks[dir][flags][state]`.
const IV: u8 = 10; // invalid
const IG: u8 = 11; // ignore
const NO: u8 = 0;
const SS: u8 = 1;
const SR: u8 = 2;
const ES: u8 = 3;
const FW: u8 = 4;
const CW: u8 = 5;
const LA: u8 = 6;
const TW: u8 = 7;
const CL: u8 = 8;
const S2: u8 = 9;
#[rustfmt::skip]
const TCP_TABLE: [[[u8; 10]; 6]; 2] = [
    [   //        NO  SS  SR  ES  FW  CW  LA  TW  CL  S2     original direction
        /*syn*/  [SS, SS, IG, IG, IG, IG, IG, SS, SS, S2],
        /*synack*/[IV, IV, IG, IG, IG, IG, IG, IG, IG, SR],
        /*fin*/  [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /*ack*/  [ES, IV, ES, ES, CW, CW, TW, TW, CL, IV],
        /*rst*/  [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /*none*/ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ],
    [   //        NO  SS  SR  ES  FW  CW  LA  TW  CL  S2     reply direction
        /*syn*/  [IV, S2, IV, IV, IV, IV, IV, IV, IV, S2],
        /*synack*/[IV, SR, IG, IG, IG, IG, IG, IG, IG, SR],
        /*fin*/  [IV, IV, FW, FW, LA, LA, LA, TW, CL, IV],
        /*ack*/  [IV, IG, SR, ES, CW, CW, TW, TW, CL, IG],
        /*rst*/  [IV, CL, CL, CL, CL, CL, CL, CL, CL, CL],
        /*none*/ [IV, IV, IV, IV, IV, IV, IV, IV, IV, IV],
    ],
];
const _: () = assert!(NO == TcpState::None as u8 && S2 == TcpState::SynSent2 as u8);

/// nf_conntrack's `get_conntrack_index`: RST wins, then SYN(-ACK), FIN, ACK.
fn flag_index(flags: u8) -> usize {
    use tcp_flags::*;
    if flags & RST != 0 {
        4
    } else if flags & SYN != 0 {
        if flags & ACK != 0 {
            1
        } else {
            0
        }
    } else if flags & FIN != 0 {
        2
    } else if flags & ACK != 0 {
        3
    } else {
        5
    }
}

fn tcp_next(dir: Dir, flags: u8, state: TcpState) -> u8 {
    let d = match dir {
        Dir::Original => 0,
        Dir::Reply => 1,
    };
    TCP_TABLE[d][flag_index(flags)][state as usize]
}

/// The reply tuple of a flow whose first packet is `t`, once `nat` is applied to it.
fn reply_tuple(t: &Tuple, nat: &Nat) -> Tuple {
    let mut out = *t;
    if let Some(ep) = nat.endpoint {
        out.dst = *ep.ip();
        if t.proto != Proto::Icmp {
            out.dst_port = ep.port();
        }
    }
    if let Some(s) = nat.snat {
        out.src = *s.ip();
        out.src_port = s.port();
        if t.proto == Proto::Icmp {
            out.dst_port = s.port();
        }
    }
    out.reversed()
}

enum Step {
    Done(Verdict),
    Reopen,
}

impl Conntrack {
    /// A table for at most `capacity` flows (1 ..= [`MAX_CAPACITY`]), allocated now.
    pub fn new(capacity: usize, timeouts: Timeouts) -> Result<Conntrack, String> {
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(format!(
                "conntrack capacity {capacity}: must be 1 ..= {MAX_CAPACITY}"
            ));
        }
        let mut slab = Vec::new();
        slab.try_reserve_exact(capacity).map_err(|e| {
            format!("conntrack capacity {capacity}: cannot allocate the entries: {e}")
        })?;
        for i in 0..capacity {
            // `i + 1 <= MAX_CAPACITY < u32::MAX`; the last one ends the free list.
            let next = if i + 1 < capacity { i as u32 + 1 } else { NIL };
            slab.push(Entry {
                flow: Flow::placeholder(),
                prev: NIL,
                next,
                gen: 0,
                class: FREE,
            });
        }
        let mut index = FxHashMap::default();
        index.try_reserve(2 * capacity).map_err(|e| {
            format!("conntrack capacity {capacity}: cannot allocate the index: {e}")
        })?;
        Ok(Conntrack {
            slab,
            index,
            heads: [NIL; CLASSES],
            tails: [NIL; CLASSES],
            free: 0,
            timeouts: timeouts.by_class(),
            udp_stream_after: as_nanos(UDP_STREAM_AFTER),
            stats: Stats {
                capacity: capacity as u64,
                ..Stats::default()
            },
        })
    }

    pub fn len(&self) -> usize {
        self.stats.entries as usize
    }

    pub fn is_empty(&self) -> bool {
        self.stats.entries == 0
    }

    pub fn capacity(&self) -> usize {
        self.slab.len()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Bytes held by the table: the slab plus an estimate of the index (hashbrown keeps one
    /// control byte and one `(Tuple, u32)` slot per bucket, buckets a power of two at most 7/8
    /// full, so 2 .. 4 slots per flow). Independent of how many flows are live.
    pub fn memory_bytes(&self) -> usize {
        let buckets = (self.index.capacity() / 7 * 8).next_power_of_two();
        self.slab.capacity() * ENTRY_BYTES + buckets * (size_of::<(Tuple, u32)>() + 1)
    }

    /// The flow a packet with tuple `t` belongs to, and its direction; the flow is not touched.
    pub fn lookup(&self, t: &Tuple) -> Option<(FlowId, Dir)> {
        let v = *self.index.get(t)?;
        let (slot, dir) = split(v);
        let gen = self.slab.get(slot as usize)?.gen;
        Some((FlowId { slot, gen }, dir))
    }

    /// The per-packet call: finds the flow of `t` (one hash lookup), runs the state machine
    /// with the packet's TCP flags (ignored for UDP and ICMP) and refreshes the deadline.
    /// `None`: no flow (or a SYN ended a TIME_WAIT / CLOSE flow: create a new one).
    pub fn track(&mut self, t: &Tuple, tcp_flags: u8, now: Nanos) -> Option<Tracked> {
        let (slot, dir) = split(*self.index.get(t)?);
        match self.advance(slot, dir, tcp_flags, now) {
            Step::Reopen => {
                self.release(slot);
                self.stats.reopens += 1;
                None
            }
            Step::Done(verdict) => {
                let gen = self.slab.get(slot as usize)?.gen;
                Some(Tracked {
                    id: FlowId { slot, gen },
                    dir,
                    verdict,
                })
            }
        }
    }

    /// [`track`](Self::track), or when there is no flow, create one with the NAT `nat()` returns
    /// (called only then) and account the packet to it. A second call for the same tuple finds
    /// the first flow, so two first packets in one batch give one flow.
    pub fn get_or_insert(
        &mut self,
        t: &Tuple,
        tcp_flags: u8,
        now: Nanos,
        nat: impl FnOnce() -> Nat,
    ) -> Result<Inserted, InsertError> {
        if let Some(tracked) = self.track(t, tcp_flags, now) {
            return Ok(Inserted {
                tracked,
                created: false,
                evicted: false,
            });
        }
        let tcp = if t.proto == Proto::Tcp {
            match tcp_next(Dir::Original, tcp_flags, TcpState::None) {
                SS => TcpState::SynSent,
                ES => TcpState::Established,
                _ => return Err(InsertError::NotNew),
            }
        } else {
            TcpState::None
        };
        let nat = nat();
        let reply = reply_tuple(t, &nat);
        if reply != *t && self.index.contains_key(&reply) {
            self.stats.clashes += 1;
            return Err(InsertError::Clash(reply));
        }
        let (slot, evicted) = self.make_room(now)?;
        let e = &mut self.slab[slot as usize];
        e.flow = Flow {
            original: *t,
            reply,
            nat,
            tcp,
            seen_reply: false,
            assured: false,
            created: now,
            deadline: now,
        };
        let gen = e.gen;
        self.index.insert(*t, slot);
        if reply != *t {
            self.index.insert(reply, slot | DIR_REPLY);
        }
        self.stats.entries += 1;
        self.stats.inserts += 1;
        self.refresh(slot, now);
        Ok(Inserted {
            tracked: Tracked {
                id: FlowId { slot, gen },
                dir: Dir::Original,
                verdict: Verdict::Accept,
            },
            created: true,
            evicted,
        })
    }

    /// The flow `id` names, if it still exists.
    pub fn flow(&self, id: FlowId) -> Option<&Flow> {
        let e = self.slab.get(id.slot as usize)?;
        (e.class != FREE && e.gen == id.gen).then_some(&e.flow)
    }

    /// The tuple a packet of flow `id` going `dir` must carry when it leaves: original packets
    /// get the NAT (e.g. client -> endpoint), replies get it undone (endpoint -> client appears
    /// to come from the service address).
    pub fn rewrite(&self, id: FlowId, dir: Dir) -> Option<Tuple> {
        let f = self.flow(id)?;
        Some(match dir {
            Dir::Original => f.reply.reversed(),
            Dir::Reply => f.original.reversed(),
        })
    }

    /// Removes flow `id`; false if it was already gone.
    pub fn remove(&mut self, id: FlowId) -> bool {
        if self.flow(id).is_none() {
            return false;
        }
        self.release(id.slot);
        self.stats.removals += 1;
        true
    }

    /// Removes every flow `pred` selects (e.g. `|f| f.nat.endpoint == Some(ep)` when an endpoint
    /// goes away) and returns how many. A control-plane event, not per packet: it visits every
    /// live flow, O(entries) (~10 ms for 1M flows).
    pub fn remove_where(&mut self, mut pred: impl FnMut(&Flow) -> bool) -> usize {
        let mut removed = 0;
        for class in 0..CLASSES {
            let mut s = self.heads[class];
            while s != NIL {
                let e = &self.slab[s as usize];
                let next = e.next;
                if pred(&e.flow) {
                    self.release(s);
                    removed += 1;
                }
                s = next;
            }
        }
        self.stats.removals += removed as u64;
        removed
    }

    /// Removes flows whose deadline is at or before `now`, at most `max` of them, oldest first
    /// within each class; returns how many. O(classes + removed): call it from housekeeping.
    pub fn expire(&mut self, now: Nanos, max: usize) -> usize {
        let mut removed = 0;
        for class in 0..CLASSES {
            while removed < max {
                let h = self.heads[class];
                if h == NIL || self.slab[h as usize].flow.deadline > now {
                    break;
                }
                self.release(h);
                removed += 1;
            }
        }
        self.stats.expirations += removed as u64;
        removed
    }

    /// The earliest deadline of any flow (when `expire` next has work), O(classes).
    pub fn next_deadline(&self) -> Option<Nanos> {
        self.heads
            .iter()
            .filter(|&&h| h != NIL)
            .map(|&h| self.slab[h as usize].flow.deadline)
            .min()
    }

    /// Every live flow, for `sluice flows`. Walks the slab: O(capacity).
    pub fn iter(&self) -> impl Iterator<Item = (FlowId, &Flow)> + '_ {
        self.slab.iter().enumerate().filter_map(|(i, e)| {
            (e.class != FREE).then_some((
                FlowId {
                    slot: i as u32,
                    gen: e.gen,
                },
                &e.flow,
            ))
        })
    }

    // ---- internals ----

    fn advance(&mut self, slot: u32, dir: Dir, flags: u8, now: Nanos) -> Step {
        let Some(e) = self.slab.get_mut(slot as usize) else {
            return Step::Done(Verdict::Invalid);
        };
        let f = &mut e.flow;
        if f.original.proto == Proto::Tcp {
            let old = f.tcp;
            let next = tcp_next(dir, flags, old);
            match next {
                IV => return Step::Done(Verdict::Invalid),
                IG => return Step::Done(Verdict::Ignore),
                _ => {}
            }
            if dir == Dir::Original
                && next == SS
                && matches!(old, TcpState::TimeWait | TcpState::Close)
            {
                return Step::Reopen;
            }
            let new = TcpState::ALL[usize::from(next)];
            if dir == Dir::Reply {
                f.seen_reply = true;
            }
            if f.seen_reply
                && new == TcpState::Established
                && matches!(old, TcpState::SynRecv | TcpState::Established)
            {
                f.assured = true;
            }
            f.tcp = new;
        } else if dir == Dir::Reply {
            f.seen_reply = true;
            // UDP answered is assured; ICMP never is (as in the kernel).
            f.assured = f.original.proto == Proto::Udp;
        }
        self.refresh(slot, now);
        Step::Done(Verdict::Accept)
    }

    fn class_of(&self, f: &Flow, now: Nanos) -> usize {
        match f.original.proto {
            Proto::Tcp => {
                let c = (f.tcp as usize).saturating_sub(1);
                if !f.seen_reply && self.timeouts[c] > self.timeouts[C_TCP_UNACK] {
                    C_TCP_UNACK
                } else {
                    c
                }
            }
            Proto::Udp => {
                if f.seen_reply && now > f.created.saturating_add(self.udp_stream_after) {
                    C_UDP_STREAM
                } else {
                    C_UDP
                }
            }
            Proto::Icmp => C_ICMP,
        }
    }

    /// Sets the deadline from the flow's class and moves it to the tail of that class's list.
    fn refresh(&mut self, slot: u32, now: Nanos) {
        let class = self.class_of(&self.slab[slot as usize].flow, now);
        self.unlink(slot);
        let e = &mut self.slab[slot as usize];
        e.flow.deadline = now.saturating_add(self.timeouts[class]);
        e.class = class as u8;
        e.prev = self.tails[class];
        e.next = NIL;
        match self.tails[class] {
            NIL => self.heads[class] = slot,
            t => self.slab[t as usize].next = slot,
        }
        self.tails[class] = slot;
    }

    fn unlink(&mut self, slot: u32) {
        let e = &self.slab[slot as usize];
        let (class, prev, next) = (e.class as usize, e.prev, e.next);
        if class >= CLASSES {
            return;
        }
        match prev {
            NIL => self.heads[class] = next,
            p => self.slab[p as usize].next = next,
        }
        match next {
            NIL => self.tails[class] = prev,
            n => self.slab[n as usize].prev = prev,
        }
        let e = &mut self.slab[slot as usize];
        e.prev = NIL;
        e.next = NIL;
        e.class = FREE;
    }

    /// Frees a live slot: off its list, out of the index, id invalidated, onto the free list.
    fn release(&mut self, slot: u32) {
        if self.slab[slot as usize].class == FREE {
            return;
        }
        self.unlink(slot);
        let (original, reply) = {
            let f = &self.slab[slot as usize].flow;
            (f.original, f.reply)
        };
        for key in [original, reply] {
            if self.index.get(&key).map(|&v| v & !DIR_REPLY) == Some(slot) {
                self.index.remove(&key);
            }
        }
        let e = &mut self.slab[slot as usize];
        e.gen = e.gen.wrapping_add(1);
        e.next = self.free;
        self.free = slot;
        self.stats.entries -= 1;
    }

    /// A free slot: from the free list, else an expired flow's, else the oldest non-assured
    /// flow's (true = a live flow was evicted).
    fn make_room(&mut self, now: Nanos) -> Result<(u32, bool), InsertError> {
        if let Some(slot) = self.pop_free() {
            return Ok((slot, false));
        }
        for class in 0..CLASSES {
            let h = self.heads[class];
            if h != NIL && self.slab[h as usize].flow.deadline <= now {
                self.release(h);
                self.stats.expirations += 1;
                return self.pop_free().map(|s| (s, false)).ok_or(InsertError::Full);
            }
        }
        // Oldest non-assured: the first one in each class list is that list's least recently
        // refreshed; compare across lists by last refresh (deadline - timeout).
        let mut best: Option<(Nanos, u32)> = None;
        for class in 0..CLASSES {
            let mut s = self.heads[class];
            for _ in 0..EVICT_PROBE {
                if s == NIL {
                    break;
                }
                let e = &self.slab[s as usize];
                if !e.flow.assured {
                    let seen = e.flow.deadline.saturating_sub(self.timeouts[class]);
                    if best.is_none_or(|(b, _)| seen < b) {
                        best = Some((seen, s));
                    }
                    break;
                }
                s = e.next;
            }
        }
        match best {
            Some((_, victim)) => {
                self.release(victim);
                self.stats.evictions += 1;
                self.pop_free().map(|s| (s, true)).ok_or(InsertError::Full)
            }
            None => {
                self.stats.full += 1;
                Err(InsertError::Full)
            }
        }
    }

    fn pop_free(&mut self) -> Option<u32> {
        let slot = self.free;
        let e = self.slab.get_mut(slot as usize)?;
        self.free = e.next;
        e.next = NIL;
        Some(slot)
    }

    /// Checks every invariant; for tests.
    #[cfg(test)]
    fn check(&self) -> Result<(), String> {
        let mut live = 0usize;
        let mut keys = 0usize;
        for class in 0..CLASSES {
            let (mut s, mut prev, mut last) = (self.heads[class], NIL, 0);
            while s != NIL {
                let e = &self.slab[s as usize];
                if e.class as usize != class || e.prev != prev {
                    return Err(format!("slot {s}: bad links in class {class}"));
                }
                if e.flow.deadline < last {
                    return Err(format!("class {class}: deadlines out of order at {s}"));
                }
                last = e.flow.deadline;
                if self.index.get(&e.flow.original) != Some(&s) {
                    return Err(format!(
                        "slot {s}: original {} not indexed",
                        e.flow.original
                    ));
                }
                if e.flow.reply != e.flow.original {
                    if self.index.get(&e.flow.reply) != Some(&(s | DIR_REPLY)) {
                        return Err(format!("slot {s}: reply {} not indexed", e.flow.reply));
                    }
                    keys += 1;
                }
                keys += 1;
                live += 1;
                prev = s;
                s = e.next;
            }
            if self.tails[class] != prev {
                return Err(format!("class {class}: tail mismatch"));
            }
        }
        let mut free = 0usize;
        let mut s = self.free;
        while s != NIL {
            free += 1;
            if free > self.slab.len() || self.slab[s as usize].class != FREE {
                return Err(format!("free list broken at {s}"));
            }
            s = self.slab[s as usize].next;
        }
        if live != self.len() || live + free != self.capacity() || keys != self.index.len() {
            return Err(format!(
                "live {live} len {} free {free} cap {} keys {keys} index {}",
                self.len(),
                self.capacity(),
                self.index.len()
            ));
        }
        Ok(())
    }
}

fn split(v: u32) -> (u32, Dir) {
    let dir = if v & DIR_REPLY != 0 {
        Dir::Reply
    } else {
        Dir::Original
    };
    (v & !DIR_REPLY, dir)
}

#[cfg(test)]
mod tests {
    use super::tcp_flags::*;
    use super::*;
    use proptest::prelude::*;

    const SEC: Nanos = 1_000_000_000;

    fn sa(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), port)
    }

    fn table(cap: usize) -> Conntrack {
        Conntrack::new(cap, Timeouts::default()).expect("table")
    }

    const CLIENT: [u8; 4] = [10, 1, 0, 5];
    const VIP: [u8; 4] = [10, 96, 0, 10];
    const EP: [u8; 4] = [10, 2, 0, 7];
    const NODE: [u8; 4] = [192, 168, 0, 1];

    fn client_tuple(proto: Proto, sport: u16) -> Tuple {
        Tuple::new(proto, sa(CLIENT, sport), sa(VIP, 80))
    }

    fn to_ep(port: u16) -> Nat {
        Nat {
            endpoint: Some(sa(EP, port)),
            snat: None,
        }
    }

    fn deadline(ct: &Conntrack, id: FlowId) -> Nanos {
        ct.flow(id).expect("flow").deadline
    }

    #[test]
    fn both_directions_find_one_entry_and_nat_reverses() {
        let mut ct = table(16);
        let t = client_tuple(Proto::Tcp, 40000);
        let nat = Nat {
            endpoint: Some(sa(EP, 8080)),
            snat: Some(sa(NODE, 61000)),
        };
        let ins = ct.get_or_insert(&t, SYN, 0, || nat).expect("insert");
        assert!(ins.created);
        let id = ins.tracked.id;
        // The packet leaves SNATed and DNATed.
        let out = ct.rewrite(id, Dir::Original).expect("rewrite");
        assert_eq!(out, Tuple::new(Proto::Tcp, sa(NODE, 61000), sa(EP, 8080)));
        // The endpoint's answer is found, as the reply of the same flow.
        let answer = out.reversed();
        assert_eq!(ct.lookup(&answer), Some((id, Dir::Reply)));
        assert_eq!(ct.lookup(&t), Some((id, Dir::Original)));
        // And goes back to the client from the service address.
        let back = ct.rewrite(id, Dir::Reply).expect("rewrite");
        assert_eq!(back, Tuple::new(Proto::Tcp, sa(VIP, 80), sa(CLIENT, 40000)));
        // A tuple of neither direction is not found.
        assert_eq!(ct.lookup(&client_tuple(Proto::Tcp, 40001)), None);
        assert_eq!(ct.len(), 1);
        ct.check().expect("consistent");
    }

    /// The method of the module header for ICMP errors: an error quotes the packet it answers;
    /// the quoted tuple, reversed, finds the flow and the error's direction; the outer header
    /// is rewritten like any packet of that direction, the quoted one to the reverse.
    #[test]
    fn icmp_error_is_matched_through_the_quoted_packet_and_translated() {
        let mut ct = table(16);
        let t = client_tuple(Proto::Udp, 40000);
        let id = ct
            .get_or_insert(&t, 0, 0, || to_ep(8080))
            .expect("insert")
            .tracked
            .id;
        // The endpoint's node answers the DNATed datagram with port unreachable: the error
        // travels endpoint -> client and quotes the datagram as it left (client -> endpoint).
        let quoted = ct.rewrite(id, Dir::Original).expect("rewrite");
        assert_eq!(quoted.dst_addr(), sa(EP, 8080));
        let (fid, dir) = ct.lookup(&quoted.reversed()).expect("the error's flow");
        assert_eq!((fid, dir), (id, Dir::Reply));
        // Its outer header goes back to the client from the service address, and the quoted
        // header is restored to what the client sent (client -> VIP).
        let outer = ct.rewrite(fid, dir).expect("rewrite");
        assert_eq!(outer.src_addr().ip().octets(), VIP);
        assert_eq!(outer.dst_addr(), sa(CLIENT, 40000));
        assert_eq!(outer.reversed(), t);
        // An error quoting a datagram of no flow is not matched.
        let stray = Tuple::new(Proto::Udp, sa(CLIENT, 40001), sa(EP, 8080));
        assert_eq!(ct.lookup(&stray.reversed()), None);
    }

    #[test]
    fn tcp_handshake_and_close_walk_states_and_timeouts() {
        let mut ct = table(16);
        let t = client_tuple(Proto::Tcp, 40000);
        let id = ct
            .get_or_insert(&t, SYN, 0, || to_ep(8080))
            .expect("syn")
            .tracked
            .id;
        let r = ct.rewrite(id, Dir::Original).expect("rw").reversed();
        let f = |ct: &Conntrack| *ct.flow(id).expect("flow");
        assert_eq!(f(&ct).tcp, TcpState::SynSent);
        assert_eq!(f(&ct).deadline, 120 * SEC);
        // An ACK from the client before any SYN-ACK is invalid and changes nothing.
        let v = ct.track(&t, ACK, SEC).expect("hit").verdict;
        assert_eq!(v, Verdict::Invalid);
        assert_eq!(f(&ct).deadline, 120 * SEC);

        let steps: [(&Tuple, u8, TcpState, Nanos, bool); 7] = [
            (&r, SYN | ACK, TcpState::SynRecv, 60, false),
            (&t, ACK, TcpState::Established, 5 * 24 * 3600, true),
            (&t, FIN | ACK, TcpState::FinWait, 120, true),
            (&r, ACK, TcpState::CloseWait, 60, true),
            (&r, FIN | ACK, TcpState::LastAck, 30, true),
            (&t, ACK, TcpState::TimeWait, 120, true),
            (&t, RST, TcpState::Close, 10, true),
        ];
        for (i, (tuple, flags, state, timeout, assured)) in steps.into_iter().enumerate() {
            let now = (i as u64 + 2) * SEC;
            let tr = ct.track(tuple, flags, now).expect("hit");
            assert_eq!(tr.verdict, Verdict::Accept, "step {i}");
            assert_eq!(f(&ct).tcp, state, "step {i}");
            assert_eq!(f(&ct).deadline, now + timeout * SEC, "step {i}: {state:?}");
            assert_eq!(f(&ct).assured, assured, "step {i}");
        }
        ct.check().expect("consistent");
    }

    #[test]
    fn tcp_rst_closes_and_syn_reopens_with_new_nat() {
        let mut ct = table(16);
        let t = client_tuple(Proto::Tcp, 40000);
        let id = ct
            .get_or_insert(&t, SYN, 0, || to_ep(1))
            .expect("syn")
            .tracked
            .id;
        let r = ct.rewrite(id, Dir::Original).expect("rw").reversed();
        ct.track(&r, RST | ACK, SEC).expect("rst");
        assert_eq!(ct.flow(id).expect("flow").tcp, TcpState::Close);
        assert_eq!(deadline(&ct, id), 11 * SEC);
        // A new SYN on a closed flow ends it; the caller creates a fresh one (new endpoint).
        assert_eq!(ct.track(&t, SYN, 2 * SEC), None);
        assert_eq!(ct.flow(id), None);
        assert_eq!(ct.lookup(&r), None);
        let ins = ct
            .get_or_insert(&t, SYN, 2 * SEC, || to_ep(2))
            .expect("reopen");
        assert!(ins.created);
        let f = ct.flow(ins.tracked.id).expect("flow");
        assert_eq!(f.nat.endpoint, Some(sa(EP, 2)));
        assert_eq!(f.tcp, TcpState::SynSent);
        assert_eq!(ct.stats().reopens, 1);
        ct.check().expect("consistent");
    }

    #[test]
    fn tcp_pickup_without_reply_is_capped_at_unack() {
        let mut ct = table(16);
        let t = client_tuple(Proto::Tcp, 40000);
        let id = ct
            .get_or_insert(&t, ACK, 0, || to_ep(1))
            .expect("ack")
            .tracked
            .id;
        assert_eq!(ct.flow(id).expect("flow").tcp, TcpState::Established);
        assert_eq!(deadline(&ct, id), 300 * SEC);
        let r = ct.rewrite(id, Dir::Original).expect("rw").reversed();
        ct.track(&r, ACK, SEC).expect("reply");
        assert_eq!(deadline(&ct, id), SEC + 5 * 24 * 3600 * SEC);
        assert!(ct.flow(id).expect("flow").assured);
    }

    #[test]
    fn tcp_packet_that_cannot_start_a_flow_creates_none() {
        let mut ct = table(16);
        let t = client_tuple(Proto::Tcp, 40000);
        for flags in [RST, FIN, SYN | ACK, 0] {
            let mut called = false;
            let res = ct.get_or_insert(&t, flags, 0, || {
                called = true;
                to_ep(1)
            });
            assert_eq!(res, Err(InsertError::NotNew), "flags {flags:#x}");
            assert!(!called);
        }
        assert!(ct.is_empty());
    }

    #[test]
    fn udp_30s_then_120s_once_answered_after_2s() {
        let mut ct = table(16);
        let t = client_tuple(Proto::Udp, 5353);
        let id = ct
            .get_or_insert(&t, 0, 0, || to_ep(53))
            .expect("udp")
            .tracked
            .id;
        assert_eq!(deadline(&ct, id), 30 * SEC);
        // More packets from the client alone keep 30 s.
        ct.track(&t, 0, 5 * SEC).expect("hit");
        assert_eq!(deadline(&ct, id), 35 * SEC);
        assert!(!ct.flow(id).expect("flow").assured);
        // An answer: assured; the flow is older than 2 s, so the stream timeout.
        let r = ct.rewrite(id, Dir::Original).expect("rw").reversed();
        let tr = ct.track(&r, 0, 6 * SEC).expect("reply");
        assert_eq!(tr.dir, Dir::Reply);
        assert_eq!(deadline(&ct, id), 126 * SEC);
        assert!(ct.flow(id).expect("flow").assured);

        // A question answered within 2 s (one DNS exchange) stays at 30 s, as in the kernel.
        let (t0, ms) = (10 * SEC, SEC / 1000);
        let q = client_tuple(Proto::Udp, 5354);
        let qid = ct
            .get_or_insert(&q, 0, t0, || to_ep(53))
            .expect("udp")
            .tracked
            .id;
        let qr = ct.rewrite(qid, Dir::Original).expect("rw").reversed();
        ct.track(&qr, 0, t0 + 5 * ms).expect("reply");
        assert_eq!(deadline(&ct, qid), t0 + 5 * ms + 30 * SEC);
        assert!(ct.flow(qid).expect("flow").assured);
        ct.track(&q, 0, t0 + 3 * SEC).expect("again");
        assert_eq!(deadline(&ct, qid), t0 + 123 * SEC);
        ct.check().expect("consistent");
    }

    #[test]
    fn icmp_echo_tracks_id_and_30s() {
        let mut ct = table(16);
        let t = Tuple::icmp_echo(Ipv4Addr::from(CLIENT), Ipv4Addr::from(VIP), 77);
        let nat = Nat {
            endpoint: Some(sa(EP, 9999)),
            snat: Some(sa(NODE, 1234)),
        };
        let id = ct.get_or_insert(&t, 0, 0, || nat).expect("icmp").tracked.id;
        let out = ct.rewrite(id, Dir::Original).expect("rw");
        assert_eq!(
            out,
            Tuple::icmp_echo(Ipv4Addr::from(NODE), Ipv4Addr::from(EP), 1234)
        );
        let reply = Tuple::icmp_echo(Ipv4Addr::from(EP), Ipv4Addr::from(NODE), 1234);
        assert_eq!(ct.lookup(&reply), Some((id, Dir::Reply)));
        let back = ct.rewrite(id, Dir::Reply).expect("rw");
        assert_eq!(
            back,
            Tuple::icmp_echo(Ipv4Addr::from(VIP), Ipv4Addr::from(CLIENT), 77)
        );
        ct.track(&reply, 0, SEC).expect("reply");
        assert_eq!(deadline(&ct, id), 31 * SEC);
        assert!(!ct.flow(id).expect("flow").assured);
    }

    #[test]
    fn expire_removes_exactly_the_expired_at_most_max() {
        let mut ct = table(64);
        let mut udp = Vec::new();
        for i in 0..10u16 {
            let t = client_tuple(Proto::Udp, 1000 + i);
            let now = u64::from(i) * SEC;
            udp.push(
                ct.get_or_insert(&t, 0, now, || to_ep(53))
                    .expect("udp")
                    .tracked
                    .id,
            );
        }
        let tcp: Vec<FlowId> = (0..3u16)
            .map(|i| {
                let t = client_tuple(Proto::Tcp, 2000 + i);
                ct.get_or_insert(&t, SYN, 0, || to_ep(80))
                    .expect("tcp")
                    .tracked
                    .id
            })
            .collect();
        assert_eq!(ct.next_deadline(), Some(30 * SEC));
        // At 34.5 s the UDP flows created at 0..=4 s (deadlines 30..=34 s) are expired.
        let now = 34 * SEC + SEC / 2;
        assert_eq!(ct.expire(now, 3), 3);
        assert!(
            udp[..3].iter().all(|&id| ct.flow(id).is_none()),
            "oldest first"
        );
        assert!(udp[3..].iter().all(|&id| ct.flow(id).is_some()));
        assert_eq!(ct.expire(now, 100), 2);
        assert!(udp[..5].iter().all(|&id| ct.flow(id).is_none()));
        assert!(udp[5..].iter().chain(&tcp).all(|&id| ct.flow(id).is_some()));
        assert_eq!(ct.expire(now, 100), 0);
        assert_eq!(ct.stats().expirations, 5);
        assert_eq!(ct.len(), 8);
        assert_eq!(ct.next_deadline(), Some(35 * SEC));
        // A refreshed flow moves: flow 5 (deadline 35 s) refreshed at 34.5 s survives 36.5 s,
        // flow 6 (deadline 36 s) does not.
        let t5 = client_tuple(Proto::Udp, 1005);
        ct.track(&t5, 0, now).expect("hit");
        assert_eq!(ct.expire(36 * SEC + SEC / 2, 100), 1);
        assert!(ct.flow(udp[5]).is_some());
        assert!(ct.flow(udp[6]).is_none());
        ct.check().expect("consistent");
    }

    #[test]
    fn full_table_reclaims_expired_evicts_non_assured_and_counts() {
        let mut ct = table(4);
        // Two assured TCP flows.
        let mut assured = Vec::new();
        for i in 0..2u16 {
            let t = client_tuple(Proto::Tcp, 100 + i);
            let id = ct
                .get_or_insert(&t, ACK, 0, || to_ep(80))
                .expect("tcp")
                .tracked
                .id;
            let r = ct.rewrite(id, Dir::Original).expect("rw").reversed();
            ct.track(&r, ACK, 0).expect("reply");
            ct.track(&t, ACK, 0).expect("ack");
            assert!(ct.flow(id).expect("flow").assured);
            assured.push(id);
        }
        // Two unanswered UDP flows, the first older.
        let u0 = ct
            .get_or_insert(&client_tuple(Proto::Udp, 1), 0, SEC, || to_ep(53))
            .expect("u0")
            .tracked
            .id;
        let u1 = ct
            .get_or_insert(&client_tuple(Proto::Udp, 2), 0, 2 * SEC, || to_ep(53))
            .expect("u1")
            .tracked
            .id;
        // Full, nothing expired: the oldest non-assured goes.
        let ins = ct
            .get_or_insert(&client_tuple(Proto::Udp, 3), 0, 3 * SEC, || to_ep(53))
            .expect("evicting insert");
        assert!(ins.created && ins.evicted);
        assert_eq!(ct.flow(u0), None);
        assert_eq!(ct.lookup(&client_tuple(Proto::Udp, 1)), None);
        assert!(ct.flow(u1).is_some());
        assert_eq!(ct.stats().evictions, 1);
        assert_eq!(ct.len(), 4);
        // Later, u1 (deadline 32 s) has expired: it is reclaimed, not evicted.
        let ins = ct
            .get_or_insert(&client_tuple(Proto::Udp, 4), 0, 32 * SEC, || to_ep(53))
            .expect("reclaiming insert");
        assert!(ins.created && !ins.evicted);
        assert_eq!(ct.flow(u1), None);
        assert_eq!(ct.stats().expirations, 1);
        assert_eq!(ct.stats().evictions, 1);
        // Replace the UDP flows with assured ones: then a new flow is refused, nothing evicted.
        ct.remove_where(|f| f.original.proto == Proto::Udp);
        for i in 0..2u16 {
            let t = client_tuple(Proto::Udp, 10 + i);
            let id = ct
                .get_or_insert(&t, 0, 33 * SEC, || to_ep(53))
                .expect("udp")
                .tracked
                .id;
            let r = ct.rewrite(id, Dir::Original).expect("rw").reversed();
            ct.track(&r, 0, 33 * SEC).expect("reply");
        }
        let res = ct.get_or_insert(&client_tuple(Proto::Udp, 20), 0, 34 * SEC, || to_ep(53));
        assert_eq!(res, Err(InsertError::Full));
        assert_eq!(ct.stats().full, 1);
        assert!(assured.iter().all(|&id| ct.flow(id).is_some()));
        assert_eq!(ct.len(), 4);
        ct.check().expect("consistent");
    }

    #[test]
    fn double_insert_in_one_batch_gives_one_flow() {
        let mut ct = table(16);
        let t = client_tuple(Proto::Udp, 5353);
        let mut picks = 0;
        let mut pick = || {
            picks += 1;
            to_ep(5000 + picks)
        };
        let a = ct.get_or_insert(&t, 0, 0, &mut pick).expect("first");
        let b = ct.get_or_insert(&t, 0, 0, &mut pick).expect("second");
        assert!(a.created);
        assert!(!b.created);
        assert_eq!(a.tracked.id, b.tracked.id);
        assert_eq!(b.tracked.dir, Dir::Original);
        assert_eq!(picks, 1, "the endpoint is chosen once");
        assert_eq!(
            ct.rewrite(a.tracked.id, Dir::Original),
            ct.rewrite(b.tracked.id, Dir::Original)
        );
        assert_eq!((ct.len(), ct.stats().inserts), (1, 1));
    }

    #[test]
    fn nat_clash_is_refused() {
        let mut ct = table(16);
        let nat = Nat {
            endpoint: Some(sa(EP, 80)),
            snat: Some(sa(NODE, 61000)),
        };
        ct.get_or_insert(&client_tuple(Proto::Tcp, 1), SYN, 0, || nat)
            .expect("first");
        let res = ct.get_or_insert(&client_tuple(Proto::Tcp, 2), SYN, 0, || nat);
        assert!(matches!(res, Err(InsertError::Clash(_))));
        assert_eq!((ct.len(), ct.stats().clashes), (1, 1));
    }

    #[test]
    fn remove_where_endpoint_removes_its_flows_both_directions() {
        let mut ct = table(16);
        let mut a = Vec::new();
        let mut b = Vec::new();
        for i in 0..5u16 {
            let t = client_tuple(if i % 2 == 0 { Proto::Udp } else { Proto::Tcp }, 100 + i);
            let nat = if i < 3 { to_ep(1) } else { to_ep(2) };
            let id = ct
                .get_or_insert(&t, SYN, 0, || nat)
                .expect("insert")
                .tracked
                .id;
            let r = ct.rewrite(id, Dir::Original).expect("rw").reversed();
            if i < 3 { &mut a } else { &mut b }.push((id, t, r));
        }
        let gone = Some(sa(EP, 1));
        assert_eq!(ct.remove_where(|f| f.nat.endpoint == gone), 3);
        for (id, t, r) in &a {
            assert_eq!(ct.flow(*id), None);
            assert_eq!(ct.lookup(t), None);
            assert_eq!(ct.lookup(r), None);
            assert_eq!(ct.rewrite(*id, Dir::Reply), None, "stale id");
        }
        for (id, t, r) in &b {
            assert_eq!(ct.lookup(t), Some((*id, Dir::Original)));
            assert_eq!(ct.lookup(r), Some((*id, Dir::Reply)));
        }
        assert_eq!(ct.remove_where(|f| f.nat.endpoint == gone), 0);
        assert!(ct.remove(b[0].0));
        assert!(!ct.remove(b[0].0));
        assert_eq!((ct.len(), ct.stats().removals), (1, 4));
        ct.check().expect("consistent");
    }

    #[test]
    fn capacity_bounds_and_memory_per_flow() {
        assert!(Conntrack::new(0, Timeouts::default()).is_err());
        assert!(Conntrack::new(MAX_CAPACITY + 1, Timeouts::default()).is_err());
        let cap = 1 << 16;
        let ct = table(cap);
        let per_flow = ct.memory_bytes() / cap;
        println!(
            "entry {ENTRY_BYTES} B, index slot {} B, {per_flow} B per flow at capacity {cap}",
            size_of::<(Tuple, u32)>()
        );
        const { assert!(ENTRY_BYTES <= 80, "a slab entry grew past 80 B") };
        assert!(per_flow <= 200, "{per_flow} B per flow");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            port: u16,
            proto: u8,
            flags: u8,
            ep: u8,
            snat: Option<u16>,
        },
        Track {
            port: u16,
            proto: u8,
            reply: bool,
            flags: u8,
        },
        Advance(u64),
        Expire(usize),
        RemoveEndpoint(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let flags = prop::sample::select(vec![SYN, SYN | ACK, ACK, FIN | ACK, RST, 0]);
        prop_oneof![
            4 => (0..24u16, 0..3u8, flags.clone(), 0..3u8, prop::option::of(0..4u16))
                .prop_map(|(port, proto, flags, ep, snat)| Op::Insert { port, proto, flags, ep, snat }),
            4 => (0..24u16, 0..3u8, any::<bool>(), flags)
                .prop_map(|(port, proto, reply, flags)| Op::Track { port, proto, reply, flags }),
            // Mostly small steps (the table fills up), sometimes past every timeout but ESTABLISHED.
            2 => (0..5u64).prop_map(Op::Advance),
            1 => (0..400u64).prop_map(Op::Advance),
            1 => (0..8usize).prop_map(Op::Expire),
            1 => (0..3u8).prop_map(Op::RemoveEndpoint),
        ]
    }

    proptest! {
        #[test]
        fn random_operations_keep_the_indexes_consistent(ops in prop::collection::vec(op(), 1..300)) {
            let mut ct = Conntrack::new(8, Timeouts::default()).expect("table");
            let mut now: Nanos = 0;
            let protos = [Proto::Tcp, Proto::Udp, Proto::Icmp];
            for op in ops {
                match op {
                    Op::Insert { port, proto, flags, ep, snat } => {
                        let t = client_tuple(protos[usize::from(proto)], port);
                        let nat = Nat {
                            endpoint: Some(sa(EP, u16::from(ep))),
                            snat: snat.map(|p| sa(NODE, p)),
                        };
                        if let Ok(ins) = ct.get_or_insert(&t, flags, now, || nat) {
                            let (id, dir) = ct.lookup(&t).expect("inserted tuple is found");
                            prop_assert_eq!(id, ins.tracked.id);
                            prop_assert_eq!(dir, ins.tracked.dir);
                        }
                    }
                    Op::Track { port, proto, reply, flags } => {
                        let t = client_tuple(protos[usize::from(proto)], port);
                        let t = match (reply, ct.lookup(&t)) {
                            (true, Some((id, _))) => ct.flow(id).expect("live").reply,
                            _ => t,
                        };
                        ct.track(&t, flags, now);
                    }
                    Op::Advance(s) => now += s * SEC,
                    Op::Expire(max) => {
                        let n = ct.expire(now, max);
                        prop_assert!(n <= max);
                    }
                    Op::RemoveEndpoint(ep) => {
                        let target = Some(sa(EP, u16::from(ep)));
                        let expected = ct.iter().filter(|(_, f)| f.nat.endpoint == target).count();
                        prop_assert_eq!(ct.remove_where(|f| f.nat.endpoint == target), expected);
                    }
                }
                if let Err(e) = ct.check() {
                    return Err(TestCaseError::fail(e));
                }
                prop_assert!(ct.len() <= ct.capacity());
                // After a full expire nothing left is expired.
            }
            ct.expire(now, usize::MAX);
            prop_assert!(ct.iter().all(|(_, f)| f.deadline > now));
            prop_assert!(ct.check().is_ok());
        }
    }
}
