//! Benchmark scenario `services`: ClusterIP service NAT at 1 .. 100k services, the kernel
//! doing it with the rules kube-proxy writes (iptables, iptables-legacy, nftables), and sluice's
//! own line when its service table lands (issue 5 adds a [`Device`]).
//!
//! Owns the sweep: for each device and each number of services N, a fresh topology gen -> DUT
//! -> sink ([`crate::kube_proxy::Topology`]); the rules for N services loaded into the DUT
//! (timed: *programming time*), then a one-endpoint change of the middle service (timed); then,
//! for each frame size and flow pattern, sluice's generator (pinned to CPU 0) sends UDP to the
//! *last* service's VIP as fast as it can for a window, and the sink interface counts what the
//! DUT delivered after DNAT (the sink drops it at its netdev ingress hook). Before each window
//! the DUT's connection tracking table is flushed (`conntrack -F`), so a new-flow-per-packet
//! window measures flows created per second from an empty table; after it the DUT's
//! `nf_conntrack_count` is read.
//!
//! Conntrack scale: flows created per second are the new-flow-per-packet rows' delivered
//! packets/s (every delivered packet created an entry; the count after the window confirms
//! it); bytes per flow from the growth of the `nf_conntrack` slab and of `Slab:` in
//! /proc/meminfo over the window ([`kube_proxy::ConntrackCost`]).
//!
//! A (device, N) whose load is predicted to take longer than the load budget (extrapolating
//! the growth between the two previous N: nft's and iptables-nft's loads grow about with N²
//! here) is skipped with a note instead of blocking the run for hours.
//!
//! Everything runs in namespaces of its own; nothing of the root namespace is touched.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{flow_name, Ctx, Figure, Scenario, Section};
use crate::kube_proxy::{self, Kind, Topology};
use crate::pktgen::{FlowPattern, Proto};
use crate::plot::{LinePlot, Series};
use crate::rate::{trial, PathEnds, Trial, TrialSpec};

/// A device under test of this scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The DUT's kernel with kube-proxy's rules of this kind.
    Kernel(Kind),
}

impl Device {
    pub fn name(self) -> String {
        match self {
            Device::Kernel(k) => format!("kernel-{}", k.name()),
        }
    }
}

/// What a run does.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub devices: Vec<Device>,
    pub services: Vec<usize>,
    pub endpoints: usize,
    pub flows: Vec<FlowPattern>,
    /// FCS included (64 = 60 bytes written).
    pub frame_sizes: Vec<usize>,
    pub window: Duration,
    /// Skip a (device, N) whose predicted load time is above this.
    pub load_budget: Duration,
}

impl Plan {
    pub fn new(ctx: &Ctx) -> Plan {
        let p = &ctx.params;
        let (services, window, budget) = if ctx.quick {
            (
                vec![1, 100],
                Duration::from_millis(500),
                Duration::from_secs(20),
            )
        } else {
            (
                vec![1, 1_000, 10_000, 100_000],
                Duration::from_secs(2),
                Duration::from_secs(600),
            )
        };
        Plan {
            devices: Kind::ALL.iter().map(|&k| Device::Kernel(k)).collect(),
            services: p.services.clone().unwrap_or(services),
            endpoints: p.endpoints.unwrap_or(1),
            flows: p
                .flows
                .clone()
                .unwrap_or_else(|| vec![FlowPattern::One, FlowPattern::NewPerPacket]),
            frame_sizes: p.frame_sizes.clone().unwrap_or_else(|| vec![64]),
            window: p.seconds.map_or(window, Duration::from_secs),
            load_budget: budget,
        }
    }
}

/// One window.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub flows: FlowPattern,
    pub frame_size: usize,
    pub trial: Trial,
    /// The DUT's `nf_conntrack_count` right after the window.
    pub conntrack_after: Option<u64>,
    /// What the window's flows cost the DUT's connection tracking (entries, flows/s, bytes).
    pub conntrack: kube_proxy::ConntrackCost,
}

/// One device at one number of services.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub device: Device,
    pub services: usize,
    pub endpoints: usize,
    /// Loading all services into the empty DUT, and the size of the input.
    pub load: Duration,
    pub load_bytes: usize,
    /// Then changing one endpoint of the middle service.
    pub change: Duration,
    pub change_bytes: usize,
    pub measurements: Vec<Measurement>,
}

/// The scenario's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub plan: Plan,
    pub iptables_version: String,
    pub conntrack_max: Option<u64>,
    pub rows: Vec<Row>,
    /// (device, N, why) of what was skipped.
    pub skipped: Vec<(Device, usize, String)>,
    pub notes: Vec<String>,
}

/// New-flow windows last at most [`NEW_FLOW_WINDOW`]: at the ~190k flows/s the kernel
/// creates here, a longer one would fill the conntrack table (nf_conntrack_max 262144), after
/// which every new flow evicts an old one and the count no longer tells the rate.
pub const NEW_FLOW_WINDOW: Duration = Duration::from_secs(1);

fn window_for(flows: FlowPattern, window: Duration) -> Duration {
    match flows {
        FlowPattern::NewPerPacket => window.min(NEW_FLOW_WINDOW),
        _ => window,
    }
}

fn conntrack_max() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Predicted load time of `n` services from the loads measured so far (ascending N): the
/// growth exponent of the last two points (at least 1: loading is never cheaper per service),
/// or linear from one point.
pub fn predict_load(history: &[(usize, Duration)], n: usize) -> Option<Duration> {
    let &(n2, t2) = history.last()?;
    let k = match history.len().checked_sub(2).map(|i| history[i]) {
        Some((n1, t1)) if n2 > n1 && t1 > Duration::ZERO && t2 > t1 => {
            ((t2.as_secs_f64() / t1.as_secs_f64()).ln() / (n2 as f64 / n1 as f64).ln()).max(1.0)
        }
        _ => 1.0,
    };
    let ratio = n as f64 / n2.max(1) as f64;
    Some(Duration::from_secs_f64(
        (t2.as_secs_f64() * ratio.powf(k)).min(1e9),
    ))
}

/// Empties the DUT's conntrack table (`conntrack -F` in its namespace).
fn flush_conntrack(topo: &Topology) -> Result<(), String> {
    topo.dut
        .exec_ok(&["conntrack", "-F"])
        .map(drop)
        .map_err(|e| {
            format!(
                "conntrack -F in {}: {e} (Debian package conntrack)",
                topo.dut.name()
            )
        })
}

fn measure_row(
    device: Device,
    n: usize,
    plan: &Plan,
    notes: &mut Vec<String>,
) -> Result<Row, String> {
    let Device::Kernel(kind) = device;
    let svcs = kube_proxy::services(n, plan.endpoints, kube_proxy::SINK_IP);
    let vip = svcs
        .last()
        .map(|s| s.vip)
        .ok_or_else(|| "no services to load".to_string())?;
    let topo = Topology::build()?;
    let rules = kind.rules(&svcs);
    let load = kube_proxy::apply(&topo.dut, kind, &rules)?;
    let mid = svcs.len() / 2;
    let (change, change_bytes) = match svcs.get(mid) {
        Some(old) => {
            let input = kind
                .change(&svcs, mid, &kube_proxy::changed(old))
                .ok_or_else(|| format!("no service {mid} to change"))?;
            (kube_proxy::apply(&topo.dut, kind, &input)?, input.len())
        }
        None => (Duration::ZERO, 0),
    };
    let e = |e: std::io::Error| e.to_string();
    let path = PathEnds {
        tx: &topo.gen,
        tx_if: "eth0".into(),
        src_mac: topo.gen.mac("eth0").map_err(e)?,
        dst_mac: topo.dut.mac("g0").map_err(e)?,
        src_ip: kube_proxy::GEN_IP,
        dst_ip: vip,
        dst_port: kube_proxy::SERVICE_PORT,
        rx: &topo.sink,
        rx_if: "eth0".into(),
    };
    let mut measurements = Vec::new();
    for &frame_size in &plan.frame_sizes {
        for &flows in &plan.flows {
            if let Err(e) = flush_conntrack(&topo) {
                if !notes.iter().any(|n| n.starts_with("conntrack -F")) {
                    notes.push(format!(
                        "{e}: windows start with the entries of the previous window."
                    ));
                }
            }
            let before = kube_proxy::ConntrackSnapshot::take(&topo.dut);
            let t = trial(
                &path,
                &TrialSpec {
                    frame_size: frame_size - 4,
                    rate_pps: None,
                    duration: window_for(flows, plan.window),
                    flows,
                    proto: Proto::Udp,
                    cpu: Some(0),
                },
            )
            .map_err(|e| format!("{} services, {}: {e}", n, flow_name(flows)))?;
            let after = kube_proxy::ConntrackSnapshot::take(&topo.dut);
            let conntrack = kube_proxy::ConntrackCost::between(
                &before,
                &after,
                conntrack_max(),
                kube_proxy::slab_merged(kube_proxy::CONNTRACK_SLAB),
                Duration::from_secs_f64(t.seconds),
            );
            measurements.push(Measurement {
                flows,
                frame_size,
                trial: t,
                conntrack_after: after.count,
                conntrack,
            });
        }
    }
    Ok(Row {
        device,
        services: svcs.len(),
        endpoints: plan.endpoints,
        load,
        load_bytes: rules.len(),
        change,
        change_bytes,
        measurements,
    })
}

/// Runs the sweep of `plan`.
pub fn run(plan: &Plan) -> Result<Report, String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the services benchmark creates network namespaces: run it as root".into());
    }
    let mut services = plan.services.clone();
    services.sort_unstable();
    services.dedup();
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let mut notes = Vec::new();
    for &device in &plan.devices {
        let mut history: Vec<(usize, Duration)> = Vec::new();
        for &n in &services {
            if let Some(predicted) = predict_load(&history, n) {
                if predicted > plan.load_budget {
                    let (prev_n, prev) = history[history.len() - 1];
                    skipped.push((
                        device,
                        n,
                        format!(
                            "loading {prev_n} services took {:.1} s; extrapolating the growth so far, {n} would take about {:.0} s, over the {:.0} s budget",
                            prev.as_secs_f64(),
                            predicted.as_secs_f64(),
                            plan.load_budget.as_secs_f64()
                        ),
                    ));
                    continue;
                }
            }
            eprintln!("services: {} with {n} services ...", device.name());
            let row = measure_row(device, n, plan, &mut notes)
                .map_err(|e| format!("{}, {n} services: {e}", device.name()))?;
            history.push((n, row.load));
            rows.push(row);
        }
    }
    Ok(Report {
        plan: plan.clone(),
        iptables_version: kube_proxy::iptables_version().unwrap_or_else(|e| e),
        conntrack_max: conntrack_max(),
        rows,
        skipped,
        notes,
    })
}

impl Report {
    pub fn to_markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "## Service NAT: ClusterIP services, one VIP hit\n");
        let _ = writeln!(
            m,
            "gen -> DUT -> sink namespaces on veth pairs; the DUT NATs UDP to the last of N \
             ClusterIP services ({} endpoint(s) each, all on the sink) to an endpoint. The kernel \
             rows use the rules kube-proxy writes (`{}`; nftables: kube-proxy's nftables mode). \
             sluice's generator sends as fast as it can from CPU 0 for {:.1} s per window; the \
             DUT's conntrack table is flushed before each window (nf_conntrack_max {}).\n",
            self.plan.endpoints,
            self.iptables_version,
            self.plan.window.as_secs_f64(),
            self.conntrack_max
                .map_or_else(|| "unknown".into(), |c| c.to_string())
        );
        let _ = writeln!(m, "### Programming time\n");
        let _ = writeln!(
            m,
            "| device | services | full load | input | one-endpoint change | input |"
        );
        let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|");
        for r in &self.rows {
            let _ = writeln!(
                m,
                "| {} | {} | {:.3} s | {:.1} MB | {:.3} s | {} B |",
                r.device.name(),
                r.services,
                r.load.as_secs_f64(),
                r.load_bytes as f64 / 1e6,
                r.change.as_secs_f64(),
                r.change_bytes
            );
        }
        let _ = writeln!(m, "\n### Packets/s to the last service's VIP\n");
        let _ = writeln!(
            m,
            "| device | services | flows | frame | offered kpps | delivered kpps | loss | conntrack entries after |"
        );
        let _ = writeln!(m, "|---|---:|---|---|---:|---:|---:|---:|");
        for r in &self.rows {
            for x in &r.measurements {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} B | {:.1} | {:.1} | {:.2}% | {} |",
                    r.device.name(),
                    r.services,
                    flow_label(x.flows),
                    x.frame_size,
                    x.trial.offered_pps / 1e3,
                    x.trial.delivered_pps / 1e3,
                    x.trial.loss * 100.0,
                    x.conntrack_after
                        .map_or_else(|| "?".into(), |c| c.to_string())
                );
            }
        }
        let ct: Vec<(&Row, &Measurement)> = self
            .rows
            .iter()
            .flat_map(|r| r.measurements.iter().map(move |x| (r, x)))
            .filter(|(_, x)| x.flows == FlowPattern::NewPerPacket)
            .collect();
        if !ct.is_empty() {
            let _ = writeln!(m, "\n### Connection tracking: a new flow per packet\n");
            let _ = writeln!(
                m,
                "| device | services | flows created/s | entries after | entry size | bytes per flow (slab) | bytes per flow (meminfo Slab) |"
            );
            let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|---:|");
            let b = |v: Option<f64>| v.map_or_else(|| "—".to_string(), |v| format!("{v:.0}"));
            for (r, x) in ct {
                let c = &x.conntrack;
                let _ = writeln!(
                    m,
                    "| {} | {} | {:.0} | {}{} | {} | {} | {} |",
                    r.device.name(),
                    r.services,
                    x.trial.delivered_pps,
                    c.new_entries,
                    if c.at_max { " (table full)" } else { "" },
                    c.entry_size
                        .map_or_else(|| "—".to_string(), |s| format!("{s} B")),
                    b(c.slab_bytes_per_flow),
                    b(c.meminfo_bytes_per_flow)
                );
            }
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(m, "\n### Skipped\n");
            for (d, n, why) in &self.skipped {
                let _ = writeln!(m, "- {} with {n} services: {why}", d.name());
            }
        }
        let mut notes = self.notes.clone();
        notes.push(
            "On veth the DUT's forwarding and NAT and the sink's receive run in the generator's \
             softirq, on CPU 0: the rate is the rate of the whole path on one core."
                .into(),
        );
        notes.push(format!(
            "New flow per packet: every packet has a new source port (and, past 64512 flows, a \
             new source address), so each delivered packet created a conntrack entry: flows \
             created/s = delivered packets/s (the entry count after the window confirms it). \
             New-flow windows last at most {} s so the table (nf_conntrack_max) does not fill; \
             a row marked \"table full\" reached it anyway, and from then on each new flow \
             evicted an unreplied one (early drop).",
            NEW_FLOW_WINDOW.as_secs()
        ));
        let _ = writeln!(m, "\n### Notes\n");
        for n in &notes {
            let _ = writeln!(m, "- {n}");
        }
        m
    }

    pub fn to_json(&self) -> Value {
        json!({
            "scenario": "services",
            "plan": {
                "devices": self.plan.devices.iter().map(|d| d.name()).collect::<Vec<_>>(),
                "services": self.plan.services,
                "endpoints": self.plan.endpoints,
                "flows": self.plan.flows.iter().map(|f| flow_name(*f)).collect::<Vec<_>>(),
                "frame_sizes": self.plan.frame_sizes,
                "window_seconds": self.plan.window.as_secs_f64(),
                "load_budget_seconds": self.plan.load_budget.as_secs_f64(),
            },
            "iptables_version": self.iptables_version,
            "conntrack_max": self.conntrack_max,
            "rows": self.rows.iter().map(|r| json!({
                "device": r.device.name(),
                "services": r.services,
                "endpoints": r.endpoints,
                "load_seconds": r.load.as_secs_f64(),
                "load_bytes": r.load_bytes,
                "change_seconds": r.change.as_secs_f64(),
                "change_bytes": r.change_bytes,
                "measurements": r.measurements.iter().map(|x| json!({
                    "flows": flow_name(x.flows),
                    "frame_size": x.frame_size,
                    "trial": x.trial.to_json(),
                    "conntrack_after": x.conntrack_after,
                    "conntrack": {
                        "new_entries": x.conntrack.new_entries,
                        "flows_per_sec": x.conntrack.flows_per_sec,
                        "max": x.conntrack.max,
                        "at_max": x.conntrack.at_max,
                        "entry_size": x.conntrack.entry_size,
                        "slab_merged": x.conntrack.slab_merged,
                        "slab_bytes_per_flow": x.conntrack.slab_bytes_per_flow,
                        "meminfo_bytes_per_flow": x.conntrack.meminfo_bytes_per_flow,
                    },
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "skipped": self.skipped.iter().map(|(d, n, why)| json!({
                "device": d.name(), "services": n, "why": why,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }

    /// Delivered packets/s against N (log x), one line per device, one plot per flow pattern;
    /// programming time against N, one line per device.
    pub fn figures(&self) -> Vec<Figure> {
        // One line per device: `point` of each of its rows (if any) against N.
        let per_device = |point: &dyn Fn(&Row) -> Option<f64>| -> Vec<Series> {
            self.plan
                .devices
                .iter()
                .map(|&d| Series {
                    name: d.name(),
                    points: self
                        .rows
                        .iter()
                        .filter(|r| r.device == d)
                        .filter_map(|r| point(r).map(|y| (r.services as f64, y)))
                        .collect(),
                })
                .collect()
        };
        let mut out = Vec::new();
        let frame = self.plan.frame_sizes.first().copied().unwrap_or(64);
        for &flows in &self.plan.flows {
            let series = per_device(&|r| {
                r.measurements
                    .iter()
                    .find(|x| x.flows == flows && x.frame_size == frame)
                    .map(|x| x.trial.delivered_pps / 1e3)
            });
            out.push(Figure {
                file: format!("services-pps-{}", flow_name(flows).replace(':', "")),
                plot: LinePlot {
                    title: format!(
                        "Service NAT, {}: packets/s against number of services ({frame} B)",
                        flow_label(flows)
                    ),
                    x_label: "services".into(),
                    y_label: "kpps delivered".into(),
                    x_log: true,
                    y_log: false,
                    series,
                },
            });
        }
        let series = per_device(&|r| Some(r.load.as_secs_f64()));
        out.push(Figure {
            file: "services-programming".into(),
            plot: LinePlot {
                title: "Programming N services (full load)".into(),
                x_label: "services".into(),
                y_label: "seconds".into(),
                x_log: true,
                y_log: true,
                series,
            },
        });
        out
    }
}

fn flow_label(f: FlowPattern) -> String {
    match f {
        FlowPattern::One => "one flow".into(),
        FlowPattern::NewPerPacket => "new flow per packet".into(),
        FlowPattern::RoundRobin(n) => format!("{n} flows round robin"),
    }
}

/// The scenario for `sluice bench`.
pub struct ServicesScenario;

impl Scenario for ServicesScenario {
    fn name(&self) -> &'static str {
        "services"
    }

    fn about(&self) -> &'static str {
        "ClusterIP service NAT at N services: kernel with kube-proxy's iptables / iptables-legacy / nftables rules; programming time, packets/s one flow and new flow per packet, conntrack"
    }

    fn params(&self) -> &'static str {
        "--services (default 1,1k,10k,100k; quick 1,100), --endpoints (1), --flows (one,new), --frame-sizes (64), --seconds (2; quick 0.5)"
    }

    fn run(&self, ctx: &Ctx) -> Result<Section, String> {
        let report = run(&Plan::new(ctx))?;
        Ok(Section {
            markdown: report.to_markdown(),
            json: report.to_json(),
            figures: report.figures(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_prediction_follows_the_measured_growth() {
        let s = Duration::from_secs_f64;
        assert_eq!(predict_load(&[], 10), None);
        // One point: linear.
        let p = predict_load(&[(1000, s(0.5))], 10_000).unwrap();
        assert!((p.as_secs_f64() - 5.0).abs() < 1e-6, "{p:?}");
        // Quadratic growth (nft here: 0.25 s at 1k, 24 s at 10k): 100k predicted ~2400 s.
        let p = predict_load(&[(1000, s(0.25)), (10_000, s(24.0))], 100_000).unwrap();
        assert!(
            p.as_secs_f64() > 2000.0 && p.as_secs_f64() < 2500.0,
            "{p:?}"
        );
        // Sub-linear measurements are extrapolated linearly, never cheaper.
        let p = predict_load(&[(1, s(0.003)), (1000, s(0.09))], 10_000).unwrap();
        assert!((p.as_secs_f64() - 0.9).abs() < 1e-6, "{p:?}");
        // Degenerate history does not panic.
        assert!(predict_load(&[(0, s(0.0))], 5).is_some());
        assert!(predict_load(&[(10, s(1.0)), (10, s(1.0))], usize::MAX).is_some());
    }
}
