//! Benchmark scenario: the kernel doing kube-proxy's job, the baseline for sluice's services.
//!
//! Owns: the rule generators that write N ClusterIP services the way kube-proxy writes them,
//! in its iptables mode ([`iptables_rules`], an `iptables-restore` input for the `nat` table)
//! and in its nftables mode ([`nft_rules`], an `nft -f` input for `table ip kube-proxy`), the
//! one-endpoint change of a partial sync ([`iptables_change`], [`nft_change`]), and the
//! measurement of programming time ([`programming_times`]): loading N services into a fresh
//! namespace, then applying one endpoint change; and the throughput of the kernel doing the
//! service NAT ([`throughput`]): gen -> dut -> sink namespaces on veth pairs, the DUT kernel
//! forwarding with the rules loaded, pktgen sending UDP frames of a chosen size (60..=1500,
//! [`Traffic`]) to the last service's VIP (with a chosen number of endpoints per service) as
//! fast as the path takes them (one flow, or a new flow per packet), the sink's receiver
//! counting what was DNATed to it; and what the flows cost the DUT's connection tracking
//! ([`ConntrackCost`], [`conntrack_cost`]): new entries per second, `nf_conntrack_max`, the
//! entry size from `/proc/slabinfo` and the slab growth per entry.
//!
//! On veth a frame is forwarded by the DUT and received by the sink in the *sender's* softirq,
//! on the generator's core: the generator's rate is the rate of the whole path (sent ==
//! delivered), as in the forwarding scenario. Nothing is pinned.
//!
//! # Promises
//! - The generators are pure functions: same services in, same text out.
//! - Measurements only create namespaces of their own (through [`crate::testbed`]), which are
//!   removed on success, failure and panic; nothing of the root namespace is touched.
//!
//! # The shape of the rules
//! iptables (kube-proxy `pkg/proxy/iptables/proxier.go`): chains `KUBE-SERVICES`,
//! `KUBE-NODEPORTS`, `KUBE-POSTROUTING`, `KUBE-MARK-MASQ`, per service `KUBE-SVC-<16>`, per
//! endpoint `KUBE-SEP-<16>`. `KUBE-SERVICES` holds one rule per service, in the order of the
//! slice (so the last service's VIP is matched after n-1 rules that do not match), and ends
//! with the nodeports rule. A service chain marks traffic from outside [`CLUSTER_CIDR`] for
//! masquerade, then jumps to endpoint `i` of `n` with `-m statistic --mode random
//! --probability 1/(n-i)` (`%0.10f`, as kube-proxy prints it; the last one without). An
//! endpoint chain marks hairpin traffic and DNATs. Above [`LARGE_CLUSTER_ENDPOINTS`]
//! endpoints in total kube-proxy's "large cluster mode" drops the comments of the jumps to the
//! endpoint chains and of the endpoint chains' rules; so do we (at 10k services of one
//! endpoint the input is ~20% smaller). Like kube-proxy the file is loaded with
//! `iptables-restore --noflush --counters`; unlike kube-proxy, which adds them with separate
//! `iptables` calls, the jumps from the built-in chains are in the same file (so
//! [`iptables_rules`] is meant for a namespace without kube-proxy rules).
//!
//! nftables (kube-proxy `pkg/proxy/nftables/proxier.go`): `table ip kube-proxy` with base
//! chains `nat-prerouting` / `nat-output` jumping to `services`, whose one rule looks the
//! packet up in the verdict map `service-ips` (`ipv4_addr . inet_proto . inet_service :
//! verdict`); each element goes to `service-<8>-<ns>/<name>/<proto>/<port>`, which picks an
//! endpoint with `numgen random mod N vmap { 0 : goto endpoint-..., ... }`; each endpoint
//! chain `endpoint-<8>-..__<ip>/<port>` does `dnat to IP:PORT`. Masquerade as in kube-proxy
//! (`mark-for-masquerade`, `masquerading` from `nat-postrouting`).
//!
//! # Why loading is slow at 10k services (measured 2026-12, kernel 6.18, nft 1.0.6,
//! iptables 1.8.9, 1 endpoint per service)
//! - `nft -f` spends >95% of its time in the kernel, on costs per *anonymous set*: every
//!   service chain's `numgen random mod N vmap { ... }` is one, as in kube-proxy. For each the
//!   kernel walks the whole transaction (`__nft_set_trans_bind`, `nft_set_lookup_global`) and
//!   every set of the table to name it `__mapN` (`nf_tables_newset`), so a full load grows
//!   with services squared or worse (1k: 0.23 s, 2k: 0.64 s, 5k: 3.7 s, 10k: 17-36 s,
//!   20k: 209 s; the spread is the shared machine).
//!   Dropping the `flush chain` of new chains, merging the `add element`s, kube-proxy's own
//!   per-service order (chains, map element, then rules), or a file instead of stdin change
//!   nothing measurable, so the input stays as kube-proxy writes it (it adds and flushes
//!   every chain it writes, `ensureChain`, on full syncs too).
//! - `iptables-restore` (nf_tables backend) with `--noflush`, as kube-proxy runs it, spends
//!   ~90% of its time in user space, mostly `strcmp` in its chain cache (10k: 16-23 s, 20k:
//!   186 s); without `--noflush` the same input loads ten times faster, and with the chain
//!   declarations sorted by name three times faster. kube-proxy declares chains in Go map
//!   order, as unsorted as our hashed names, so our input stays as it is.
//!
//! Only the NAT path of ClusterIP services is generated (no filter table, no NodePorts, no
//! firewall or no-endpoint sets): that is the path a packet to a VIP takes.
//!
//! Chain names: kube-proxy takes base32(SHA-256(...)) of the service port name (and the
//! endpoint); here a 80-bit FNV-1a based hash in the same alphabet and length stands in, so
//! names have the same length and look, without a hashing dependency.

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::pktgen::{
    generate, FlowPattern, GenConfig, GenReport, Proto, Receiver, RecvConfig, RecvReport,
};
use crate::testbed::Netns;

/// Services' VIPs are taken from this range (Kubernetes' default service CIDR), from .0.1 on.
pub const SERVICE_CIDR_BASE: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 0);
/// Prefix length of the service CIDR: 10.96.0.0/12.
pub const SERVICE_CIDR_LEN: u32 = 12;
/// The most services [`services`] makes: every host of 10.96.0.0/12 but .0.0 and the last.
pub const MAX_SERVICES: usize = (1 << (32 - SERVICE_CIDR_LEN)) - 2;
/// The cluster's pod CIDR: traffic from elsewhere is marked for masquerade, as kube-proxy does
/// with `--cluster-cidr`. Generators should send from inside it.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The service port of every generated service.
pub const SERVICE_PORT: u16 = 80;
/// Endpoint `e` of every service listens on `ENDPOINT_PORT_BASE + e` of the sink.
pub const ENDPOINT_PORT_BASE: u16 = 9000;
/// A one-endpoint change moves the changed endpoint's port by this much.
pub const CHANGE_PORT_OFFSET: u16 = 1000;
/// Kubernetes namespace of the generated services (part of their names).
const K8S_NAMESPACE: &str = "bench";

/// One ClusterIP service port (UDP) and its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub vip: Ipv4Addr,
    pub port: u16,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

impl Service {
    /// The service's name: `svc-<a>-<b>-<c>-<d>`, from its VIP (unique as VIPs are).
    pub fn name(&self) -> String {
        let [a, b, c, d] = self.vip.octets();
        format!("svc-{a}-{b}-{c}-{d}")
    }

    /// kube-proxy's `ServicePortName` string: `namespace/name:port-name`.
    fn port_name(&self) -> String {
        format!("{K8S_NAMESPACE}/{}:p{}", self.name(), self.port)
    }

    fn svc_chain(&self) -> String {
        format!(
            "KUBE-SVC-{}",
            hash_name(&format!("{}udp", self.port_name()), 16)
        )
    }

    fn sep_chain(&self, ep: (Ipv4Addr, u16)) -> String {
        let key = format!("{}udp{}:{}", self.port_name(), ep.0, ep.1);
        format!("KUBE-SEP-{}", hash_name(&key, 16))
    }

    /// nftables: `<ns>/<name>/<proto>/<port name>`, as kube-proxy's `servicePortChainNameBase`.
    fn nft_base(&self) -> String {
        format!("{K8S_NAMESPACE}/{}/udp/p{}", self.name(), self.port)
    }

    fn nft_svc_chain(&self) -> String {
        let base = self.nft_base();
        format!("service-{}-{base}", hash_name(&base, 8))
    }

    fn nft_ep_chain(&self, ep: (Ipv4Addr, u16)) -> String {
        let base = format!("{}__{}/{}", self.nft_base(), ep.0, ep.1);
        format!("endpoint-{}-{base}", hash_name(&base, 8))
    }
}

/// `n` services (at most [`MAX_SERVICES`]; more are not made), VIPs 10.96.0.1, 10.96.0.2, ...
/// in order, port [`SERVICE_PORT`], each with `endpoints_per_service` endpoints
/// `sink_ip:ENDPOINT_PORT_BASE+e`: whichever endpoint is chosen, the packet reaches the sink.
pub fn services(n: usize, endpoints_per_service: usize, sink_ip: Ipv4Addr) -> Vec<Service> {
    let base = u32::from(SERVICE_CIDR_BASE);
    let eps = endpoints_per_service.min(usize::from(u16::MAX - ENDPOINT_PORT_BASE));
    (1..=n.min(MAX_SERVICES))
        .map(|i| Service {
            vip: Ipv4Addr::from(base + i as u32),
            port: SERVICE_PORT,
            endpoints: (0..eps)
                .map(|e| (sink_ip, ENDPOINT_PORT_BASE + e as u16))
                .collect(),
        })
        .collect()
}

/// `svc` with its last endpoint replaced by one on port + [`CHANGE_PORT_OFFSET`] (wrapping):
/// the one-endpoint change. A service without endpoints gets one, on `ENDPOINT_PORT_BASE`
/// of 127.0.0.1.
pub fn changed(svc: &Service) -> Service {
    let mut new = svc.clone();
    match new.endpoints.last_mut() {
        Some(ep) => ep.1 = ep.1.wrapping_add(CHANGE_PORT_OFFSET),
        None => new
            .endpoints
            .push((Ipv4Addr::LOCALHOST, ENDPOINT_PORT_BASE)),
    }
    new
}

/// An `iptables-restore` input for the `nat` table with `services`, as kube-proxy's iptables
/// mode writes it (see the module header), jumps from the built-in chains included.
pub fn iptables_rules(services: &[Service]) -> String {
    let mut out = String::with_capacity(256 + services.len() * 900);
    out.push_str("*nat\n");
    for chain in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    for svc in services {
        out.push_str(&format!(":{} - [0:0]\n", svc.svc_chain()));
        for &ep in &svc.endpoints {
            out.push_str(&format!(":{} - [0:0]\n", svc.sep_chain(ep)));
        }
    }
    out.push_str(
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
         -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
    );
    iptables_top_rules(&mut out, services);
    let comments = !large_cluster_mode(services);
    for svc in services {
        iptables_service_rules(&mut out, svc, comments);
    }
    out.push_str("COMMIT\n");
    out
}

/// The top-level chains' rules: KUBE-POSTROUTING, KUBE-MARK-MASQ, KUBE-SERVICES (kube-proxy
/// rewrites these in full on every sync, partial or not).
fn iptables_top_rules(out: &mut String, services: &[Service]) {
    out.push_str(
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n",
    );
    for svc in services {
        out.push_str(&format!(
            "-A KUBE-SERVICES -m comment --comment \"{} cluster IP\" -m udp -p udp -d {}/32 --dport {} -j {}\n",
            svc.port_name(),
            svc.vip,
            svc.port,
            svc.svc_chain()
        ));
    }
    out.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
}

/// kube-proxy's iptables mode switches to "large cluster mode" above this many endpoints in
/// total (`largeClusterEndpointsThreshold`): it then leaves out the per-endpoint comments
/// (`appendServiceCommentLocked`) to make the ruleset smaller and faster to load.
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// Whether kube-proxy would be in large cluster mode with `services`.
pub fn large_cluster_mode(services: &[Service]) -> bool {
    services.iter().map(|s| s.endpoints.len()).sum::<usize>() > LARGE_CLUSTER_ENDPOINTS
}

/// A service's KUBE-SVC chain and its KUBE-SEP chains. Without `comments` (large cluster
/// mode) the jumps to the endpoints and the endpoint chains' rules carry no comment, as
/// kube-proxy writes them; the masquerade rule keeps its "cluster IP" comment.
fn iptables_service_rules(out: &mut String, svc: &Service, comments: bool) {
    let name = svc.port_name();
    let chain = svc.svc_chain();
    out.push_str(&format!(
        "-A {chain} -m comment --comment \"{name} cluster IP\" -m udp -p udp -d {}/32 --dport {} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ\n",
        svc.vip, svc.port
    ));
    let n = svc.endpoints.len();
    for (i, &ep) in svc.endpoints.iter().enumerate() {
        let sep = svc.sep_chain(ep);
        out.push_str(&format!("-A {chain} "));
        if comments {
            out.push_str(&format!(
                "-m comment --comment \"{name} -> {}:{}\" ",
                ep.0, ep.1
            ));
        }
        if i + 1 < n {
            out.push_str(&format!(
                "-m statistic --mode random --probability {:.10} ",
                1.0 / (n - i) as f64
            ));
        }
        out.push_str(&format!("-j {sep}\n"));
    }
    let comment = if comments {
        format!("-m comment --comment {name} ")
    } else {
        String::new()
    };
    for &ep in &svc.endpoints {
        let sep = svc.sep_chain(ep);
        out.push_str(&format!(
            "-A {sep} {comment}-s {}/32 -j KUBE-MARK-MASQ\n\
             -A {sep} {comment}-m udp -p udp -j DNAT --to-destination {}:{}\n",
            ep.0, ep.0, ep.1
        ));
    }
}

/// The `iptables-restore --noflush` input of kube-proxy's partial sync after service
/// `services[index]` changed into `new`: the top-level chains in full (with `services`, the
/// change applied), the changed service's chains, and `-X` of the endpoint chains that went
/// away. `None` if `index` is out of range.
pub fn iptables_change(services: &[Service], index: usize, new: &Service) -> Option<String> {
    let old = services.get(index)?;
    let mut after = services.to_vec();
    *after.get_mut(index)? = new.clone();
    let stale: Vec<String> = old
        .endpoints
        .iter()
        .filter(|ep| !new.endpoints.contains(ep))
        .map(|&ep| old.sep_chain(ep))
        .collect();
    let mut out = String::with_capacity(256 + services.len() * 200);
    out.push_str("*nat\n");
    for chain in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    out.push_str(&format!(":{} - [0:0]\n", new.svc_chain()));
    for &ep in &new.endpoints {
        out.push_str(&format!(":{} - [0:0]\n", new.sep_chain(ep)));
    }
    for chain in &stale {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    iptables_top_rules(&mut out, &after);
    iptables_service_rules(&mut out, new, !large_cluster_mode(&after));
    for chain in &stale {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// An `nft -f` input creating `table ip kube-proxy` with `services`, as kube-proxy's nftables
/// mode writes it (see the module header).
pub fn nft_rules(services: &[Service]) -> String {
    let mut out = String::with_capacity(2048 + services.len() * 900);
    out.push_str(
        "add table ip kube-proxy { comment \"rules for kube-proxy\" ; }\n\
         add chain ip kube-proxy mark-for-masquerade\n\
         add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000\n\
         add chain ip kube-proxy masquerading\n\
         add rule ip kube-proxy masquerading mark and 0x4000 == 0 return\n\
         add rule ip kube-proxy masquerading mark set mark xor 0x4000\n\
         add rule ip kube-proxy masquerading masquerade fully-random\n\
         add chain ip kube-proxy services\n\
         add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }\n\
         add rule ip kube-proxy nat-prerouting jump services\n\
         add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }\n\
         add rule ip kube-proxy nat-output jump services\n\
         add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }\n\
         add rule ip kube-proxy nat-postrouting jump masquerading\n\
         add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }\n\
         add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips\n"
    );
    for svc in services {
        nft_service_rules(&mut out, svc);
    }
    for svc in services {
        out.push_str(&format!(
            "add element ip kube-proxy service-ips {{ {} . udp . {} : goto {} }}\n",
            svc.vip,
            svc.port,
            svc.nft_svc_chain()
        ));
    }
    out
}

/// A service's chain (flushed, then written) and its endpoint chains, as kube-proxy writes a
/// changed service: `add chain` + `flush chain` + rules.
fn nft_service_rules(out: &mut String, svc: &Service) {
    for &ep in &svc.endpoints {
        let chain = svc.nft_ep_chain(ep);
        out.push_str(&format!(
            "add chain ip kube-proxy {chain}\n\
             flush chain ip kube-proxy {chain}\n\
             add rule ip kube-proxy {chain} ip saddr {} jump mark-for-masquerade\n\
             add rule ip kube-proxy {chain} meta l4proto udp dnat to {}:{}\n",
            ep.0, ep.0, ep.1
        ));
    }
    let chain = svc.nft_svc_chain();
    out.push_str(&format!(
        "add chain ip kube-proxy {chain}\n\
         flush chain ip kube-proxy {chain}\n\
         add rule ip kube-proxy {chain} ip daddr {} udp dport {} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade\n",
        svc.vip, svc.port
    ));
    if !svc.endpoints.is_empty() {
        let targets: Vec<String> = svc
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, &ep)| format!("{i} : goto {}", svc.nft_ep_chain(ep)))
            .collect();
        out.push_str(&format!(
            "add rule ip kube-proxy {chain} numgen random mod {} vmap {{ {} }}\n",
            svc.endpoints.len(),
            targets.join(" , ")
        ));
    }
}

/// The incremental `nft -f` input after service `services[index]` changed into `new`: its
/// chains rewritten (flush + rules) and the endpoint chains that went away deleted, as
/// kube-proxy's nftables mode syncs a changed service. `None` if `index` is out of range.
pub fn nft_change(services: &[Service], index: usize, new: &Service) -> Option<String> {
    let old = services.get(index)?;
    let mut out = String::with_capacity(2048);
    nft_service_rules(&mut out, new);
    for &ep in old
        .endpoints
        .iter()
        .filter(|ep| !new.endpoints.contains(ep))
    {
        out.push_str(&format!(
            "delete chain ip kube-proxy {}\n",
            old.nft_ep_chain(ep)
        ));
    }
    Some(out)
}

/// Which kernel ruleset kube-proxy writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `iptables-restore` (whichever backend the machine's `iptables-restore` has: see
    /// [`iptables_version`]; on Debian 12 iptables-nft).
    Iptables,
    /// `iptables-legacy-restore`: the same rules through the legacy x_tables backend.
    IptablesLegacy,
    /// `nft -f`.
    Nftables,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Iptables, Kind::IptablesLegacy, Kind::Nftables];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Iptables => "iptables",
            Kind::IptablesLegacy => "iptables-legacy",
            Kind::Nftables => "nftables",
        }
    }

    /// The full ruleset for `services`.
    pub fn rules(self, services: &[Service]) -> String {
        match self {
            Kind::Iptables | Kind::IptablesLegacy => iptables_rules(services),
            Kind::Nftables => nft_rules(services),
        }
    }

    /// The one-service change (see [`iptables_change`], [`nft_change`]).
    pub fn change(self, services: &[Service], index: usize, new: &Service) -> Option<String> {
        match self {
            Kind::Iptables | Kind::IptablesLegacy => iptables_change(services, index, new),
            Kind::Nftables => nft_change(services, index, new),
        }
    }

    /// The command that loads this kind's files from stdin, as kube-proxy runs it.
    fn command(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Kind::Iptables => ("iptables-restore", &["--noflush", "--counters"]),
            Kind::IptablesLegacy => ("iptables-legacy-restore", &["--noflush", "--counters"]),
            Kind::Nftables => ("nft", &["-f", "-"]),
        }
    }
}

/// `iptables-restore --version`, e.g. `iptables-restore v1.8.9 (nf_tables)`: says which
/// backend the iptables numbers are for.
pub fn iptables_version() -> Result<String, String> {
    let out = Command::new("iptables-restore")
        .arg("--version")
        .output()
        .map_err(|e| format!("iptables-restore --version: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Feeds `input` to `kind`'s loader on stdin in the namespace `ns` and returns how long the
/// command took, from spawn to exit (what kube-proxy waits for). A failure carries stderr.
pub fn apply(ns: &Netns, kind: Kind, input: &str) -> Result<Duration, String> {
    let (program, args) = kind.command();
    in_netns(ns, || {
        let start = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{program}: {e}"))?;
        let write = child
            .stdin
            .take()
            .ok_or_else(|| format!("{program}: no stdin"))
            .and_then(|mut stdin| {
                stdin
                    .write_all(input.as_bytes())
                    .map_err(|e| format!("{program}: writing the rules: {e}"))
            });
        let out = child
            .wait_with_output()
            .map_err(|e| format!("{program}: {e}"))?;
        let took = start.elapsed();
        if !out.status.success() {
            return Err(format!(
                "{program} {} in {}: {}: {}",
                args.join(" "),
                ns.name(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        write.map(|()| took)
    })?
}

/// Programming times of one ruleset.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgrammingTimes {
    pub kind: Kind,
    pub services: usize,
    pub endpoints_per_service: usize,
    /// Loading all services into an empty namespace.
    pub full: Duration,
    /// Then applying the one-endpoint change of the middle service ([`changed`]).
    pub change: Duration,
    /// Sizes of the two inputs.
    pub full_bytes: usize,
    pub change_bytes: usize,
}

/// Loads `n` services with `endpoints_per_service` endpoints into a fresh namespace with
/// `kind`'s loader, then applies a one-endpoint change of service `n / 2`, timing each.
pub fn programming_times(
    kind: Kind,
    n: usize,
    endpoints_per_service: usize,
) -> Result<ProgrammingTimes, String> {
    let svcs = services(n, endpoints_per_service, Ipv4Addr::new(10, 244, 2, 10));
    let ns = Netns::new(&format!("kp-{}", kind.name())).map_err(|e| e.to_string())?;
    let full_in = kind.rules(&svcs);
    let full = apply(&ns, kind, &full_in)?;
    let index = svcs.len() / 2;
    let (change, change_bytes) = match svcs.get(index) {
        Some(old) => {
            let input = kind
                .change(&svcs, index, &changed(old))
                .ok_or_else(|| format!("no service {index}"))?;
            (apply(&ns, kind, &input)?, input.len())
        }
        None => (Duration::ZERO, 0),
    };
    Ok(ProgrammingTimes {
        kind,
        services: svcs.len(),
        endpoints_per_service,
        full,
        change,
        full_bytes: full_in.len(),
        change_bytes,
    })
}

/// Time to load `n` services (one endpoint each, as the brief's sweep) with `kind`.
pub fn programming_time(kind: Kind, n: usize) -> Result<Duration, String> {
    programming_times(kind, n, 1).map(|t| t.full)
}

/// The generator's address (pod CIDR, inside [`CLUSTER_CIDR`]: no masquerade).
pub const GEN_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
/// The DUT's addresses towards the generator and towards the sink.
pub const DUT_GEN_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
pub const DUT_SINK_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 1);
/// The sink, where every endpoint lives.
pub const SINK_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 10);

/// Smallest frame [`throughput`] sends (the Ethernet minimum without FCS).
pub const MIN_FRAME: usize = crate::pktgen::MIN_FRAME;
/// Largest frame [`throughput`] sends: a full 1500-byte-MTU frame is 1514 bytes, but the
/// scenario's sizes are the usual 60..=1500 of the RFC 2544 style sweeps.
pub const MAX_FRAME: usize = 1500;
/// The most endpoints a service can have here (their ports count up from
/// [`ENDPOINT_PORT_BASE`]).
pub const MAX_ENDPOINTS: usize = (u16::MAX - ENDPOINT_PORT_BASE) as usize;
/// Below this many new conntrack entries, bytes per flow are not computed (slab and
/// `/proc/meminfo` noise from the rest of the machine would dominate).
pub const MIN_ENTRIES_FOR_BYTES: u64 = 1000;
/// The conntrack slab cache's name in `/proc/slabinfo` and `/sys/kernel/slab`.
pub const CONNTRACK_SLAB: &str = "nf_conntrack";

/// What [`throughput`] sends and how its services look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// Ethernet frame size without FCS, [`MIN_FRAME`]`..=`[`MAX_FRAME`].
    pub frame_size: usize,
    /// Endpoints of every service, `1..=`[`MAX_ENDPOINTS`] (all on the sink, ports
    /// [`ENDPOINT_PORT_BASE`] + e).
    pub endpoints_per_service: usize,
}

impl Default for Traffic {
    /// 60-byte frames, one endpoint per service.
    fn default() -> Traffic {
        Traffic {
            frame_size: MIN_FRAME,
            endpoints_per_service: 1,
        }
    }
}

impl Traffic {
    /// Checked: `frame_size` in [`MIN_FRAME`]`..=`[`MAX_FRAME`], `endpoints_per_service` in
    /// `1..=`[`MAX_ENDPOINTS`].
    pub fn new(frame_size: usize, endpoints_per_service: usize) -> Result<Traffic, String> {
        let t = Traffic {
            frame_size,
            endpoints_per_service,
        };
        t.check().map(|()| t)
    }

    /// `self` with another frame size (unchecked until used).
    pub fn frame(self, frame_size: usize) -> Traffic {
        Traffic { frame_size, ..self }
    }

    /// `self` with another number of endpoints per service (unchecked until used).
    pub fn endpoints(self, endpoints_per_service: usize) -> Traffic {
        Traffic {
            endpoints_per_service,
            ..self
        }
    }

    fn check(&self) -> Result<(), String> {
        if !(MIN_FRAME..=MAX_FRAME).contains(&self.frame_size) {
            return Err(format!(
                "frame size {} is outside {MIN_FRAME}..={MAX_FRAME}",
                self.frame_size
            ));
        }
        if !(1..=MAX_ENDPOINTS).contains(&self.endpoints_per_service) {
            return Err(format!(
                "{} endpoints per service: 1..={MAX_ENDPOINTS} are possible",
                self.endpoints_per_service
            ));
        }
        Ok(())
    }
}

/// gen (eth0) -> (g0) dut (s0) -> (eth0) sink, veth pairs; the DUT kernel forwards
/// (ip_forward=1, rp_filter=0, a permanent neighbour entry for the sink); the sink drops the
/// UDP datagrams at its netdev ingress hook (after the receiver's AF_PACKET tap saw them).
/// Dropping it (or an error half-way through [`Topology::build`]) removes the namespaces and
/// with them the veths, rules and conntrack entries.
pub struct Topology {
    pub gen: Netns,
    pub dut: Netns,
    pub sink: Netns,
    gen_mac: [u8; 6],
    dut_mac: [u8; 6],
}

/// One run of [`Topology::measure`]: what was sent and received, and the DUT's conntrack
/// table before and after.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub sent: GenReport,
    pub received: RecvReport,
    pub conntrack: ConntrackCost,
}

impl Topology {
    /// Builds the three namespaces. On an error, what was built is removed (the [`Netns`]
    /// values made so far are dropped, and the veths live inside them).
    pub fn build() -> Result<Topology, String> {
        let e = |e: std::io::Error| e.to_string();
        let gen = Netns::new("kp-gen").map_err(e)?;
        let dut = Netns::new("kp-dut").map_err(e)?;
        let sink = Netns::new("kp-sink").map_err(e)?;
        crate::testbed::veth(&gen, "eth0", &dut, "g0").map_err(e)?;
        crate::testbed::veth(&dut, "s0", &sink, "eth0").map_err(e)?;
        gen.ip(&["addr", "add", &format!("{GEN_IP}/24"), "dev", "eth0"])
            .map_err(e)?;
        dut.ip(&["addr", "add", &format!("{DUT_GEN_IP}/24"), "dev", "g0"])
            .map_err(e)?;
        dut.ip(&["addr", "add", &format!("{DUT_SINK_IP}/24"), "dev", "s0"])
            .map_err(e)?;
        sink.ip(&["addr", "add", &format!("{SINK_IP}/24"), "dev", "eth0"])
            .map_err(e)?;
        for key in [
            "net.ipv4.conf.all.rp_filter",
            "net.ipv4.conf.default.rp_filter",
            "net.ipv4.conf.g0.rp_filter",
        ] {
            dut.sysctl(key, "0").map_err(e)?;
        }
        dut.sysctl("net.ipv4.ip_forward", "1").map_err(e)?;
        let sink_mac = sink.mac("eth0").map_err(e)?;
        dut.ip(&[
            "neigh",
            "replace",
            &SINK_IP.to_string(),
            "lladdr",
            &control::net::format_mac(&sink_mac),
            "dev",
            "s0",
            "nud",
            "permanent",
        ])
        .map_err(e)?;
        sink.exec_ok(&[
            "nft",
            "add table netdev kp-sink { chain in { type filter hook ingress device eth0 priority 0 ; ip protocol udp drop ; } ; }",
        ])
        .map_err(e)?;
        let gen_mac = gen.mac("eth0").map_err(e)?;
        let dut_mac = dut.mac("g0").map_err(e)?;
        Ok(Topology {
            gen,
            dut,
            sink,
            gen_mac,
            dut_mac,
        })
    }

    /// Sends `frame_size`-byte UDP frames to `vip:SERVICE_PORT` from the generator as fast as
    /// possible for `duration` with `flows`, while the sink's receiver counts what arrives;
    /// the DUT's conntrack table is looked at right before and right after the generator.
    pub fn measure(
        &self,
        vip: Ipv4Addr,
        flows: FlowPattern,
        frame_size: usize,
        duration: Duration,
    ) -> Result<Measurement, String> {
        if !(MIN_FRAME..=MAX_FRAME).contains(&frame_size) {
            return Err(format!(
                "frame size {frame_size} is outside {MIN_FRAME}..={MAX_FRAME}"
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
        let rcfg = RecvConfig {
            ifname: "eth0".to_string(),
            duration: duration.saturating_add(Duration::from_secs(5)),
            expect_dst_port: None,
        };
        let rx_stop = Arc::clone(&stop);
        // A panic on the receiver's thread (entering the namespace) surfaces as an Err from
        // join below, and drops ready_tx, which ends the wait for it.
        let rx = self.sink.spawn(move || -> Result<RecvReport, String> {
            let mut r = match Receiver::open(&rcfg) {
                Ok(r) => r,
                Err(e) => {
                    let msg = format!("receiver: {e}");
                    let _ = ready_tx.send(Err(msg.clone()));
                    return Err(msg);
                }
            };
            let _ = ready_tx.send(Ok(()));
            r.run(&rx_stop).map_err(|e| format!("receiver: {e}"))
        });
        let ready = ready_rx
            .recv()
            .map_err(|_| "receiver thread ended before opening".to_string())
            .and_then(|r| r);
        let gcfg = GenConfig {
            ifname: "eth0".to_string(),
            src_mac: self.gen_mac,
            dst_mac: self.dut_mac,
            src_ip: GEN_IP,
            dst_ip: vip,
            dst_port: SERVICE_PORT,
            frame_size,
            rate_pps: None,
            duration,
            count: None,
            flows,
            proto: Proto::Udp,
        };
        let before = ConntrackSnapshot::take(&self.dut);
        let sent = ready.and_then(|()| {
            in_netns(&self.gen, || generate(&gcfg))
                .and_then(|r| r.map_err(|e| format!("generator: {e}")))
        });
        let after = ConntrackSnapshot::take(&self.dut);
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let received = rx
            .join()
            .map_err(|_| "receiver thread panicked".to_string())
            .and_then(|r| r);
        let sent = sent?;
        let received = received?;
        let conntrack = ConntrackCost::between(
            &before,
            &after,
            read_u64(&self.dut, "net.netfilter.nf_conntrack_max"),
            slab_merged(CONNTRACK_SLAB),
            sent.elapsed,
        );
        Ok(Measurement {
            sent,
            received,
            conntrack,
        })
    }
}

/// Runs `f` in `ns` ([`Netns::run`]); a panic there (failing to enter the namespace) becomes
/// an `Err` naming the namespace instead of unwinding into the caller.
fn in_netns<R: Send>(ns: &Netns, f: impl FnOnce() -> R + Send) -> Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ns.run(f))).map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string());
        format!("in {}: {why}", ns.name())
    })
}

fn read_u64(ns: &Netns, key: &str) -> Option<u64> {
    ns.read_sysctl(key).ok().and_then(|s| s.trim().parse().ok())
}

/// One line of `/proc/slabinfo` (SLUB: `active_objs` counts objects in per-CPU slabs as
/// active, so it runs a little ahead of the objects really in use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlabInfo {
    pub active_objs: u64,
    pub num_objs: u64,
    /// Bytes per object, padding and metadata included: the kernel's entry size.
    pub objsize: u64,
}

/// The line of cache `name` in a `/proc/slabinfo` text (`None` if absent or malformed).
pub fn parse_slabinfo(text: &str, name: &str) -> Option<SlabInfo> {
    text.lines().find_map(|line| {
        let mut f = line.split_whitespace();
        if f.next()? != name {
            return None;
        }
        let mut num = || f.next().and_then(|x| x.parse::<u64>().ok());
        Some(SlabInfo {
            active_objs: num()?,
            num_objs: num()?,
            objsize: num()?,
        })
    })
}

/// The value of `key` (e.g. `Slab`) in a `/proc/meminfo` text, in kB.
pub fn parse_meminfo_kb(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, rest) = line.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Whether slab cache `name` is merged with others (SLUB): its `/sys/kernel/slab` entry is
/// then a symlink to the shared cache, or the cache lists aliases. `None` if unknown.
pub fn slab_merged(name: &str) -> Option<bool> {
    let path = std::path::Path::new("/sys/kernel/slab").join(name);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if meta.file_type().is_symlink() {
        return Some(true);
    }
    let aliases = std::fs::read_to_string(path.join("aliases")).ok()?;
    aliases.trim().parse::<u64>().ok().map(|n| n > 0)
}

/// The DUT's conntrack table at one moment: its entry count (per namespace) and the
/// machine-wide memory that holds entries (the `nf_conntrack` slab, `Slab:` of
/// `/proc/meminfo`). Fields are `None` when unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConntrackSnapshot {
    pub count: Option<u64>,
    pub slab: Option<SlabInfo>,
    pub meminfo_slab_kb: Option<u64>,
}

impl ConntrackSnapshot {
    /// Reads `nf_conntrack_count` in `dut`, `/proc/slabinfo` and `/proc/meminfo`.
    pub fn take(dut: &Netns) -> ConntrackSnapshot {
        ConntrackSnapshot {
            count: read_u64(dut, "net.netfilter.nf_conntrack_count"),
            slab: std::fs::read_to_string("/proc/slabinfo")
                .ok()
                .and_then(|t| parse_slabinfo(&t, CONNTRACK_SLAB)),
            meminfo_slab_kb: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|t| parse_meminfo_kb(&t, "Slab")),
        }
    }
}

/// What the flows of one run cost the DUT kernel's connection tracking.
///
/// Entries live for `nf_conntrack_udp_timeout` (30 s unreplied) after their last packet, so
/// `new_entries` is the count's growth net of entries that expired during the run (none if
/// the previous run in this DUT ended more than 30 s earlier; [`throughput`] runs its
/// patterns back to back, so put the new-flow pattern first or alone for exact numbers).
/// Slab and `/proc/meminfo` are machine-wide: other work on the machine adds noise, which is
/// why bytes per flow need at least [`MIN_ENTRIES_FOR_BYTES`] new entries.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ConntrackCost {
    /// `nf_conntrack_count` in the DUT before and after the generator ran.
    pub count_before: Option<u64>,
    pub count_after: Option<u64>,
    /// `nf_conntrack_max` (machine-wide; new flows are dropped once the count reaches it).
    pub max: Option<u64>,
    /// The count reached `max` during the run: flows were dropped, rates are capped.
    pub at_max: bool,
    /// Growth of the count.
    pub new_entries: u64,
    /// `new_entries` / generator time.
    pub flows_per_sec: f64,
    /// `objsize` of the `nf_conntrack` slab: the kernel's `struct nf_conn` with padding.
    pub entry_size: Option<u64>,
    /// The `nf_conntrack` slab shares its cache with others (then its object counts include
    /// theirs, and `slab_bytes_per_flow` is less trustworthy).
    pub slab_merged: Option<bool>,
    /// Growth of the `nf_conntrack` slab's active objects × objsize / `new_entries`.
    pub slab_bytes_per_flow: Option<f64>,
    /// Growth of `Slab:` in `/proc/meminfo` / `new_entries`: the entry, its extensions
    /// (NAT, ...) from kmalloc caches and whole slab pages.
    pub meminfo_bytes_per_flow: Option<f64>,
}

impl ConntrackCost {
    /// The cost between two snapshots around a generator run of `elapsed`.
    pub fn between(
        before: &ConntrackSnapshot,
        after: &ConntrackSnapshot,
        max: Option<u64>,
        slab_merged: Option<bool>,
        elapsed: Duration,
    ) -> ConntrackCost {
        let new_entries = match (before.count, after.count) {
            (Some(b), Some(a)) => a.saturating_sub(b),
            _ => 0,
        };
        let secs = elapsed.as_secs_f64();
        let per_flow = |grown: Option<f64>| {
            grown
                .filter(|_| new_entries >= MIN_ENTRIES_FOR_BYTES)
                .map(|g| g / new_entries as f64)
        };
        let slab_grown = before
            .slab
            .zip(after.slab)
            .map(|(b, a)| (a.active_objs as f64 - b.active_objs as f64) * a.objsize as f64);
        let meminfo_grown = before
            .meminfo_slab_kb
            .zip(after.meminfo_slab_kb)
            .map(|(b, a)| (a as f64 - b as f64) * 1024.0);
        ConntrackCost {
            count_before: before.count,
            count_after: after.count,
            max,
            at_max: matches!((after.count, max), (Some(c), Some(m)) if m > 0 && c >= m),
            new_entries,
            flows_per_sec: if secs > 0.0 {
                new_entries as f64 / secs
            } else {
                0.0
            },
            entry_size: after.slab.or(before.slab).map(|s| s.objsize),
            slab_merged,
            slab_bytes_per_flow: per_flow(slab_grown),
            meminfo_bytes_per_flow: per_flow(meminfo_grown),
        }
    }
}

/// One throughput measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct ThroughputRow {
    pub kind: Kind,
    pub services: usize,
    pub endpoints_per_service: usize,
    pub frame_size: usize,
    pub flows: FlowPattern,
    /// What the generator sent, and its rate.
    pub sent: u64,
    pub sent_pps: f64,
    /// What reached the sink, and `received / generator time`.
    pub received: u64,
    pub delivered_pps: f64,
    /// The DUT's `nf_conntrack_count` after the run (None if unreadable).
    pub conntrack_count: Option<u64>,
    /// What the run's flows cost the DUT's conntrack table.
    pub conntrack: ConntrackCost,
    /// Loading the rules into the DUT.
    pub load: Duration,
}

/// Builds a [`Topology`], loads `n` services (`traffic.endpoints_per_service` endpoints each,
/// all on the sink) into the DUT with `kind`, and measures each of `patterns` for `duration`
/// with `traffic.frame_size`-byte frames towards the *last* service's VIP (matched after n-1
/// other rules in iptables' KUBE-SERVICES). The namespaces are removed when it returns.
pub fn throughput(
    kind: Kind,
    n: usize,
    traffic: Traffic,
    patterns: &[FlowPattern],
    duration: Duration,
) -> Result<Vec<ThroughputRow>, String> {
    traffic.check()?;
    let svcs = services(n.max(1), traffic.endpoints_per_service, SINK_IP);
    let vip = svcs
        .last()
        .map(|s| s.vip)
        .ok_or_else(|| "no service".to_string())?;
    let topo = Topology::build()?;
    let load = apply(&topo.dut, kind, &kind.rules(&svcs))?;
    let mut rows = Vec::with_capacity(patterns.len());
    for &flows in patterns {
        let m = topo.measure(vip, flows, traffic.frame_size, duration)?;
        let secs = m.sent.elapsed.as_secs_f64();
        rows.push(ThroughputRow {
            kind,
            services: svcs.len(),
            endpoints_per_service: traffic.endpoints_per_service,
            frame_size: traffic.frame_size,
            flows,
            sent: m.sent.sent,
            sent_pps: m.sent.pps,
            received: m.received.received,
            delivered_pps: if secs > 0.0 {
                m.received.received as f64 / secs
            } else {
                0.0
            },
            conntrack_count: m.conntrack.count_after,
            conntrack: m.conntrack,
            load,
        });
    }
    Ok(rows)
}

/// The conntrack scale of the kernel: a fresh DUT with `n` services of `kind`, one run of a
/// new flow per packet for `duration`; the row's [`ConntrackCost`] says how many flows per
/// second the kernel created, how big an entry is, and whether `nf_conntrack_max` was hit.
pub fn conntrack_cost(
    kind: Kind,
    n: usize,
    traffic: Traffic,
    duration: Duration,
) -> Result<ThroughputRow, String> {
    throughput(kind, n, traffic, &[FlowPattern::NewPerPacket], duration)?
        .pop()
        .ok_or_else(|| "conntrack_cost: no row".to_string())
}

/// A Markdown table of throughput rows, with their conntrack cost.
pub fn throughput_table(rows: &[ThroughputRow]) -> String {
    let mut out = String::from(
        "| kind | services | endpoints | frame | flows | sent kpps | delivered kpps | loss | conntrack entries | new flows/s | conntrack max | entry size | slab B/flow | Slab: B/flow | rules load |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let opt = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |c| c.to_string());
    let bytes = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |b| format!("{b:.0}"));
    for r in rows {
        let loss = if r.sent > 0 {
            100.0 * (1.0 - r.received as f64 / r.sent as f64)
        } else {
            0.0
        };
        let flows = match r.flows {
            FlowPattern::One => "one".to_string(),
            FlowPattern::NewPerPacket => "new per packet".to_string(),
            FlowPattern::RoundRobin(k) => format!("{k} round robin"),
        };
        let ct = &r.conntrack;
        let entries = format!(
            "{}{}",
            opt(r.conntrack_count),
            if ct.at_max { " (at max)" } else { "" }
        );
        let entry_size = format!(
            "{}{}",
            opt(ct.entry_size),
            if ct.slab_merged == Some(true) {
                " (merged slab)"
            } else {
                ""
            }
        );
        out.push_str(&format!(
            "| {} | {} | {} | {} | {flows} | {:.1} | {:.1} | {loss:.1}% | {entries} | {:.0} | {} | {entry_size} | {} | {} | {:.2} s |\n",
            r.kind.name(),
            r.services,
            r.endpoints_per_service,
            r.frame_size,
            r.sent_pps / 1e3,
            r.delivered_pps / 1e3,
            ct.flows_per_sec,
            opt(ct.max),
            bytes(ct.slab_bytes_per_flow),
            bytes(ct.meminfo_bytes_per_flow),
            r.load.as_secs_f64()
        ));
    }
    out
}

/// `len` characters of base32 (RFC 4648 alphabet, as Go's `base32.StdEncoding`) of an 80-bit
/// hash of `s` (two FNV-1a 64 with different offsets). `len` is at most 16.
fn hash_name(s: &str, len: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let fnv = |offset: u64| {
        s.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let hi = fnv(0xcbf2_9ce4_8422_2325);
    let lo = fnv(0x8422_2325_cbf2_9ce4);
    let bits: u128 = (u128::from(hi) << 16) | u128::from(lo & 0xffff);
    (0..len.min(16))
        .map(|i| {
            let shift = 75 - 5 * i;
            char::from(ALPHABET[((bits >> shift) & 31) as usize])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINK: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 10);

    #[test]
    fn services_take_vips_in_order_and_point_at_the_sink() {
        let s = services(3, 2, SINK);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].vip, Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(s[2].vip, Ipv4Addr::new(10, 96, 0, 3));
        assert_eq!(s[1].endpoints, vec![(SINK, 9000), (SINK, 9001)]);
        assert!(s.iter().all(|x| x.port == SERVICE_PORT));
        let big = services(70_000, 1, SINK);
        assert_eq!(big[69_999].vip, Ipv4Addr::new(10, 97, 17, 112));
        assert_eq!(services(usize::MAX, 0, SINK).len(), MAX_SERVICES);
        let last = services(MAX_SERVICES, 0, SINK).pop().map(|s| s.vip);
        assert_eq!(last, Some(Ipv4Addr::new(10, 111, 255, 254)));
    }

    #[test]
    fn hashes_look_like_kube_proxy_names_and_differ() {
        let s = services(2, 2, SINK);
        let a = s[0].svc_chain();
        assert_eq!(a.len(), "KUBE-SVC-".len() + 16);
        assert!(a["KUBE-SVC-".len()..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_ne!(a, s[1].svc_chain());
        assert_ne!(
            s[0].sep_chain(s[0].endpoints[0]),
            s[0].sep_chain(s[0].endpoints[1])
        );
        assert_ne!(
            s[0].sep_chain(s[0].endpoints[0]),
            s[1].sep_chain(s[1].endpoints[0])
        );
        let svc = s[0].nft_svc_chain();
        assert!(svc.starts_with("service-"), "{svc}");
        assert!(svc.ends_with("-bench/svc-10-96-0-1/udp/p80"), "{svc}");
        assert_eq!(hash_name("x", 8), hash_name("x", 16)[..8]);
    }

    #[test]
    fn iptables_rules_have_kube_proxy_shape() {
        let s = services(2, 3, SINK);
        let text = iptables_rules(&s);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&"*nat"));
        assert_eq!(lines.last(), Some(&"COMMIT"));
        // 4 top chains + 2 x (1 svc + 3 sep) declarations.
        assert_eq!(lines.iter().filter(|l| l.starts_with(':')).count(), 12);
        let svc0 = s[0].svc_chain();
        let svc_rule = format!(
            "-A KUBE-SERVICES -m comment --comment \"bench/svc-10-96-0-1:p80 cluster IP\" -m udp -p udp -d 10.96.0.1/32 --dport 80 -j {svc0}"
        );
        assert!(lines.contains(&svc_rule.as_str()), "{text}");
        // Services in slice order, the nodeports rule last in KUBE-SERVICES.
        let in_services: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("-A KUBE-SERVICES"))
            .collect();
        assert_eq!(in_services.len(), 3);
        assert!(in_services[1].contains("-d 10.96.0.2/32"));
        assert!(in_services[2].contains("--dst-type LOCAL -j KUBE-NODEPORTS"));
        let jumps: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with(&format!("-A {svc0} ")) && l.contains("KUBE-SEP-"))
            .collect();
        assert_eq!(jumps.len(), 3);
        assert!(
            jumps[0].contains("--probability 0.3333333333 -j"),
            "{}",
            jumps[0]
        );
        assert!(
            jumps[1].contains("--probability 0.5000000000 -j"),
            "{}",
            jumps[1]
        );
        assert!(!jumps[2].contains("statistic"), "{}", jumps[2]);
        let sep = s[0].sep_chain((SINK, 9002));
        let dnat = format!(
            "-A {sep} -m comment --comment bench/svc-10-96-0-1:p80 -m udp -p udp -j DNAT --to-destination 10.244.2.10:9002"
        );
        assert!(lines.contains(&dnat.as_str()), "{text}");
    }

    #[test]
    fn iptables_large_cluster_mode_drops_endpoint_comments_like_kube_proxy() {
        // 1000 endpoints in total: comments kept; 1001: dropped (kube-proxy's `>` threshold).
        let small = services(500, 2, SINK);
        assert!(!large_cluster_mode(&small));
        let text = iptables_rules(&small);
        let sep = small[0].sep_chain((SINK, 9000));
        assert!(text.contains(&format!(
            "-A {sep} -m comment --comment bench/svc-10-96-0-1:p80 -s 10.244.2.10/32 -j KUBE-MARK-MASQ\n"
        )));
        let big = services(1001, 1, SINK);
        assert!(large_cluster_mode(&big));
        let text = iptables_rules(&big);
        let sep = big[0].sep_chain((SINK, 9000));
        let svc = big[0].svc_chain();
        assert!(text.contains(&format!(
            "-A {sep} -s 10.244.2.10/32 -j KUBE-MARK-MASQ\n-A {sep} -m udp -p udp -j DNAT --to-destination 10.244.2.10:9000\n"
        )), "{}", &text[..2000.min(text.len())]);
        assert!(text.contains(&format!("-A {svc} -j {sep}\n")));
        // The masquerade and KUBE-SERVICES rules keep theirs; so does the partial sync's input.
        assert_eq!(text.matches("cluster IP\" ").count(), 2002);
        let change = iptables_change(&big, 3, &changed(&big[3])).unwrap_or_default();
        assert!(
            change.contains("-j DNAT --to-destination 10.244.2.10:10000\n"),
            "{change}"
        );
        assert!(!change.contains(" -> "), "{change}");
        let three = services(1000, 3, SINK);
        let text = iptables_rules(&three);
        assert!(text.contains(&format!(
            "-A {} -m statistic --mode random --probability 0.3333333333 -j {}\n",
            three[0].svc_chain(),
            three[0].sep_chain((SINK, 9000))
        )));
    }

    #[test]
    fn iptables_change_rewrites_the_service_and_drops_the_old_endpoint() {
        let s = services(3, 2, SINK);
        let new = changed(&s[1]);
        assert_eq!(new.endpoints, vec![(SINK, 9000), (SINK, 10001)]);
        let text = iptables_change(&s, 1, &new).unwrap_or_default();
        let old_sep = s[1].sep_chain((SINK, 9001));
        assert!(text.contains(&format!("-X {old_sep}\n")), "{text}");
        assert!(
            text.contains("--to-destination 10.244.2.10:10001"),
            "{text}"
        );
        assert!(
            !text.contains("--to-destination 10.244.2.10:9001"),
            "{text}"
        );
        // Other services' chains are not written, KUBE-SERVICES is, in full.
        assert!(!text.contains(&format!(":{} ", s[0].svc_chain())), "{text}");
        assert_eq!(text.matches("-A KUBE-SERVICES ").count(), 4);
        assert_eq!(iptables_change(&s, 3, &new), None);
    }

    #[test]
    fn nft_rules_have_kube_proxy_shape() {
        let s = services(2, 2, SINK);
        let text = nft_rules(&s);
        assert!(text.contains(
            "add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ;"
        ));
        let chain = s[1].nft_svc_chain();
        assert!(text.contains(&format!(
            "add element ip kube-proxy service-ips {{ 10.96.0.2 . udp . 80 : goto {chain} }}\n"
        )));
        let vmap = format!(
            "add rule ip kube-proxy {chain} numgen random mod 2 vmap {{ 0 : goto {} , 1 : goto {} }}\n",
            s[1].nft_ep_chain((SINK, 9000)),
            s[1].nft_ep_chain((SINK, 9001))
        );
        assert!(text.contains(&vmap), "{text}");
        assert!(text.contains(&format!(
            "add rule ip kube-proxy {} meta l4proto udp dnat to 10.244.2.10:9001\n",
            s[1].nft_ep_chain((SINK, 9001))
        )));
        assert_eq!(text.matches("add element").count(), 2);
    }

    #[test]
    fn nft_change_rewrites_the_service_and_deletes_the_old_endpoint() {
        let s = services(2, 2, SINK);
        let new = changed(&s[0]);
        let text = nft_change(&s, 0, &new).unwrap_or_default();
        assert!(text.contains(&format!(
            "flush chain ip kube-proxy {}\n",
            s[0].nft_svc_chain()
        )));
        assert!(text.contains("dnat to 10.244.2.10:10001"));
        assert!(text.ends_with(&format!(
            "delete chain ip kube-proxy {}\n",
            s[0].nft_ep_chain((SINK, 9001))
        )));
        assert!(!text.contains(&s[1].nft_svc_chain()));
        assert_eq!(nft_change(&s, 2, &new), None);
    }

    const SLABINFO: &str = "slabinfo - version: 2.1\n\
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n\
nf_conntrack_expect      0      0    208   19    1 : tunables    0    0    0 : slabdata      0      0      0\n\
nf_conntrack        4096   4112    256   16    1 : tunables    0    0    0 : slabdata    257    257      0\n";

    #[test]
    fn slabinfo_and_meminfo_parse_the_named_line_only() {
        assert_eq!(
            parse_slabinfo(SLABINFO, "nf_conntrack"),
            Some(SlabInfo {
                active_objs: 4096,
                num_objs: 4112,
                objsize: 256
            })
        );
        assert_eq!(
            parse_slabinfo(SLABINFO, "nf_conntrack_expect").map(|s| s.objsize),
            Some(208)
        );
        assert_eq!(parse_slabinfo(SLABINFO, "nf_conn"), None);
        assert_eq!(
            parse_slabinfo("nf_conntrack 1 x 256\n", "nf_conntrack"),
            None
        );
        let meminfo = "MemTotal:       24000000 kB\nSlab:             176308 kB\nSReclaimable:      50000 kB\n";
        assert_eq!(parse_meminfo_kb(meminfo, "Slab"), Some(176_308));
        assert_eq!(parse_meminfo_kb(meminfo, "SUnreclaim"), None);
        assert_eq!(parse_meminfo_kb("Slab: lots kB\n", "Slab"), None);
    }

    fn snap(count: u64, active: u64, slab_kb: u64) -> ConntrackSnapshot {
        ConntrackSnapshot {
            count: Some(count),
            slab: Some(SlabInfo {
                active_objs: active,
                num_objs: active,
                objsize: 256,
            }),
            meminfo_slab_kb: Some(slab_kb),
        }
    }

    #[test]
    fn conntrack_cost_divides_growth_by_new_entries() {
        let c = ConntrackCost::between(
            &snap(1, 100, 1000),
            &snap(20_001, 20_100, 1000 + 20_000 * 400 / 1024),
            Some(262_144),
            Some(false),
            Duration::from_secs(2),
        );
        assert_eq!(c.new_entries, 20_000);
        assert!((c.flows_per_sec - 10_000.0).abs() < 1e-6, "{c:?}");
        assert_eq!(c.entry_size, Some(256));
        assert_eq!(c.slab_bytes_per_flow, Some(256.0));
        let m = c.meminfo_bytes_per_flow.unwrap_or(0.0);
        assert!((m - 400.0).abs() < 1.0, "{c:?}");
        assert!(!c.at_max);
        // At the table's max: flagged.
        let full = ConntrackCost::between(
            &snap(0, 0, 0),
            &snap(65_536, 65_536, 0),
            Some(65_536),
            None,
            Duration::from_secs(1),
        );
        assert!(full.at_max, "{full:?}");
        // Too few entries for bytes per flow; a shrinking count is no growth; no time, no rate.
        let few = ConntrackCost::between(
            &snap(10, 0, 0),
            &snap(500, 490, 100),
            None,
            None,
            Duration::ZERO,
        );
        assert_eq!((few.new_entries, few.flows_per_sec), (490, 0.0));
        assert_eq!(few.slab_bytes_per_flow, None);
        assert_eq!(few.meminfo_bytes_per_flow, None);
        let shrunk = ConntrackCost::between(
            &snap(5000, 0, 0),
            &snap(10, 0, 0),
            None,
            None,
            Duration::from_secs(1),
        );
        assert_eq!(shrunk.new_entries, 0);
        let unknown = ConntrackCost::between(
            &ConntrackSnapshot::default(),
            &ConntrackSnapshot::default(),
            None,
            None,
            Duration::from_secs(1),
        );
        assert_eq!((unknown.new_entries, unknown.entry_size), (0, None));
    }

    #[test]
    fn traffic_is_checked() {
        assert_eq!(
            Traffic::default(),
            Traffic {
                frame_size: 60,
                endpoints_per_service: 1
            }
        );
        assert!(Traffic::new(1500, 4).is_ok());
        let err = Traffic::new(59, 1).err().unwrap_or_default();
        assert!(err.contains("frame size 59"), "{err}");
        assert!(Traffic::new(1501, 1).is_err());
        assert!(Traffic::new(60, 0).is_err());
        assert!(Traffic::new(60, MAX_ENDPOINTS + 1).is_err());
        let t = Traffic::default().frame(512).endpoints(3);
        assert_eq!((t.frame_size, t.endpoints_per_service), (512, 3));
        // throughput refuses a bad size before building anything.
        let err = throughput(
            Kind::Nftables,
            1,
            Traffic::default().frame(9000),
            &[FlowPattern::One],
            Duration::from_millis(1),
        )
        .err()
        .unwrap_or_default();
        assert!(err.contains("frame size 9000"), "{err}");
    }

    #[test]
    fn throughput_table_shows_conntrack_cost() {
        let row = ThroughputRow {
            kind: Kind::Nftables,
            services: 10,
            endpoints_per_service: 2,
            frame_size: 1500,
            flows: FlowPattern::NewPerPacket,
            sent: 1000,
            sent_pps: 50_000.0,
            received: 900,
            delivered_pps: 45_000.0,
            conntrack_count: Some(65_536),
            conntrack: ConntrackCost {
                max: Some(65_536),
                at_max: true,
                flows_per_sec: 32_768.0,
                entry_size: Some(256),
                slab_merged: Some(true),
                slab_bytes_per_flow: Some(261.4),
                meminfo_bytes_per_flow: None,
                ..ConntrackCost::default()
            },
            load: Duration::from_millis(250),
        };
        let table = throughput_table(&[row]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert_eq!(lines[0].matches('|').count(), lines[2].matches('|').count());
        assert_eq!(
            lines[2],
            "| nftables | 10 | 2 | 1500 | new per packet | 50.0 | 45.0 | 10.0% | 65536 (at max) | 32768 | 65536 | 256 (merged slab) | 261 | - | 0.25 s |"
        );
    }

    #[test]
    fn changed_adds_an_endpoint_to_an_empty_service() {
        let s = services(1, 0, SINK);
        assert_eq!(
            changed(&s[0]).endpoints,
            vec![(Ipv4Addr::LOCALHOST, ENDPOINT_PORT_BASE)]
        );
    }
}
