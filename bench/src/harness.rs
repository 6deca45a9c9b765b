//! `sluice bench`: the scenario interface, the parameters every scenario understands, and the
//! report of a run (Markdown, JSON, SVG plots).
//!
//! Owns: the [`Scenario`] trait and the list of scenarios ([`scenarios`]); [`Params`] (number
//! of services, endpoints per service, flow patterns, frame sizes, window length) and their
//! command-line syntax ([`parse_list`], [`parse_flows`]); [`run`], which runs the chosen
//! scenarios one after the other, keeps going when one fails, and writes the run's files.
//!
//! # The scenario interface
//! A scenario builds its topologies in namespaces of its own (see [`crate::testbed`]), runs
//! every *device under test* (sluice in one or more configurations, and the kernel doing the
//! same job) through the same measurements in the same run, and returns a [`Section`]:
//! Markdown (its tables and notes, starting with a `##` heading), JSON (every number,
//! unrounded) and [`Figure`]s (line plots: one line per device). It reads what it needs from
//! [`Ctx`]: the `sluice` binary, quick mode, and the [`Params`] that apply to it; parameters
//! that do not apply are ignored and the section says which were used. It never asserts a
//! number: reports are for people; tests check that a scenario runs and its report is sane.
//!
//! To add a scenario: implement [`Scenario`] in a module of this crate and add it to
//! [`scenarios`]. bench/README.md says the same with an example.
//!
//! # Files of a run (`--out DIR`)
//! - `bench.md`: the machine, the date, the command, then each scenario's section with its
//!   figures linked; `bench.json`: the same numbers (`scenarios.<name>`), plus errors.
//! - `<scenario>.md`, `<scenario>.json`: one scenario alone.
//! - `<figure>.svg`: each figure (file names are `<scenario>-<what>.svg`).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::pktgen::FlowPattern;
use crate::plot::LinePlot;

/// Parameters a scenario may take; `None` = the scenario's default (full or quick).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    /// Numbers of services (e.g. 1, 1000, 10000, 100000).
    pub services: Option<Vec<usize>>,
    /// Endpoints per service.
    pub endpoints: Option<usize>,
    /// Flow patterns.
    pub flows: Option<Vec<FlowPattern>>,
    /// Frame sizes, Ethernet FCS included as RFC 2544 counts them (64 = 60 bytes written).
    pub frame_sizes: Option<Vec<usize>>,
    /// Seconds per measured window.
    pub seconds: Option<u64>,
}

impl Params {
    pub fn to_json(&self) -> Value {
        json!({
            "services": self.services,
            "endpoints": self.endpoints,
            "flows": self.flows.as_ref().map(|f| f.iter().map(|p| flow_name(*p)).collect::<Vec<_>>()),
            "frame_sizes": self.frame_sizes,
            "seconds": self.seconds,
        })
    }
}

/// What a scenario is given.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The `sluice` binary the topologies start.
    pub sluice_bin: PathBuf,
    /// Small version of everything (the whole `--quick` run takes about a minute).
    pub quick: bool,
    pub params: Params,
}

/// A plot of a section, written as `<file>.svg`.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File stem: `<scenario>-<what>`, lowercase, `[a-z0-9-]`.
    pub file: String,
    pub plot: LinePlot,
}

/// What a scenario returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Tables and notes, starting with a `##` heading.
    pub markdown: String,
    /// Every number, unrounded.
    pub json: Value,
    pub figures: Vec<Figure>,
}

/// A benchmark scenario: devices under test side by side, in namespaces of its own.
pub trait Scenario {
    /// Short name, used on the command line and in file names (`[a-z0-9-]`).
    fn name(&self) -> &'static str;
    /// One line: what it measures, on which devices.
    fn about(&self) -> &'static str;
    /// Which [`Params`] it reads (for `sluice bench --list`).
    fn params(&self) -> &'static str;
    /// Runs it. Needs root; may take minutes (seconds in quick mode).
    fn run(&self, ctx: &Ctx) -> Result<Section, String>;
}

/// Every scenario, in the order a full run takes them.
pub fn scenarios() -> Vec<Box<dyn Scenario>> {
    vec![
        Box::new(crate::forwarding::ForwardingScenario),
        Box::new(crate::overlay::OverlayScenario),
        Box::new(crate::services::ServicesScenario),
    ]
}

/// `name` of a flow pattern, as the command line writes it.
pub fn flow_name(p: FlowPattern) -> String {
    match p {
        FlowPattern::One => "one".into(),
        FlowPattern::NewPerPacket => "new".into(),
        FlowPattern::RoundRobin(n) => format!("rr:{n}"),
    }
}

/// Parses `one`, `new` (a new flow per packet) or `rr:N` (N flows round robin), comma separated.
pub fn parse_flows(s: &str) -> Result<Vec<FlowPattern>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim) {
        let p = match item {
            "one" => FlowPattern::One,
            "new" | "new-per-packet" => FlowPattern::NewPerPacket,
            _ => match item.strip_prefix("rr:") {
                Some(n) => match n.parse::<u32>() {
                    Ok(n) if n >= 1 => FlowPattern::RoundRobin(n),
                    _ => {
                        return Err(format!(
                            "flow pattern {item:?}: rr:N needs a whole number N >= 1"
                        ))
                    }
                },
                None => {
                    return Err(format!(
                        "flow pattern {item:?}: want one, new or rr:N (N flows round robin)"
                    ))
                }
            },
        };
        out.push(p);
    }
    Ok(out)
}

/// Parses a comma-separated list of whole numbers within `range` (`what` names them in errors);
/// `1k`, `10k`, `1m` are accepted (x1000, x1000000).
pub fn parse_list(
    s: &str,
    what: &str,
    range: std::ops::RangeInclusive<usize>,
) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim) {
        let (digits, mul) = match item.as_bytes().last() {
            Some(b'k' | b'K') => (&item[..item.len() - 1], 1_000),
            Some(b'm' | b'M') => (&item[..item.len() - 1], 1_000_000),
            _ => (item, 1),
        };
        let n = digits
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_mul(mul))
            .ok_or_else(|| format!("{what} {item:?}: not a whole number"))?;
        if !range.contains(&n) {
            return Err(format!(
                "{what} {n}: want {}..={}",
                range.start(),
                range.end()
            ));
        }
        out.push(n);
    }
    if out.is_empty() {
        return Err(format!("{what}: empty list"));
    }
    Ok(out)
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub markdown: String,
    pub json: Value,
    /// Scenarios that failed, with why.
    pub errors: Vec<(String, String)>,
}

/// Runs the scenarios named in `names` (all when empty), in the order of [`scenarios`];
/// writes the run's files to `out` if given. `command` is recorded in the report. Returns the
/// report even if scenarios failed (see `errors`); fails only for an unknown scenario name or
/// when the files cannot be written.
pub fn run(
    ctx: &Ctx,
    names: &[String],
    out: Option<&Path>,
    command: &str,
) -> Result<RunReport, String> {
    let all = scenarios();
    for n in names {
        if !all.iter().any(|s| s.name() == n) {
            let known: Vec<&str> = all.iter().map(|s| s.name()).collect();
            return Err(format!(
                "no scenario named {n:?} (scenarios: {})",
                known.join(", ")
            ));
        }
    }
    if let Some(dir) = out {
        fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let started = crate::forwarding::utc_now();
    let machine = crate::forwarding::machine_summary();
    let mut md = String::new();
    let _ = writeln!(md, "# sluice bench\n");
    let _ = writeln!(md, "- Machine: {machine}");
    let _ = writeln!(md, "- Date: {started}");
    let _ = writeln!(md, "- Command: `{command}`");
    let _ = writeln!(
        md,
        "- sluice {}{}",
        env!("CARGO_PKG_VERSION"),
        git_commit().map_or_else(String::new, |c| format!(", commit {c}"))
    );
    if ctx.quick {
        let _ = writeln!(
            md,
            "- Quick mode: a small version of every scenario (short windows, few points): \
             a smoke test, not numbers to quote."
        );
    }
    let mut sections = Map::new();
    let mut errors = Vec::new();
    for s in all
        .iter()
        .filter(|s| names.is_empty() || names.iter().any(|n| n == s.name()))
    {
        let t0 = Instant::now();
        eprintln!("sluice bench: {} ...", s.name());
        match s.run(ctx) {
            Ok(section) => {
                let took = t0.elapsed().as_secs_f64();
                eprintln!("sluice bench: {} done in {took:.0} s", s.name());
                let mut part = section.markdown.clone();
                for f in &section.figures {
                    let _ = writeln!(part, "\n![{}]({}.svg)", f.plot.title, f.file);
                }
                let _ = writeln!(md, "\n{part}");
                if let Some(dir) = out {
                    write(dir, &format!("{}.md", s.name()), &part)?;
                    write(dir, &format!("{}.json", s.name()), &pretty(&section.json))?;
                    for f in &section.figures {
                        match f.plot.to_svg() {
                            Ok(svg) => write(dir, &format!("{}.svg", f.file), &svg)?,
                            Err(e) => {
                                errors.push((s.name().to_string(), format!("plot {}: {e}", f.file)))
                            }
                        }
                    }
                }
                sections.insert(
                    s.name().to_string(),
                    json!({ "seconds": took, "report": section.json }),
                );
            }
            Err(e) => {
                eprintln!("sluice bench: {} failed: {e}", s.name());
                let _ = writeln!(md, "\n## {}: failed\n\n```\n{e}\n```", s.name());
                errors.push((s.name().to_string(), e));
            }
        }
    }
    let json = json!({
        "date": started,
        "machine": machine,
        "command": command,
        "version": env!("CARGO_PKG_VERSION"),
        "commit": git_commit(),
        "quick": ctx.quick,
        "params": ctx.params.to_json(),
        "scenarios": sections,
        "errors": errors.iter().map(|(s, e)| json!({"scenario": s, "error": e})).collect::<Vec<_>>(),
    });
    if let Some(dir) = out {
        write(dir, "bench.md", &md)?;
        write(dir, "bench.json", &pretty(&json))?;
    }
    Ok(RunReport {
        markdown: md,
        json,
        errors,
    })
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into()) + "\n"
}

fn write(dir: &Path, name: &str, text: &str) -> Result<(), String> {
    let path = dir.join(name);
    fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The short commit of the working directory's git checkout, if there is one.
fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let c = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !c.is_empty()).then_some(c)
}

/// `sluice bench --list`: the scenarios, what they measure and which parameters they take.
pub fn list() -> String {
    let mut s = String::new();
    for sc in scenarios() {
        let _ = writeln!(s, "{:<12} {}", sc.name(), sc.about());
        let _ = writeln!(s, "{:<12} parameters: {}", "", sc.params());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_patterns_parse_and_print() {
        assert_eq!(
            parse_flows("one,new,rr:16").unwrap(),
            vec![
                FlowPattern::One,
                FlowPattern::NewPerPacket,
                FlowPattern::RoundRobin(16)
            ]
        );
        for bad in ["", "rr:0", "rr:x", "two", "one,,new"] {
            let e = parse_flows(bad).unwrap_err();
            assert!(e.contains("flow pattern"), "{bad}: {e}");
        }
        assert_eq!(flow_name(FlowPattern::RoundRobin(3)), "rr:3");
        assert_eq!(flow_name(FlowPattern::NewPerPacket), "new");
    }

    #[test]
    fn number_lists_parse_with_suffixes_and_ranges() {
        assert_eq!(
            parse_list("1,1k,10k,100k", "services", 1..=1_000_000).unwrap(),
            vec![1, 1000, 10_000, 100_000]
        );
        assert_eq!(
            parse_list("2m", "x", 1..=usize::MAX).unwrap(),
            vec![2_000_000]
        );
        let e = parse_list("0", "services", 1..=10).unwrap_err();
        assert_eq!(e, "services 0: want 1..=10");
        let e = parse_list("5,x", "frame size", 64..=1518).unwrap_err();
        assert!(
            e.contains("frame size \"5\"") || e.contains("frame size 5"),
            "{e}"
        );
        assert!(parse_list("", "n", 0..=1).is_err());
        assert!(parse_list("99999999999999999999k", "n", 0..=usize::MAX).is_err());
    }

    #[test]
    fn every_scenario_has_a_file_safe_unique_name() {
        let all = scenarios();
        let mut names: Vec<&str> = all.iter().map(|s| s.name()).collect();
        for n in &names {
            assert!(
                !n.is_empty()
                    && n.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{n}"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert!(list().contains("forwarding"));
    }

    #[test]
    fn unknown_scenario_is_refused_before_anything_runs() {
        let ctx = Ctx {
            sluice_bin: PathBuf::from("/nonexistent"),
            quick: true,
            params: Params::default(),
        };
        let e = run(&ctx, &["nope".to_string()], None, "test").unwrap_err();
        assert!(
            e.contains("no scenario named \"nope\"") && e.contains("forwarding"),
            "{e}"
        );
    }
}
