//! A typed async client of the kith client API: REST calls and the real-time WebSocket, with
//! the same wire types the node uses ([`kith_proto`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), kith_client::ClientError> {
//! use kith_client::Client;
//!
//! let node = Client::new("http://127.0.0.1:8080")?;
//! let alice = node.register("alice", "correct horse battery").await?;
//! let mut live = alice.connect().await?;
//! alice.send_message("bob", "hello", Some("c-1")).await?;
//! let frame = live.next_frame().await?;
//! # Ok(()) }
//! ```

mod error;
mod http;
mod ws;

pub use error::ClientError;
pub use http::{Authed, Client, Sent};
pub use kith_proto as proto;
pub use ws::Connection;
