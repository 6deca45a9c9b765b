//! The `sluice` command line: argument parsing and dispatch, nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A userspace Kubernetes networking dataplane"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the engine of one node of a cluster file (until SIGTERM/SIGINT).
    Run {
        /// The cluster file.
        #[arg(long)]
        config: PathBuf,
        /// Which node of the file this engine is.
        #[arg(long)]
        node: String,
    },
    /// Validate a cluster file; on error, name the file, line and field.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// Build a small cluster in network namespaces, send traffic through it, explain, clean up.
    Demo,
    /// Replay a pcap capture through a node's pipeline without root; write what each port sent.
    Replay {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        node: String,
        /// `PORT=FILE.pcap`: frames of FILE arrive on the port named PORT (repeatable).
        #[arg(long = "input", value_name = "PORT=FILE", required = true)]
        inputs: Vec<String>,
        /// Directory for one `<port>.pcap` per port with what the engine transmitted.
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Benchmarks: sluice next to the kernel doing the same job, same namespaces, same run.
    Bench(BenchArgs),
    /// Counters of a running engine: per port, per drop reason, per event.
    Counters(AdminArgs),
    /// Whether a running engine is ready, and its ports.
    Status(AdminArgs),
    /// Routes of a running engine.
    Routes(AdminArgs),
    /// Neighbours (ARP) a running engine has learned.
    Neighbours(AdminArgs),
}

/// `sluice bench`: scenarios side by side with the kernel; see bench/README.md.
#[derive(Args)]
struct BenchArgs {
    /// Scenarios to run (default: all; `--list` names them).
    scenarios: Vec<String>,
    /// List the scenarios and their parameters, run nothing.
    #[arg(long)]
    list: bool,
    /// A small version of everything (about a minute): a smoke test, not numbers to quote.
    #[arg(long)]
    quick: bool,
    /// Write bench.md, bench.json, one .md/.json per scenario and the SVG plots here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seconds per measured window.
    #[arg(long)]
    seconds: Option<u64>,
    /// Numbers of services, comma separated (`1,1k,10k,100k`).
    #[arg(long)]
    services: Option<String>,
    /// Endpoints per service.
    #[arg(long)]
    endpoints: Option<usize>,
    /// Flow patterns, comma separated: `one`, `new` (a new flow per packet), `rr:N`.
    #[arg(long)]
    flows: Option<String>,
    /// Frame sizes in bytes, FCS included (64 = 60 bytes written), comma separated.
    #[arg(long)]
    frame_sizes: Option<String>,
}

#[derive(Args)]
struct AdminArgs {
    /// The engine's admin socket.
    #[arg(long, conflicts_with_all = ["config", "node"])]
    admin: Option<PathBuf>,
    /// Find the admin socket of --node in this cluster file.
    #[arg(long, requires = "node")]
    config: Option<PathBuf>,
    /// The node (default socket: /run/sluice/<node>.sock).
    #[arg(long)]
    node: Option<String>,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.cmd {
        Cmd::Run { config, node } => control::cli::run(&config, &node),
        Cmd::Check { config } => control::cli::check(&config),
        Cmd::Demo => bench::demo::run(),
        Cmd::Replay {
            config,
            node,
            inputs,
            out_dir,
        } => control::cli::replay(&config, &node, &inputs, &out_dir),
        Cmd::Bench(b) => bench(b),
        Cmd::Counters(a) => admin(a, "counters"),
        Cmd::Status(a) => admin(a, "status"),
        Cmd::Routes(a) => admin(a, "routes"),
        Cmd::Neighbours(a) => admin(a, "neighbours"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

fn admin(a: AdminArgs, cmd: &str) -> Result<(), String> {
    control::cli::admin(
        a.admin.as_deref(),
        a.config.as_deref(),
        a.node.as_deref(),
        cmd,
        a.json,
    )
}

fn bench(b: BenchArgs) -> Result<(), String> {
    if b.list {
        print!("{}", bench::harness::list());
        return Ok(());
    }
    let sluice_bin =
        std::env::current_exe().map_err(|e| format!("locating the sluice binary: {e}"))?;
    let params = bench::harness::Params {
        services: b
            .services
            .as_deref()
            .map(|s| {
                bench::harness::parse_list(s, "--services", 1..=bench::kube_proxy::MAX_SERVICES)
            })
            .transpose()?,
        endpoints: b.endpoints,
        flows: b
            .flows
            .as_deref()
            .map(bench::harness::parse_flows)
            .transpose()?,
        frame_sizes: b
            .frame_sizes
            .as_deref()
            .map(|s| bench::harness::parse_list(s, "--frame-sizes", 64..=1518))
            .transpose()?,
        seconds: b.seconds,
    };
    if b.endpoints == Some(0) {
        return Err("--endpoints 0: a service needs at least one endpoint".into());
    }
    if b.seconds == Some(0) {
        return Err("--seconds 0: want at least 1".into());
    }
    let ctx = bench::harness::Ctx {
        sluice_bin,
        quick: b.quick,
        params,
    };
    let command: Vec<String> = std::env::args().collect();
    let report = bench::harness::run(&ctx, &b.scenarios, b.out.as_deref(), &command.join(" "))?;
    print!("{}", report.markdown);
    if let Some(dir) = &b.out {
        eprintln!("sluice bench: report in {}", dir.join("bench.md").display());
    }
    match report.errors.len() {
        0 => Ok(()),
        n => Err(format!(
            "{n} scenario(s) failed: {}",
            report
                .errors
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
