//! What the engine of one node is told to do: its ports, its routes and its overlay.
//!
//! The control plane compiles a cluster file into an [`EngineConfig`]; the engine never reads
//! YAML itself. Port indexes in routes refer to positions in [`EngineConfig::ports`]; when an
//! overlay is configured its uplink is opened as one more port, index `ports.len()`, and the
//! engine adds a route per peer (the peer's pod CIDR via the peer's underlay address out of
//! the uplink: see [`OverlayConfig`]).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::port::afpacket::RingKind;
use crate::port::Mac;
use crate::route::Route;

#[derive(Debug, Clone, PartialEq)]
pub enum PortKind {
    /// AF_PACKET on an existing interface (the host end of a pod's veth).
    AfPacket { ring: RingKind },
    /// A TAP device the engine creates, moved into the named network namespace if given.
    Tap { netns: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct PortConfig {
    /// Interface name.
    pub name: String,
    pub kind: PortKind,
    /// The engine's MAC on this port; `None` = the interface's own (AF_PACKET) or a derived one (TAP).
    pub mac: Option<Mac>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub node: String,
    /// The pods' default gateway: the engine answers ARP and ICMP echo for it on every pod port,
    /// and uses it as the source of the ICMP errors it sends.
    pub gateway: Ipv4Addr,
    pub admin_socket: PathBuf,
    pub ports: Vec<PortConfig>,
    pub routes: Vec<Route>,
    /// Pod traffic to other nodes, encapsulated on an underlay uplink; `None`: one node alone.
    pub overlay: Option<OverlayConfig>,
}

/// How pod packets cross the underlay to other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayMode {
    /// VXLAN (RFC 7348): the inner Ethernet frame (this node's VTEP MAC -> the peer's VTEP MAC)
    /// in UDP to `port` (8472 as flannel and Linux; 4789 is IANA's), VNI `vni`. The outer
    /// UDP checksum is computed when `udp_checksum`, else 0; both are accepted on receive.
    Vxlan {
        vni: u32,
        port: u16,
        udp_checksum: bool,
    },
    /// flannel's UDP backend: the inner IPv4 packet is the UDP payload, to `port` (8285).
    /// The outer UDP checksum is always computed.
    Udp { port: u16 },
}

impl OverlayMode {
    /// Bytes the encapsulation adds to an IPv4 packet on the underlay (outer IPv4 + UDP,
    /// plus VXLAN header and inner Ethernet for VXLAN): underlay MTU - this = pod MTU.
    pub fn mtu_overhead(&self) -> u16 {
        match self {
            OverlayMode::Vxlan { .. } => encap::vxlan::MTU_OVERHEAD as u16,
            OverlayMode::Udp { .. } => encap::udp_encap::MTU_OVERHEAD as u16,
        }
    }

    /// The UDP port tunnel frames are sent to and accepted on.
    pub fn port(&self) -> u16 {
        match *self {
            OverlayMode::Vxlan { port, .. } | OverlayMode::Udp { port } => port,
        }
    }
}

/// Another node of the cluster, reached through the overlay.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// Its name (for logs and the admin socket).
    pub node: String,
    /// Its underlay address: the outer destination of what goes to it, and the only outer
    /// source accepted from it.
    pub underlay_ip: Ipv4Addr,
    /// Its pod CIDR, routed to it.
    pub pod_cidr: Ipv4Addr,
    pub pod_prefix_len: u8,
    /// VXLAN: its VTEP MAC, the inner destination MAC (flannel's `VtepMAC`; for a kernel
    /// node, the MAC of its `flannel.1` VXLAN device). Unused in UDP mode.
    pub vtep_mac: Mac,
}

/// This node's side of the overlay.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayConfig {
    pub mode: OverlayMode,
    /// The underlay uplink: an AF_PACKET port on the node's underlay interface, opened after
    /// [`EngineConfig::ports`] (its port index is `ports.len()`). The engine answers ARP and
    /// ICMP echo for `local_ip` on it and resolves its peers (or the underlay gateway) there.
    pub uplink: PortConfig,
    /// This node's underlay address (the outer source) and the underlay subnet's prefix length.
    pub local_ip: Ipv4Addr,
    pub prefix_len: u8,
    /// Next hop for peers outside the underlay subnet (`None`: every peer is on-link).
    pub underlay_gateway: Option<Ipv4Addr>,
    /// This node's VTEP MAC (VXLAN: inner source MAC; peers send inner frames to it).
    pub vtep_mac: Mac,
    /// The underlay MTU (IPv4 bytes): encapsulated packets never exceed it. Pods must be
    /// configured with [`OverlayConfig::pod_mtu`]; a larger inner packet with DF set is refused
    /// with ICMP fragmentation-needed carrying the pod MTU, one without DF is fragmented.
    pub mtu: u16,
    /// Outer IPv4 TTL (64, as Linux).
    pub ttl: u8,
    pub peers: Vec<Peer>,
}

impl OverlayConfig {
    /// The largest inner IPv4 packet that fits the underlay MTU once encapsulated.
    pub fn pod_mtu(&self) -> u16 {
        self.mtu.saturating_sub(self.mode.mtu_overhead())
    }
}
