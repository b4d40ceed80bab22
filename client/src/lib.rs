//! The kith client SDK: an end-to-end encrypting messenger ([`Messenger`]) on top of a typed
//! async client of the kith client API ([`Client`], [`Authed`], [`Connection`]: REST calls and
//! the real-time WebSocket, with the same wire types the node uses, [`kith_proto`]).
//!
//! The layers, bottom up:
//!
//! - transport: [`Client`] / [`Authed`] (REST) and [`Connection`] (WebSocket), errors
//!   [`ClientError`];
//! - [`envelope`]: the JSON envelope an encrypted message travels in, one ciphertext per
//!   reading device ([`EnvelopeError`]);
//! - [`sessions`]: this account's user identity, this device's keys, the user identities it
//!   trusts and its `kith-crypto` sessions with other devices, pure state ([`SessionError`]);
//! - [`profile`]: where that state and the decrypted history live on disk, written atomically
//!   and, with a passphrase, encrypted at rest ([`ProfileError`]);
//! - [`messenger`]: the whole flow, register and link to safety numbers ([`MessengerError`]).
//!
//! The `kith-chat` binary is a command line over [`Messenger`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), kith_client::MessengerError> {
//! use kith_client::{Event, Messenger, Profile};
//!
//! let mut alice = Messenger::register(
//!     Profile::new("/tmp/alice"), "http://127.0.0.1:8080", "alice", "correct horse battery", None,
//! ).await?;
//! let bob = alice.resolve("bob")?;
//! alice.send(&bob, "hello, end to end").await?;
//!
//! let mut inbox = alice.connect().await?;
//! loop {
//!     for event in alice.next_events(&mut inbox).await? {
//!         if let Event::Message(entry) = event {
//!             // entry.text() is the decrypted text
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! The typed API client alone:
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

pub mod envelope;
mod error;
pub mod history;
mod http;
pub mod messenger;
pub mod profile;
pub mod sessions;
mod state;
mod timeouts;
mod tls;
mod vault;
mod ws;

pub use envelope::EnvelopeError;
pub use error::ClientError;
pub use history::{Body, HistoryEntry};
pub use http::{Authed, Client, Sent};
pub use kith_proto as proto;
pub use messenger::{Event, Inbox, LINK_WAIT, LinkOffer, Messenger, MessengerError, SafetyNumber, SentMessage};
pub use profile::{Profile, ProfileError};
pub use sessions::{IdentityStatus, KnownDevice, SessionError};
pub use state::Account;
pub use timeouts::Timeouts;
pub use tls::Trust;
pub use vault::VaultError;
pub use ws::Connection;
