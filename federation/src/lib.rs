//! Federation between kith nodes over libp2p.
//!
//! Each node has one ed25519 key ([`NodeKey`]): its libp2p peer id and the key that signs its
//! [`Envelope`]s. Operators pin every peer's server name to its peer id ([`PinnedPeer`]); a
//! node accepts connections only from pinned peers and envelopes only when signed by the
//! pinned key of their origin, addressed to itself, recent, and speaking only for users of the
//! origin ([`Verifier`] makes the [`VerifiedEnvelope`]s the node acts on).
//!
//! The transport is TCP with Noise and Yamux, plus identify and ping, under connection limits;
//! connections that stop answering are closed and their requests resent on fresh ones;
//! nodes talk with one request-response protocol, `/kith/federation/1` ([`protocol`]), whose
//! requests carry batches of envelopes and are capped in size. The network runs as one task
//! that owns the swarm ([`network`]); the node talks to it through a [`NetworkHandle`] and
//! answers inbound requests it receives as [`Inbound`]s.
//!
//! Durability is the node's part: it keeps an outbox of envelopes until their acks arrive and
//! acks inbound envelopes only after their effects are committed.
//!
//! ```
//! use kith_federation::{Envelope, MessageBody, NodeKey, Payload};
//! use kith_proto::{MessageId, ServerName, Timestamp, UserId};
//!
//! let alpha = NodeKey::ephemeral();
//! let body = MessageBody {
//!     message_id: MessageId::now(),
//!     sender_id: UserId::parse("alice@alpha").unwrap(),
//!     receiver_id: UserId::parse("bob@beta").unwrap(),
//!     message: "hi".into(),
//!     timestamp: Timestamp::now(),
//! };
//! let origin = ServerName::parse("alpha").unwrap();
//! let destination = ServerName::parse("beta").unwrap();
//! let envelope =
//!     Envelope::seal(&alpha, "e-1", &origin, &destination, &Payload::Message(body), Timestamp::now()).unwrap();
//! assert_eq!(envelope.kind.as_str(), "message");
//! ```

pub mod batch;
pub mod codec;
pub mod envelope;
pub mod error;
pub mod identity;
mod liveness;
pub mod network;
pub mod peers;
pub mod pending;
pub mod protocol;
pub mod record;
mod requests;
mod transport;

pub use batch::SealedBatch;
pub use envelope::{
    Envelope, KeysClaimBody, Kind, MessageBody, Payload, PresenceBody, PresenceSubscribeBody, ReceiptBody, Rejection,
    VerifiedEnvelope, Verifier,
};
pub use error::{FederationError, RequestFailure};
pub use identity::{NODE_KEY_FILE, NodeKey};
pub use libp2p::{Multiaddr, PeerId};
pub use network::{Inbound, InboundRequest, NetworkConfig, NetworkHandle, Probe, start};
pub use peers::{Directory, PinnedPeer};
pub use protocol::{Ack, Outcome, Refusal, RefusalReason, Request, Response};
pub use record::NodeRecord;
