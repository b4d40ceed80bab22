//! The request-response protocol `/kith/federation/1`: what nodes ask each other, with caps
//! so that no peer can make a node buffer more than a few megabytes.

use serde::{Deserialize, Serialize};

use crate::batch::SealedBatch;
use crate::envelope::Envelope;
use crate::record::NodeRecord;

/// The protocol name.
pub const PROTOCOL: &str = "/kith/federation/1";

/// Largest request accepted, in bytes (a batch of envelopes).
pub const MAX_REQUEST_BYTES: u64 = 8 * 1024 * 1024;

/// Largest response accepted, in bytes.
pub const MAX_RESPONSE_BYTES: u64 = 8 * 1024 * 1024;

/// Most envelopes in one `Deliver` or `DeliverSealed`.
pub const MAX_ENVELOPES_PER_REQUEST: usize = 1024;

/// What one node asks another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// "This is who I am": answered by the peer's own record.
    Hello(NodeRecord),
    /// Envelopes to apply, in order, each signed alone; answered by one ack each, sent only
    /// after their effects are durably stored. Still accepted from nodes that send it.
    Deliver(Vec<Envelope>),
    /// One envelope that expects an envelope back (`keys.claim` → `keys.bundles`).
    Query(Envelope),
    /// As `Deliver`, with the envelopes signed together ([`SealedBatch`]): what outboxes send.
    DeliverSealed(SealedBatch),
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
    Refused(Refusal),
}

/// Why a peer refused a whole request: a kind the asking node acts on, and words for logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// What kind of refusal, so the asking node can answer its own client precisely (a user
    /// that does not exist is "not found", a busy peer is "try later").
    pub reason: RefusalReason,
    /// What was wrong, for logs.
    pub detail: String,
}

impl Refusal {
    /// A refusal of this kind, explained by `detail`.
    pub fn new(reason: RefusalReason, detail: impl Into<String>) -> Self {
        Self { reason, detail: detail.into() }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// The kinds of [`Refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RefusalReason {
    /// The user the request is about does not exist.
    UnknownUser,
    /// The requester is not a pinned peer, or contradicts its pinned binding.
    UnknownPeer,
    /// The request breaks the protocol (too many envelopes, a delivery sent as a query).
    Invalid,
    /// The requester asks too often; it may try again later.
    RateLimited,
    /// The node cannot serve it now (saturated, shutting down); try again later.
    Unavailable,
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
