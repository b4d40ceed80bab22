//! The request-response protocol `/kith/federation/1`: what nodes ask each other, with caps
//! so that no peer can make a node buffer more than a few megabytes.

use serde::{Deserialize, Serialize};

use crate::envelope::Envelope;
use crate::record::NodeRecord;

/// The protocol name.
pub const PROTOCOL: &str = "/kith/federation/1";

/// Largest request accepted, in bytes (a batch of envelopes).
pub const MAX_REQUEST_BYTES: u64 = 8 * 1024 * 1024;

/// Largest response accepted, in bytes.
pub const MAX_RESPONSE_BYTES: u64 = 8 * 1024 * 1024;

/// How a `Refused` answer to a query starts when the user asked about does not exist, so the
/// asking node can answer its client with "not found" rather than "unavailable".
pub const REFUSED_UNKNOWN_USER: &str = "unknown user";

/// Most envelopes in one `Deliver`.
pub const MAX_ENVELOPES_PER_REQUEST: usize = 1024;

/// What one node asks another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// "This is who I am": answered by the peer's own record.
    Hello(NodeRecord),
    /// Envelopes to apply, in order; answered by one ack each, sent only after their effects
    /// are durably stored.
    Deliver(Vec<Envelope>),
    /// One envelope that expects an envelope back (`keys.claim` → `keys.bundles`).
    Query(Envelope),
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The peer's record.
    Hello(NodeRecord),
    /// One ack per delivered envelope, in order.
    Acks(Vec<Ack>),
    /// The answer to a query.
    Answer(Envelope),
    /// The whole request was refused.
    Refused(String),
}

/// The fate of one delivered envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The envelope's id.
    pub id: String,
    /// What happened.
    pub outcome: Outcome,
}

/// What happened to a delivered envelope. Both are final: the sender removes it from its
/// outbox. A repeat of an id gets the first outcome again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Its effect is durably stored.
    Accepted,
    /// It was refused, for this reason; resending will not help.
    Rejected(String),
}
