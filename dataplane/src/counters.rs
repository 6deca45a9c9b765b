//! Counters: per port, per drop reason, per event.
//!
//! Every drop has a named reason, declared once in [`DropReason`]: the variant is the index into
//! the counter array, and its name and description are what `sluice counters` prints (the VPP
//! habit). The engine thread counts into plain integers ([`Counters`]) and publishes them to a
//! [`SharedCounters`] of atomics after each burst, so readers (the admin socket) never slow the
//! packet path and the packet path takes no lock and no locked instruction per packet.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{json, Map, Value};

macro_rules! reasons {
    ($ty:ident { $($variant:ident => $name:literal, $desc:literal;)* }) => {
        /// Why a frame was dropped.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $ty { $($variant,)* }

        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();
            /// The counter name (snake_case).
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name,)* }
            }
            /// One line saying what it means.
            pub fn description(self) -> &'static str {
                match self { $($ty::$variant => $desc,)* }
            }
        }
    };
}

reasons!(DropReason {
    EthTruncated => "eth_truncated", "frame shorter than an Ethernet header";
    NotForUs => "eth_not_for_us", "unicast frame to a MAC address that is not the engine's on that port";
    UnknownEthertype => "eth_unknown_ethertype", "ethertype the engine does not handle";
    VlanTagged => "eth_vlan_tagged", "802.1Q-tagged frame (VLANs are not configured)";
    Ipv6 => "ipv6", "IPv6 frame (router/neighbour solicitations, multicast; IPv6 is not routed yet)";
    ArpMalformed => "arp_malformed", "ARP packet too short or not Ethernet/IPv4";
    ArpNotForUs => "arp_not_for_us", "ARP request for an address the engine does not answer on that port";
    Ipv4Truncated => "ipv4_truncated", "IPv4 packet shorter than 20 bytes";
    Ipv4BadVersion => "ipv4_bad_version", "IPv4 ethertype but version field is not 4";
    Ipv4BadIhl => "ipv4_bad_ihl", "IPv4 header length field below 5 words";
    Ipv4HeaderTruncated => "ipv4_header_truncated", "IPv4 header length beyond the end of the frame";
    Ipv4BadTotalLength => "ipv4_bad_total_length", "IPv4 total length below the header length or beyond the frame";
    Ipv4BadChecksum => "ipv4_bad_checksum", "IPv4 header checksum does not verify";
    Ipv4Martian => "ipv4_martian", "source address is multicast, broadcast, loopback or 0.0.0.0 while routing";
    Ipv4Multicast => "ipv4_multicast", "multicast or broadcast destination (not routed)";
    NoRoute => "no_route", "no route to the destination (ICMP net unreachable sent)";
    TtlExpired => "ttl_expired", "TTL reached zero (ICMP time exceeded sent)";
    NeighbourUnresolved => "neighbour_unresolved", "next hop did not answer ARP (ICMP host unreachable sent)";
    NeighbourQueueFull => "neighbour_queue_full", "too many packets waiting for ARP resolution";
    LocalUnsupported => "local_unsupported", "packet to the gateway address that is not an ICMP echo request";
    IcmpMalformed => "icmp_malformed", "ICMP message to the gateway too short or with a bad checksum";
    TxFailed => "tx_failed", "the output port could not take the frame (device queue full or error)";
    RxRing => "rx_ring", "dropped by the kernel before the engine read it (ring full) or truncated by the ring";
    FragNeeded => "frag_needed", "DF packet larger than the pod MTU of the overlay (ICMP fragmentation needed sent)";
    UnderlayNotForUs => "underlay_not_for_us", "IPv4 on the underlay uplink not addressed to this node's underlay address";
    OverlayEthernetTruncated => "overlay_ethernet_truncated", "tunnel frame shorter than an Ethernet header";
    OverlayNotIpv4 => "overlay_not_ipv4", "tunnel frame whose outer ethertype is not IPv4";
    OverlayOuterIpv4Malformed => "overlay_outer_ipv4_malformed", "tunnel frame with a truncated or invalid outer IPv4 header";
    OverlayOuterIpv4Checksum => "overlay_outer_ipv4_checksum", "tunnel frame whose outer IPv4 header checksum is wrong";
    OverlayOuterFragment => "overlay_outer_fragment", "tunnel frame that is an outer IPv4 fragment (not reassembled)";
    OverlayNotUdp => "overlay_not_udp", "packet to this node's underlay address that is neither UDP to the tunnel port nor ICMP echo";
    OverlayWrongPort => "overlay_wrong_port", "UDP to this node's underlay address on a port other than the tunnel's";
    OverlayUdpLength => "overlay_udp_length", "tunnel frame whose UDP length disagrees with its IPv4 payload";
    OverlayUdpChecksum => "overlay_udp_checksum", "tunnel frame with a wrong nonzero outer UDP checksum";
    VxlanTruncated => "vxlan_truncated", "UDP payload shorter than the 8-byte VXLAN header";
    VxlanBadFlags => "vxlan_bad_flags", "VXLAN header with the I flag clear or reserved bits set";
    OverlayInnerTruncated => "overlay_inner_truncated", "tunnel frame whose inner Ethernet header is cut short";
    OverlayInnerIpv4Malformed => "overlay_inner_ipv4_malformed", "tunnel frame whose inner IPv4 header is truncated or invalid";
    OverlayUnknownPeer => "overlay_unknown_peer", "tunnel frame from an underlay address that is not a known peer node";
    OverlayWrongVni => "overlay_wrong_vni", "VXLAN frame with a VNI other than the configured one";
    OverlayInnerNotForUs => "overlay_inner_not_for_us", "VXLAN inner frame not addressed to this node's VTEP MAC";
    OverlayInnerNotIpv4 => "overlay_inner_not_ipv4", "VXLAN inner frame that is not IPv4";
    OverlayNoRoute => "overlay_no_route", "decapsulated packet for an address that is not a pod of this node";
});

reasons!(Event {
    ArpReplied => "arp_replied", "ARP replies sent for the gateway or proxied addresses";
    ArpRequested => "arp_requested", "ARP requests sent to resolve a next hop";
    NeighbourLearned => "neighbour_learned", "neighbour entries created or changed";
    EchoReplied => "icmp_echo_replied", "ICMP echo replies sent from the gateway address";
    IcmpErrorSent => "icmp_error_sent", "ICMP errors sent (unreachable, time exceeded)";
    IcmpErrorRateLimited => "icmp_error_rate_limited", "ICMP errors not sent because of the rate limit";
    Routed => "routed", "IPv4 packets forwarded";
    Encapsulated => "overlay_encapsulated", "packets encapsulated towards a peer node";
    Decapsulated => "overlay_decapsulated", "tunnel packets accepted from a peer node";
    Fragmented => "ipv4_fragmented", "packets without DF split into fragments to fit the overlay";
});

/// Counters of one port.
#[derive(Debug, Clone, Copy, Default)]
pub struct PortCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames received but dropped (any reason).
    pub rx_dropped: u64,
    /// Frames that could not be transmitted.
    pub tx_dropped: u64,
}

const PORT_FIELDS: usize = 6;

impl PortCounters {
    fn as_array(&self) -> [u64; PORT_FIELDS] {
        [
            self.rx_packets,
            self.rx_bytes,
            self.tx_packets,
            self.tx_bytes,
            self.rx_dropped,
            self.tx_dropped,
        ]
    }
}

/// The engine thread's own counters (plain integers).
#[derive(Debug, Clone)]
pub struct Counters {
    pub ports: Vec<PortCounters>,
    pub drops: [u64; DropReason::COUNT],
    pub events: [u64; Event::COUNT],
}

impl Counters {
    pub fn new(ports: usize) -> Self {
        Counters {
            ports: vec![PortCounters::default(); ports],
            drops: [0; DropReason::COUNT],
            events: [0; Event::COUNT],
        }
    }

    #[inline]
    pub fn drop(&mut self, reason: DropReason, in_port: usize) {
        self.drops[reason as usize] += 1;
        if let Some(p) = self.ports.get_mut(in_port) {
            p.rx_dropped += 1;
        }
    }

    #[inline]
    pub fn event(&mut self, e: Event) {
        self.events[e as usize] += 1;
    }

    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    pub fn event_count(&self, e: Event) -> u64 {
        self.events[e as usize]
    }
}

/// Counters published for readers in other threads.
pub struct SharedCounters {
    port_names: Vec<String>,
    ports: Vec<[AtomicU64; PORT_FIELDS]>,
    drops: Vec<AtomicU64>,
    events: Vec<AtomicU64>,
    /// Set once the engine has opened its ports and entered its loop.
    pub ready: AtomicBool,
}

impl SharedCounters {
    pub fn new(port_names: Vec<String>) -> Self {
        let n = port_names.len();
        SharedCounters {
            port_names,
            ports: (0..n).map(|_| Default::default()).collect(),
            drops: (0..DropReason::COUNT).map(|_| AtomicU64::new(0)).collect(),
            events: (0..Event::COUNT).map(|_| AtomicU64::new(0)).collect(),
            ready: AtomicBool::new(false),
        }
    }

    /// Copy the engine's counters in (single writer: plain relaxed stores).
    pub fn publish(&self, c: &Counters) {
        for (dst, src) in self.ports.iter().zip(&c.ports) {
            for (d, s) in dst.iter().zip(src.as_array()) {
                d.store(s, Ordering::Relaxed);
            }
        }
        for (d, s) in self.drops.iter().zip(c.drops.iter()) {
            d.store(*s, Ordering::Relaxed);
        }
        for (d, s) in self.events.iter().zip(c.events.iter()) {
            d.store(*s, Ordering::Relaxed);
        }
    }

    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Ordering::Relaxed)
    }

    /// All counters as JSON: `{"ports": {name: {...}}, "drops": {reason: n}, "events": {...}}`.
    /// Drop reasons and events are all listed, zero or not, so readers can rely on the keys.
    pub fn to_json(&self) -> Value {
        let mut ports = Map::new();
        for (name, p) in self.port_names.iter().zip(&self.ports) {
            let v: Vec<u64> = p.iter().map(|a| a.load(Ordering::Relaxed)).collect();
            ports.insert(
                name.clone(),
                json!({"rx_packets": v[0], "rx_bytes": v[1], "tx_packets": v[2], "tx_bytes": v[3],
                       "rx_dropped": v[4], "tx_dropped": v[5]}),
            );
        }
        let mut drops = Map::new();
        for r in DropReason::ALL {
            drops.insert(
                r.name().to_string(),
                json!(self.drops[*r as usize].load(Ordering::Relaxed)),
            );
        }
        let mut events = Map::new();
        for e in Event::ALL {
            events.insert(
                e.name().to_string(),
                json!(self.events[*e as usize].load(Ordering::Relaxed)),
            );
        }
        json!({"ports": ports, "drops": drops, "events": events})
    }
}

/// Human-readable table of a `counters` JSON document (what `sluice counters` prints).
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<16} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10}\n",
        "port", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "rx_drop", "tx_drop"
    ));
    if let Some(ports) = v.get("ports").and_then(Value::as_object) {
        for (name, p) in ports {
            let g = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
            out.push_str(&format!(
                "{:<16} {:>12} {:>14} {:>12} {:>14} {:>10} {:>10}\n",
                name,
                g("rx_packets"),
                g("rx_bytes"),
                g("tx_packets"),
                g("tx_bytes"),
                g("rx_dropped"),
                g("tx_dropped")
            ));
        }
    }
    for (title, key, lookup) in [
        (
            "drops",
            "drops",
            &(|n: &str| {
                DropReason::ALL
                    .iter()
                    .find(|r| r.name() == n)
                    .map(|r| r.description())
            }) as &dyn Fn(&str) -> Option<&'static str>,
        ),
        (
            "events",
            "events",
            &(|n: &str| {
                Event::ALL
                    .iter()
                    .find(|r| r.name() == n)
                    .map(|r| r.description())
            }),
        ),
    ] {
        let nonzero: Vec<(&String, u64)> = v
            .get(key)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, n)| n.as_u64().filter(|&n| n > 0).map(|n| (k, n)))
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "\n{title}:{}\n",
            if nonzero.is_empty() { " none" } else { "" }
        ));
        for (k, n) in nonzero {
            out.push_str(&format!(
                "  {:<26} {:>12}  {}\n",
                k,
                n,
                lookup(k).unwrap_or("")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_publish_roundtrips() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        let mut c = Counters::new(2);
        c.drop(DropReason::Ipv4BadChecksum, 1);
        c.drop(DropReason::Ipv4BadChecksum, 1);
        c.event(Event::Routed);
        c.ports[0].rx_packets = 7;
        let s = SharedCounters::new(vec!["a".into(), "b".into()]);
        s.publish(&c);
        let j = s.to_json();
        assert_eq!(j["drops"]["ipv4_bad_checksum"], 2);
        assert_eq!(j["ports"]["b"]["rx_dropped"], 2);
        assert_eq!(j["ports"]["a"]["rx_packets"], 7);
        assert_eq!(j["events"]["routed"], 1);
        let text = render(&j);
        assert!(text.contains("ipv4_bad_checksum"), "{text}");
        assert!(
            text.contains("IPv4 header checksum does not verify"),
            "{text}"
        );
    }
}
