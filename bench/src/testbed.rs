//! The namespace testbed: little clusters of network namespaces running the real engine.
//!
//! Owns everything a test (or the demo) creates on the machine: network namespaces ([`Netns`]),
//! veth pairs between them ([`veth`]), and whole clusters ([`Cluster`]): a namespace per node and
//! per pod, the pods' links and addresses, the cluster file, and one `sluice run` per node.
//!
//! Promises:
//! - Every name is unique per process and per call (`sl<pid>-<counter>-<role>`), so tests run in
//!   parallel. Namespaces are deleted, engines killed and temp dirs removed on drop, whether the
//!   test passes, fails or panics; namespaces and temp dirs left by a killed test run are swept by
//!   the next one ([`sweep_stale`]).
//! - Only namespaces this module created, and devices inside them, are touched: never an
//!   interface, address or route of the root namespace.
//! - A node namespace's kernel does not forward (`ip_forward=0`, read back), holds no address on
//!   the interfaces the engine owns (IPv6 is disabled there, so not even a link-local one), and
//!   drops whatever arrives on them in its raw prerouting (ip, ip6) and arp input hooks, so a
//!   passing test proves the engine, not the node kernel, moved the packet.
//! - Pods keep the kernel's default offloads (checksum offload, TSO/GSO): the engine must cope.
//! - Overlay clusters ([`Cluster::build_overlay`]): the nodes' `ul0` meet on one veth pair (2
//!   nodes) or on a bridge in an `underlay` namespace (3 or more); a sluice node's `ul0` is
//!   the engine's, like its pod ports; a kernel node ([`DataplaneDef::Kernel`]) is set up as
//!   flannel's VXLAN backend sets a node up, with no engine. Pods get the pod MTU.
//! - [`Capture`] and [`tshark_fields`] let a test hand what crossed a link to tshark.
//!
//! Engines are started with `PR_SET_PDEATHSIG = SIGKILL`, so a test process killed outright does
//! not leave engines spinning. The signal follows the *thread* that started the engine: build
//! the cluster (and call [`NodeHandle::start_engine`]) on a thread that outlives the engine.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Name prefix of every namespace this module creates: `sl<pid>-`.
const NS_PREFIX: &str = "sl";
/// Name prefix of every temp dir this module creates: `sluice-tb-<pid>-`.
const DIR_PREFIX: &str = "sluice-tb-";
/// Longest role suffix kept in a namespace name.
const ROLE_MAX: usize = 16;
/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;
/// The cluster CIDR written in every cluster file.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// How long [`Cluster::build`] waits for an engine to report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How often readiness is polled.
const READY_POLL: Duration = Duration::from_millis(10);
/// How long an engine gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long to wait for an engine-created TAP to show up in its pod namespace.
const TAP_APPEAR_TIMEOUT: Duration = Duration::from_secs(5);

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Runs a command; returns stdout, or an error naming the command, its status and its stderr.
fn run_cmd(program: &str, args: &[&str]) -> io::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{program} {}: {e}", args.join(" "))))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "{program} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Keeps `[A-Za-z0-9_-]` of `role` (others become `-`), at most [`ROLE_MAX`] of them.
fn sanitize_role(role: &str) -> String {
    let s: String = role
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(ROLE_MAX)
        .collect();
    if s.is_empty() {
        "ns".to_string()
    } else {
        s
    }
}

/// The pid encoded in a name `<prefix><pid>-...`, if the name has that shape.
fn pid_of(name: &str, prefix: &str) -> Option<i32> {
    let rest = name.strip_prefix(prefix)?;
    let (digits, _) = rest.split_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces named `sl<pid>-...` and temp dirs named `sluice-tb-<pid>-...` whose pid no
/// longer runs: what a killed test run left behind. Called once per process by [`Netns::new`];
/// safe to call again. Errors are logged to stderr, never returned.
pub fn sweep_stale() {
    match run_cmd("ip", &["netns", "list"]) {
        Ok(list) => {
            for line in list.lines() {
                // `ip netns list` prints "name" or "name (id: N)".
                let Some(name) = line.split_whitespace().next() else {
                    continue;
                };
                if let Some(pid) = pid_of(name, NS_PREFIX) {
                    if !pid_alive(pid) {
                        if let Err(e) = run_cmd("ip", &["netns", "del", name]) {
                            eprintln!("testbed: sweeping stale netns {name}: {e}");
                        }
                    }
                }
            }
        }
        Err(e) => eprintln!("testbed: listing namespaces to sweep: {e}"),
    }
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(pid) = pid_of(name, DIR_PREFIX) {
            if !pid_alive(pid) {
                if let Err(e) = fs::remove_dir_all(entry.path()) {
                    eprintln!("testbed: sweeping stale dir {name}: {e}");
                }
            }
        }
    }
}

/// Opens a namespace file and moves the calling thread into that network namespace.
fn enter_netns(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: `fd` is an open file descriptor owned by the caller for the duration of the call;
    // setns(CLONE_NEWNET) only changes the network namespace of the calling thread (allowed in a
    // multi-threaded process) and touches no memory of ours.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A network namespace created with `ip netns add`, deleted on drop. `lo` is up.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `sl<pid>-<counter>-<role>` (role sanitized and cut to 16 characters) and brings
    /// its `lo` up. The first call in a process sweeps stale namespaces ([`sweep_stale`]).
    pub fn new(role: &str) -> io::Result<Netns> {
        SWEEP.call_once(sweep_stale);
        let name = format!(
            "{NS_PREFIX}{}-{}-{}",
            std::process::id(),
            next_id(),
            sanitize_role(role)
        );
        run_cmd("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/<name>`, the file that pins the namespace.
    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// Runs `ip -n <name> args...`; returns its stdout, or an error with the command and stderr.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_cmd("ip", &full)
    }

    /// Runs `ip netns exec <name> argv...` and returns its output whatever its exit status.
    pub fn exec(&self, argv: &[&str]) -> io::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .stdin(Stdio::null())
            .output()
    }

    /// Like [`Netns::exec`], but a non-zero exit is an error carrying the command and stderr.
    pub fn exec_ok(&self, argv: &[&str]) -> io::Result<String> {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(argv);
        run_cmd("ip", &full)
    }

    /// Sets a sysctl inside the namespace (`sysctl -qw key=value`).
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        check_sysctl_key(key)?;
        if value.is_empty() || value.contains(['\n', '=']) {
            return Err(invalid(format!("bad sysctl value {value:?} for {key}")));
        }
        self.exec_ok(&["sysctl", "-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Reads a sysctl inside the namespace (`sysctl -n key`), trimmed.
    pub fn read_sysctl(&self, key: &str) -> io::Result<String> {
        check_sysctl_key(key)?;
        Ok(self.exec_ok(&["sysctl", "-n", key])?.trim().to_string())
    }

    /// Runs `f` on a new thread that first enters this namespace, and waits for it: sockets `f`
    /// opens live in the namespace (and stay there when returned). A panic in `f` is re-raised
    /// here; failing to enter the namespace panics with the reason.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let fd = self.open();
        let name = &self.name;
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                enter_or_panic(name, fd);
                f()
            });
            match handle.join() {
                Ok(r) => r,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        })
    }

    /// Like [`Netns::run`] without waiting: the thread holds the namespace open until it ends.
    pub fn spawn<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let fd = self.open();
        let name = self.name.clone();
        std::thread::spawn(move || {
            enter_or_panic(&name, fd);
            f()
        })
    }

    /// Opens the namespace file on the calling thread, so the namespace is pinned even if `self`
    /// is dropped before the worker thread enters it.
    fn open(&self) -> io::Result<OwnedFd> {
        File::open(self.path()).map(OwnedFd::from)
    }

    /// Names of this namespace's interfaces, `lo` included.
    pub fn links(&self) -> io::Result<Vec<String>> {
        let out = self.ip(&["-j", "link", "show"])?;
        let v: Value = serde_json::from_str(&out)
            .map_err(|e| io::Error::other(format!("ip -j link in {}: {e}", self.name)))?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l.get("ifname").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The MAC address of an interface in this namespace.
    pub fn mac(&self, ifname: &str) -> io::Result<[u8; 6]> {
        let out = self.ip(&["-j", "link", "show", "dev", ifname])?;
        let v: Value = serde_json::from_str(&out)
            .map_err(|e| io::Error::other(format!("ip -j link in {}: {e}", self.name)))?;
        let addr = v
            .get(0)
            .and_then(|l| l.get("address"))
            .and_then(Value::as_str)
            .ok_or_else(|| io::Error::other(format!("{ifname} in {}: no address", self.name)))?;
        parse_mac(addr)
            .ok_or_else(|| io::Error::other(format!("{ifname} in {}: bad MAC {addr}", self.name)))
    }
}

fn enter_or_panic(name: &str, fd: io::Result<OwnedFd>) {
    if let Err(e) = fd.and_then(|fd| enter_netns(&fd)) {
        panic!("entering netns {name}: {e}");
    }
}

fn check_sysctl_key(key: &str) -> io::Result<()> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("bad sysctl key {key:?}")))
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_cmd("ip", &["netns", "del", &self.name]) {
            eprintln!("testbed: deleting netns {}: {e}", self.name);
        }
    }
}

fn check_ifname(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "bad interface name {name:?} (1..=15 printable characters, no '/' or ':')"
        )))
    }
}

/// Creates a veth pair, `a_if` in `a` and `b_if` in `b`, each end created directly in its
/// namespace (nothing ever appears in the root namespace), and sets both ends up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> io::Result<()> {
    check_ifname(a_if)?;
    check_ifname(b_if)?;
    run_cmd(
        "ip",
        &[
            "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
            &b.name,
        ],
    )?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// How a pod is attached to its node's engine: `AfPacket` (a veth pair, `eth0` in the pod, the
/// host end in the node namespace opened by the engine) or `Tap` (a TAP device the engine
/// creates and moves into the pod namespace). The cluster file's own port kind.
pub type PortKindDef = control::config::PortKind;

/// The AF_PACKET ring flavour of an afpacket pod's port (`v2`, the default, or `v3`). The
/// cluster file's own ring kind; TAP pods have no ring and ignore it.
pub type RingDef = control::config::RingKind;

/// A pod of a [`NodeDef`].
#[derive(Debug, Clone)]
pub struct PodDef {
    pub name: String,
    pub ip: Ipv4Addr,
    pub kind: PortKindDef,
    /// Ring flavour of an afpacket port; written to the cluster file as `ring: v3` when V3.
    pub ring: RingDef,
}

impl PodDef {
    pub fn afpacket(name: &str, ip: Ipv4Addr) -> PodDef {
        PodDef {
            name: name.to_string(),
            ip,
            kind: PortKindDef::AfPacket,
            ring: RingDef::V2,
        }
    }

    pub fn tap(name: &str, ip: Ipv4Addr) -> PodDef {
        PodDef {
            name: name.to_string(),
            ip,
            kind: PortKindDef::Tap,
            ring: RingDef::V2,
        }
    }

    /// The same pod with another AF_PACKET ring flavour (meaningful for afpacket pods only).
    pub fn with_ring(mut self, ring: RingDef) -> PodDef {
        self.ring = ring;
        self
    }
}

/// What moves a node's packets: the sluice engine, or (in overlay clusters only) the node's own
/// kernel set up as flannel's VXLAN backend sets a node up (a real interoperability peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataplaneDef {
    #[default]
    Sluice,
    /// No engine: `ip_forward=1`, the underlay address on `ul0`, a `flannel.1` VXLAN device with
    /// flannel's routes, neighbour and FDB entries for every other node; pods on veth pairs
    /// routed by the kernel. VXLAN overlays only; afpacket pods only (a veth each).
    Kernel,
}

/// A node of a cluster to build: its pods' gateway is the first host of `pod_cidr`.
#[derive(Debug, Clone)]
pub struct NodeDef {
    pub name: String,
    /// `a.b.c.d/len`.
    pub pod_cidr: String,
    pub pods: Vec<PodDef>,
    pub dataplane: DataplaneDef,
}

impl NodeDef {
    pub fn new(name: &str, pod_cidr: &str, pods: Vec<PodDef>) -> NodeDef {
        NodeDef {
            name: name.to_string(),
            pod_cidr: pod_cidr.to_string(),
            pods,
            dataplane: DataplaneDef::Sluice,
        }
    }

    /// The same node run by its kernel's VXLAN device instead of sluice ([`DataplaneDef::Kernel`]).
    pub fn kernel(mut self) -> NodeDef {
        self.dataplane = DataplaneDef::Kernel;
        self
    }
}

/// The encapsulation of an overlay cluster (the cluster file's `cluster.overlay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayModeDef {
    /// VXLAN (RFC 7348), flannel's `vxlan` backend.
    Vxlan,
    /// flannel's `udp` backend: the inner IPv4 packet is the UDP payload.
    Udp,
}

impl OverlayModeDef {
    pub fn as_str(&self) -> &'static str {
        match self {
            OverlayModeDef::Vxlan => "vxlan",
            OverlayModeDef::Udp => "udp",
        }
    }

    /// Bytes the encapsulation costs an IPv4 packet: 50 (VXLAN), 28 (UDP).
    pub fn mtu_overhead(&self) -> u16 {
        let n = match self {
            OverlayModeDef::Vxlan => encap::vxlan::MTU_OVERHEAD,
            OverlayModeDef::Udp => encap::udp_encap::MTU_OVERHEAD,
        };
        // 50 and 28 fit.
        n as u16
    }

    /// The default tunnel port: 8472 (VXLAN, as flannel and Linux), 8285 (UDP, as flannel).
    pub fn default_port(&self) -> u16 {
        match self {
            OverlayModeDef::Vxlan => encap::vxlan::DEFAULT_PORT,
            OverlayModeDef::Udp => encap::udp_encap::DEFAULT_PORT,
        }
    }
}

/// An overlay between the nodes of a cluster. `None` fields are left out of the cluster file,
/// so the control plane's defaults apply; the `effective_*` methods say what those are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayDef {
    pub mode: OverlayModeDef,
    /// VXLAN only (default 1).
    pub vni: Option<u32>,
    /// Default [`OverlayModeDef::default_port`].
    pub port: Option<u16>,
    /// VXLAN only (default true).
    pub udp_checksum: Option<bool>,
    /// The underlay MTU, also set on every underlay link.
    pub mtu: u16,
    /// The AF_PACKET ring of the sluice nodes' uplinks (written as `underlay.ring`).
    pub uplink_ring: RingDef,
}

impl OverlayDef {
    /// VXLAN with the defaults (VNI 1, port 8472, UDP checksums) on a 1500-byte underlay.
    pub fn vxlan() -> OverlayDef {
        OverlayDef {
            mode: OverlayModeDef::Vxlan,
            vni: None,
            port: None,
            udp_checksum: None,
            mtu: 1500,
            uplink_ring: RingDef::V2,
        }
    }

    /// flannel-style UDP (port 8285) on a 1500-byte underlay.
    pub fn udp() -> OverlayDef {
        OverlayDef {
            mode: OverlayModeDef::Udp,
            ..OverlayDef::vxlan()
        }
    }

    /// The MTU pods get: the underlay MTU less the encapsulation overhead (1450 VXLAN, 1472 UDP
    /// on a 1500-byte underlay).
    pub fn pod_mtu(&self) -> u16 {
        self.mtu.saturating_sub(self.mode.mtu_overhead())
    }

    pub fn effective_vni(&self) -> u32 {
        self.vni.unwrap_or(1)
    }

    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(self.mode.default_port())
    }

    pub fn effective_udp_checksum(&self) -> bool {
        self.mode == OverlayModeDef::Vxlan && self.udp_checksum.unwrap_or(true)
    }

    fn validate(&self) -> io::Result<()> {
        if self.mode == OverlayModeDef::Udp && (self.vni.is_some() || self.udp_checksum.is_some()) {
            return Err(invalid(
                "overlay: vni and udp_checksum are VXLAN settings (mode udp)".to_string(),
            ));
        }
        if self.vni.is_some_and(|v| v > encap::vxlan::VNI_MAX) {
            return Err(invalid(format!(
                "overlay: vni {:?} does not fit 24 bits",
                self.vni
            )));
        }
        if self.port == Some(0) {
            return Err(invalid("overlay: port 0".to_string()));
        }
        // An IPv4 host must take 68-byte packets (RFC 791).
        if self.pod_mtu() < 68 || self.mtu > 9000 {
            return Err(invalid(format!(
                "overlay: underlay mtu {} leaves a pod MTU of {} (want mtu in {}..=9000)",
                self.mtu,
                self.pod_mtu(),
                68 + self.mode.mtu_overhead()
            )));
        }
        Ok(())
    }
}

/// The underlay interface of every node of an overlay cluster (the engine's uplink, or the
/// kernel VTEP's lower device).
pub const UPLINK: &str = "ul0";
/// The bridge of the underlay namespace (clusters of 3 or more nodes).
pub const UNDERLAY_BRIDGE: &str = "br0";
/// The kernel node's VXLAN device, named as flannel names it.
pub const KERNEL_VTEP: &str = "flannel.1";
/// The underlay subnet: node `i` (0-based, in definition order) is `192.168.100.(i+1)/24`.
pub const UNDERLAY_CIDR: &str = "192.168.100.0/24";
const UNDERLAY_PREFIX_LEN: u8 = 24;
/// At most this many nodes fit the underlay /24.
const UNDERLAY_MAX_NODES: usize = 253;

/// Node `i`'s underlay address.
fn underlay_ip(i: usize) -> Ipv4Addr {
    // i < 253 (validated).
    Ipv4Addr::new(192, 168, 100, (i + 1) as u8)
}

/// A node's VTEP MAC, as the control plane derives it when the cluster file gives none.
pub fn default_vtep_mac(node: &str) -> [u8; 6] {
    dataplane::port::derived_mac(&format!("vtep/{node}"))
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `a.b.c.d/len` (len 0..=30) and returns its network address and prefix length.
fn network_of(cidr: &str) -> io::Result<(Ipv4Addr, u32)> {
    let bad = || {
        invalid(format!(
            "bad pod_cidr {cidr:?} (want a.b.c.d/len, len 0..=30)"
        ))
    };
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u32 = len.parse().map_err(|_| bad())?;
    if len > 30 {
        return Err(bad());
    }
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Ok((Ipv4Addr::from(u32::from(addr) & mask), len))
}

/// Parses `a.b.c.d/len` and returns its first host (the network address + 1).
fn first_host(cidr: &str) -> io::Result<Ipv4Addr> {
    let (net, _) = network_of(cidr)?;
    Ok(Ipv4Addr::from(u32::from(net) | 1))
}

/// Node and pod names go into namespace names, file names and the cluster file.
fn check_name(what: &str, name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "bad {what} name {name:?} (1..=63 of a-z 0-9 '-' '.', not starting with '-' or '.')"
        )))
    }
}

/// A short interface name `<prefix><n>-<pod>` cut to 15 bytes.
fn short_ifname(prefix: &str, pod: &str) -> String {
    let mut s = format!("{prefix}{}-{pod}", next_id());
    s.truncate(IFNAME_MAX);
    s
}

/// A temp dir under `std::env::temp_dir()`, removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> io::Result<TempDir> {
        let path =
            std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{}", std::process::id(), next_id()));
        // A dir of that name can only be left by an earlier process with our pid.
        if path.exists() {
            fs::remove_dir_all(&path)?;
        }
        fs::create_dir(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            eprintln!("testbed: removing {}: {e}", self.0.display());
        }
    }
}

/// What a node keeps about a TAP pod, to configure the TAP each time an engine creates it.
#[derive(Debug)]
struct TapPod {
    netns: Arc<Netns>,
    ifname: String,
    ip: Ipv4Addr,
    gateway: Ipv4Addr,
    /// The pod MTU of an overlay cluster.
    mtu: Option<u16>,
}

#[derive(Debug, Default)]
struct EngineState {
    bin: Option<PathBuf>,
    child: Option<Child>,
}

/// A node of a built [`Cluster`]: its namespace and its engine (none for a kernel node).
#[derive(Debug)]
pub struct NodeHandle {
    name: String,
    pod_cidr: String,
    gateway: Ipv4Addr,
    dataplane: DataplaneDef,
    /// Overlay clusters only.
    underlay: Option<Underlay>,
    netns: Netns,
    admin_socket: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    /// Interfaces of this namespace the engine owns (host ends of afpacket pods, then the
    /// uplink); empty on a kernel node.
    engine_ifaces: Vec<String>,
    taps: Vec<TapPod>,
    engine: Mutex<EngineState>,
}

impl NodeHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pod_cidr(&self) -> &str {
        &self.pod_cidr
    }

    /// The pods' gateway (first host of the pod CIDR), answered by the engine.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    pub fn dataplane(&self) -> DataplaneDef {
        self.dataplane
    }

    /// The node's underlay address (overlay clusters only): configured on `ul0` of a kernel
    /// node, only written to the cluster file for a sluice node (whose engine answers for it).
    pub fn underlay_ip(&self) -> Option<Ipv4Addr> {
        self.underlay.map(|u| u.ip)
    }

    /// The node's VTEP MAC (overlay clusters only): the inner destination MAC of VXLAN frames
    /// to it; the MAC of `flannel.1` on a kernel node.
    pub fn vtep_mac(&self) -> Option<[u8; 6]> {
        self.underlay.map(|u| u.vtep_mac)
    }

    /// The node's underlay interface, [`UPLINK`] (overlay clusters only).
    pub fn uplink(&self) -> Option<&'static str> {
        self.underlay.map(|_| UPLINK)
    }

    pub fn admin_socket(&self) -> &Path {
        &self.admin_socket
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The engine's stdout and stderr, across restarts.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Interfaces of the node namespace that the engine owns (the host ends of afpacket pods,
    /// then the uplink `ul0` in an overlay cluster); none on a kernel node.
    pub fn engine_interfaces(&self) -> &[String] {
        &self.engine_ifaces
    }

    /// Sends one admin command to the engine and returns its JSON answer.
    pub fn query(&self, cmd: &str) -> io::Result<Value> {
        dataplane::admin::query(&self.admin_socket, cmd)
    }

    /// The engine's counters (`counters` on the admin socket).
    pub fn counters(&self) -> io::Result<Value> {
        self.query("counters")
    }

    /// The engine log so far (lossy UTF-8; empty if the engine never started).
    pub fn engine_log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether an engine process is running (started and not yet exited).
    pub fn engine_running(&self) -> bool {
        self.engine_pid().is_some()
    }

    /// The engine's pid while one runs.
    pub fn engine_pid(&self) -> Option<u32> {
        let mut st = lock(&self.engine);
        let child = st.child.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            Ok(Some(_)) | Err(_) => None,
        }
    }

    /// Stops the engine: SIGTERM, up to 2 s to exit, then SIGKILL; reaps it. No-op if none runs.
    pub fn stop_engine(&self) -> io::Result<()> {
        let child = lock(&self.engine).child.take();
        match child {
            Some(child) => stop_child(child),
            None => Ok(()),
        }
    }

    /// Starts the engine (`ip netns exec <node ns> <sluice> run --config F --node NAME`,
    /// `RUST_LOG=info`, output appended to [`NodeHandle::log_path`]), waits until its admin
    /// socket reports `ready: true`, then configures the TAPs it moved into TAP pods.
    /// Fails if an engine already runs, if no binary was given yet ([`Cluster::start_engines`]),
    /// if the engine exits first (the error carries its log) or is not ready within 20 s.
    pub fn start_engine(&self) -> io::Result<()> {
        if self.dataplane == DataplaneDef::Kernel {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("node {}: a kernel node runs no engine", self.name),
            ));
        }
        let mut st = lock(&self.engine);
        if let Some(child) = st.child.as_mut() {
            if child.try_wait()?.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("node {}: engine already running", self.name),
                ));
            }
        }
        let bin = st.bin.clone().ok_or_else(|| {
            invalid(format!(
                "node {}: no sluice binary given (Cluster::start_engines)",
                self.name
            ))
        })?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let log_err = log.try_clone()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.netns.name()])
            .arg(&bin)
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--node")
            .arg(&self.name)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
        // SAFETY: the closure runs in the forked child before exec and calls only prctl, getppid
        // and _exit, which are async-signal-safe; it allocates nothing and takes no lock.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent died between fork and prctl: nobody would kill us later.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("node {}: starting engine: {e}", self.name),
            )
        })?;
        if let Err(e) = self.wait_ready(&mut child) {
            if let Err(stop) = stop_child(child) {
                eprintln!("testbed: node {}: stopping engine: {stop}", self.name);
            }
            return Err(e);
        }
        st.child = Some(child);
        drop(st);
        for tap in &self.taps {
            configure_tap(tap).map_err(|e| io::Error::other(format!("node {}: {e}", self.name)))?;
        }
        Ok(())
    }

    fn wait_ready(&self, child: &mut Child) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "node {}: engine exited ({status}) before ready; its log:\n{}",
                    self.name,
                    self.engine_log()
                )));
            }
            let last = match self.query("status") {
                Ok(v) if v.get("ready").and_then(Value::as_bool) == Some(true) => return Ok(()),
                Ok(v) => format!("status {v}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "node {}: engine not ready after {:?} (last: {last}); its log:\n{}",
                        self.name,
                        READY_TIMEOUT,
                        self.engine_log()
                    ),
                ));
            }
            std::thread::sleep(READY_POLL);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock leaves the state usable (it is a plain Option).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SIGTERM, wait up to [`STOP_GRACE`], SIGKILL, reap.
fn stop_child(mut child: Child) -> io::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: `pid` is our own unreaped child, so the pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill()?;
    child.wait().map(drop)
}

/// Waits for an engine-created TAP in its pod namespace, then sets it up like a pod's eth0.
fn configure_tap(tap: &TapPod) -> io::Result<()> {
    let deadline = Instant::now() + TAP_APPEAR_TIMEOUT;
    while tap.netns.ip(&["link", "show", "dev", &tap.ifname]).is_err() {
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "TAP {} did not appear in netns {}",
                tap.ifname,
                tap.netns.name()
            )));
        }
        std::thread::sleep(READY_POLL);
    }
    configure_pod_if(&tap.netns, &tap.ifname, tap.ip, tap.gateway)?;
    if let Some(mtu) = tap.mtu {
        set_mtu(&tap.netns, &tap.ifname, mtu)?;
    }
    Ok(())
}

fn set_mtu(ns: &Netns, ifname: &str, mtu: u16) -> io::Result<()> {
    ns.ip(&["link", "set", "dev", ifname, "mtu", &mtu.to_string()])
        .map(drop)
}

/// A node's place on the underlay of an overlay cluster.
#[derive(Debug, Clone, Copy)]
struct Underlay {
    ip: Ipv4Addr,
    vtep_mac: [u8; 6],
}

/// Configures a pod's interface as every pod of a [`Cluster`] is: `IP/32` on the interface,
/// up, `GW dev IF scope link`, `default via GW dev IF`. Public so a baseline (the kernel
/// forwarding between the same kind of pods) can set its pods up identically.
pub fn configure_pod_if(ns: &Netns, ifname: &str, ip: Ipv4Addr, gw: Ipv4Addr) -> io::Result<()> {
    let gw = gw.to_string();
    ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", ifname])?;
    ns.ip(&["link", "set", ifname, "up"])?;
    ns.ip(&["route", "add", &gw, "dev", ifname, "scope", "link"])?;
    ns.ip(&["route", "add", "default", "via", &gw, "dev", ifname])?;
    Ok(())
}

/// A pod of a built [`Cluster`].
#[derive(Debug)]
pub struct PodHandle {
    name: String,
    node: String,
    kind: PortKindDef,
    ring: RingDef,
    ip: Ipv4Addr,
    gateway: Ipv4Addr,
    ifname: String,
    host_ifname: Option<String>,
    netns: Arc<Netns>,
}

impl PodHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node this pod lives on.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn kind(&self) -> PortKindDef {
        self.kind
    }

    /// The AF_PACKET ring flavour of the pod's port (always V2 for TAP pods, which have none).
    pub fn ring(&self) -> RingDef {
        match self.kind {
            PortKindDef::AfPacket => self.ring,
            PortKindDef::Tap => RingDef::V2,
        }
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The pod's interface: `eth0` (afpacket) or the TAP's name (tap).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The veth host end in the node namespace (afpacket pods only).
    pub fn host_ifname(&self) -> Option<&str> {
        self.host_ifname.as_deref()
    }

    /// The MAC of the pod's interface, read now (a TAP pod has one only while its engine runs).
    pub fn mac(&self) -> io::Result<[u8; 6]> {
        self.netns.mac(&self.ifname)
    }
}

/// A cluster of namespaces: nodes running `sluice run`, pods attached to them.
///
/// Drop stops the engines (printing their logs to stderr first if the thread is panicking),
/// then deletes the namespaces, then the temp dir.
#[derive(Debug)]
pub struct Cluster {
    name: String,
    config_path: PathBuf,
    overlay: Option<OverlayDef>,
    nodes: Vec<NodeHandle>,
    pods: Vec<PodHandle>,
    /// The bridge namespace of an overlay of 3 or more nodes.
    underlay: Option<Netns>,
    dir: TempDir,
}

impl Cluster {
    /// Builds the network ([`Cluster::build_network_only`]) and starts and waits for every
    /// node's engine ([`Cluster::start_engines`]).
    pub fn build(sluice_bin: &Path, nodes: Vec<NodeDef>) -> io::Result<Cluster> {
        let mut cluster = Cluster::build_network_only(nodes)?;
        cluster.start_engines(sluice_bin)?;
        Ok(cluster)
    }

    /// Everything but the engines: the temp dir, a namespace per node (lo up, forwarding off and
    /// read back, IPv6 off, raw drop on the engine's interfaces) and per pod (afpacket: veth with
    /// `eth0` addressed and routed in the pod; tap: nothing until an engine runs), and the
    /// cluster file. On error, whatever was built is removed.
    pub fn build_network_only(nodes: Vec<NodeDef>) -> io::Result<Cluster> {
        Cluster::build_inner(None, nodes)
    }

    /// A cluster whose nodes are joined by an overlay: [`Cluster::build_overlay_network_only`],
    /// then the engines of the sluice nodes (kernel nodes run none).
    pub fn build_overlay(
        sluice_bin: &Path,
        overlay: OverlayDef,
        nodes: Vec<NodeDef>,
    ) -> io::Result<Cluster> {
        let mut cluster = Cluster::build_overlay_network_only(overlay, nodes)?;
        cluster.start_engines(sluice_bin)?;
        Ok(cluster)
    }

    /// Everything [`Cluster::build_network_only`] builds, plus the underlay and the overlay:
    /// - 2 nodes: one veth pair, [`UPLINK`] in each node namespace; 3 or more: an `underlay`
    ///   namespace with a bridge [`UNDERLAY_BRIDGE`] and a veth per node ([`UPLINK`] in the
    ///   node, `u<i>` enslaved to the bridge). Every underlay link gets the overlay's MTU.
    /// - Node `i` has underlay address `192.168.100.(i+1)/24` and VTEP MAC
    ///   [`default_vtep_mac`], both written to the cluster file; on a sluice node `ul0` holds
    ///   no address and is one of the engine's interfaces (raw drop in the node kernel).
    /// - Pods' interfaces get the pod MTU ([`OverlayDef::pod_mtu`]).
    /// - Kernel nodes ([`DataplaneDef::Kernel`]) are set up as flannel's VXLAN backend does.
    ///
    /// Needs at least 2 nodes; kernel nodes need a VXLAN overlay and afpacket pods.
    pub fn build_overlay_network_only(
        overlay: OverlayDef,
        nodes: Vec<NodeDef>,
    ) -> io::Result<Cluster> {
        Cluster::build_inner(Some(overlay), nodes)
    }

    fn build_inner(overlay: Option<OverlayDef>, nodes: Vec<NodeDef>) -> io::Result<Cluster> {
        validate(&nodes, overlay.as_ref())?;
        let dir = TempDir::new()?;
        let id = next_id();
        let mut cluster = Cluster {
            name: format!("t{}x{id}", std::process::id()),
            config_path: dir.0.join("cluster.yaml"),
            overlay,
            nodes: Vec::new(),
            pods: Vec::new(),
            underlay: None,
            dir,
        };
        for (i, def) in nodes.iter().enumerate() {
            cluster.add_node(i, def)?;
        }
        if let Some(overlay) = cluster.overlay.clone() {
            cluster.build_underlay(&overlay)?;
            for node in &cluster.nodes {
                if node.dataplane == DataplaneDef::Kernel {
                    setup_kernel_vtep(node, &cluster.nodes, &overlay)?;
                }
            }
        }
        for node in &cluster.nodes {
            install_raw_drop(&node.netns, &node.engine_ifaces, &cluster.dir.0)?;
        }
        let yaml = cluster.yaml()?;
        fs::write(&cluster.config_path, yaml)?;
        Ok(cluster)
    }

    fn add_node(&mut self, index: usize, def: &NodeDef) -> io::Result<()> {
        let gateway = first_host(&def.pod_cidr)?;
        let kernel = def.dataplane == DataplaneDef::Kernel;
        let pod_mtu = self.overlay.as_ref().map(OverlayDef::pod_mtu);
        let netns = Netns::new(&def.name)?;
        if kernel {
            setup_kernel_node(&netns)?;
        } else {
            setup_node_kernel(&netns)?;
        }
        let admin_socket = self.dir.0.join(format!("{}.sock", def.name));
        // sockaddr_un.sun_path is 108 bytes, NUL included.
        if admin_socket.as_os_str().len() >= 108 {
            return Err(invalid(format!(
                "admin socket path {} too long for a Unix socket (set TMPDIR shorter)",
                admin_socket.display()
            )));
        }
        let mut node = NodeHandle {
            name: def.name.clone(),
            pod_cidr: def.pod_cidr.clone(),
            gateway,
            dataplane: def.dataplane,
            underlay: self.overlay.as_ref().map(|_| Underlay {
                ip: underlay_ip(index),
                vtep_mac: default_vtep_mac(&def.name),
            }),
            netns,
            admin_socket,
            config_path: self.config_path.clone(),
            log_path: self.dir.0.join(format!("{}.log", def.name)),
            engine_ifaces: Vec::new(),
            taps: Vec::new(),
            engine: Mutex::new(EngineState::default()),
        };
        for pod in &def.pods {
            let netns = Arc::new(Netns::new(&pod.name)?);
            let (ifname, host_ifname) = match pod.kind {
                PortKindDef::AfPacket => {
                    let host = short_ifname("v", &pod.name);
                    veth(&netns, "eth0", &node.netns, &host)?;
                    configure_pod_if(&netns, "eth0", pod.ip, gateway)?;
                    if let Some(mtu) = pod_mtu {
                        // The host end keeps 1500: the veth would otherwise drop what a
                        // misconfigured pod sends before anyone could answer it.
                        set_mtu(&netns, "eth0", mtu)?;
                    }
                    if kernel {
                        // As bench::forwarding's KernelTopo: the gateway /32 on the host end,
                        // a /32 route per pod.
                        node.netns
                            .ip(&["addr", "add", &format!("{gateway}/32"), "dev", &host])?;
                        node.netns.ip(&[
                            "route",
                            "add",
                            &format!("{}/32", pod.ip),
                            "dev",
                            &host,
                        ])?;
                    } else {
                        node.engine_ifaces.push(host.clone());
                    }
                    ("eth0".to_string(), Some(host))
                }
                PortKindDef::Tap => {
                    let tap = short_ifname("tap", &pod.name);
                    node.taps.push(TapPod {
                        netns: Arc::clone(&netns),
                        ifname: tap.clone(),
                        ip: pod.ip,
                        gateway,
                        mtu: pod_mtu,
                    });
                    (tap, None)
                }
            };
            self.pods.push(PodHandle {
                name: pod.name.clone(),
                node: def.name.clone(),
                kind: pod.kind,
                ring: pod.ring,
                ip: pod.ip,
                gateway,
                ifname,
                host_ifname,
                netns,
            });
        }
        self.nodes.push(node);
        Ok(())
    }

    /// The links between the nodes' `ul0` (see [`Cluster::build_overlay_network_only`]).
    fn build_underlay(&mut self, overlay: &OverlayDef) -> io::Result<()> {
        let mtu = overlay.mtu.to_string();
        if let [a, b] = self.nodes.as_slice() {
            veth(&a.netns, UPLINK, &b.netns, UPLINK)?;
        } else {
            let ns = Netns::new("underlay")?;
            // Nothing of its own on the underlay: no IPv6 link-local chatter from the bridge.
            disable_ipv6(&ns)?;
            ns.ip(&["link", "add", UNDERLAY_BRIDGE, "type", "bridge"])?;
            ns.ip(&["link", "set", UNDERLAY_BRIDGE, "mtu", &mtu])?;
            ns.ip(&["link", "set", UNDERLAY_BRIDGE, "up"])?;
            for (i, node) in self.nodes.iter().enumerate() {
                let port = format!("u{i}");
                veth(&node.netns, UPLINK, &ns, &port)?;
                ns.ip(&["link", "set", &port, "mtu", &mtu])?;
                ns.ip(&["link", "set", &port, "master", UNDERLAY_BRIDGE])?;
            }
            self.underlay = Some(ns);
        }
        for node in &mut self.nodes {
            node.netns.ip(&["link", "set", UPLINK, "mtu", &mtu])?;
            match node.dataplane {
                DataplaneDef::Sluice => node.engine_ifaces.push(UPLINK.to_string()),
                DataplaneDef::Kernel => {
                    let ip = node.underlay_ip().unwrap_or(Ipv4Addr::UNSPECIFIED);
                    node.netns.ip(&[
                        "addr",
                        "add",
                        &format!("{ip}/{UNDERLAY_PREFIX_LEN}"),
                        "dev",
                        UPLINK,
                    ])?;
                    // ul0 stands for a real NIC, which would segment the kernel's GSO tunnel
                    // super-frames (SKB_GSO_UDP_TUNNEL) on the wire; a veth hands them over
                    // whole, and the peer engine's AF_PACKET socket with PACKET_VNET_HDR cannot
                    // represent them (the kernel drops them there). So tunnel segmentation is
                    // done in software before ul0, as the NIC would have. (Checksums left
                    // CHECKSUM_PARTIAL are fine: the engine completes them.)
                    node.netns.exec_ok(&[
                        "ethtool",
                        "-K",
                        UPLINK,
                        "tx-udp_tnl-segmentation",
                        "off",
                        "tx-udp_tnl-csum-segmentation",
                        "off",
                    ])?;
                }
            }
        }
        Ok(())
    }

    /// Starts every node's engine with this binary and waits for each to be ready (see
    /// [`NodeHandle::start_engine`]).
    pub fn start_engines(&mut self, sluice_bin: &Path) -> io::Result<()> {
        if !sluice_bin.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("sluice binary {} not found", sluice_bin.display()),
            ));
        }
        // Absolute, because `ip netns exec` runs it from wherever we are.
        let bin = fs::canonicalize(sluice_bin)?;
        let sluice_nodes = || {
            self.nodes
                .iter()
                .filter(|n| n.dataplane == DataplaneDef::Sluice)
        };
        for node in sluice_nodes() {
            lock(&node.engine).bin = Some(bin.clone());
        }
        for node in sluice_nodes() {
            node.start_engine()?;
        }
        Ok(())
    }

    /// The overlay, if the cluster has one.
    pub fn overlay(&self) -> Option<&OverlayDef> {
        self.overlay.as_ref()
    }

    /// The namespace holding the underlay bridge (overlay clusters of 3 or more nodes).
    pub fn underlay_netns(&self) -> Option<&Netns> {
        self.underlay.as_ref()
    }

    /// The cluster's name in its file (`t<pid>x<n>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The temp dir holding the cluster file, admin sockets and engine logs.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// The node of that name; panics (naming the known ones) if there is none.
    pub fn node(&self, name: &str) -> &NodeHandle {
        match self.nodes.iter().find(|n| n.name == name) {
            Some(n) => n,
            None => panic!(
                "no node {name:?} in cluster (nodes: {:?})",
                self.nodes.iter().map(|n| &n.name).collect::<Vec<_>>()
            ),
        }
    }

    /// The pod of that name; panics (naming the known ones) if there is none.
    pub fn pod(&self, name: &str) -> &PodHandle {
        match self.pods.iter().find(|p| p.name == name) {
            Some(p) => p,
            None => panic!(
                "no pod {name:?} in cluster (pods: {:?})",
                self.pods.iter().map(|p| &p.name).collect::<Vec<_>>()
            ),
        }
    }

    pub fn nodes(&self) -> &[NodeHandle] {
        &self.nodes
    }

    pub fn pods(&self) -> &[PodHandle] {
        &self.pods
    }

    /// The cluster file, as written to [`Cluster::config_path`].
    fn yaml(&self) -> io::Result<String> {
        let q = |s: &str| serde_json::to_string(s).map_err(io::Error::other);
        let mut y = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(y, "cluster:");
        let _ = writeln!(y, "  name: {}", self.name);
        let _ = writeln!(y, "  cluster_cidr: {CLUSTER_CIDR}");
        if let Some(o) = &self.overlay {
            let _ = writeln!(y, "  overlay:");
            let _ = writeln!(y, "    mode: {}", o.mode.as_str());
            if let Some(vni) = o.vni {
                let _ = writeln!(y, "    vni: {vni}");
            }
            if let Some(port) = o.port {
                let _ = writeln!(y, "    port: {port}");
            }
            if let Some(c) = o.udp_checksum {
                let _ = writeln!(y, "    udp_checksum: {c}");
            }
            let _ = writeln!(y, "    mtu: {}", o.mtu);
        }
        let _ = writeln!(y, "nodes:");
        for node in &self.nodes {
            let sock = node.admin_socket.to_str().ok_or_else(|| {
                invalid(format!("non-UTF-8 path {}", node.admin_socket.display()))
            })?;
            let _ = writeln!(y, "  - name: {}", node.name);
            let _ = writeln!(y, "    pod_cidr: {}", node.pod_cidr);
            let _ = writeln!(y, "    gateway: {}", node.gateway);
            if node.dataplane == DataplaneDef::Kernel {
                // No engine, no admin socket.
                let _ = writeln!(y, "    dataplane: kernel");
            } else {
                let _ = writeln!(y, "    admin_socket: {}", q(sock)?);
            }
            if let Some(u) = node.underlay {
                let _ = writeln!(y, "    underlay:");
                let _ = writeln!(y, "      interface: {}", q(UPLINK)?);
                let _ = writeln!(y, "      address: {}/{UNDERLAY_PREFIX_LEN}", u.ip);
                let _ = writeln!(y, "      vtep_mac: {}", q(&mac_string(u.vtep_mac))?);
                let v3 = self
                    .overlay
                    .as_ref()
                    .is_some_and(|o| o.uplink_ring == RingDef::V3);
                if v3 && node.dataplane == DataplaneDef::Sluice {
                    let _ = writeln!(y, "      ring: v3");
                }
            }
            let pods: Vec<&PodHandle> = self.pods.iter().filter(|p| p.node == node.name).collect();
            // A kernel node's pods are the kernel's business: no engine port to describe.
            if pods.is_empty() || node.dataplane == DataplaneDef::Kernel {
                let _ = writeln!(y, "    pods: []");
                continue;
            }
            let _ = writeln!(y, "    pods:");
            for pod in pods {
                let _ = writeln!(y, "      - name: {}", pod.name);
                let _ = writeln!(y, "        ip: {}", pod.ip);
                let _ = writeln!(y, "        port:");
                match pod.kind {
                    PortKindDef::AfPacket => {
                        let host = pod.host_ifname.as_deref().unwrap_or_default();
                        let _ = writeln!(y, "          kind: afpacket");
                        let _ = writeln!(y, "          interface: {}", q(host)?);
                        if pod.ring == RingDef::V3 {
                            let _ = writeln!(y, "          ring: v3");
                        }
                    }
                    PortKindDef::Tap => {
                        let _ = writeln!(y, "          kind: tap");
                        let _ = writeln!(y, "          interface: {}", q(&pod.ifname)?);
                        let _ = writeln!(y, "          netns: {}", q(pod.netns.name())?);
                    }
                }
            }
        }
        Ok(y)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                if node.dataplane == DataplaneDef::Kernel {
                    eprintln!(
                        "---- kernel node {} ----\n{}---- end of kernel node {} ----",
                        node.name,
                        kernel_node_state(&node.netns),
                        node.name
                    );
                    continue;
                }
                eprintln!(
                    "---- engine log of node {} ({}) ----\n{}---- end of log of {} ----",
                    node.name,
                    node.log_path.display(),
                    node.engine_log(),
                    node.name
                );
            }
        }
        for node in &self.nodes {
            if let Err(e) = node.stop_engine() {
                eprintln!("testbed: node {}: stopping engine: {e}", node.name);
            }
        }
        self.pods.clear();
        self.nodes.clear();
        self.underlay = None;
        // `dir` is removed when the fields drop, after the namespaces.
    }
}

fn validate(nodes: &[NodeDef], overlay: Option<&OverlayDef>) -> io::Result<()> {
    let mut node_names = std::collections::HashSet::new();
    let mut pod_names = std::collections::HashSet::new();
    if let Some(o) = overlay {
        o.validate()?;
        if !(2..=UNDERLAY_MAX_NODES).contains(&nodes.len()) {
            return Err(invalid(format!(
                "an overlay joins 2..={UNDERLAY_MAX_NODES} nodes, not {}",
                nodes.len()
            )));
        }
    }
    for node in nodes {
        check_name("node", &node.name)?;
        first_host(&node.pod_cidr)?;
        if !node_names.insert(node.name.as_str()) {
            return Err(invalid(format!("duplicate node name {:?}", node.name)));
        }
        if node.dataplane == DataplaneDef::Kernel {
            match overlay {
                Some(o) if o.mode == OverlayModeDef::Vxlan => {}
                _ => {
                    return Err(invalid(format!(
                        "kernel node {:?}: a kernel node needs a VXLAN overlay (Cluster::build_overlay)",
                        node.name
                    )))
                }
            }
        }
        for pod in &node.pods {
            check_name("pod", &pod.name)?;
            if !pod_names.insert(pod.name.as_str()) {
                return Err(invalid(format!("duplicate pod name {:?}", pod.name)));
            }
            if node.dataplane == DataplaneDef::Kernel && pod.kind != PortKindDef::AfPacket {
                return Err(invalid(format!(
                    "pod {:?} on kernel node {:?}: kernel nodes have veth (afpacket) pods only",
                    pod.name, node.name
                )));
            }
        }
    }
    Ok(())
}

fn disable_ipv6(ns: &Netns) -> io::Result<()> {
    if Path::new("/proc/sys/net/ipv6").exists() {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
    }
    Ok(())
}

/// A kernel node routes: forwarding on (read back); IPv6 off, as on a sluice node.
fn setup_kernel_node(ns: &Netns) -> io::Result<()> {
    for key in ["net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding"] {
        ns.sysctl(key, "1")?;
        let got = ns.read_sysctl(key)?;
        if got != "1" {
            return Err(io::Error::other(format!(
                "netns {}: {key} reads {got:?} after setting 1",
                ns.name()
            )));
        }
    }
    disable_ipv6(ns)
}

/// What flannel's VXLAN backend writes on a node (flannel `backend/vxlan`): its VTEP
/// `flannel.1` (VNI, local underlay address, port, no learning, the node's VTEP MAC, the pod
/// MTU) holding the network address of the node's pod CIDR as a /32, and for every other node
/// a route to its pod CIDR via its network address on-link, a permanent neighbour entry giving
/// that address the peer's VTEP MAC, and an FDB entry sending that MAC to the peer's underlay
/// address.
fn setup_kernel_vtep(
    node: &NodeHandle,
    all: &[NodeHandle],
    overlay: &OverlayDef,
) -> io::Result<()> {
    let ns = &node.netns;
    let Some(local) = node.underlay else {
        return Err(invalid(format!("kernel node {}: no underlay", node.name)));
    };
    let (net, _) = network_of(&node.pod_cidr)?;
    ns.ip(&[
        "link",
        "add",
        KERNEL_VTEP,
        "type",
        "vxlan",
        "id",
        &overlay.effective_vni().to_string(),
        "dev",
        UPLINK,
        "local",
        &local.ip.to_string(),
        "dstport",
        &overlay.effective_port().to_string(),
        "nolearning",
    ])?;
    ns.ip(&[
        "link",
        "set",
        KERNEL_VTEP,
        "address",
        &mac_string(local.vtep_mac),
        "mtu",
        &overlay.pod_mtu().to_string(),
    ])?;
    ns.ip(&["link", "set", KERNEL_VTEP, "up"])?;
    ns.ip(&["addr", "add", &format!("{net}/32"), "dev", KERNEL_VTEP])?;
    for peer in all.iter().filter(|p| p.name != node.name) {
        let Some(remote) = peer.underlay else {
            return Err(invalid(format!("node {}: no underlay", peer.name)));
        };
        let (peer_net, _) = network_of(&peer.pod_cidr)?;
        let peer_net = peer_net.to_string();
        let peer_mac = mac_string(remote.vtep_mac);
        ns.ip(&[
            "route",
            "add",
            &peer.pod_cidr,
            "via",
            &peer_net,
            "dev",
            KERNEL_VTEP,
            "onlink",
        ])?;
        ns.ip(&[
            "neigh",
            "add",
            &peer_net,
            "lladdr",
            &peer_mac,
            "dev",
            KERNEL_VTEP,
            "nud",
            "permanent",
        ])?;
        ns.exec_ok(&[
            "bridge",
            "fdb",
            "append",
            &peer_mac,
            "dev",
            KERNEL_VTEP,
            "dst",
            &remote.ip.to_string(),
        ])?;
    }
    Ok(())
}

/// A kernel node's links, addresses, routes, neighbours and FDB, for a failing test's output.
fn kernel_node_state(ns: &Netns) -> String {
    let mut out = String::new();
    for argv in [
        &["ip", "-d", "-s", "link", "show"][..],
        &["ip", "addr", "show"],
        &["ip", "route", "show"],
        &["ip", "neigh", "show"],
        &["bridge", "fdb", "show", "dev", KERNEL_VTEP],
    ] {
        let _ = writeln!(out, "$ {}", argv.join(" "));
        match ns.exec(argv) {
            Ok(o) => {
                out.push_str(&String::from_utf8_lossy(&o.stdout));
                out.push_str(&String::from_utf8_lossy(&o.stderr));
            }
            Err(e) => {
                let _ = writeln!(out, "{e}");
            }
        }
    }
    out
}

/// Forwarding off (set explicitly: a new namespace copies IPv4 settings from the root one) and
/// read back; IPv6 off before any interface exists, so the node kernel never holds an address
/// (not even link-local) on the engine's interfaces.
fn setup_node_kernel(ns: &Netns) -> io::Result<()> {
    for key in ["net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding"] {
        ns.sysctl(key, "0")?;
        let got = ns.read_sysctl(key)?;
        if got != "0" {
            return Err(io::Error::other(format!(
                "netns {}: {key} reads {got:?} after setting 0",
                ns.name()
            )));
        }
    }
    ns.sysctl("net.ipv4.conf.default.forwarding", "0")?;
    disable_ipv6(ns)
}

/// Name of the nft tables (families ip, ip6, arp) that drop what arrives on engine interfaces.
pub const RAW_TABLE: &str = "sluice_raw";

/// Makes the node kernel drop everything arriving on the engine's interfaces, after the
/// AF_PACKET taps saw it: nft `ip`/`ip6` prerouting at raw priority and `arp` input (never
/// `netdev` ingress, which runs before the taps); iptables raw PREROUTING if nft is missing.
fn install_raw_drop(ns: &Netns, ifaces: &[String], dir: &Path) -> io::Result<()> {
    if ifaces.is_empty() {
        return Ok(());
    }
    let set = ifaces
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    if nft_available() {
        let mut rules = String::new();
        for (family, hook, prio) in [
            ("ip", "prerouting", "raw"),
            ("ip6", "prerouting", "raw"),
            ("arp", "input", "0"),
        ] {
            let _ = writeln!(
                rules,
                "table {family} {RAW_TABLE} {{\n  chain pre {{\n    type filter hook {hook} \
                 priority {prio}; policy accept;\n    iifname {{ {set} }} counter drop\n  }}\n}}"
            );
        }
        let file = dir.join(format!("{}.nft", ns.name()));
        fs::write(&file, rules)?;
        let path = file
            .to_str()
            .ok_or_else(|| invalid(format!("non-UTF-8 path {}", file.display())))?;
        ns.exec_ok(&["nft", "-f", path])?;
    } else {
        for tool in ["iptables", "ip6tables"] {
            for i in ifaces {
                ns.exec_ok(&[tool, "-t", "raw", "-A", "PREROUTING", "-i", i, "-j", "DROP"])?;
            }
        }
    }
    Ok(())
}

fn nft_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("nft")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// How long [`Capture::start`] waits for tcpdump to say it is listening.
const CAPTURE_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `tcpdump` writing every frame of one interface (whole frames, `-s 0`) of a namespace
/// to a pcap file, for an independent judge such as [`tshark_fields`]. Stopped (SIGINT, so
/// the file is complete) by [`Capture::stop`]; killed on drop.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    path: PathBuf,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

/// What tcpdump said when it stopped.
#[derive(Debug, Clone)]
pub struct CaptureStats {
    pub path: PathBuf,
    /// "N packets captured".
    pub captured: u64,
    /// "N packets dropped by kernel" (the capture missed them).
    pub dropped_by_kernel: u64,
    /// tcpdump's whole stderr.
    pub log: String,
}

impl Capture {
    /// Starts `tcpdump -i IFACE -n -s 0 -U -w PATH FILTER...` in `ns` and waits until it is
    /// listening. `filter` is a pcap filter expression ("" for everything).
    pub fn start(ns: &Netns, iface: &str, filter: &str, path: &Path) -> io::Result<Capture> {
        check_ifname(iface)?;
        let file = path
            .to_str()
            .ok_or_else(|| invalid(format!("non-UTF-8 path {}", path.display())))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name(), "tcpdump", "-i", iface])
            .args(["-n", "-s", "0", "-U", "-w", file])
            .args(filter.split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting tcpdump on {iface}: {e}")))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let pipe = child.stderr.take();
        let log = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            let Some(pipe) = pipe else { return };
            let mut tx = Some(tx);
            for line in io::BufRead::lines(io::BufReader::new(pipe)).map_while(Result::ok) {
                let listening = line.contains("listening on");
                let mut l = lock(&log);
                l.push_str(&line);
                l.push('\n');
                drop(l);
                if listening {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let mut capture = Capture {
            child: Some(child),
            path: path.to_path_buf(),
            stderr,
            reader: Some(reader),
        };
        if rx.recv_timeout(CAPTURE_READY_TIMEOUT).is_err() {
            let log = capture.kill_and_log();
            return Err(io::Error::other(format!(
                "tcpdump on {iface} in {} did not start listening: {log}",
                ns.name()
            )));
        }
        Ok(capture)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn kill_and_log(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        lock(&self.stderr).clone()
    }

    /// Stops tcpdump with SIGINT (it completes the file) and returns its statistics.
    pub fn stop(mut self) -> io::Result<CaptureStats> {
        let Some(mut child) = self.child.take() else {
            return Err(io::Error::other("capture already stopped"));
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: `pid` is our own unreaped child (`ip netns exec` execs tcpdump in place),
            // so the pid cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let deadline = Instant::now() + STOP_GRACE;
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() >= deadline {
                child.kill()?;
                break child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let log = lock(&self.stderr).clone();
        if !status.success() {
            return Err(io::Error::other(format!("tcpdump exited {status}: {log}")));
        }
        let count = |what: &str| {
            log.lines()
                .find(|l| l.ends_with(what))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Ok(CaptureStats {
            path: self.path.clone(),
            captured: count("packets captured"),
            dropped_by_kernel: count("packets dropped by kernel"),
            log,
        })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.kill_and_log();
    }
}

/// tshark preferences for judging captured frames one by one: verify the IPv4, UDP and TCP
/// checksums, and no TCP reassembly or sequence analysis (which would call a retransmission
/// malformed). Pass them in [`tshark_fields`]' `args`.
pub const TSHARK_JUDGE: [&str; 10] = [
    "-o",
    "ip.check_checksum:TRUE",
    "-o",
    "udp.check_checksum:TRUE",
    "-o",
    "tcp.check_checksum:TRUE",
    "-o",
    "tcp.desegment_tcp_streams:FALSE",
    "-o",
    "tcp.analyze_sequence_numbers:FALSE",
];

/// Decodes a pcap file with `tshark -r PATH ARGS... -T fields -e F1 -e F2 ...` and returns one
/// row per frame, one string per field (tshark joins the values of a field that occurs more
/// than once, e.g. in outer and inner headers, with ','). `args` carries decode-as rules and
/// preferences (`-d udp.port==8472,vxlan`, `-o ip.check_checksum:TRUE`) and display filters.
pub fn tshark_fields(path: &Path, args: &[&str], fields: &[&str]) -> io::Result<Vec<Vec<String>>> {
    let file = path
        .to_str()
        .ok_or_else(|| invalid(format!("non-UTF-8 path {}", path.display())))?;
    let mut argv = vec!["-r", file, "-n"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a"]);
    argv.extend_from_slice(&["-E", "aggregator=,"]);
    for f in fields {
        argv.push("-e");
        argv.push(f);
    }
    let out = run_cmd("tshark", &argv)?;
    Ok(out
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_host_of_cidrs() {
        assert_eq!(
            first_host("10.244.1.0/24").ok(),
            Some(Ipv4Addr::new(10, 244, 1, 1))
        );
        assert_eq!(
            first_host("10.244.1.77/24").ok(),
            Some(Ipv4Addr::new(10, 244, 1, 1))
        );
        assert_eq!(
            first_host("10.0.0.0/8").ok(),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(
            first_host("0.0.0.0/0").ok(),
            Some(Ipv4Addr::new(0, 0, 0, 1))
        );
        for bad in [
            "10.244.1.0",
            "10.244.1.0/31",
            "10.244.1/24",
            "x/24",
            "10.0.0.0/",
        ] {
            let e = first_host(bad).expect_err(bad);
            assert!(e.to_string().contains("bad pod_cidr"), "{e}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(sanitize_role("node-1"), "node-1");
        assert_eq!(sanitize_role("a b/c"), "a-b-c");
        assert_eq!(sanitize_role(""), "ns");
        assert_eq!(sanitize_role("x".repeat(40).as_str()).len(), ROLE_MAX);
        assert_eq!(pid_of("sl123-4-node", NS_PREFIX), Some(123));
        assert_eq!(pid_of("sl-t-123-4", NS_PREFIX), None);
        assert_eq!(pid_of("sl123", NS_PREFIX), None);
        assert_eq!(pid_of("slab-1", NS_PREFIX), None);
        assert_eq!(pid_of("sluice-tb-77-3", DIR_PREFIX), Some(77));
        let n = short_ifname("tap", "a-very-long-pod-name");
        assert!(n.len() <= IFNAME_MAX && n.starts_with("tap"), "{n}");
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("0123456789abcdef").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_name("pod", "web-1.x").is_ok());
        assert!(check_name("pod", "Web").is_err());
        assert!(check_name("pod", "-a").is_err());
        assert!(check_name("pod", "a: b").is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:00:0a:f4:01:0A"),
            Some([2, 0, 0xa, 0xf4, 1, 0xa])
        );
        assert_eq!(parse_mac("02:00:0a:f4:01"), None);
        assert_eq!(parse_mac("02:00:0a:f4:01:0a:00"), None);
        assert_eq!(parse_mac("zz:00:0a:f4:01:0a"), None);
    }
}
