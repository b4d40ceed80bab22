//! The statements of the hot path, one multi-row statement each, as a contract three drivers
//! meet: PostgreSQL through sqlx in [`super::pg_statements`], the SQLite writer's own connection
//! in [`super::sqlite_statements`], and SQLite's sqlx connection (which the writer uses for
//! everything else) in [`super::sqlx_statements`]. The decisions around them (what is new, what is a repeat, which
//! shard or node gets what) are written once, in [`super::append`] and [`super::receipts`].
//!
//! Each method runs one statement over at most [`super::CHUNK_SIZES`]`[0]` rows, inside the
//! caller's transaction.

use kith_proto::MessageStatus;

use crate::store::{OutboxEntry, StoreError};

/// A sender's idempotency key for a new message.
pub(in crate::store) struct ClientIdRow<'a> {
    pub sender: &'a str,
    pub client_message_id: &'a str,
    pub message_id: &'a str,
    pub timestamp: i64,
}

/// A mailbox row to insert, with status `sent`.
pub(in crate::store) struct MailboxInsert<'a> {
    pub owner: &'a str,
    pub message_id: &'a str,
    pub peer: &'a str,
    pub sender: &'a str,
    pub receiver: &'a str,
    pub content: &'a str,
    pub timestamp: i64,
}

/// A new mailbox row to queue for each of its owner's devices but `except_device` (-1: none).
pub(in crate::store) struct QueueRow<'a> {
    pub owner: &'a str,
    pub seq: i64,
    pub except_device: i64,
}

/// A hand-off row to insert.
pub(in crate::store) struct HandoffRow<'a> {
    pub id: &'a str,
    pub target_shard: i64,
    pub body: &'a [u8],
}

/// A reader's copy of a message, as [`Statements::find_copies`] returns it.
pub(in crate::store) struct CopyRow {
    pub seq: i64,
    pub owner: String,
    pub message_id: String,
    pub sender: String,
    pub receiver: String,
    pub status: String,
}

/// A [`CopyRow`] as sqlx decodes it: `(seq, owner, message id, sender, receiver, status)`.
pub(in crate::store) type CopyColumns = (i64, String, String, String, String, String);

impl From<CopyColumns> for CopyRow {
    fn from((seq, owner, message_id, sender, receiver, status): CopyColumns) -> Self {
        Self { seq, owner, message_id, sender, receiver, status }
    }
}

/// The hot path's statements. `async` because sqlx's are; the SQLite writer's own connection
/// answers at once.
pub(in crate::store) trait Statements {
    /// Records envelopes received from other nodes (`(origin, envelope id)`); returns the keys
    /// that were new.
    async fn insert_inbox(&mut self, keys: &[(&str, &str)], now: i64) -> Result<Vec<(String, String)>, StoreError>;

    /// Records idempotency keys; returns the `(sender, client message id)` pairs that were new.
    async fn insert_client_ids(&mut self, rows: &[ClientIdRow<'_>]) -> Result<Vec<(String, String)>, StoreError>;

    /// The `(message id, timestamp)` an earlier send with this idempotency key created.
    async fn earlier_send(&mut self, sender: &str, client_message_id: &str) -> Result<(String, i64), StoreError>;

    /// Inserts mailbox rows, skipping those that exist; returns `(seq, owner, message id)` of
    /// the new ones.
    async fn insert_mailbox_rows(
        &mut self,
        rows: &[MailboxInsert<'_>],
    ) -> Result<Vec<(i64, String, String)>, StoreError>;

    /// Queues new mailbox rows for their owners' devices.
    async fn queue_for_devices(&mut self, rows: &[QueueRow<'_>]) -> Result<(), StoreError>;

    /// Removes acked envelopes of `destination` by their queue positions.
    async fn delete_outbox(&mut self, destination: &str, seqs: &[i64]) -> Result<(), StoreError>;

    /// Queues envelopes for other nodes.
    async fn insert_outbox(&mut self, entries: &[&OutboxEntry], now: i64) -> Result<(), StoreError>;

    /// Records what belongs on other shards; a repeat of a hand-off id is the same hand-off.
    async fn insert_handoffs(&mut self, rows: &[HandoffRow<'_>], now: i64) -> Result<(), StoreError>;

    /// The copies `(owner, message id)` that exist.
    async fn find_copies(&mut self, keys: &[(&str, &str)]) -> Result<Vec<CopyRow>, StoreError>;

    /// One device acked its copy: `(owner, device, seq)`.
    async fn clear_device_pending(&mut self, rows: &[(&str, i64, i64)]) -> Result<(), StoreError>;

    /// No device of the owner needs the copy any more: `(owner, seq)`.
    async fn clear_all_pending(&mut self, rows: &[(&str, i64)]) -> Result<(), StoreError>;

    /// Moves the copies with these `seq`s forward to `status` (never back).
    async fn advance_by_seq(&mut self, status: MessageStatus, seqs: &[i64]) -> Result<(), StoreError>;

    /// Moves the copies `(owner, message id)` forward to `status` (never back).
    async fn advance_by_id(&mut self, status: MessageStatus, copies: &[(&str, &str)]) -> Result<(), StoreError>;
}
