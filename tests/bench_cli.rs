//! `sluice bench --quick --out DIR`: the whole harness, briefly, through the command line, as
//! CI runs it (a smoke test: no timing assertions). Run as root.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn quick_run_writes_json_markdown_and_plots_for_every_scenario() {
    let dir =
        TempDir(std::env::temp_dir().join(format!("sluice-bench-cli-{}", std::process::id())));
    let out = sluice()
        .args(["bench", "--quick", "--out"])
        .arg(&dir.0)
        .output()
        .expect("running sluice bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sluice bench --quick failed:\n{stdout}\n{stderr}"
    );

    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.0.join("bench.json")).expect("bench.json"),
    )
    .expect("bench.json parses");
    assert_eq!(json["quick"], true);
    assert_eq!(json["errors"].as_array().map(Vec::len), Some(0), "{json}");
    let scenarios = json["scenarios"].as_object().expect("scenarios");
    for name in ["forwarding", "overlay", "services"] {
        assert!(scenarios.contains_key(name), "{name} missing: {json}");
        let md = std::fs::read_to_string(dir.0.join(format!("{name}.md"))).expect(name);
        assert!(md.starts_with("## "), "{name}.md: {md}");
    }

    // Forwarding: every device delivered something with both generators.
    let fwd = &scenarios["forwarding"]["report"];
    for d in fwd["devices"].as_array().expect("devices") {
        let name = d["device"].as_str().unwrap_or("?");
        assert!(
            d["throughput"][0]["delivered_pps"].as_f64() > Some(0.0),
            "{name}: {d}"
        );
        assert!(
            d["pktgen"]["searches"][0]["search"]["max"]["delivered"].as_u64() > Some(0),
            "{name}: {d}"
        );
    }

    // Overlay: sluice VXLAN, sluice UDP and the kernel's VXLAN all carried TCP and UDP across
    // the two nodes.
    let ov = scenarios["overlay"]["report"]["devices"]
        .as_array()
        .expect("overlay devices");
    let names: Vec<&str> = ov.iter().filter_map(|d| d["device"].as_str()).collect();
    assert_eq!(
        names,
        [
            "sluice-vxlan",
            "sluice-vxlan-v3",
            "sluice-udp",
            "kernel-vxlan"
        ]
    );
    for d in ov {
        let name = d["device"].as_str().unwrap_or("?");
        assert!(d["tcp_mbit_per_s"].as_f64() > Some(0.0), "{name}: {d}");
        assert!(d["latency"]["received"].as_u64() > Some(0), "{name}: {d}");
        assert!(
            d["searches"][0]["search"]["max"]["delivered"].as_u64() > Some(0),
            "{name}: {d}"
        );
    }

    // Services: every kernel kind loaded both sizes, delivered to the VIP, and a new flow per
    // packet created conntrack entries (one flow: at most a handful).
    let rows = scenarios["services"]["report"]["rows"]
        .as_array()
        .expect("rows");
    assert_eq!(rows.len(), 6, "3 kinds x (1, 100) services: {rows:?}");
    for r in rows {
        let dev = r["device"].as_str().unwrap_or("?");
        assert!(r["load_seconds"].as_f64() > Some(0.0), "{dev}: {r}");
        for m in r["measurements"].as_array().expect("measurements") {
            assert!(m["trial"]["delivered"].as_u64() > Some(0), "{dev}: {m}");
            let ct = m["conntrack_after"].as_u64().unwrap_or(0);
            match m["flows"].as_str() {
                Some("one") => assert!(ct <= 5, "{dev}: one flow left {ct} entries"),
                Some("new") => assert!(ct > 100, "{dev}: new flows left {ct} entries"),
                other => panic!("unexpected flows {other:?}"),
            }
        }
    }

    // Plots: SVG files with the devices' names; the Markdown links them.
    let md = std::fs::read_to_string(dir.0.join("bench.md")).expect("bench.md");
    for (file, must) in [
        ("forwarding-pps.svg", "kernel"),
        ("forwarding-no-drop.svg", "sluice-tap"),
        ("overlay-loss.svg", "kernel-vxlan"),
        ("services-pps-one.svg", "kernel-nftables"),
        ("services-pps-new.svg", "kernel-iptables-legacy"),
        ("services-programming.svg", "kernel-iptables"),
    ] {
        let svg =
            std::fs::read_to_string(dir.0.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{file}"
        );
        assert!(svg.contains(must), "{file} lacks {must}");
        assert!(
            md.contains(&format!("({file})")),
            "bench.md does not link {file}"
        );
    }
    assert!(stdout.contains("# sluice bench"), "{stdout}");
}

#[test]
fn bad_parameters_are_refused_with_the_reason() {
    for (args, want) in [
        (vec!["bench", "nope"], "no scenario named \"nope\""),
        (vec!["bench", "--services", "0"], "--services 0: want 1..="),
        (vec!["bench", "--flows", "two"], "flow pattern \"two\""),
        (
            vec!["bench", "--frame-sizes", "32"],
            "--frame-sizes 32: want 64..=1518",
        ),
        (vec!["bench", "--endpoints", "0"], "--endpoints 0"),
    ] {
        let out = sluice().args(&args).output().expect("running sluice");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    let out = sluice()
        .args(["bench", "--list"])
        .output()
        .expect("running sluice");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for s in ["forwarding", "overlay", "services", "--services"] {
        assert!(stdout.contains(s), "{stdout}");
    }
}
