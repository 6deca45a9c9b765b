//! Pods on different nodes talk over sluice's flannel-style UDP overlay (the inner IPv4 packet
//! is the payload of UDP to port 8285): 2 nodes on one veth underlay and 3 nodes on a bridge.
//! The scenarios and tshark's verdict on every tunnel frame (decoded as IP inside UDP 8285,
//! outer and inner checksums, size) are in `overlay_common`.

mod overlay_common;

use bench::testbed::OverlayDef;

#[test]
fn udp_encap_two_nodes_veth_underlay() {
    overlay_common::two_nodes(OverlayDef::udp(), 7300);
}

#[test]
fn udp_encap_three_nodes_bridge_every_pair() {
    overlay_common::three_nodes(OverlayDef::udp(), 7400);
}
