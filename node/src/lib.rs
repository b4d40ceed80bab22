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
//! The parts: [`store`] (durable state, group commit), [`cache`] (presence, recent messages),
//! [`sessions`] (live WebSockets), `delivery` (store, then push), `presence`, `history`,
//! `accounts`, all sharing one [`state::AppState`].

mod accounts;
pub mod cache;
pub mod cli;
pub mod config;
mod delivery;
mod error;
pub mod federation;
mod history;
pub mod import;
mod keys;
mod metrics;
mod presence;
pub mod secrets;
pub mod server;
mod service;
pub mod sessions;
pub mod state;
pub mod store;
mod trust;
mod users;

pub use accounts::{HashError, Hasher, check_imported_hash};
