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
