//! Configuration: command-line flags, each with a `KITH_*` environment fallback, over an
//! optional TOML file, over defaults that let `kith serve` just work. Resolved once at start
//! into a checked [`Config`]. A setting given at a higher level replaces the lower one whole,
//! lists (`--peer` over `[[peers]]`) included; an unknown key in the file is refused.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use kith_client_api::{AllowedOrigins, Rate, RateLimitConfig, TrustedProxies, WsConfig};
use kith_federation::{Multiaddr, PinnedPeer};
use kith_proto::ServerName;
use serde::Deserialize;

use crate::store::{Location, StoreOptions};
use crate::tls::TlsFiles;

/// A duration written as `30s`, `10m`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s).map(Self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where the node keeps its state and who it is: shared by `kith serve` and `kith user import`.
#[derive(Debug, Clone, Default, Args)]
pub struct NodeArgs {
    /// TOML file with any of these settings, keys in snake_case (flags and environment win over it).
    #[arg(long, env = "KITH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for the SQLite database and the node's keys [default: ./kith-data].
    #[arg(long, env = "KITH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The name users of this node have after `@` [default: localhost].
    #[arg(long, env = "KITH_SERVER_NAME", value_name = "NAME")]
    pub server_name: Option<String>,

    /// `postgres://…` for PostgreSQL, `sqlite:PATH` for SQLite [default: sqlite in the data dir].
    #[arg(long, env = "KITH_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// A PostgreSQL shard, `postgres://…` (repeat in order; a user's rows live on shard
    /// hash(user) % N). Instead of --database-url.
    #[arg(long = "shard", env = "KITH_SHARDS", value_name = "URL", value_delimiter = ',')]
    pub shards: Vec<String>,

    /// The node's federation key (ed25519, shared by all its instances) [default: node.key in the data dir].
    #[arg(long, env = "KITH_NODE_KEY_FILE", value_name = "FILE")]
    pub node_key_file: Option<PathBuf>,

    /// The secret that signs login tokens (shared by all instances) [default: token-secret.key in the data dir].
    #[arg(long, env = "KITH_TOKEN_SECRET_FILE", value_name = "FILE")]
    pub token_secret_file: Option<PathBuf>,
}

/// Settings of `kith serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Where to keep state and who this node is.
    #[command(flatten)]
    pub node: NodeArgs,

    /// Address for HTTP and WebSocket clients [default: 127.0.0.1:8080].
    #[arg(long, env = "KITH_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// How long a login token is valid [default: 7d].
    #[arg(long, env = "KITH_TOKEN_TTL", value_name = "DURATION")]
    pub token_ttl: Option<HumanDuration>,

    /// Messages per second one user may send, sustained; 0 turns the limit off [default: 100].
    #[arg(long, env = "KITH_MESSAGE_RATE", value_name = "N")]
    pub message_rate: Option<u32>,

    /// Messages one user may send in a burst [default: 200].
    #[arg(long, env = "KITH_MESSAGE_BURST", value_name = "N")]
    pub message_burst: Option<u32>,

    /// Register and login requests per second from one address; 0 turns the limit off [default: 5].
    #[arg(long, env = "KITH_ACCOUNT_RATE", value_name = "N")]
    pub account_rate: Option<u32>,

    /// Register and login requests one address may make in a burst [default: 20].
    #[arg(long, env = "KITH_ACCOUNT_BURST", value_name = "N")]
    pub account_burst: Option<u32>,

    /// Key bundle claims per second by one user; 0 turns the limit off [default: 2].
    #[arg(long, env = "KITH_KEY_CLAIM_RATE", value_name = "N")]
    pub key_claim_rate: Option<u32>,

    /// Key bundle claims one user may make in a burst [default: 30].
    #[arg(long, env = "KITH_KEY_CLAIM_BURST", value_name = "N")]
    pub key_claim_burst: Option<u32>,

    /// WebSocket connection attempts per second from one address; 0 turns the limit off
    /// [default: 500].
    #[arg(long, env = "KITH_WS_CONNECT_ADDRESS_RATE", value_name = "N")]
    pub ws_connect_address_rate: Option<u32>,

    /// WebSocket connection attempts one address may make in a burst [default: 5000].
    #[arg(long, env = "KITH_WS_CONNECT_ADDRESS_BURST", value_name = "N")]
    pub ws_connect_address_burst: Option<u32>,

    /// WebSocket connection attempts per second by one user; 0 turns the limit off [default: 10].
    #[arg(long, env = "KITH_WS_CONNECT_USER_RATE", value_name = "N")]
    pub ws_connect_user_rate: Option<u32>,

    /// WebSocket connection attempts one user may make in a burst [default: 30].
    #[arg(long, env = "KITH_WS_CONNECT_USER_BURST", value_name = "N")]
    pub ws_connect_user_burst: Option<u32>,

    /// Failed logins in a row one account may have before each further attempt waits (1 s,
    /// doubling); 0 turns the backoff off [default: 5].
    #[arg(long, env = "KITH_LOGIN_FREE_FAILURES", value_name = "N")]
    pub login_free_failures: Option<u32>,

    /// The longest an account's failed logins make the next attempt wait [default: 5m].
    #[arg(long, env = "KITH_LOGIN_BACKOFF_MAX", value_name = "DURATION")]
    pub login_backoff_max: Option<HumanDuration>,

    /// Claims of one user's one-time prekeys allowed per --prekey-claim-window, by all
    /// claimers together (peers' included); past it, claims get the signed prekey only.
    /// 0 turns it off [default: 30].
    #[arg(long, env = "KITH_PREKEY_CLAIM_BUDGET", value_name = "N")]
    pub prekey_claim_budget: Option<u32>,

    /// Over how long a user's one-time prekey budget refills [default: 1h].
    #[arg(long, env = "KITH_PREKEY_CLAIM_WINDOW", value_name = "DURATION")]
    pub prekey_claim_window: Option<HumanDuration>,

    /// How often to ping an idle WebSocket client [default: 10s].
    #[arg(long, env = "KITH_WS_PING_INTERVAL", value_name = "DURATION")]
    pub ws_ping_interval: Option<HumanDuration>,

    /// A WebSocket client silent (no pong) for this long is disconnected [default: 30s].
    #[arg(long, env = "KITH_WS_IDLE_TIMEOUT", value_name = "DURATION")]
    pub ws_idle_timeout: Option<HumanDuration>,

    /// Pushes one session may have queued before it counts as too slow [default: 1024].
    #[arg(long, env = "KITH_SESSION_QUEUE", value_name = "N")]
    pub session_queue: Option<usize>,

    /// Live WebSocket connections one user may have at once [default: 16].
    #[arg(long, env = "KITH_MAX_SESSIONS_PER_USER", value_name = "N")]
    pub max_sessions_per_user: Option<usize>,

    /// Live WebSocket connections the node accepts in all [default: 50000].
    #[arg(long, env = "KITH_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Plain HTTP connections open at once (WebSockets count against --max-connections
    /// instead); one more gets 503 [default: 8192].
    #[arg(long, env = "KITH_MAX_HTTP_CONNECTIONS", value_name = "N")]
    pub max_http_connections: Option<usize>,

    /// A client must send a request's headers within this long, or the connection is closed
    /// (an idle keep-alive connection too) [default: 10s].
    #[arg(long, env = "KITH_HTTP_HEADER_TIMEOUT", value_name = "DURATION")]
    pub http_header_timeout: Option<HumanDuration>,

    /// A client must send a request's body within this long once its headers came, or it gets
    /// 408 and the connection is closed [default: 30s].
    #[arg(long, env = "KITH_HTTP_BODY_TIMEOUT", value_name = "DURATION")]
    pub http_body_timeout: Option<HumanDuration>,

    /// Memory for the recent-messages cache, in bytes [default: 64 MiB].
    #[arg(long, env = "KITH_CACHE_BYTES", value_name = "BYTES")]
    pub cache_bytes: Option<usize>,

    /// Most operations in one group commit [default: 8192].
    #[arg(long, env = "KITH_MAX_BATCH", value_name = "N")]
    pub max_batch: Option<usize>,

    /// Group-commit writers on PostgreSQL (SQLite always has one) [default: 4].
    #[arg(long, env = "KITH_PG_WRITERS", value_name = "N")]
    pub pg_writers: Option<usize>,

    /// Read connections per database (SQLite file or PostgreSQL shard) [default: 4]. With many
    /// instances, size (writers + readers + 1) x shards x instances under PostgreSQL's
    /// `max_connections`.
    #[arg(long, env = "KITH_DB_READERS", value_name = "N")]
    pub db_readers: Option<u32>,

    /// Where to listen for other nodes (a libp2p multiaddress) [default: /ip4/0.0.0.0/tcp/4001].
    #[arg(long, env = "KITH_P2P_LISTEN", value_name = "MULTIADDR")]
    pub p2p_listen: Option<String>,

    /// A peer node: NAME=/ip4/…/tcp/…/p2p/<peer id> (repeatable; `kith id` prints a node's id).
    /// Replaces the config file's `[[peers]]`.
    #[arg(long = "peer", env = "KITH_PEERS", value_name = "NAME=MULTIADDR", value_delimiter = ',')]
    pub peers: Vec<String>,

    /// How long an inbound federation connection may take to finish its handshake; a socket
    /// that stays silent is closed then [default: 3s].
    #[arg(long, env = "KITH_P2P_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub p2p_handshake_timeout: Option<HumanDuration>,

    /// Inbound federation connections in their handshake one address may have at once; 0
    /// turns the cap off [default: 8].
    #[arg(long, env = "KITH_P2P_MAX_PENDING_PER_IP", value_name = "N")]
    pub p2p_max_pending_per_ip: Option<u32>,

    /// How far an envelope's sentAt may be from now [default: 10m].
    #[arg(long, env = "KITH_REPLAY_WINDOW", value_name = "DURATION")]
    pub replay_window: Option<HumanDuration>,

    /// The first wait after a failed delivery to a peer; it doubles per failure [default: 250ms].
    #[arg(long, env = "KITH_OUTBOX_BACKOFF_MIN", value_name = "DURATION")]
    pub outbox_backoff_min: Option<HumanDuration>,

    /// The longest wait between failed deliveries to a peer (probes find it back sooner) [default: 3m].
    #[arg(long, env = "KITH_OUTBOX_BACKOFF_MAX", value_name = "DURATION")]
    pub outbox_backoff_max: Option<HumanDuration>,

    /// Address for Prometheus metrics (`GET /metrics`); off unless set.
    #[arg(long, env = "KITH_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Redis (`redis://host:port/db`): lets several instances of this node serve together
    /// (presence, recent messages, hand-off between instances). Off: this process alone.
    #[arg(long, env = "KITH_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key this node uses [default: kith:<server name>:].
    #[arg(long, env = "KITH_REDIS_PREFIX", value_name = "PREFIX")]
    pub redis_prefix: Option<String>,

    /// This instance's name among the node's instances [default: generated and logged].
    #[arg(long, env = "KITH_INSTANCE_ID", value_name = "ID")]
    pub instance_id: Option<String>,

    /// A web origin (`https://chat.example`) whose pages may open a WebSocket to this node,
    /// besides the node's own (repeatable). Handshakes without `Origin` (apps, the CLI) are
    /// always allowed; any other origin gets 403.
    #[arg(long = "allowed-origin", env = "KITH_ALLOWED_ORIGINS", value_name = "ORIGIN", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Share the client listen address with other processes (SO_REUSEPORT): several
    /// instances on one host behind one port, no proxy needed.
    #[arg(long, env = "KITH_REUSE_PORT")]
    pub reuse_port: bool,

    /// Serve https:// and wss:// with this PEM certificate chain (leaf first); needs
    /// --tls-key. Reloaded on SIGHUP. Off: plain http:// (for a TLS proxy in front).
    #[arg(long, env = "KITH_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert. Reloaded on SIGHUP.
    #[arg(long, env = "KITH_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// How long a client has to finish the TLS handshake after connecting [default: 10s].
    #[arg(long, env = "KITH_TLS_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub tls_handshake_timeout: Option<HumanDuration>,

    /// A reverse proxy's network (CIDR or address; repeatable): requests from it are taken to
    /// come from the rightmost address in X-Forwarded-For that is not such a proxy, for rate
    /// limits and logs. Default: none (the TCP peer is the client).
    #[arg(long = "trusted-proxy", env = "KITH_TRUSTED_PROXIES", value_name = "CIDR", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
}

/// A `[[peers]]` entry of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePeer {
    name: String,
    address: String,
}

/// A `[[shards]]` entry of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShard {
    url: String,
}

/// The config file: every setting of [`ServeArgs`], by its flag name in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    server_name: Option<String>,
    database_url: Option<String>,
    #[serde(default)]
    shards: Vec<FileShard>,
    node_key_file: Option<PathBuf>,
    token_secret_file: Option<PathBuf>,
    listen: Option<SocketAddr>,
    token_ttl: Option<HumanDuration>,
    message_rate: Option<u32>,
    message_burst: Option<u32>,
    account_rate: Option<u32>,
    account_burst: Option<u32>,
    key_claim_rate: Option<u32>,
    key_claim_burst: Option<u32>,
    ws_connect_address_rate: Option<u32>,
    ws_connect_address_burst: Option<u32>,
    ws_connect_user_rate: Option<u32>,
    ws_connect_user_burst: Option<u32>,
    login_free_failures: Option<u32>,
    login_backoff_max: Option<HumanDuration>,
    prekey_claim_budget: Option<u32>,
    prekey_claim_window: Option<HumanDuration>,
    ws_ping_interval: Option<HumanDuration>,
    ws_idle_timeout: Option<HumanDuration>,
    session_queue: Option<usize>,
    max_sessions_per_user: Option<usize>,
    max_connections: Option<usize>,
    max_http_connections: Option<usize>,
    http_header_timeout: Option<HumanDuration>,
    http_body_timeout: Option<HumanDuration>,
    cache_bytes: Option<usize>,
    max_batch: Option<usize>,
    pg_writers: Option<usize>,
    db_readers: Option<u32>,
    p2p_listen: Option<String>,
    #[serde(default)]
    peers: Vec<FilePeer>,
    replay_window: Option<HumanDuration>,
    p2p_handshake_timeout: Option<HumanDuration>,
    p2p_max_pending_per_ip: Option<u32>,
    outbox_backoff_min: Option<HumanDuration>,
    outbox_backoff_max: Option<HumanDuration>,
    metrics_listen: Option<SocketAddr>,
    redis_url: Option<String>,
    redis_prefix: Option<String>,
    instance_id: Option<String>,
    reuse_port: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_handshake_timeout: Option<HumanDuration>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML of the documented keys.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<toml::de::Error>,
    },
    /// A setting has a value outside its rules.
    #[error("{0}")]
    Invalid(String),
}

/// Reads the TOML file named by `--config`, if any.
fn read_file(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
}

/// Where state lives and who the node is, resolved.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The server name.
    pub server_name: ServerName,
    /// The database, or the shards (URLs may hold passwords: print them with [`redact_url`]).
    pub location: Location,
    /// The node's federation key.
    pub node_key_file: PathBuf,
    /// The token-signing secret.
    pub token_secret_file: PathBuf,
}

impl NodeConfig {
    /// Resolves flags over the file over defaults.
    ///
    /// # Errors
    /// [`ConfigError`] for an unreadable file or an invalid value.
    pub fn resolve(args: NodeArgs) -> Result<Self, ConfigError> {
        let file = read_file(args.config.as_deref())?;
        Self::merge(args, &file)
    }

    fn merge(args: NodeArgs, file: &FileConfig) -> Result<Self, ConfigError> {
        let data_dir = args.data_dir.or_else(|| file.data_dir.clone()).unwrap_or_else(|| PathBuf::from("kith-data"));
        let server_name = args.server_name.or_else(|| file.server_name.clone()).unwrap_or_else(|| "localhost".into());
        let server_name =
            ServerName::parse(&server_name).map_err(|e| ConfigError::Invalid(format!("--server-name: {e}")))?;
        let database_url = args.database_url.or_else(|| file.database_url.clone());
        let shards =
            if args.shards.is_empty() { file.shards.iter().map(|s| s.url.clone()).collect() } else { args.shards };
        let location = match (database_url, shards.is_empty()) {
            (Some(_), false) => {
                return Err(ConfigError::Invalid(
                    "give --database-url (one database) or --shard (several), not both".into(),
                ));
            }
            (Some(url), true) => Location::Single(url),
            (None, false) => Location::Shards(shards),
            (None, true) => Location::Single(format!("sqlite:{}", data_dir.join("kith.db").display())),
        };
        let node_key_file = args
            .node_key_file
            .or_else(|| file.node_key_file.clone())
            .unwrap_or_else(|| data_dir.join(kith_federation::NODE_KEY_FILE));
        let token_secret_file = args
            .token_secret_file
            .or_else(|| file.token_secret_file.clone())
            .unwrap_or_else(|| data_dir.join(crate::secrets::TOKEN_SECRET_FILE));
        Ok(Self { data_dir, server_name, location, node_key_file, token_secret_file })
    }
}

/// Everything `kith serve` needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// State and identity.
    pub node: NodeConfig,
    /// HTTP and WebSocket address.
    pub listen: SocketAddr,
    /// Token lifetime.
    pub token_ttl: Duration,
    /// Rate limits.
    pub rate_limits: RateLimitConfig,
    /// WebSocket timing.
    pub ws: WsConfig,
    /// Queue length per session.
    pub session_queue: usize,
    /// Live sessions per user.
    pub max_sessions_per_user: usize,
    /// Live WebSocket connections in all.
    pub max_connections: usize,
    /// How many of one user's one-time prekeys may be claimed per window.
    pub prekey_budget: crate::prekey_budget::PrekeyBudgetConfig,
    /// Timeouts and the connection cap of plain HTTP.
    pub http: crate::http::HttpLimits,
    /// Recent-message cache budget in bytes.
    pub cache_bytes: usize,
    /// Store tuning.
    pub store: StoreOptions,
    /// Federation with other nodes.
    pub federation: FederationConfig,
    /// Where to serve metrics, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// How this instance joins others, if it does.
    pub cluster: ClusterConfig,
    /// The certificate and key to serve TLS with; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Web origins allowed to open a WebSocket besides the node's own.
    pub allowed_origins: AllowedOrigins,
}

/// Running as one of several instances of a node.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Redis; `None` runs this process alone.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key.
    pub redis_prefix: String,
    /// This instance's name.
    pub instance_id: String,
    /// Whether the client listener may be shared with other processes.
    pub reuse_port: bool,
}

/// Federation settings, checked.
#[derive(Debug, Clone)]
pub struct FederationConfig {
    /// Where to listen for other nodes.
    pub listen: Multiaddr,
    /// The pinned peers.
    pub peers: Vec<PinnedPeer>,
    /// How far an envelope's `sentAt` may be from now.
    pub replay_window: Duration,
    /// How long outbox pumps wait between failed attempts.
    pub backoff: crate::outbox::BackoffPolicy,
    /// How long an inbound connection may take to finish its handshake.
    pub handshake_timeout: Duration,
    /// Inbound connections in their handshake per remote address.
    pub max_pending_per_ip: u32,
}

impl Config {
    /// Resolves flags (and their environment variables) over the file over defaults.
    ///
    /// # Errors
    /// [`ConfigError`] for an unreadable file or an invalid value.
    pub fn resolve(args: ServeArgs) -> Result<Self, ConfigError> {
        let file = read_file(args.node.config.as_deref())?;
        let node = NodeConfig::merge(args.node, &file)?;
        let defaults_ws = WsConfig::default();
        let defaults_rates = RateLimitConfig::default();
        let defaults_store = StoreOptions::default();
        let ws = WsConfig {
            ping_interval: args.ws_ping_interval.or(file.ws_ping_interval).map_or(defaults_ws.ping_interval, |d| d.0),
            idle_timeout: args.ws_idle_timeout.or(file.ws_idle_timeout).map_or(defaults_ws.idle_timeout, |d| d.0),
            ..defaults_ws
        };
        if ws.ping_interval.is_zero() || ws.ping_interval >= ws.idle_timeout {
            return Err(ConfigError::Invalid(format!(
                "--ws-ping-interval ({:?}) must be above zero and below --ws-idle-timeout ({:?})",
                ws.ping_interval, ws.idle_timeout
            )));
        }
        let rate_limits = RateLimitConfig {
            messages: Rate {
                per_second: args.message_rate.or(file.message_rate).unwrap_or(defaults_rates.messages.per_second),
                burst: args.message_burst.or(file.message_burst).unwrap_or(defaults_rates.messages.burst),
            },
            accounts: Rate {
                per_second: args.account_rate.or(file.account_rate).unwrap_or(defaults_rates.accounts.per_second),
                burst: args.account_burst.or(file.account_burst).unwrap_or(defaults_rates.accounts.burst),
            },
            key_claims: Rate {
                per_second: args.key_claim_rate.or(file.key_claim_rate).unwrap_or(defaults_rates.key_claims.per_second),
                burst: args.key_claim_burst.or(file.key_claim_burst).unwrap_or(defaults_rates.key_claims.burst),
            },
            ws_connects_per_address: Rate {
                per_second: args
                    .ws_connect_address_rate
                    .or(file.ws_connect_address_rate)
                    .unwrap_or(defaults_rates.ws_connects_per_address.per_second),
                burst: args
                    .ws_connect_address_burst
                    .or(file.ws_connect_address_burst)
                    .unwrap_or(defaults_rates.ws_connects_per_address.burst),
            },
            ws_connects_per_user: Rate {
                per_second: args
                    .ws_connect_user_rate
                    .or(file.ws_connect_user_rate)
                    .unwrap_or(defaults_rates.ws_connects_per_user.per_second),
                burst: args
                    .ws_connect_user_burst
                    .or(file.ws_connect_user_burst)
                    .unwrap_or(defaults_rates.ws_connects_per_user.burst),
            },
            login_backoff: kith_client_api::LoginBackoffConfig {
                free_failures: args
                    .login_free_failures
                    .or(file.login_free_failures)
                    .unwrap_or(defaults_rates.login_backoff.free_failures),
                max_wait: args
                    .login_backoff_max
                    .or(file.login_backoff_max)
                    .map_or(defaults_rates.login_backoff.max_wait, |d| d.0),
            },
        };
        let listen = args
            .p2p_listen
            .clone()
            .or_else(|| file.p2p_listen.clone())
            .unwrap_or_else(|| "/ip4/0.0.0.0/tcp/4001".into());
        // Like every other setting, `--peer` (or `KITH_PEERS`) replaces the file's `[[peers]]`
        // rather than adding to them: what the command line says is the whole list.
        let (source, bindings): (&str, Vec<String>) = if args.peers.is_empty() {
            ("[[peers]] in the config file", file.peers.iter().map(|p| format!("{}={}", p.name, p.address)).collect())
        } else {
            ("--peer", args.peers.clone())
        };
        let peers = bindings
            .iter()
            .map(|binding| binding.parse::<PinnedPeer>().map_err(|e| ConfigError::Invalid(format!("{source}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let default_backoff = crate::outbox::BackoffPolicy::default();
        let backoff = crate::outbox::BackoffPolicy {
            min: args.outbox_backoff_min.or(file.outbox_backoff_min).map_or(default_backoff.min, |d| d.0),
            max: args.outbox_backoff_max.or(file.outbox_backoff_max).map_or(default_backoff.max, |d| d.0),
        };
        if backoff.min.is_zero() || backoff.min > backoff.max {
            return Err(ConfigError::Invalid(format!(
                "--outbox-backoff-min ({:?}) must be above zero and at most --outbox-backoff-max ({:?})",
                backoff.min, backoff.max
            )));
        }
        let store = StoreOptions {
            max_batch: args.max_batch.or(file.max_batch).unwrap_or(defaults_store.max_batch).max(1),
            writers: args.pg_writers.or(file.pg_writers).unwrap_or(defaults_store.writers).max(1),
            read_connections: args.db_readers.or(file.db_readers).unwrap_or(defaults_store.read_connections).max(1),
            ..defaults_store
        };
        let tls = match (args.tls_cert.or_else(|| file.tls_cert.clone()), args.tls_key.or_else(|| file.tls_key.clone()))
        {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                handshake_timeout: args
                    .tls_handshake_timeout
                    .or(file.tls_handshake_timeout)
                    .map_or(crate::tls::DEFAULT_HANDSHAKE_TIMEOUT, |d| d.0)
                    .max(Duration::from_millis(1)),
            }),
            (None, None) => None,
            (Some(_), None) => return Err(ConfigError::Invalid("--tls-cert needs --tls-key".into())),
            (None, Some(_)) => return Err(ConfigError::Invalid("--tls-key needs --tls-cert".into())),
        };
        // Like `--peer`, the flag (or its variable) replaces the file's list.
        let (source, proxies) = if args.trusted_proxies.is_empty() {
            ("trusted_proxies in the config file", file.trusted_proxies.clone())
        } else {
            ("--trusted-proxy", args.trusted_proxies.clone())
        };
        let trusted_proxies =
            TrustedProxies::parse(&proxies).map_err(|e| ConfigError::Invalid(format!("{source}: {e}")))?;
        let default_http = crate::http::HttpLimits::default();
        let http = crate::http::HttpLimits {
            header_timeout: args
                .http_header_timeout
                .or(file.http_header_timeout)
                .map_or(default_http.header_timeout, |d| d.0),
            body_timeout: args.http_body_timeout.or(file.http_body_timeout).map_or(default_http.body_timeout, |d| d.0),
            max_connections: args
                .max_http_connections
                .or(file.max_http_connections)
                .unwrap_or(default_http.max_connections)
                .max(1),
        };
        if http.header_timeout.is_zero() || http.body_timeout.is_zero() {
            return Err(ConfigError::Invalid(format!(
                "--http-header-timeout ({:?}) and --http-body-timeout ({:?}) must be above zero",
                http.header_timeout, http.body_timeout
            )));
        }
        let default_budget = crate::prekey_budget::PrekeyBudgetConfig::default();
        let prekey_budget = crate::prekey_budget::PrekeyBudgetConfig {
            claims: args.prekey_claim_budget.or(file.prekey_claim_budget).unwrap_or(default_budget.claims),
            window: args.prekey_claim_window.or(file.prekey_claim_window).map_or(default_budget.window, |d| d.0),
        };
        if prekey_budget.claims > 0 && prekey_budget.window < Duration::from_millis(u64::from(prekey_budget.claims)) {
            return Err(ConfigError::Invalid(format!(
                "--prekey-claim-window ({:?}) must be at least a millisecond per --prekey-claim-budget ({})",
                prekey_budget.window, prekey_budget.claims
            )));
        }
        let allowed_origins = AllowedOrigins::new(if args.allowed_origins.is_empty() {
            file.allowed_origins.clone()
        } else {
            args.allowed_origins.clone()
        })
        .map_err(ConfigError::Invalid)?;
        Ok(Self {
            tls,
            trusted_proxies,
            allowed_origins,
            http,
            prekey_budget,
            listen: args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            token_ttl: args.token_ttl.or(file.token_ttl).map_or(Duration::from_secs(7 * 24 * 3600), |d| d.0),
            rate_limits,
            ws,
            session_queue: args.session_queue.or(file.session_queue).unwrap_or(1024).max(1),
            max_sessions_per_user: args.max_sessions_per_user.or(file.max_sessions_per_user).unwrap_or(16).max(1),
            max_connections: args.max_connections.or(file.max_connections).unwrap_or(50_000).max(1),
            cache_bytes: args.cache_bytes.or(file.cache_bytes).unwrap_or(64 << 20),
            store,
            federation: FederationConfig {
                listen: listen.parse().map_err(|e| ConfigError::Invalid(format!("--p2p-listen {listen:?}: {e}")))?,
                peers,
                replay_window: args.replay_window.or(file.replay_window).map_or(Duration::from_secs(600), |d| d.0),
                backoff,
                handshake_timeout: args
                    .p2p_handshake_timeout
                    .or(file.p2p_handshake_timeout)
                    .map_or(Duration::from_secs(3), |d| d.0)
                    .max(Duration::from_millis(100)),
                max_pending_per_ip: args.p2p_max_pending_per_ip.or(file.p2p_max_pending_per_ip).unwrap_or(8),
            },
            metrics_listen: args.metrics_listen.or(file.metrics_listen),
            cluster: ClusterConfig {
                redis_prefix: args
                    .redis_prefix
                    .or_else(|| file.redis_prefix.clone())
                    .unwrap_or_else(|| format!("kith:{}:", node.server_name)),
                redis_url: args.redis_url.or_else(|| file.redis_url.clone()),
                instance_id: match args.instance_id.or_else(|| file.instance_id.clone()) {
                    Some(id) if valid_instance_id(&id) => id,
                    Some(id) => {
                        return Err(ConfigError::Invalid(format!(
                            "--instance-id {id:?}: 1 to 64 letters, digits, '-' or '_'"
                        )));
                    }
                    None => generated_instance_id(),
                },
                reuse_port: args.reuse_port || file.reuse_port.unwrap_or(false),
            },
            node,
        })
    }
}

/// Whether `id` may name an instance: it is part of Redis keys and log lines.
fn valid_instance_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A fresh instance name: random, so instances started from one config never collide.
fn generated_instance_id() -> String {
    format!("i-{:08x}", getrandom::u32().unwrap_or_else(|_| std::process::id()))
}

/// The metrics (and admin) address of a node: `flag` if given, else the `metrics_listen` of the
/// config file `config`, if any. For commands that talk to a running node.
///
/// # Errors
/// [`ConfigError`] for an unreadable or invalid file.
pub fn metrics_listen(flag: Option<SocketAddr>, config: Option<&Path>) -> Result<Option<SocketAddr>, ConfigError> {
    match flag {
        Some(addr) => Ok(Some(addr)),
        None => Ok(read_file(config)?.metrics_listen),
    }
}

/// A database URL with its password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl fmt::Display for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server {} data {} database {}",
            self.server_name,
            self.data_dir.display(),
            match &self.location {
                Location::Single(url) => redact_url(url),
                Location::Shards(urls) => urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>().join(", "),
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_just_work() {
        let config = Config::resolve(ServeArgs::default()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.node.server_name.as_str(), "localhost");
        assert_eq!(config.node.location, Location::Single("sqlite:kith-data/kith.db".into()));
        assert!(config.cluster.redis_url.is_none(), "one process alone unless told otherwise");
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kith.toml");
        std::fs::write(&path, "server_name = \"from-file\"\nlisten = \"127.0.0.1:9000\"\nws_idle_timeout = \"1m\"\n")
            .unwrap();
        let args = ServeArgs {
            node: NodeArgs { config: Some(path), server_name: Some("from-flag".into()), ..NodeArgs::default() },
            ..ServeArgs::default()
        };
        let config = Config::resolve(args).unwrap();
        assert_eq!(config.node.server_name.as_str(), "from-flag");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.ws.idle_timeout, Duration::from_secs(60));
    }

    fn peer(name: &str) -> String {
        format!("{name}=/ip4/127.0.0.1/tcp/4001/p2p/{}", kith_federation::NodeKey::ephemeral().peer_id())
    }

    #[test]
    fn peer_flags_replace_the_files_peers_and_name_their_source_when_bad() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kith.toml");
        let (name, address) = peer("alpha").split_once('=').map(|(n, a)| (n.to_owned(), a.to_owned())).unwrap();
        std::fs::write(&path, format!("[[peers]]\nname = \"{name}\"\naddress = \"{address}\"\n")).unwrap();
        let with = |peers: Vec<String>| ServeArgs {
            node: NodeArgs { config: Some(path.clone()), ..NodeArgs::default() },
            peers,
            ..ServeArgs::default()
        };
        let names = |config: Config| config.federation.peers.iter().map(|p| p.name().to_string()).collect::<Vec<_>>();
        assert_eq!(names(Config::resolve(with(vec![])).unwrap()), ["alpha"]);
        assert_eq!(names(Config::resolve(with(vec![peer("beta"), peer("gamma")])).unwrap()), ["beta", "gamma"]);
        let bad = Config::resolve(with(vec!["beta=nonsense".into()])).unwrap_err().to_string();
        assert!(bad.starts_with("--peer: "), "{bad}");
        std::fs::write(&path, "[[peers]]\nname = \"alpha\"\naddress = \"nonsense\"\n").unwrap();
        let bad = Config::resolve(with(vec![])).unwrap_err().to_string();
        assert!(bad.starts_with("[[peers]] in the config file: "), "{bad}");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kith.toml");
        std::fs::write(&path, "mesage_rate = 5\n").unwrap();
        let args = ServeArgs { node: NodeArgs { config: Some(path), ..NodeArgs::default() }, ..ServeArgs::default() };
        let e = Config::resolve(args).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e:?}");
        assert!(e.to_string().contains("unknown field `mesage_rate`"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let args = ServeArgs {
            node: NodeArgs { server_name: Some("Not Valid".into()), ..NodeArgs::default() },
            ..ServeArgs::default()
        };
        let e = Config::resolve(args).unwrap_err().to_string();
        assert!(e.contains("--server-name"), "{e}");
    }

    #[test]
    fn the_outbox_backoff_is_a_range() {
        let d = |s: &str| Some(s.parse::<HumanDuration>().unwrap());
        let args = ServeArgs { outbox_backoff_min: d("10m"), outbox_backoff_max: d("10m"), ..ServeArgs::default() };
        let backoff = Config::resolve(args).unwrap().federation.backoff;
        assert_eq!((backoff.min, backoff.max), (Duration::from_secs(600), Duration::from_secs(600)));
        let args = ServeArgs { outbox_backoff_min: d("5m"), outbox_backoff_max: d("1m"), ..ServeArgs::default() };
        let e = Config::resolve(args).unwrap_err().to_string();
        assert!(e.contains("--outbox-backoff-min"), "{e}");
    }

    #[test]
    fn tls_needs_both_files() {
        let path = |s: &str| Some(PathBuf::from(s));
        let args = ServeArgs { tls_cert: path("cert.pem"), ..ServeArgs::default() };
        let e = Config::resolve(args).unwrap_err().to_string();
        assert!(e.contains("--tls-key"), "{e}");
        let args = ServeArgs { tls_cert: path("c.pem"), tls_key: path("k.pem"), ..ServeArgs::default() };
        let tls = Config::resolve(args).unwrap().tls.unwrap();
        assert_eq!((tls.cert, tls.key), (PathBuf::from("c.pem"), PathBuf::from("k.pem")));
        assert!(Config::resolve(ServeArgs::default()).unwrap().tls.is_none(), "plain HTTP by default");
    }

    #[test]
    fn trusted_proxies_are_cidrs_and_bad_ones_are_named() {
        let args = ServeArgs { trusted_proxies: vec!["127.0.0.1".into(), "10.0.0.0/8".into()], ..ServeArgs::default() };
        assert!(!Config::resolve(args).unwrap().trusted_proxies.is_empty());
        assert!(Config::resolve(ServeArgs::default()).unwrap().trusted_proxies.is_empty(), "none by default");
        let args = ServeArgs { trusted_proxies: vec!["10.0.0.0/40".into()], ..ServeArgs::default() };
        let e = Config::resolve(args).unwrap_err().to_string();
        assert!(e.starts_with("--trusted-proxy: ") && e.contains("10.0.0.0/40"), "{e}");
    }

    #[test]
    fn the_hostile_client_limits_have_defaults_and_bad_values_are_named() {
        let config = Config::resolve(ServeArgs::default()).unwrap();
        assert_eq!(config.http, crate::http::HttpLimits::default());
        assert_eq!(config.prekey_budget, crate::prekey_budget::PrekeyBudgetConfig::default());
        assert_eq!(config.rate_limits.login_backoff.free_failures, 5);
        let d = |s: &str| Some(s.parse::<HumanDuration>().unwrap());
        let zero = ServeArgs { http_header_timeout: d("0s"), ..ServeArgs::default() };
        assert!(Config::resolve(zero).unwrap_err().to_string().contains("--http-header-timeout"));
        let origin = ServeArgs { allowed_origins: vec!["chat.example".into()], ..ServeArgs::default() };
        assert!(Config::resolve(origin).unwrap_err().to_string().contains("--allowed-origin"));
        let window =
            ServeArgs { prekey_claim_budget: Some(1000), prekey_claim_window: d("1ms"), ..ServeArgs::default() };
        assert!(Config::resolve(window).unwrap_err().to_string().contains("--prekey-claim-window"));
    }

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(redact_url("postgres://kith:hunter2@db:5432/kith"), "postgres://kith:***@db:5432/kith");
        assert_eq!(redact_url("sqlite:kith-data/kith.db"), "sqlite:kith-data/kith.db");
    }
}
