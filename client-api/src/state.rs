//! The state every handler shares.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::TokenKeys;
use crate::origin::AllowedOrigins;
use crate::rate_limit::RateLimits;
use crate::service::ChatService;

/// Handles to everything the API needs; cheap to clone.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The node behind the API.
    pub service: Arc<dyn ChatService>,
    /// Issues and verifies bearer tokens.
    pub tokens: Arc<TokenKeys>,
    /// Per-caller rate limits.
    pub limits: Arc<RateLimits>,
    /// WebSocket timing and flow control.
    pub ws: WsConfig,
    /// Cancelled when the node shuts down: WebSocket sessions close with 1001.
    pub shutdown: CancellationToken,
    /// Every live WebSocket connection, so shutdown can wait for them to close.
    pub connections: TaskTracker,
    /// One permit per live WebSocket connection: beyond them, upgrades are refused (503).
    pub connection_slots: Arc<tokio::sync::Semaphore>,
    /// Web origins allowed to open a WebSocket besides the node's own.
    pub origins: Arc<AllowedOrigins>,
}

impl std::fmt::Debug for dyn ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService").field("server_name", self.server_name()).finish()
    }
}

/// WebSocket timing and flow control.
#[derive(Debug, Clone, Copy)]
pub struct WsConfig {
    /// How often the server pings an idle client.
    pub ping_interval: Duration,
    /// A connection with no frame from the client (pongs included) for this long is dead.
    pub idle_timeout: Duration,
    /// A send to the client that takes longer than this ends the connection.
    pub send_timeout: Duration,
    /// Sends and receipts of one connection that may await their commit at once; beyond it
    /// the server stops reading that connection until one completes.
    pub max_in_flight: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(10),
            max_in_flight: 256,
        }
    }
}
