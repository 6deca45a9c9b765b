//! `sluice check`: every example passes; a broken file is refused naming file, line and field.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn check_accepts_every_example_config() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let (ok, text) = check(&p);
            assert!(ok, "{}: {text}", p.display());
            assert!(text.contains(": ok"), "{text}");
            n += 1;
        }
    }
    assert!(n >= 2, "examples found: {n}");
}

#[test]
fn check_names_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("sluice-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            "outside.yaml",
            "cluster:\n  name: c\n  cluster_cidr: 10.244.0.0/16\nnodes:\n  - name: n1\n    pod_cidr: 10.244.1.0/24\n    pods:\n      - name: a\n        ip: 10.244.2.5\n        port: { kind: afpacket, interface: va }\n",
            ":9:",
            "nodes[0].pods[0].ip",
        ),
        (
            "typo.yaml",
            "cluster:\n  name: c\n  cluster_cidr: 10.244.0.0/16\nnodes:\n  - name: n1\n    pod_cidrr: 10.244.1.0/24\n",
            ":6:",
            "pod_cidrr",
        ),
        (
            "badmac.yaml",
            "cluster:\n  name: c\n  cluster_cidr: 10.244.0.0/16\nnodes:\n  - name: n1\n    pod_cidr: 10.244.1.0/24\n    pods:\n      - name: a\n        ip: 10.244.1.5\n        port:\n          kind: afpacket\n          interface: va\n          mac: \"01:00:5e:00:00:01\"\n",
            ":13:",
            "nodes[0].pods[0].port.mac",
        ),
    ];
    for (name, text, line, field) in cases {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        let (ok, out) = check(&p);
        assert!(!ok, "{name} must be refused");
        assert!(
            out.contains(&format!("{}{line}", p.display())),
            "{name}: file and line {line} in: {out}"
        );
        assert!(out.contains(field), "{name}: field {field} in: {out}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
