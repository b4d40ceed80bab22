//! `kith-load`: the command line of the load generator (see the library docs and
//! `docs/benchmarks.md`).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: reports go to stdout, progress to stderr"
)]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use kith_bench::compare::{Row, markdown};
use kith_bench::{KithNode, NodeFiles, Observer, Progress, Rate, RunOptions, Scenario, Server, XmppServer};

/// kith-load: connections, durable messages per second and latency of a kith node (or an
/// XMPP server, for comparison).
#[derive(Debug, Parser)]
#[command(name = "kith-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Hold N connections; report the server's memory per connection.
    Idle(LoadArgs),
    /// The highest durable rate (`--rate max`).
    Throughput(LoadArgs),
    /// Latency percentiles at a fixed rate with many clients connected.
    Latency(LoadArgs),
    /// Senders on one node (--target), receivers on another (--receiver-target).
    Federation(LoadArgs),
    /// Print the comparison table from directories of JSON reports (idle.json,
    /// throughput.json, latency.json), ratios to the first.
    Table {
        /// `LABEL=DIR`, one per server; the first is the baseline.
        #[arg(required = true)]
        rows: Vec<String>,
    },
    /// Print the targets table (bench/kith.sh) from a directory of JSON reports
    /// (idle-sqlite.json, throughput-sqlite.json, throughput-postgres.json, latency-sqlite.json,
    /// federation.json).
    Targets {
        /// The directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// The server: http://127.0.0.1:PORT for kith, xmpp://127.0.0.1:5222 for XMPP. Repeat it
    /// for the instances of one kith node: connection i goes to the (i mod count)-th, so a
    /// pair's sender and receiver are on different instances.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Connections in all (pairs take two; the rest idle) [default: per scenario].
    #[arg(long)]
    connections: Option<usize>,
    /// Sender→receiver pairs [default: per scenario].
    #[arg(long)]
    pairs: Option<usize>,
    /// Messages per second in total, or `max` [default: per scenario].
    #[arg(long)]
    rate: Option<Rate>,
    /// Seconds of sending (or of holding, for idle) [default: per scenario].
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of sending before measuring [default: per scenario].
    #[arg(long)]
    warmup: Option<f64>,
    /// Message size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages in flight per pair at `--rate max`.
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// A server process to measure (RSS, CPU); repeat for several (e.g. two nodes).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file (the summary still goes to stdout).
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
    /// No progress on stderr.
    #[arg(long)]
    quiet: bool,

    /// The node's data directory: users are created with `kith user import` and tokens minted
    /// with its key. Without it, users log in over HTTP (slow: one argon2id each).
    #[arg(long, env = "KITH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The node's server name.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// The node's database URL, when not the SQLite file in its data directory.
    #[arg(long)]
    database_url: Option<String>,
    /// The node's PostgreSQL shards (its `--shard` URLs, in order), for `kith user import`.
    #[arg(long = "shard")]
    shards: Vec<String>,
    /// The node's token secret file, when not `<data-dir>/token-secret.key`.
    #[arg(long)]
    token_secret_file: Option<PathBuf>,
    /// The `kith` binary for `kith user import` [default: next to kith-load, else on PATH].
    #[arg(long)]
    kith_bin: Option<PathBuf>,

    /// federation: the receivers' node (repeat for its instances).
    #[arg(long = "receiver-target")]
    receiver_targets: Vec<String>,
    /// federation: the receivers' node's data directory.
    #[arg(long)]
    receiver_data_dir: Option<PathBuf>,
    /// federation: the receivers' node's server name.
    #[arg(long)]
    receiver_server_name: Option<String>,
    /// federation: the receivers' node's database URL.
    #[arg(long)]
    receiver_database_url: Option<String>,

    /// XMPP: the accounts' domain.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// XMPP: create the accounts by in-band registration (XEP-0077) first.
    #[arg(long)]
    register: bool,

    /// How many 127.0.0.x source addresses to spread connections over.
    #[arg(long, default_value_t = 4)]
    source_addrs: usize,
    /// Connection handshakes at once (kept under the 128-connection listen backlog that a
    /// tokio listener gets by default, so bursts do not wait for SYN retransmits).
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Seconds to wait after connecting before measuring memory [default: 5 for idle, else 1].
    #[arg(long)]
    settle: Option<f64>,
    /// After sending stops, seconds to keep waiting for messages in flight when none arrives
    /// (a server still working through its backlog is waited for, up to 5 minutes).
    #[arg(long, default_value_t = 15.0)]
    drain_timeout: f64,
    /// User names are this and a number (load00000 …).
    #[arg(long, default_value = "load")]
    user_prefix: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kith-load: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kith-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let (scenario, args) = match cli.command {
        Command::Table { rows } => {
            let rows = rows
                .iter()
                .map(|spec| {
                    let (label, dir) =
                        spec.split_once('=').with_context(|| format!("expected LABEL=DIR, got {spec:?}"))?;
                    Ok(Row::from_dir(label, &PathBuf::from(dir))?)
                })
                .collect::<Result<Vec<_>>>()?;
            print!("{}", markdown(&rows));
            return Ok(ExitCode::SUCCESS);
        }
        Command::Targets { dir } => {
            print!("{}", kith_bench::compare::targets_markdown(&dir)?);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Idle(args) => (Scenario::Idle, args),
        Command::Throughput(args) => (Scenario::Throughput, args),
        Command::Latency(args) => (Scenario::Latency, args),
        Command::Federation(args) => (Scenario::Federation, args),
    };
    let json = args.json;
    let json_out = args.json_out.clone();
    let options = options(scenario, args).await?;
    let quiet = options.1;
    let observer: Arc<dyn Observer> = Arc::new(Stderr { quiet, live: std::io::stderr().is_terminal() });
    let (interrupt_tx, interrupt) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted: reporting what was measured so far (Ctrl-C again to quit)");
            let _ = interrupt_tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let report = kith_bench::run(options.0, observer, interrupt).await?;
    if !quiet && std::io::stderr().is_terminal() {
        eprintln!();
    }
    if let Some(path) = json_out {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves the command line into run options (and whether to be quiet).
async fn options(scenario: Scenario, args: LoadArgs) -> Result<(RunOptions, bool)> {
    let defaults = scenario.defaults();
    let pairs = args.pairs.unwrap_or(defaults.pairs);
    let connections = args.connections.unwrap_or(defaults.connections).max(pairs * 2);
    let secs = |s: f64| Duration::try_from_secs_f64(s).context("durations are seconds ≥ 0");
    let server = if let Some(rest) = args.targets[0].strip_prefix("xmpp://") {
        if args.targets.len() > 1 {
            bail!("one --target for an XMPP server");
        }
        Server::Xmpp(XmppServer { target: resolve(rest).await?, domain: args.domain.clone(), register: args.register })
    } else {
        let kith_bin = args.kith_bin.clone().unwrap_or_else(default_kith_bin);
        let senders = KithNode {
            targets: resolve_all(&args.targets).await?,
            server_name: args.server_name.clone(),
            files: args.data_dir.clone().map(|data_dir| NodeFiles {
                data_dir,
                server_name: args.server_name.clone(),
                database_url: args.database_url.clone(),
                shards: args.shards.clone(),
                token_secret_file: args.token_secret_file.clone(),
                kith_bin: kith_bin.clone(),
            }),
        };
        let receivers = if args.receiver_targets.is_empty() {
            None
        } else {
            let server_name =
                args.receiver_server_name.clone().context("--receiver-target needs --receiver-server-name")?;
            Some(Box::new(KithNode {
                targets: resolve_all(&args.receiver_targets).await?,
                server_name: server_name.clone(),
                files: args.receiver_data_dir.clone().map(|data_dir| NodeFiles {
                    data_dir,
                    server_name,
                    database_url: args.receiver_database_url.clone(),
                    shards: Vec::new(),
                    token_secret_file: None,
                    kith_bin: kith_bin.clone(),
                }),
            }))
        };
        if scenario != Scenario::Federation && receivers.is_some() {
            bail!("--receiver-target is for the federation scenario");
        }
        Server::Kith { senders, receivers }
    };
    let options = RunOptions {
        scenario,
        server,
        connections,
        pairs,
        rate: args.rate.unwrap_or(defaults.rate),
        duration: secs(args.duration.unwrap_or(defaults.duration.as_secs_f64()))?,
        warmup: secs(args.warmup.unwrap_or(defaults.warmup.as_secs_f64()))?,
        size: args.size,
        window: args.window,
        pids: args.pids,
        source_addresses: args.source_addrs,
        connect_concurrency: args.connect_concurrency,
        settle: secs(args.settle.unwrap_or(if scenario == Scenario::Idle { 5.0 } else { 1.0 }))?,
        drain_timeout: secs(args.drain_timeout)?,
        user_prefix: args.user_prefix,
    };
    Ok((options, args.quiet))
}

/// `http://HOST:PORT[/…]`, `ws://…` or `HOST:PORT` to a socket address.
async fn resolve(target: &str) -> Result<SocketAddr> {
    let rest = ["http://", "ws://"].iter().find_map(|scheme| target.strip_prefix(scheme)).unwrap_or(target);
    let host_port = rest.split('/').next().unwrap_or(rest);
    tokio::net::lookup_host(host_port)
        .await
        .with_context(|| format!("resolving {target}"))?
        .next()
        .with_context(|| format!("{target} has no address"))
}

/// Every target, resolved.
async fn resolve_all(targets: &[String]) -> Result<Vec<SocketAddr>> {
    let mut addresses = Vec::with_capacity(targets.len());
    for target in targets {
        addresses.push(resolve(target).await?);
    }
    Ok(addresses)
}

/// `kith` next to this binary (both are built into the same target directory), else on PATH.
fn default_kith_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("kith")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("kith"))
}

/// Prints phases and progress on stderr: a live line on a terminal, a line a second otherwise.
struct Stderr {
    quiet: bool,
    live: bool,
}

impl Observer for Stderr {
    fn phase(&self, message: &str) {
        if !self.quiet {
            if self.live {
                eprint!("\r\x1b[2K");
            }
            eprintln!("kith-load: {message}");
        }
    }

    fn progress(&self, progress: &Progress) {
        if self.quiet {
            return;
        }
        if self.live {
            eprint!("\r\x1b[2K{progress}");
        } else {
            eprintln!("{progress}");
        }
    }
}
