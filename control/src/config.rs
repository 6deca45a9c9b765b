//! The cluster file: its YAML schema, its validation, and the validated model.
//!
//! Owns the raw serde structs (every value wrapped in `serde_saphyr::Spanned` so a
//! semantic error can point at its line), the checks that turn them into a [`Cluster`],
//! and [`ConfigError`]. Promises:
//! - [`parse_str`] and [`load`] never panic, whatever the input (bad syntax, wrong types,
//!   truncated text, invalid UTF-8, huge or deeply nested documents).
//! - Unknown fields are rejected everywhere, so a typo is an error, not a silent default.
//! - Every error names the file, the line and column, the field path (`nodes[0].pods[1].ip`)
//!   when one can be found, what is wrong, and what would be valid.
//! - A [`Cluster`] returned by this module satisfies every rule written in the schema
//!   below; later stages (table compilation, the engine) may rely on them.
//!
//! ```yaml
//! cluster:
//!   name: demo                 # DNS label: 1-63 of [a-z0-9-], starts and ends alphanumeric
//!   cluster_cidr: 10.244.0.0/16
//!   service_cidr: 10.96.0.0/12 # optional, disjoint from cluster_cidr
//!   overlay:                   # optional; absent = no overlay (each node alone)
//!     mode: vxlan              # vxlan | udp (flannel's UDP backend)
//!     vni: 1                   # vxlan only: 0-16777215, default 1 (flannel's)
//!     port: 8472               # 1-65535; default 8472 (vxlan, flannel/Linux), 8285 (udp)
//!     udp_checksum: true       # vxlan only: outer UDP checksum computed (default) or 0
//!     mtu: 1500                # underlay MTU, 576-9000, default 1500; the pod MTU is
//!                              # mtu - 50 (vxlan) or mtu - 28 (udp) and must be >= 576
//! nodes:                       # at least one; unique DNS-label names
//!   - name: node-1
//!     pod_cidr: 10.244.1.0/24  # inside cluster_cidr, disjoint from other nodes', /30 or larger
//!     gateway: 10.244.1.1      # optional, default: first host of pod_cidr
//!     admin_socket: /run/sluice/node-1.sock  # optional, absolute; sluice nodes only
//!     dataplane: sluice        # optional: sluice (default) | kernel. A kernel node's pods are
//!                              # routed by Linux (e.g. flannel's flannel.1 VXLAN device): it is
//!                              # a peer of the sluice nodes but runs no engine (`sluice run`
//!                              # refuses it). Its pods are checked but not compiled. Needs
//!                              # cluster.overlay.
//!     underlay:                # required on every node when cluster.overlay is set, refused
//!                              # without it
//!       interface: ul0         # the engine's AF_PACKET uplink; required for sluice nodes,
//!                              # optional for kernel nodes; not a pod port's interface
//!       address: 192.168.50.1/24 # underlay address / underlay subnet prefix length (1-31):
//!                              # a host address, unique in the cluster, subnet disjoint from
//!                              # cluster_cidr and service_cidr
//!       gateway: 192.168.50.254 # optional: next hop to peers outside the subnet; a host of
//!                              # it. A sluice node without one must have every peer on its
//!                              # subnet.
//!       mac: "02:00:00:00:50:01" # optional, sluice nodes only: the engine's uplink MAC
//!                              # (default: the interface's own)
//!       ring: v2               # optional, sluice nodes only: v2 (default) | v3
//!       vtep_mac: "02:00:00:00:aa:01" # optional unicast MAC, unique in the cluster; default
//!                              # derived from the node name
//!                              # (dataplane::port::derived_mac("vtep/<name>")); VXLAN's
//!                              # inner MAC, unused (but accepted) in mode udp
//!     pods:
//!       - name: web-1          # unique on the node
//!         ip: 10.244.1.10      # host address in pod_cidr, not the gateway, unique in the cluster
//!         port:
//!           kind: afpacket     # afpacket | tap
//!           interface: veth-web1 # unique on the node
//!           netns: pod-web1    # tap only
//!           mac: "02:00:00:00:00:01" # optional, unicast
//!           ring: v2           # afpacket only: v2 (default) | v3
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::granit_parser::{Event, Parser};
use serde_saphyr::{MessageFormatter, Spanned, UserMessageFormatter};

pub use dataplane::config::OverlayMode;

use crate::net::{format_mac, parse_mac, Ipv4Net};

/// Longest Linux interface name, in bytes (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// Longest path a Unix socket can bind to, in bytes (sizeof sun_path - 1).
pub const MAX_SOCKET_PATH_LEN: usize = 107;
/// Longest named network namespace (a file name under /run/netns), in bytes.
pub const MAX_NETNS_LEN: usize = 255;
/// Longest prefix a node's pod_cidr may have: a /30 still holds a gateway and one pod.
pub const MAX_POD_PREFIX_LEN: u8 = 30;
/// Default VXLAN network identifier (flannel's).
pub const DEFAULT_VNI: u32 = 1;
/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// Default UDP port of VXLAN mode (flannel's and Linux's; IANA's is 4789).
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
/// Default UDP port of flannel's UDP mode.
pub const DEFAULT_UDP_PORT: u16 = 8285;
/// Default underlay MTU.
pub const DEFAULT_UNDERLAY_MTU: u16 = 1500;
/// Underlay MTU range accepted.
pub const MIN_UNDERLAY_MTU: u16 = 576;
pub const MAX_UNDERLAY_MTU: u16 = 9000;
/// Smallest pod MTU the overlay may leave (the IPv4 datagram every host must accept).
pub const MIN_POD_MTU: u16 = 576;

// ---------------------------------------------------------------------------------------
// The validated model.
// ---------------------------------------------------------------------------------------

/// A validated cluster file.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub cluster_cidr: Ipv4Net,
    pub service_cidr: Option<Ipv4Net>,
    /// How pods reach other nodes; `None`: every node alone.
    pub overlay: Option<Overlay>,
    pub nodes: Vec<Node>,
    /// The file this cluster was read from (as given to [`load`] or [`parse_str`]).
    pub source: PathBuf,
}

/// One node: the engine instance that owns `pod_cidr`.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub pod_cidr: Ipv4Net,
    /// The address the engine answers ARP for on pod ports (a host address of `pod_cidr`).
    pub gateway: Ipv4Addr,
    pub admin_socket: PathBuf,
    /// What routes this node's pods: sluice, or the Linux kernel (an overlay peer only).
    pub dataplane: Dataplane,
    /// The node on the underlay; `Some` on every node exactly when [`Cluster::overlay`] is.
    pub underlay: Option<Underlay>,
    pub pods: Vec<Pod>,
}

/// The overlay between the nodes (`cluster.overlay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlay {
    /// VXLAN or flannel's UDP encapsulation, with its VNI, port and checksum choice.
    pub mode: OverlayMode,
    /// The underlay MTU (IPv4 bytes).
    pub mtu: u16,
}

impl Overlay {
    /// The MTU pods must be configured with: the underlay MTU less the encapsulation.
    pub fn pod_mtu(&self) -> u16 {
        self.mtu.saturating_sub(self.mode.mtu_overhead())
    }
}

/// What routes a node's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataplane {
    /// A sluice engine (`sluice run --node`).
    Sluice,
    /// The Linux kernel (e.g. flannel's `flannel.1` VXLAN device): a peer only, no engine.
    Kernel,
}

impl Dataplane {
    pub fn as_str(&self) -> &'static str {
        match self {
            Dataplane::Sluice => "sluice",
            Dataplane::Kernel => "kernel",
        }
    }
}

/// A node's attachment to the underlay network.
#[derive(Debug, Clone, PartialEq)]
pub struct Underlay {
    /// The underlay interface (the engine's AF_PACKET uplink); always `Some` on a sluice node.
    pub interface: Option<String>,
    /// The node's underlay address: a host address of `subnet`, unique in the cluster.
    pub address: Ipv4Addr,
    /// The underlay subnet (`address` with its prefix length, host bits cleared).
    pub subnet: Ipv4Net,
    /// Next hop to peers outside `subnet`: a host of it, not `address`.
    pub gateway: Option<Ipv4Addr>,
    /// The engine's MAC on the uplink; `None`: the interface's own. Sluice nodes only.
    pub mac: Option<[u8; 6]>,
    /// The uplink's AF_PACKET ring (always V2 on a kernel node).
    pub ring: RingKind,
    /// The node's VTEP MAC (VXLAN inner MAC), given or derived from the node's name by
    /// [`default_vtep_mac`]; unique in the cluster.
    pub vtep_mac: [u8; 6],
}

/// The VTEP MAC of a node whose file gives none: stable, unicast, locally administered.
pub fn default_vtep_mac(node: &str) -> [u8; 6] {
    dataplane::port::derived_mac(&format!("vtep/{node}"))
}

/// One pod and the engine port that reaches it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    pub name: String,
    pub ip: Ipv4Addr,
    pub port: PortSpec,
}

/// How the engine attaches to a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PortSpec {
    pub kind: PortKind,
    /// Linux interface name (1-15 bytes): the existing interface for AF_PACKET, the device
    /// to create for TAP.
    pub interface: String,
    /// TAP only: the named network namespace the TAP device is moved into.
    pub netns: Option<String>,
    /// The engine's MAC address on this port (unicast); `None` lets the port choose.
    pub mac: Option<[u8; 6]>,
    /// AF_PACKET ring flavour; always [`RingKind::V2`] for TAP ports, which have no ring.
    pub ring: RingKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    AfPacket,
    Tap,
}

/// AF_PACKET ring flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingKind {
    /// TPACKET_V2: one frame per slot, handed over at once (lowest latency).
    V2,
    /// TPACKET_V3: frames handed over a block at a time (throughput, up to ~1 ms latency).
    V3,
}

impl PortKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            PortKind::AfPacket => "afpacket",
            PortKind::Tap => "tap",
        }
    }
}

impl RingKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RingKind::V2 => "v2",
            RingKind::V3 => "v3",
        }
    }
}

impl Cluster {
    /// The node called `name`, if any.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// A short human summary for `sluice check`, e.g.
    /// `cluster demo: 1 node, 3 pods; node-1 10.244.1.0/24 gw 10.244.1.1: web-1 10.244.1.10 (afpacket veth-web1), ...`;
    /// with an overlay, e.g. `cluster demo: 2 nodes, 1 pod; overlay vxlan vni 1 port 8472,
    /// underlay MTU 1500: pods need MTU 1450; node-1 10.244.1.0/24 gw 10.244.1.1, underlay
    /// 192.168.50.1/24 on ul0, vtep 02:..: ...; node-2 10.244.2.0/24 gw 10.244.2.1, dataplane
    /// kernel, underlay 192.168.50.2/24, vtep 02:..: no pods`.
    pub fn describe(&self) -> String {
        let pods: usize = self.nodes.iter().map(|n| n.pods.len()).sum();
        let mut out = format!(
            "cluster {}: {} node{}, {} pod{}",
            self.name,
            self.nodes.len(),
            plural(self.nodes.len()),
            pods,
            plural(pods)
        );
        if let Some(ov) = &self.overlay {
            let _ = write!(out, "; overlay {}", describe_mode(&ov.mode));
            let _ = write!(
                out,
                ", underlay MTU {}: pods need MTU {}",
                ov.mtu,
                ov.pod_mtu()
            );
        }
        let vxlan = matches!(
            self.overlay,
            Some(Overlay {
                mode: OverlayMode::Vxlan { .. },
                ..
            })
        );
        for node in &self.nodes {
            let _ = write!(out, "; {} {} gw {}", node.name, node.pod_cidr, node.gateway);
            if node.dataplane == Dataplane::Kernel {
                out.push_str(", dataplane kernel");
            }
            if let Some(u) = &node.underlay {
                let _ = write!(out, ", underlay {}/{}", u.address, u.subnet.prefix_len);
                if let Some(i) = &u.interface {
                    let _ = write!(out, " on {i}");
                }
                if u.ring == RingKind::V3 {
                    out.push_str(" ring v3");
                }
                if let Some(mac) = &u.mac {
                    let _ = write!(out, " mac {}", format_mac(mac));
                }
                if let Some(gw) = u.gateway {
                    let _ = write!(out, " via {gw}");
                }
                if vxlan {
                    let _ = write!(out, ", vtep {}", format_mac(&u.vtep_mac));
                }
            }
            out.push(':');
            if node.pods.is_empty() {
                out.push_str(" no pods");
            }
            for (i, pod) in node.pods.iter().enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                let port = &pod.port;
                let _ = write!(
                    out,
                    "{sep}{} {} ({} {}",
                    pod.name,
                    pod.ip,
                    port.kind.as_str(),
                    port.interface
                );
                if let Some(ns) = &port.netns {
                    let _ = write!(out, " in netns {ns}");
                }
                if port.kind == PortKind::AfPacket && port.ring == RingKind::V3 {
                    out.push_str(" ring v3");
                }
                if let Some(mac) = &port.mac {
                    let _ = write!(out, " mac {}", format_mac(mac));
                }
                out.push(')');
            }
        }
        out
    }
}

/// `vxlan vni 1 port 8472`, `vxlan vni 1 port 8472 outer UDP checksum 0`, `udp port 8285`.
fn describe_mode(mode: &OverlayMode) -> String {
    match *mode {
        OverlayMode::Vxlan {
            vni,
            port,
            udp_checksum,
        } => {
            let csum = if udp_checksum {
                ""
            } else {
                " outer UDP checksum 0"
            };
            format!("vxlan vni {vni} port {port}{csum}")
        }
        OverlayMode::Udp { port } => format!("udp port {port}"),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

// ---------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------

/// Why a cluster file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the cluster file: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The YAML parser refused the text: bad syntax, a wrong type, an unknown or missing
    /// field, a duplicate key, invalid UTF-8.
    #[error("{}", located(file, *line, *column, field.as_deref(), message))]
    Yaml {
        file: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        field: Option<String>,
        message: String,
    },
    /// The YAML is well formed but a value breaks a rule of the schema.
    #[error("{}", located(file, *line, *column, Some(field), message))]
    Invalid {
        file: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        field: String,
        message: String,
    },
}

fn located(
    file: &Path,
    line: Option<usize>,
    column: Option<usize>,
    field: Option<&str>,
    message: &str,
) -> String {
    let mut out = file.display().to_string();
    if let Some(line) = line {
        let _ = write!(out, ":{line}");
        if let Some(column) = column {
            let _ = write!(out, ":{column}");
        }
    }
    out.push_str(": ");
    if let Some(field) = field.filter(|f| !f.is_empty()) {
        out.push_str(field);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

impl ConfigError {
    /// The file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            ConfigError::Io { file, .. }
            | ConfigError::Yaml { file, .. }
            | ConfigError::Invalid { file, .. } => file,
        }
    }

    /// 1-based line of the offending text, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Yaml { line, .. } | ConfigError::Invalid { line, .. } => *line,
        }
    }

    /// 1-based column (in characters) of the offending text, when known.
    pub fn column(&self) -> Option<usize> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Yaml { column, .. } | ConfigError::Invalid { column, .. } => *column,
        }
    }

    /// The field path, e.g. `nodes[0].pods[1].ip`, when known.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Io { .. } => None,
            ConfigError::Yaml { field, .. } => field.as_deref(),
            ConfigError::Invalid { field, .. } => Some(field),
        }
    }

    /// What is wrong and what would be valid, without the file/line/field prefix.
    pub fn message(&self) -> String {
        match self {
            ConfigError::Io { source, .. } => format!("cannot read the cluster file: {source}"),
            ConfigError::Yaml { message, .. } | ConfigError::Invalid { message, .. } => {
                message.clone()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entry points.
// ---------------------------------------------------------------------------------------

/// Reads and validates the cluster file at `path`.
pub fn load(path: &Path) -> Result<Cluster, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        file: path.to_path_buf(),
        source,
    })?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => {
            let good = bytes.get(..e.valid_up_to()).unwrap_or_default();
            let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
            let last_line = good.rsplit(|&b| b == b'\n').next().unwrap_or_default();
            let column = 1 + String::from_utf8_lossy(last_line).chars().count();
            return Err(ConfigError::Yaml {
                file: path.to_path_buf(),
                line: Some(line),
                column: Some(column),
                field: None,
                message: "invalid UTF-8 (expected a UTF-8 text file)".to_string(),
            });
        }
    };
    parse_str(text, path)
}

/// Parses and validates cluster-file text; `file` is only used to name the source in
/// errors and in [`Cluster::source`].
pub fn parse_str(text: &str, file: &Path) -> Result<Cluster, ConfigError> {
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| yaml_error(&e, text, file))?;
    Validator { file }.cluster(raw)
}

// ---------------------------------------------------------------------------------------
// The raw schema, as serde reads it.
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    cluster: Spanned<RawCluster>,
    nodes: Spanned<Vec<Spanned<RawNode>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Spanned<String>,
    cluster_cidr: Spanned<String>,
    #[serde(default)]
    service_cidr: Option<Spanned<String>>,
    #[serde(default)]
    overlay: Option<Spanned<RawOverlay>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverlay {
    mode: Spanned<String>,
    #[serde(default)]
    vni: Option<Spanned<String>>,
    #[serde(default)]
    port: Option<Spanned<String>>,
    #[serde(default)]
    udp_checksum: Option<Spanned<String>>,
    #[serde(default)]
    mtu: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    pod_cidr: Spanned<String>,
    #[serde(default)]
    gateway: Option<Spanned<String>>,
    #[serde(default)]
    admin_socket: Option<Spanned<String>>,
    #[serde(default)]
    pods: Option<Spanned<Vec<Spanned<RawPod>>>>,
    #[serde(default)]
    dataplane: Option<Spanned<String>>,
    #[serde(default)]
    underlay: Option<Spanned<RawUnderlay>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnderlay {
    #[serde(default)]
    interface: Option<Spanned<String>>,
    address: Spanned<String>,
    #[serde(default)]
    gateway: Option<Spanned<String>>,
    #[serde(default)]
    mac: Option<Spanned<String>>,
    #[serde(default)]
    ring: Option<Spanned<String>>,
    #[serde(default)]
    vtep_mac: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPod {
    name: Spanned<String>,
    ip: Spanned<String>,
    port: Spanned<RawPort>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    kind: Spanned<String>,
    interface: Spanned<String>,
    #[serde(default)]
    netns: Option<Spanned<String>>,
    #[serde(default)]
    mac: Option<Spanned<String>>,
    #[serde(default)]
    ring: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------------------
// Semantic validation.
// ---------------------------------------------------------------------------------------

struct Validator<'a> {
    file: &'a Path,
}

/// Where something was first seen, for "already used by ..." messages.
struct Seen {
    what: String,
    line: u64,
}

impl Seen {
    fn new<T>(what: String, at: &Spanned<T>) -> Seen {
        Seen {
            what,
            line: at.referenced.line(),
        }
    }
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at line {}", self.what, self.line)
    }
}

impl Validator<'_> {
    fn err<T>(&self, at: &Spanned<T>, field: &str, message: String) -> ConfigError {
        let loc = at.referenced;
        let known = loc.line() > 0;
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line: known.then(|| to_usize(loc.line())),
            column: known.then(|| to_usize(loc.column())),
            field: field.to_string(),
            message,
        }
    }

    fn net(&self, at: &Spanned<String>, field: &str) -> Result<Ipv4Net, ConfigError> {
        at.value
            .trim()
            .parse::<Ipv4Net>()
            .map_err(|e| self.err(at, field, e.to_string()))
    }

    fn addr(&self, at: &Spanned<String>, field: &str) -> Result<Ipv4Addr, ConfigError> {
        at.value.trim().parse::<Ipv4Addr>().map_err(|_| {
            self.err(
                at,
                field,
                format!(
                    "`{}` is not an IPv4 address (expected four numbers 0-255 separated by dots, e.g. 10.244.1.10)",
                    at.value
                ),
            )
        })
    }

    fn cluster(&self, raw: RawFile) -> Result<Cluster, ConfigError> {
        let c = &raw.cluster.value;
        check_dns_label(&c.name.value).map_err(|m| self.err(&c.name, "cluster.name", m))?;
        let cluster_cidr = self.net(&c.cluster_cidr, "cluster.cluster_cidr")?;
        let service_cidr = match &c.service_cidr {
            None => None,
            Some(at) => {
                let net = self.net(at, "cluster.service_cidr")?;
                if net.overlaps(&cluster_cidr) {
                    return Err(self.err(
                        at,
                        "cluster.service_cidr",
                        format!(
                            "{net} overlaps cluster_cidr {cluster_cidr} (expected a range that shares no address with it, e.g. 10.96.0.0/12 beside 10.244.0.0/16)"
                        ),
                    ));
                }
                Some(net)
            }
        };

        if raw.nodes.value.is_empty() {
            return Err(self.err(
                &raw.nodes,
                "nodes",
                "the list is empty (expected at least one node)".to_string(),
            ));
        }

        let overlay = match &c.overlay {
            None => None,
            Some(at) => Some((self.overlay(&at.value)?, at.referenced.line())),
        };
        let cx = ClusterCtx {
            cluster_cidr,
            service_cidr,
            overlay,
        };

        let mut used = Used::default();
        let mut nodes = Vec::with_capacity(raw.nodes.value.len());
        for (i, raw_node) in raw.nodes.value.iter().enumerate() {
            let node = self.node(i, &raw_node.value, &cx, &mut used)?;
            nodes.push(node);
        }

        Ok(Cluster {
            name: c.name.value.clone(),
            cluster_cidr,
            service_cidr,
            overlay: overlay.map(|(o, _)| o),
            nodes,
            source: self.file.to_path_buf(),
        })
    }

    fn overlay(&self, o: &RawOverlay) -> Result<Overlay, ConfigError> {
        let vxlan = match o.mode.value.as_str() {
            "vxlan" => true,
            "udp" => false,
            other => {
                return Err(self.err(
                    &o.mode,
                    "cluster.overlay.mode",
                    format!("`{other}` is not an overlay mode (expected vxlan or udp)"),
                ))
            }
        };
        if !vxlan {
            if let Some(at) = &o.vni {
                return Err(self.err(
                    at,
                    "cluster.overlay.vni",
                    "vni applies to mode vxlan only (flannel's UDP mode carries no VNI; expected no vni here, or mode: vxlan)".to_string(),
                ));
            }
            if let Some(at) = &o.udp_checksum {
                return Err(self.err(
                    at,
                    "cluster.overlay.udp_checksum",
                    "udp_checksum applies to mode vxlan only (UDP mode always computes the outer UDP checksum; expected no udp_checksum here, or mode: vxlan)".to_string(),
                ));
            }
        }
        let port = match &o.port {
            None if vxlan => DEFAULT_VXLAN_PORT,
            None => DEFAULT_UDP_PORT,
            Some(at) => {
                let hint = format!(
                    "; the default is {DEFAULT_VXLAN_PORT} for vxlan, {DEFAULT_UDP_PORT} for udp"
                );
                let p = self.number(at, "cluster.overlay.port", 1, 65535, "a UDP port", &hint)?;
                u16::try_from(p).unwrap_or(u16::MAX)
            }
        };
        let mode = if vxlan {
            let vni = match &o.vni {
                None => DEFAULT_VNI,
                Some(at) => {
                    let hint =
                        format!(", the 24 bits of the VXLAN header; flannel uses {DEFAULT_VNI}");
                    self.number(at, "cluster.overlay.vni", 0, MAX_VNI, "a VNI", &hint)?
                }
            };
            let udp_checksum = match &o.udp_checksum {
                None => true,
                Some(at) => match at.value.trim() {
                    "true" => true,
                    "false" => false,
                    other => return Err(self.err(
                        at,
                        "cluster.overlay.udp_checksum",
                        format!("`{other}` is not true or false (expected true: compute the outer UDP checksum, or false: send 0)"),
                    )),
                },
            };
            OverlayMode::Vxlan {
                vni,
                port,
                udp_checksum,
            }
        } else {
            OverlayMode::Udp { port }
        };
        let mtu = match &o.mtu {
            None => DEFAULT_UNDERLAY_MTU,
            Some(at) => {
                let hint = format!(", e.g. {DEFAULT_UNDERLAY_MTU}");
                let m = self.number(
                    at,
                    "cluster.overlay.mtu",
                    MIN_UNDERLAY_MTU.into(),
                    MAX_UNDERLAY_MTU.into(),
                    "a usable underlay MTU",
                    &hint,
                )?;
                u16::try_from(m).unwrap_or(u16::MAX)
            }
        };
        let overlay = Overlay { mode, mtu };
        let overhead = mode.mtu_overhead();
        if overlay.pod_mtu() < MIN_POD_MTU {
            if let Some(at) = &o.mtu {
                return Err(self.err(
                    at,
                    "cluster.overlay.mtu",
                    format!(
                        "underlay MTU {mtu} leaves pods an MTU of {} in mode {} ({overhead} bytes of encapsulation) (expected at least {}, so that pods get {MIN_POD_MTU} or more)",
                        overlay.pod_mtu(),
                        o.mode.value,
                        MIN_POD_MTU + overhead
                    ),
                ));
            }
        }
        Ok(overlay)
    }

    fn node(
        &self,
        i: usize,
        n: &RawNode,
        cx: &ClusterCtx,
        used: &mut Used,
    ) -> Result<Node, ConfigError> {
        let path = format!("nodes[{i}]");
        let cluster_cidr = &cx.cluster_cidr;
        let node_names = &mut used.node_names;
        let pod_cidrs = &mut used.pod_cidrs;

        let field = format!("{path}.name");
        check_dns_label(&n.name.value).map_err(|m| self.err(&n.name, &field, m))?;
        if let Some(first) = node_names.get(&n.name.value) {
            return Err(self.err(
                &n.name,
                &field,
                format!(
                    "node name `{}` is already used by {first} (expected a unique name per node)",
                    n.name.value
                ),
            ));
        }
        node_names.insert(n.name.value.clone(), Seen::new(path.clone(), &n.name));

        let field = format!("{path}.pod_cidr");
        let pod_cidr = self.net(&n.pod_cidr, &field)?;
        if pod_cidr.prefix_len > MAX_POD_PREFIX_LEN {
            return Err(self.err(
                &n.pod_cidr,
                &field,
                format!(
                    "{pod_cidr} is too small for a gateway and pods (expected a prefix length of at most /{MAX_POD_PREFIX_LEN})"
                ),
            ));
        }
        if !cluster_cidr.contains_net(&pod_cidr) {
            return Err(self.err(
                &n.pod_cidr,
                &field,
                format!(
                    "{pod_cidr} is not inside cluster_cidr {cluster_cidr} (expected a prefix of {cluster_cidr}, e.g. {})",
                    example_subnet(cluster_cidr)
                ),
            ));
        }
        if let Some((other, first)) = pod_cidrs.iter().find(|(o, _)| o.overlaps(&pod_cidr)) {
            return Err(self.err(
                &n.pod_cidr,
                &field,
                format!(
                    "{pod_cidr} overlaps {other}, the pod_cidr of {first} (expected pod_cidrs that share no address)"
                ),
            ));
        }
        pod_cidrs.push((
            pod_cidr,
            Seen::new(format!("node {}", n.name.value), &n.pod_cidr),
        ));

        let hosts = format!("{}-{}", pod_cidr.first_host(), pod_cidr.last_host());
        let gateway = match &n.gateway {
            None => pod_cidr.first_host(),
            Some(at) => {
                let field = format!("{path}.gateway");
                let gw = self.addr(at, &field)?;
                if !pod_cidr.is_host(gw) {
                    let what = if !pod_cidr.contains(gw) {
                        "is outside the node's pod_cidr"
                    } else if gw == pod_cidr.network() {
                        "is the network address of the node's pod_cidr"
                    } else {
                        "is the broadcast address of the node's pod_cidr"
                    };
                    return Err(self.err(
                        at,
                        &field,
                        format!("{gw} {what} {pod_cidr} (expected a host address in {hosts})"),
                    ));
                }
                gw
            }
        };

        let dataplane = match &n.dataplane {
            None => Dataplane::Sluice,
            Some(at) => {
                let field = format!("{path}.dataplane");
                match at.value.as_str() {
                    "sluice" => Dataplane::Sluice,
                    "kernel" if cx.overlay.is_none() => return Err(self.err(
                        at,
                        &field,
                        "dataplane: kernel needs cluster.overlay (a kernel node only takes part as a peer on the overlay; expected dataplane: sluice, or an overlay under cluster)".to_string(),
                    )),
                    "kernel" => Dataplane::Kernel,
                    other => {
                        return Err(self.err(
                            at,
                            &field,
                            format!("`{other}` is not a dataplane (expected sluice or kernel)"),
                        ))
                    }
                }
            }
        };

        let admin_socket = match &n.admin_socket {
            None => PathBuf::from(format!("/run/sluice/{}.sock", n.name.value)),
            Some(at) if dataplane == Dataplane::Kernel => {
                return Err(self.err(
                    at,
                    &format!("{path}.admin_socket"),
                    "admin_socket applies to dataplane sluice only (no engine runs on a kernel node; expected no admin_socket here, or dataplane: sluice)".to_string(),
                ))
            }
            Some(at) => {
                let field = format!("{path}.admin_socket");
                check_socket_path(&at.value).map_err(|m| self.err(at, &field, m))?;
                PathBuf::from(&at.value)
            }
        };

        let mut pods = Vec::new();
        let mut pod_names: HashMap<String, Seen> = HashMap::new();
        let mut interfaces: HashMap<String, Seen> = HashMap::new();
        if let Some(raw_pods) = &n.pods {
            pods.reserve(raw_pods.value.len());
            for (j, raw_pod) in raw_pods.value.iter().enumerate() {
                let ctx = NodeCtx {
                    path: format!("{path}.pods[{j}]"),
                    node_name: &n.name.value,
                    pod_cidr,
                    gateway,
                    gateway_explicit: n.gateway.is_some(),
                    hosts: &hosts,
                };
                let pod = self.pod(
                    &ctx,
                    &raw_pod.value,
                    &mut pod_names,
                    &mut interfaces,
                    &mut used.pod_ips,
                )?;
                pods.push(pod);
            }
        }

        let underlay = self.underlay(&path, n, dataplane, cx, used, &interfaces)?;

        Ok(Node {
            name: n.name.value.clone(),
            pod_cidr,
            gateway,
            admin_socket,
            dataplane,
            underlay,
            pods,
        })
    }

    /// The node's `underlay`, present exactly when the cluster has an overlay.
    fn underlay(
        &self,
        path: &str,
        n: &RawNode,
        dataplane: Dataplane,
        cx: &ClusterCtx,
        used: &mut Used,
        pod_interfaces: &HashMap<String, Seen>,
    ) -> Result<Option<Underlay>, ConfigError> {
        let path = format!("{path}.underlay");
        let node = n.name.value.as_str();
        let at = match (&n.underlay, &cx.overlay) {
            (None, None) => return Ok(None),
            (Some(at), None) => {
                return Err(self.err(
                    at,
                    &path,
                    "underlay needs cluster.overlay (expected an overlay under cluster, e.g. `overlay: {mode: vxlan}`, or no underlay here)".to_string(),
                ))
            }
            (None, Some((_, line))) => {
                return Err(self.err(
                    &n.name,
                    &path,
                    format!(
                        "node {node} has no underlay, which cluster.overlay at line {line} needs on every node (expected e.g. `underlay: {{interface: ul0, address: 192.168.50.1/24}}`)"
                    ),
                ))
            }
            (Some(at), Some(_)) => at,
        };
        let u = &at.value;
        let kernel = dataplane == Dataplane::Kernel;

        let interface = match &u.interface {
            None if kernel => None,
            None => {
                return Err(self.err(
                    at,
                    &format!("{path}.interface"),
                    "required field `interface` is missing (a sluice node opens its underlay interface as the overlay uplink; expected e.g. interface: ul0)".to_string(),
                ))
            }
            Some(i) => {
                let field = format!("{path}.interface");
                check_ifname(&i.value).map_err(|m| self.err(i, &field, m))?;
                if let Some(first) = pod_interfaces.get(&i.value) {
                    return Err(self.err(
                        i,
                        &field,
                        format!(
                            "interface `{}` is already used on this node by {first} (expected an underlay interface that no pod port uses)",
                            i.value
                        ),
                    ));
                }
                Some(i.value.clone())
            }
        };

        let field = format!("{path}.address");
        let (address, subnet) = parse_host_prefix(u.address.value.trim())
            .map_err(|m| self.err(&u.address, &field, m))?;
        let hosts = format!("{}-{}", subnet.first_host(), subnet.last_host());
        if !subnet.is_host(address) {
            let which = if address == subnet.network() {
                "network"
            } else {
                "broadcast"
            };
            return Err(self.err(
                &u.address,
                &field,
                format!(
                    "{address} is the {which} address of its underlay subnet {subnet} (expected a host address in {hosts})"
                ),
            ));
        }
        for (name, range) in [
            ("cluster_cidr", Some(cx.cluster_cidr)),
            ("service_cidr", cx.service_cidr),
        ] {
            if let Some(range) = range.filter(|r| r.overlaps(&subnet)) {
                return Err(self.err(
                    &u.address,
                    &field,
                    format!(
                        "underlay subnet {subnet} overlaps {name} {range} (expected an underlay outside the pod and service ranges, e.g. 192.168.50.1/24)"
                    ),
                ));
            }
        }
        if let Some(first) = used.underlay_addrs.get(&address) {
            return Err(self.err(
                &u.address,
                &field,
                format!(
                    "{address} is already the underlay address of {first} (expected a unique underlay address per node)"
                ),
            ));
        }

        let gateway = match &u.gateway {
            None => None,
            Some(at) => {
                let field = format!("{path}.gateway");
                let gw = self.addr(at, &field)?;
                if !subnet.is_host(gw) {
                    let what = if !subnet.contains(gw) {
                        "is outside the node's underlay subnet"
                    } else if gw == subnet.network() {
                        "is the network address of the node's underlay subnet"
                    } else {
                        "is the broadcast address of the node's underlay subnet"
                    };
                    return Err(self.err(
                        at,
                        &field,
                        format!("{gw} {what} {subnet} (expected a host address in {hosts})"),
                    ));
                }
                if gw == address {
                    return Err(self.err(
                        at,
                        &field,
                        format!(
                            "{gw} is the node's own underlay address (expected the router to other subnets, another host address in {hosts})"
                        ),
                    ));
                }
                Some(gw)
            }
        };

        let sluice_only = |at: &Spanned<String>, key: &str| {
            self.err(
                at,
                &format!("{path}.{key}"),
                format!("{key} applies to dataplane sluice only (no engine runs on a kernel node; expected no {key} here, or dataplane: sluice)"),
            )
        };
        let mac = match &u.mac {
            None => None,
            Some(at) if kernel => return Err(sluice_only(at, "mac")),
            Some(at) => Some(self.unicast_mac(at, &format!("{path}.mac"))?),
        };
        let ring = match &u.ring {
            None => RingKind::V2,
            Some(at) if kernel => return Err(sluice_only(at, "ring")),
            Some(at) => self.ring(at, &format!("{path}.ring"))?,
        };

        let field = format!("{path}.vtep_mac");
        let (vtep_mac, vtep_seen) = match &u.vtep_mac {
            None => (
                default_vtep_mac(node),
                Seen::new(format!("node {node} (derived from its name)"), &n.name),
            ),
            Some(at) => {
                // Accepted in UDP mode too (unused there), so one file can switch modes.
                let mac = self.unicast_mac(at, &field)?;
                (mac, Seen::new(format!("node {node}"), at))
            }
        };
        if let Some(first) = used.vtep_macs.get(&vtep_mac) {
            let at_mac = u.vtep_mac.as_ref();
            let msg = format!(
                "{} is already the vtep_mac of {first} (expected a unique VTEP MAC per node)",
                format_mac(&vtep_mac)
            );
            return Err(match at_mac {
                Some(at) => self.err(at, &field, msg),
                None => self.err(&n.name, &field, msg),
            });
        }

        // A sluice node reaches a peer directly on its subnet, or through its gateway.
        let field = format!("{path}.address");
        let me = UnderlayPeer {
            name: node.to_string(),
            address,
            subnet,
            has_gateway: gateway.is_some(),
            sluice: !kernel,
        };
        for other in &used.underlays {
            for (from, to) in [(other, &me), (&me, other)] {
                if from.sluice && !from.has_gateway && !from.subnet.contains(to.address) {
                    return Err(self.err(
                        &u.address,
                        &field,
                        format!(
                            "{}'s underlay {}/{} is not on {}'s underlay subnet {} and {} has no underlay.gateway (expected an address in {}-{}, or an underlay.gateway on {})",
                            to.name,
                            to.address,
                            to.subnet.prefix_len,
                            from.name,
                            from.subnet,
                            from.name,
                            from.subnet.first_host(),
                            from.subnet.last_host(),
                            from.name
                        ),
                    ));
                }
            }
        }

        used.underlay_addrs
            .insert(address, Seen::new(format!("node {node}"), &u.address));
        used.vtep_macs.insert(vtep_mac, vtep_seen);
        used.underlays.push(me);
        Ok(Some(Underlay {
            interface,
            address,
            subnet,
            gateway,
            mac,
            ring,
            vtep_mac,
        }))
    }

    /// A whole number from `lo` to `hi`, written in decimal digits; else
    /// "`text` is not {what} (expected {lo}-{hi}{hint})".
    fn number(
        &self,
        at: &Spanned<String>,
        field: &str,
        lo: u32,
        hi: u32,
        what: &str,
        hint: &str,
    ) -> Result<u32, ConfigError> {
        let text = at.value.trim();
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        match text.parse::<u64>() {
            Ok(n) if digits && n >= u64::from(lo) && n <= u64::from(hi) => {
                Ok(u32::try_from(n).unwrap_or(hi))
            }
            _ => Err(self.err(
                at,
                field,
                format!("`{text}` is not {what} (expected {lo}-{hi}{hint})"),
            )),
        }
    }

    /// A unicast, non-zero MAC address.
    fn unicast_mac(&self, at: &Spanned<String>, field: &str) -> Result<[u8; 6], ConfigError> {
        let mac = parse_mac(at.value.trim()).map_err(|m| self.err(at, field, m))?;
        if mac[0] & 1 != 0 {
            return Err(self.err(
                at,
                field,
                format!(
                    "{} is a multicast address (expected a unicast MAC: the lowest bit of the first byte clear, e.g. 02:00:00:00:00:01)",
                    format_mac(&mac)
                ),
            ));
        }
        if mac == [0; 6] {
            return Err(self.err(
                at,
                field,
                "00:00:00:00:00:00 is not a usable address (expected a unicast MAC, e.g. 02:00:00:00:00:01)".to_string(),
            ));
        }
        Ok(mac)
    }

    fn ring(&self, at: &Spanned<String>, field: &str) -> Result<RingKind, ConfigError> {
        match at.value.as_str() {
            "v2" => Ok(RingKind::V2),
            "v3" => Ok(RingKind::V3),
            other => Err(self.err(
                at,
                field,
                format!("`{other}` is not a ring kind (expected v2 or v3)"),
            )),
        }
    }

    fn pod(
        &self,
        ctx: &NodeCtx<'_>,
        p: &RawPod,
        pod_names: &mut HashMap<String, Seen>,
        interfaces: &mut HashMap<String, Seen>,
        pod_ips: &mut HashMap<Ipv4Addr, Seen>,
    ) -> Result<Pod, ConfigError> {
        let path = &ctx.path;

        let field = format!("{path}.name");
        check_pod_name(&p.name.value).map_err(|m| self.err(&p.name, &field, m))?;
        if let Some(first) = pod_names.get(&p.name.value) {
            return Err(self.err(
                &p.name,
                &field,
                format!(
                    "pod name `{}` is already used on this node by {first} (expected a unique pod name per node)",
                    p.name.value
                ),
            ));
        }
        pod_names.insert(p.name.value.clone(), Seen::new(path.clone(), &p.name));

        let field = format!("{path}.ip");
        let ip = self.addr(&p.ip, &field)?;
        let pod_cidr = ctx.pod_cidr;
        let hosts = ctx.hosts;
        if !pod_cidr.contains(ip) {
            return Err(self.err(
                &p.ip,
                &field,
                format!(
                    "{ip} is outside the node's pod_cidr {pod_cidr} (expected an address in {hosts})"
                ),
            ));
        }
        if ip == pod_cidr.network() || ip == pod_cidr.broadcast() {
            let which = if ip == pod_cidr.network() {
                "network"
            } else {
                "broadcast"
            };
            return Err(self.err(
                &p.ip,
                &field,
                format!(
                    "{ip} is the {which} address of the node's pod_cidr {pod_cidr} (expected an address in {hosts})"
                ),
            ));
        }
        if ip == ctx.gateway {
            let how = if ctx.gateway_explicit {
                "as set by its gateway field"
            } else {
                "by default the first host of its pod_cidr"
            };
            return Err(self.err(
                &p.ip,
                &field,
                format!(
                    "{ip} is the gateway address of node {}, {how} (expected another address in {hosts})",
                    ctx.node_name
                ),
            ));
        }
        if let Some(first) = pod_ips.get(&ip) {
            return Err(self.err(
                &p.ip,
                &field,
                format!("{ip} is already the address of {first} (expected a unique pod IP)"),
            ));
        }
        pod_ips.insert(
            ip,
            Seen::new(
                format!("pod {} on node {}", p.name.value, ctx.node_name),
                &p.ip,
            ),
        );

        let port = self.port(&format!("{path}.port"), &p.port.value, interfaces)?;
        Ok(Pod {
            name: p.name.value.clone(),
            ip,
            port,
        })
    }

    fn port(
        &self,
        path: &str,
        raw: &RawPort,
        interfaces: &mut HashMap<String, Seen>,
    ) -> Result<PortSpec, ConfigError> {
        let kind = match raw.kind.value.as_str() {
            "afpacket" => PortKind::AfPacket,
            "tap" => PortKind::Tap,
            other => {
                return Err(self.err(
                    &raw.kind,
                    &format!("{path}.kind"),
                    format!("`{other}` is not a port kind (expected afpacket or tap)"),
                ))
            }
        };

        let field = format!("{path}.interface");
        check_ifname(&raw.interface.value).map_err(|m| self.err(&raw.interface, &field, m))?;
        if let Some(first) = interfaces.get(&raw.interface.value) {
            return Err(self.err(
                &raw.interface,
                &field,
                format!(
                    "interface `{}` is already used on this node by {first} (expected one interface per pod)",
                    raw.interface.value
                ),
            ));
        }
        interfaces.insert(
            raw.interface.value.clone(),
            Seen::new(path.to_string(), &raw.interface),
        );

        let netns = match (&raw.netns, kind) {
            (None, _) => None,
            (Some(at), PortKind::AfPacket) => {
                return Err(self.err(
                    at,
                    &format!("{path}.netns"),
                    "netns is only valid for kind: tap (an afpacket port attaches to an existing interface in the node's namespace; expected no netns here, or kind: tap)".to_string(),
                ))
            }
            (Some(at), PortKind::Tap) => {
                check_netns(&at.value).map_err(|m| self.err(at, &format!("{path}.netns"), m))?;
                Some(at.value.clone())
            }
        };

        let mac = match &raw.mac {
            None => None,
            Some(at) => Some(self.unicast_mac(at, &format!("{path}.mac"))?),
        };

        let ring = match (&raw.ring, kind) {
            (None, _) => RingKind::V2,
            (Some(at), PortKind::Tap) => {
                return Err(self.err(
                    at,
                    &format!("{path}.ring"),
                    "ring is only valid for kind: afpacket (a tap port has no packet ring; expected no ring here, or kind: afpacket)".to_string(),
                ))
            }
            (Some(at), PortKind::AfPacket) => self.ring(at, &format!("{path}.ring"))?,
        };

        Ok(PortSpec {
            kind,
            interface: raw.interface.value.clone(),
            netns,
            mac,
            ring,
        })
    }
}

/// What every node's checks need to know about the cluster.
struct ClusterCtx {
    cluster_cidr: Ipv4Net,
    service_cidr: Option<Ipv4Net>,
    /// The overlay, and the line of `cluster.overlay` for messages.
    overlay: Option<(Overlay, u64)>,
}

/// What earlier nodes used, for the cluster-wide uniqueness and reachability rules.
#[derive(Default)]
struct Used {
    node_names: HashMap<String, Seen>,
    pod_cidrs: Vec<(Ipv4Net, Seen)>,
    pod_ips: HashMap<Ipv4Addr, Seen>,
    underlay_addrs: HashMap<Ipv4Addr, Seen>,
    vtep_macs: HashMap<[u8; 6], Seen>,
    underlays: Vec<UnderlayPeer>,
}

/// A node on the underlay, as the reachability rule sees it.
struct UnderlayPeer {
    name: String,
    address: Ipv4Addr,
    subnet: Ipv4Net,
    has_gateway: bool,
    sluice: bool,
}

/// Parses `a.b.c.d/len` where `a.b.c.d` is a host of the prefix (host bits allowed), with
/// `len` 1-31: the address and its subnet.
fn parse_host_prefix(s: &str) -> Result<(Ipv4Addr, Ipv4Net), String> {
    const EXPECTED: &str = "expected the node's underlay address and the underlay subnet's prefix length, e.g. 192.168.50.1/24";
    let bad = || format!("`{s}` is not an address with a prefix length ({EXPECTED})");
    let (addr, len) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match len.parse::<u8>() {
        Ok(n @ 1..=31) => {
            let subnet = Ipv4Net {
                addr,
                prefix_len: n,
            };
            Ok((
                addr,
                Ipv4Net {
                    addr: subnet.network(),
                    prefix_len: n,
                },
            ))
        }
        _ => Err(format!(
            "`{s}`: prefix length /{len} leaves no underlay subnet to share with peers (expected 1-31, e.g. 192.168.50.1/24)"
        )),
    }
}

/// What a pod's checks need to know about its node.
struct NodeCtx<'a> {
    path: String,
    node_name: &'a str,
    pod_cidr: Ipv4Net,
    gateway: Ipv4Addr,
    gateway_explicit: bool,
    hosts: &'a str,
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// A /24 inside `cidr` for examples in messages (the range itself when it is that small).
fn example_subnet(cidr: &Ipv4Net) -> Ipv4Net {
    if cidr.prefix_len <= 23 {
        Ipv4Net {
            addr: Ipv4Addr::from(u32::from(cidr.network()) | (1 << 8)),
            prefix_len: 24,
        }
    } else {
        Ipv4Net {
            addr: cidr.network(),
            prefix_len: cidr.prefix_len,
        }
    }
}

fn check_dns_label(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = !name.starts_with('-') && !name.ends_with('-');
    if !name.is_empty() && name.len() <= 63 && ok_chars && ok_ends {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid name (expected 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit)"
        ))
    }
}

/// Pod names follow Kubernetes: a DNS subdomain (labels joined by dots, 253 bytes at most).
fn check_pod_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| check_dns_label(label).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid pod name (expected 1-253 characters of a-z, 0-9, '-' and '.', each dot-separated part starting and ending with a letter or digit)"
        ))
    }
}

/// The rules of the kernel's `dev_valid_name`.
fn check_ifname(name: &str) -> Result<(), String> {
    const EXPECTED: &str =
        "expected 1-15 bytes with no '/', ':', whitespace or NUL, and not \".\" or \"..\"";
    if name.is_empty() {
        return Err(format!("the interface name is empty ({EXPECTED})"));
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "interface name `{name}` is {} bytes long; Linux allows at most {MAX_IFNAME_LEN} ({EXPECTED})",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!(
            "`{name}` is not a valid interface name ({EXPECTED})"
        ));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Err(format!(
            "interface name `{}` contains a forbidden character ({EXPECTED})",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// A named netns is a file under /run/netns.
fn check_netns(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NETNS_LEN
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\0' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid network namespace name (expected 1-{MAX_NETNS_LEN} bytes with no '/', whitespace or NUL, and not \".\" or \"..\")",
            name.escape_debug()
        ))
    }
}

fn check_socket_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "`{}` is not an absolute path (expected a path starting with '/', e.g. /run/sluice/node-1.sock)",
            path.escape_debug()
        ));
    }
    if path.contains('\0') {
        return Err("the path contains a NUL byte (expected a plain absolute path)".to_string());
    }
    if path.len() > MAX_SOCKET_PATH_LEN {
        return Err(format!(
            "the path is {} bytes long (expected at most {MAX_SOCKET_PATH_LEN} bytes, the limit of a Unix socket path)",
            path.len()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// YAML parser errors: location, field path and message.
// ---------------------------------------------------------------------------------------

fn yaml_error(err: &serde_saphyr::Error, text: &str, file: &Path) -> ConfigError {
    let mut inner = err.without_snippet();
    while let serde_saphyr::Error::AliasError { error, .. } = inner {
        inner = error.without_snippet();
    }
    let loc = err.location().filter(|l| l.line() > 0);
    let (mut line, mut column) = match loc {
        Some(l) => (Some(to_usize(l.line())), Some(to_usize(l.column()))),
        None => (None, None),
    };
    let located = match (line, column) {
        (Some(l), Some(c)) => Some(locate(text, l, c)),
        _ => None,
    };

    let mut message = match inner {
        serde_saphyr::Error::Unexpected { expected, .. } => match *expected {
            "string scalar" => "expected a single value here (text such as a name or an address), not a list or a mapping",
            "mapping start" => "expected a mapping here (`key: value` lines or `{key: value}`)",
            "sequence start" => "expected a list here (`- item` lines or `[a, b]`)",
            _ => "",
        }
        .to_string(),
        _ => String::new(),
    };
    if message.is_empty() {
        message = UserMessageFormatter.format_message(inner).into_owned();
    }
    let field = match inner {
        serde_saphyr::Error::SerdeUnknownField { field, .. } => located
            .as_ref()
            .map(|l| join(l.open_mapping.as_deref().unwrap_or(""), field)),
        serde_saphyr::Error::SerdeMissingField { field, .. } => {
            message = format!("required field `{field}` is missing");
            // The parser points at the mapping's last key; the entry's first line reads better.
            if let Some((l, c)) = located.as_ref().and_then(|l| l.open_mapping_start) {
                (line, column) = (Some(l), Some(c));
            }
            located
                .as_ref()
                .map(|l| join(l.open_mapping.as_deref().unwrap_or(""), field))
        }
        serde_saphyr::Error::Eof { .. } => {
            if located.as_ref().is_some_and(|l| l.node_path.is_none()) {
                message = "the file has no content (expected a mapping with `cluster` and `nodes`)"
                    .to_string();
            }
            None
        }
        _ => located.and_then(|l| l.node_path),
    };
    ConfigError::Yaml {
        file: file.to_path_buf(),
        line,
        column,
        field: field.filter(|f| !f.is_empty()),
        message,
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// What [`locate`] found at a source position.
struct Located {
    /// Path of the last node that starts at or before the position (a key names its field).
    node_path: Option<String>,
    /// Path of the innermost mapping still open at the position.
    open_mapping: Option<String>,
    /// Where that mapping starts (line, column), both 1-based.
    open_mapping_start: Option<(usize, usize)>,
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        expect_key: bool,
        start: (usize, usize),
    },
    Seq {
        path: String,
        index: usize,
    },
}

/// Finds the field path at (`line`, `column`) (1-based, column in characters) by replaying
/// the parser's events up to that point: the error types of serde carry a position but no
/// path. Stops quietly at a syntax error.
fn locate(text: &str, line: usize, column: usize) -> Located {
    let target = (line, column);
    let mut stack: Vec<Frame> = Vec::new();
    let mut node_path: Option<String> = None;

    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        let pos = (span.start.line(), span.start.col() + 1);
        // A block collection's end is implicit (an empty span at the next token): it ends
        // before a node at that position. A flow end (`]`, `}`) at the position is the error.
        let is_end = matches!(event, Event::SequenceEnd | Event::MappingEnd);
        let implicit = span.start.index() == span.end.index();
        if pos > target || (is_end && pos == target && !implicit) {
            break;
        }
        match event {
            Event::Scalar(..)
            | Event::Alias(..)
            | Event::SequenceStart(..)
            | Event::MappingStart(..) => {
                let key_text = match &event {
                    Event::Scalar(text, ..) => Some(text.to_string()),
                    _ => None,
                };
                let (path, is_key) = match stack.last() {
                    None => (String::new(), false),
                    Some(Frame::Seq { path, index }) => (format!("{path}[{index}]"), false),
                    Some(Frame::Map {
                        path,
                        expect_key: true,
                        ..
                    }) => (join(path, key_text.as_deref().unwrap_or("?")), true),
                    Some(Frame::Map {
                        path,
                        key,
                        expect_key: false,
                        ..
                    }) => (join(path, key.as_deref().unwrap_or("?")), false),
                };
                node_path = Some(path.clone());
                match event {
                    Event::SequenceStart(..) => stack.push(Frame::Seq { path, index: 0 }),
                    Event::MappingStart(..) => stack.push(Frame::Map {
                        path,
                        key: None,
                        expect_key: true,
                        start: pos,
                    }),
                    _ => {
                        if is_key {
                            if let Some(Frame::Map {
                                key, expect_key, ..
                            }) = stack.last_mut()
                            {
                                *key = key_text;
                                *expect_key = false;
                            }
                        } else {
                            finish_node(&mut stack);
                        }
                    }
                }
            }
            Event::SequenceEnd | Event::MappingEnd => {
                stack.pop();
                finish_node(&mut stack);
            }
            _ => {}
        }
    }

    let open = stack.iter().rev().find_map(|f| match f {
        Frame::Map { path, start, .. } => Some((path.clone(), *start)),
        Frame::Seq { .. } => None,
    });
    Located {
        node_path,
        open_mapping_start: open.as_ref().map(|(_, start)| *start),
        open_mapping: open.map(|(path, _)| path),
    }
}

/// A child node of the top frame is complete: advance the frame.
fn finish_node(stack: &mut [Frame]) {
    match stack.last_mut() {
        Some(Frame::Seq { index, .. }) => *index += 1,
        Some(Frame::Map {
            key, expect_key, ..
        }) => {
            if *expect_key {
                // A complex (collection) key just ended; its value comes next.
                *key = None;
                *expect_key = false;
            } else {
                *expect_key = true;
            }
        }
        None => {}
    }
}
