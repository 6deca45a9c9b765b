//! What the `sluice` subcommands do (src/main.rs only parses arguments and calls these).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use dataplane::counters::render;
use dataplane::engine::Engine;
use dataplane::port::pcap::{PcapPort, PcapReader, PcapWriter};
use dataplane::port::Port;

use crate::compile;
use crate::config;

/// `sluice check`: validate and summarise.
pub fn check(path: &Path) -> Result<(), String> {
    let cluster = config::load(path).map_err(|e| e.to_string())?;
    println!("{}: ok", path.display());
    println!("{}", cluster.describe());
    Ok(())
}

/// `sluice run`: the engine of one node, until SIGTERM/SIGINT.
pub fn run(path: &Path, node: &str) -> Result<(), String> {
    let cluster = config::load(path).map_err(|e| e.to_string())?;
    let cfg = compile::for_node(&cluster, node)?;
    dataplane::engine::run_node(&cfg).map_err(|e| format!("node {node}: {e}"))
}

/// The admin socket meant by `--admin`, or `--config` + `--node`, or `--node` alone.
pub fn admin_socket(
    admin: Option<&Path>,
    config: Option<&Path>,
    node: Option<&str>,
) -> Result<PathBuf, String> {
    if let Some(p) = admin {
        return Ok(p.to_path_buf());
    }
    match (config, node) {
        (Some(c), Some(n)) => {
            let cluster = config::load(c).map_err(|e| e.to_string())?;
            Ok(compile::for_node(&cluster, n)?.admin_socket)
        }
        (None, Some(n)) => Ok(PathBuf::from(format!("/run/sluice/{n}.sock"))),
        _ => Err("say which engine: --admin SOCKET, or --node NAME (with --config FILE if the file sets admin_socket)".into()),
    }
}

/// `sluice counters|status|routes|neighbours`.
pub fn admin(
    admin: Option<&Path>,
    config: Option<&Path>,
    node: Option<&str>,
    cmd: &str,
    json: bool,
) -> Result<(), String> {
    let path = admin_socket(admin, config, node)?;
    let v = dataplane::admin::query(&path, cmd).map_err(|e| e.to_string())?;
    if json || cmd != "counters" {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        print!("{}", render(&v));
    }
    Ok(())
}

/// `sluice replay`: feed pcap files into a node's pipeline (no root, no devices) and write
/// what every port transmitted to `<out_dir>/<port>.pcap`. With an overlay, the underlay
/// uplink is one more port (after the pod ports, as the engine opens it).
pub fn replay(path: &Path, node: &str, inputs: &[String], out_dir: &Path) -> Result<(), String> {
    let cluster = config::load(path).map_err(|e| e.to_string())?;
    let cfg = compile::for_node(&cluster, node)?;
    let all_ports: Vec<_> = cfg
        .ports
        .iter()
        .chain(cfg.overlay.as_ref().map(|o| &o.uplink))
        .collect();
    let mut wanted: HashMap<&str, &str> = HashMap::new();
    for i in inputs {
        let (port, file) = i
            .split_once('=')
            .ok_or_else(|| format!("--input {i:?}: expected PORT=FILE"))?;
        if !all_ports.iter().any(|p| p.name == port) {
            return Err(format!(
                "--input {i:?}: node {node} has no port {port:?} (ports: {})",
                all_ports
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        wanted.insert(port, file);
    }
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let mut ports: Vec<Box<dyn Port>> = Vec::new();
    for p in &all_ports {
        let input = match wanted.get(p.name.as_str()) {
            Some(f) => {
                let file = File::open(f).map_err(|e| format!("{f}: {e}"))?;
                let r: Box<dyn Read + Send> = Box::new(BufReader::new(file));
                Some(PcapReader::new(r).map_err(|e| format!("{f}: {e}"))?)
            }
            None => None,
        };
        let out_path = out_dir.join(format!("{}.pcap", p.name));
        let file = File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
        let w: Box<dyn Write + Send> = Box::new(BufWriter::new(file));
        let output = PcapWriter::new(w).map_err(|e| format!("{}: {e}", out_path.display()))?;
        let mac = p
            .mac
            .unwrap_or_else(|| dataplane::port::derived_mac(&p.name));
        ports.push(Box::new(PcapPort::new(&p.name, mac, input, Some(output))));
    }
    let mut engine = Engine::new(&cfg, ports);
    while engine.poll_once(Instant::now()) > 0 {}
    engine.housekeeping();
    let counters = engine.shared().to_json();
    drop(engine); // flushes the output files
    print!("{}", render(&counters));
    println!("\nwritten: {}/<port>.pcap", out_dir.display());
    Ok(())
}
