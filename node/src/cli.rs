//! The `kith` command line.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, NodeArgs, NodeConfig, ServeArgs};
use crate::store::{self, Instances, StoreOptions};

/// kith: a federated, end-to-end-encrypted chat server.
#[derive(Debug, Parser)]
#[command(name = "kith", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `kith` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node.
    Serve(Box<ServeArgs>),
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Print this node's peer id (creating its key if the data directory is new), for peers to
    /// pin with --peer NAME=/ip4/…/tcp/…/p2p/<peer id>.
    Id {
        /// Directory for the node's state [default: ./kith-data].
        #[arg(long, env = "KITH_DATA_DIR", value_name = "DIR", default_value = "kith-data")]
        data_dir: PathBuf,
        /// The node's key, when not `node.key` in the data directory (as `serve` takes it).
        #[arg(long, env = "KITH_NODE_KEY_FILE", value_name = "FILE")]
        node_key_file: Option<PathBuf>,
    },
    /// Look at and nudge a running node's federation outboxes (over its --metrics-listen).
    #[command(subcommand)]
    Federation(crate::federation_ctl::FederationCommand),
}

/// `kith user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create accounts from JSON lines of {"username", "passwordHash"} (argon2id PHC strings);
    /// nothing is hashed, so thousands take seconds. Existing users are skipped.
    Import {
        /// Where the node keeps its state.
        #[command(flatten)]
        node: NodeArgs,
        /// The JSON-lines file, or `-` for standard input.
        file: PathBuf,
    },
}

/// Runs the command line; what `main` returns.
pub fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("starting the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::User(UserCommand::Import { node, file }) => import(node, file).await,
            Command::Id { data_dir, node_key_file } => {
                print_id(&node_key_file.unwrap_or_else(|| data_dir.join(kith_federation::NODE_KEY_FILE)))
            }
            Command::Federation(command) => crate::federation_ctl::run(command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(&message),
    }
}

#[allow(clippy::print_stdout, reason = "printing the id is the command's job")]
fn print_id(key_file: &std::path::Path) -> Result<(), String> {
    let key = kith_federation::NodeKey::load_or_create_file(key_file).map_err(|e| e.to_string())?;
    println!("{}", key.peer_id());
    Ok(())
}

fn fail(message: &str) -> ExitCode {
    tracing::error!("{message}");
    ExitCode::FAILURE
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KITH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_ansi(ansi).init();
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let config = Config::resolve(args).map_err(|e| e.to_string())?;
    let node = crate::server::start(config).await.map_err(|e| e.to_string())?;
    shutdown_signal().await;
    node.shutdown();
    node.wait().await.map_err(|e| e.to_string())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}

async fn import(args: NodeArgs, file: PathBuf) -> Result<(), String> {
    let config = NodeConfig::resolve(args).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
    let input: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?))
    };
    let store = store::open(&config.location, &StoreOptions::default(), &config.server_name, Instances::Tool)
        .await
        .map_err(|e| e.to_string())?;
    let result = crate::import::import_users(store.as_ref(), &config.server_name, input).await;
    store.close().await;
    let report = result.map_err(|e| e.to_string())?;
    tracing::info!(created = report.created, skipped = report.skipped, "imported users of {}", config.server_name);
    Ok(())
}
