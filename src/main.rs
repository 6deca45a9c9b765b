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
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Counters of a running engine: per port, per drop reason, per event.
    Counters(AdminArgs),
    /// Whether a running engine is ready, and its ports.
    Status(AdminArgs),
    /// Routes of a running engine.
    Routes(AdminArgs),
    /// Neighbours (ARP) a running engine has learned.
    Neighbours(AdminArgs),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Pod to pod on one node: packets/s, latency and CPU of sluice (AF_PACKET V2/V3, TAP) and of kernel routing.
    Forwarding {
        /// Short windows, fewer pings, no profile (about 40 s).
        #[arg(long)]
        quick: bool,
        /// Seconds per throughput window (default 10, or 2 with --quick).
        #[arg(long)]
        seconds: Option<u64>,
        /// Also write forwarding.md and forwarding.json here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
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
        Cmd::Bench(BenchCmd::Forwarding {
            quick,
            seconds,
            out,
        }) => match std::env::current_exe() {
            Ok(bin) => bench::forwarding::cli(&bin, quick, seconds, out.as_deref()),
            Err(e) => Err(format!("locating the sluice binary: {e}")),
        },
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
