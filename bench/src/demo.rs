//! `sluice demo`: one node with three pods in network namespaces, traffic through the engine,
//! and an explanation of what happened. Everything it creates is removed at the end (also when
//! it fails). Later issues grow it to several nodes, services, DNS and ingress.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use dataplane::counters::render;

use crate::testbed::{Cluster, NodeDef, PodDef};
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
    println!("sluice demo: one node, three pods, all in network namespaces made for this demo.");
    println!("The node's kernel has ip_forward=0 and no address on the pods' links: whatever");
    println!("crosses between pods below was moved by the sluice engine, not by the kernel.");

    step(1, "Building the cluster");
    let cluster = Cluster::build(
        &bin,
        vec![NodeDef::new(
            "node-1",
            "10.244.1.0/24",
            vec![
                PodDef::afpacket("web-1", Ipv4Addr::new(10, 244, 1, 10)),
                PodDef::afpacket("web-2", Ipv4Addr::new(10, 244, 1, 11)),
                PodDef::tap("db-1", Ipv4Addr::new(10, 244, 1, 20)),
            ],
        )],
    )
    .map_err(|e| format!("building the demo cluster: {e}"))?;
    let node = cluster.node("node-1");
    println!(
        "   node-1: namespace {}, engine `sluice run --config {} --node node-1`",
        node.netns().name(),
        cluster.config_path().display()
    );
    println!(
        "   pods (each its own namespace; address /32, default route via the gateway {}):",
        node.gateway()
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

    step(
        6,
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

    step(
        7,
        "The engine's counters (`sluice counters --admin <socket>`)",
    );
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
        8,
        "Cleaning up: stopping the engine, deleting the namespaces",
    );
    drop(cluster);
    println!("   done. Next: `sluice check --config configs/single-node.yaml`, and README.md.");
    Ok(())
}
