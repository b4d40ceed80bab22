//! Bodies of the REST endpoints under `/api/v1`.
//!
//! Request fields that carry ids are plain strings: the server resolves them (a bare `bob` is
//! `bob@<this server>`) and answers a malformed one with an error that names the field.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, MessageId, UserId};
use crate::time::Timestamp;

/// `POST /api/v1/register` and `POST /api/v1/login`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// 1-32 characters of `a-z`, `0-9`, `.`, `_`, `-`, not only dots.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::username))]
    pub username: String,
    /// 8-256 characters.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::password))]
    pub password: String,
    /// Which of the user's devices logs in (default 0). A user has at most 5; each has its own
    /// keys and its own queue of messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<DeviceId>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("device_id", &self.device_id)
            .finish()
    }
}

/// The answer to a successful register or login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AuthResponse {
    /// The user's id, `name@server`.
    pub user_id: UserId,
    /// The device the token is for.
    pub device_id: DeviceId,
    /// A bearer token (JWT) for every other endpoint and the WebSocket.
    pub token: String,
}

/// `POST /api/v1/messages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SendMessageRequest {
    /// Must be the token's user (a bare name means a user of this server).
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::user_ref))]
    pub sender_id: String,
    /// Who receives it: `name@server`, or a bare name for a user of this server.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::user_ref))]
    pub receiver_id: String,
    /// The content, up to 64 KiB as sent; the server stores and relays it unchanged.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::message))]
    pub message: String,
    /// Makes a retry safe: the same id from the same sender returns the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::optional_client_message_id))]
    pub client_message_id: Option<String>,
}

/// The only send status: the message is durably stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SendStatus {
    /// Stored; receipts follow as the receiver gets and reads it.
    Sent,
}

/// The answer to `POST /api/v1/messages`: 201 for a new message, 200 for a repeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SendMessageResponse {
    /// Always `sent`.
    pub status: SendStatus,
    /// The id the node gave the message.
    pub message_id: MessageId,
    /// When the node stored it.
    pub timestamp: Timestamp,
}

/// How far a message has got. It only moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// Stored by the sender's home node.
    Sent,
    /// A device of the receiver has it.
    Delivered,
    /// The receiver has read it.
    Read,
}

impl MessageStatus {
    /// The lowercase name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sent" => Some(Self::Sent),
            "delivered" => Some(Self::Delivered),
            "read" => Some(Self::Read),
            _ => None,
        }
    }
}

/// One message of a conversation, as history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    /// Its id.
    pub message_id: MessageId,
    /// Who sent it.
    pub sender_id: UserId,
    /// Who it is for.
    pub receiver_id: UserId,
    /// The content as sent.
    pub message: String,
    /// When the sender's home node stored it.
    pub timestamp: Timestamp,
    /// How far it has got.
    pub status: MessageStatus,
}

/// Query of `GET /api/v1/messages`.
///
/// Its OpenAPI parameters, with their rules, are in `crate::openapi`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryQuery {
    /// One side of the conversation (the caller must be one of the two).
    pub user1: String,
    /// The other side.
    pub user2: String,
    /// Only messages older than this message id (the previous page's `nextBefore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Page size, 1-100 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::number::optional_u32_of")]
    pub limit: Option<u32>,
}

/// A page of history: the newest messages before the cursor, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    /// Oldest first.
    pub messages: Vec<MessageView>,
    /// Pass as `before` for the page before this one; null at the start of the conversation.
    pub next_before: Option<MessageId>,
}

/// Whether a user has a live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    /// At least one live session.
    Online,
    /// No live session.
    Offline,
    /// The user does not share their presence with the asker (their setting is `contacts`
    /// and the asker is not one, or `nobody`); `lastSeen` is then null. Changes of such a
    /// user are not pushed to the asker.
    Unknown,
}

/// Who may see a user's presence and `lastSeen`: `PUT /api/v1/settings/presence`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PresenceVisibility {
    /// Any user, of this node or another.
    Everyone,
    /// Only users the user has a conversation with (a message either way), on any node.
    #[default]
    Contacts,
    /// No one but the user's own devices.
    Nobody,
}

impl PresenceVisibility {
    /// The stored form: `everyone`, `contacts`, `nobody`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Everyone => "everyone",
            Self::Contacts => "contacts",
            Self::Nobody => "nobody",
        }
    }

    /// Reads the stored form back.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "everyone" => Some(Self::Everyone),
            "contacts" => Some(Self::Contacts),
            "nobody" => Some(Self::Nobody),
            _ => None,
        }
    }
}

/// `GET` and `PUT /api/v1/settings/presence`: who may see the user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PresenceSettings {
    /// `everyone`, `contacts` (the default) or `nobody`.
    pub visibility: PresenceVisibility,
}

/// A user's presence: `GET /api/v1/presence/{userId}` and the WebSocket `presence` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PresenceView {
    /// Whose presence.
    pub user_id: UserId,
    /// Online, offline, or unknown (not shared with the asker).
    pub status: PresenceStatus,
    /// When their last session closed; null if they were never seen, are online now, or do
    /// not share their presence with the asker.
    pub last_seen: Option<Timestamp>,
}

impl PresenceView {
    /// What someone the user does not share their presence with sees.
    pub fn hidden(user_id: UserId) -> Self {
        Self { user_id, status: PresenceStatus::Unknown, last_seen: None }
    }
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    /// `ok`.
    pub status: String,
}
