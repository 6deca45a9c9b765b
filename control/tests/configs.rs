//! Every example under configs/ must load; the single-node example is checked field by field.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use control::config::{self, PortKind, RingKind};

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

#[test]
fn every_example_config_loads() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(configs_dir())
        .expect("configs/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "expected the example files, found {files:?}"
    );
    for file in &files {
        match config::load(file) {
            Ok(cluster) => {
                assert_eq!(&cluster.source, file);
                assert!(!cluster.nodes.is_empty());
                assert!(cluster
                    .describe()
                    .starts_with(&format!("cluster {}:", cluster.name)));
            }
            Err(e) => panic!("{} does not load: {e}", file.display()),
        }
    }
}

#[test]
fn single_node_example_has_the_documented_contents() {
    let c = config::load(&configs_dir().join("single-node.yaml")).unwrap();
    assert_eq!(c.name, "demo");
    assert_eq!(c.cluster_cidr.to_string(), "10.244.0.0/16");
    assert_eq!(
        c.service_cidr.map(|n| n.to_string()).as_deref(),
        Some("10.96.0.0/12")
    );
    assert_eq!(c.nodes.len(), 1);
    let n = c.node("node-1").expect("node-1");
    assert!(c.node("node-2").is_none());
    assert_eq!(n.pod_cidr.to_string(), "10.244.1.0/24");
    assert_eq!(n.gateway, Ipv4Addr::new(10, 244, 1, 1));
    assert_eq!(n.admin_socket, Path::new("/run/sluice/node-1.sock"));
    let names: Vec<&str> = n.pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["web-1", "web-2", "db-1"]);

    let web1 = &n.pods[0];
    assert_eq!(web1.ip, Ipv4Addr::new(10, 244, 1, 10));
    assert_eq!(web1.port.kind, PortKind::AfPacket);
    assert_eq!(web1.port.interface, "veth-web1");
    assert_eq!(web1.port.mac, Some([2, 0, 0, 0, 1, 1]));
    assert_eq!(web1.port.ring, RingKind::V2);
    assert_eq!(web1.port.netns, None);
    assert_eq!(n.pods[1].port.ring, RingKind::V3);
    assert_eq!(n.pods[1].port.mac, None);
    let db = &n.pods[2];
    assert_eq!(db.port.kind, PortKind::Tap);
    assert_eq!(db.port.netns.as_deref(), Some("pod-db1"));
    assert_eq!(db.port.ring, RingKind::V2);

    assert_eq!(
        c.describe(),
        "cluster demo: 1 node, 3 pods; node-1 10.244.1.0/24 gw 10.244.1.1: \
         web-1 10.244.1.10 (afpacket veth-web1 mac 02:00:00:00:01:01), \
         web-2 10.244.1.11 (afpacket veth-web2 ring v3), \
         db-1 10.244.1.20 (tap tap-db1 in netns pod-db1)"
    );
}

#[test]
fn two_nodes_example_applies_defaults_per_node() {
    let c = config::load(&configs_dir().join("two-nodes.yaml")).unwrap();
    let a = c.node("node-a").unwrap();
    let b = c.node("node-b").unwrap();
    assert_eq!(a.gateway, Ipv4Addr::new(10, 244, 1, 1), "default gateway");
    assert_eq!(
        a.admin_socket,
        Path::new("/run/sluice/node-a.sock"),
        "default socket"
    );
    assert_eq!(b.gateway, Ipv4Addr::new(10, 244, 2, 254));
    assert_eq!(b.admin_socket, Path::new("/run/sluice/b.sock"));
    assert_eq!(b.pods[0].ip, Ipv4Addr::new(10, 244, 2, 1));
    assert_eq!(a.pods[1].port.interface, b.pods[1].port.interface);
    assert!(c
        .describe()
        .starts_with("cluster two-nodes: 2 nodes, 4 pods; node-a 10.244.1.0/24"));
}

#[test]
fn a_node_without_pods_is_described() {
    let text = "cluster: {name: x, cluster_cidr: 10.0.0.0/8}\nnodes:\n  - {name: n, pod_cidr: 10.0.0.0/30}\n";
    let c = config::parse_str(text, Path::new("inline.yaml")).unwrap();
    assert_eq!(c.source, Path::new("inline.yaml"));
    assert_eq!(
        c.describe(),
        "cluster x: 1 node, 0 pods; n 10.0.0.0/30 gw 10.0.0.1: no pods"
    );
}

#[test]
fn unreadable_file_names_the_file() {
    let missing = Path::new("/nonexistent/sluice/cluster.yaml");
    let err = config::load(missing).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("/nonexistent/sluice/cluster.yaml: cannot read the cluster file:"),
        "{text}"
    );
    assert_eq!(err.line(), None);
    assert_eq!(err.field(), None);
}

#[test]
fn invalid_utf8_is_located() {
    let path =
        std::env::temp_dir().join(format!("sluice-control-utf8-{}.yaml", std::process::id()));
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _guard = Remove(path.clone());
    std::fs::write(&path, b"cluster:\n  name: d\xffmo\n").unwrap();
    let err = config::load(&path).unwrap_err();
    assert_eq!(err.line(), Some(2));
    assert_eq!(err.column(), Some(10));
    assert!(err.to_string().contains("invalid UTF-8"), "{err}");
}
