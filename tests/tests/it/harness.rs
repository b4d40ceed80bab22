//! The harness of kith's whole-node tests: starts real `kith` processes on loopback, each with
//! its own data directory and database, and gives tests typed clients of them.
//!
//! - Every wait has a deadline ([`PATIENCE`]) and fails saying what it waited for (the test's
//!   source line) and which frames it skipped on the way.
//! - A node's output is read on a thread of its own, so a busy or stalled test never blocks
//!   the node on a full pipe; its last lines are printed when the node is dropped, which the
//!   test runner shows only for a test that failed.
//! - Tests needing PostgreSQL read `KITH_TEST_POSTGRES_URL`; each node gets a fresh schema,
//!   dropped when the test is done. Without the variable, or with the server down, they are
//!   skipped, and the skip is written to `KITH_TEST_SKIP_LOG` (which `./scripts/test` counts
//!   and prints) — unless `CI=true`, where a skip is a failure.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::panic::Location;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use kith_client::{Authed, Client, ClientError, Connection, Timeouts};
use kith_proto::ServerFrame;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::Connection as _;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long anything a test waits for may take before the test fails. Generous: it bounds a
/// failure, it is not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery";

/// SDK deadlines for test clients: as patient as the tests.
pub const TIMEOUTS: Timeouts = Timeouts { connect: PATIENCE, request: PATIENCE, idle: PATIENCE, close: PATIENCE };

/// Whether this run is CI's, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips the rest of the calling test, visibly: says why on stderr and appends a line to the
/// file named by `KITH_TEST_SKIP_LOG`, which `./scripts/test` counts and prints at the end.
///
/// # Panics
/// Under `CI=true`, where every test must run.
pub fn skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    assert!(!in_ci(), "{test} cannot run, and nothing may be skipped in CI: {reason}");
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(path) = std::env::var_os("KITH_TEST_SKIP_LOG") {
        let line = format!("{test}: {}\n", reason.replace('\n', " "));
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if let Err(e) = written {
            eprintln!("cannot record the skip in {}: {e}", PathBuf::from(path).display());
        }
    }
}

/// Which store a node runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// SQLite in the node's data directory.
    Sqlite,
    /// PostgreSQL, in a schema of its own (dropped when the last clone is dropped).
    Postgres(Arc<PgSchema>),
    /// PostgreSQL shards, each a schema of its own, in order.
    Shards(Vec<Arc<PgSchema>>),
}

impl Backend {
    /// A fresh PostgreSQL schema, or `None` (after [`skip`]ping the test) when PostgreSQL is
    /// not available.
    ///
    /// # Panics
    /// When PostgreSQL is unavailable and `CI=true`.
    pub async fn postgres() -> Option<Self> {
        match PgSchema::create().await {
            Ok(schema) => Some(Self::Postgres(Arc::new(schema))),
            Err(e) => {
                skip(&format!("PostgreSQL is not available: {e:#}"));
                None
            }
        }
    }
}

/// A PostgreSQL schema of one test's own; dropped (with everything in it) on drop.
#[derive(Debug)]
pub struct PgSchema {
    /// The server's URL, without the schema.
    base: String,
    /// The schema's name.
    name: String,
    /// A URL whose connections use the schema.
    url: String,
}

impl PgSchema {
    /// Creates a schema named for this process, a counter and the time.
    async fn create() -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let base = std::env::var("KITH_TEST_POSTGRES_URL").context("KITH_TEST_POSTGRES_URL is not set")?;
        let name = format!(
            "kith_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
        );
        // One connection, not a pool: a pool retries a refused connection until its timeout.
        let mut connection = tokio::time::timeout(PATIENCE, sqlx::PgConnection::connect(&base))
            .await
            .with_context(|| format!("connecting to {base}: no answer in {PATIENCE:?}"))?
            .with_context(|| format!("connecting to {base}"))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}"))).execute(&mut connection).await?;
        connection.close().await?;
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options[search_path]={name}");
        Ok(Self { base, name, url })
    }

    /// The URL of the schema.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgSchema {
    /// Drops the schema on a thread with a runtime of its own (a drop cannot await, and may
    /// run inside the test's runtime).
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut connection = tokio::time::timeout(PATIENCE, sqlx::PgConnection::connect(&base)).await??;
                let statement = format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS {name} CASCADE");
                sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut connection).await?;
                connection.close().await?;
                Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop PostgreSQL schema {}: {e:#}", self.name),
            Err(_) => eprintln!("dropping PostgreSQL schema {} panicked", self.name),
        }
    }
}

/// What a node printed, as the thread reading its output keeps it.
#[derive(Debug, Default)]
struct Output {
    /// The last [`LOG_LINES`] lines.
    lines: VecDeque<String>,
    /// From the "listening on http://…" (or https://) line of the current run.
    listening: Option<SocketAddr>,
    /// Whether that line said https://.
    tls: bool,
    /// From the "metrics on http://…/metrics" line of the current run.
    metrics: Option<SocketAddr>,
    /// Whether the current run's output ended (the process exited).
    ended: bool,
    /// Which start of the node is the current run: a reader of an earlier run's output that
    /// ends late must not mark this one ended.
    run: u64,
}

/// Lines of a node's log kept for failure messages.
const LOG_LINES: usize = 400;

/// Lines of a node's log printed when it is dropped.
const LOG_TAIL: usize = 60;

/// Flags the harness passes to every node unless told not to.
const DEFAULT_FLAGS: [&str; 5] = ["--listen", "--data-dir", "--server-name", "--database-url", "--p2p-listen"];

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
    extra_args: Vec<String>,
    /// Environment variables it gets (all other `KITH_*` variables are removed).
    env: Vec<(String, String)>,
    /// Default flags left out (for configuration tests).
    omitted: Vec<&'static str>,
    child: Option<Child>,
    output: watch::Sender<Output>,
    /// Declared last, so dropped last: after the process is dead.
    data_dir: tempfile::TempDir,
}

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
    /// started: pin peers with [`TestNode::pin_binding`], then [`TestNode::launch`].
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
            extra_args: extra_args.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
            omitted: Vec::new(),
            child: None,
            output: watch::Sender::new(Output::default()),
            data_dir,
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

    /// Gives the node an environment variable (from its next start on).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.into(), value.into()));
    }

    /// Leaves out one of the flags the harness passes by default (`--server-name`, …), so that
    /// the setting comes from the environment or the config file.
    ///
    /// # Panics
    /// For a flag the harness does not pass.
    pub fn omit_flag(&mut self, flag: &'static str) {
        assert!(DEFAULT_FLAGS.contains(&flag), "{flag} is not a default flag");
        self.omitted.push(flag);
    }

    /// Replaces the extra `kith serve` flags (from the next start on).
    pub fn set_args(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|s| (*s).to_owned()).collect();
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
            Backend::Postgres(schema) => schema.url().to_owned(),
            Backend::Shards(schemas) => schemas.first().map(|s| s.url().to_owned()).unwrap_or_default(),
        }
    }

    /// The flags that name the node's store: `--database-url`, or one `--shard` per shard.
    fn store_flags(&self) -> Vec<(&'static str, String)> {
        match &self.backend {
            Backend::Shards(schemas) => schemas.iter().map(|s| ("--shard", s.url().to_owned())).collect(),
            _ => vec![("--database-url", self.database_url())],
        }
    }

    /// The `kith` binary under test.
    pub fn binary() -> PathBuf {
        PathBuf::from(env!("CARGO_BIN_EXE_kith-under-test"))
    }

    fn default_flags(&self) -> Vec<(&'static str, String)> {
        let mut flags = vec![
            ("--listen", self.addr.to_string()),
            ("--data-dir", self.data_dir().display().to_string()),
            ("--server-name", self.server_name.clone()),
            ("--p2p-listen", self.p2p_address.clone()),
        ];
        flags.extend(self.store_flags());
        flags.into_iter().filter(|(flag, _)| !self.omitted.contains(flag)).collect()
    }

    async fn spawn(&mut self) -> Result<()> {
        let mut command = Command::new(Self::binary());
        command.arg("serve");
        for (flag, value) in self.default_flags() {
            command.arg(flag).arg(value);
        }
        command.args(self.peers.iter().flat_map(|binding| ["--peer", binding.as_str()])).args(&self.extra_args);
        // Only what the test says: a developer's own KITH_* settings must not leak in.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("KITH_") {
                command.env_remove(key);
            }
        }
        command.env("KITH_LOG", "info,kith_node=debug,kith_client_api=debug,sqlx=warn");
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        // Standard output and error into one pipe, read on a thread of its own.
        let (reader, writer) = std::io::pipe().context("creating a pipe for the node's output")?;
        command.stdin(std::process::Stdio::null()).stdout(writer.try_clone()?).stderr(writer).kill_on_drop(true);
        self.output.send_modify(|output| {
            if !output.lines.is_empty() {
                output.lines.push_back("----- (started again) -----".into());
            }
            output.listening = None;
            output.metrics = None;
            output.ended = false;
            output.run += 1;
        });
        let child = command.spawn().context("starting kith")?;
        // The command holds the pipe's write end too: without dropping it, the output would not
        // end when the node exits.
        drop(command);
        let output = self.output.clone();
        let run = self.output.borrow().run;
        std::thread::Builder::new()
            .name(format!("{} output", self.server_name))
            .spawn(move || read_output(reader, &output, run))
            .context("starting the output reader")?;
        self.child = Some(child);
        let mut watching = self.output.subscribe();
        let started = tokio::time::timeout(PATIENCE, watching.wait_for(|o| o.listening.is_some() || o.ended)).await;
        let addr = match started {
            Err(_) => bail!("node {} did not start in {PATIENCE:?}; log:\n{}", self.server_name, self.log_text()),
            Ok(Err(_)) => bail!("node {}: its output reader stopped; log:\n{}", self.server_name, self.log_text()),
            Ok(Ok(output)) => output.listening,
        };
        match addr {
            Some(addr) => {
                self.addr = addr;
                Ok(())
            }
            None => {
                self.child = None;
                bail!("node {} exited before listening; log:\n{}", self.server_name, self.log_text())
            }
        }
    }

    /// The last lines the node logged.
    pub fn log_text(&self) -> String {
        self.output.borrow().lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Where the node serves metrics (when started with `--metrics-listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.output.borrow().metrics
    }

    /// Waits until the node's log has a line containing `needle`; returns that line.
    pub async fn log_line(&self, needle: &str) -> Result<String> {
        let mut watching = self.output.subscribe();
        let found = |output: &Output| output.lines.iter().any(|line| line.contains(needle));
        tokio::time::timeout(PATIENCE, watching.wait_for(|o| found(o) || o.ended))
            .await
            .map_err(|_| anyhow!("node {} never logged {needle:?}; log:\n{}", self.server_name, self.log_text()))??;
        let line = self.output.borrow().lines.iter().find(|line| line.contains(needle)).cloned();
        line.ok_or_else(|| {
            anyhow!("node {} exited without logging {needle:?}; log:\n{}", self.server_name, self.log_text())
        })
    }

    /// A client of this node, as patient as the tests.
    pub fn client(&self) -> Client {
        Client::new(&format!("http://{}", self.addr))
            .and_then(|client| client.timeouts(TIMEOUTS))
            .unwrap_or_else(|e| panic!("client: {e}"))
    }

    /// The base URL, for raw requests.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// `http://addr`, or `https://addr` for a node serving TLS itself.
    pub fn base(&self) -> String {
        let scheme = if self.output.borrow().tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Sends `signal` to the node's process.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let child = self.child.as_ref().ok_or_else(|| anyhow!("not running"))?;
        let pid = child.id().ok_or_else(|| anyhow!("no pid"))?;
        kill(Pid::from_raw(i32::try_from(pid)?), signal)?;
        Ok(())
    }

    /// Registers a user with [`PASSWORD`].
    pub async fn user(&self, name: &str) -> Result<Authed> {
        Ok(self.client().register(name, PASSWORD).await?)
    }

    /// Kills the node with SIGKILL: no shutdown code runs.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            tokio::time::timeout(PATIENCE, child.kill()).await.context("the killed node did not exit")??;
        }
        Ok(())
    }

    /// Sends SIGTERM and waits for the node to exit; returns whether it exited successfully.
    pub async fn terminate(&mut self) -> Result<bool> {
        let Some(mut child) = self.child.take() else { bail!("not running") };
        let pid = child.id().ok_or_else(|| anyhow!("no pid"))?;
        kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGTERM)?;
        let status = tokio::time::timeout(PATIENCE, child.wait())
            .await
            .with_context(|| format!("node {} did not exit in {PATIENCE:?} after SIGTERM", self.server_name))??;
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

impl Drop for TestNode {
    /// Kills the process and waits for it before the data directory goes; prints the end of
    /// the log (the test runner shows it only when the test failed).
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let deadline = std::time::Instant::now() + PATIENCE;
            while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let output = self.output.borrow();
        let skip = output.lines.len().saturating_sub(LOG_TAIL);
        let mut text = format!("----- the last lines of node {}'s log -----\n", self.server_name);
        for line in output.lines.iter().skip(skip) {
            let _ = writeln!(text, "{line}");
        }
        eprint!("{text}");
    }
}

/// Reads a node's output until it ends, keeping the last lines and noting the addresses it
/// reports.
fn read_output(pipe: std::io::PipeReader, output: &watch::Sender<Output>, run: u64) {
    let mut reader = BufReader::new(pipe);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buffer).trim_end().to_owned();
        let tls = line.contains("listening on https://");
        let listening =
            address_after(&line, "listening on http://").or_else(|| address_after(&line, "listening on https://"));
        let metrics = address_after(&line, "metrics on http://");
        output.send_modify(|output| {
            if output.run == run && listening.is_some() {
                output.listening = listening;
                output.tls = tls;
            }
            if output.run == run && metrics.is_some() {
                output.metrics = metrics;
            }
            if output.lines.len() == LOG_LINES {
                output.lines.pop_front();
            }
            output.lines.push_back(line);
        });
    }
    output.send_modify(|output| output.ended |= output.run == run);
}

fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = line.split(marker).nth(1)?;
    rest.split(|c: char| c.is_whitespace() || c == '/').next()?.parse().ok()
}

/// Makes ring the process's rustls crypto provider: reqwest clients the tests build
/// themselves (the SDK brings its own configuration) need one.
pub fn install_crypto() {
    // Already installed by an earlier call: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Frames a failed wait lists, at most.
const SKIPPED_SHOWN: usize = 20;

/// What a wait saw before it failed: the frames it skipped, the last [`SKIPPED_SHOWN`] of them.
#[derive(Debug, Default)]
struct Skipped {
    count: usize,
    last: VecDeque<ServerFrame>,
}

impl Skipped {
    fn push(&mut self, frame: ServerFrame) {
        self.count += 1;
        if self.last.len() == SKIPPED_SHOWN {
            self.last.pop_front();
        }
        self.last.push_back(frame);
    }
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0 {
            return f.write_str("no frame skipped");
        }
        write!(f, "skipped {} frame(s)", self.count)?;
        if self.count > self.last.len() {
            write!(f, ", the last {}", self.last.len())?;
        }
        for frame in &self.last {
            write!(f, "\n  {frame:?}")?;
        }
        Ok(())
    }
}

/// Waits for the next frame that `pick` accepts, skipping others (presence, receipts …), for
/// at most [`PATIENCE`]. A failure names the calling line, the picker, and the skipped frames.
#[track_caller]
pub fn frame_where<'a, T: 'a>(
    connection: &'a mut Connection,
    pick: impl FnMut(ServerFrame) -> Option<T> + 'a,
) -> impl Future<Output = Result<T>> + 'a {
    let at = Location::caller();
    let what = short_type_name(&pick);
    wait_for_frame(connection, pick, at, what)
}

async fn wait_for_frame<T>(
    connection: &mut Connection,
    mut pick: impl FnMut(ServerFrame) -> Option<T>,
    at: &'static Location<'static>,
    what: String,
) -> Result<T> {
    let deadline = Instant::now() + PATIENCE;
    let mut skipped = Skipped::default();
    loop {
        let frame = match tokio::time::timeout_at(deadline, connection.next_frame()).await {
            Err(_) => bail!("no frame for {what} in {PATIENCE:?} (waiting at {at}); {skipped}"),
            Ok(Err(e)) => bail!("the connection failed while waiting for {what} (at {at}): {e}; {skipped}"),
            Ok(Ok(frame)) => frame,
        };
        match pick(frame.clone()) {
            Some(found) => return Ok(found),
            None => skipped.push(frame),
        }
    }
}

/// The picker's name without the crate path: `harness::message`, `messaging::…::{{closure}}`.
fn short_type_name<F>(_: &F) -> String {
    let name = std::any::type_name::<F>();
    name.strip_prefix("it::").unwrap_or(name).to_owned()
}

/// Waits for the next frame other than `synced` (which every connection gets once, after its
/// replay), for at most [`PATIENCE`].
#[track_caller]
pub fn next_frame(connection: &mut Connection) -> impl Future<Output = Result<ServerFrame>> + '_ {
    let at = Location::caller();
    wait_for_frame(
        connection,
        |frame| (frame != ServerFrame::Synced).then_some(frame),
        at,
        "any frame but synced".into(),
    )
}

/// Waits for the next frame, whatever it is, for at most [`PATIENCE`].
#[track_caller]
pub fn next_any(connection: &mut Connection) -> impl Future<Output = Result<ServerFrame>> + '_ {
    let at = Location::caller();
    wait_for_frame(connection, Some, at, "any frame".into())
}

/// Waits until the node closes the connection, skipping frames, for at most [`PATIENCE`];
/// returns the close code and reason.
#[track_caller]
pub fn closed(connection: &mut Connection) -> impl Future<Output = Result<(u16, String)>> + '_ {
    let at = Location::caller();
    async move {
        let deadline = Instant::now() + PATIENCE;
        let mut skipped = Skipped::default();
        loop {
            match tokio::time::timeout_at(deadline, connection.next_frame()).await {
                Err(_) => bail!("the node did not close the connection in {PATIENCE:?} (waiting at {at}); {skipped}"),
                Ok(Err(ClientError::Closed { code, reason })) => return Ok((code, reason)),
                Ok(Err(e)) => bail!("the connection failed without a close frame (waiting at {at}): {e}; {skipped}"),
                Ok(Ok(frame)) => skipped.push(frame),
            }
        }
    }
}

/// Polls `check` every 50 ms until it says done (`Ok(Ok(_))`), for at most [`PATIENCE`]; a
/// failure says what was awaited, where, and what the last check saw (`Ok(Err(seen))`).
#[track_caller]
pub fn eventually<'a, T: 'a, S: std::fmt::Debug + 'a>(
    what: &'a str,
    mut check: impl AsyncFnMut() -> Result<std::result::Result<T, S>> + 'a,
) -> impl Future<Output = Result<T>> + 'a {
    let at = Location::caller();
    async move {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match check().await? {
                Ok(done) => return Ok(done),
                Err(seen) if Instant::now() > deadline => {
                    bail!("{what}: not so after {PATIENCE:?} (waiting at {at}); last seen: {seen:?}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// An HTTP client for raw requests, as patient as the tests.
pub fn http() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder().timeout(PATIENCE).build().unwrap_or_else(|e| panic!("HTTP client: {e}"))
}

/// A loopback address no other node of this test run uses (127.0.0.0/8 is all loopback).
pub fn unique_loopback() -> std::net::Ipv4Addr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Spread over two octets by process id, so that test binaries running at once (stress
    // loops, nextest's process per test) rarely meet: they would need the same pid modulo
    // 10,000.
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

/// How one attempt against a rate limit went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// It got through.
    Accepted,
    /// It was refused as rate limited.
    Limited,
}

/// Spends a fresh allowance of `burst` at `per_second`: makes attempts one at a time until one
/// is refused as rate limited, and checks how many got through against the limit without
/// assuming anything about speed: at least `burst` (the allowance starts full), at most
/// `burst` plus what `per_second` refills over the time measured. Returns when the refusal
/// came, for checks that no refill can explain.
pub async fn spend_allowance(
    burst: u32,
    per_second: u32,
    mut attempt: impl AsyncFnMut(u32) -> Result<Attempt>,
) -> Result<Instant> {
    let started = Instant::now();
    // Attempts are cheap next to a refill, so the limit comes long before this many.
    let most = 50 * burst.max(1);
    for n in 0..most {
        if attempt(n).await? == Attempt::Limited {
            let refused = Instant::now();
            let refills = (started.elapsed().as_secs_f64() * f64::from(per_second)).ceil();
            let allowed = f64::from(burst) + refills;
            assert!(n >= burst, "refused after {n} attempts; the burst is {burst}");
            assert!(
                f64::from(n) <= allowed,
                "{n} attempts got through in {:?}; at most {allowed} may (burst {burst}, {per_second}/s)",
                started.elapsed()
            );
            return Ok(refused);
        }
    }
    bail!("{most} attempts in {:?} and none was rate limited (burst {burst}, {per_second}/s)", started.elapsed())
}

/// Whether an allowance refilling at `per_second` can have gained one since `since`.
pub fn refilled_since(since: Instant, per_second: u32) -> bool {
    since.elapsed() >= Duration::from_secs(1) / per_second.max(1)
}

/// Runs the `kith` binary to its end (for `kith user import`, `kith id`), for at most
/// [`PATIENCE`]; only `env` of the `KITH_*` variables reach it.
pub async fn run_kith(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Result<std::process::Output> {
    let mut command = Command::new(TestNode::binary());
    command.args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KITH_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    tokio::time::timeout(PATIENCE, command.output())
        .await
        .with_context(|| format!("kith {args:?} did not finish in {PATIENCE:?}"))?
        .context("running kith")
}
