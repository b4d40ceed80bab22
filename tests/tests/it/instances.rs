//! The harness for nodes of several instances: PostgreSQL shards (fresh schemas), a Redis key
//! prefix of their own, shared key files, and nginx in front.
//!
//! Tests needing Redis read `KITH_TEST_REDIS_URL`; without it, or with Redis down, they are
//! skipped with a printed reason, unless `CI=true`, where that is a failure. nginx comes from
//! the machine (`.ci/run` installs it); without it the nginx tests skip the same way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use kith_client::{Authed, Client};
use kith_proto::rest::AuthResponse;
use tokio::process::{Child, Command};

use crate::harness::{Backend, PATIENCE, PgSchema, TestNode};

/// Skips (returns `None`, the skip counted) or, under `CI=true`, fails.
fn unavailable<T>(what: &str, e: impl std::fmt::Display) -> Option<T> {
    crate::harness::skip(&format!("{what} is not available: {e}"));
    None
}

/// The Redis the tests use, if it answers.
pub async fn redis_url() -> Option<String> {
    let url = match std::env::var("KITH_TEST_REDIS_URL") {
        Ok(url) => url,
        Err(e) => return unavailable("Redis (KITH_TEST_REDIS_URL)", e),
    };
    match ping(&url).await {
        Ok(()) => Some(url),
        Err(e) => unavailable("Redis", format!("{url}: {e:#}")),
    }
}

/// Whether the Redis at `url` answers.
pub async fn ping(url: &str) -> Result<()> {
    let client = redis::Client::open(url)?;
    let mut connection = tokio::time::timeout(Duration::from_secs(2), client.get_multiplexed_async_connection())
        .await
        .context("connecting")??;
    let _: String = redis::cmd("PING").query_async(&mut connection).await?;
    Ok(())
}

/// `n` fresh PostgreSQL schemas (dropped with the last handle), if PostgreSQL answers.
pub async fn shards(n: usize) -> Option<Vec<Arc<PgSchema>>> {
    let mut schemas = Vec::with_capacity(n);
    for _ in 0..n {
        match Backend::postgres().await {
            Some(Backend::Postgres(schema)) => schemas.push(schema),
            _ => return None,
        }
    }
    Some(schemas)
}

/// A unique key prefix for this test.
fn fresh_prefix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("kith-test:{}:{}:", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A node of several instances, on shards and Redis.
#[derive(Debug)]
pub struct TestCluster {
    /// The node's server name.
    pub server_name: String,
    /// Its shards, in order.
    pub shards: Vec<Arc<PgSchema>>,
    /// The Redis its instances share.
    pub redis_url: String,
    /// Their key prefix there.
    pub prefix: String,
    /// The node's key and token secret, shared by its instances.
    secrets: tempfile::TempDir,
    /// The node's federation peer id.
    pub peer_id: String,
    /// Its instances, in the order they were added.
    pub instances: Vec<TestNode>,
    /// `--peer` bindings every instance starts with.
    peers: Vec<String>,
}

impl TestCluster {
    /// A node `server_name` of `instances` instances on `shards` shards, started; `None` when
    /// PostgreSQL or Redis is not there (outside CI).
    pub async fn start(server_name: &str, instances: usize, shards: usize) -> Result<Option<Self>> {
        let Some(mut cluster) = Self::prepare(server_name, shards).await? else {
            return Ok(None);
        };
        for _ in 0..instances {
            cluster.add_instance().await?;
        }
        Ok(Some(cluster))
    }

    /// A node with its shards and secrets ready and no instance yet.
    pub async fn prepare(server_name: &str, shards: usize) -> Result<Option<Self>> {
        let Some(redis_url) = redis_url().await else { return Ok(None) };
        let Some(shards) = self::shards(shards).await else { return Ok(None) };
        let secrets = tempfile::Builder::new().prefix("kith-secrets-").tempdir()?;
        let peer_id = kith_federation::NodeKey::load_or_create(secrets.path())?.peer_id().to_string();
        Ok(Some(Self {
            server_name: server_name.into(),
            shards,
            redis_url,
            prefix: fresh_prefix(),
            secrets,
            peer_id,
            instances: Vec::new(),
            peers: Vec::new(),
        }))
    }

    /// The flags that make a `kith serve` one of this node's instances.
    pub fn instance_args(&self, instance_id: &str) -> Vec<String> {
        let secret = |name: &str| self.secrets.path().join(name).display().to_string();
        vec![
            "--redis-url".into(),
            self.redis_url.clone(),
            "--redis-prefix".into(),
            self.prefix.clone(),
            "--instance-id".into(),
            instance_id.into(),
            "--node-key-file".into(),
            secret(kith_federation::NODE_KEY_FILE),
            "--token-secret-file".into(),
            secret(kith_node::secrets::TOKEN_SECRET_FILE),
        ]
    }

    /// Starts one more instance.
    pub async fn add_instance(&mut self) -> Result<&mut TestNode> {
        let node = self.prepare_instance(&[])?;
        node.launch().await?;
        Ok(node)
    }

    /// One more instance, with `args` of its own, ready but not started: its federation
    /// binding is known, so peers can be pinned before anything starts.
    pub fn prepare_instance(&mut self, args: &[&str]) -> Result<&mut TestNode> {
        let id = format!("i{}", self.instances.len());
        let mut all = self.instance_args(&id);
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut node = TestNode::prepare(&self.server_name, Backend::Shards(self.shards.clone()), &all)?;
        node.peer_id = self.peer_id.clone();
        for binding in &self.peers {
            node.pin_binding(binding.clone());
        }
        self.instances.push(node);
        self.instances.last_mut().ok_or_else(|| anyhow!("no instance"))
    }

    /// Pins a peer for every instance prepared from now on.
    pub fn pin(&mut self, binding: String) {
        self.peers.push(binding);
    }

    /// The `--peer` bindings other nodes pin for this one: one per instance, all under one
    /// server name and peer id.
    pub fn bindings(&self) -> Vec<String> {
        self.instances.iter().map(TestNode::binding).collect()
    }

    /// Instance `i`.
    pub fn instance(&self, i: usize) -> &TestNode {
        &self.instances[i]
    }

    /// Instance `i`, to kill or restart.
    pub fn instance_mut(&mut self, i: usize) -> &mut TestNode {
        &mut self.instances[i]
    }

    /// Registers `name` through instance `i`.
    pub async fn user(&self, i: usize, name: &str) -> Result<Authed> {
        self.instance(i).user(name).await
    }

    /// The same login, used against instance `i` (tokens of one instance are valid at all).
    pub fn at(&self, i: usize, user: &Authed) -> Result<Authed> {
        let client = Client::new(&format!("http://{}", self.instance(i).addr))?;
        Ok(client.authed(AuthResponse {
            user_id: user.user_id().clone(),
            device_id: user.device_id(),
            token: user.token().to_owned(),
        }))
    }

    /// The token secret file the instances share (what `kith-load --token-secret-file` reads).
    pub fn token_secret_file(&self) -> std::path::PathBuf {
        self.secrets.path().join(kith_node::secrets::TOKEN_SECRET_FILE)
    }

    /// A pool on shard `i`, to look at its rows.
    pub async fn shard(&self, i: usize) -> Result<sqlx::PgPool> {
        Ok(sqlx::PgPool::connect(self.shards[i].url()).await?)
    }
}

/// nginx in front of some instances, on a loopback port of its own.
#[derive(Debug)]
pub struct TestNginx {
    /// Where clients connect.
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TestNginx {
    /// nginx balancing over `upstreams` with `deploy/nginx.conf`; `None` without nginx
    /// (outside CI).
    pub async fn start(upstreams: &[SocketAddr]) -> Result<Option<Self>> {
        let Some(binary) = nginx() else {
            return Ok(None);
        };
        let dir = tempfile::Builder::new().prefix("kith-nginx-").tempdir()?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let template = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx.conf"))?;
        let servers: String = upstreams
            .iter()
            .map(|upstream| format!("        server {upstream} max_fails=1 fail_timeout=5s;\n"))
            .collect();
        let config = template
            .replace("@LISTEN@", &addr.to_string())
            .replace("@UPSTREAMS@", servers.trim_end())
            .replace("@PREFIX@", &dir.path().display().to_string());
        std::fs::write(dir.path().join("nginx.conf"), config)?;
        let stderr = std::fs::File::create(dir.path().join("stderr.log"))?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg("nginx.conf")
            .arg("-g")
            .arg("daemon off;")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .context("starting nginx")?;
        let nginx = Self { addr, dir, child: Some(child) };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                let read = |name: &str| std::fs::read_to_string(nginx.dir.path().join(name)).unwrap_or_default();
                bail!("nginx did not listen on {addr} in time; it said:\n{}{}", read("stderr.log"), read("error.log"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Some(nginx))
    }

    /// A client going through nginx.
    pub fn client(&self) -> Result<Client> {
        Ok(Client::new(&format!("http://{}", self.addr))?)
    }

    /// The same login, through nginx.
    pub fn at(&self, user: &Authed) -> Result<Authed> {
        Ok(self.client()?.authed(AuthResponse {
            user_id: user.user_id().clone(),
            device_id: user.device_id(),
            token: user.token().to_owned(),
        }))
    }
}

impl Drop for TestNginx {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }
}

/// The nginx binary; `None` (after saying why) without one, outside CI.
pub fn nginx() -> Option<PathBuf> {
    match ["/usr/sbin/nginx", "/usr/bin/nginx"].iter().map(PathBuf::from).find(|p| p.exists()) {
        Some(binary) => Some(binary),
        None => unavailable("nginx", "not installed (apt-get install nginx-light)"),
    }
}

/// A loopback port nothing listens on now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A Redis server of the test's own, on a port of its own, keeping nothing on disk: for
/// tests that stop and restart it.
#[derive(Debug)]
pub struct TestRedis {
    /// Its URL.
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TestRedis {
    /// Starts one; `None` without `redis-server` (outside CI).
    pub async fn start() -> Result<Option<Self>> {
        if !Path::new("/usr/bin/redis-server").exists() {
            return Ok(unavailable("redis-server", "not installed"));
        }
        let port = free_port()?;
        let dir = tempfile::Builder::new().prefix("kith-redis-").tempdir()?;
        let mut redis = Self { url: format!("redis://127.0.0.1:{port}"), port, dir, child: None };
        redis.launch().await?;
        Ok(Some(redis))
    }

    async fn launch(&mut self) -> Result<()> {
        let child = Command::new("/usr/bin/redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server")?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while ping(&self.url).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                bail!("redis-server did not answer on {} in time", self.url);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Kills it (SIGKILL): everything it held is gone.
    pub async fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again, empty, on the same port.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await?;
        self.launch().await
    }
}
