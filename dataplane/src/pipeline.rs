//! The pipeline: what happens to each frame of a received batch.
//!
//! ```text
//! frame ─ Ethernet ─┬─ ARP ── learn sender; answer for the gateway and proxied addresses
//!                   ├─ IPv4 ─ validate ─┬─ to the gateway: ICMP echo reply
//!                   │                   └─ route (LPM) ─ TTL ─ neighbour ─ rewrite MACs ─ TX
//!                   └─ anything else: dropped under its reason
//! ```
//! Every frame ends in exactly one [`Verdict`]: transmitted on a port, dropped under a named
//! [`DropReason`] (some drops send an ICMP error back in the same buffer), or consumed (an ARP
//! reply, a packet held while its next hop resolves). Frames the engine originates (ARP requests,
//! packets released by ARP resolution) go into a second, small batch, `local`. No allocation,
//! lock or syscall happens per frame; the frame is rewritten in place.

use std::net::Ipv4Addr;
use std::time::Instant;

use encap::{arp, checksum, ethernet, icmpv4, ipv4};

use crate::config::OverlayConfig;
use crate::counters::{Counters, DropReason, Event};
use crate::neigh::{Due, Hold, Neighbours};
use crate::overlay::Overlay;
use crate::packet::{Batch, Meta, Offload, PacketBuf, PortId};
use crate::port::Mac;
use crate::route::{Route, RouteTable};

const ETH: usize = ethernet::HEADER_LEN;
/// ICMP errors quote the original datagram up to a 576-byte result (RFC 1812 4.3.2.3).
const ICMP_ERROR_MAX: usize = 576;
const ICMP_ERRORS_PER_SEC: u32 = 1000;
const ICMP_ERROR_BURST: u32 = 100;

/// The fate of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Tx(PortId),
    Drop(DropReason),
    /// Dropped under the reason, and the buffer now holds an ICMP error for the input port.
    DropAndReply(DropReason),
    Consumed,
}

/// Global rate limit for ICMP errors (as Linux's `icmp_msgs_per_sec`).
struct TokenBucket {
    tokens: u32,
    last: Instant,
}

impl TokenBucket {
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        let add = (elapsed.as_micros() * u128::from(ICMP_ERRORS_PER_SEC) / 1_000_000) as u64;
        if add > 0 {
            self.tokens = (u64::from(self.tokens) + add).min(u64::from(ICMP_ERROR_BURST)) as u32;
            self.last = now;
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }
}

pub struct Pipeline {
    pub(crate) gateway: Ipv4Addr,
    pub(crate) macs: Vec<Mac>,
    pub routes: RouteTable,
    pub neigh: Neighbours,
    pub counters: Counters,
    icmp_budget: TokenBucket,
    due: Vec<Due>,
    /// Pod traffic to other nodes (see [`crate::overlay`]).
    pub(crate) overlay: Option<Overlay>,
    /// Segmentation and fragmentation output, one frame at a time.
    pub(crate) scratch: Box<[u8]>,
    /// An ARP request the overlay needs but could not append to `local` yet.
    pub(crate) arp_wanted: Option<(PortId, Ipv4Addr)>,
}

/// Bytes of [`Pipeline::scratch`]: the largest segment or fragment (headers + 64 KiB).
const SCRATCH: usize = encap::offload::MAX_HEADERS_LEN + 65536;

impl Pipeline {
    /// A pipeline for ports whose engine MACs are `macs` (index = port id).
    pub fn new(gateway: Ipv4Addr, macs: Vec<Mac>, routes: &[Route]) -> Self {
        let mut table = RouteTable::new();
        for r in routes {
            table.insert(*r);
        }
        let n = macs.len();
        Pipeline {
            gateway,
            macs,
            routes: table,
            neigh: Neighbours::new(),
            counters: Counters::new(n),
            icmp_budget: TokenBucket {
                tokens: ICMP_ERROR_BURST,
                last: Instant::now(),
            },
            due: Vec::new(),
            overlay: None,
            scratch: vec![0u8; SCRATCH].into_boxed_slice(),
            arp_wanted: None,
        }
    }

    /// Adds the overlay of `cfg`, its uplink being port `uplink` (its MAC must be in `macs`),
    /// with a route per peer.
    pub fn set_overlay(&mut self, cfg: &OverlayConfig, uplink: PortId) {
        let (ov, routes) = Overlay::new(cfg, uplink);
        for r in routes {
            self.routes.insert(r);
        }
        self.overlay = Some(ov);
    }

    /// The uplink port, when an overlay is configured.
    pub fn uplink(&self) -> Option<PortId> {
        self.overlay.as_ref().map(|o| o.uplink)
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    pub fn macs(&self) -> &[Mac] {
        &self.macs
    }

    /// Decide every frame of `batch` (sets `meta.out_port`); originated frames go to `local`.
    pub fn process(&mut self, batch: &mut Batch, local: &mut Batch, now: Instant) {
        let mut start = 0;
        while start < batch.len() {
            start = self.process_from(batch, start, local, now);
        }
    }

    /// Decide the frames of `batch` from index `start` on; returns the index to continue from.
    /// Stops right after a frame that appended frames to `local` (GSO segments, fragments,
    /// released or ARP frames), so that the caller can send `batch[start..returned]` and then
    /// `local` before going on: frames leave in the order they came, and `local` never has to
    /// hold the output of more than one frame.
    pub fn process_from(
        &mut self,
        batch: &mut Batch,
        start: usize,
        local: &mut Batch,
        now: Instant,
    ) -> usize {
        for i in start..batch.len() {
            let before = local.len();
            let pkt = batch.get_mut(i);
            let in_port = pkt.meta.in_port;
            if let Some(c) = self.counters.ports.get_mut(usize::from(in_port)) {
                c.rx_packets += 1;
                c.rx_bytes += pkt.len() as u64;
            }
            let verdict = self.classify(pkt, local, now);
            pkt.meta.out_port = match verdict {
                Verdict::Tx(p) => Some(p),
                Verdict::Drop(r) => {
                    self.counters.drop(r, usize::from(in_port));
                    None
                }
                Verdict::DropAndReply(r) => {
                    self.counters.drop(r, usize::from(in_port));
                    Some(in_port)
                }
                Verdict::Consumed => None,
            };
            if local.len() != before {
                return i + 1;
            }
        }
        batch.len()
    }

    fn classify(&mut self, pkt: &mut PacketBuf, local: &mut Batch, now: Instant) -> Verdict {
        let in_port = pkt.meta.in_port;
        let Some(&my_mac) = self.macs.get(usize::from(in_port)) else {
            return Verdict::Drop(DropReason::NotForUs);
        };
        let (dst_mac, ethertype) = match ethernet::Frame::new_checked(pkt.data()) {
            Ok(f) => (f.dst(), f.ethertype()),
            Err(_) => return Verdict::Drop(DropReason::EthTruncated),
        };
        let to_me = dst_mac == my_mac;
        if !to_me && !ethernet::is_multicast(dst_mac) {
            return Verdict::Drop(DropReason::NotForUs);
        }
        match ethertype {
            ethernet::ethertype::ARP => self.arp(pkt, my_mac, local),
            ethernet::ethertype::IPV4 if !to_me => Verdict::Drop(DropReason::Ipv4Multicast),
            // On the underlay uplink IPv4 is tunnel traffic or for the underlay address.
            ethernet::ethertype::IPV4 if self.uplink() == Some(in_port) => {
                self.underlay_ipv4(pkt, local, now)
            }
            ethernet::ethertype::IPV4 => self.ipv4(pkt, local, now),
            ethernet::ethertype::IPV6 => Verdict::Drop(DropReason::Ipv6),
            ethernet::ethertype::VLAN => Verdict::Drop(DropReason::VlanTagged),
            _ => Verdict::Drop(DropReason::UnknownEthertype),
        }
    }

    /// Whether the engine answers ARP for `target` arriving on `port`: the gateway, and (proxy
    /// ARP) any address routed out of another port, so pods configured with a subnet route
    /// instead of a /32 still reach their neighbours through the engine.
    fn answers_arp_for(&self, target: Ipv4Addr, port: PortId) -> bool {
        if let Some(a) = self.answers_underlay_arp(target, port) {
            return a;
        }
        target == self.gateway || self.routes.lookup(target).is_some_and(|r| r.port != port)
    }

    pub(crate) fn arp(&mut self, pkt: &mut PacketBuf, my_mac: Mac, local: &mut Batch) -> Verdict {
        let in_port = pkt.meta.in_port;
        let repr = match arp::Packet::new_checked(&pkt.data()[ETH..]) {
            Ok(p) => arp::Repr::parse(&p),
            Err(_) => return Verdict::Drop(DropReason::ArpMalformed),
        };
        if repr.sender_ip != Ipv4Addr::UNSPECIFIED && !ethernet::is_multicast(repr.sender_mac) {
            let (changed, held) = self.neigh.learn(in_port, repr.sender_ip, repr.sender_mac);
            if changed {
                self.counters.event(Event::NeighbourLearned);
            }
            self.flush_held(&held, repr.sender_mac, local);
        }
        match repr.op {
            arp::REQUEST if self.answers_arp_for(repr.target_ip, in_port) => {
                let reply = arp::Repr {
                    op: arp::REPLY,
                    sender_mac: my_mac,
                    sender_ip: repr.target_ip,
                    target_mac: repr.sender_mac,
                    target_ip: repr.sender_ip,
                };
                let data = pkt.data_mut();
                write_eth(data, repr.sender_mac, my_mac, ethernet::ethertype::ARP);
                reply.emit(&mut data[ETH..ETH + arp::LEN]);
                pkt.meta.offload = Offload::default();
                self.counters.event(Event::ArpReplied);
                Verdict::Tx(in_port)
            }
            arp::REPLY => Verdict::Consumed,
            _ => Verdict::Drop(DropReason::ArpNotForUs),
        }
    }

    /// Send packets that waited for `mac` (already rewritten for their output port).
    fn flush_held(&mut self, held: &[usize], mac: Mac, local: &mut Batch) {
        for &slot in held {
            let h = self.neigh.held(slot);
            let meta = h.meta;
            let Some(out) = meta.out_port else { continue };
            let src = self.macs[usize::from(out)];
            if local.push_copy(h.data(), meta) {
                let n = local.len() - 1;
                let data = local.get_mut(n).data_mut();
                data[0..6].copy_from_slice(&mac);
                data[6..12].copy_from_slice(&src);
            } else {
                self.counters
                    .drop(DropReason::TxFailed, usize::from(meta.in_port));
            }
        }
        self.neigh.release(held);
    }

    fn ipv4(&mut self, pkt: &mut PacketBuf, local: &mut Batch, now: Instant) -> Verdict {
        self.ipv4_routed(pkt, local, now, false)
    }

    /// Validates and routes an IPv4 frame. `from_tunnel`: it was just decapsulated, so it may
    /// only go to a local pod (never back into the tunnel), and errors are counted without an
    /// ICMP reply (which would have to travel back through the tunnel).
    pub(crate) fn ipv4_routed(
        &mut self,
        pkt: &mut PacketBuf,
        local: &mut Batch,
        now: Instant,
        from_tunnel: bool,
    ) -> Verdict {
        let (src, dst, ttl, total) = {
            let ip = match ipv4::Packet::new_checked(&pkt.data()[ETH..]) {
                Ok(ip) => ip,
                Err(e) => return Verdict::Drop(ipv4_reason(e)),
            };
            if !ip.verify_checksum() {
                return Verdict::Drop(DropReason::Ipv4BadChecksum);
            }
            (ip.src(), ip.dst(), ip.ttl(), ip.total_len())
        };
        // Drop Ethernet padding behind the datagram.
        pkt.set_len(ETH + usize::from(total));
        if dst == self.gateway {
            if from_tunnel {
                return Verdict::Drop(DropReason::LocalUnsupported);
            }
            return self.local(pkt);
        }
        if dst.is_multicast() || dst.is_broadcast() {
            return Verdict::Drop(DropReason::Ipv4Multicast);
        }
        if martian_source(src) {
            return Verdict::Drop(DropReason::Ipv4Martian);
        }
        let uplink = self.uplink();
        let route = self.routes.lookup(dst).copied();
        if from_tunnel {
            match route {
                Some(r) if Some(r.port) != uplink => {}
                _ => return Verdict::Drop(DropReason::OverlayNoRoute),
            }
            if ttl <= 1 {
                return Verdict::Drop(DropReason::TtlExpired);
            }
        }
        let Some(route) = route else {
            return self.icmp_error(
                pkt,
                icmpv4::DEST_UNREACHABLE,
                icmpv4::NET_UNREACHABLE,
                now,
                DropReason::NoRoute,
            );
        };
        if ttl <= 1 {
            return self.icmp_error(
                pkt,
                icmpv4::TIME_EXCEEDED,
                icmpv4::TTL_EXCEEDED_IN_TRANSIT,
                now,
                DropReason::TtlExpired,
            );
        }
        ipv4::Packet::new_unchecked(&mut pkt.data_mut()[ETH..]).decrement_ttl();
        self.counters.event(Event::Routed);
        if Some(route.port) == uplink {
            let peer = route
                .via
                .and_then(|v| self.overlay.as_ref().and_then(|o| o.peer_index(v)));
            return match peer {
                Some(p) => self.send_to_peer(pkt, p, local, now),
                None => Verdict::Drop(DropReason::NoRoute),
            };
        }
        let next_hop = route.next_hop(dst);
        pkt.meta.out_port = Some(route.port);
        match self.neigh.lookup(route.port, next_hop) {
            Some(mac) => {
                let src_mac = self.macs[usize::from(route.port)];
                let data = pkt.data_mut();
                data[0..6].copy_from_slice(&mac);
                data[6..12].copy_from_slice(&src_mac);
                Verdict::Tx(route.port)
            }
            None => match self.neigh.hold(route.port, next_hop, pkt, now) {
                Hold::Resolve => {
                    self.arp_request(route.port, next_hop, local);
                    Verdict::Consumed
                }
                Hold::Queued => Verdict::Consumed,
                Hold::Full => Verdict::Drop(DropReason::NeighbourQueueFull),
            },
        }
    }

    /// A datagram for the gateway address itself (or, on the uplink, the underlay address):
    /// answer pings.
    pub(crate) fn local(&mut self, pkt: &mut PacketBuf) -> Verdict {
        let in_port = pkt.meta.in_port;
        let data = pkt.data_mut();
        let (src_mac, ihl) = {
            let ip = ipv4::Packet::new_unchecked(&data[ETH..]);
            if ip.protocol() != ipv4::protocol::ICMP {
                return Verdict::Drop(DropReason::LocalUnsupported);
            }
            (
                ethernet::Frame::new_unchecked(&data[..]).src(),
                ip.header_len(),
            )
        };
        {
            let icmp = match icmpv4::Packet::new_checked(&data[ETH + ihl..]) {
                Ok(p) if p.verify_checksum() => p,
                _ => return Verdict::Drop(DropReason::IcmpMalformed),
            };
            if icmp.msg_type() != icmpv4::ECHO_REQUEST || icmp.code() != 0 {
                return Verdict::Drop(DropReason::LocalUnsupported);
            }
        }
        {
            let mut icmp = icmpv4::Packet::new_unchecked(&mut data[ETH + ihl..]);
            let old = u16::from(icmpv4::ECHO_REQUEST) << 8;
            let new = u16::from(icmpv4::ECHO_REPLY) << 8;
            let c = checksum::update16(icmp.checksum(), old, new);
            icmp.set_msg_type(icmpv4::ECHO_REPLY);
            icmp.set_checksum(c);
        }
        {
            let mut ip = ipv4::Packet::new_unchecked(&mut data[ETH..]);
            let (s, d) = (ip.src(), ip.dst());
            ip.set_src(d);
            ip.set_dst(s);
            ip.set_ttl(64);
            ip.fill_checksum();
        }
        let my_mac = self.macs[usize::from(in_port)];
        write_eth(data, src_mac, my_mac, ethernet::ethertype::IPV4);
        pkt.meta.offload = Offload::default();
        self.counters.event(Event::EchoReplied);
        Verdict::Tx(in_port)
    }

    /// Turn `pkt` into an ICMP error about itself, addressed back to its sender on its input
    /// port, unless the rules say no error may be sent (RFC 1122 3.2.2, RFC 1812 4.3.2.7) or the
    /// rate limit is exhausted. The original is counted under `reason` either way.
    fn icmp_error(
        &mut self,
        pkt: &mut PacketBuf,
        msg_type: u8,
        code: u8,
        now: Instant,
        reason: DropReason,
    ) -> Verdict {
        self.icmp_error_rest(pkt, msg_type, code, [0; 4], now, reason)
    }

    /// [`Pipeline::icmp_error`] with the 4 bytes after the checksum given (e.g. the next-hop
    /// MTU of fragmentation-needed).
    pub(crate) fn icmp_error_rest(
        &mut self,
        pkt: &mut PacketBuf,
        msg_type: u8,
        code: u8,
        rest: [u8; 4],
        now: Instant,
        reason: DropReason,
    ) -> Verdict {
        if !may_send_icmp_error(&pkt.data()[ETH..]) {
            return Verdict::Drop(reason);
        }
        if !self.icmp_budget.take(now) {
            self.counters.event(Event::IcmpErrorRateLimited);
            return Verdict::Drop(reason);
        }
        let in_port = pkt.meta.in_port;
        let my_mac = self.macs[usize::from(in_port)];
        build_icmp_error(pkt, self.gateway, my_mac, msg_type, code, rest);
        self.counters.event(Event::IcmpErrorSent);
        Verdict::DropAndReply(reason)
    }

    pub(crate) fn arp_request(&mut self, port: PortId, target: Ipv4Addr, local: &mut Batch) {
        let mac = self.macs[usize::from(port)];
        let mut frame = [0u8; ETH + arp::LEN];
        write_eth(
            &mut frame,
            ethernet::BROADCAST,
            mac,
            ethernet::ethertype::ARP,
        );
        arp::Repr {
            op: arp::REQUEST,
            sender_mac: mac,
            sender_ip: self.arp_source(port),
            target_mac: [0; 6],
            target_ip: target,
        }
        .emit(&mut frame[ETH..]);
        if local.push_copy(
            &frame,
            Meta {
                in_port: port,
                out_port: Some(port),
                offload: Offload::default(),
            },
        ) {
            self.counters.event(Event::ArpRequested);
        }
    }

    /// The earliest time [`Pipeline::timers`] has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.neigh.next_deadline()
    }

    /// ARP retries and resolution failures (packets that waited get ICMP host unreachable).
    pub fn timers(&mut self, local: &mut Batch, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        self.neigh.expire(now, &mut due);
        for d in due.drain(..) {
            match d {
                Due::Retry(port, ip) => self.arp_request(port, ip, local),
                Due::Failed(held) => {
                    for &slot in &held {
                        let h = self.neigh.held(slot);
                        let in_port = h.meta.in_port;
                        // A held tunnel frame has outer headers: no ICMP error can be made
                        // from it (the peer's underlay address did not answer).
                        // A frame decapsulated from a peer cannot get one either (it would
                        // have to be encapsulated back).
                        let uplink = self.uplink();
                        if uplink.is_some()
                            && (h.meta.out_port == uplink || Some(in_port) == uplink)
                        {
                            self.counters
                                .drop(DropReason::NeighbourUnresolved, usize::from(in_port));
                            continue;
                        }
                        let meta = Meta {
                            in_port,
                            out_port: Some(in_port),
                            offload: Offload::default(),
                        };
                        let ok = may_send_icmp_error(&h.data()[ETH.min(h.len())..])
                            && self.icmp_budget.take(now);
                        if ok && local.push_copy(h.data(), meta) {
                            // The held copy still has the sender's Ethernet source: the error
                            // goes back to it.
                            let n = local.len() - 1;
                            let my_mac = self.macs[usize::from(in_port)];
                            let b = local.get_mut(n);
                            build_icmp_error(
                                b,
                                self.gateway,
                                my_mac,
                                icmpv4::DEST_UNREACHABLE,
                                icmpv4::HOST_UNREACHABLE,
                                [0; 4],
                            );
                            self.counters.event(Event::IcmpErrorSent);
                        }
                        self.counters
                            .drop(DropReason::NeighbourUnresolved, usize::from(in_port));
                    }
                    self.neigh.release(&held);
                }
            }
        }
        self.due = due;
    }
}

fn ipv4_reason(e: ipv4::Error) -> DropReason {
    match e {
        ipv4::Error::BadVersion => DropReason::Ipv4BadVersion,
        ipv4::Error::BadIhl => DropReason::Ipv4BadIhl,
        ipv4::Error::HeaderTruncated => DropReason::Ipv4HeaderTruncated,
        ipv4::Error::BadTotalLength => DropReason::Ipv4BadTotalLength,
        // Truncated, and the other protocols' reasons (not produced by the IPv4 view).
        _ => DropReason::Ipv4Truncated,
    }
}

fn martian_source(src: Ipv4Addr) -> bool {
    src.is_multicast() || src.is_broadcast() || src.is_loopback() || src.is_unspecified()
}

fn write_eth(frame: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    frame[0..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// No ICMP error about an ICMP error, a non-first fragment, or a datagram from an address
/// nobody can answer.
fn may_send_icmp_error(ip_bytes: &[u8]) -> bool {
    let Ok(ip) = ipv4::Packet::new_checked(ip_bytes) else {
        return false;
    };
    if ip.frag_offset() != 0
        || martian_source(ip.src())
        || ip.dst().is_multicast()
        || ip.dst().is_broadcast()
    {
        return false;
    }
    if ip.protocol() == ipv4::protocol::ICMP {
        // Only queries (echo, timestamp, ...) may cause errors; errors never do.
        return match ip.payload().first() {
            Some(&t) => !matches!(t, 3 | 4 | 5 | 11 | 12),
            None => false,
        };
    }
    true
}

/// Rewrite `pkt` (an Ethernet + IPv4 frame, already validated) into an ICMP error quoting it:
/// `[eth][ip gateway -> original source][icmp type code rest][original header + data]`, sent
/// back to the original Ethernet source.
fn build_icmp_error(
    pkt: &mut PacketBuf,
    from: Ipv4Addr,
    my_mac: Mac,
    msg_type: u8,
    code: u8,
    rest: [u8; 4],
) {
    const IP: usize = ipv4::HEADER_LEN;
    const ICMP_HDR: usize = 8;
    let (orig_src, orig_mac, orig_len) = {
        let d = pkt.data();
        let ip = ipv4::Packet::new_unchecked(&d[ETH..]);
        (
            ip.src(),
            ethernet::Frame::new_unchecked(d).src(),
            usize::from(ip.total_len()),
        )
    };
    let quote = orig_len
        .min(ICMP_ERROR_MAX - IP - ICMP_HDR)
        .min(pkt.len() - ETH);
    let Some(buf) = pkt.data_with_tail(IP + ICMP_HDR) else {
        return;
    };
    buf.copy_within(ETH..ETH + quote, ETH + IP + ICMP_HDR);
    write_eth(buf, orig_mac, my_mac, ethernet::ethertype::IPV4);
    ipv4::Repr {
        src: from,
        dst: orig_src,
        protocol: ipv4::protocol::ICMP,
        ttl: 64,
        ident: 0,
        dont_frag: false,
        payload_len: (ICMP_HDR + quote) as u16,
    }
    .emit(&mut buf[ETH..ETH + IP]);
    {
        let mut icmp =
            icmpv4::Packet::new_unchecked(&mut buf[ETH + IP..ETH + IP + ICMP_HDR + quote]);
        icmp.set_msg_type(msg_type);
        icmp.set_code(code);
        icmp.set_rest_of_header(rest);
        icmp.fill_checksum();
    }
    pkt.set_len(ETH + IP + ICMP_HDR + quote);
    pkt.meta.offload = Offload::default();
}
