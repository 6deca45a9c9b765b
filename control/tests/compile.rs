//! The compiler: what each node's engine is told, from the example files and inline ones.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use control::compile;
use control::config::{self, default_vtep_mac, Cluster};
use dataplane::config::{EngineConfig, OverlayMode, PortConfig, PortKind};
use dataplane::port::afpacket::RingKind;

fn example(name: &str) -> Cluster {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(name);
    config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn inline(text: &str) -> Cluster {
    config::parse_str(text, Path::new("inline.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

fn compiled(c: &Cluster, node: &str) -> EngineConfig {
    compile::for_node(c, node).unwrap_or_else(|e| panic!("{e}"))
}

const TWO_NODES: &str = "\
cluster:
  name: t
  cluster_cidr: 10.244.0.0/16
  overlay: {mode: MODE}
nodes:
  - name: a
    pod_cidr: 10.244.1.0/24
    underlay: {interface: ul0, address: 192.168.50.1/24}
  - name: b
    pod_cidr: 10.244.2.0/24
    underlay: {interface: ul0, address: 192.168.50.2/24}
";

#[test]
fn without_an_overlay_there_is_none() {
    let c = example("single-node.yaml");
    let cfg = compiled(&c, "node-1");
    assert_eq!(cfg.overlay, None);
    assert_eq!(cfg.ports.len(), 3);
    assert_eq!(cfg.routes.len(), 3);
}

#[test]
fn vxlan_defaults_are_flannels() {
    let c = inline(&TWO_NODES.replace("MODE", "vxlan"));
    let ov = compiled(&c, "a").overlay.expect("an overlay");
    assert_eq!(
        ov.mode,
        OverlayMode::Vxlan {
            vni: 1,
            port: 8472,
            udp_checksum: true
        }
    );
    assert_eq!(ov.mtu, 1500);
    assert_eq!(ov.pod_mtu(), 1450);
    assert_eq!(ov.ttl, 64);
    assert_eq!(ov.underlay_gateway, None);
    assert_eq!(ov.vtep_mac, dataplane::port::derived_mac("vtep/a"));
    assert_eq!(c.overlay.unwrap().pod_mtu(), 1450);
}

#[test]
fn udp_defaults_to_port_8285() {
    let c = inline(&TWO_NODES.replace("MODE", "udp"));
    let ov = compiled(&c, "b").overlay.expect("an overlay");
    assert_eq!(ov.mode, OverlayMode::Udp { port: 8285 });
    assert_eq!(ov.pod_mtu(), 1472);
    assert_eq!(ov.peers.len(), 1);
    assert_eq!(ov.peers[0].node, "a");
    assert!(c
        .describe()
        .contains("; overlay udp port 8285, underlay MTU 1500: pods need MTU 1472; "));
}

#[test]
fn explicit_overlay_settings_are_kept() {
    let text = TWO_NODES.replace(
        "{mode: MODE}",
        "{mode: vxlan, vni: 16777215, port: 4789, udp_checksum: false, mtu: 9000}",
    );
    let c = inline(&text);
    let ov = compiled(&c, "a").overlay.unwrap();
    assert_eq!(
        ov.mode,
        OverlayMode::Vxlan {
            vni: 16_777_215,
            port: 4789,
            udp_checksum: false
        }
    );
    assert_eq!(ov.mtu, 9000);
    assert_eq!(ov.pod_mtu(), 8950);
    assert!(c.describe().contains(
        "overlay vxlan vni 16777215 port 4789 outer UDP checksum 0, underlay MTU 9000: pods need MTU 8950"
    ));
}

#[test]
fn two_nodes_vxlan_example_compiles_to_peers_of_each_other() {
    let c = example("two-nodes-vxlan.yaml");
    let one = compiled(&c, "node-1");
    let two = compiled(&c, "node-2");
    let ov1 = one.overlay.as_ref().unwrap();
    let ov2 = two.overlay.as_ref().unwrap();

    // The uplink is not one of the pod ports: the engine opens it after them.
    assert_eq!(one.ports.len(), 1);
    assert_eq!(one.routes.len(), 1);
    assert_eq!(
        ov1.uplink,
        PortConfig {
            name: "ul0".into(),
            kind: PortKind::AfPacket { ring: RingKind::V2 },
            mac: None
        }
    );
    assert_eq!(ov1.local_ip, Ipv4Addr::new(192, 168, 50, 1));
    assert_eq!(ov1.prefix_len, 24);
    assert_eq!(ov2.local_ip, Ipv4Addr::new(192, 168, 50, 2));

    // node-1's VTEP MAC is derived from its name, and node-2 sees the same one.
    let derived = dataplane::port::derived_mac("vtep/node-1");
    assert_eq!(default_vtep_mac("node-1"), derived);
    assert_eq!(ov1.vtep_mac, derived);
    assert_eq!(ov2.vtep_mac, [0x02, 0, 0, 0, 0xaa, 0x02]);

    assert_eq!(ov1.peers.len(), 1);
    let p = &ov1.peers[0];
    assert_eq!(p.node, "node-2");
    assert_eq!(p.underlay_ip, ov2.local_ip);
    assert_eq!(
        (p.pod_cidr, p.pod_prefix_len),
        (Ipv4Addr::new(10, 244, 2, 0), 24)
    );
    assert_eq!(p.vtep_mac, ov2.vtep_mac);

    let p = &ov2.peers[0];
    assert_eq!(p.node, "node-1");
    assert_eq!(p.underlay_ip, ov1.local_ip);
    assert_eq!(p.vtep_mac, ov1.vtep_mac);
    assert_eq!(
        (p.pod_cidr, p.pod_prefix_len),
        (Ipv4Addr::new(10, 244, 1, 0), 24)
    );

    assert_eq!(
        c.describe(),
        "cluster two-nodes-vxlan: 2 nodes, 2 pods; overlay vxlan vni 1 port 8472, underlay MTU \
         1500: pods need MTU 1450; node-1 10.244.1.0/24 gw 10.244.1.1, underlay 192.168.50.1/24 \
         on ul0, vtep 02:03:b9:55:54:26: web-1 10.244.1.10 (afpacket veth-web1); node-2 \
         10.244.2.0/24 gw 10.244.2.1, underlay 192.168.50.2/24 on ul0, vtep 02:00:00:00:aa:02: \
         web-2 10.244.2.10 (afpacket veth-web2)"
    );
}

#[test]
fn three_nodes_udp_example_lists_peers_in_file_order() {
    let c = example("three-nodes-udp.yaml");
    let two = compiled(&c, "node-2");
    let ov = two.overlay.as_ref().unwrap();
    assert_eq!(ov.mode, OverlayMode::Udp { port: 8285 });
    let names: Vec<&str> = ov.peers.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(names, ["node-1", "node-3"]);
    assert_eq!(
        ov.peers[1].underlay_ip,
        Ipv4Addr::new(192, 168, 60, 3),
        "node-3 is on another subnet"
    );
    assert_eq!(ov.underlay_gateway, Some(Ipv4Addr::new(192, 168, 50, 254)));
    assert_eq!(ov.uplink.mac, Some([0x02, 0, 0, 0, 0x50, 0x02]));
    // Every peer carries a VTEP MAC even in UDP mode (unused there): the derived one.
    assert_eq!(ov.peers[1].vtep_mac, default_vtep_mac("node-3"));

    let three = compiled(&c, "node-3");
    let ov3 = three.overlay.unwrap();
    assert_eq!(ov3.uplink.kind, PortKind::AfPacket { ring: RingKind::V3 });
    assert_eq!(ov3.underlay_gateway, Some(Ipv4Addr::new(192, 168, 60, 254)));
    let names: Vec<&str> = ov3.peers.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(names, ["node-1", "node-2"]);
    assert!(c.describe().contains(
        "; overlay udp port 8285, underlay MTU 1500: pods need MTU 1472; node-1 10.244.1.0/24 gw \
         10.244.1.1, underlay 192.168.50.1/24 on ul0 via 192.168.50.254: client"
    ));
}

#[test]
fn a_kernel_node_is_a_peer_but_is_not_compiled() {
    let c = example("mixed-kernel-vxlan.yaml");
    let one = compiled(&c, "node-1");
    let ov = one.overlay.unwrap();
    assert_eq!(ov.vtep_mac, [0x02, 0, 0, 0, 0xaa, 0x01]);
    assert_eq!(ov.peers.len(), 1);
    assert_eq!(ov.peers[0].node, "node-2");
    assert_eq!(ov.peers[0].vtep_mac, [0x02, 0, 0, 0, 0xaa, 0x02]);
    assert_eq!(ov.peers[0].underlay_ip, Ipv4Addr::new(192, 168, 50, 2));

    let err = compile::for_node(&c, "node-2").unwrap_err();
    assert!(
        err.contains("mixed-kernel-vxlan.yaml: node node-2 has dataplane: kernel"),
        "{err}"
    );
    assert!(
        err.ends_with("(expected a node with dataplane: sluice: node-1)"),
        "{err}"
    );
    assert!(c
        .describe()
        .contains("; node-2 10.244.2.0/24 gw 10.244.2.1, dataplane kernel, underlay 192.168.50.2/24 on eth0, vtep 02:00:00:00:aa:02: web-2"));
}

#[test]
fn an_unknown_node_is_still_an_error() {
    let c = example("two-nodes-vxlan.yaml");
    let err = compile::for_node(&c, "node-9").unwrap_err();
    assert!(
        err.ends_with("no node named \"node-9\" (nodes: node-1, node-2)"),
        "{err}"
    );
}
