//! The local, decrypted history of conversations, as the profile stores it and as the CLI
//! prints it with `--json`.

use kith_proto::{DeviceId, MessageId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

/// One message of a conversation, as this device saw it.
///
/// JSON (one object per line in `history/<userId>.jsonl` and in `kith-chat … --json`):
///
/// ```json
/// {"messageId":"019a…","timestamp":"2026-11-28T01:51:13.123Z","from":"alice@kith.example",
///  "fromDevice":42,"to":"bob@kith.example","type":"message","text":"hi","encrypted":true}
/// {"messageId":"019a…","timestamp":"…","from":"…","fromDevice":42,"to":"…",
///  "type":"undecryptable","reason":"message 3 failed authentication (…)"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The node's id of the message.
    pub message_id: MessageId,
    /// When the sender's node stored it.
    pub timestamp: Timestamp,
    /// Who sent it.
    pub from: UserId,
    /// Which device sent it, when known (an envelope names it; plain messages do not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_device: Option<DeviceId>,
    /// Whom it was sent to.
    pub to: UserId,
    /// What this device could make of it.
    #[serde(flatten)]
    pub body: Body,
}

/// The content of a [`HistoryEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Body {
    /// A message with its text.
    Message {
        /// The text.
        text: String,
        /// Whether it came end-to-end encrypted (`false`: sent by a client that does not
        /// encrypt, readable by the server).
        encrypted: bool,
    },
    /// A message this device could not decrypt (tampered, replayed, not addressed to this
    /// device …); kept so the conversation shows the gap.
    Undecryptable {
        /// Why.
        reason: String,
    },
}

impl HistoryEntry {
    /// The other side of the conversation, seen from `me`.
    pub fn peer(&self, me: &UserId) -> &UserId {
        if &self.from == me { &self.to } else { &self.from }
    }

    /// The text, for a readable message.
    pub fn text(&self) -> Option<&str> {
        match &self.body {
            Body::Message { text, .. } => Some(text),
            Body::Undecryptable { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_flat_json() {
        let entry = HistoryEntry {
            message_id: MessageId::parse("019ac8f2-0000-7000-8000-000000000000").unwrap(),
            timestamp: Timestamp::from_millis(0),
            from: UserId::parse("a@b").unwrap(),
            from_device: Some(DeviceId(3)),
            to: UserId::parse("c@b").unwrap(),
            body: Body::Undecryptable { reason: "no".into() },
        };
        let json = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            json,
            r#"{"messageId":"019ac8f2-0000-7000-8000-000000000000","timestamp":"1970-01-01T00:00:00.000Z","from":"a@b","fromDevice":3,"to":"c@b","type":"undecryptable","reason":"no"}"#
        );
        assert_eq!(serde_json::from_str::<HistoryEntry>(&json).unwrap(), entry);
        assert_eq!(entry.peer(&entry.from), &entry.to);
        assert_eq!(entry.text(), None);
    }
}
