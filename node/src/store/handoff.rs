//! Hand-offs between shards: the half of a local message, or of a receipt, that belongs on
//! another shard than the one its transaction wrote. The row is written in that transaction,
//! applied idempotently on its target shard, then removed; see `sharded`.

use kith_proto::{MessageId, MessageStatus, Timestamp, UserId};
use serde::{Deserialize, Serialize};

use super::StoreError;

/// What a hand-off writes on its target shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub(crate) enum Handoff {
    /// The receiver's copy of a message whose sender's copy is on the source shard.
    #[serde(rename_all = "camelCase")]
    Message { message_id: MessageId, sender_id: UserId, receiver_id: UserId, content: String, timestamp: Timestamp },
    /// The sender's copy of a message moves to `status` (forward only): its receiver, on the
    /// source shard, got or read it.
    #[serde(rename_all = "camelCase")]
    Status { message_id: MessageId, sender_id: UserId, receiver_id: UserId, status: MessageStatus, at: Timestamp },
}

impl Handoff {
    /// Its id, unique per source shard: the same effect always has the same id.
    pub(crate) fn id(&self) -> String {
        match self {
            Self::Message { message_id, .. } => message_handoff_id(*message_id),
            Self::Status { message_id, status, .. } => status_handoff_id(*message_id, *status),
        }
    }

    /// The body stored in the row.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(|e| StoreError::Corrupt { table: "handoffs", detail: e.to_string() })
    }

    /// Reads a row's body back.
    pub(crate) fn decode(body: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(body).map_err(|e| StoreError::Corrupt { table: "handoffs", detail: e.to_string() })
    }
}

/// The id of the hand-off of a message's receiver's copy.
pub(crate) fn message_handoff_id(message_id: MessageId) -> String {
    format!("m:{message_id}")
}

/// The id of the hand-off moving a message's sender's copy to `status`.
pub(crate) fn status_handoff_id(message_id: MessageId, status: MessageStatus) -> String {
    format!("r:{message_id}:{}", status.as_str())
}

/// A hand-off to write in the transaction that needs it.
#[derive(Debug, Clone)]
pub(crate) struct NewHandoff {
    pub(crate) target_shard: u32,
    pub(crate) handoff: Handoff,
}
