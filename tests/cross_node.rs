//! Pods on different nodes talk over sluice's VXLAN overlay (VNI 1, port 8472): 2 nodes on one
//! veth underlay and 3 nodes on a bridge. The scenarios and tshark's verdict on every tunnel
//! frame (VXLAN, VNI, outer and inner checksums, size) are in `overlay_common`.

mod overlay_common;

use bench::testbed::OverlayDef;

#[test]
fn cross_node_vxlan_two_nodes_veth_underlay() {
    overlay_common::two_nodes(OverlayDef::vxlan(), 7000);
}

#[test]
fn cross_node_vxlan_three_nodes_bridge_every_pair() {
    overlay_common::three_nodes(OverlayDef::vxlan(), 7100);
}
