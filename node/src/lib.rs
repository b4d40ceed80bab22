//! The kith home node: holds its users, their mailboxes, presence and live sessions, and
//! wires the client API ([`kith_client_api`]) to them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use kith_node::config::{Config, ServeArgs};
//!
//! let node = kith_node::server::start(Config::resolve(ServeArgs::default())?).await?;
//! println!("serving on {}", node.addr);
//! node.shutdown();
//! node.wait().await?;
//! # Ok(()) }
//! ```
//!
//! The parts, top down: entry points (`service` for clients, `inbound` for other nodes); the
//! domain (`delivery`: store, then push; `presence`, `keys`, `history`, `accounts`); `push`,
//! the one way anything reaches a user's sessions; and below them [`store`] (durable state,
//! group commit, the federation outbox table), [`outbox`] (pumps to other nodes), [`cache`]
//! (presence, recent messages), [`sessions`] (live WebSockets), [`peers`] (the federation
//! network), all sharing one [`state::AppState`]. Nothing below imports from above.

// Entry points: clients (`service`), other nodes (`federation_inbound`) and the node's other
// instances (`cluster_inbound`).
mod cluster_inbound;
mod federation_inbound;
mod service;

// The domain: what a request does.
mod accounts;
mod delivery;
mod history;
mod keys;
mod presence;

// How anything reaches a user's live sessions.
mod push;

// Below: durable state, queues and shared handles.
pub mod audience;
pub mod cache;
pub mod cluster;
mod detach;
pub mod outbox;
mod password;
pub mod peers;
pub mod prekey_budget;
pub mod remote_presence;
pub mod sessions;
pub mod state;
pub mod store;
pub mod telemetry;
mod trust;
mod users;

// Running a node.
pub mod cli;
pub mod config;
mod error;
pub mod federation_ctl;
pub mod http;
pub mod import;
mod metrics;
pub mod secrets;
pub mod server;
pub mod tls;

pub use password::{HashError, Hasher, check_imported_hash};
