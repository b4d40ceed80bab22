//! The connection to Redis shared by an instance's parts, and whether Redis answers.
//!
//! Redis holds nothing that cannot be rebuilt (the store has every message), so a Redis that
//! does not answer must never stall a send: every operation has a short deadline, and while
//! Redis is known to be down operations are skipped at once instead of waiting for it. A
//! health check finds out when it is back.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};
use tracing::{info, warn};

/// How long one operation may take before Redis counts as down.
const OP_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a blocking stream read waits for entries; the connection's own deadline is above.
pub(crate) const BLOCK: Duration = Duration::from_secs(2);

/// Why a Redis operation was not done.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Redis is known to be down; nothing was sent.
    #[error("redis is down")]
    Down,
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
}

/// The shared connection.
pub(crate) struct Link {
    client: Client,
    connection: ConnectionManager,
    /// Whether the last operation (or health check) reached Redis.
    up: AtomicBool,
    /// Operations that failed, for `/metrics`.
    errors: AtomicU64,
    /// What every key starts with.
    prefix: String,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("prefix", &self.prefix).field("up", &self.is_up()).finish_non_exhaustive()
    }
}

impl Link {
    /// A link to the Redis at `url`; it connects lazily, so a node starts while Redis is down.
    ///
    /// # Errors
    /// For a URL Redis cannot use.
    pub(crate) fn open(url: &str, prefix: String) -> Result<Self, RedisError> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self { client, connection, up: AtomicBool::new(true), errors: AtomicU64::new(0), prefix })
    }

    /// A key: the prefix, then `parts` joined by `:`.
    pub(crate) fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        key.push_str(&parts.join(":"));
        key
    }

    /// Whether Redis answered last time.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Operations that failed since start.
    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Runs one operation on the shared connection, unless Redis is known to be down.
    ///
    /// # Errors
    /// [`LinkError`]; a failure marks Redis down until the health check reaches it.
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> Result<T, LinkError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        if !self.is_up() {
            return Err(LinkError::Down);
        }
        let result = match tokio::time::timeout(OP_TIMEOUT, op(self.connection.clone())).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => LinkError::Redis(e),
            Err(_) => LinkError::Timeout(OP_TIMEOUT),
        };
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.up.swap(false, Ordering::Relaxed) {
            warn!(error = %result, "redis is down: pushes between instances wait for it, messages are safe in the store");
        }
        Err(result)
    }

    /// Pings Redis; marks it up or down. Returns whether it came back up with this check.
    pub(crate) async fn check(&self) -> bool {
        let mut connection = self.connection.clone();
        let answered = tokio::time::timeout(OP_TIMEOUT, redis::cmd("PING").query_async::<String>(&mut connection))
            .await
            .is_ok_and(|r| r.is_ok());
        let was_up = self.up.swap(answered, Ordering::Relaxed);
        if answered && !was_up {
            info!("redis answers again");
        }
        answered && !was_up
    }

    /// A connection of its own, for blocking reads that must not hold up the shared one.
    ///
    /// # Errors
    /// When Redis cannot be reached.
    pub(crate) async fn dedicated(&self) -> Result<redis::aio::MultiplexedConnection, RedisError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(BLOCK + OP_TIMEOUT * 4));
        self.client.get_multiplexed_async_connection_with_config(&config).await
    }
}
