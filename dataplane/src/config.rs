//! What the engine of one node is told to do: its ports and its routes.
//!
//! The control plane compiles a cluster file into an [`EngineConfig`]; the engine never reads
//! YAML itself. Port indexes in routes refer to positions in [`EngineConfig::ports`].

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
}
