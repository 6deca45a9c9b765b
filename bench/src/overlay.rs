//! Benchmark scenario `overlay`: pod to pod across two nodes, sluice's VXLAN (and flannel-UDP)
//! next to the kernel's own VXLAN between the same kind of namespaces, in the same run.
//!
//! Owns the scenario: for each device, a two-node cluster (one pod per node, a veth underlay
//! between the nodes, see [`crate::testbed`]), then, from pod a on node-1 to pod b on node-2:
//! 1. **TCP**: `iperf3 -c` for the window, Mbit/s received and retransmits (pods use the pod
//!    MTU, so TCP segments fit the tunnel).
//! 2. **Latency**: ping RTT, and one-way latency at 10 kpps from sluice's generator and
//!    receiver (p50, p99, p99.9, max).
//! 3. **UDP at fixed rates**: sluice's generator at each rate of [`RATES`], loss counted at pod
//!    b's interface; then as fast as it goes and the highest rate with loss under 0.1%.
//!
//! Devices: `sluice-vxlan` and `sluice-udp` (both nodes run the engine; kernels forward
//! nothing), `kernel-vxlan` (both nodes set up as flannel's vxlan backend does: a `flannel.1`
//! VXLAN device, its routes, neighbour and FDB entries; the kernel forwards). The generator is
//! pinned to CPU 0, both engines to CPU 1.
//!
//! Everything runs in namespaces of its own and is removed afterwards.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{Ctx, Figure, Scenario, Section};
use crate::pktgen::{FlowPattern, Proto, RecvReport};
use crate::plot::{LinePlot, Series};
use crate::rate::{self, PathEnds, Search, Trial, TrialSpec, LOSS_LIMIT};
use crate::testbed::{Cluster, NodeDef, OverlayDef, PodDef};

/// Fixed UDP rates (frames/s) of the loss table.
pub const RATES: [u64; 4] = [25_000, 50_000, 100_000, 200_000];
/// UDP port of the generated frames (discard); pod b drops them at its netdev hook.
const DST_PORT: u16 = 9;
const IPERF_PORT: u16 = 5201;
const POD_A_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const POD_B_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 10);

/// A device under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    SluiceVxlan,
    /// The same with TPACKET_V3 rings on the uplinks (`underlay.ring: v3`).
    SluiceVxlanV3,
    SluiceUdp,
    KernelVxlan,
}

impl Device {
    pub const ALL: [Device; 4] = [
        Device::SluiceVxlan,
        Device::SluiceVxlanV3,
        Device::SluiceUdp,
        Device::KernelVxlan,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Device::SluiceVxlan => "sluice-vxlan",
            Device::SluiceVxlanV3 => "sluice-vxlan-v3",
            Device::SluiceUdp => "sluice-udp",
            Device::KernelVxlan => "kernel-vxlan",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Device::SluiceVxlan => "sluice engines on both nodes, VXLAN (VNI 1, port 8472, outer UDP checksums)",
            Device::SluiceVxlanV3 => "the same, with TPACKET_V3 rings on the underlay uplinks (underlay.ring: v3)",
            Device::SluiceUdp => "sluice engines on both nodes, flannel-style UDP encapsulation (port 8285)",
            Device::KernelVxlan => "both nodes' kernels, flannel's vxlan backend (flannel.1, FDB, neighbour, onlink routes)",
        }
    }

    fn overlay(self) -> OverlayDef {
        match self {
            Device::SluiceUdp => OverlayDef::udp(),
            Device::SluiceVxlanV3 => OverlayDef {
                uplink_ring: crate::testbed::RingDef::V3,
                ..OverlayDef::vxlan()
            },
            Device::SluiceVxlan | Device::KernelVxlan => OverlayDef::vxlan(),
        }
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub seconds: u64,
    /// Frame sizes, FCS included (at most the pod MTU + 18).
    pub sizes: Vec<usize>,
    pub quick: bool,
}

/// Everything measured for one device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceResult {
    pub device: Device,
    pub pod_mtu: u16,
    /// iperf3: received Mbit/s and sender retransmits.
    pub tcp_mbit: f64,
    pub tcp_retransmits: u64,
    pub ping_avg_ms: Option<f64>,
    pub latency: RecvReport,
    /// (frame size, trial) at each of [`RATES`] (smallest frame size).
    pub fixed: Vec<Trial>,
    /// Per frame size: the no-drop search (its first trial is full speed).
    pub searches: Vec<(usize, Search)>,
    /// Per engine (node, drop reason, count) after all the traffic: where sluice lost frames.
    pub engine_drops: Vec<(String, String, u64)>,
    /// Per engine (node, CPU seconds used over the whole measurement).
    pub engine_cpu_s: Vec<(String, f64)>,
}

/// The scenario's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub options: Options,
    pub devices: Vec<DeviceResult>,
    pub notes: Vec<String>,
}

struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `iperf3 -c` from `a` to `b_ip` for `seconds`: (Mbit/s received, retransmits).
fn iperf(cluster: &Cluster, seconds: u64) -> Result<(f64, u64), String> {
    let b = cluster.pod("b");
    let a = cluster.pod("a");
    let _server = Server(Some(
        Command::new("ip")
            .args(["netns", "exec", b.netns().name(), "iperf3", "-s", "-1"])
            .args(["-p", &IPERF_PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("iperf3 -s (Debian package iperf3): {e}"))?,
    ));
    std::thread::sleep(Duration::from_millis(300));
    let out = a
        .netns()
        .exec(&[
            "iperf3",
            "-c",
            &POD_B_IP.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &seconds.to_string(),
            "-J",
        ])
        .map_err(|e| format!("iperf3 -c: {e}"))?;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "iperf3 -c: output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        return Err(format!("iperf3 -c: {err}"));
    }
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| format!("iperf3 -c: no end.sum_received in {v}"))?;
    let retr = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    Ok((bps / 1e6, retr))
}

fn measure(device: Device, bin: &std::path::Path, opts: &Options) -> Result<DeviceResult, String> {
    let overlay = device.overlay();
    let pod_mtu = overlay.pod_mtu();
    let (mut n1, mut n2) = (
        NodeDef::new(
            "node-1",
            "10.244.1.0/24",
            vec![PodDef::afpacket("a", POD_A_IP)],
        ),
        NodeDef::new(
            "node-2",
            "10.244.2.0/24",
            vec![PodDef::afpacket("b", POD_B_IP)],
        ),
    );
    if device == Device::KernelVxlan {
        n1 = n1.kernel();
        n2 = n2.kernel();
    }
    let cluster = Cluster::build_overlay(bin, overlay, vec![n1, n2])
        .map_err(|e| format!("building the cluster: {e}"))?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let engine_cpu = if cpus >= 2 { 1 } else { 0 };
    for n in cluster.nodes() {
        if let Some(pid) = n.engine_pid() {
            crate::forwarding::pin_engine(pid, engine_cpu)?;
        }
    }
    let (a, b) = (cluster.pod("a"), cluster.pod("b"));
    let ping = crate::traffic::ping(
        a.netns(),
        POD_B_IP,
        if opts.quick { 20 } else { 100 },
        &["-i", "0.01"],
    )
    .map_err(|e| format!("ping: {e}"))?;
    if ping.received == 0 {
        return Err("pod a cannot reach pod b across the overlay (0 pings answered)".into());
    }
    let (tcp_mbit, tcp_retransmits) = iperf(&cluster, opts.seconds)?;
    b.netns()
        .exec_ok(&[
            "nft",
            &format!("add table netdev sink {{ chain in {{ type filter hook ingress device eth0 priority 0 ; udp dport {DST_PORT} drop ; }} ; }}"),
        ])
        .map_err(|e| format!("sink rule in pod b: {e}"))?;
    let host = a
        .host_ifname()
        .ok_or_else(|| "pod a has no host-side veth".to_string())?;
    let gw_mac = cluster
        .node("node-1")
        .netns()
        .mac(host)
        .map_err(|e| format!("MAC of {host}: {e}"))?;
    let path = PathEnds {
        tx: a.netns(),
        tx_if: "eth0".into(),
        src_mac: a.mac().map_err(|e| format!("MAC of pod a: {e}"))?,
        dst_mac: gw_mac,
        src_ip: POD_A_IP,
        dst_ip: POD_B_IP,
        dst_port: DST_PORT,
        rx: b.netns(),
        rx_if: "eth0".into(),
    };
    let trial_ms = if opts.quick { 500 } else { 2_000 };
    let spec = |size: usize, ms: u64| TrialSpec {
        frame_size: size - 4,
        rate_pps: None,
        duration: Duration::from_millis(ms),
        flows: FlowPattern::One,
        proto: Proto::Udp,
        cpu: Some(0),
    };
    let small = opts.sizes.iter().copied().min().unwrap_or(64);
    let latency = rate::latency(
        &path,
        &TrialSpec {
            rate_pps: Some(10_000),
            ..spec(small, if opts.quick { 500 } else { 3_000 })
        },
    )
    .map_err(|e| format!("latency: {e}"))?;
    let rates: &[u64] = if opts.quick { &RATES[..2] } else { &RATES };
    let mut fixed = Vec::new();
    for &r in rates {
        fixed.push(
            rate::trial(
                &path,
                &TrialSpec {
                    rate_pps: Some(r),
                    ..spec(small, trial_ms)
                },
            )
            .map_err(|e| format!("{r} pps: {e}"))?,
        );
    }
    let mut searches = Vec::new();
    for &size in &opts.sizes {
        let s = rate::no_drop_rate(
            &path,
            &spec(size, trial_ms),
            LOSS_LIMIT,
            if opts.quick { 2 } else { 6 },
        )
        .map_err(|e| format!("no-drop search, {size} B: {e}"))?;
        searches.push((size, s));
    }
    let mut engine_drops = Vec::new();
    let mut engine_cpu_s = Vec::new();
    for n in cluster.nodes() {
        if let Some(pid) = n.engine_pid() {
            if let Ok(t) = crate::forwarding::engine_ticks(pid) {
                let hz = crate::forwarding::clock_ticks_per_second();
                engine_cpu_s.push((n.name().to_string(), t as f64 / hz));
            }
        }
        if let Ok(c) = n.counters() {
            if let Some(d) = c.get("drops").and_then(Value::as_object) {
                for (reason, v) in d {
                    if let Some(v) = v.as_u64().filter(|&v| v > 0) {
                        engine_drops.push((n.name().to_string(), reason.clone(), v));
                    }
                }
            }
        }
    }
    Ok(DeviceResult {
        engine_drops,
        engine_cpu_s,
        device,
        pod_mtu,
        tcp_mbit,
        tcp_retransmits,
        ping_avg_ms: ping.avg_ms,
        latency,
        fixed,
        searches,
    })
}

/// Runs the scenario with this `sluice` binary (needs root, iperf3, nft, taskset).
pub fn run(bin: &std::path::Path, opts: &Options) -> Result<Report, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the overlay benchmark creates network namespaces: run it as root".into());
    }
    if let Some(bad) = opts.sizes.iter().find(|s| !(64..=1450 + 18).contains(*s)) {
        return Err(format!(
            "frame size {bad}: want 64..=1468 (the pod MTU 1450 plus Ethernet header and FCS)"
        ));
    }
    let mut devices = Vec::new();
    for d in Device::ALL {
        eprintln!("overlay: {} ...", d.name());
        devices.push(measure(d, bin, opts).map_err(|e| format!("{}: {e}", d.name()))?);
    }
    Ok(Report {
        options: opts.clone(),
        devices,
        notes: vec![
            "Pod a (node-1) -> pod b (node-2), one veth pair as the underlay; pods use the pod MTU (1450 VXLAN, 1472 UDP).".into(),
            "On veth every receive runs in the sender's softirq: for the kernel device the whole path (pod a, node-1's VXLAN encapsulation, node-2's decapsulation, pod b) runs on the generator's core; for sluice the engines (both pinned to CPU 1) do the encapsulation and decapsulation on their own core.".into(),
            "Loss is counted at pod b's interface (rx_packets) against what the generator sent.".into(),
        ],
    })
}

impl Report {
    pub fn to_markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "## Pod to pod across two nodes: the overlay\n");
        for d in &self.devices {
            let _ = writeln!(m, "- `{}`: {}", d.device.name(), d.device.describe());
        }
        let _ = writeln!(
            m,
            "\n### TCP (iperf3, {} s) and round trip\n",
            self.options.seconds
        );
        let _ = writeln!(
            m,
            "| device | pod MTU | TCP Mbit/s | retransmits | ping avg ms |"
        );
        let _ = writeln!(m, "|---|---:|---:|---:|---:|");
        for d in &self.devices {
            let _ = writeln!(
                m,
                "| {} | {} | {:.0} | {} | {} |",
                d.device.name(),
                d.pod_mtu,
                d.tcp_mbit,
                d.tcp_retransmits,
                d.ping_avg_ms
                    .map_or_else(|| "—".into(), |v| format!("{v:.3}"))
            );
        }
        let _ = writeln!(m, "\n### One-way latency at 10 kpps (µs)\n");
        let _ = writeln!(m, "| device | p50 | p99 | p99.9 | max | lost |");
        let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|");
        for d in &self.devices {
            let l = &d.latency;
            let _ = writeln!(
                m,
                "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
                d.device.name(),
                l.p50_us,
                l.p99_us,
                l.p999_us,
                l.max_us,
                l.lost
            );
        }
        let _ = writeln!(m, "\n### UDP at fixed rates (64 B frames): loss\n");
        let mut header = "| device |".to_string();
        let mut rule = "|---|".to_string();
        if let Some(d) = self.devices.first() {
            for t in &d.fixed {
                let _ = write!(header, " {} kpps |", t.rate_pps.unwrap_or(0) / 1000);
                rule.push_str("---:|");
            }
        }
        let _ = writeln!(m, "{header}\n{rule}");
        for d in &self.devices {
            let _ = write!(m, "| {} |", d.device.name());
            for t in &d.fixed {
                let _ = write!(m, " {:.2}% |", t.loss * 100.0);
            }
            m.push('\n');
        }
        let _ = writeln!(
            m,
            "\n### UDP: full speed and the highest rate with loss under 0.1%\n"
        );
        let _ = writeln!(m, "| device | frame | full speed offered kpps | delivered kpps | Mbit/s delivered | no-drop kpps |");
        let _ = writeln!(m, "|---|---|---:|---:|---:|---:|");
        for d in &self.devices {
            for (size, s) in &d.searches {
                let _ = writeln!(
                    m,
                    "| {} | {size} B | {:.1} | {:.1} | {:.0} | {:.1} |",
                    d.device.name(),
                    s.max.offered_pps / 1e3,
                    s.max.delivered_pps / 1e3,
                    s.max.delivered_pps * (*size as f64 - 4.0) * 8.0 / 1e6,
                    s.no_drop_pps() / 1e3
                );
            }
        }
        if self
            .devices
            .iter()
            .any(|d| !d.engine_drops.is_empty() || !d.engine_cpu_s.is_empty())
        {
            let _ = writeln!(
                m,
                "\n### The engines: CPU used and frames dropped over the whole run\n"
            );
            let _ = writeln!(m, "| device | node | CPU s | drops (reason: count) |");
            let _ = writeln!(m, "|---|---|---:|---|");
            for d in &self.devices {
                for (node, cpu) in &d.engine_cpu_s {
                    let drops: Vec<String> = d
                        .engine_drops
                        .iter()
                        .filter(|(n, _, _)| n == node)
                        .map(|(_, r, v)| format!("{r}: {v}"))
                        .collect();
                    let _ = writeln!(
                        m,
                        "| {} | {node} | {cpu:.1} | {} |",
                        d.device.name(),
                        if drops.is_empty() {
                            "none".to_string()
                        } else {
                            drops.join(", ")
                        }
                    );
                }
            }
        }
        let _ = writeln!(m, "\n### Notes\n");
        for n in &self.notes {
            let _ = writeln!(m, "- {n}");
        }
        m
    }

    pub fn to_json(&self) -> Value {
        json!({
            "scenario": "overlay",
            "options": {"seconds": self.options.seconds, "sizes": self.options.sizes, "quick": self.options.quick},
            "devices": self.devices.iter().map(|d| json!({
                "device": d.device.name(),
                "description": d.device.describe(),
                "pod_mtu": d.pod_mtu,
                "tcp_mbit_per_s": d.tcp_mbit,
                "tcp_retransmits": d.tcp_retransmits,
                "ping_avg_ms": d.ping_avg_ms,
                "latency": rate::recv_json(&d.latency),
                "fixed_rates": d.fixed.iter().map(Trial::to_json).collect::<Vec<_>>(),
                "searches": d.searches.iter().map(|(size, s)| json!({"frame_size": size, "search": s.to_json()})).collect::<Vec<_>>(),
                "engine_drops": d.engine_drops.iter().map(|(n, r, v)| json!({"node": n, "reason": r, "count": v})).collect::<Vec<_>>(),
                "engine_cpu_seconds": d.engine_cpu_s.iter().map(|(n, c)| json!({"node": n, "seconds": c})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }

    /// Loss against offered rate, one line per device.
    pub fn figures(&self) -> Vec<Figure> {
        vec![Figure {
            file: "overlay-loss".into(),
            plot: LinePlot {
                title: "Across two nodes: UDP loss against offered rate (64 B)".into(),
                x_label: "offered kpps".into(),
                y_label: "loss, %".into(),
                x_log: false,
                y_log: false,
                series: self
                    .devices
                    .iter()
                    .map(|d| Series {
                        name: d.device.name().into(),
                        points: d
                            .fixed
                            .iter()
                            .map(|t| (t.rate_pps.unwrap_or(0) as f64 / 1e3, t.loss * 100.0))
                            .collect(),
                    })
                    .collect(),
            },
        }]
    }
}

/// The scenario for `sluice bench`.
pub struct OverlayScenario;

impl Scenario for OverlayScenario {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn about(&self) -> &'static str {
        "pod to pod across two nodes: sluice VXLAN and UDP encapsulation next to the kernel's VXLAN (flannel); TCP Mbit/s, UDP loss at fixed rates, no-drop rate, latency"
    }

    fn params(&self) -> &'static str {
        "--frame-sizes (default 64,1400; quick 64; at most 1468), --seconds (default 5; quick 1)"
    }

    fn run(&self, ctx: &Ctx) -> Result<Section, String> {
        let opts = Options {
            seconds: ctx.params.seconds.unwrap_or(if ctx.quick { 1 } else { 5 }),
            sizes: ctx.params.frame_sizes.clone().unwrap_or_else(|| {
                if ctx.quick {
                    vec![64]
                } else {
                    vec![64, 1400]
                }
            }),
            quick: ctx.quick,
        };
        let report = run(&ctx.sluice_bin, &opts)?;
        Ok(Section {
            markdown: report.to_markdown(),
            json: report.to_json(),
            figures: report.figures(),
        })
    }
}
