//! The harness of kith's whole-node tests: starts real `kith` processes on loopback, each with
//! its own data directory and database, and gives tests typed clients of them.
//!
//! Tests needing PostgreSQL read `KITH_TEST_POSTGRES_URL`; each node gets a fresh schema.
//! Without the variable, or with the server down, they are skipped with a printed reason,
//! unless `CI=true`, where that is a failure.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use kith_client::{Authed, Client, Connection};
use kith_proto::ServerFrame;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// How long anything a test waits for may take before the test fails. Generous: it bounds a
/// failure, it is not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery";

/// Which store a node runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// SQLite in the node's data directory.
    Sqlite,
    /// PostgreSQL, in a schema of its own (the URL selects it).
    Postgres(String),
    /// PostgreSQL shards, each a schema of its own, in order.
    Shards(Vec<String>),
}

impl Backend {
    /// A fresh PostgreSQL schema, or `None` (after saying why) when PostgreSQL is not
    /// available and this is not CI.
    ///
    /// # Panics
    /// When PostgreSQL is unavailable and `CI=true`.
    pub async fn postgres() -> Option<Self> {
        match fresh_postgres_schema().await {
            Ok(url) => Some(Self::Postgres(url)),
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("PostgreSQL is required in CI: {e:#}")
            }
            Err(e) => {
                eprintln!("skipping a PostgreSQL test: {e:#}");
                None
            }
        }
    }
}

/// Creates a schema named for this process and a counter, and returns a URL that uses it.
async fn fresh_postgres_schema() -> Result<String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::env::var("KITH_TEST_POSTGRES_URL").context("KITH_TEST_POSTGRES_URL is not set")?;
    let schema = format!("kith_test_{}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), nanos());
    let pool = sqlx::PgPool::connect(&base).await.with_context(|| format!("connecting to {base}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&pool).await?;
    pool.close().await;
    let separator = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{separator}options[search_path]={schema}"))
}

fn nanos() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
}

/// A node process under test.
#[derive(Debug)]
pub struct TestNode {
    /// Where it serves clients.
    pub addr: SocketAddr,
    /// Its server name.
    pub server_name: String,
    /// Where it listens for other nodes: a loopback address of its own, so that parallel tests
    /// never collide.
    pub p2p_address: String,
    /// Its federation peer id.
    pub peer_id: String,
    /// `--peer` bindings it starts with.
    peers: Vec<String>,
    backend: Backend,
    data_dir: tempfile::TempDir,
    extra_args: Vec<String>,
    child: Option<Child>,
    log: Arc<Mutex<VecDeque<String>>>,
}

/// Lines of a node's log kept for failure messages.
const LOG_LINES: usize = 200;

impl TestNode {
    /// Starts a SQLite node named `test`.
    pub async fn start() -> Result<Self> {
        Self::start_with(Backend::Sqlite, &[]).await
    }

    /// Starts a node on `backend` with extra `kith serve` flags.
    pub async fn start_with(backend: Backend, extra_args: &[&str]) -> Result<Self> {
        let mut node = Self::prepare("test", backend, extra_args)?;
        node.spawn().await?;
        Ok(node)
    }

    /// A node named `server_name` with its data directory, key and p2p address ready, not yet
    /// started: pin peers with [`TestNode::pin`], then [`TestNode::launch`].
    pub fn prepare(server_name: &str, backend: Backend, extra_args: &[&str]) -> Result<Self> {
        let data_dir = tempfile::Builder::new().prefix("kith-test-").tempdir()?;
        let peer_id = kith_federation::NodeKey::load_or_create(data_dir.path())?.peer_id().to_string();
        Ok(Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            server_name: server_name.into(),
            p2p_address: format!("/ip4/{}/tcp/4001", unique_loopback()),
            peer_id,
            peers: Vec::new(),
            backend,
            data_dir,
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
            log: Arc::default(),
        })
    }

    /// The `--peer` binding other nodes use for this one.
    pub fn binding(&self) -> String {
        format!("{}={}/p2p/{}", self.server_name, self.p2p_address, self.peer_id)
    }

    /// Pins a raw binding (for nodes the test plays itself).
    pub fn pin_binding(&mut self, binding: String) {
        self.peers.push(binding);
    }

    /// Starts a prepared node.
    pub async fn launch(&mut self) -> Result<()> {
        self.spawn().await
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The database URL the node uses (its first shard's, for shards).
    pub fn database_url(&self) -> String {
        match &self.backend {
            Backend::Sqlite => format!("sqlite:{}", self.data_dir().join("kith.db").display()),
            Backend::Postgres(url) => url.clone(),
            Backend::Shards(urls) => urls.first().cloned().unwrap_or_default(),
        }
    }

    /// The flags that name the node's store.
    fn store_args(&self) -> Vec<String> {
        match &self.backend {
            Backend::Shards(urls) => urls.iter().flat_map(|url| ["--shard".to_owned(), url.clone()]).collect(),
            _ => vec!["--database-url".to_owned(), self.database_url()],
        }
    }

    /// The `kith` binary under test.
    pub fn binary() -> PathBuf {
        PathBuf::from(env!("CARGO_BIN_EXE_kith-under-test"))
    }

    async fn spawn(&mut self) -> Result<()> {
        let mut command = Command::new(Self::binary());
        command
            .arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--server-name")
            .arg(&self.server_name)
            .args(self.store_args())
            .arg("--p2p-listen")
            .arg(&self.p2p_address)
            .args(self.peers.iter().flat_map(|binding| ["--peer", binding.as_str()]))
            .args(&self.extra_args)
            .env("KITH_LOG", "info,kith_node=debug,kith_client_api=debug,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().context("starting kith")?;
        let (listening, mut on_listening) = watch::channel(None);
        for stream in [child.stdout.take().map(Pipe::Out), child.stderr.take().map(Pipe::Err)].into_iter().flatten() {
            tokio::spawn(drain(stream, self.log.clone(), listening.clone()));
        }
        // Only the readers hold it now: when the node exits, both pipes end and the wait below
        // ends too, instead of waiting out its patience.
        drop(listening);
        self.child = Some(child);
        let addr = tokio::time::timeout(PATIENCE, on_listening.wait_for(Option::is_some))
            .await
            .map_err(|_| anyhow!("node did not start in time; log:\n{}", self.log_text()))?
            .map_err(|_| anyhow!("node exited before listening; log:\n{}", self.log_text()))?
            .ok_or_else(|| anyhow!("no address"))?;
        self.addr = addr;
        Ok(())
    }

    /// The last lines the node logged.
    pub fn log_text(&self) -> String {
        self.log.lock().map(|log| log.iter().cloned().collect::<Vec<_>>().join("\n")).unwrap_or_default()
    }

    /// A client of this node.
    pub fn client(&self) -> Client {
        Client::new(&format!("http://{}", self.addr)).unwrap_or_else(|e| panic!("client: {e}"))
    }

    /// The base URL, for raw requests.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Registers a user with [`PASSWORD`].
    pub async fn user(&self, name: &str) -> Result<Authed> {
        Ok(self.client().register(name, PASSWORD).await?)
    }

    /// Kills the node with SIGKILL: no shutdown code runs.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Sends SIGTERM and waits for the node to exit; returns whether it exited successfully.
    pub async fn terminate(&mut self) -> Result<bool> {
        let Some(mut child) = self.child.take() else { bail!("not running") };
        let pid = child.id().ok_or_else(|| anyhow!("no pid"))?;
        kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGTERM)?;
        let status = tokio::time::timeout(PATIENCE, child.wait()).await??;
        Ok(status.success())
    }

    /// Starts the node again on the same port, data directory and database. Should another
    /// socket have taken the port as its ephemeral port meanwhile, on a new port: clients made
    /// after the restart find it.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await?;
        match self.spawn().await {
            Err(e) if e.to_string().contains("Address already in use") => {
                eprintln!("port {} was taken while the node was down; restarting on a new one", self.addr.port());
                self.addr.set_port(0);
                self.spawn().await
            }
            other => other,
        }
    }
}

enum Pipe {
    Out(tokio::process::ChildStdout),
    Err(tokio::process::ChildStderr),
}

/// Keeps reading a node's output (so it never blocks on a full pipe), remembers the last lines
/// and reports the address from the "listening on http://…" line.
async fn drain(pipe: Pipe, log: Arc<Mutex<VecDeque<String>>>, listening: watch::Sender<Option<SocketAddr>>) {
    let mut lines = match pipe {
        Pipe::Out(out) => BufReader::new(Box::new(out) as Box<dyn tokio::io::AsyncRead + Send + Unpin>).lines(),
        Pipe::Err(err) => BufReader::new(Box::new(err) as Box<dyn tokio::io::AsyncRead + Send + Unpin>).lines(),
    };
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(addr) = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
        {
            listening.send_replace(Some(addr));
        }
        if let Ok(mut log) = log.lock() {
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(line);
        }
    }
}

/// Waits for the next frame other than `synced` (which every connection gets once, after its
/// replay), failing after [`PATIENCE`].
pub async fn next_frame(connection: &mut Connection) -> Result<ServerFrame> {
    frame_where(connection, |frame| (frame != ServerFrame::Synced).then_some(frame)).await
}

/// Waits for the next frame that `pick` accepts, skipping others (presence, receipts …).
pub async fn frame_where<T>(connection: &mut Connection, mut pick: impl FnMut(ServerFrame) -> Option<T>) -> Result<T> {
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(found) = pick(connection.next_frame().await?) {
                return Ok(found);
            }
        }
    })
    .await
    .context("no matching frame in time")?
}

/// A loopback address no other node of this test run uses (127.0.0.0/8 is all loopback).
pub fn unique_loopback() -> std::net::Ipv4Addr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Spread over two octets by process id, so that test binaries running at once (stress
    // loops, nextest) rarely meet: they would need the same pid modulo 10,000.
    let pid = std::process::id();
    let process = u8::try_from(pid % 200).unwrap_or(0) + 20;
    let block = u8::try_from((pid / 200) % 50 * 5 + n / 250).unwrap_or(255);
    std::net::Ipv4Addr::new(127, process, block, u8::try_from(n % 250).unwrap_or(0) + 2)
}

/// The message in a `message` frame.
pub fn message(frame: ServerFrame) -> Option<kith_proto::IncomingMessage> {
    match frame {
        ServerFrame::Message(m) => Some(m),
        _ => None,
    }
}

/// A `send` frame.
pub fn send(client_message_id: &str, receiver: &str, text: &str) -> kith_proto::ClientFrame {
    kith_proto::ClientFrame::Send {
        client_message_id: client_message_id.into(),
        receiver_id: receiver.into(),
        message: text.into(),
    }
}
