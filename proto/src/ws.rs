//! Frames of the WebSocket protocol (`GET /api/v1/ws`): JSON text frames with a `type` field.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::ids::{DeviceId, MessageId, UserId};
use crate::rest::{MessageStatus, PresenceView};
use crate::time::Timestamp;

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all_fields = "camelCase", deny_unknown_fields)]
pub enum ClientFrame {
    /// Send a message; answered by `sent` once it is durably stored, or by `error`.
    #[serde(rename = "send")]
    Send {
        /// The client's id for this message; a repeat is the same message.
        client_message_id: String,
        /// Who receives it (a bare name means a user of this server).
        receiver_id: String,
        /// The content, up to 64 KiB.
        message: String,
    },
    /// This device has the message: the sender learns `delivered`, and it is not pushed again.
    #[serde(rename = "ack")]
    Ack {
        /// The message.
        message_id: MessageId,
    },
    /// The user has read the message: the sender learns `read` (implies `ack`).
    #[serde(rename = "read")]
    Read {
        /// The message.
        message_id: MessageId,
    },
    /// Watch users' presence: their current presence comes at once, changes as they happen.
    #[serde(rename = "presence.subscribe")]
    PresenceSubscribe {
        /// Whom to watch.
        user_ids: Vec<String>,
    },
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum ServerFrame {
    /// A `send` is durably stored.
    #[serde(rename = "sent")]
    Sent {
        /// The client's id from the `send`.
        client_message_id: String,
        /// The id the node gave the message.
        message_id: MessageId,
        /// When it was stored.
        timestamp: Timestamp,
    },
    /// A message for this user; acknowledge it with `ack`, or it comes again on the next connect.
    #[serde(rename = "message")]
    Message(IncomingMessage),
    /// One of this user's messages got further.
    #[serde(rename = "receipt")]
    Receipt {
        /// The message.
        message_id: MessageId,
        /// `delivered` or `read`.
        status: MessageStatus,
        /// When the receiver acknowledged or read it.
        timestamp: Timestamp,
    },
    /// Everything that was pending when the connection opened has been sent: from here on,
    /// messages arrive as they are stored. Sent once per connection.
    #[serde(rename = "synced")]
    Synced,
    /// A watched user's presence.
    #[serde(rename = "presence")]
    Presence(PresenceView),
    /// A conversation partner's device published a different identity key (a new device, or
    /// a reinstalled one, or someone in the middle): compare safety numbers again.
    #[serde(rename = "keys.changed")]
    KeysChanged {
        /// Whose keys changed.
        user_id: UserId,
        /// Which device.
        device_id: DeviceId,
    },
    /// Something the client sent was refused; the connection stays up.
    #[serde(rename = "error")]
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
        /// The `send` this answers, when it answers one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_message_id: Option<String>,
    },
}

/// A message pushed to its receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct IncomingMessage {
    /// Its id: deduplicate by it.
    pub message_id: MessageId,
    /// Who sent it.
    pub sender_id: UserId,
    /// Who it is for.
    pub receiver_id: UserId,
    /// The content as sent.
    pub message: String,
    /// When the sender's home node stored it.
    pub timestamp: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_use_the_documented_json() {
        let send: ClientFrame =
            serde_json::from_str(r#"{"type":"send","clientMessageId":"c1","receiverId":"bob","message":"hi"}"#)
                .unwrap();
        assert_eq!(
            send,
            ClientFrame::Send { client_message_id: "c1".into(), receiver_id: "bob".into(), message: "hi".into() }
        );
        let sub: ClientFrame = serde_json::from_str(r#"{"type":"presence.subscribe","userIds":["a@b"]}"#).unwrap();
        assert!(matches!(sub, ClientFrame::PresenceSubscribe { .. }));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn server_frames_flatten_their_payload() {
        let frame =
            ServerFrame::Error { code: ErrorCode::PayloadTooLarge, message: "too big".into(), client_message_id: None };
        assert_eq!(
            serde_json::to_string(&frame).unwrap(),
            r#"{"type":"error","code":"payload_too_large","message":"too big"}"#
        );
    }
}
