//! From the desired state of the cluster to the tables of one node's engine.
//!
//! Each pod of the node gets a port (in the order the file lists them) and a /32 route to it.
//! With `cluster.overlay`, the node's underlay becomes [`OverlayConfig`]: its uplink port,
//! its underlay address and VTEP MAC, and every other node of the file (sluice or kernel, in
//! file order) as a peer; the engine routes each peer's pod CIDR through the tunnel itself.
//! Later issues add services and DNS here; the engine never reads the cluster file itself.
//! Promises: a node with `dataplane: kernel` is never compiled (an error says why).

use dataplane::config::{
    EngineConfig, OverlayConfig, Peer, PortConfig, PortKind as EnginePortKind,
};
use dataplane::port::afpacket::RingKind as EngineRing;
use dataplane::route::Route;

use crate::config::{Cluster, Dataplane, Node, PortKind, RingKind};

/// Outer IPv4 TTL of tunnel packets (Linux's default).
pub const OVERLAY_TTL: u8 = 64;

fn engine_ring(ring: RingKind) -> EngineRing {
    match ring {
        RingKind::V2 => EngineRing::V2,
        RingKind::V3 => EngineRing::V3,
    }
}

/// The engine configuration of `node`, one of `cluster`'s nodes; an error for a kernel node
/// (no engine runs there).
pub fn engine_config(cluster: &Cluster, node: &Node) -> Result<EngineConfig, String> {
    if node.dataplane == Dataplane::Kernel {
        let sluice: Vec<&str> = cluster
            .nodes
            .iter()
            .filter(|n| n.dataplane == Dataplane::Sluice)
            .map(|n| n.name.as_str())
            .collect();
        return Err(format!(
            "{}: node {} has dataplane: kernel: the Linux kernel routes its pods (e.g. flannel's \
             VXLAN device) and sluice is only its overlay peer (expected a node with dataplane: \
             sluice{})",
            cluster.source.display(),
            node.name,
            if sluice.is_empty() {
                String::new()
            } else {
                format!(": {}", sluice.join(", "))
            }
        ));
    }
    let ports = node
        .pods
        .iter()
        .map(|pod| PortConfig {
            name: pod.port.interface.clone(),
            kind: match pod.port.kind {
                PortKind::AfPacket => EnginePortKind::AfPacket {
                    ring: engine_ring(pod.port.ring),
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
    Ok(EngineConfig {
        node: node.name.clone(),
        gateway: node.gateway,
        admin_socket: node.admin_socket.clone(),
        ports,
        routes,
        overlay: overlay_config(cluster, node)?,
    })
}

/// `node`'s side of the overlay, `None` without `cluster.overlay`.
fn overlay_config(cluster: &Cluster, node: &Node) -> Result<Option<OverlayConfig>, String> {
    let Some(overlay) = &cluster.overlay else {
        return Ok(None);
    };
    // A validated cluster gives every node an underlay, and a sluice node its interface.
    let missing = |what: &str| {
        format!(
            "{}: node {} has no {what} although the cluster has an overlay",
            cluster.source.display(),
            node.name
        )
    };
    let underlay = node.underlay.as_ref().ok_or_else(|| missing("underlay"))?;
    let interface = underlay
        .interface
        .clone()
        .ok_or_else(|| missing("underlay.interface"))?;
    let mut peers = Vec::with_capacity(cluster.nodes.len().saturating_sub(1));
    for other in cluster.nodes.iter().filter(|n| n.name != node.name) {
        let u = other.underlay.as_ref().ok_or_else(|| {
            format!(
                "{}: node {} has no underlay although the cluster has an overlay",
                cluster.source.display(),
                other.name
            )
        })?;
        peers.push(Peer {
            node: other.name.clone(),
            underlay_ip: u.address,
            pod_cidr: other.pod_cidr.addr,
            pod_prefix_len: other.pod_cidr.prefix_len,
            vtep_mac: u.vtep_mac,
        });
    }
    Ok(Some(OverlayConfig {
        mode: overlay.mode,
        uplink: PortConfig {
            name: interface,
            kind: EnginePortKind::AfPacket {
                ring: engine_ring(underlay.ring),
            },
            mac: underlay.mac,
        },
        local_ip: underlay.address,
        prefix_len: underlay.subnet.prefix_len,
        underlay_gateway: underlay.gateway,
        vtep_mac: underlay.vtep_mac,
        mtu: overlay.mtu,
        ttl: OVERLAY_TTL,
        peers,
    }))
}

/// The engine configuration of the node called `name`, or an error listing the nodes there
/// are, or saying why the node runs no engine.
pub fn for_node(cluster: &Cluster, name: &str) -> Result<EngineConfig, String> {
    match cluster.node(name) {
        Some(n) => engine_config(cluster, n),
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
