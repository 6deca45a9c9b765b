//! From the desired state of the cluster to the tables of one node's engine.
//!
//! Each pod of the node gets a port (in the order the file lists them) and a /32 route to it.
//! Later issues add remote pod CIDRs (overlay), services and DNS here; the engine never reads
//! the cluster file itself.

use dataplane::config::{EngineConfig, PortConfig, PortKind as EnginePortKind};
use dataplane::port::afpacket::RingKind as EngineRing;
use dataplane::route::Route;

use crate::config::{Cluster, Node, PortKind, RingKind};

/// The engine configuration of `node`.
pub fn engine_config(node: &Node) -> EngineConfig {
    let ports = node
        .pods
        .iter()
        .map(|pod| PortConfig {
            name: pod.port.interface.clone(),
            kind: match pod.port.kind {
                PortKind::AfPacket => EnginePortKind::AfPacket {
                    ring: match pod.port.ring {
                        RingKind::V2 => EngineRing::V2,
                        RingKind::V3 => EngineRing::V3,
                    },
                },
                PortKind::Tap => EnginePortKind::Tap {
                    netns: pod.port.netns.clone(),
                },
            },
            mac: pod.port.mac,
        })
        .collect();
    let routes = node
        .pods
        .iter()
        .enumerate()
        .map(|(i, pod)| Route {
            prefix: pod.ip,
            len: 32,
            port: i as u16,
            via: None,
        })
        .collect();
    EngineConfig {
        node: node.name.clone(),
        gateway: node.gateway,
        admin_socket: node.admin_socket.clone(),
        ports,
        routes,
    }
}

/// The engine configuration of the node called `name`, or an error listing the nodes there are.
pub fn for_node(cluster: &Cluster, name: &str) -> Result<EngineConfig, String> {
    match cluster.node(name) {
        Some(n) => Ok(engine_config(n)),
        None => Err(format!(
            "{}: no node named {name:?} (nodes: {})",
            cluster.source.display(),
            cluster
                .nodes
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
