//! Benchmark scenario: the kernel doing kube-proxy's job, the baseline for sluice's services.
//!
//! Owns: the rule generators that write N ClusterIP services the way kube-proxy writes them,
//! in its iptables mode ([`iptables_rules`], an `iptables-restore` input for the `nat` table)
//! and in its nftables mode ([`nft_rules`], an `nft -f` input for `table ip kube-proxy`), the
//! one-endpoint change of a partial sync ([`iptables_change`], [`nft_change`]), and the
//! measurement of programming time ([`programming_times`]): loading N services into a fresh
//! namespace, then applying one endpoint change; and the throughput of the kernel doing the
//! service NAT ([`throughput`]): gen -> dut -> sink namespaces on veth pairs, the DUT kernel
//! forwarding with the rules loaded, pktgen sending 60-byte UDP frames to the last service's
//! VIP as fast as the path takes them (one flow, or a new flow per packet), the sink's
//! receiver counting what was DNATed to it.
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
//! endpoint chain marks hairpin traffic and DNATs. Like kube-proxy the file is loaded with
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
    for svc in services {
        iptables_service_rules(&mut out, svc);
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

/// A service's KUBE-SVC chain and its KUBE-SEP chains.
fn iptables_service_rules(out: &mut String, svc: &Service) {
    let name = svc.port_name();
    let chain = svc.svc_chain();
    out.push_str(&format!(
        "-A {chain} -m comment --comment \"{name} cluster IP\" -m udp -p udp -d {}/32 --dport {} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ\n",
        svc.vip, svc.port
    ));
    let n = svc.endpoints.len();
    for (i, &ep) in svc.endpoints.iter().enumerate() {
        let sep = svc.sep_chain(ep);
        if i + 1 < n {
            out.push_str(&format!(
                "-A {chain} -m comment --comment \"{name} -> {}:{}\" -m statistic --mode random --probability {:.10} -j {sep}\n",
                ep.0,
                ep.1,
                1.0 / (n - i) as f64
            ));
        } else {
            out.push_str(&format!(
                "-A {chain} -m comment --comment \"{name} -> {}:{}\" -j {sep}\n",
                ep.0, ep.1
            ));
        }
    }
    for &ep in &svc.endpoints {
        let sep = svc.sep_chain(ep);
        out.push_str(&format!(
            "-A {sep} -m comment --comment {name} -s {}/32 -j KUBE-MARK-MASQ\n\
             -A {sep} -m comment --comment {name} -m udp -p udp -j DNAT --to-destination {}:{}\n",
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
    iptables_service_rules(&mut out, new);
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
    ns.run(|| {
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
    })
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

/// gen (eth0) -> (g0) dut (s0) -> (eth0) sink, veth pairs; the DUT kernel forwards
/// (ip_forward=1, rp_filter=0, a permanent neighbour entry for the sink); the sink drops the
/// UDP datagrams at its netdev ingress hook (after the receiver's AF_PACKET tap saw them).
pub struct Topology {
    pub gen: Netns,
    pub dut: Netns,
    pub sink: Netns,
    gen_mac: [u8; 6],
    dut_mac: [u8; 6],
}

impl Topology {
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

    /// Sends UDP to `vip:SERVICE_PORT` from the generator as fast as possible for `duration`
    /// with `flows`, while the sink's receiver counts what arrives.
    pub fn measure(
        &self,
        vip: Ipv4Addr,
        flows: FlowPattern,
        duration: Duration,
    ) -> Result<(GenReport, RecvReport), String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
        let rcfg = RecvConfig {
            ifname: "eth0".to_string(),
            duration: duration + Duration::from_secs(5),
            expect_dst_port: None,
        };
        let rx_stop = Arc::clone(&stop);
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
            frame_size: crate::pktgen::MIN_FRAME,
            rate_pps: None,
            duration,
            count: None,
            flows,
            proto: Proto::Udp,
        };
        let sent = ready.and_then(|()| {
            self.gen
                .run(|| generate(&gcfg))
                .map_err(|e| format!("generator: {e}"))
        });
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let received = rx
            .join()
            .map_err(|_| "receiver thread panicked".to_string())?;
        Ok((sent?, received?))
    }
}

/// One throughput measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct ThroughputRow {
    pub kind: Kind,
    pub services: usize,
    pub flows: FlowPattern,
    /// What the generator sent, and its rate.
    pub sent: u64,
    pub sent_pps: f64,
    /// What reached the sink, and `received / generator time`.
    pub received: u64,
    pub delivered_pps: f64,
    /// The DUT's `nf_conntrack_count` after the run (None if unreadable).
    pub conntrack_count: Option<u64>,
    /// Loading the rules into the DUT.
    pub load: Duration,
}

/// Builds a [`Topology`], loads `n` services (one endpoint each, on the sink) into the DUT
/// with `kind`, and measures each of `patterns` for `duration` towards the *last* service's
/// VIP (matched after n-1 other rules in iptables' KUBE-SERVICES).
pub fn throughput(
    kind: Kind,
    n: usize,
    patterns: &[FlowPattern],
    duration: Duration,
) -> Result<Vec<ThroughputRow>, String> {
    let svcs = services(n.max(1), 1, SINK_IP);
    let vip = svcs
        .last()
        .map(|s| s.vip)
        .ok_or_else(|| "no service".to_string())?;
    let topo = Topology::build()?;
    let load = apply(&topo.dut, kind, &kind.rules(&svcs))?;
    let mut rows = Vec::with_capacity(patterns.len());
    for &flows in patterns {
        let (g, r) = topo.measure(vip, flows, duration)?;
        let secs = g.elapsed.as_secs_f64();
        rows.push(ThroughputRow {
            kind,
            services: svcs.len(),
            flows,
            sent: g.sent,
            sent_pps: g.pps,
            received: r.received,
            delivered_pps: if secs > 0.0 {
                r.received as f64 / secs
            } else {
                0.0
            },
            conntrack_count: topo
                .dut
                .read_sysctl("net.netfilter.nf_conntrack_count")
                .ok()
                .and_then(|s| s.parse().ok()),
            load,
        });
    }
    Ok(rows)
}

/// A Markdown table of throughput rows.
pub fn throughput_table(rows: &[ThroughputRow]) -> String {
    let mut out = String::from(
        "| kind | services | flows | sent kpps | delivered kpps | loss | conntrack entries | rules load |\n|---|---|---|---|---|---|---|---|\n",
    );
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
        out.push_str(&format!(
            "| {} | {} | {flows} | {:.1} | {:.1} | {loss:.1}% | {} | {:.2} s |\n",
            r.kind.name(),
            r.services,
            r.sent_pps / 1e3,
            r.delivered_pps / 1e3,
            r.conntrack_count
                .map_or_else(|| "?".to_string(), |c| c.to_string()),
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

    #[test]
    fn changed_adds_an_endpoint_to_an_empty_service() {
        let s = services(1, 0, SINK);
        assert_eq!(
            changed(&s[0]).endpoints,
            vec![(Ipv4Addr::LOCALHOST, ENDPOINT_PORT_BASE)]
        );
    }
}
