//! Rows as the database returns them, and their conversion to checked types.

use kith_proto::{MessageId, MessageStatus, MessageView, Timestamp, UserId};

use super::{PendingMessage, StoreError, UserRecord};

/// The number of rows a statement changed; sqlx has it on each engine's result type but not
/// on a trait, so the generic store needs this one.
pub(crate) trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt { table, detail: detail.to_string() }
}

pub(crate) fn parse_user(table: &'static str, s: &str) -> Result<UserId, StoreError> {
    UserId::parse(s).map_err(|e| corrupt(table, e))
}

pub(crate) fn parse_message_id(table: &'static str, s: &str) -> Result<MessageId, StoreError> {
    MessageId::parse(s).map_err(|e| corrupt(table, e))
}

pub(crate) fn parse_status(table: &'static str, s: &str) -> Result<MessageStatus, StoreError> {
    MessageStatus::parse(s).ok_or_else(|| corrupt(table, format!("status {s:?}")))
}

/// The columns every message query selects, as a literal for `concat!`.
macro_rules! message_columns {
    () => {
        "seq, message_id, sender_id, receiver_id, content, timestamp, status"
    };
}
pub(crate) use message_columns;

/// A mailbox row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct MessageRow {
    seq: i64,
    message_id: String,
    sender_id: String,
    receiver_id: String,
    content: String,
    timestamp: i64,
    status: String,
}

impl MessageRow {
    pub(crate) fn into_view(self) -> Result<MessageView, StoreError> {
        Ok(self.into_pending()?.message)
    }

    pub(crate) fn into_pending(self) -> Result<PendingMessage, StoreError> {
        let status = parse_status("messages", &self.status)?;
        Ok(PendingMessage {
            seq: self.seq,
            message: MessageView {
                message_id: parse_message_id("messages", &self.message_id)?,
                sender_id: parse_user("messages", &self.sender_id)?,
                receiver_id: parse_user("messages", &self.receiver_id)?,
                message: self.content,
                timestamp: Timestamp::from_millis(self.timestamp),
                status,
            },
        })
    }
}

/// An account row.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct UserRow {
    user_id: String,
    password_hash: String,
    last_seen: Option<i64>,
    presence_visibility: String,
}

impl UserRow {
    pub(crate) fn into_record(self) -> Result<UserRecord, StoreError> {
        Ok(UserRecord {
            user_id: parse_user("users", &self.user_id)?,
            password_hash: self.password_hash,
            last_seen: self.last_seen.map(Timestamp::from_millis),
            presence_visibility: kith_proto::PresenceVisibility::parse(&self.presence_visibility)
                .ok_or_else(|| corrupt("users", format!("presence_visibility {:?}", self.presence_visibility)))?,
        })
    }
}
