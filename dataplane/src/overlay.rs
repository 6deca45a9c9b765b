//! The overlay: pod packets to other nodes, encapsulated on the underlay uplink, and tunnel
//! frames from them, decapsulated (flannel's subnet model, VXLAN or UDP mode).
//!
//! ```text
//! pod ─ route: peer's pod CIDR via peer ─ segment GSO / complete checksum ─ MTU: DF? ICMP
//!       frag-needed : fragment ─ inner Ethernet (VTEP MACs) ─ VXLAN|UDP ─ outer IPv4/Ethernet
//!       ─ underlay neighbour (ARP) ─ uplink
//! uplink ─ ARP: answer for the underlay address, learn peers
//!        ─ IPv4 to the underlay address ─ ICMP echo: reply
//!                                       ─ UDP to the tunnel port: validate (encap crate),
//!                                         known peer? VNI? inner MAC? ─ strip ─ route to a
//!                                         local pod (never back into the tunnel)
//! ```
//!
//! Promises:
//! - Every checksum of what goes on the underlay is computed here, in software: the inner
//!   transport checksum of an offloaded frame is completed and GSO super-frames are segmented
//!   before encapsulation, the outer IPv4 (and, when configured, UDP) checksums are written by
//!   the encap crate. Nothing is left to a NIC (the VXLAN checksum-offload stalls flannel and
//!   Calico users hit cannot happen).
//! - Decapsulation accepts only frames from a configured peer's underlay address, with the
//!   configured VNI and the I flag alone, addressed to this node's VTEP MAC, carrying IPv4 for
//!   a local pod. Everything else is dropped under a named reason.
//! - An encapsulated packet never exceeds the underlay MTU: a bigger inner packet with DF set
//!   gets ICMP fragmentation-needed carrying the pod MTU; one without DF is fragmented.

use std::net::Ipv4Addr;
use std::time::Instant;

use encap::udp_encap::DecapError;
use encap::{ethernet, icmpv4, ipv4, offload, udp_encap, vxlan};
use rustc_hash::FxHashMap;

use crate::config::{OverlayConfig, OverlayMode, Peer};
use crate::counters::{DropReason, Event};
use crate::neigh::Hold;
use crate::packet::{Batch, Meta, Offload, PacketBuf, PortId};
use crate::pipeline::{Pipeline, Verdict};
use crate::port::Mac;
use crate::route::Route;

const ETH: usize = ethernet::HEADER_LEN;

/// The overlay state a pipeline keeps (built once from an [`OverlayConfig`]).
pub struct Overlay {
    pub(crate) mode: OverlayMode,
    pub(crate) uplink: PortId,
    pub(crate) local_ip: Ipv4Addr,
    net: u32,
    mask: u32,
    gateway: Option<Ipv4Addr>,
    pub(crate) vtep_mac: Mac,
    pub(crate) pod_mtu: u16,
    ttl: u8,
    pub(crate) peers: Vec<Peer>,
    by_ip: FxHashMap<Ipv4Addr, u16>,
}

impl Overlay {
    /// The overlay of `cfg` with its uplink at port `uplink`, and the routes it adds: each
    /// peer's pod CIDR out of the uplink via the peer's underlay address.
    pub fn new(cfg: &OverlayConfig, uplink: PortId) -> (Overlay, Vec<Route>) {
        let mask = if cfg.prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(cfg.prefix_len.min(32)))
        };
        let mut by_ip = FxHashMap::default();
        let mut routes = Vec::with_capacity(cfg.peers.len());
        for (i, p) in cfg.peers.iter().enumerate() {
            by_ip.insert(p.underlay_ip, i as u16);
            routes.push(Route {
                prefix: p.pod_cidr,
                len: p.pod_prefix_len,
                port: uplink,
                via: Some(p.underlay_ip),
            });
        }
        (
            Overlay {
                mode: cfg.mode,
                uplink,
                local_ip: cfg.local_ip,
                net: u32::from(cfg.local_ip) & mask,
                mask,
                gateway: cfg.underlay_gateway,
                vtep_mac: cfg.vtep_mac,
                pod_mtu: cfg.pod_mtu(),
                ttl: cfg.ttl,
                peers: cfg.peers.clone(),
                by_ip,
            },
            routes,
        )
    }

    /// The underlay next hop towards `peer_ip`: itself when on the underlay subnet (or when no
    /// gateway is configured), else the underlay gateway.
    fn next_hop(&self, peer_ip: Ipv4Addr) -> Ipv4Addr {
        match self.gateway {
            Some(gw) if u32::from(peer_ip) & self.mask != self.net => gw,
            _ => peer_ip,
        }
    }

    pub fn peer_index(&self, underlay_ip: Ipv4Addr) -> Option<u16> {
        self.by_ip.get(&underlay_ip).copied()
    }
}

fn decap_reason(e: DecapError) -> DropReason {
    match e {
        DecapError::EthernetTruncated => DropReason::OverlayEthernetTruncated,
        DecapError::NotIpv4(_) => DropReason::OverlayNotIpv4,
        DecapError::OuterIpv4(_) => DropReason::OverlayOuterIpv4Malformed,
        DecapError::OuterChecksum => DropReason::OverlayOuterIpv4Checksum,
        DecapError::Fragment => DropReason::OverlayOuterFragment,
        DecapError::NotUdp(_) => DropReason::OverlayNotUdp,
        DecapError::WrongPort(_) => DropReason::OverlayWrongPort,
        DecapError::UdpLength => DropReason::OverlayUdpLength,
        DecapError::UdpChecksum => DropReason::OverlayUdpChecksum,
        DecapError::Truncated => DropReason::VxlanTruncated,
        DecapError::BadFlags { .. } => DropReason::VxlanBadFlags,
        DecapError::InnerTruncated => DropReason::OverlayInnerTruncated,
        DecapError::InnerIpv4(_) => DropReason::OverlayInnerIpv4Malformed,
    }
}

impl Pipeline {
    /// An IPv4 frame received on the underlay uplink (ARP there is the pipeline's own).
    pub(crate) fn underlay_ipv4(
        &mut self,
        pkt: &mut PacketBuf,
        local: &mut Batch,
        now: Instant,
    ) -> Verdict {
        let Some(ov) = self.overlay.as_ref() else {
            return Verdict::Drop(DropReason::UnderlayNotForUs);
        };
        let (local_ip, mode, vtep_mac) = (ov.local_ip, ov.mode, ov.vtep_mac);
        let known_peer =
            |p: &Pipeline, ip| p.overlay.as_ref().and_then(|o| o.peer_index(ip)).is_some();
        // A kernel peer on a veth underlay hands its frames over with a transport checksum
        // left to "the NIC" (the inner one; the outer UDP checksum was computed from it with
        // local checksum offload): finish it, as the wire would have, before validating.
        let o = pkt.meta.offload;
        if o.needs_csum {
            if offload::complete_checksum(pkt.data_mut(), &o).is_err() {
                return Verdict::Drop(DropReason::OverlayUdpChecksum);
            }
            pkt.meta.offload = Offload::default();
        }
        let (dst, proto, total) = {
            let ip = match ipv4::Packet::new_checked(&pkt.data()[ETH..]) {
                Ok(ip) => ip,
                Err(_) => return Verdict::Drop(DropReason::OverlayOuterIpv4Malformed),
            };
            if !ip.verify_checksum() {
                return Verdict::Drop(DropReason::OverlayOuterIpv4Checksum);
            }
            (ip.dst(), ip.protocol(), ip.total_len())
        };
        if dst != local_ip {
            return Verdict::Drop(DropReason::UnderlayNotForUs);
        }
        pkt.set_len(ETH + usize::from(total));
        match proto {
            ipv4::protocol::ICMP => self.local(pkt),
            ipv4::protocol::UDP => {
                let (inner_at, inner_len) = match mode {
                    OverlayMode::Vxlan { vni, port, .. } => {
                        let d = match vxlan::decapsulate(pkt.data(), port) {
                            Ok(d) => d,
                            Err(e) => return Verdict::Drop(decap_reason(e)),
                        };
                        if !known_peer(self, d.outer_src) {
                            return Verdict::Drop(DropReason::OverlayUnknownPeer);
                        }
                        if d.vni != vni {
                            return Verdict::Drop(DropReason::OverlayWrongVni);
                        }
                        let inner = ethernet::Frame::new_unchecked(&pkt.data()[d.inner_range()]);
                        if inner.dst() != vtep_mac {
                            return Verdict::Drop(DropReason::OverlayInnerNotForUs);
                        }
                        if inner.ethertype() != ethernet::ethertype::IPV4 {
                            return Verdict::Drop(DropReason::OverlayInnerNotIpv4);
                        }
                        (d.inner_offset, d.inner_len)
                    }
                    OverlayMode::Udp { port } => {
                        let d = match udp_encap::decapsulate_ip(pkt.data(), port) {
                            Ok(d) => d,
                            Err(e) => return Verdict::Drop(decap_reason(e)),
                        };
                        if !known_peer(self, d.outer_src) {
                            return Verdict::Drop(DropReason::OverlayUnknownPeer);
                        }
                        // Room for an Ethernet header in front of the inner packet: the
                        // outer headers are at least that long.
                        let at = d.inner_offset - ETH;
                        let data = pkt.data_mut();
                        data[at..at + 12].fill(0);
                        data[at + 12..at + ETH]
                            .copy_from_slice(&ethernet::ethertype::IPV4.to_be_bytes());
                        (at, ETH + d.inner_len)
                    }
                };
                if !pkt.pull_front(inner_at) {
                    return Verdict::Drop(DropReason::OverlayInnerTruncated);
                }
                pkt.set_len(inner_len);
                pkt.meta.offload = Offload::default();
                self.counters.event(Event::Decapsulated);
                self.ipv4_routed(pkt, local, now, true)
            }
            _ => Verdict::Drop(DropReason::OverlayNotUdp),
        }
    }

    /// Sends a routed IPv4 frame (TTL already decremented) to peer `peer` through the tunnel:
    /// completes offloads, enforces the pod MTU, encapsulates. GSO segments and fragments are
    /// built in `local` (the original is then consumed).
    pub(crate) fn send_to_peer(
        &mut self,
        pkt: &mut PacketBuf,
        peer: u16,
        local: &mut Batch,
        now: Instant,
    ) -> Verdict {
        let Some(pod_mtu) = self.overlay.as_ref().map(|o| usize::from(o.pod_mtu)) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let o = pkt.meta.offload;
        let (total, df) = {
            let ip = ipv4::Packet::new_unchecked(&pkt.data()[ETH..]);
            (usize::from(ip.total_len()), ip.dont_frag())
        };
        if o.gso != offload::GsoKind::None {
            // Each segment carries the headers plus up to gso_size bytes.
            let seg_ip_len = usize::from(o.hdr_len).saturating_sub(ETH) + usize::from(o.gso_size);
            if seg_ip_len > pod_mtu {
                return self.frag_needed(pkt, pod_mtu, now);
            }
            let mut scratch = std::mem::take(&mut self.scratch);
            let meta = Meta {
                in_port: pkt.meta.in_port,
                out_port: None,
                offload: Offload::default(),
            };
            let first = local.len();
            let mut full = false;
            let r = offload::segment(pkt.data(), &o, &mut scratch, |seg| {
                if !local.push_copy(seg, meta) {
                    full = true;
                }
            });
            self.scratch = scratch;
            if r.is_err() {
                return Verdict::Drop(DropReason::TxFailed);
            }
            if full {
                self.counters
                    .drop(DropReason::TxFailed, usize::from(meta.in_port));
            }
            for i in first..local.len() {
                let v = self.encap_to(local.get_mut(i), peer, None, now);
                self.finish_local(i, v, local);
            }
            return Verdict::Consumed;
        }
        if o.needs_csum {
            if offload::complete_checksum(pkt.data_mut(), &o).is_err() {
                return Verdict::Drop(DropReason::TxFailed);
            }
            pkt.meta.offload = Offload::default();
        }
        if total > pod_mtu {
            if df {
                return self.frag_needed(pkt, pod_mtu, now);
            }
            return self.fragment_to(pkt, peer, pod_mtu, local, now);
        }
        self.encap_to(pkt, peer, Some(local), now)
    }

    /// ICMP fragmentation needed (type 3 code 4) back to the sender, next-hop MTU = pod MTU.
    fn frag_needed(&mut self, pkt: &mut PacketBuf, pod_mtu: usize, now: Instant) -> Verdict {
        let mtu = u16::try_from(pod_mtu).unwrap_or(u16::MAX).to_be_bytes();
        self.icmp_error_rest(
            pkt,
            icmpv4::DEST_UNREACHABLE,
            icmpv4::FRAG_NEEDED,
            [0, 0, mtu[0], mtu[1]],
            now,
            DropReason::FragNeeded,
        )
    }

    /// Fragments a non-DF packet bigger than the pod MTU into `local`, each fragment
    /// encapsulated to `peer`.
    fn fragment_to(
        &mut self,
        pkt: &mut PacketBuf,
        peer: u16,
        pod_mtu: usize,
        local: &mut Batch,
        now: Instant,
    ) -> Verdict {
        let mut scratch = std::mem::take(&mut self.scratch);
        let meta = Meta {
            in_port: pkt.meta.in_port,
            out_port: None,
            offload: Offload::default(),
        };
        let eth: [u8; ETH] = {
            let mut h = [0u8; ETH];
            h.copy_from_slice(&pkt.data()[..ETH]);
            h
        };
        let first = local.len();
        let mut full = false;
        let r = ipv4::fragment(&pkt.data()[ETH..], pod_mtu, &mut scratch, |frag| {
            let Some(b) = local.next_free() else {
                full = true;
                return;
            };
            let space = b.rx_space();
            if space.len() < ETH + frag.len() {
                full = true;
                return;
            }
            space[..ETH].copy_from_slice(&eth);
            space[ETH..ETH + frag.len()].copy_from_slice(frag);
            b.set_len(ETH + frag.len());
            b.meta = meta;
            local.commit();
        });
        self.scratch = scratch;
        if r.is_err() || full {
            // Fragments already queued are dropped with the packet: half a datagram is useless.
            for i in first..local.len() {
                local.get_mut(i).meta.out_port = None;
            }
            return Verdict::Drop(DropReason::TxFailed);
        }
        self.counters.event(Event::Fragmented);
        for i in first..local.len() {
            let v = self.encap_to(local.get_mut(i), peer, None, now);
            self.finish_local(i, v, local);
        }
        Verdict::Consumed
    }

    /// Records the verdict of a frame built in `local`: sent if `Tx`, else not sent (held
    /// frames were copied; drops are counted). ARP requests wanted while encapsulating frames
    /// of `local` are sent here (they could not be appended while a frame of `local` was
    /// borrowed).
    fn finish_local(&mut self, i: usize, v: Verdict, local: &mut Batch) {
        let in_port = usize::from(local.get(i).meta.in_port);
        local.get_mut(i).meta.out_port = match v {
            Verdict::Tx(p) => Some(p),
            Verdict::Drop(r) | Verdict::DropAndReply(r) => {
                self.counters.drop(r, in_port);
                None
            }
            Verdict::Consumed => None,
        };
        if let Some((port, ip)) = self.arp_wanted.take() {
            self.arp_request(port, ip, local);
        }
    }

    /// Encapsulates the inner frame in `pkt` (Ethernet + IPv4, complete) to peer `peer` and
    /// resolves the underlay next hop. `local` receives an ARP request if resolution starts;
    /// `None`: remember it in `arp_wanted` for the caller to send.
    fn encap_to(
        &mut self,
        pkt: &mut PacketBuf,
        peer: u16,
        local: Option<&mut Batch>,
        now: Instant,
    ) -> Verdict {
        let Some(ov) = self.overlay.as_ref() else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let Some(p) = ov.peers.get(usize::from(peer)) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let uplink = ov.uplink;
        let src_mac = self.macs[usize::from(uplink)];
        let (dst_ip, vtep_dst, local_ip, vtep_src, ttl) =
            (p.underlay_ip, p.vtep_mac, ov.local_ip, ov.vtep_mac, ov.ttl);
        let next_hop = ov.next_hop(dst_ip);
        let ok = match ov.mode {
            OverlayMode::Vxlan {
                vni,
                port,
                udp_checksum,
            } => {
                let inner_len = pkt.len();
                {
                    let d = pkt.data_mut();
                    d[0..6].copy_from_slice(&vtep_dst);
                    d[6..12].copy_from_slice(&vtep_src);
                }
                let sport = vxlan::source_port(pkt.data());
                let e = vxlan::Encap {
                    src_mac,
                    dst_mac: [0; 6],
                    src_ip: local_ip,
                    dst_ip,
                    dst_port: port,
                    vni,
                    ttl,
                    udp_checksum,
                };
                match pkt.push_front(vxlan::OVERHEAD) {
                    Some(buf) => vxlan::encapsulate(buf, inner_len, &e, sport).is_ok(),
                    None => false,
                }
            }
            OverlayMode::Udp { port } => {
                let sport = udp_encap::source_port(&pkt.data()[ETH..]);
                let inner_len = pkt.len() - ETH;
                let e = udp_encap::UdpEncap {
                    src_mac,
                    dst_mac: [0; 6],
                    src_ip: local_ip,
                    dst_ip,
                    dst_port: port,
                    ttl,
                    udp_checksum: true,
                };
                pkt.pull_front(ETH)
                    && match pkt.push_front(udp_encap::OVERHEAD) {
                        Some(buf) => udp_encap::encapsulate_ip(buf, inner_len, &e, sport).is_ok(),
                        None => false,
                    }
            }
        };
        if !ok {
            return Verdict::Drop(DropReason::TxFailed);
        }
        pkt.meta.offload = Offload::default();
        pkt.meta.out_port = Some(uplink);
        self.counters.event(Event::Encapsulated);
        match self.neigh.lookup(uplink, next_hop) {
            Some(mac) => {
                pkt.data_mut()[0..6].copy_from_slice(&mac);
                Verdict::Tx(uplink)
            }
            None => match self.neigh.hold(uplink, next_hop, pkt, now) {
                Hold::Resolve => {
                    match local {
                        Some(l) => self.arp_request(uplink, next_hop, l),
                        None => self.arp_wanted = Some((uplink, next_hop)),
                    }
                    Verdict::Consumed
                }
                Hold::Queued => Verdict::Consumed,
                Hold::Full => Verdict::Drop(DropReason::NeighbourQueueFull),
            },
        }
    }

    /// The sender address of ARP requests on `port`: the underlay address on the uplink,
    /// the pods' gateway elsewhere.
    pub(crate) fn arp_source(&self, port: PortId) -> Ipv4Addr {
        match &self.overlay {
            Some(ov) if ov.uplink == port => ov.local_ip,
            _ => self.gateway,
        }
    }

    /// Whether the engine answers ARP for `target` on the uplink (its underlay address only).
    pub(crate) fn answers_underlay_arp(&self, target: Ipv4Addr, port: PortId) -> Option<bool> {
        match &self.overlay {
            Some(ov) if ov.uplink == port => Some(target == ov.local_ip),
            _ => None,
        }
    }

    /// The overlay's description for the admin socket.
    pub fn overlay_info(&self) -> Option<serde_json::Value> {
        let ov = self.overlay.as_ref()?;
        let mac = |m: &Mac| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        let mode = match ov.mode {
            OverlayMode::Vxlan {
                vni,
                port,
                udp_checksum,
            } => {
                serde_json::json!({"mode": "vxlan", "vni": vni, "port": port, "udp_checksum": udp_checksum})
            }
            OverlayMode::Udp { port } => serde_json::json!({"mode": "udp", "port": port}),
        };
        Some(serde_json::json!({
            "encapsulation": mode,
            "local_ip": ov.local_ip.to_string(),
            "vtep_mac": mac(&ov.vtep_mac),
            "pod_mtu": ov.pod_mtu,
            "peers": ov.peers.iter().map(|p| serde_json::json!({
                "node": p.node,
                "underlay_ip": p.underlay_ip.to_string(),
                "pod_cidr": format!("{}/{}", p.pod_cidr, p.pod_prefix_len),
                "vtep_mac": mac(&p.vtep_mac),
                "next_hop_mac": self.neigh.lookup(ov.uplink, ov.next_hop(p.underlay_ip)).map(|m| mac(&m)),
            })).collect::<Vec<_>>(),
        }))
    }
}
