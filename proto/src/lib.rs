//! Wire types shared by kith clients and nodes.
//!
//! The client API is JSON with camelCase fields. This crate holds its contract: the ids
//! ([`UserId`], [`MessageId`]), the REST bodies ([`rest`]), the WebSocket frames ([`ws`]), the
//! error body ([`ErrorBody`]) and the limits ([`limits`]). Both the server (`kith-client-api`)
//! and the Rust SDK (`kith-client`) build on it, so they cannot drift apart.
//!
//! ```
//! use kith_proto::{ServerName, UserId};
//!
//! let home = ServerName::parse("kith.example").unwrap();
//! let bob = UserId::parse_or_local("bob", &home).unwrap();
//! assert_eq!(bob.to_string(), "bob@kith.example");
//! ```

pub mod error;
pub mod ids;
pub mod keys;
pub mod limits;
pub mod number;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod patterns;
pub mod rest;
pub mod time;
pub mod ws;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use ids::{ClientMessageId, DeviceId, IdError, MessageId, ServerName, UserId, Username};
pub use rest::{MessageStatus, MessageView, PresenceSettings, PresenceStatus, PresenceView, PresenceVisibility};
pub use time::Timestamp;
pub use ws::{ClientFrame, IncomingMessage, ServerFrame};
