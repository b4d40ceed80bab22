//! Starting and stopping a node: open the store, wire the parts, serve HTTP and WebSocket,
//! and on shutdown close sessions, finish pending work and close the store, in that order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kith_client_api::{ApiState, RateLimits, TokenKeys};
use kith_proto::Timestamp;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::cache::{Cache, MemoryCache, RedisCache};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::outbox::Outbox;
use crate::password::{HashError, Hasher};
use crate::peers::Peers;
use crate::remote_presence::RemotePresence;
use crate::secrets::{self, SecretError};
use crate::service::NodeService;
use crate::sessions::Sessions;
use crate::state::{AppState, Handles};
use crate::store::{self, Instances, StoreError};
use crate::users::Users;
use crate::{cluster_inbound, delivery, federation_inbound, presence};
use kith_federation::NodeKey;

/// How long shutdown waits for sessions to close and pending work to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often rate-limit state of quiet callers is forgotten.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Why the node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A secret could not be loaded or generated.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// The store could not be opened or failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Federation could not start (node key, peers, p2p address).
    #[error("federation: {0}")]
    Federation(#[from] kith_federation::FederationError),
    /// Password hashing could not be set up.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The Redis URL is not one Redis can use.
    #[error("--redis-url: {0}")]
    Redis(#[from] crate::cluster::LinkError),
    /// The listen address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be used (names the file).
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The HTTP server failed.
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

/// A node that is serving.
#[derive(Debug)]
pub struct RunningNode {
    /// Where it listens for clients.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), NodeError>>,
}

impl RunningNode {
    /// Asks the node to shut down gracefully.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until the node has stopped.
    ///
    /// # Errors
    /// What stopped it, if not a requested shutdown.
    pub async fn wait(self) -> Result<(), NodeError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(NodeError::Serve(std::io::Error::other(e))),
        }
    }
}

/// Opens the store and starts serving; returns once the listener is bound.
///
/// # Errors
/// [`NodeError`] when the data directory, secrets, store or listener cannot be set up.
pub async fn start(config: Config) -> Result<RunningNode, NodeError> {
    let data_dir = &config.node.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| NodeError::DataDir { path: data_dir.clone(), source })?;
    let secret = secrets::token_secret(&config.node.token_secret_file)?;
    // Read first: a bad certificate stops the node before anything else starts.
    let certificates = config.tls.clone().map(crate::tls::Certificates::load).transpose()?;

    let instances = if config.cluster.redis_url.is_some() { Instances::Shared } else { Instances::Alone };
    let store = store::open(&config.node.location, &config.store, &config.node.server_name, instances).await?;
    if instances == Instances::Alone {
        // No session survives a restart: whoever was online is offline since now. (Instances
        // sharing a store keep presence in Redis, where a dead instance's users expire.)
        let reset = store.reset_presence(Timestamp::now()).await?.await?;
        if reset > 0 {
            info!(users = reset, "marked users offline after restart");
        }
    }
    let node_key = NodeKey::load_or_create_file(&config.node.node_key_file)?;
    let (peers, inbound_requests) =
        Peers::start(node_key, config.node.server_name.clone(), &config.federation, config.rate_limits).await?;
    let peers = Arc::new(peers);
    let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
    let tasks = TaskTracker::new();
    let instance_id = config.cluster.instance_id.clone();
    let (cluster, from_instances) = match &config.cluster.redis_url {
        Some(url) => {
            let (cluster, incoming) = Cluster::shared(instance_id.clone(), url, config.cluster.redis_prefix.clone())?;
            (Arc::new(cluster), Some(incoming))
        }
        None => (Arc::new(Cluster::alone(instance_id.clone())), None),
    };
    let cache: Arc<dyn Cache> = if cluster.is_shared() {
        Arc::new(RedisCache::new(cluster.clone(), config.node.server_name.clone()))
    } else {
        Arc::new(MemoryCache::new(config.cache_bytes))
    };
    let (outbox, refusals) =
        Outbox::new(store.clone(), tasks.clone(), cluster.clone(), peers.names().collect(), config.federation.backoff);
    let (sessions, closed_sessions) = Sessions::new(config.session_queue, config.max_sessions_per_user);
    let state = AppState::new(Handles {
        server_name: config.node.server_name.clone(),
        users: Users::new(store.clone()),
        store,
        cache,
        sessions,
        hasher: Hasher::new(parallelism)?,
        tasks,
        presence_lock: tokio::sync::Mutex::new(()),
        remote_presence: RemotePresence::default(),
        outbox,
        peers: peers.clone(),
        cluster: cluster.clone(),
        telemetry: crate::telemetry::Telemetry::default(),
        prekey_budget: crate::prekey_budget::PrekeyBudget::new(config.prekey_budget),
    });

    let shutdown = CancellationToken::new();
    state.outbox.spawn(&peers, &shutdown);
    state.tasks.spawn(federation_inbound::serve(state.clone(), inbound_requests, shutdown.clone()));
    state.tasks.spawn(presence::renew_subscriptions(state.clone(), shutdown.clone()));
    state.tasks.spawn(presence::forget_lost_peers(state.clone(), shutdown.clone()));
    state.tasks.spawn(presence::after_closing(state.clone(), closed_sessions, shutdown.clone()));
    state.tasks.spawn(delivery::report_refusals(state.clone(), refusals, shutdown.clone()));
    state.tasks.spawn(delivery::resume_handoffs(state.clone(), shutdown.clone()));
    if let Some(incoming) = from_instances {
        cluster.spawn(&state.tasks, &shutdown);
        state.tasks.spawn(cluster_inbound::serve(state.clone(), incoming, shutdown.clone()));
    }
    if let Some(metrics) = config.metrics_listen {
        let listener = TcpListener::bind(metrics).await.map_err(|source| NodeError::Bind { addr: metrics, source })?;
        info!("metrics on http://{}/metrics", listener.local_addr().unwrap_or(metrics));
        state.tasks.spawn(crate::metrics::serve(listener, state.clone(), shutdown.clone()));
    }
    let api = ApiState {
        service: Arc::new(NodeService::new(state.clone())),
        tokens: Arc::new(TokenKeys::new(&secret, config.node.server_name.clone(), config.token_ttl)),
        limits: Arc::new(RateLimits::new(config.rate_limits)),
        ws: config.ws,
        shutdown: shutdown.clone(),
        connections: TaskTracker::new(),
        connection_slots: Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
        origins: Arc::new(config.allowed_origins.clone()),
    };
    let listener = bind(config.listen, config.cluster.reuse_port)
        .map_err(|source| NodeError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| NodeError::Bind { addr: config.listen, source })?;
    let (listener, scheme) = match certificates {
        None => (crate::http::ClientListener::Plain(listener), "http"),
        Some(certificates) => {
            let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| NodeError::Serve(std::io::Error::other(format!("listening for SIGHUP: {e}"))))?;
            state.tasks.spawn(crate::tls::reload_on_hangup(certificates.clone(), hangup, shutdown.clone()));
            let timeout = certificates.files().handshake_timeout;
            let listener = crate::tls::TlsListener::new(listener, certificates.acceptor()?, timeout, shutdown.clone())
                .map_err(|source| NodeError::Bind { addr: config.listen, source })?;
            (crate::http::ClientListener::Tls(listener), "https")
        }
    };
    info!(
        "kith {} listening on {scheme}://{addr} as {} (store: {}; instance {instance_id}, {})",
        env!("CARGO_PKG_VERSION"),
        config.node.server_name,
        state.store.describe(),
        if state.cluster.is_shared() { "one of several, through redis" } else { "alone" }
    );

    state.tasks.spawn(prune_rate_limits(api.limits.clone(), state.clone(), shutdown.clone()));
    let trusted = Arc::new(config.trusted_proxies.clone());
    let task = tokio::spawn(serve(listener, config.http, api, trusted, state, shutdown.clone()));
    Ok(RunningNode { addr, shutdown, task })
}

async fn serve(
    listener: crate::http::ClientListener,
    http_limits: crate::http::HttpLimits,
    api: ApiState,
    trusted_proxies: Arc<kith_client_api::TrustedProxies>,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    let connections = api.connections.clone();
    let app = kith_client_api::router(api).layer(axum::Extension(trusted_proxies));
    let served = crate::http::serve(listener, app, http_limits, shutdown.clone()).await;
    // Reached on shutdown (or a listener failure): WebSockets were told to close by the same
    // token; wait for them, then for work they left behind, then close the store.
    shutdown.cancel();
    info!(sessions = state.sessions.len(), "shutting down");
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait()).await.is_err() {
        warn!(connections = connections.len(), "WebSockets still open at shutdown");
    }
    state.tasks.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, state.tasks.wait()).await.is_err() {
        warn!(tasks = state.tasks.len(), "background work still running at shutdown");
    }
    state.peers.network.shutdown().await;
    state.store.close().await;
    info!("stopped");
    served.map_err(NodeError::Serve)
}

/// How many connections may wait to be accepted. The default (128) drops SYNs in a reconnect
/// storm after a restart; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the client listener with a backlog fit for thousands of clients reconnecting at once;
/// with `reuse_port`, other processes may bind the same address and the kernel spreads new
/// connections over them.
fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn prune_rate_limits(limits: Arc<RateLimits>, state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                limits.prune();
                state.prekey_budget.prune();
            }
        }
    }
}
