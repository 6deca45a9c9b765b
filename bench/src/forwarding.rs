//! Benchmark scenario 1: pod-to-pod forwarding on one node, sluice next to the Linux kernel,
//! in the same kind of namespaces, in the same run.
//!
//! Owns the scenario (topologies, traffic, measurements) and its [`Report`]. Promises: it only
//! creates namespaces of its own (through [`crate::testbed`]), sends traffic only inside them,
//! never changes a setting of the root namespace or of the machine (trafgen runs with
//! `--no-sock-mem --notouch-irq`), and removes everything it made, on success and on failure.
//!
//! # Topology
//!
//! One node namespace, two pod namespaces `a` (10.244.1.10) and `b` (10.244.1.11), gateway
//! 10.244.1.1; pods are configured as the testbed configures every pod (`IP/32`, a link route
//! to the gateway, default via the gateway). Four devices under test move the frames a -> b:
//!
//! | device | how a pod is attached | who forwards |
//! |---|---|---|
//! | `sluice-afpacket-v2` | veth pair; the engine reads the host end with AF_PACKET, TPACKET_V2 ring | the engine (node kernel: ip_forward=0, no address, raw drop) |
//! | `sluice-afpacket-v3` | the same with a TPACKET_V3 ring (`ring: v3`) | the engine |
//! | `sluice-tap` | a TAP device the engine creates and moves into the pod | the engine |
//! | `kernel` | the same veth pairs, no engine | the node kernel: ip_forward=1, 10.244.1.1/32 on both host ends, a /32 route to each pod via its veth |
//!
//! # Method
//!
//! For each device, in this order:
//! 1. **Latency**: `ping -n -q -i 0.01 -c N` from a to b (N = 500, 100 in quick mode):
//!    min/avg/max/mdev. A round trip crosses the device twice (request and reply).
//! 2. **Packets/s**, for each frame size S of [`Options::sizes`]: `trafgen` in pod a, pinned to
//!    CPU 0 (`taskset -c 0`, one worker), sends as fast as it can, through pod a's interface
//!    (eth0, or the TAP for TAP pods), one UDP frame to b's IP, addressed to the gateway MAC of
//!    a's link (the engine's MAC on that port from the admin `status` answer; for the kernel,
//!    the host veth end's MAC), IPv4 and UDP checksums computed by trafgen (`csumip`,
//!    `csumudp`). S counts the Ethernet FCS, as RFC 2544 does; veth and TAP carry no FCS, so
//!    S - 4 bytes are written (64 -> 60, the Ethernet minimum). After a 1 s warm-up, the
//!    counters are read, then again [`Options::seconds`] later:
//!    - *offered* = a's interface `tx_packets + tx_dropped` (what trafgen pushed into it);
//!    - *sent* = a's interface `tx_packets` (what it passed on: into the peer veth's receive
//!      path, or, for a TAP, what the engine read from it);
//!    - *delivered* = b's interface `rx_packets`. The sink is cheap and the same for every
//!      device: an nft `netdev` ingress rule in pod b drops UDP to port 9 after the interface
//!      counted it and before IP (else b's kernel would do a UDP lookup and an ICMP error per
//!      datagram, on the engine's core for sluice: see below);
//!    - *loss* = 1 - delivered / offered;
//!    - the engine's CPU from `/proc/<pid>/stat` (utime + stime, all threads; 100% = one core),
//!      and each CPU's busy and softirq share from `/proc/stat` (whole machine);
//!    - *other load*: the busy share of the engine's CPU not spent by the engine (for the
//!      kernel device, all of it); a row above [`DISTURBED_PERCENT`] is flagged `†` as disturbed
//!      by other work on the machine.
//!
//!    Counters are read from `/sys/class/net/<if>/statistics/` inside each pod's namespace
//!    (`ip netns exec`). The engine (all its threads) is pinned to CPU 1 (`taskset -acp 1`)
//!    right after it starts (both to CPU 0 on a one-CPU machine).
//! 3. **Profile** (full mode only, 64-byte frames through `sluice-afpacket-v2`, once): after
//!    the measured window, while trafgen still runs, `perf record -a -g -- sleep 3`, and the top
//!    symbols of `perf report --sort comm,dso,sym`, and the engine's functions with their
//!    callees (`--children --comm sluice`), so perf's own cost never lands in the numbers.
//! 4. **Idle CPU** (engines only): after the traffic stopped and a 1 s pause, the engine's
//!    utime + stime over 10 s (2 s in quick mode), with its ports attached and no traffic.
//!
//! On veth the receiving side's softirq runs on the *sender's* core: the frames trafgen sends
//! are received by the node (and, for sluice, copied into the engine's ring) on CPU 0, and
//! what the engine sends is received by pod b on CPU 1. The kernel device does all of its work
//! on CPU 0, in trafgen's softirqs. The report says so next to the numbers.
//!
//! To generalize (other scenarios): build a topology per device, obtain the same "ends"
//! (sender namespace and interface, sink namespace and interface, destination MAC, engine pid),
//! and reuse the generator, the counter sampling and the report tables of this module.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control::net::{format_mac, parse_mac};
use serde_json::{json, Value};

use crate::testbed::{
    configure_pod_if, veth, Cluster, Netns, NodeDef, NodeHandle, PodDef, RingDef,
};

/// Pod a (the sender).
pub const POD_A_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
/// Pod b (the sink).
pub const POD_B_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 11);
/// The pods' gateway: the first host of [`POD_CIDR`].
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
/// The node's pod CIDR.
pub const POD_CIDR: &str = "10.244.1.0/24";
/// UDP ports of the generated frames (9: discard).
const SRC_PORT: u16 = 1024;
const DST_PORT: u16 = 9;
/// Smallest and largest frame size accepted, FCS included (64: Ethernet minimum; 1518: a
/// 1500-byte IP packet plus Ethernet header and FCS).
pub const MIN_FRAME: usize = 64;
pub const MAX_FRAME: usize = 1518;
/// Ethernet FCS: counted in a frame size, not carried on veth or TAP.
const FCS: usize = 4;
/// Traffic before the measured window.
pub const WARMUP: Duration = Duration::from_secs(1);
/// Rows whose engine CPU had more than this much other work (percent) are flagged as disturbed.
pub const DISTURBED_PERCENT: f64 = 15.0;
/// Pause between the end of traffic and the idle measurement.
const SETTLE: Duration = Duration::from_secs(1);
/// Length of the `perf record` window.
const PERF_SECONDS: u64 = 3;
/// How many functions of the engine's call-graph profile the report keeps.
const ENGINE_INCLUSIVE_TOP: usize = 15;
/// How many symbols of the profile the report keeps.
const PERF_TOP: usize = 10;
/// The stated agreement of trafgen and sluice's generator on the same path at the same fixed
/// rate: relative difference of the delivered packets/s.
pub const CROSSCHECK_MARGIN: f64 = 0.02;
/// The fixed rate of the cross-check (below what every device forwards without loss here).
pub const CROSSCHECK_PPS: u64 = 50_000;
/// Window of each generator in the cross-check, s (full, quick).
const CROSSCHECK_SECONDS: (u64, u64) = (5, 1);
/// How long trafgen gets to exit after SIGINT.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Length of each measured packets/s window, after the 1 s warm-up.
    pub seconds: u64,
    /// Frame sizes in bytes, Ethernet FCS included (64..=1518); S - 4 bytes are written.
    pub sizes: Vec<usize>,
    /// Shorter everything else: 100 pings instead of 500, 2 s of idle CPU instead of 10, no
    /// perf profile, a shorter search. `seconds` is used as given.
    pub quick: bool,
    /// Also measure with sluice's own generator (pktgen): the highest rate with loss under
    /// 0.1% per frame size, the cross-check with trafgen, one-way latency percentiles.
    pub pktgen: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            seconds: 10,
            sizes: vec![64, 1500],
            quick: false,
            pktgen: true,
        }
    }
}

/// Bisection steps of the no-drop search (full, quick).
const SEARCH_STEPS: (u32, u32) = (6, 2);
/// Length of each pktgen trial, ms (full, quick).
const TRIAL_MS: (u64, u64) = (2_000, 500);
/// The fixed rate of the one-way latency measurement (frames/s) and its length, ms (full, quick).
pub const LATENCY_PPS: u64 = 10_000;
const LATENCY_MS: (u64, u64) = (5_000, 500);

impl Options {
    /// The quick preset: 1 s windows, 64-byte frames only, quick mode.
    pub fn quick() -> Options {
        Options {
            seconds: 1,
            sizes: vec![64],
            quick: true,
            pktgen: true,
        }
    }

    fn pick<T>(&self, (full, quick): (T, T)) -> T {
        if self.quick {
            quick
        } else {
            full
        }
    }

    fn ping_count(&self) -> u32 {
        self.pick((500, 50))
    }

    fn idle_seconds(&self) -> u64 {
        self.pick((10, 1))
    }

    fn validate(&self) -> Result<(), String> {
        if self.seconds == 0 || self.seconds > 3600 {
            return Err(format!("seconds = {} (want 1..=3600)", self.seconds));
        }
        if self.sizes.is_empty() {
            return Err("no frame sizes given (want e.g. 64 and 1500)".into());
        }
        if let Some(bad) = self
            .sizes
            .iter()
            .find(|s| !(MIN_FRAME..=MAX_FRAME).contains(*s))
        {
            return Err(format!(
                "frame size {bad} (want {MIN_FRAME}..={MAX_FRAME} bytes, FCS included)"
            ));
        }
        Ok(())
    }
}

/// A device under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// sluice, pods on veth pairs read with AF_PACKET and a TPACKET_V2 ring.
    SluiceAfPacketV2,
    /// sluice, pods on veth pairs read with AF_PACKET and a TPACKET_V3 ring.
    SluiceAfPacketV3,
    /// sluice, pods on TAP devices.
    SluiceTap,
    /// The node kernel forwarding between the same veth pairs (ip_forward=1).
    Kernel,
}

impl Device {
    pub const ALL: [Device; 4] = [
        Device::SluiceAfPacketV2,
        Device::SluiceAfPacketV3,
        Device::SluiceTap,
        Device::Kernel,
    ];

    /// Short name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Device::SluiceAfPacketV2 => "sluice-afpacket-v2",
            Device::SluiceAfPacketV3 => "sluice-afpacket-v3",
            Device::SluiceTap => "sluice-tap",
            Device::Kernel => "kernel",
        }
    }

    /// One line for people.
    pub fn describe(self) -> &'static str {
        match self {
            Device::SluiceAfPacketV2 => "sluice engine, veth pods, AF_PACKET TPACKET_V2 rings",
            Device::SluiceAfPacketV3 => "sluice engine, veth pods, AF_PACKET TPACKET_V3 rings",
            Device::SluiceTap => "sluice engine, TAP pods",
            Device::Kernel => "Linux kernel forwarding, veth pods, ip_forward=1, /32 routes",
        }
    }
}

/// The machine the numbers come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// Online CPUs.
    pub cpus: usize,
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// /proc/sys/kernel/osrelease.
    pub kernel: String,
    /// First line of `trafgen -v`.
    pub trafgen: String,
}

/// One CPU's use over a window, from /proc/stat (every process of the machine counts).
#[derive(Debug, Clone, PartialEq)]
pub struct CpuUse {
    pub cpu: usize,
    /// Not idle and not iowait, in percent of the window.
    pub busy_percent: f64,
    /// Of which serving softirqs (veth receive runs there).
    pub softirq_percent: f64,
}

/// Packets/s of one frame size through one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    /// Frame size as configured, FCS included.
    pub frame_size: usize,
    /// Bytes written per frame (`frame_size - 4`).
    pub wire_bytes: usize,
    /// Length of the measured window.
    pub seconds: f64,
    /// Frames trafgen pushed into a's interface per second (tx_packets + tx_dropped).
    pub offered_pps: f64,
    /// Frames a's interface passed on per second (tx_packets).
    pub sent_pps: f64,
    /// Frames b's interface received per second (rx_packets).
    pub delivered_pps: f64,
    /// 1 - delivered / offered, 0..=1.
    pub loss: f64,
    /// The engine's CPU (100 = one core), `None` for the kernel.
    pub engine_cpu_percent: Option<f64>,
    /// Frames the engine counted as dropped (any reason) in the window, `None` for the kernel.
    pub engine_drops: Option<u64>,
    /// The generator's CPU and the engine's CPU (one entry if they are the same).
    pub cpus: Vec<CpuUse>,
    /// Busy share of the engine's CPU not spent by the engine (for the kernel device, all of
    /// it): other work on the machine, or the engine's softirqs deferred to ksoftirqd. `None`
    /// when the generator and the engine share a CPU.
    pub other_load_percent: Option<f64>,
}

impl Throughput {
    /// Whether other work on the engine's CPU may have skewed this row.
    pub fn disturbed(&self) -> bool {
        self.other_load_percent
            .is_some_and(|o| o > DISTURBED_PERCENT)
    }

    /// Delivered layer-2 bits per second (written bytes, no FCS).
    pub fn delivered_gbit(&self) -> f64 {
        self.delivered_pps * self.wire_bytes as f64 * 8.0 / 1e9
    }
}

/// What `ping -q` said.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    pub transmitted: u32,
    pub received: u32,
    pub min_ms: f64,
    pub avg_ms: f64,
    pub max_ms: f64,
    pub mdev_ms: f64,
}

/// Everything measured for one device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceResult {
    pub device: Device,
    pub latency: Latency,
    pub throughput: Vec<Throughput>,
    /// The idle engine's CPU in percent of one core; `None` for the kernel.
    pub idle_cpu_percent: Option<f64>,
    /// Measured with sluice's own generator (`None` when [`Options::pktgen`] is off).
    pub pktgen: Option<PktgenResult>,
    /// The engine's resident memory after the traffic, and its peak, KiB (`None` for the kernel).
    pub engine_rss_kib: Option<(u64, u64)>,
}

/// What sluice's own generator measured on one device.
#[derive(Debug, Clone, PartialEq)]
pub struct PktgenResult {
    /// Per frame size (FCS included): the search for the highest rate with loss < 0.1%. Its
    /// first trial is as fast as the generator goes: compared with trafgen's row.
    pub searches: Vec<(usize, crate::rate::Search)>,
    /// One-way latency at [`LATENCY_PPS`], smallest frame size, from the trailer's timestamps.
    pub latency: crate::pktgen::RecvReport,
    pub latency_frame_size: usize,
    /// trafgen and sluice's generator at the same fixed rate ([`CROSSCHECK_PPS`]), smallest
    /// frame size.
    pub crosscheck: Crosscheck,
}

/// The two generators at one fixed rate on one path, each counted the same way (offered:
/// what the generator got into the sender's interface; delivered: the sink's `rx_packets`).
#[derive(Debug, Clone, PartialEq)]
pub struct Crosscheck {
    pub frame_size: usize,
    pub rate_pps: u64,
    pub seconds: f64,
    pub trafgen_offered_pps: f64,
    pub trafgen_delivered_pps: f64,
    pub pktgen_offered_pps: f64,
    pub pktgen_delivered_pps: f64,
}

impl Crosscheck {
    /// (pktgen - trafgen) / trafgen of the delivered rates.
    pub fn difference(&self) -> f64 {
        if self.trafgen_delivered_pps > 0.0 {
            (self.pktgen_delivered_pps - self.trafgen_delivered_pps) / self.trafgen_delivered_pps
        } else {
            f64::NAN
        }
    }
}

/// One line of `perf report`.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfSymbol {
    pub percent: f64,
    pub comm: String,
    pub dso: String,
    /// `[k] name` (kernel) or `[.] name` (user space), as perf prints it.
    pub symbol: String,
}

/// One command's share of a profile, in percent of all CPUs' samples (100 = every CPU).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandShare {
    pub comm: String,
    pub percent: f64,
    /// Of which in the kernel (`[k]` symbols: system calls and the softirqs they ran).
    pub kernel_percent: f64,
}

/// One function of a call-graph profile: samples in it and below it, and in it alone.
#[derive(Debug, Clone, PartialEq)]
pub struct InclusiveSymbol {
    pub symbol: String,
    /// Percent of all samples of all CPUs.
    pub children_percent: f64,
    pub self_percent: f64,
}

/// Where the CPU went during one run, from `perf record -a -g`.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub device: Device,
    pub frame_size: usize,
    pub seconds: u64,
    /// Share of samples in the idle task (`swapper`), in percent of all CPUs' samples.
    pub idle_percent: f64,
    /// Samples per command, busiest first (the idle task and commands under 0.1% left out).
    pub by_command: Vec<CommandShare>,
    /// The engine's busiest functions counting what they call (`perf report --children
    /// --comm sluice`): which system calls and kernel paths its core spends its time in.
    pub engine_inclusive: Vec<InclusiveSymbol>,
    /// The busiest non-idle (comm, dso, symbol) entries.
    pub top: Vec<PerfSymbol>,
}

/// The scenario's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub machine: Machine,
    /// UTC, `YYYY-MM-DD HH:MM UTC`, when the run started.
    pub date: String,
    pub options: Options,
    pub generator_cpu: usize,
    pub engine_cpu: usize,
    pub ping_count: u32,
    /// /proc/loadavg when the run started: other work on the machine skews every number.
    pub load_average: String,
    pub idle_seconds: u64,
    pub devices: Vec<DeviceResult>,
    /// `None` in quick mode, without 64-byte frames, or if perf failed (see `notes`).
    pub profile: Option<Profile>,
    /// Facts a reader needs next to the numbers.
    pub notes: Vec<String>,
}

/// Runs the scenario with this `sluice` binary. Needs root and `trafgen` (netsniff-ng).
pub fn run(sluice_bin: &Path, opts: &Options) -> Result<Report, String> {
    opts.validate()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the forwarding benchmark creates network namespaces: run it as root".into());
    }
    if !sluice_bin.is_file() {
        return Err(format!(
            "sluice binary {} not found (cargo build --release)",
            sluice_bin.display()
        ));
    }
    let machine = machine()?;
    let date = utc_now();
    let load_average = fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    let generator_cpu = 0;
    let engine_cpu = if machine.cpus >= 2 { 1 } else { 0 };
    let dir = ScratchDir::new()?;
    let mut devices = Vec::new();
    let mut profile = None;
    let mut notes = Vec::new();
    for device in Device::ALL {
        let topo = Topo::build(device, sluice_bin)
            .map_err(|e| format!("{}: building the topology: {e}", device.name()))?;
        let result = measure_device(
            device,
            &topo,
            opts,
            &dir.0,
            generator_cpu,
            engine_cpu,
            &mut profile,
            &mut notes,
        )
        .map_err(|e| format!("{}: {e}{}", device.name(), topo.log_tail()))?;
        devices.push(result);
    }
    notes.extend(standing_notes(&devices, generator_cpu, engine_cpu, opts));
    Ok(Report {
        machine,
        date,
        options: opts.clone(),
        generator_cpu,
        engine_cpu,
        ping_count: opts.ping_count(),
        load_average,
        idle_seconds: opts.idle_seconds(),
        devices,
        profile,
        notes,
    })
}

#[allow(clippy::too_many_arguments)]
fn measure_device(
    device: Device,
    topo: &Topo,
    opts: &Options,
    dir: &Path,
    generator_cpu: usize,
    engine_cpu: usize,
    profile: &mut Option<Profile>,
    notes: &mut Vec<String>,
) -> Result<DeviceResult, String> {
    let ends = topo.ends()?;
    if let Some(pid) = ends.engine_pid {
        pin_engine(pid, engine_cpu)?;
    }
    let latency = ping(ends.a, ends.b_ip, opts.ping_count())?;
    if latency.received == 0 {
        return Err(format!(
            "pod a cannot reach pod b: 0 of {} pings answered",
            latency.transmitted
        ));
    }
    if let Err(e) = install_sink_drop(ends.b, &ends.b_if, dir) {
        notes.push(format!(
            "{}: pod b's kernel processes every datagram (no nft netdev drop: {e}).",
            device.name()
        ));
    }
    let mut throughput = Vec::new();
    for &size in &opts.sizes {
        let want_profile = !opts.quick
            && profile.is_none()
            && device == Device::SluiceAfPacketV2
            && size == MIN_FRAME;
        let (t, p) = measure_throughput(
            device,
            &ends,
            size,
            opts.seconds,
            dir,
            generator_cpu,
            engine_cpu,
            want_profile,
        )?;
        throughput.push(t);
        match p {
            Some(Ok(p)) => *profile = Some(p),
            Some(Err(e)) => notes.push(format!("No perf profile: {e}")),
            None => {}
        }
    }
    let pktgen = if opts.pktgen {
        Some(measure_pktgen(device, &ends, opts, dir, generator_cpu)?)
    } else {
        None
    };
    let engine_rss_kib = match ends.engine_pid {
        Some(pid) => Some(crate::rate::rss_kib(pid)?),
        None => None,
    };
    let idle_cpu_percent = match ends.engine_pid {
        Some(pid) => {
            std::thread::sleep(SETTLE);
            Some(idle_cpu(pid, opts.idle_seconds())?)
        }
        None => None,
    };
    Ok(DeviceResult {
        device,
        latency,
        throughput,
        idle_cpu_percent,
        pktgen,
        engine_rss_kib,
    })
}

/// The path a -> b for sluice's own generator.
fn pktgen_path<'t>(ends: &Ends<'t>) -> crate::rate::PathEnds<'t> {
    crate::rate::PathEnds {
        tx: ends.a,
        tx_if: ends.a_if.clone(),
        src_mac: ends.a_mac,
        dst_mac: ends.gateway_mac,
        src_ip: POD_A_IP,
        dst_ip: ends.b_ip,
        dst_port: DST_PORT,
        rx: ends.b,
        rx_if: ends.b_if.clone(),
    }
}

/// The no-drop search per frame size and the latency at a fixed rate, with sluice's generator
/// pinned where trafgen ran.
fn measure_pktgen(
    device: Device,
    ends: &Ends<'_>,
    opts: &Options,
    dir: &Path,
    generator_cpu: usize,
) -> Result<PktgenResult, String> {
    use crate::pktgen::{FlowPattern, Proto};
    use crate::rate::{latency, no_drop_rate, TrialSpec, LOSS_LIMIT};
    let path = pktgen_path(ends);
    let spec = |size: usize, ms: u64| TrialSpec {
        frame_size: size - FCS,
        rate_pps: None,
        duration: Duration::from_millis(ms),
        flows: FlowPattern::One,
        proto: Proto::Udp,
        cpu: Some(generator_cpu),
    };
    let mut searches = Vec::new();
    for &size in &opts.sizes {
        let s = no_drop_rate(
            &path,
            &spec(size, opts.pick(TRIAL_MS)),
            LOSS_LIMIT,
            opts.pick(SEARCH_STEPS),
        )
        .map_err(|e| format!("pktgen no-drop search, {size}-byte frames: {e}"))?;
        searches.push((size, s));
    }
    let latency_frame_size = opts.sizes.iter().copied().min().unwrap_or(MIN_FRAME);
    let latency = latency(
        &path,
        &TrialSpec {
            rate_pps: Some(LATENCY_PPS),
            ..spec(latency_frame_size, opts.pick(LATENCY_MS))
        },
    )
    .map_err(|e| format!("pktgen latency: {e}"))?;
    let seconds = opts.pick(CROSSCHECK_SECONDS);
    let size = latency_frame_size;
    // trafgen at the fixed rate, counted over a window after its warm-up, as the full-speed
    // rows are.
    let conf = dir.join(format!("{}-{size}-rate.trafgen", device.name()));
    let text = trafgen_config(
        ends.gateway_mac,
        ends.a_mac,
        POD_A_IP,
        ends.b_ip,
        size - FCS,
    );
    fs::write(&conf, text).map_err(|e| format!("writing {}: {e}", conf.display()))?;
    let log = dir.join(format!("{}-{size}-rate.log", device.name()));
    let mut gen = Generator::start(
        ends.a,
        &ends.a_if,
        &conf,
        generator_cpu,
        &log,
        Some(CROSSCHECK_PPS),
    )?;
    std::thread::sleep(WARMUP);
    gen.check_running()?;
    let s0 = sample(ends)?;
    std::thread::sleep(Duration::from_secs(seconds));
    let s1 = sample(ends)?;
    gen.check_running()?;
    gen.stop();
    let secs = s1.at.duration_since(s0.at).as_secs_f64().max(1e-9);
    let t_offered = (s1.a_tx + s1.a_tx_dropped).saturating_sub(s0.a_tx + s0.a_tx_dropped);
    let t_delivered = s1.b_rx.saturating_sub(s0.b_rx);
    std::thread::sleep(crate::rate::SETTLE);
    let p = crate::rate::trial(
        &path,
        &TrialSpec {
            rate_pps: Some(CROSSCHECK_PPS),
            ..spec(size, seconds * 1000)
        },
    )
    .map_err(|e| format!("pktgen at {CROSSCHECK_PPS} pps: {e}"))?;
    Ok(PktgenResult {
        searches,
        latency,
        latency_frame_size,
        crosscheck: Crosscheck {
            frame_size: size,
            rate_pps: CROSSCHECK_PPS,
            seconds: secs,
            trafgen_offered_pps: t_offered as f64 / secs,
            trafgen_delivered_pps: t_delivered as f64 / secs,
            pktgen_offered_pps: p.offered_pps,
            pktgen_delivered_pps: p.delivered_pps,
        },
    })
}

// ---------------------------------------------------------------------------------------
// Topologies.
// ---------------------------------------------------------------------------------------

/// The kernel baseline: the same namespaces and links, the node kernel forwarding.
struct KernelTopo {
    // Pods first: dropping a pod namespace deletes its veth pair.
    a: Netns,
    b: Netns,
    node: Netns,
}

const KERNEL_HOST_A: &str = "veth-a";
const KERNEL_HOST_B: &str = "veth-b";

impl KernelTopo {
    fn build() -> io::Result<KernelTopo> {
        let node = Netns::new("fwd-kernel")?;
        for key in ["net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding"] {
            node.sysctl(key, "1")?;
        }
        // As on a sluice node: no IPv6 on the node's links.
        if Path::new("/proc/sys/net/ipv6").exists() {
            node.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            node.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        let a = Netns::new("fwd-a")?;
        let b = Netns::new("fwd-b")?;
        let topo = KernelTopo { a, b, node };
        for (pod, host, ip) in [
            (&topo.a, KERNEL_HOST_A, POD_A_IP),
            (&topo.b, KERNEL_HOST_B, POD_B_IP),
        ] {
            veth(pod, "eth0", &topo.node, host)?;
            configure_pod_if(pod, "eth0", ip, GATEWAY)?;
            topo.node
                .ip(&["addr", "add", &format!("{GATEWAY}/32"), "dev", host])?;
            topo.node
                .ip(&["route", "add", &format!("{ip}/32"), "dev", host])?;
        }
        let fwd = topo.node.read_sysctl("net.ipv4.ip_forward")?;
        if fwd != "1" {
            return Err(io::Error::other(format!(
                "netns {}: ip_forward reads {fwd:?} after setting 1",
                topo.node.name()
            )));
        }
        Ok(topo)
    }
}

enum Topo {
    Sluice(Cluster),
    Kernel(KernelTopo),
}

/// Where traffic enters and leaves one topology.
struct Ends<'t> {
    a: &'t Netns,
    a_if: String,
    a_mac: [u8; 6],
    b: &'t Netns,
    b_if: String,
    b_ip: Ipv4Addr,
    /// The destination MAC of a's frames: the gateway on a's link.
    gateway_mac: [u8; 6],
    engine: Option<&'t NodeHandle>,
    engine_pid: Option<u32>,
}

const NODE: &str = "node-1";
const POD_A: &str = "fwd-a";
const POD_B: &str = "fwd-b";

impl Topo {
    fn build(device: Device, sluice_bin: &Path) -> io::Result<Topo> {
        let (a, b) = (
            PodDef::afpacket(POD_A, POD_A_IP),
            PodDef::afpacket(POD_B, POD_B_IP),
        );
        let pods = match device {
            Device::SluiceAfPacketV2 => vec![a, b],
            Device::SluiceAfPacketV3 => vec![a.with_ring(RingDef::V3), b.with_ring(RingDef::V3)],
            Device::SluiceTap => vec![PodDef::tap(POD_A, POD_A_IP), PodDef::tap(POD_B, POD_B_IP)],
            Device::Kernel => return KernelTopo::build().map(Topo::Kernel),
        };
        Cluster::build(sluice_bin, vec![NodeDef::new(NODE, POD_CIDR, pods)]).map(Topo::Sluice)
    }

    fn ends(&self) -> Result<Ends<'_>, String> {
        match self {
            Topo::Sluice(cluster) => {
                let node = cluster.node(NODE);
                let (a, b) = (cluster.pod(POD_A), cluster.pod(POD_B));
                // The engine's port towards a: the veth host end, or the TAP itself.
                let port = a.host_ifname().unwrap_or(a.ifname());
                let status = node
                    .query("status")
                    .map_err(|e| format!("admin status: {e}"))?;
                let gateway_mac = port_mac(&status, port)?;
                let engine_pid = node
                    .engine_pid()
                    .ok_or_else(|| "the engine is not running".to_string())?;
                Ok(Ends {
                    a: a.netns(),
                    a_if: a.ifname().to_string(),
                    a_mac: a.mac().map_err(|e| format!("MAC of pod a: {e}"))?,
                    b: b.netns(),
                    b_if: b.ifname().to_string(),
                    b_ip: b.ip(),
                    gateway_mac,
                    engine: Some(node),
                    engine_pid: Some(engine_pid),
                })
            }
            Topo::Kernel(k) => Ok(Ends {
                a: &k.a,
                a_if: "eth0".into(),
                a_mac: k.a.mac("eth0").map_err(|e| format!("MAC of pod a: {e}"))?,
                b: &k.b,
                b_if: "eth0".into(),
                b_ip: POD_B_IP,
                gateway_mac: k
                    .node
                    .mac(KERNEL_HOST_A)
                    .map_err(|e| format!("MAC of {KERNEL_HOST_A}: {e}"))?,
                engine: None,
                engine_pid: None,
            }),
        }
    }

    /// The end of the engine's log, to append to an error.
    fn log_tail(&self) -> String {
        match self {
            Topo::Sluice(c) => {
                let log = c.node(NODE).engine_log();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                format!("\n---- last lines of the engine log ----\n{tail}")
            }
            Topo::Kernel(_) => String::new(),
        }
    }
}

/// The MAC of port `name` in an admin `status` answer (`ports: [{name, kind, mac}]`).
fn port_mac(status: &Value, name: &str) -> Result<[u8; 6], String> {
    let ports = status
        .get("ports")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("admin status has no ports: {status}"))?;
    let mac = ports
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get("mac"))
        .and_then(Value::as_str)
        .ok_or_else(|| format!("admin status has no MAC for port {name}: {status}"))?;
    parse_mac(mac)
}

/// Pins every thread of the engine to `cpu`, after checking the pid is a sluice engine.
pub(crate) fn pin_engine(pid: u32, cpu: usize) -> Result<(), String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
        .map_err(|e| format!("reading /proc/{pid}/comm: {e}"))?;
    if comm.trim() != "sluice" {
        return Err(format!(
            "pid {pid} is {:?}, not the sluice engine",
            comm.trim()
        ));
    }
    run_tool("taskset", &["-acp", &cpu.to_string(), &pid.to_string()]).map(drop)
}

// ---------------------------------------------------------------------------------------
// Measurements.
// ---------------------------------------------------------------------------------------

/// `ping -n -q -i 0.01 -c count` from `from` to `dst`, parsed.
fn ping(from: &Netns, dst: Ipv4Addr, count: u32) -> Result<Latency, String> {
    let (count, dst) = (count.to_string(), dst.to_string());
    let out = from
        .exec(&[
            "ping", "-n", "-q", "-i", "0.01", "-W", "1", "-c", &count, &dst,
        ])
        .map_err(|e| format!("ping: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_ping(&text).ok_or_else(|| format!("ping to {dst}: no summary in its output:\n{text}"))
}

/// Parses ping's summary: "N packets transmitted, M received, ..." and
/// "rtt min/avg/max/mdev = a/b/c/d ms". `None` unless both lines are there.
pub fn parse_ping(text: &str) -> Option<Latency> {
    let mut counts = None;
    let mut rtt = None;
    for line in text.lines() {
        if line.contains("packets transmitted") {
            let mut nums = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse::<u32>().ok());
            counts = Some((nums.next()?, nums.next()?));
        }
        let line = line.trim();
        if let Some(rest) = line
            .strip_prefix("rtt min/avg/max/mdev = ")
            .or_else(|| line.strip_prefix("round-trip min/avg/max/stddev = "))
        {
            // "a/b/c/d ms", possibly followed by ", pipe N" (several pings were in flight).
            let v: Option<Vec<f64>> = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .split('/')
                .map(|x| x.parse().ok())
                .collect();
            if let Some([min, avg, max, mdev]) = v.as_deref() {
                rtt = Some((*min, *avg, *max, *mdev));
            }
        }
    }
    let (transmitted, received) = counts?;
    let (min_ms, avg_ms, max_ms, mdev_ms) = rtt?;
    Some(Latency {
        transmitted,
        received,
        min_ms,
        avg_ms,
        max_ms,
        mdev_ms,
    })
}

/// The trafgen packet configuration of one UDP frame of `frame_len` bytes (no FCS, 42..=1514)
/// from `src` to `dst`: Ethernet, IPv4 (DF, TTL 64, checksum by `csumip`), UDP 1024 -> 9
/// (checksum by `csumudp`), zero payload.
pub fn trafgen_config(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    frame_len: usize,
) -> String {
    let ip_len = frame_len.saturating_sub(14);
    let udp_len = ip_len.saturating_sub(20);
    let payload = udp_len.saturating_sub(8);
    let bytes = |b: &[u8]| {
        b.iter()
            .map(|x| format!("0x{x:02x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut c = String::new();
    let _ = writeln!(
        c,
        "/* sluice forwarding benchmark: {frame_len}-byte UDP frame */"
    );
    let _ = writeln!(c, "{{");
    let _ = writeln!(
        c,
        "  /* Ethernet: to {}, from {} */",
        format_mac(&dst_mac),
        format_mac(&src_mac)
    );
    let _ = writeln!(c, "  {},", bytes(&dst_mac));
    let _ = writeln!(c, "  {},", bytes(&src_mac));
    let _ = writeln!(c, "  c16(0x0800),");
    let _ = writeln!(c, "  /* IPv4 {src} -> {dst}, DF, TTL 64, UDP */");
    let _ = writeln!(
        c,
        "  0x45, 0x00, c16({ip_len}), c16(0), c16(0x4000), 64, 17, csumip(14, 33),"
    );
    let _ = writeln!(c, "  {},", bytes(&src.octets()));
    let _ = writeln!(c, "  {},", bytes(&dst.octets()));
    let _ = writeln!(c, "  /* UDP {SRC_PORT} -> {DST_PORT} */");
    let _ = writeln!(
        c,
        "  c16({SRC_PORT}), c16({DST_PORT}), c16({udp_len}), csumudp(14, 34),"
    );
    let _ = writeln!(c, "  fill(0x00, {payload})");
    let _ = writeln!(c, "}}");
    c
}

/// trafgen in its own process group, stopped (the whole group) on drop.
struct Generator {
    child: Option<Child>,
    log: PathBuf,
}

impl Generator {
    fn start(
        ns: &Netns,
        ifname: &str,
        conf: &Path,
        cpu: usize,
        log: &Path,
        rate_pps: Option<u64>,
    ) -> Result<Generator, String> {
        let out = File::create(log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            ns.name(),
            "taskset",
            "-c",
            &cpu.to_string(),
        ])
        .args(["trafgen", "--dev", ifname, "--conf"])
        .arg(conf)
        // One worker; leave the machine's socket memory and IRQ affinity alone.
        .args(["--cpus", "1", "--no-sock-mem", "--notouch-irq"])
        .args(rate_pps.map(|r| format!("--rate={r}pps")))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
        let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
        // SAFETY: the closure runs in the forked child before exec and calls only prctl,
        // getppid and _exit, which are async-signal-safe; it allocates nothing, takes no lock.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("starting trafgen: {e}"))?;
        Ok(Generator {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Fails (with trafgen's output) if trafgen already exited.
    fn check_running(&mut self) -> Result<(), String> {
        let Some(child) = self.child.as_mut() else {
            return Err("trafgen was stopped".into());
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "trafgen exited early ({status}): {}",
                fs::read_to_string(&self.log).unwrap_or_default().trim()
            )),
            Err(e) => Err(format!("waiting for trafgen: {e}")),
        }
    }

    /// SIGINT to the group, up to 3 s to exit, then SIGKILL; reaps the leader.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Ok(pgid) = libc::pid_t::try_from(child.id()) else {
            let _ = child.kill();
            let _ = child.wait();
            return;
        };
        for sig in [libc::SIGINT, libc::SIGKILL] {
            // The leader is our unreaped child, so the group id is still ours.
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            // SAFETY: kill has no memory effects; -pgid names the group trafgen leads.
            unsafe { libc::kill(-pgid, sig) };
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.wait();
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counters and clocks at one instant.
struct Sample {
    at: Instant,
    a_tx: u64,
    a_tx_dropped: u64,
    b_rx: u64,
    engine_ticks: Option<u64>,
    engine_drops: Option<u64>,
    cpus: Vec<CpuTimes>,
}

fn sample(ends: &Ends<'_>) -> Result<Sample, String> {
    let a = crate::rate::if_counters(ends.a, &ends.a_if, &["tx_packets", "tx_dropped"])?;
    let b = crate::rate::if_counters(ends.b, &ends.b_if, &["rx_packets"])?;
    let at = Instant::now();
    let engine_ticks = match ends.engine_pid {
        Some(pid) => Some(engine_ticks(pid)?),
        None => None,
    };
    let engine_drops = match ends.engine {
        Some(node) => Some(total_drops(
            &node
                .counters()
                .map_err(|e| format!("engine counters: {e}"))?,
        )),
        None => None,
    };
    let stat = fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    Ok(Sample {
        at,
        a_tx: a[0],
        a_tx_dropped: a[1],
        b_rx: b[0],
        engine_ticks,
        engine_drops,
        cpus: parse_proc_stat(&stat),
    })
}

/// Sum of every drop reason in a `counters` answer.
fn total_drops(counters: &Value) -> u64 {
    counters
        .get("drops")
        .and_then(Value::as_object)
        .map(|d| d.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0)
}

pub(crate) fn engine_ticks(pid: u32) -> Result<u64, String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    parse_task_ticks(&stat).ok_or_else(|| format!("/proc/{pid}/stat: cannot parse {stat:?}"))
}

/// utime + stime (clock ticks) of a `/proc/<pid>/stat` line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_task_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// One CPU's cumulative times from /proc/stat, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub cpu: usize,
    pub total: u64,
    pub idle: u64,
    pub softirq: u64,
}

/// The `cpuN` lines of /proc/stat (user nice system idle iowait irq softirq steal ...); idle
/// counts idle + iowait; guest time is already inside user.
pub fn parse_proc_stat(text: &str) -> Vec<CpuTimes> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some(name) = it.next() else { continue };
        let Some(Ok(cpu)) = name.strip_prefix("cpu").map(str::parse::<usize>) else {
            continue;
        };
        let v: Vec<u64> = it.take(8).filter_map(|x| x.parse().ok()).collect();
        if v.len() < 7 {
            continue;
        }
        out.push(CpuTimes {
            cpu,
            total: v.iter().sum(),
            idle: v[3] + v[4],
            softirq: v[6],
        });
    }
    out
}

fn cpu_use(before: &[CpuTimes], after: &[CpuTimes], cpu: usize) -> Option<CpuUse> {
    let b = before.iter().find(|c| c.cpu == cpu)?;
    let a = after.iter().find(|c| c.cpu == cpu)?;
    let total = a.total.saturating_sub(b.total);
    if total == 0 {
        return None;
    }
    let pct = |x: u64| x as f64 * 100.0 / total as f64;
    Some(CpuUse {
        cpu,
        busy_percent: pct(total.saturating_sub(a.idle.saturating_sub(b.idle))),
        softirq_percent: pct(a.softirq.saturating_sub(b.softirq)),
    })
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn ticks_percent(ticks: u64, elapsed: Duration) -> f64 {
    ticks as f64 / clock_ticks_per_second() / elapsed.as_secs_f64().max(1e-9) * 100.0
}

#[allow(clippy::too_many_arguments)]
fn measure_throughput(
    device: Device,
    ends: &Ends<'_>,
    size: usize,
    seconds: u64,
    dir: &Path,
    generator_cpu: usize,
    engine_cpu: usize,
    want_profile: bool,
) -> Result<(Throughput, Option<Result<Profile, String>>), String> {
    let wire_bytes = size - FCS;
    let conf = dir.join(format!("{}-{size}.trafgen", device.name()));
    let text = trafgen_config(
        ends.gateway_mac,
        ends.a_mac,
        POD_A_IP,
        ends.b_ip,
        wire_bytes,
    );
    fs::write(&conf, text).map_err(|e| format!("writing {}: {e}", conf.display()))?;
    let log = dir.join(format!("{}-{size}.log", device.name()));
    let mut gen = Generator::start(ends.a, &ends.a_if, &conf, generator_cpu, &log, None)?;
    std::thread::sleep(WARMUP);
    gen.check_running()?;
    let s0 = sample(ends)?;
    std::thread::sleep(Duration::from_secs(seconds));
    let s1 = sample(ends)?;
    gen.check_running()?;
    let profile = want_profile.then(|| record_profile(dir, device, size));
    gen.stop();

    let elapsed = s1.at.duration_since(s0.at);
    let secs = elapsed.as_secs_f64().max(1e-9);
    let sent = s1.a_tx.saturating_sub(s0.a_tx);
    let offered = sent + s1.a_tx_dropped.saturating_sub(s0.a_tx_dropped);
    let delivered = s1.b_rx.saturating_sub(s0.b_rx);
    let loss = if offered == 0 {
        0.0
    } else {
        (1.0 - delivered as f64 / offered as f64).clamp(0.0, 1.0)
    };
    let mut cpus = Vec::new();
    for cpu in [generator_cpu, engine_cpu] {
        if cpus.iter().any(|c: &CpuUse| c.cpu == cpu) {
            continue;
        }
        if let Some(u) = cpu_use(&s0.cpus, &s1.cpus, cpu) {
            cpus.push(u);
        }
    }
    let t = Throughput {
        frame_size: size,
        wire_bytes,
        seconds: secs,
        offered_pps: offered as f64 / secs,
        sent_pps: sent as f64 / secs,
        delivered_pps: delivered as f64 / secs,
        loss,
        engine_cpu_percent: match (s0.engine_ticks, s1.engine_ticks) {
            (Some(a), Some(b)) => Some(ticks_percent(b.saturating_sub(a), elapsed)),
            _ => None,
        },
        engine_drops: match (s0.engine_drops, s1.engine_drops) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        },
        other_load_percent: None,
        cpus,
    };
    let t = Throughput {
        other_load_percent: (engine_cpu != generator_cpu)
            .then(|| t.cpus.iter().find(|c| c.cpu == engine_cpu))
            .flatten()
            .map(|c| (c.busy_percent - t.engine_cpu_percent.unwrap_or(0.0)).max(0.0)),
        ..t
    };
    Ok((t, profile))
}

/// The engine's CPU over `seconds` of no traffic, in percent of one core.
fn idle_cpu(pid: u32, seconds: u64) -> Result<f64, String> {
    let t0 = Instant::now();
    let a = engine_ticks(pid)?;
    std::thread::sleep(Duration::from_secs(seconds));
    let b = engine_ticks(pid)?;
    Ok(ticks_percent(b.saturating_sub(a), t0.elapsed()))
}

/// Name of the nft table (family netdev) in pod b that drops the benchmark's datagrams.
const SINK_TABLE: &str = "sluice_bench_sink";

/// Makes pod b drop the benchmark's UDP datagrams at its interface's netdev ingress hook:
/// after the interface counted them (the sink's `rx_packets`), before IP, so the sink costs
/// the same little for every device instead of a UDP lookup and an ICMP error per datagram.
/// Ping (ICMP) still passes.
fn install_sink_drop(b: &Netns, ifname: &str, dir: &Path) -> Result<(), String> {
    let rules = format!(
        "table netdev {SINK_TABLE} {{\n  chain in {{\n    type filter hook ingress device \
         \"{ifname}\" priority 0; policy accept;\n    udp dport {DST_PORT} drop\n  }}\n}}\n"
    );
    let file = dir.join(format!("{}.nft", b.name()));
    fs::write(&file, rules).map_err(|e| format!("writing {}: {e}", file.display()))?;
    let path = file
        .to_str()
        .ok_or_else(|| format!("non-UTF-8 path {}", file.display()))?;
    b.exec_ok(&["nft", "-f", path])
        .map(drop)
        .map_err(|e| e.to_string())
}

/// `perf record -a -g -- sleep 3` into `dir`, then the top symbols of `perf report`.
fn record_profile(dir: &Path, device: Device, size: usize) -> Result<Profile, String> {
    let data = dir.join("perf.data");
    let data_s = data
        .to_str()
        .ok_or_else(|| format!("non-UTF-8 path {}", data.display()))?;
    let secs = PERF_SECONDS.to_string();
    run_tool(
        "perf",
        &[
            "record", "-a", "-g", "-q", "-o", data_s, "--", "sleep", &secs,
        ],
    )?;
    let report = run_tool(
        "perf",
        &[
            "report",
            "-i",
            data_s,
            "--stdio",
            "--sort",
            "comm,dso,sym",
            "--no-children",
            "-g",
            "none",
            "-t",
            "|",
        ],
    )?;
    let inclusive = run_tool(
        "perf",
        &[
            "report",
            "-i",
            data_s,
            "--stdio",
            "--comm",
            "sluice",
            "--sort",
            "sym",
            "--children",
            "-g",
            "none",
            "-t",
            "|",
        ],
    )?;
    let all = parse_perf_report(&report);
    if all.is_empty() {
        return Err("perf report listed no samples".into());
    }
    let by_command = command_shares(&all);
    let idle_percent = by_command
        .iter()
        .find(|c| c.comm == "swapper")
        .map_or(0.0, |c| c.percent);
    Ok(Profile {
        device,
        frame_size: size,
        seconds: PERF_SECONDS,
        idle_percent,
        engine_inclusive: parse_perf_children(&inclusive)
            .into_iter()
            // Unresolved frames (`[k] 0x0045...`: a user-space caller without frame pointers).
            .filter(|f| {
                !f.symbol
                    .split_whitespace()
                    .last()
                    .is_some_and(|w| w.starts_with("0x"))
            })
            .take(ENGINE_INCLUSIVE_TOP)
            .collect(),
        by_command: by_command
            .into_iter()
            .filter(|c| c.comm != "swapper" && c.percent >= 0.1)
            .take(PERF_TOP)
            .collect(),
        top: all
            .into_iter()
            .filter(|s| s.comm != "swapper")
            .take(PERF_TOP)
            .collect(),
    })
}

/// Lines `children%|self%|symbol` of `perf report --children --sort sym -t '|'`.
pub fn parse_perf_children(text: &str) -> Vec<InclusiveSymbol> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split('|').map(str::trim);
            let children_percent = f.next()?.strip_suffix('%')?.trim().parse().ok()?;
            let self_percent = f.next()?.strip_suffix('%')?.trim().parse().ok()?;
            let rest: Vec<&str> = f.collect();
            if rest.is_empty() {
                return None;
            }
            Some(InclusiveSymbol {
                symbol: rest.join("|"),
                children_percent,
                self_percent,
            })
        })
        .collect()
}

/// Samples per command (all symbols summed), busiest first.
pub fn command_shares(symbols: &[PerfSymbol]) -> Vec<CommandShare> {
    let mut out: Vec<CommandShare> = Vec::new();
    for s in symbols {
        let i = match out.iter().position(|c| c.comm == s.comm) {
            Some(i) => i,
            None => {
                out.push(CommandShare {
                    comm: s.comm.clone(),
                    percent: 0.0,
                    kernel_percent: 0.0,
                });
                out.len() - 1
            }
        };
        out[i].percent += s.percent;
        if s.symbol.starts_with("[k]") {
            out[i].kernel_percent += s.percent;
        }
    }
    out.sort_by(|a, b| b.percent.total_cmp(&a.percent));
    out
}

/// Lines `percent%|comm|dso|symbol` of `perf report -t '|'`, in perf's (descending) order.
pub fn parse_perf_report(text: &str) -> Vec<PerfSymbol> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split('|').map(str::trim);
            let percent = f.next()?.strip_suffix('%')?.trim().parse().ok()?;
            let comm = f.next()?.to_string();
            let dso = f.next()?.to_string();
            let rest: Vec<&str> = f.collect();
            if rest.is_empty() {
                return None;
            }
            Some(PerfSymbol {
                percent,
                comm,
                dso,
                symbol: rest.join("|"),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The machine, the date, scratch files.
// ---------------------------------------------------------------------------------------

/// Runs a tool; its stdout, or an error with the command, status and stderr.
fn run_tool(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program} {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One line: CPUs, model, kernel (for a report's header).
pub fn machine_summary() -> String {
    match machine() {
        Ok(m) => format!(
            "{} CPUs, {}, Linux {}, {}",
            m.cpus, m.cpu_model, m.kernel, m.trafgen
        ),
        Err(e) => format!("unknown ({e})"),
    }
}

fn machine() -> Result<Machine, String> {
    // SAFETY: sysconf has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let cpus = usize::try_from(online).unwrap_or(1).max(1);
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let out = Command::new("trafgen")
        .arg("-v")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("trafgen not found ({e}): install netsniff-ng"))?;
    let trafgen = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("trafgen (unknown version)")
        .trim()
        .to_string();
    Ok(Machine {
        cpus,
        cpu_model,
        kernel,
        trafgen,
    })
}

pub(crate) fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs)
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time (days to civil date: H. Hinnant's algorithm).
pub fn format_utc(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// A temp dir for trafgen configurations, logs and perf data, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<ScratchDir, String> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("sluice-bench-fwd-{}-{n}", std::process::id()));
        if path.exists() {
            fs::remove_dir_all(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
        }
        fs::create_dir(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("forwarding: removing {}: {e}", self.0.display());
        }
    }
}

// ---------------------------------------------------------------------------------------
// The report.
// ---------------------------------------------------------------------------------------

fn standing_notes(
    devices: &[DeviceResult],
    generator_cpu: usize,
    engine_cpu: usize,
    opts: &Options,
) -> Vec<String> {
    let mut notes = vec![
        format!(
            "Frame sizes count the Ethernet FCS (RFC 2544); veth and TAP carry none, so a \
             {MIN_FRAME}-byte frame is {} bytes written (Ethernet minimum). Gbit/s counts the \
             written bytes.",
            MIN_FRAME - FCS
        ),
        format!(
            "trafgen (one worker) runs on CPU {generator_cpu}, the engine (all threads) on CPU \
             {engine_cpu}. On veth the receiver's softirq runs on the sender's core: frames \
             from pod a are received by the node (and copied into the engine's AF_PACKET ring) \
             on CPU {generator_cpu}, inside trafgen's send path; what the engine sends is \
             received by pod b on CPU {engine_cpu}, charged to the engine's system time. The \
             kernel device does all of its forwarding on CPU {generator_cpu}, in trafgen's \
             softirqs, and leaves CPU {engine_cpu} idle: compare packets/s per busy core too."
        ),
        "Reading the columns: offered - sent = dropped at pod a's interface (for TAP: its \
         queue was full because the engine did not read fast enough); sent - delivered = lost \
         after it (for sluice mostly the engine's RX ring overflowing: `engine drops`, which \
         counts every drop reason). Pod b drops the datagrams at its netdev ingress hook, \
         after counting them, so the sink costs little and the same for every device."
            .to_string(),
        "Per-CPU busy and softirq shares come from /proc/stat and include every process on \
         the machine; the engine's CPU is its utime + stime from /proc/<pid>/stat (tick \
         accounting), 100% = one core."
            .to_string(),
    ];
    let avg = |d: Device| {
        devices
            .iter()
            .find(|r| r.device == d)
            .map(|r| r.latency.avg_ms)
    };
    if let (Some(v2), Some(v3)) = (avg(Device::SluiceAfPacketV2), avg(Device::SluiceAfPacketV3)) {
        let per_hop = (v3 - v2) / 2.0;
        let verdict = if per_hop <= 1.0 {
            "within the expected ~1 ms per hop of the block retire timer"
        } else {
            "more than the expected ~1 ms per hop of the block retire timer"
        };
        notes.push(format!(
            "Latency: with pings every 10 ms the V3 ring's blocks are retired by their timer \
             (1 ms), not by filling up. A round trip crosses the engine twice (request and \
             reply), so V3 adds {:.3} ms per round trip over V2, {per_hop:.3} ms per hop: \
             {verdict}.",
            v3 - v2
        ));
    }
    let disturbed: Vec<String> = devices
        .iter()
        .flat_map(|d| {
            d.throughput
                .iter()
                .filter(|t| t.disturbed())
                .map(move |t| format!("{} {} B", d.device.name(), t.frame_size))
        })
        .collect();
    if !disturbed.is_empty() {
        notes.push(format!(
            "† Disturbed: during {} more than {DISTURBED_PERCENT:.0}% of CPU {engine_cpu} went to \
             something other than the engine (for the kernel device: to anything, as it does not \
             use that CPU). Other work on the machine competed with the measurement; rerun on a \
             quiet machine before comparing those rows.",
            disturbed.join(", ")
        ));
    }
    if opts.quick {
        notes.push(
            "Quick mode: fewer pings, a shorter idle window, no perf profile; numbers are \
             indicative only."
                .to_string(),
        );
    }
    notes
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".to_string(), |x| format!("{x:.digits$}"))
}

impl Report {
    /// The report as Markdown: machine, date, tables, notes.
    pub fn to_markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(m, "## Pod-to-pod forwarding on one node\n");
        let _ = writeln!(
            m,
            "- Machine: {} CPUs, {}, Linux {}\n- Date: {} (load average at start: {})\n- Generator: {}, CPU {}; engine on CPU {}\n\
             - Window: {} s per measurement after a {} s warm-up; {} pings at 10 ms; idle CPU over {} s{}",
            self.machine.cpus,
            self.machine.cpu_model,
            self.machine.kernel,
            self.date,
            self.load_average,
            self.machine.trafgen,
            self.generator_cpu,
            self.engine_cpu,
            self.options.seconds,
            WARMUP.as_secs(),
            self.ping_count,
            self.idle_seconds,
            if self.options.quick { " (quick mode)" } else { "" },
        );
        let _ = writeln!(m, "\nDevices under test:\n");
        for d in &self.devices {
            let _ = writeln!(m, "- `{}`: {}", d.device.name(), d.device.describe());
        }

        let _ = writeln!(m, "\n### Packets/s, pod a -> pod b (UDP, one flow)\n");
        let cpu_cols: Vec<usize> = {
            let mut v = vec![self.generator_cpu];
            if self.engine_cpu != self.generator_cpu {
                v.push(self.engine_cpu);
            }
            v
        };
        let mut header = "| device | frame (written) | offered kpps | sent kpps | delivered kpps | Gbit/s | loss | engine CPU | engine drops |".to_string();
        let mut rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|".to_string();
        for c in &cpu_cols {
            let _ = write!(header, " CPU {c} busy (softirq) |");
            rule.push_str("---:|");
        }
        let _ = writeln!(m, "{header}\n{rule}");
        for d in &self.devices {
            for t in &d.throughput {
                let _ = write!(
                    m,
                    "| {}{} | {} B ({} B) | {:.1} | {:.1} | {:.1} | {:.3} | {:.2}% | {} | {} |",
                    d.device.name(),
                    if t.disturbed() { " †" } else { "" },
                    t.frame_size,
                    t.wire_bytes,
                    t.offered_pps / 1e3,
                    t.sent_pps / 1e3,
                    t.delivered_pps / 1e3,
                    t.delivered_gbit(),
                    t.loss * 100.0,
                    t.engine_cpu_percent
                        .map_or_else(|| "—".to_string(), |c| format!("{c:.0}%")),
                    t.engine_drops
                        .map_or_else(|| "—".to_string(), |c| c.to_string()),
                );
                for c in &cpu_cols {
                    match t.cpus.iter().find(|u| u.cpu == *c) {
                        Some(u) => {
                            let _ =
                                write!(m, " {:.0}% ({:.0}%) |", u.busy_percent, u.softirq_percent);
                        }
                        None => m.push_str(" — |"),
                    }
                }
                m.push('\n');
            }
        }

        self.pktgen_markdown(&mut m);

        let _ = writeln!(
            m,
            "\n### Latency, `ping -i 0.01 -c {}` pod a -> pod b (ms)\n",
            self.ping_count
        );
        let _ = writeln!(m, "| device | min | avg | max | mdev | received |");
        let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|");
        for d in &self.devices {
            let l = &d.latency;
            let _ = writeln!(
                m,
                "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {}/{} |",
                d.device.name(),
                l.min_ms,
                l.avg_ms,
                l.max_ms,
                l.mdev_ms,
                l.received,
                l.transmitted
            );
        }

        let _ = writeln!(
            m,
            "\n### Idle engine CPU (ports attached, no traffic, {} s; target < 1%)\n",
            self.idle_seconds
        );
        let tick_ms = 1000.0 / clock_ticks_per_second();
        let _ = writeln!(
            m,
            "utime + stime after the traffic stopped; resolution one clock tick ({tick_ms:.0} ms), \
             {:.2}% of the window.\n",
            tick_ms / 10.0 / self.idle_seconds.max(1) as f64
        );
        let _ = writeln!(m, "| device | CPU |");
        let _ = writeln!(m, "|---|---:|");
        for d in &self.devices {
            if let Some(c) = d.idle_cpu_percent {
                let _ = writeln!(m, "| {} | {} % |", d.device.name(), fmt_opt(Some(c), 2));
            }
        }

        if let Some(p) = &self.profile {
            let _ = writeln!(
                m,
                "\n### Where the CPU went: `perf record -a -g -- sleep {}`, {} {}-byte frames\n",
                p.seconds,
                p.device.name(),
                p.frame_size
            );
            let _ = writeln!(
                m,
                "Percent of all samples of all CPUs ({} CPUs = 100%); idle (`swapper`): {:.1}%.\n",
                self.machine.cpus, p.idle_percent,
            );
            let _ = writeln!(m, "| command | % | of which kernel |");
            let _ = writeln!(m, "|---|---:|---:|");
            for c in &p.by_command {
                let _ = writeln!(
                    m,
                    "| {} | {:.1} | {:.1} |",
                    c.comm, c.percent, c.kernel_percent
                );
            }
            if !p.engine_inclusive.is_empty() {
                let _ = writeln!(
                    m,
                    "\nThe engine's core: functions of `sluice` with what they call \
                     (`perf report --comm sluice --children --sort sym`, percent of all samples):\n"
                );
                let _ = writeln!(m, "| with callees % | self % | function |");
                let _ = writeln!(m, "|---:|---:|---|");
                for f in &p.engine_inclusive {
                    let _ = writeln!(
                        m,
                        "| {:.2} | {:.2} | `{}` |",
                        f.children_percent,
                        f.self_percent,
                        f.symbol.replace('|', "\\|")
                    );
                }
            }
            let _ = writeln!(
                m,
                "\nTop {} entries of `perf report --no-children --sort comm,dso,sym`:\n",
                p.top.len()
            );
            let _ = writeln!(m, "| % | command | object | symbol |");
            let _ = writeln!(m, "|---:|---|---|---|");
            for s in &p.top {
                let _ = writeln!(
                    m,
                    "| {:.2} | {} | {} | `{}` |",
                    s.percent,
                    s.comm,
                    s.dso,
                    s.symbol.replace('|', "\\|")
                );
            }
        }

        if !self.notes.is_empty() {
            let _ = writeln!(m, "\n### Notes\n");
            for n in &self.notes {
                let _ = writeln!(m, "- {n}");
            }
        }
        m
    }

    /// trafgen's and pktgen's delivered packets/s at full speed, per device and frame size:
    /// `(device, size, trafgen, pktgen, relative difference)`. Not an agreement test: on each
    /// path one of the generators, or the device, is the bottleneck (see the notes); the
    /// agreement test is [`Crosscheck`], at a fixed rate.
    pub fn full_speed_pairs(&self) -> Vec<(Device, usize, f64, f64, f64)> {
        let mut rows = Vec::new();
        for d in &self.devices {
            let Some(p) = &d.pktgen else { continue };
            for (size, search) in &p.searches {
                if let Some(t) = d.throughput.iter().find(|t| t.frame_size == *size) {
                    let (a, b) = (t.delivered_pps, search.max.delivered_pps);
                    let diff = if a > 0.0 { (b - a) / a } else { f64::NAN };
                    rows.push((d.device, *size, a, b, diff));
                }
            }
        }
        rows
    }

    /// The fixed-rate cross-checks, per device.
    pub fn crosscheck(&self) -> Vec<(Device, &Crosscheck)> {
        self.devices
            .iter()
            .filter_map(|d| d.pktgen.as_ref().map(|p| (d.device, &p.crosscheck)))
            .collect()
    }

    fn pktgen_markdown(&self, m: &mut String) {
        if !self.devices.iter().any(|d| d.pktgen.is_some()) {
            return;
        }
        let _ = writeln!(
            m,
            "\n### Highest rate with loss under 0.1% (sluice's generator, one UDP flow)\n"
        );
        let _ = writeln!(
            m,
            "First as fast as the generator goes (pinned to CPU {}), then a bisection between 0 and \
             what that offered; loss = 1 - (growth of b's rx_packets) / (frames sent).\n",
            self.generator_cpu
        );
        let _ = writeln!(
            m,
            "| device | frame | full speed: offered kpps | delivered kpps | loss | no-drop kpps | trials |"
        );
        let _ = writeln!(m, "|---|---|---:|---:|---:|---:|---:|");
        for d in &self.devices {
            let Some(p) = &d.pktgen else { continue };
            for (size, s) in &p.searches {
                let _ = writeln!(
                    m,
                    "| {} | {size} B | {:.1} | {:.1} | {:.2}% | {} | {} |",
                    d.device.name(),
                    s.max.offered_pps / 1e3,
                    s.max.delivered_pps / 1e3,
                    s.max.loss * 100.0,
                    match &s.best {
                        Some(b) => format!("{:.1}", b.offered_pps / 1e3),
                        None => "none passed".into(),
                    },
                    s.trials.len()
                );
            }
        }
        let checks = self.crosscheck();
        if !checks.is_empty() {
            let _ = writeln!(
                m,
                "\n### Cross-check: trafgen and sluice's generator at the same rate, same path\n"
            );
            let _ = writeln!(
                m,
                "Both send {} kpps of one UDP flow from pod a (trafgen `--rate`, pinned like the \
                 rest); offered = what got into a's interface, delivered = b's `rx_packets`.\n",
                CROSSCHECK_PPS / 1000
            );
            let _ = writeln!(
                m,
                "| device | frame | trafgen offered kpps | trafgen delivered kpps | pktgen offered kpps | pktgen delivered kpps | difference |"
            );
            let _ = writeln!(m, "|---|---|---:|---:|---:|---:|---:|");
            for (dev, c) in &checks {
                let _ = writeln!(
                    m,
                    "| {} | {} B | {:.2} | {:.2} | {:.2} | {:.2} | {:+.2}% |",
                    dev.name(),
                    c.frame_size,
                    c.trafgen_offered_pps / 1e3,
                    c.trafgen_delivered_pps / 1e3,
                    c.pktgen_offered_pps / 1e3,
                    c.pktgen_delivered_pps / 1e3,
                    c.difference() * 100.0
                );
            }
            // Agreement is judged where the path itself loses nothing (the kernel device): there
            // both generators must offer the asked rate and see it delivered. On the sluice rows
            // the difference is the device's own loss, which varies from window to window.
            match checks.iter().find(|(d, _)| *d == Device::Kernel) {
                Some((_, c)) => {
                    let offered = (c.pktgen_offered_pps - c.trafgen_offered_pps)
                        / c.trafgen_offered_pps.max(1.0);
                    let worst = c.difference().abs().max(offered.abs());
                    let _ = writeln!(
                        m,
                        "\nOn the lossless path (`kernel`): offered differs by {:+.2}%, delivered by {:+.2}%; \
                         stated margin {:.0}%: {}. On the sluice rows the difference is the device's \
                         own loss in two different windows (V2's 255-slot ring drops frames whenever \
                         the engine stalls): information, not agreement.",
                        offered * 100.0,
                        c.difference() * 100.0,
                        CROSSCHECK_MARGIN * 100.0,
                        if worst <= CROSSCHECK_MARGIN {
                            "the generators agree"
                        } else {
                            "OUTSIDE the margin"
                        }
                    );
                }
                None => {
                    let _ = writeln!(m, "\n(No kernel row: no agreement verdict.)");
                }
            }
        }
        let pairs = self.full_speed_pairs();
        if !pairs.is_empty() {
            let _ = writeln!(m, "\n### Full speed: trafgen and sluice's generator\n");
            let _ = writeln!(
                m,
                "| device | frame | trafgen delivered kpps | pktgen delivered kpps | difference |"
            );
            let _ = writeln!(m, "|---|---|---:|---:|---:|");
            for (dev, size, a, b, diff) in &pairs {
                let _ = writeln!(
                    m,
                    "| {} | {size} B | {:.1} | {:.1} | {:+.1}% |",
                    dev.name(),
                    a / 1e3,
                    b / 1e3,
                    diff * 100.0
                );
            }
            let _ = writeln!(
                m,
                "\nNot an agreement test: at full speed each generator pushes what its own core \
                 can (the built-in one sends `sendmmsg` bursts, trafgen uses a TX ring; on veth the \
                 device's work runs in the sender's softirq on the same core), and a TAP's queue \
                 takes what it is offered and drops the excess, so the device sees different \
                 loads. The windows are also of different lengths (trafgen {} s, pktgen {} s) on a \
                 shared VM where run-to-run spread is ±15%.",
                self.options.seconds,
                self.options.pick(TRIAL_MS) as f64 / 1000.0
            );
        }
        let _ = writeln!(
            m,
            "\n### One-way latency at {} kpps (sluice's generator and receiver, µs)\n",
            LATENCY_PPS / 1000
        );
        let _ = writeln!(
            m,
            "From the generator's CLOCK_MONOTONIC stamp in the payload to the kernel's receive time \
             at b's interface.\n"
        );
        let _ = writeln!(
            m,
            "| device | frame | p50 | p99 | p99.9 | max | received | lost | reordered |"
        );
        let _ = writeln!(m, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
        for d in &self.devices {
            let Some(p) = &d.pktgen else { continue };
            let l = &p.latency;
            let _ = writeln!(
                m,
                "| {} | {} B | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
                d.device.name(),
                p.latency_frame_size,
                l.p50_us,
                l.p99_us,
                l.p999_us,
                l.max_us,
                l.received,
                l.lost,
                l.reordered
            );
        }
        if self.devices.iter().any(|d| d.engine_rss_kib.is_some()) {
            let _ = writeln!(m, "\n### Engine memory (after the traffic)\n");
            let _ = writeln!(m, "| device | resident MiB | peak resident MiB |");
            let _ = writeln!(m, "|---|---:|---:|");
            for d in &self.devices {
                if let Some((rss, hwm)) = d.engine_rss_kib {
                    let _ = writeln!(
                        m,
                        "| {} | {:.1} | {:.1} |",
                        d.device.name(),
                        rss as f64 / 1024.0,
                        hwm as f64 / 1024.0
                    );
                }
            }
        }
    }

    /// Plots: delivered packets/s (trafgen) and the no-drop rate (pktgen) against frame size.
    pub fn figures(&self) -> Vec<crate::harness::Figure> {
        use crate::plot::{LinePlot, Series};
        let series = |f: &dyn Fn(&DeviceResult) -> Vec<(f64, f64)>| -> Vec<Series> {
            self.devices
                .iter()
                .map(|d| Series {
                    name: d.device.name().to_string(),
                    points: f(d),
                })
                .filter(|s| !s.points.is_empty())
                .collect()
        };
        let mut out = vec![crate::harness::Figure {
            file: "forwarding-pps".into(),
            plot: LinePlot {
                title: "Pod to pod on one node: delivered packets/s (trafgen, one UDP flow)".into(),
                x_label: "frame size, bytes (FCS included)".into(),
                y_label: "kpps delivered".into(),
                x_log: false,
                y_log: false,
                series: series(&|d| {
                    d.throughput
                        .iter()
                        .map(|t| (t.frame_size as f64, t.delivered_pps / 1e3))
                        .collect()
                }),
            },
        }];
        if self.devices.iter().any(|d| d.pktgen.is_some()) {
            out.push(crate::harness::Figure {
                file: "forwarding-no-drop".into(),
                plot: LinePlot {
                    title: "Pod to pod on one node: highest rate with loss < 0.1% (pktgen)".into(),
                    x_label: "frame size, bytes (FCS included)".into(),
                    y_label: "kpps".into(),
                    x_log: false,
                    y_log: false,
                    series: series(&|d| {
                        d.pktgen
                            .as_ref()
                            .map(|p| {
                                p.searches
                                    .iter()
                                    .map(|(size, s)| (*size as f64, s.no_drop_pps() / 1e3))
                                    .collect()
                            })
                            .unwrap_or_default()
                    }),
                },
            });
        }
        out
    }

    /// The report as JSON (every number of the Markdown, unrounded).
    pub fn to_json(&self) -> Value {
        let devices: Vec<Value> = self
            .devices
            .iter()
            .map(|d| {
                json!({
                    "device": d.device.name(),
                    "description": d.device.describe(),
                    "latency_ms": {
                        "transmitted": d.latency.transmitted,
                        "received": d.latency.received,
                        "min": d.latency.min_ms,
                        "avg": d.latency.avg_ms,
                        "max": d.latency.max_ms,
                        "mdev": d.latency.mdev_ms,
                    },
                    "throughput": d.throughput.iter().map(|t| json!({
                        "frame_size": t.frame_size,
                        "wire_bytes": t.wire_bytes,
                        "seconds": t.seconds,
                        "offered_pps": t.offered_pps,
                        "sent_pps": t.sent_pps,
                        "delivered_pps": t.delivered_pps,
                        "delivered_gbit_per_s": t.delivered_gbit(),
                        "loss": t.loss,
                        "engine_cpu_percent": t.engine_cpu_percent,
                        "engine_drops": t.engine_drops,
                        "other_load_percent": t.other_load_percent,
                        "disturbed": t.disturbed(),
                        "cpus": t.cpus.iter().map(|c| json!({
                            "cpu": c.cpu,
                            "busy_percent": c.busy_percent,
                            "softirq_percent": c.softirq_percent,
                        })).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                    "idle_cpu_percent": d.idle_cpu_percent,
                    "engine_rss_kib": d.engine_rss_kib.map(|(rss, hwm)| json!({"rss": rss, "peak": hwm})),
                    "pktgen": d.pktgen.as_ref().map(|p| json!({
                        "searches": p.searches.iter().map(|(size, s)| json!({
                            "frame_size": size,
                            "search": s.to_json(),
                        })).collect::<Vec<_>>(),
                        "latency_frame_size": p.latency_frame_size,
                        "latency_pps": LATENCY_PPS,
                        "latency": crate::rate::recv_json(&p.latency),
                    })),
                })
            })
            .collect();
        let profile = self.profile.as_ref().map(|p| {
            json!({
                "device": p.device.name(),
                "frame_size": p.frame_size,
                "seconds": p.seconds,
                "idle_percent": p.idle_percent,
                "engine_inclusive": p.engine_inclusive.iter().map(|f| json!({
                    "symbol": f.symbol, "children_percent": f.children_percent,
                    "self_percent": f.self_percent,
                })).collect::<Vec<_>>(),
                "by_command": p.by_command.iter().map(|c| json!({
                    "comm": c.comm, "percent": c.percent, "kernel_percent": c.kernel_percent,
                })).collect::<Vec<_>>(),
                "top": p.top.iter().map(|s| json!({
                    "percent": s.percent, "comm": s.comm, "dso": s.dso, "symbol": s.symbol,
                })).collect::<Vec<_>>(),
            })
        });
        json!({
            "scenario": "forwarding",
            "date": self.date,
            "load_average": self.load_average,
            "machine": {
                "cpus": self.machine.cpus,
                "cpu_model": self.machine.cpu_model,
                "kernel": self.machine.kernel,
                "trafgen": self.machine.trafgen,
            },
            "options": {
                "seconds": self.options.seconds,
                "sizes": self.options.sizes,
                "quick": self.options.quick,
                "warmup_seconds": WARMUP.as_secs(),
                "ping_count": self.ping_count,
                "idle_seconds": self.idle_seconds,
            },
            "generator_cpu": self.generator_cpu,
            "engine_cpu": self.engine_cpu,
            "devices": devices,
            "profile": profile,
            "crosscheck": self.crosscheck().iter().map(|(d, c)| json!({
                "device": d.name(), "frame_size": c.frame_size, "rate_pps": c.rate_pps,
                "seconds": c.seconds,
                "trafgen_offered_pps": c.trafgen_offered_pps,
                "trafgen_delivered_pps": c.trafgen_delivered_pps,
                "pktgen_offered_pps": c.pktgen_offered_pps,
                "pktgen_delivered_pps": c.pktgen_delivered_pps,
                "difference": c.difference(), "margin": CROSSCHECK_MARGIN,
            })).collect::<Vec<_>>(),
            "full_speed": self.full_speed_pairs().iter().map(|(d, size, a, b, diff)| json!({
                "device": d.name(), "frame_size": size, "trafgen_pps": a, "pktgen_pps": b,
                "difference": diff,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}

/// The scenario for `sluice bench`: reads `frame_sizes` and `seconds` from the parameters.
pub struct ForwardingScenario;

impl crate::harness::Scenario for ForwardingScenario {
    fn name(&self) -> &'static str {
        "forwarding"
    }

    fn about(&self) -> &'static str {
        "pod to pod on one node: sluice (AF_PACKET V2/V3, TAP) next to kernel routing; packets/s (trafgen and pktgen), no-drop rate, latency, CPU, memory"
    }

    fn params(&self) -> &'static str {
        "--frame-sizes (default 64,1500; quick 64), --seconds (default 10; quick 1)"
    }

    fn run(&self, ctx: &crate::harness::Ctx) -> Result<crate::harness::Section, String> {
        let mut opts = if ctx.quick {
            Options::quick()
        } else {
            Options::default()
        };
        if let Some(s) = ctx.params.seconds {
            opts.seconds = s;
        }
        if let Some(sizes) = &ctx.params.frame_sizes {
            opts.sizes = sizes.clone();
        }
        let report = run(&ctx.sluice_bin, &opts)?;
        Ok(crate::harness::Section {
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
    fn ping_summary() {
        let text = "PING 10.244.1.11 (10.244.1.11) 56(84) bytes of data.\n\n\
            --- 10.244.1.11 ping statistics ---\n\
            500 packets transmitted, 498 received, 0.4% packet loss, time 5046ms\n\
            rtt min/avg/max/mdev = 0.031/0.052/0.410/0.021 ms\n";
        let l = parse_ping(text).expect("parses");
        assert_eq!((l.transmitted, l.received), (500, 498));
        assert_eq!(
            (l.min_ms, l.avg_ms, l.max_ms, l.mdev_ms),
            (0.031, 0.052, 0.410, 0.021)
        );
        let piped = "500 packets transmitted, 500 received, 0% packet loss, time 7999ms\n\
            rtt min/avg/max/mdev = 0.075/0.278/17.603/0.968 ms, pipe 2\n";
        let l = parse_ping(piped).expect("parses with pipe");
        assert_eq!((l.received, l.max_ms, l.mdev_ms), (500, 17.603, 0.968));
        let broken = "1 packets transmitted, 1 received\nrtt min/avg/max/mdev = 0.1/x/0.3/0.4 ms\n";
        assert_eq!(parse_ping(broken), None);
        // No replies: ping prints no rtt line.
        let none = "3 packets transmitted, 0 received, 100% packet loss, time 2030ms\n";
        assert_eq!(parse_ping(none), None);
        assert_eq!(
            parse_ping("rtt min/avg/max/mdev = 1/2/3 ms\n1 packets transmitted, 1 received"),
            None
        );
        assert_eq!(parse_ping(""), None);
    }

    #[test]
    fn task_ticks() {
        // Fields 14 and 15 (utime, stime) are 1234 and 56; the comm holds ") (".
        let stat =
            "4242 (sl ) (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 3 0 99 1000 50";
        assert_eq!(parse_task_ticks(stat), Some(1290));
        assert_eq!(parse_task_ticks("4242 (sluice) S 1 2"), None);
        assert_eq!(parse_task_ticks("garbage"), None);
    }

    #[test]
    fn proc_stat() {
        let text = "cpu  10 0 10 100 0 0 0 0 0 0\n\
                    cpu0 5 1 4 50 2 3 7 0 0 0\n\
                    cpu1 1 0 1 90 0 0 0 0 0 0\n\
                    intr 1 2 3\n";
        let v = parse_proc_stat(text);
        assert_eq!(
            v,
            vec![
                CpuTimes {
                    cpu: 0,
                    total: 72,
                    idle: 52,
                    softirq: 7
                },
                CpuTimes {
                    cpu: 1,
                    total: 92,
                    idle: 90,
                    softirq: 0
                },
            ]
        );
        let later = vec![
            CpuTimes {
                cpu: 0,
                total: 172,
                idle: 77,
                softirq: 32,
            },
            CpuTimes {
                cpu: 1,
                total: 192,
                idle: 190,
                softirq: 0,
            },
        ];
        let u = cpu_use(&v, &later, 0).expect("cpu0");
        assert_eq!((u.busy_percent, u.softirq_percent), (75.0, 25.0));
        assert_eq!(cpu_use(&v, &later, 1).map(|u| u.busy_percent), Some(0.0));
        assert_eq!(cpu_use(&v, &later, 2), None);
    }

    #[test]
    fn perf_lines() {
        let text = "# Overhead|Command        |Shared Object   |Symbol\n\
                    #\n \
                    40.50% |swapper        |[kernel.kallsyms]|[k] pv_native_safe_halt\n \
                    12.25% |sluice         |sluice          |[.] dataplane::engine::Engine::poll_once\n \
                    0.02%  |trafgen        |[kernel.kallsyms]|[k] a|b\n";
        let v = parse_perf_report(text);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].percent, 40.5);
        assert_eq!(v[1].comm, "sluice");
        assert_eq!(v[1].symbol, "[.] dataplane::engine::Engine::poll_once");
        assert_eq!(v[2].symbol, "[k] a|b");
        let shares = command_shares(&v);
        assert_eq!(shares.len(), 3);
        assert_eq!(
            (shares[0].comm.as_str(), shares[0].percent),
            ("swapper", 40.5)
        );
        assert_eq!(
            (shares[1].comm.as_str(), shares[1].kernel_percent),
            ("sluice", 0.0)
        );
        let two = [
            v[1].clone(),
            PerfSymbol {
                symbol: "[k] memcpy".into(),
                percent: 30.0,
                ..v[1].clone()
            },
        ];
        let s = command_shares(&two);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].percent, s[0].kernel_percent), (42.25, 30.0));
    }

    #[test]
    fn perf_children_lines() {
        let text = "# Children|    Self|Symbol\n\
                    #\n\
                    \x2062.10% | 0.50%  |[k] entry_SYSCALL_64_after_hwframe\n\
                    \x2010.00% | 10.00% |[.] sluice::x\n\
                    garbage line\n";
        let v = parse_perf_children(text);
        assert_eq!(
            v,
            vec![
                InclusiveSymbol {
                    symbol: "[k] entry_SYSCALL_64_after_hwframe".into(),
                    children_percent: 62.1,
                    self_percent: 0.5
                },
                InclusiveSymbol {
                    symbol: "[.] sluice::x".into(),
                    children_percent: 10.0,
                    self_percent: 10.0
                },
            ]
        );
    }

    #[test]
    fn trafgen_config_lengths() {
        let c = trafgen_config(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            POD_A_IP,
            POD_B_IP,
            60,
        );
        assert!(c.contains("c16(46)"), "{c}");
        assert!(c.contains("c16(26), csumudp(14, 34)"), "{c}");
        assert!(c.contains("csumip(14, 33)"), "{c}");
        assert!(c.contains("fill(0x00, 18)"), "{c}");
        assert!(c.contains("0x0a, 0xf4, 0x01, 0x0a"), "{c}");
        let big = trafgen_config([2; 6], [4; 6], POD_A_IP, POD_B_IP, 1514);
        assert!(
            big.contains("c16(1500)") && big.contains("fill(0x00, 1472)"),
            "{big}"
        );
    }

    #[test]
    fn options_are_checked() {
        assert!(Options::default().validate().is_ok());
        assert!(Options::quick().validate().is_ok());
        let bad = |f: fn(&mut Options)| {
            let mut o = Options::default();
            f(&mut o);
            o.validate().expect_err("invalid")
        };
        assert!(bad(|o| o.seconds = 0).contains("seconds"));
        assert!(bad(|o| o.sizes.clear()).contains("no frame sizes"));
        assert!(bad(|o| o.sizes = vec![63]).contains("frame size 63"));
        assert!(bad(|o| o.sizes = vec![64, 1519]).contains("frame size 1519"));
    }

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(format_utc(1_767_225_599), "2025-12-31 23:59 UTC");
    }

    fn row(device_cpu: f64, cpu1_busy: f64, engine: Option<f64>) -> Throughput {
        Throughput {
            frame_size: 64,
            wire_bytes: 60,
            seconds: 10.0,
            offered_pps: 300_000.0,
            sent_pps: 250_000.0,
            delivered_pps: 200_000.0,
            loss: 1.0 / 3.0,
            engine_cpu_percent: engine,
            engine_drops: engine.map(|_| 500_000),
            cpus: vec![
                CpuUse {
                    cpu: 0,
                    busy_percent: 100.0,
                    softirq_percent: 60.0,
                },
                CpuUse {
                    cpu: 1,
                    busy_percent: cpu1_busy,
                    softirq_percent: 30.0,
                },
            ],
            other_load_percent: Some((cpu1_busy - device_cpu).max(0.0)),
        }
    }

    #[test]
    fn markdown_and_json_show_every_number_and_flag_disturbed_rows() {
        let latency = Latency {
            transmitted: 500,
            received: 500,
            min_ms: 0.1,
            avg_ms: 0.2,
            max_ms: 0.9,
            mdev_ms: 0.05,
        };
        let v3 = Latency {
            avg_ms: 1.2,
            ..latency.clone()
        };
        let devices = vec![
            DeviceResult {
                device: Device::SluiceAfPacketV2,
                latency: latency.clone(),
                throughput: vec![row(99.0, 100.0, Some(99.0))],
                idle_cpu_percent: Some(0.0),
                pktgen: None,
                engine_rss_kib: Some((4096, 5000)),
            },
            DeviceResult {
                device: Device::SluiceAfPacketV3,
                latency: v3,
                throughput: vec![row(40.0, 90.0, Some(40.0))],
                idle_cpu_percent: Some(0.1),
                pktgen: None,
                engine_rss_kib: None,
            },
            DeviceResult {
                device: Device::Kernel,
                latency,
                throughput: vec![row(0.0, 1.0, None)],
                idle_cpu_percent: None,
                pktgen: None,
                engine_rss_kib: None,
            },
        ];
        let opts = Options::default();
        let report = Report {
            machine: Machine {
                cpus: 2,
                cpu_model: "Test CPU".into(),
                kernel: "6.1".into(),
                trafgen: "trafgen 0.6.8".into(),
            },
            date: format_utc(0),
            notes: standing_notes(&devices, 0, 1, &opts),
            options: opts,
            generator_cpu: 0,
            engine_cpu: 1,
            ping_count: 500,
            load_average: "0.10 0.20 0.30".into(),
            idle_seconds: 10,
            devices,
            profile: None,
        };
        let md = report.to_markdown();
        assert!(md.contains("2 CPUs, Test CPU, Linux 6.1"), "{md}");
        assert!(
            md.contains("1970-01-01 00:00 UTC (load average at start: 0.10 0.20 0.30)"),
            "{md}"
        );
        assert!(
            md.contains("| sluice-afpacket-v2 | 64 B (60 B) | 300.0 | 250.0 | 200.0 | 0.096 | 33.33% | 99% | 500000 | 100% (60%) | 100% (30%) |"),
            "{md}"
        );
        assert!(
            md.contains("| sluice-afpacket-v3 † | 64 B (60 B) |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| kernel | 64 B (60 B) | 300.0 | 250.0 | 200.0 | 0.096 | 33.33% | — | — |"
            ),
            "{md}"
        );
        assert!(
            md.contains("† Disturbed: during sluice-afpacket-v3 64 B more than 15%"),
            "{md}"
        );
        assert!(
            md.contains("V3 adds 1.000 ms per round trip over V2, 0.500 ms per hop: within"),
            "{md}"
        );
        assert!(md.contains("| sluice-afpacket-v3 | 0.10 % |"), "{md}");
        assert!(!md.contains("| kernel | — % |"), "{md}");
        let j = report.to_json();
        assert_eq!(j["devices"][1]["throughput"][0]["disturbed"], true);
        assert_eq!(j["devices"][0]["throughput"][0]["disturbed"], false);
        assert_eq!(j["devices"][2]["idle_cpu_percent"], Value::Null);
        assert_eq!(j["devices"][0]["latency_ms"]["max"], 0.9);
        assert_eq!(j["options"]["sizes"], json!([64, 1500]));
    }

    #[test]
    fn status_port_mac() {
        let status = json!({"ready": true, "ports": [
            {"name": "v1-a", "kind": "afpacket/v2", "mac": "02:00:00:00:00:0a"},
            {"name": "v2-b", "kind": "afpacket/v2", "mac": "02:00:00:00:00:0b"}]});
        assert_eq!(port_mac(&status, "v2-b"), Ok([2, 0, 0, 0, 0, 0xb]));
        assert!(port_mac(&status, "v3-c")
            .unwrap_err()
            .contains("no MAC for port v3-c"));
        assert!(port_mac(&json!({}), "x").unwrap_err().contains("no ports"));
    }
}
