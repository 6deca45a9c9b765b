//! Trials of sluice's own generator over one path of a topology: the measures every scenario
//! shares (RFC 2544 style).
//!
//! Owns: [`trial`] (send at a rate, or as fast as possible, for a while, and count what
//! arrived), [`no_drop_rate`] (the highest rate with loss under a limit, 0.1% by default, by
//! bisection), [`latency`] (one-way latency percentiles at a fixed rate, from the timestamps in
//! the generator's trailer) and a few `/proc` readers ([`rss_kib`]).
//!
//! # Method
//! - A [`PathEnds`] names where frames enter (a namespace, an interface, the MACs and
//!   addresses) and where they are counted (a namespace and interface). The generator runs in
//!   a thread of this process inside the sender's namespace, pinned to one CPU if asked.
//! - *Offered* is what the generator's `sendmmsg` calls handed to the kernel; *delivered* is
//!   the growth of the sink interface's `rx_packets` from before the trial to [`SETTLE`] after
//!   it. Counting at the interface costs the path nothing (no receiver copies frames), so a
//!   device under test is measured alone. Anything else arriving on the sink interface in that
//!   window (ARP, a neighbour probe) counts as delivered: a handful of frames, below the
//!   resolution of the 0.1% limit at any rate this is used for.
//! - Latency needs the frames themselves: [`latency`] runs a [`crate::pktgen::Receiver`] on the
//!   sink interface (an AF_PACKET ring; its copy costs CPU on the sink side, so latency is
//!   measured at a fixed, moderate rate, not at the limit).
//! - [`no_drop_rate`] first sends as fast as possible; the rate the generator offered is the
//!   upper bound (not the rate delivered: a device in overload can deliver far less than it
//!   carries without loss at a lower rate). If that trial lost less than the limit, it is the
//!   answer. Otherwise it bisects between 0 and the bound, `steps` trials, and keeps the
//!   highest rate whose trial lost less than the limit. Pacing is the generator's (bursts of up to 32 frames, paced on
//!   `CLOCK_MONOTONIC`), so the offered rate of a trial is within a fraction of a percent of
//!   the asked one, except above what the generator's core can send.
//!
//! # Promises
//! - Only the given namespaces see traffic; nothing is changed in any namespace.
//! - Every error names the step and the interface or namespace.

use std::fs;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::pktgen::{
    FlowPattern, GenConfig, GenReport, Generator, Proto, Receiver, RecvConfig, RecvReport,
};
use crate::testbed::Netns;

/// Wait after the generator stopped before reading the sink's counters.
pub const SETTLE: Duration = Duration::from_millis(200);
/// The default loss limit of [`no_drop_rate`]: 0.1%.
pub const LOSS_LIMIT: f64 = 0.001;

/// Where a path's frames enter and where they are counted.
#[derive(Clone)]
pub struct PathEnds<'a> {
    pub tx: &'a Netns,
    pub tx_if: String,
    pub src_mac: [u8; 6],
    /// The first hop's MAC (the gateway on the sender's link).
    pub dst_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub dst_port: u16,
    pub rx: &'a Netns,
    pub rx_if: String,
}

/// What one trial sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialSpec {
    /// Ethernet frame size without FCS (60 = a 64-byte frame on the wire).
    pub frame_size: usize,
    /// `None`: as fast as possible.
    pub rate_pps: Option<u64>,
    pub duration: Duration,
    pub flows: FlowPattern,
    pub proto: Proto,
    /// Pin the generator's thread to this CPU.
    pub cpu: Option<usize>,
}

/// What one trial measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// The asked rate (`None`: as fast as possible).
    pub rate_pps: Option<u64>,
    /// Frames the generator handed to the kernel, and over how long.
    pub offered: u64,
    pub seconds: f64,
    pub offered_pps: f64,
    /// Growth of the sink interface's `rx_packets`.
    pub delivered: u64,
    pub delivered_pps: f64,
    /// `1 - delivered / offered`, clamped to 0..=1.
    pub loss: f64,
}

impl Trial {
    pub fn to_json(&self) -> Value {
        json!({
            "rate_pps": self.rate_pps,
            "offered": self.offered,
            "seconds": self.seconds,
            "offered_pps": self.offered_pps,
            "delivered": self.delivered,
            "delivered_pps": self.delivered_pps,
            "loss": self.loss,
        })
    }
}

fn gen_config(path: &PathEnds<'_>, spec: &TrialSpec) -> GenConfig {
    GenConfig {
        ifname: path.tx_if.clone(),
        src_mac: path.src_mac,
        dst_mac: path.dst_mac,
        src_ip: path.src_ip,
        dst_ip: path.dst_ip,
        dst_port: path.dst_port,
        frame_size: spec.frame_size,
        rate_pps: spec.rate_pps,
        duration: spec.duration,
        count: None,
        flows: spec.flows,
        proto: spec.proto,
    }
}

/// Pins the calling thread to `cpu`.
fn pin_thread(cpu: usize) -> Result<(), String> {
    // SAFETY: an all-zero cpu_set_t is an empty set; CPU_SET only writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(format!("CPU {cpu} is out of range"));
    }
    // SAFETY: `cpu` was checked to be inside the set above; CPU_SET writes one bit of `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t and the size passed is its size; pid 0 = this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!(
            "pinning the generator to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Runs the generator of `spec` in `path.tx` (in a thread of its own, pinned if asked).
fn run_generator(path: &PathEnds<'_>, spec: &TrialSpec) -> Result<GenReport, String> {
    let cfg = gen_config(path, spec);
    let cpu = spec.cpu;
    let ifname = path.tx_if.clone();
    let ns = path.tx.name().to_string();
    path.tx
        .spawn(move || -> Result<GenReport, String> {
            if let Some(cpu) = cpu {
                pin_thread(cpu)?;
            }
            let mut g =
                Generator::open(&cfg).map_err(|e| format!("generator on {ifname} in {ns}: {e}"))?;
            g.run()
                .map_err(|e| format!("generator on {ifname} in {ns}: {e}"))
        })
        .join()
        .map_err(|_| "the generator thread panicked".to_string())?
}

/// Reads `/sys/class/net/<ifname>/statistics/<name>` inside `ns`, in the order given.
pub fn if_counters(ns: &Netns, ifname: &str, names: &[&str]) -> Result<Vec<u64>, String> {
    let paths: Vec<String> = names
        .iter()
        .map(|n| format!("/sys/class/net/{ifname}/statistics/{n}"))
        .collect();
    let mut argv = vec!["cat"];
    argv.extend(paths.iter().map(String::as_str));
    let out = ns
        .exec_ok(&argv)
        .map_err(|e| format!("counters of {ifname} in {}: {e}", ns.name()))?;
    let values: Vec<u64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    if values.len() != names.len() {
        return Err(format!(
            "counters of {ifname} in {}: expected {} numbers, got {out:?}",
            ns.name(),
            names.len()
        ));
    }
    Ok(values)
}

/// `rx_packets` of `ifname` in `ns`.
pub fn rx_packets(ns: &Netns, ifname: &str) -> Result<u64, String> {
    // `if_counters` returns exactly one number per name asked.
    Ok(if_counters(ns, ifname, &["rx_packets"])?[0])
}

/// One trial: the generator sends `spec`, the sink interface counts.
pub fn trial(path: &PathEnds<'_>, spec: &TrialSpec) -> Result<Trial, String> {
    let before = rx_packets(path.rx, &path.rx_if)?;
    let g = run_generator(path, spec)?;
    std::thread::sleep(SETTLE);
    let after = rx_packets(path.rx, &path.rx_if)?;
    let delivered = after.saturating_sub(before);
    let seconds = g.elapsed.as_secs_f64().max(1e-9);
    let loss = if g.sent == 0 {
        1.0
    } else {
        (1.0 - delivered as f64 / g.sent as f64).clamp(0.0, 1.0)
    };
    Ok(Trial {
        rate_pps: spec.rate_pps,
        offered: g.sent,
        seconds,
        offered_pps: g.pps,
        delivered,
        delivered_pps: delivered as f64 / seconds,
        loss,
    })
}

/// The result of a search for the highest rate with loss under a limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    pub loss_limit: f64,
    /// The first trial, as fast as possible.
    pub max: Trial,
    /// The highest-rate trial that lost less than the limit (`None`: none did).
    pub best: Option<Trial>,
    /// Every trial, in the order run (the first is `max`).
    pub trials: Vec<Trial>,
}

impl Search {
    /// The answer in packets/s (0 when no rate passed).
    pub fn no_drop_pps(&self) -> f64 {
        self.best.as_ref().map_or(0.0, |t| t.offered_pps)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "loss_limit": self.loss_limit,
            "max": self.max.to_json(),
            "best": self.best.as_ref().map(Trial::to_json),
            "no_drop_pps": self.no_drop_pps(),
            "trials": self.trials.iter().map(Trial::to_json).collect::<Vec<_>>(),
        })
    }
}

/// Finds the highest rate at which `path` loses less than `loss_limit` of `spec`'s frames
/// (`spec.rate_pps` is ignored): a trial as fast as possible, then `steps` bisection trials
/// between 0 and what that trial offered.
pub fn no_drop_rate(
    path: &PathEnds<'_>,
    spec: &TrialSpec,
    loss_limit: f64,
    steps: u32,
) -> Result<Search, String> {
    let max = trial(
        path,
        &TrialSpec {
            rate_pps: None,
            ..spec.clone()
        },
    )?;
    let mut trials = vec![max.clone()];
    if max.delivered == 0 {
        return Ok(Search {
            loss_limit,
            max,
            best: None,
            trials,
        });
    }
    if max.loss < loss_limit {
        return Ok(Search {
            loss_limit,
            best: Some(max.clone()),
            max,
            trials,
        });
    }
    // The upper bound is what the generator offered, not what got through: a device in
    // overload may deliver far less than it carries without loss at a lower rate (receive
    // livelock), so "delivered at full speed" is no bound.
    let (mut lo, mut hi) = (0u64, max.offered_pps.max(max.delivered_pps).ceil() as u64);
    let mut best: Option<Trial> = None;
    for _ in 0..steps {
        let rate = lo + (hi - lo) / 2;
        if rate == 0 || rate <= lo {
            break;
        }
        let t = trial(
            path,
            &TrialSpec {
                rate_pps: Some(rate),
                ..spec.clone()
            },
        )?;
        let pass = t.loss < loss_limit;
        trials.push(t.clone());
        if pass {
            lo = rate;
            best = Some(t);
        } else {
            hi = rate;
        }
    }
    Ok(Search {
        loss_limit,
        max,
        best,
        trials,
    })
}

/// One-way latency and loss at a fixed rate, from the receiver on the sink interface.
pub fn latency(path: &PathEnds<'_>, spec: &TrialSpec) -> Result<RecvReport, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
    let rcfg = RecvConfig {
        ifname: path.rx_if.clone(),
        duration: spec.duration + Duration::from_secs(5),
        expect_dst_port: Some(path.dst_port),
    };
    let rx_stop = Arc::clone(&stop);
    let where_ = format!("receiver on {} in {}", path.rx_if, path.rx.name());
    let rx = path.rx.spawn(move || -> Result<RecvReport, String> {
        let mut r = match Receiver::open(&rcfg) {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("{where_}: {e}");
                let _ = ready_tx.send(Err(msg.clone()));
                return Err(msg);
            }
        };
        let _ = ready_tx.send(Ok(()));
        r.run(&rx_stop).map_err(|e| format!("{where_}: {e}"))
    });
    let ready = ready_rx
        .recv()
        .map_err(|_| "the receiver thread ended before opening".to_string())
        .and_then(|r| r);
    let sent = ready.and_then(|()| run_generator(path, spec));
    std::thread::sleep(SETTLE);
    stop.store(true, Ordering::Relaxed);
    let received = rx
        .join()
        .map_err(|_| "the receiver thread panicked".to_string())?;
    sent?;
    received
}

/// The JSON of a receiver's report.
pub fn recv_json(r: &RecvReport) -> Value {
    json!({
        "received": r.received,
        "lost": r.lost,
        "reordered": r.reordered,
        "duplicates": r.duplicates,
        "pps": r.pps,
        "p50_us": r.p50_us,
        "p99_us": r.p99_us,
        "p999_us": r.p999_us,
        "max_us": r.max_us,
        "ring_drops": r.ring_drops,
    })
}

/// Resident and peak resident memory of a process, in KiB (`VmRSS`, `VmHWM` of
/// `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Result<(u64, u64), String> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    parse_rss(&text).ok_or_else(|| format!("/proc/{pid}/status: no VmRSS/VmHWM"))
}

/// `VmRSS` and `VmHWM` (KiB) of a `/proc/<pid>/status` text.
pub fn parse_rss(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    Some((field("VmRSS")?, field("VmHWM")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_parsed_from_proc_status() {
        let text = "Name:\tsluice\nVmPeak:\t  100 kB\nVmHWM:\t    5120 kB\nVmRSS:\t    4096 kB\n";
        assert_eq!(parse_rss(text), Some((4096, 5120)));
        assert_eq!(parse_rss("VmRSS: 1 kB\n"), None);
        assert_eq!(parse_rss(""), None);
        assert_eq!(parse_rss("VmRSS: x kB\nVmHWM: 2 kB"), None);
    }

    #[test]
    fn own_rss_is_readable() {
        let (rss, hwm) = rss_kib(std::process::id()).unwrap();
        assert!(rss > 0 && hwm >= rss, "{rss} {hwm}");
    }
}
