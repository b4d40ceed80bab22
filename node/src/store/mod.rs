//! Durable state: accounts, mailboxes, receipts and idempotency keys.
//!
//! One [`Store`] trait, two engines: SQLite (the embedded default) and PostgreSQL. Both are the
//! same generic SQL code ([`sql::SqlStore`]) over sqlx with their own migrations.
//!
//! Writes go through a group-commit writer ([`writer`]): callers enqueue an operation in order
//! and get a [`Committed`] future that resolves once the transaction holding it has committed.
//! Many operations share one transaction, so fsyncs per second, not messages per second, bound
//! throughput, and nothing is acknowledged before it is durable.

mod ack_hold;
mod bulk;
pub mod durability;
mod engine;
pub(crate) mod envelopes;
mod handoff;
mod leases;
mod ops;
mod placement;
mod postgres;
mod rows;
mod sharded;
mod sql;
mod sqlite;
mod sqlite_checkpoint;
mod sqlite_writer;
mod status;
mod trust;
mod writer;

pub use leases::Instances;
pub use placement::{Placement, shard_of, shard_of_key};

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
pub use kith_federation::Kind;
use kith_proto::{
    ClientMessageId, DeviceId, MessageId, MessageStatus, MessageView, PresenceVisibility, ServerName, Timestamp, UserId,
};
use tokio::sync::oneshot;

use postgres::open_postgres;
use sqlite::open_sqlite;
pub use trust::{TrustOp, TrustOutcome, TrustRecords};

/// Which databases hold a node's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// One database: `sqlite:PATH` or `postgres://…` (or `postgresql://…`).
    Single(String),
    /// PostgreSQL shards, in order: a user's rows live on shard `hash(user) % N` (see
    /// [`shard_of`]).
    Shards(Vec<String>),
}

/// Opens the store of the node `local` at `location`, for this process alone or for one of
/// several instances (see [`Instances`]).
///
/// # Errors
/// [`StoreError::Config`] for an unsupported URL; [`StoreError::ShardMismatch`] for a shard
/// list of another size or order than the shards were initialised with;
/// [`StoreError::InstanceRunning`] when the store is in use in a way `instances` forbids;
/// connection and migration errors otherwise.
pub async fn open(
    location: &Location,
    options: &StoreOptions,
    local: &ServerName,
    instances: Instances,
) -> Result<Arc<dyn Store>, StoreError> {
    let is_postgres = |url: &str| url.starts_with("postgres://") || url.starts_with("postgresql://");
    match location {
        Location::Single(url) if is_postgres(url) => {
            Ok(Arc::new(open_postgres(url, options, local, Placement::SINGLE, Some(instances)).await?))
        }
        Location::Single(url) if url.starts_with("sqlite:") => {
            Ok(Arc::new(open_sqlite(url, options, local, instances).await?))
        }
        Location::Single(url) => Err(StoreError::Config(format!(
            "unsupported database URL scheme in {:?}: use sqlite:PATH or postgres://…",
            url.split(':').next().unwrap_or_default()
        ))),
        Location::Shards(urls) => {
            if let Some(url) = urls.iter().find(|url| !is_postgres(url)) {
                return Err(StoreError::Config(format!(
                    "shards are PostgreSQL databases (postgres://…); got {:?}",
                    url.split(':').next().unwrap_or_default()
                )));
            }
            let count = u32::try_from(urls.len())
                .ok()
                .filter(|n| (1..=4096).contains(n))
                .ok_or_else(|| StoreError::Config(format!("1 to 4096 shards (got {})", urls.len())))?;
            let mut shards = Vec::with_capacity(urls.len());
            for (index, url) in (0..count).zip(urls) {
                // Instance locks and leases live on shard 0.
                let guard = (index == 0).then_some(instances);
                shards.push(Arc::new(open_postgres(url, options, local, Placement { index, count }, guard).await?));
            }
            Ok(Arc::new(sharded::ShardedStore::start(shards, local.clone())))
        }
    }
}

/// Tuning shared by both engines.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most operations one group commit may hold.
    pub max_batch: usize,
    /// Operations that may wait for the writer before callers are made to wait.
    pub queue_depth: usize,
    /// Connections for reads (history, redelivery, logins).
    pub read_connections: u32,
    /// Concurrent writers; each owns a partition of conversations (PostgreSQL only: SQLite has
    /// one writer by design).
    pub writers: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { max_batch: 8192, queue_depth: 16_384, read_connections: 4, writers: 4 }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The username is taken.
    #[error("user {0} already exists")]
    UserExists(UserId),
    /// The message is not in the caller's mailbox as one addressed to them.
    #[error("message {0} not found")]
    MessageNotFound(MessageId),
    /// The user has as many devices as allowed.
    #[error("a user may have at most {max} devices; remove one first")]
    TooManyDevices {
        /// The limit.
        max: usize,
    },
    /// The device does not exist (it was never added, or was removed).
    #[error("device {1} of {0} does not exist")]
    DeviceNotFound(UserId, DeviceId),
    /// An upload would leave a device with more unclaimed one-time prekeys than allowed.
    #[error("the device would hold {would_hold} one-time prekeys; the limit is {max}")]
    TooManyPrekeys {
        /// How many it would hold.
        would_hold: usize,
        /// The limit.
        max: usize,
    },
    /// The configuration names something the store cannot use.
    #[error("store configuration: {0}")]
    Config(String),
    /// A row holds a value the code cannot read back (a bug or a hand-edited database).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The transaction holding the operation did not commit; nothing of it was stored.
    #[error("write failed: {0}")]
    WriteFailed(String),
    /// The store is shutting down or its writer has stopped.
    #[error("store is closed")]
    Closed,
    /// A shard was initialised as another shard, or of another number of shards, than the
    /// configuration says.
    #[error(
        "shard {configured_index} ({database}) was initialised as shard {recorded_index} of {recorded_count}, \
         but this instance lists it as shard {configured_index} of {configured_count}: give the shards in \
         their original order and number (resharding is not supported; see docs/operations.md)"
    )]
    ShardMismatch {
        /// The database, without credentials.
        database: String,
        /// Where the configuration puts it.
        configured_index: u32,
        /// How many shards the configuration lists.
        configured_count: u32,
        /// What it was initialised as.
        recorded_index: u32,
        /// Of how many.
        recorded_count: u32,
    },
    /// Another instance uses the store in a way this one may not share.
    #[error("{0}")]
    InstanceRunning(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The SQLite writer's own connection (messages and receipts) failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Schema migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database would not flush commits before acknowledging them.
    #[error(transparent)]
    NotDurable(#[from] durability::NotDurable),
}

/// An account to create.
#[derive(Clone)]
pub struct NewUser {
    /// `name@server`.
    pub user_id: UserId,
    /// PHC string of the password hash (argon2id).
    pub password_hash: String,
    /// When the account was created.
    pub created_at: Timestamp,
    /// The device it is created from.
    pub device: DeviceId,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser").field("user_id", &self.user_id).finish_non_exhaustive()
    }
}

/// A stored account.
#[derive(Clone)]
pub struct UserRecord {
    /// `name@server`.
    pub user_id: UserId,
    /// PHC string of the password hash.
    pub password_hash: String,
    /// When the user's last session closed.
    pub last_seen: Option<Timestamp>,
    /// Who may see the user's presence.
    pub presence_visibility: PresenceVisibility,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("user_id", &self.user_id)
            .field("last_seen", &self.last_seen)
            .field("presence_visibility", &self.presence_visibility)
            .finish_non_exhaustive()
    }
}

/// What `import_users` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Accounts created.
    pub created: u64,
    /// Accounts skipped because the user id existed.
    pub skipped: u64,
}

/// A message to append to the mailboxes of its participants who are users of this node.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Minted by the sender's home node.
    pub message_id: MessageId,
    /// Who sent it.
    pub sender: UserId,
    /// Who it is for.
    pub receiver: UserId,
    /// The content, stored unchanged.
    pub content: String,
    /// When the sender's home node stored it.
    pub timestamp: Timestamp,
    /// Where it comes from: one of this node's devices, or another node.
    pub from: Source,
    /// Where it goes: a user of this node, or another node.
    pub to: Recipient,
}

/// Where a message comes from, and so whether the sender's copy is written here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A user of this node sending from `device`: the sender's copy is written, pending for the
    /// sender's other devices; a `client_message_id` seen before makes it a repeat.
    Device {
        /// The device that sent it (it does not need the message pushed back).
        device: DeviceId,
        /// The sender's idempotency key, if any.
        client_message_id: Option<ClientMessageId>,
    },
    /// A user of another node; the message came in this envelope, and a repeat of the envelope
    /// stores nothing. No sender's copy is written here.
    Peer(InboxKey),
    /// A user of this node whose rows live on another shard, which holds the sender's copy
    /// already: only the receiver's copy is written (a repeat of it stores nothing). The store
    /// uses this itself to complete a message between shards.
    OtherShard,
}

/// Where a message goes, and so whether the receiver's copy is written here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A user of this node: the receiver's copy is written too, pending for each of their
    /// devices.
    User,
    /// A user of another node: this envelope, queued in the same transaction as the sender's
    /// copy, carries the message there.
    Peer(OutboxEntry),
}

/// An envelope to queue for another node, in the same transaction as its local effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The node it is for.
    pub destination: ServerName,
    /// Its id, kept across resends so the destination can deduplicate.
    pub envelope_id: String,
    /// What it carries.
    pub kind: Kind,
    /// Its body (signed when sent).
    pub body: Vec<u8>,
}

/// Identifies an envelope received from another node, for deduplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxKey {
    /// The node that sent it.
    pub origin: ServerName,
    /// Its id.
    pub envelope_id: String,
}

/// Where a queued envelope is: which shard's outbox, and its position there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutboxKey {
    /// The shard whose outbox holds it (0 when there is one database).
    pub shard: u32,
    /// Queue position on that shard: a shard's rows go out in this order.
    pub seq: i64,
}

/// A queued envelope, as the outbox pump reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Where it is queued.
    pub key: OutboxKey,
    /// The envelope's id.
    pub envelope_id: String,
    /// What it carries.
    pub kind: Kind,
    /// Its body.
    pub body: Vec<u8>,
    /// When it was queued.
    pub created_at: Timestamp,
}

/// How far behind the outbox is for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxStats {
    /// The destination.
    pub destination: String,
    /// Envelopes waiting.
    pub depth: u64,
    /// When the oldest was queued.
    pub oldest: Option<Timestamp>,
}

/// A receipt from a user of another node for a message a user of this node sent.
#[derive(Debug, Clone)]
pub struct RemoteReceipt {
    /// The sender, a user of this node.
    pub sender: UserId,
    /// The receiver, a user of the receipt's origin.
    pub receiver: UserId,
    /// The message.
    pub message_id: MessageId,
    /// `delivered` or `read`.
    pub status: MessageStatus,
    /// When the receiver got or read it, by its node's clock.
    pub at: Timestamp,
    /// The envelope it came in.
    pub received: InboxKey,
}

/// The result of appending a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Newly stored.
    Stored {
        /// The message's id.
        message_id: MessageId,
        /// When it was stored.
        timestamp: Timestamp,
    },
    /// The sender already sent a message with this `clientMessageId`, or the envelope that
    /// carries it arrived before; nothing was stored.
    Duplicate {
        /// The first message's id.
        message_id: MessageId,
        /// When the first message was stored.
        timestamp: Timestamp,
    },
}

/// A device's acknowledgement (`delivered`) or read receipt (`read`) of a message in its
/// user's mailbox. When it moves the status forward, the sender's copy follows: in the same
/// transaction for a sender of this node, by an envelope queued in it for a sender elsewhere.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// Whose mailbox holds the message: its receiver, or (for an ack only) its sender, whose
    /// other devices get a copy.
    pub reader: UserId,
    /// The reader's device: the message stops being pending for it.
    pub device: DeviceId,
    /// The message.
    pub message_id: MessageId,
    /// `Delivered` or `Read`; `Sent` is ignored.
    pub status: MessageStatus,
    /// When the receiver acked or read it.
    pub at: Timestamp,
}

/// The effect of a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptOutcome {
    /// The message's sender, who should learn about it.
    pub sender: UserId,
    /// The new status when the receipt moved it forward; `None` when it was already there, or
    /// when the reader is the sender.
    pub advanced_to: Option<MessageStatus>,
}

/// A device of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device.
    pub device_id: DeviceId,
    /// Its published `PublicIdentity`, if it has published keys.
    pub identity: Option<Vec<u8>>,
}

/// Keys a device publishes (already verified by the caller).
#[derive(Debug, Clone)]
pub struct PublishedKeys {
    /// `PublicIdentity` bytes.
    pub identity: Vec<u8>,
    /// `SignedPreKeyPublic` bytes.
    pub signed_prekey: Vec<u8>,
    /// `(key id, OneTimePreKeyPublic bytes)`; ids already stored are kept as they are.
    pub one_time: Vec<(u32, Vec<u8>)>,
}

/// What publishing keys did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishOutcome {
    /// The device had published a different identity before.
    pub identity_changed: bool,
    /// Unclaimed one-time prekeys the device now has.
    pub one_time_prekeys: u32,
}

/// The keys claimed for one device of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedKeys {
    /// The device.
    pub device_id: DeviceId,
    /// `PublicIdentity` bytes.
    pub identity: Vec<u8>,
    /// `SignedPreKeyPublic` bytes.
    pub signed_prekey: Vec<u8>,
    /// One `OneTimePreKeyPublic`, now deleted, or `None` when the device has none left.
    pub one_time: Option<Vec<u8>>,
}

/// What completing a hand-off between shards did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// The receiver's copy of this message is now stored.
    Message(MessageView),
    /// The sender's copy of a message moved to this status.
    Status {
        /// The message's sender.
        sender: UserId,
        /// Its receiver, who got or read it.
        receiver: UserId,
        /// The message.
        message_id: MessageId,
        /// The new status.
        status: MessageStatus,
        /// When the receiver got or read it.
        at: Timestamp,
    },
}

/// A message waiting in its receiver's mailbox for an ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage {
    /// Arrival position in the mailbox: redelivery is in this order.
    pub seq: i64,
    /// The message.
    pub message: MessageView,
}

/// Completes once the operation's transaction has committed (or failed).
#[must_use = "an operation is durable only once its Committed future resolves"]
#[derive(Debug)]
pub struct Committed<T> {
    rx: oneshot::Receiver<Result<T, StoreError>>,
}

impl<T> Committed<T> {
    pub(crate) fn new(rx: oneshot::Receiver<Result<T, StoreError>>) -> Self {
        Self { rx }
    }
}

impl<T> Future for Committed<T> {
    type Output = Result<T, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(StoreError::Closed)))
    }
}

/// The node's durable state.
///
/// Writes are two-phase: the `async fn` enqueues the operation (await them in the order the
/// operations must apply), the returned [`Committed`] resolves after the commit.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A one-line description for logs: engine and location, no secrets.
    fn describe(&self) -> String;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates an account.
    ///
    /// # Errors
    /// [`StoreError::UserExists`] if the user id is taken.
    async fn create_user(&self, user: NewUser) -> Result<Committed<()>, StoreError>;

    /// Creates many accounts at once, skipping user ids that exist.
    async fn import_users(&self, users: Vec<NewUser>) -> Result<Committed<ImportReport>, StoreError>;

    /// Looks up an account.
    async fn user(&self, user_id: &UserId) -> Result<Option<UserRecord>, StoreError>;

    /// Appends a message to the mailboxes of both participants (each must be a local user),
    /// unless the sender already used its `clientMessageId`.
    async fn append_message(&self, message: NewMessage) -> Result<Committed<AppendOutcome>, StoreError>;

    /// Records a receipt in the reader's and the sender's mailbox; status only moves forward,
    /// and the message stops being pending for the reader's device (for every device of the
    /// reader when it is a read).
    ///
    /// The [`Committed`] fails with [`StoreError::MessageNotFound`] when the reader has no such
    /// message addressed to them.
    async fn record_receipt(&self, receipt: Receipt) -> Result<Committed<ReceiptOutcome>, StoreError>;

    /// Records a presence transition: online, or offline with `last_seen`.
    async fn set_presence(&self, user_id: &UserId, online: bool, at: Timestamp) -> Result<Committed<()>, StoreError>;

    /// Marks every user offline, with `last_seen = at` for those who were online: run at
    /// start-up, since no session survives a restart.
    async fn reset_presence(&self, at: Timestamp) -> Result<Committed<u64>, StoreError>;

    /// Sets who may see `user_id`'s presence; commits `false` when there is no such user.
    async fn set_presence_visibility(
        &self,
        user_id: &UserId,
        visibility: PresenceVisibility,
    ) -> Result<Committed<bool>, StoreError>;

    /// The newest `limit` messages of `owner`'s conversation with `peer` older than `before`,
    /// oldest first.
    async fn history(
        &self,
        owner: &UserId,
        peer: &UserId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<MessageView>, StoreError>;

    /// Messages `owner`'s `device` has not acked, after arrival position `after_seq`, oldest
    /// first.
    async fn pending(
        &self,
        owner: &UserId,
        device: DeviceId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<PendingMessage>, StoreError>;

    /// Adds a device to an account (nothing if it exists).
    ///
    /// The [`Committed`] fails with [`StoreError::TooManyDevices`] at the limit.
    async fn add_device(&self, user: &UserId, device: DeviceId, at: Timestamp) -> Result<Committed<()>, StoreError>;

    /// Removes a device with its keys and its queue; says whether it existed.
    async fn remove_device(&self, user: &UserId, device: DeviceId) -> Result<Committed<bool>, StoreError>;

    /// A user's devices.
    async fn devices(&self, user: &UserId) -> Result<Vec<DeviceRecord>, StoreError>;

    /// Stores a device's identity and signed prekey (replacing them) and adds one-time prekeys.
    ///
    /// The [`Committed`] fails with [`StoreError::DeviceNotFound`] or
    /// [`StoreError::TooManyPrekeys`].
    async fn publish_keys(
        &self,
        user: &UserId,
        device: DeviceId,
        keys: PublishedKeys,
    ) -> Result<Committed<PublishOutcome>, StoreError>;

    /// For each device of `user` with keys: its identity, its signed prekey and one one-time
    /// prekey, which is deleted so that nobody else gets it.
    async fn claim_keys(&self, user: &UserId) -> Result<Committed<Vec<ClaimedKeys>>, StoreError>;

    /// For each device of `user` with keys: its identity and signed prekey, claiming nothing
    /// (`one_time` is always `None`).
    async fn device_keys(&self, user: &UserId) -> Result<Vec<ClaimedKeys>, StoreError>;

    /// How many unclaimed one-time prekeys a device has.
    async fn prekey_count(&self, user: &UserId, device: DeviceId) -> Result<u32, StoreError>;

    /// Changes the key directory's trust records (user identity, certificates, removals).
    async fn trust(&self, op: TrustOp) -> Result<Committed<TrustOutcome>, StoreError>;

    /// `user`'s trust records, served with their keys.
    async fn trust_records(&self, user: &UserId) -> Result<TrustRecords, StoreError>;

    /// The users `user` has exchanged messages with.
    async fn conversation_peers(&self, user: &UserId) -> Result<Vec<UserId>, StoreError>;

    /// Applies a receipt from another node to the sender's copy (forward-only), once per
    /// envelope; resolves to the new status when it moved.
    async fn apply_remote_receipt(
        &self,
        receipt: RemoteReceipt,
    ) -> Result<Committed<Option<MessageStatus>>, StoreError>;

    /// Queues envelopes that carry no local effect of their own (presence).
    async fn enqueue_envelopes(&self, entries: Vec<OutboxEntry>) -> Result<Committed<()>, StoreError>;

    /// The oldest `limit` envelopes queued for `destination`, in queue order.
    async fn outbox_batch(&self, destination: &ServerName, limit: u32) -> Result<Vec<OutboxRow>, StoreError>;

    /// Removes acknowledged envelopes.
    async fn outbox_remove(&self, destination: &ServerName, keys: Vec<OutboxKey>) -> Result<Committed<()>, StoreError>;

    /// Outbox depth and oldest entry per destination.
    async fn outbox_stats(&self) -> Result<Vec<OutboxStats>, StoreError>;

    /// Completes hand-offs between shards that are older than `older_than` (what a crashed
    /// instance left between the two commits of a cross-shard message or receipt), and returns
    /// what they did, for the live sessions to hear. Nothing for a store of one database.
    async fn resume_handoffs(&self, older_than: std::time::Duration) -> Result<Vec<Resumed>, StoreError>;

    /// Operations that failed on the database since start, by shard index (one entry for a
    /// store of one database).
    fn errors(&self) -> Vec<(u32, u64)>;

    /// Takes the named lease for this process, or says it holds it still: `false` while
    /// another instance holds it. A lease lasts until this process exits or loses its database
    /// connection, so a dead holder's lease is free at once. A store of one database that only
    /// one process may open (SQLite) grants every lease.
    async fn try_lease(&self, name: &str) -> Result<bool, StoreError>;

    /// Lets queued writes commit, stops the writers and closes the connections.
    async fn close(&self);
}
