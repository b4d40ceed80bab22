//! The kith client API, server side.
//!
//! Serves the REST endpoints and the WebSocket protocol that phones and browsers speak to
//! their home node, authenticates them with bearer tokens, enforces the protocol's limits and
//! rate limits, and answers every failure in one JSON error format. Everything stateful is
//! behind [`ChatService`], which the node implements; this crate knows nothing of storage.
//!
//! ```no_run
//! # async fn demo(service: std::sync::Arc<dyn kith_client_api::ChatService>) {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use kith_client_api::{ApiState, RateLimitConfig, RateLimits, TokenKeys, WsConfig, router};
//!
//! let state = ApiState {
//!     tokens: Arc::new(TokenKeys::new(&[7; 32], service.server_name().clone(), Duration::from_secs(3600))),
//!     service,
//!     limits: Arc::new(RateLimits::new(RateLimitConfig::default())),
//!     ws: WsConfig::default(),
//!     shutdown: Default::default(),
//!     connections: Default::default(),
//!     connection_slots: Arc::new(tokio::sync::Semaphore::new(1000)),
//!     origins: Default::default(),
//! };
//! let app = router(state);
//! # }
//! ```

pub mod auth;
pub mod client_addr;
pub mod error;
pub mod json;
pub mod limits;
pub mod origin;
pub mod path;
pub mod rate_limit;
mod routes;
pub mod service;
pub mod state;
pub mod validate;
mod ws;

pub use ws::frame::{Command, Refused, parse_frame};

pub use auth::{AuthUser, TokenKeys};
pub use client_addr::{ClientAddr, TrustedProxies};
pub use error::ApiError;
pub use origin::AllowedOrigins;
pub use rate_limit::{LoginBackoffConfig, Rate, RateLimitConfig, RateLimits};
pub use routes::openapi::ApiDoc;
pub use routes::{route_paths, router};
pub use service::{
    Caller, ChatService, Completion, OutgoingMessage, Password, SendOutcome, ServiceError, Session, SessionEvent,
    SessionId, SessionLease,
};
pub use state::{ApiState, WsConfig};
