//! A table of broken cluster files: each must be refused with the exact line, the exact
//! field path and a message that says what is wrong.

use std::path::Path;

use control::config::{self, ConfigError};

/// A valid file; the cases below edit it by line number (1-based).
const BASE: &str = "\
cluster:
  name: demo
  cluster_cidr: 10.244.0.0/16
nodes:
  - name: node-1
    pod_cidr: 10.244.1.0/24
    pods:
      - name: web-1
        ip: 10.244.1.10
        port:
          kind: afpacket
          interface: veth-web1
      - name: web-2
        ip: 10.244.1.11
        port:
          kind: tap
          interface: tap-web2
";

/// BASE with line `n` replaced by `text` (which may hold several lines, or none).
fn replace(n: usize, text: &str) -> String {
    let mut lines: Vec<&str> = BASE.lines().collect();
    assert!(n >= 1 && n <= lines.len());
    if text.is_empty() {
        lines.remove(n - 1);
    } else {
        lines[n - 1] = text;
    }
    lines.join("\n") + "\n"
}

/// BASE with `text` inserted after line `n`.
fn insert_after(n: usize, text: &str) -> String {
    let mut lines: Vec<&str> = BASE.lines().collect();
    lines.insert(n, text);
    lines.join("\n") + "\n"
}

fn append(text: &str) -> String {
    format!("{BASE}{text}")
}

/// A valid file with an overlay; the `ov` cases edit it by line number (1-based).
const OVERLAY_BASE: &str = "\
cluster:
  name: demo
  cluster_cidr: 10.244.0.0/16
  overlay:
    mode: vxlan
nodes:
  - name: node-1
    pod_cidr: 10.244.1.0/24
    underlay:
      interface: ul0
      address: 192.168.50.1/24
    pods:
      - name: web-1
        ip: 10.244.1.10
        port:
          kind: afpacket
          interface: veth-web1
  - name: node-2
    pod_cidr: 10.244.2.0/24
    underlay:
      interface: ul0
      address: 192.168.50.2/24
";

/// OVERLAY_BASE with each listed line (numbered as in OVERLAY_BASE) replaced by its text,
/// which may hold several lines, or none (the line is removed).
fn ov(edits: &[(usize, &str)]) -> String {
    let mut lines: Vec<Option<&str>> = OVERLAY_BASE.lines().map(Some).collect();
    for &(n, text) in edits {
        assert!(n >= 1 && n <= lines.len());
        lines[n - 1] = (!text.is_empty()).then_some(text);
    }
    lines.into_iter().flatten().collect::<Vec<_>>().join("\n") + "\n"
}

struct Case {
    name: &'static str,
    text: String,
    line: usize,
    field: &'static str,
    phrase: &'static str,
}

fn cases() -> Vec<Case> {
    let case = |name, text, line, field, phrase| Case {
        name,
        text,
        line,
        field,
        phrase,
    };
    vec![
        // --- the YAML parser's errors ---
        case("bad syntax: unclosed quote", replace(9, "        ip: \"10.244.1.10"), 9,
             "nodes[0].pods[0].ip", "unclosed quote"),
        // The scanner reads line 6 as the continuation of the plain scalar on line 5.
        case("bad syntax: tab indentation", replace(6, "\tpod_cidr: 10.244.1.0/24"), 5,
             "nodes[0].name", "found a tab"),
        case("bad syntax: key at a wrong indentation", replace(9, "         ip: 10.244.1.10"), 9,
             "nodes[0].pods[0].name", "mapping values are not allowed"),
        case("bad syntax: unclosed flow sequence", "cluster: {name: d, cluster_cidr: 10.0.0.0/8}\nnodes: [\n  {name: n, pod_cidr: 10.0.0.0/24}\n".into(), 2,
             "nodes", "unclosed bracket '['"),
        case("unknown field (typo)", replace(6, "    pod_cidrr: 10.244.1.0/24"), 6,
             "nodes[0].pod_cidrr", "unknown field `pod_cidrr`, expected one of name, pod_cidr, gateway, admin_socket, pods"),
        case("unknown field at the top", append("services: []\n"), 18,
             "services", "unknown field `services`"),
        case("unknown field in a port", insert_after(12, "          rings: v3"), 13,
             "nodes[0].pods[0].port.rings", "unknown field `rings`"),
        case("wrong type: sequence for an address", replace(9, "        ip: [1]"), 9,
             "nodes[0].pods[0].ip", "expected a single value here (text such as a name or an address), not a list or a mapping"),
        case("wrong type: scalar for the node list", "cluster: {name: d, cluster_cidr: 10.0.0.0/8}\nnodes: 5\n".into(), 2,
             "nodes", "expected a list here"),
        case("wrong type: mapping for a port", replace(10, "        port: afpacket"), 10,
             "nodes[0].pods[0].port", "expected a mapping here"),
        case("missing required field", replace(6, ""), 5,
             "nodes[0].pod_cidr", "required field `pod_cidr` is missing"),
        case("missing port", "cluster: {name: d, cluster_cidr: 10.0.0.0/8}\nnodes:\n  - name: n\n    pod_cidr: 10.0.0.0/24\n    pods:\n      - name: p\n        ip: 10.0.0.2\n".into(), 6,
             "nodes[0].pods[0].port", "required field `port` is missing"),
        case("missing field in flow style", "cluster: {name: d, cluster_cidr: 10.0.0.0/8}\nnodes:\n  - {name: n}\n".into(), 3,
             "nodes[0].pod_cidr", "required field `pod_cidr` is missing"),
        case("missing field in a nested flow map", "cluster: {name: d, cluster_cidr: 10.0.0.0/8}\nnodes:\n  - name: n\n    pod_cidr: 10.0.0.0/24\n    pods: [{name: p, ip: 10.0.0.2, port: {kind: tap}}]\n".into(), 5,
             "nodes[0].pods[0].port.interface", "required field `interface` is missing"),
        case("missing nodes", "cluster:\n  name: d\n  cluster_cidr: 10.0.0.0/8\n".into(), 1,
             "nodes", "required field `nodes` is missing"),
        case("duplicate key", insert_after(9, "        ip: 10.244.1.12"), 10,
             "nodes[0].pods[0].ip", "duplicate"),
        // --- wrong values ---
        case("address out of range", replace(9, "        ip: 300.1.1.1"), 9,
             "nodes[0].pods[0].ip", "`300.1.1.1` is not an IPv4 address (expected four numbers 0-255"),
        case("pod IP outside pod_cidr", replace(14, "        ip: 10.245.0.3"), 14,
             "nodes[0].pods[1].ip", "10.245.0.3 is outside the node's pod_cidr 10.244.1.0/24 (expected an address in 10.244.1.1-10.244.1.254)"),
        case("pod IP is the network address", replace(14, "        ip: 10.244.1.0"), 14,
             "nodes[0].pods[1].ip", "is the network address of the node's pod_cidr"),
        case("pod IP is the broadcast address", replace(14, "        ip: 10.244.1.255"), 14,
             "nodes[0].pods[1].ip", "is the broadcast address"),
        case("pod IP is the default gateway", replace(14, "        ip: 10.244.1.1"), 14,
             "nodes[0].pods[1].ip", "10.244.1.1 is the gateway address of node node-1, by default the first host of its pod_cidr (expected another address in 10.244.1.1-10.244.1.254)"),
        case("pod IP is an explicit gateway", insert_after(6, "    gateway: 10.244.1.11"), 15,
             "nodes[0].pods[1].ip", "as set by its gateway field"),
        case("duplicate pod IP", replace(14, "        ip: 10.244.1.10"), 14,
             "nodes[0].pods[1].ip", "10.244.1.10 is already the address of pod web-1 on node node-1 at line 9"),
        case("duplicate pod name", replace(13, "      - name: web-1"), 13,
             "nodes[0].pods[1].name", "pod name `web-1` is already used on this node by nodes[0].pods[0] at line 8"),
        case("duplicate interface", replace(17, "          interface: veth-web1"), 17,
             "nodes[0].pods[1].port.interface", "interface `veth-web1` is already used on this node by nodes[0].pods[0].port at line 12"),
        case("tap with ring", insert_after(17, "          ring: v2"), 18,
             "nodes[0].pods[1].port.ring", "ring is only valid for kind: afpacket"),
        case("afpacket with netns", insert_after(12, "          netns: pod-web1"), 13,
             "nodes[0].pods[0].port.netns", "netns is only valid for kind: tap"),
        case("bad netns name", insert_after(17, "          netns: ../etc"), 18,
             "nodes[0].pods[1].port.netns", "is not a valid network namespace name"),
        case("interface name too long", replace(12, "          interface: veth-web1-too-long"), 12,
             "nodes[0].pods[0].port.interface", "interface name `veth-web1-too-long` is 18 bytes long; Linux allows at most 15"),
        case("interface name with a slash", replace(12, "          interface: veth/web1"), 12,
             "nodes[0].pods[0].port.interface", "contains a forbidden character"),
        case("interface name dot-dot", replace(12, "          interface: \"..\""), 12,
             "nodes[0].pods[0].port.interface", "is not a valid interface name"),
        case("empty interface name", replace(12, "          interface: \"\""), 12,
             "nodes[0].pods[0].port.interface", "the interface name is empty"),
        case("bad MAC", insert_after(12, "          mac: \"02:00:00:00:01\""), 13,
             "nodes[0].pods[0].port.mac", "`02:00:00:00:01` is not a MAC address (expected six hex bytes like 02:00:00:00:00:01)"),
        case("multicast MAC", insert_after(12, "          mac: \"01:00:5e:00:00:01\""), 13,
             "nodes[0].pods[0].port.mac", "01:00:5e:00:00:01 is a multicast address (expected a unicast MAC"),
        case("zero MAC", insert_after(12, "          mac: \"00:00:00:00:00:00\""), 13,
             "nodes[0].pods[0].port.mac", "not a usable address"),
        case("bad port kind", replace(11, "          kind: af_packet"), 11,
             "nodes[0].pods[0].port.kind", "`af_packet` is not a port kind (expected afpacket or tap)"),
        case("bad ring", insert_after(12, "          ring: v4"), 13,
             "nodes[0].pods[0].port.ring", "`v4` is not a ring kind (expected v2 or v3)"),
        case("gateway outside pod_cidr", insert_after(6, "    gateway: 10.244.2.1"), 7,
             "nodes[0].gateway", "10.244.2.1 is outside the node's pod_cidr 10.244.1.0/24 (expected a host address in 10.244.1.1-10.244.1.254)"),
        case("gateway is the broadcast address", insert_after(6, "    gateway: 10.244.1.255"), 7,
             "nodes[0].gateway", "is the broadcast address of the node's pod_cidr"),
        case("relative admin socket", insert_after(6, "    admin_socket: run/node-1.sock"), 7,
             "nodes[0].admin_socket", "is not an absolute path"),
        case("admin socket too long", insert_after(6, &format!("    admin_socket: /{}", "s".repeat(120))), 7,
             "nodes[0].admin_socket", "limit of a Unix socket path"),
        case("empty nodes list", "cluster:\n  name: demo\n  cluster_cidr: 10.244.0.0/16\nnodes: []\n".into(), 4,
             "nodes", "the list is empty (expected at least one node)"),
        case("overlapping pod_cidrs", append("  - name: node-2\n    pod_cidr: 10.244.1.128/25\n"), 19,
             "nodes[1].pod_cidr", "10.244.1.128/25 overlaps 10.244.1.0/24, the pod_cidr of node node-1 at line 6"),
        case("duplicate node name", append("  - name: node-1\n    pod_cidr: 10.244.2.0/24\n"), 18,
             "nodes[1].name", "node name `node-1` is already used by nodes[0] at line 5"),
        case("pod_cidr outside cluster_cidr", replace(6, "    pod_cidr: 10.245.1.0/24"), 6,
             "nodes[0].pod_cidr", "10.245.1.0/24 is not inside cluster_cidr 10.244.0.0/16 (expected a prefix of 10.244.0.0/16, e.g. 10.244.1.0/24)"),
        case("pod_cidr larger than cluster_cidr", replace(6, "    pod_cidr: 10.0.0.0/8"), 6,
             "nodes[0].pod_cidr", "is not inside cluster_cidr"),
        case("pod_cidr too small", replace(6, "    pod_cidr: 10.244.1.0/31"), 6,
             "nodes[0].pod_cidr", "expected a prefix length of at most /30"),
        case("pod_cidr with host bits", replace(6, "    pod_cidr: 10.244.1.7/24"), 6,
             "nodes[0].pod_cidr", "10.244.1.7/24 has host bits set (expected the network address: 10.244.1.0/24)"),
        case("cluster_cidr not CIDR", replace(3, "  cluster_cidr: 10.244.0.0"), 3,
             "cluster.cluster_cidr", "is not in CIDR notation"),
        case("service_cidr overlaps", insert_after(3, "  service_cidr: 10.244.128.0/17"), 4,
             "cluster.service_cidr", "10.244.128.0/17 overlaps cluster_cidr 10.244.0.0/16"),
        case("bad cluster name", replace(2, "  name: Demo_1"), 2,
             "cluster.name", "`Demo_1` is not a valid name (expected 1-63 characters of a-z, 0-9 and '-'"),
        case("bad node name", replace(5, "  - name: -node"), 5,
             "nodes[0].name", "is not a valid name"),
        case("bad pod name", replace(8, "      - name: Web"), 8,
             "nodes[0].pods[0].name", "is not a valid pod name"),
        case("empty file", "# nothing but a comment\n".into(), 2,
             "", "the file has no content"),
        // --- the overlay and the underlay ---
        case("overlay: bad mode", ov(&[(5, "    mode: geneve")]), 5,
             "cluster.overlay.mode", "`geneve` is not an overlay mode (expected vxlan or udp)"),
        case("overlay: missing mode", ov(&[(5, "    mtu: 1500")]), 5,
             "cluster.overlay.mode", "required field `mode` is missing"),
        case("overlay: unknown field", ov(&[(5, "    mode: vxlan\n    vnid: 1")]), 6,
             "cluster.overlay.vnid", "unknown field `vnid`, expected one of mode, vni, port, udp_checksum, mtu"),
        case("overlay: vni in udp mode", ov(&[(5, "    mode: udp\n    vni: 1")]), 6,
             "cluster.overlay.vni", "vni applies to mode vxlan only (flannel's UDP mode carries no VNI; expected no vni here, or mode: vxlan)"),
        case("overlay: udp_checksum in udp mode", ov(&[(5, "    mode: udp\n    udp_checksum: false")]), 6,
             "cluster.overlay.udp_checksum", "udp_checksum applies to mode vxlan only"),
        case("overlay: vni beyond 24 bits", ov(&[(5, "    mode: vxlan\n    vni: 16777216")]), 6,
             "cluster.overlay.vni", "`16777216` is not a VNI (expected 0-16777215, the 24 bits of the VXLAN header; flannel uses 1)"),
        case("overlay: negative vni", ov(&[(5, "    mode: vxlan\n    vni: -1")]), 6,
             "cluster.overlay.vni", "`-1` is not a VNI (expected 0-16777215"),
        case("overlay: port 0", ov(&[(5, "    mode: vxlan\n    port: 0")]), 6,
             "cluster.overlay.port", "`0` is not a UDP port (expected 1-65535; the default is 8472 for vxlan, 8285 for udp)"),
        case("overlay: port beyond 65535", ov(&[(5, "    mode: udp\n    port: 65536")]), 6,
             "cluster.overlay.port", "`65536` is not a UDP port"),
        case("overlay: port as text", ov(&[(5, "    mode: udp\n    port: vxlan")]), 6,
             "cluster.overlay.port", "`vxlan` is not a UDP port"),
        case("overlay: udp_checksum not a boolean", ov(&[(5, "    mode: vxlan\n    udp_checksum: yes")]), 6,
             "cluster.overlay.udp_checksum", "`yes` is not true or false"),
        case("overlay: mtu above 9000", ov(&[(5, "    mode: vxlan\n    mtu: 9001")]), 6,
             "cluster.overlay.mtu", "`9001` is not a usable underlay MTU (expected 576-9000, e.g. 1500)"),
        case("overlay: mtu below 576", ov(&[(5, "    mode: vxlan\n    mtu: 575")]), 6,
             "cluster.overlay.mtu", "`575` is not a usable underlay MTU"),
        case("overlay: vxlan leaves pods too little", ov(&[(5, "    mode: vxlan\n    mtu: 625")]), 6,
             "cluster.overlay.mtu", "underlay MTU 625 leaves pods an MTU of 575 in mode vxlan (50 bytes of encapsulation) (expected at least 626, so that pods get 576 or more)"),
        case("overlay: udp leaves pods too little", ov(&[(5, "    mode: udp\n    mtu: 603")]), 6,
             "cluster.overlay.mtu", "underlay MTU 603 leaves pods an MTU of 575 in mode udp (28 bytes of encapsulation) (expected at least 604"),
        case("underlay without overlay", ov(&[(4, ""), (5, "")]), 8,
             "nodes[0].underlay", "underlay needs cluster.overlay (expected an overlay under cluster"),
        case("overlay without underlay on a node", ov(&[(20, ""), (21, ""), (22, "")]), 18,
             "nodes[1].underlay", "node node-2 has no underlay, which cluster.overlay at line 5 needs on every node"),
        case("underlay: sluice node without interface", ov(&[(10, "")]), 10,
             "nodes[0].underlay.interface", "required field `interface` is missing (a sluice node opens its underlay interface as the overlay uplink"),
        case("underlay: missing address", ov(&[(22, "")]), 21,
             "nodes[1].underlay.address", "required field `address` is missing"),
        case("underlay: unknown field", ov(&[(22, "      adress: 192.168.50.2/24")]), 22,
             "nodes[1].underlay.adress", "unknown field `adress`, expected one of interface, address, gateway, mac, ring, vtep_mac"),
        case("underlay: address without prefix length", ov(&[(11, "      address: 192.168.50.1")]), 11,
             "nodes[0].underlay.address", "`192.168.50.1` is not an address with a prefix length (expected the node's underlay address and the underlay subnet's prefix length, e.g. 192.168.50.1/24)"),
        case("underlay: /32", ov(&[(11, "      address: 192.168.50.1/32")]), 11,
             "nodes[0].underlay.address", "prefix length /32 leaves no underlay subnet"),
        case("underlay: network address", ov(&[(11, "      address: 192.168.50.0/24")]), 11,
             "nodes[0].underlay.address", "192.168.50.0 is the network address of its underlay subnet 192.168.50.0/24 (expected a host address in 192.168.50.1-192.168.50.254)"),
        case("underlay: broadcast address", ov(&[(22, "      address: 192.168.50.255/24")]), 22,
             "nodes[1].underlay.address", "192.168.50.255 is the broadcast address of its underlay subnet"),
        case("underlay: inside cluster_cidr", ov(&[(11, "      address: 10.244.200.1/24")]), 11,
             "nodes[0].underlay.address", "underlay subnet 10.244.200.0/24 overlaps cluster_cidr 10.244.0.0/16"),
        case("underlay: duplicate address", ov(&[(22, "      address: 192.168.50.1/24")]), 22,
             "nodes[1].underlay.address", "192.168.50.1 is already the underlay address of node node-1 at line 11 (expected a unique underlay address per node)"),
        case("underlay: peer off-subnet, no gateway", ov(&[(22, "      address: 10.0.0.2/24")]), 22,
             "nodes[1].underlay.address", "node-2's underlay 10.0.0.2/24 is not on node-1's underlay subnet 192.168.50.0/24 and node-1 has no underlay.gateway (expected an address in 192.168.50.1-192.168.50.254, or an underlay.gateway on node-1)"),
        case("underlay: the later node lacks the gateway",
             ov(&[(11, "      address: 192.168.50.1/24\n      gateway: 192.168.50.254"), (22, "      address: 10.0.0.2/24")]), 23,
             "nodes[1].underlay.address", "node-1's underlay 192.168.50.1/24 is not on node-2's underlay subnet 10.0.0.0/24 and node-2 has no underlay.gateway"),
        case("underlay: gateway outside the subnet", ov(&[(11, "      address: 192.168.50.1/24\n      gateway: 192.168.51.1")]), 12,
             "nodes[0].underlay.gateway", "192.168.51.1 is outside the node's underlay subnet 192.168.50.0/24 (expected a host address in 192.168.50.1-192.168.50.254)"),
        case("underlay: gateway is the node's own address", ov(&[(11, "      address: 192.168.50.1/24\n      gateway: 192.168.50.1")]), 12,
             "nodes[0].underlay.gateway", "192.168.50.1 is the node's own underlay address"),
        case("underlay: interface of a pod port", ov(&[(10, "      interface: veth-web1")]), 10,
             "nodes[0].underlay.interface", "interface `veth-web1` is already used on this node by nodes[0].pods[0].port at line 17 (expected an underlay interface that no pod port uses)"),
        case("underlay: interface name too long", ov(&[(21, "      interface: underlay-uplink0")]), 21,
             "nodes[1].underlay.interface", "is 16 bytes long; Linux allows at most 15"),
        case("underlay: duplicate vtep_mac",
             ov(&[(11, "      address: 192.168.50.1/24\n      vtep_mac: \"02:00:00:00:aa:01\""), (22, "      address: 192.168.50.2/24\n      vtep_mac: \"02:00:00:00:AA:01\"")]), 24,
             "nodes[1].underlay.vtep_mac", "02:00:00:00:aa:01 is already the vtep_mac of node node-1 at line 12 (expected a unique VTEP MAC per node)"),
        case("underlay: vtep_mac equal to a derived one",
             ov(&[(22, "      address: 192.168.50.2/24\n      vtep_mac: \"02:03:b9:55:54:26\"")]), 23,
             "nodes[1].underlay.vtep_mac", "02:03:b9:55:54:26 is already the vtep_mac of node node-1 (derived from its name) at line 7"),
        case("underlay: multicast vtep_mac", ov(&[(22, "      address: 192.168.50.2/24\n      vtep_mac: \"01:00:5e:00:00:01\"")]), 23,
             "nodes[1].underlay.vtep_mac", "01:00:5e:00:00:01 is a multicast address"),
        case("underlay: duplicate vtep_mac in udp mode", ov(&[(5, "    mode: udp"), (22, "      address: 192.168.50.2/24\n      vtep_mac: \"02:03:b9:55:54:26\"")]), 23,
             "nodes[1].underlay.vtep_mac", "is already the vtep_mac of node node-1 (derived from its name) at line 7"),
        case("underlay: zero uplink mac", ov(&[(22, "      address: 192.168.50.2/24\n      mac: \"00:00:00:00:00:00\"")]), 23,
             "nodes[1].underlay.mac", "not a usable address"),
        case("underlay: bad ring", ov(&[(22, "      address: 192.168.50.2/24\n      ring: v1")]), 23,
             "nodes[1].underlay.ring", "`v1` is not a ring kind (expected v2 or v3)"),
        case("dataplane: unknown", ov(&[(19, "    pod_cidr: 10.244.2.0/24\n    dataplane: dpdk")]), 20,
             "nodes[1].dataplane", "`dpdk` is not a dataplane (expected sluice or kernel)"),
        case("dataplane: kernel without overlay", insert_after(6, "    dataplane: kernel"), 7,
             "nodes[0].dataplane", "dataplane: kernel needs cluster.overlay"),
        case("dataplane: kernel with an uplink mac",
             ov(&[(19, "    pod_cidr: 10.244.2.0/24\n    dataplane: kernel"), (22, "      address: 192.168.50.2/24\n      mac: \"02:00:00:00:50:02\"")]), 24,
             "nodes[1].underlay.mac", "mac applies to dataplane sluice only (no engine runs on a kernel node; expected no mac here, or dataplane: sluice)"),
        case("dataplane: kernel with a ring",
             ov(&[(19, "    pod_cidr: 10.244.2.0/24\n    dataplane: kernel"), (22, "      address: 192.168.50.2/24\n      ring: v3")]), 24,
             "nodes[1].underlay.ring", "ring applies to dataplane sluice only"),
        case("dataplane: kernel with an admin socket",
             ov(&[(19, "    pod_cidr: 10.244.2.0/24\n    dataplane: kernel\n    admin_socket: /run/sluice/n2.sock")]), 21,
             "nodes[1].admin_socket", "admin_socket applies to dataplane sluice only"),
    ]
}

fn check(case: &Case) -> Result<(), String> {
    let file = Path::new("configs/bad.yaml");
    let err: ConfigError = match config::parse_str(&case.text, file) {
        Ok(_) => return Err("was accepted".into()),
        Err(e) => e,
    };
    let shown = err.to_string();
    let mut problems = Vec::new();
    if err.line() != Some(case.line) {
        problems.push(format!("line {:?}, expected {}", err.line(), case.line));
    }
    let want_field = (!case.field.is_empty()).then_some(case.field);
    if err.field() != want_field {
        problems.push(format!(
            "field {:?}, expected {:?}",
            err.field(),
            want_field
        ));
    }
    if !shown.contains(case.phrase) {
        problems.push(format!("message lacks {:?}", case.phrase));
    }
    let prefix = format!("configs/bad.yaml:{}:", case.line);
    if !shown.starts_with(&prefix) {
        problems.push(format!("does not start with {prefix:?}"));
    }
    if let Some(field) = want_field {
        if !shown.contains(&format!(": {field}: ")) {
            problems.push("field not shown".into());
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n    got: {shown}", problems.join("; ")))
    }
}

#[test]
fn the_base_file_is_valid() {
    let c = config::parse_str(BASE, Path::new("base.yaml")).unwrap();
    assert_eq!(c.nodes[0].pods.len(), 2);
}

#[test]
fn the_overlay_base_file_is_valid() {
    let c = config::parse_str(OVERLAY_BASE, Path::new("base.yaml")).unwrap();
    assert!(c.overlay.is_some());
    assert!(c.nodes.iter().all(|n| n.underlay.is_some()));
    // A kernel node may omit its interface, and a gateway reaches another subnet.
    let text = ov(&[
        (
            11,
            "      address: 192.168.50.1/24\n      gateway: 192.168.50.254",
        ),
        (19, "    pod_cidr: 10.244.2.0/24\n    dataplane: kernel"),
        (21, ""),
        (22, "      address: 10.0.0.2/24\n      gateway: 10.0.0.254"),
    ]);
    let c = config::parse_str(&text, Path::new("base.yaml")).unwrap();
    assert_eq!(c.nodes[1].underlay.as_ref().unwrap().interface, None);
    // A kernel node without a gateway is the kernel's business, not sluice's.
    let text = ov(&[
        (
            11,
            "      address: 192.168.50.1/24\n      gateway: 192.168.50.254",
        ),
        (19, "    pod_cidr: 10.244.2.0/24\n    dataplane: kernel"),
        (22, "      address: 10.0.0.2/24"),
    ]);
    assert!(config::parse_str(&text, Path::new("base.yaml")).is_ok());
}

#[test]
fn broken_files_are_refused_with_line_field_and_reason() {
    let failures: Vec<String> = cases()
        .iter()
        .filter_map(|c| check(c).err().map(|e| format!("[{}] {e}", c.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_full_message_reads_as_documented() {
    let err = config::parse_str(
        &replace(14, "        ip: 10.245.0.3"),
        Path::new("configs/bad.yaml"),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "configs/bad.yaml:14:13: nodes[0].pods[1].ip: 10.245.0.3 is outside the node's pod_cidr \
         10.244.1.0/24 (expected an address in 10.244.1.1-10.244.1.254)"
    );
    assert_eq!(err.column(), Some(13));

    let err = config::parse_str(
        &replace(6, "    pod_cidrr: 10.244.1.0/24"),
        Path::new("c.yaml"),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("c.yaml:6:5: nodes[0].pod_cidrr: unknown field `pod_cidrr`"),
        "{err}"
    );
}

#[test]
fn errors_in_flow_style_and_aliases_are_located() {
    let text = "cluster: {name: d, cluster_cidr: 10.0.0.0/8}\nnodes:\n  - {name: n, pod_cidr: 10.0.0.0/24, pods: [{name: p, ip: 10.0.1.2, port: {kind: tap, interface: t}}]}\n";
    let err = config::parse_str(text, Path::new("f.yaml")).unwrap_err();
    assert_eq!(
        (err.line(), err.field()),
        (Some(3), Some("nodes[0].pods[0].ip")),
        "{err}"
    );
    assert_eq!(err.column(), Some(59));

    let text = "cluster: {name: d, cluster_cidr: 10.0.0.0/8}\nnodes:\n  - {name: n, pod_cidr: 10.0.0.0/24, pods: [{name: p, ip: 10.0.0.2, port: {kind: tap, interface: t, ring: v2}}]}\n";
    let err = config::parse_str(text, Path::new("f.yaml")).unwrap_err();
    assert_eq!(
        (err.line(), err.field()),
        (Some(3), Some("nodes[0].pods[0].port.ring")),
        "{err}"
    );

    // An alias reused in a wrong place is reported where it is used.
    let text = "cluster:\n  name: &n node-x\n  cluster_cidr: 10.0.0.0/8\nnodes:\n  - name: n\n    pod_cidr: 10.0.0.0/24\n    gateway: *n\n";
    let err = config::parse_str(text, Path::new("f.yaml")).unwrap_err();
    assert_eq!(
        (err.line(), err.field()),
        (Some(7), Some("nodes[0].gateway")),
        "{err}"
    );
}
