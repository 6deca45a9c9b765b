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

/// A node of a cluster to build: its pods' gateway is the first host of `pod_cidr`.
#[derive(Debug, Clone)]
pub struct NodeDef {
    pub name: String,
    /// `a.b.c.d/len`.
    pub pod_cidr: String,
    pub pods: Vec<PodDef>,
}

impl NodeDef {
    pub fn new(name: &str, pod_cidr: &str, pods: Vec<PodDef>) -> NodeDef {
        NodeDef {
            name: name.to_string(),
            pod_cidr: pod_cidr.to_string(),
            pods,
        }
    }
}

/// Parses `a.b.c.d/len` and returns its first host (the network address + 1).
fn first_host(cidr: &str) -> io::Result<Ipv4Addr> {
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
    Ok(Ipv4Addr::from((u32::from(addr) & mask) | 1))
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
}

#[derive(Debug, Default)]
struct EngineState {
    bin: Option<PathBuf>,
    child: Option<Child>,
}

/// A node of a built [`Cluster`]: its namespace and its engine.
#[derive(Debug)]
pub struct NodeHandle {
    name: String,
    pod_cidr: String,
    gateway: Ipv4Addr,
    netns: Netns,
    admin_socket: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    /// Interfaces of this namespace the engine owns (host ends of afpacket pods).
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

    /// Interfaces of the node namespace that the engine owns (the host ends of afpacket pods).
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
    configure_pod_if(&tap.netns, &tap.ifname, tap.ip, tap.gateway)
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
    nodes: Vec<NodeHandle>,
    pods: Vec<PodHandle>,
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
        validate(&nodes)?;
        let dir = TempDir::new()?;
        let id = next_id();
        let mut cluster = Cluster {
            name: format!("t{}x{id}", std::process::id()),
            config_path: dir.0.join("cluster.yaml"),
            nodes: Vec::new(),
            pods: Vec::new(),
            dir,
        };
        for def in &nodes {
            cluster.add_node(def)?;
        }
        let yaml = cluster.yaml()?;
        fs::write(&cluster.config_path, yaml)?;
        Ok(cluster)
    }

    fn add_node(&mut self, def: &NodeDef) -> io::Result<()> {
        let gateway = first_host(&def.pod_cidr)?;
        let netns = Netns::new(&def.name)?;
        setup_node_kernel(&netns)?;
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
                    node.engine_ifaces.push(host.clone());
                    ("eth0".to_string(), Some(host))
                }
                PortKindDef::Tap => {
                    let tap = short_ifname("tap", &pod.name);
                    node.taps.push(TapPod {
                        netns: Arc::clone(&netns),
                        ifname: tap.clone(),
                        ip: pod.ip,
                        gateway,
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
        install_raw_drop(&node.netns, &node.engine_ifaces, &self.dir.0)?;
        self.nodes.push(node);
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
        for node in &self.nodes {
            lock(&node.engine).bin = Some(bin.clone());
        }
        for node in &self.nodes {
            node.start_engine()?;
        }
        Ok(())
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
        let _ = writeln!(y, "nodes:");
        for node in &self.nodes {
            let sock = node.admin_socket.to_str().ok_or_else(|| {
                invalid(format!("non-UTF-8 path {}", node.admin_socket.display()))
            })?;
            let _ = writeln!(y, "  - name: {}", node.name);
            let _ = writeln!(y, "    pod_cidr: {}", node.pod_cidr);
            let _ = writeln!(y, "    gateway: {}", node.gateway);
            let _ = writeln!(y, "    admin_socket: {}", q(sock)?);
            let pods: Vec<&PodHandle> = self.pods.iter().filter(|p| p.node == node.name).collect();
            if pods.is_empty() {
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
        // `dir` is removed when the fields drop, after the namespaces.
    }
}

fn validate(nodes: &[NodeDef]) -> io::Result<()> {
    let mut node_names = std::collections::HashSet::new();
    let mut pod_names = std::collections::HashSet::new();
    for node in nodes {
        check_name("node", &node.name)?;
        first_host(&node.pod_cidr)?;
        if !node_names.insert(node.name.as_str()) {
            return Err(invalid(format!("duplicate node name {:?}", node.name)));
        }
        for pod in &node.pods {
            check_name("pod", &pod.name)?;
            if !pod_names.insert(pod.name.as_str()) {
                return Err(invalid(format!("duplicate pod name {:?}", pod.name)));
            }
        }
    }
    Ok(())
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
    if Path::new("/proc/sys/net/ipv6").exists() {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
    }
    Ok(())
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
