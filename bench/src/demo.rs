//! `sluice demo`: two nodes on a VXLAN overlay, pods in network namespaces, traffic through
//! the engines (on one node and across nodes), and an explanation of what happened. Everything
//! it creates is removed at the end (also when it fails). Later issues grow it with services,
//! DNS and ingress.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use dataplane::counters::render;

use crate::testbed::{Cluster, NodeDef, OverlayDef, PodDef};
use crate::traffic;

fn step(n: u32, title: &str) {
    println!("\n{n}. {title}");
}

/// Run the demo with the `sluice` binary that is running now.
pub fn run() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the demo creates network namespaces: run it as root (sudo)".into());
    }
    let bin: PathBuf =
        std::env::current_exe().map_err(|e| format!("locating the sluice binary: {e}"))?;
    println!("sluice demo: two nodes on a VXLAN overlay, five pods, all in network namespaces");
    println!("made for this demo. The nodes' kernels have ip_forward=0 and no address on the");
    println!("pods' links or the underlay link: whatever crosses between pods below was moved");
    println!("by the sluice engines, not by a kernel.");

    step(1, "Building the cluster");
    let overlay = OverlayDef::vxlan();
    let cluster = Cluster::build_overlay(
        &bin,
        overlay.clone(),
        vec![
            NodeDef::new(
                "node-1",
                "10.244.1.0/24",
                vec![
                    PodDef::afpacket("web-1", Ipv4Addr::new(10, 244, 1, 10)),
                    PodDef::afpacket("web-2", Ipv4Addr::new(10, 244, 1, 11)),
                    PodDef::tap("db-1", Ipv4Addr::new(10, 244, 1, 20)),
                ],
            ),
            NodeDef::new(
                "node-2",
                "10.244.2.0/24",
                vec![
                    PodDef::afpacket("api-1", Ipv4Addr::new(10, 244, 2, 10)),
                    PodDef::tap("api-2", Ipv4Addr::new(10, 244, 2, 11)),
                ],
            ),
        ],
    )
    .map_err(|e| format!("building the demo cluster: {e}"))?;
    let node = cluster.node("node-1");
    let node2 = cluster.node("node-2");
    for n in [node, node2] {
        println!(
            "   {}: pods {}, namespace {}, underlay {} on ul0 (a veth to the other node), engine `sluice run --config {} --node {}`",
            n.name(),
            n.pod_cidr(),
            n.netns().name(),
            n.underlay_ip().map_or_else(|| "?".into(), |ip| ip.to_string()),
            cluster.config_path().display(),
            n.name()
        );
    }
    println!(
        "   overlay: VXLAN VNI 1, UDP port 8472 (as flannel); underlay MTU {}, so pods use MTU {} (50 bytes of outer headers)",
        overlay.mtu,
        overlay.pod_mtu()
    );
    println!(
        "   pods (each its own namespace; address /32, default route via its node's gateway):"
    );
    for p in cluster.pods() {
        println!("     {}", traffic::describe_pod(p));
    }
    let (web1, web2, db1) = (
        cluster.pod("web-1"),
        cluster.pod("web-2"),
        cluster.pod("db-1"),
    );

    step(
        2,
        "web-1 pings its gateway (the engine answers ARP and ICMP echo for it)",
    );
    let p = traffic::ping(web1.netns(), node.gateway(), 3, &[]).map_err(|e| e.to_string())?;
    println!(
        "   {}/{} replies, average {:.3} ms",
        p.received,
        p.transmitted,
        p.avg_ms.unwrap_or(f64::NAN)
    );

    step(
        3,
        "web-1 pings db-1 (veth -> engine -> TAP; TTL goes down by one at the engine)",
    );
    let p = traffic::ping(web1.netns(), db1.ip(), 3, &[]).map_err(|e| e.to_string())?;
    let ttl = p
        .output
        .lines()
        .find_map(|l| l.split("ttl=").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .unwrap_or("?");
    println!(
        "   {}/{} replies, average {:.3} ms, reply ttl={ttl} (db-1 sent 64)",
        p.received,
        p.transmitted,
        p.avg_ms.unwrap_or(f64::NAN)
    );

    step(
        4,
        "TCP: web-1 sends 20 MB to db-1:8080; db-1 checks every byte",
    );
    let t = traffic::tcp_transfer(
        web1.netns(),
        db1.netns(),
        db1.ip(),
        8080,
        20 << 20,
        Duration::from_secs(30),
    )
    .map_err(|e| format!("TCP web-1 -> db-1: {e}"))?;
    println!(
        "   {} bytes verified in {:.2} s ({:.0} Mbit/s)",
        t.bytes,
        t.elapsed.as_secs_f64(),
        t.mbit_per_s()
    );
    let t = traffic::tcp_transfer(
        web2.netns(),
        web1.netns(),
        web1.ip(),
        8081,
        20 << 20,
        Duration::from_secs(30),
    )
    .map_err(|e| format!("TCP web-2 -> web-1: {e}"))?;
    println!(
        "   and web-2 -> web-1 (veth to veth): {} bytes verified, {:.0} Mbit/s",
        t.bytes,
        t.mbit_per_s()
    );

    step(
        5,
        "UDP: web-2 sends 200 datagrams to db-1:5353, db-1 echoes each",
    );
    let n = traffic::udp_echo(
        web2.netns(),
        db1.netns(),
        db1.ip(),
        5353,
        200,
        512,
        Duration::from_secs(1),
    )
    .map_err(|e| e.to_string())?;
    println!("   {n}/200 echoes came back intact");

    let api1 = cluster.pod("api-1");
    let api2 = cluster.pod("api-2");
    step(
        6,
        "Across nodes: web-1 (node-1) pings api-1 (node-2) through the VXLAN overlay",
    );
    let p = traffic::ping(web1.netns(), api1.ip(), 3, &[]).map_err(|e| e.to_string())?;
    println!(
        "   {}/{} replies, average {:.3} ms: node-1 wraps each packet in UDP/VXLAN to {}, node-2 unwraps it",
        p.received,
        p.transmitted,
        p.avg_ms.unwrap_or(f64::NAN),
        node2.underlay_ip().map_or_else(|| "?".into(), |ip| ip.to_string())
    );
    let t = traffic::tcp_transfer(
        web1.netns(),
        api1.netns(),
        api1.ip(),
        8082,
        20 << 20,
        Duration::from_secs(30),
    )
    .map_err(|e| format!("TCP web-1 -> api-1: {e}"))?;
    println!(
        "   TCP web-1 -> api-1: {} bytes verified, {:.0} Mbit/s",
        t.bytes,
        t.mbit_per_s()
    );
    let t = traffic::tcp_transfer(
        api2.netns(),
        db1.netns(),
        db1.ip(),
        8083,
        20 << 20,
        Duration::from_secs(30),
    )
    .map_err(|e| format!("TCP api-2 -> db-1: {e}"))?;
    println!(
        "   TCP api-2 (TAP, node-2) -> db-1 (TAP, node-1): {} bytes verified, {:.0} Mbit/s",
        t.bytes,
        t.mbit_per_s()
    );
    let c2 = node2.counters().map_err(|e| e.to_string())?;
    let ev = |c: &serde_json::Value, k: &str| c["events"][k].as_u64().unwrap_or(0);
    println!(
        "   node-2 encapsulated {} packets and decapsulated {} (every checksum computed in software)",
        ev(&c2, "overlay_encapsulated"),
        ev(&c2, "overlay_decapsulated")
    );

    step(
        7,
        "A pod with a too-large MTU: web-2 sets 1500 and sends 1472-byte pings with DF to api-1",
    );
    web2.netns()
        .ip(&["link", "set", "eth0", "mtu", "1500"])
        .map_err(|e| e.to_string())?;
    let p = traffic::ping(web2.netns(), api1.ip(), 1, &["-M", "do", "-s", "1472"])
        .map_err(|e| e.to_string())?;
    let said = p
        .output
        .lines()
        .find(|l| l.contains("mtu") || l.contains("Frag"))
        .unwrap_or("(no ICMP error seen)");
    println!("   ping says: {}", said.trim());
    println!("   the engine answered with ICMP fragmentation-needed carrying the pod MTU, as a router on a smaller link does");

    step(
        8,
        "web-1 pings 10.99.0.1, which no route covers: the engine answers as a router does",
    );
    let p = traffic::ping(web1.netns(), Ipv4Addr::new(10, 99, 0, 1), 1, &[])
        .map_err(|e| e.to_string())?;
    let said = p
        .output
        .lines()
        .find(|l| l.contains("Unreachable"))
        .unwrap_or("(no ICMP error seen)");
    println!("   ping says: {}", said.trim());

    step(9, "node-1's counters (`sluice counters --admin <socket>`)");
    let c = node.counters().map_err(|e| e.to_string())?;
    for line in render(&c).lines() {
        println!("   {line}");
    }
    let fwd = node
        .netns()
        .read_sysctl("net.ipv4.ip_forward")
        .unwrap_or_else(|_| "?".into());
    println!("\n   node-1 kernel: net.ipv4.ip_forward = {fwd}");

    step(
        10,
        "Cleaning up: stopping the engines, deleting the namespaces",
    );
    drop(cluster);
    println!("   done. Next: `sluice check --config configs/two-nodes-vxlan.yaml`, and README.md.");
    Ok(())
}
