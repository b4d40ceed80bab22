//! The group-commit writer: one task per partition takes every operation waiting in its queue,
//! applies them in one transaction, commits once, then answers each.
//!
//! An operation that fails on its own terms (a taken username, an unknown message) answers
//! with its error and the batch goes on. A database error aborts the transaction; the writer
//! then retries each operation of the batch in a transaction of its own, so one bad operation
//! never fails its neighbours.

use kith_proto::limits::{MAX_DEVICES, MAX_PREKEYS_STORED};
use kith_proto::{DeviceId, MessageStatus, Timestamp, UserId};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, QueryBuilder, Transaction, Type};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::bulk::push_advances;
use super::rows::RowsAffected;
use super::{
    AppendOutcome, ClaimedKeys, ImportReport, InboxKey, NewMessage, NewUser, OutboxEntry, PublishOutcome,
    PublishedKeys, Receipt, ReceiptOutcome, RemoteReceipt, StoreError,
};

/// Where an operation's answer goes, and the answer until the commit decides its fate.
#[derive(Debug)]
pub(crate) struct Slot<T> {
    reply: Option<oneshot::Sender<Result<T, StoreError>>>,
    result: Option<Result<T, StoreError>>,
}

impl<T> Slot<T> {
    pub(crate) fn new(reply: oneshot::Sender<Result<T, StoreError>>) -> Self {
        Self { reply: Some(reply), result: None }
    }

    fn answer(&mut self, result: Result<T, StoreError>) {
        if let Some(reply) = self.reply.take() {
            // The caller may have gone away; the write stands either way.
            let _ = reply.send(result);
        }
    }
}

/// One queued write and its answer slot.
#[derive(Debug)]
pub(crate) enum Job {
    CreateUser(NewUser, Slot<()>),
    ImportUsers(Vec<NewUser>, Slot<ImportReport>),
    AppendMessage(NewMessage, Slot<AppendOutcome>),
    RecordReceipt(Receipt, Slot<ReceiptOutcome>),
    SetPresence { user_id: String, online: bool, at: Timestamp, slot: Slot<()> },
    ResetPresence(Timestamp, Slot<u64>),
    AddDevice { user: UserId, device: DeviceId, at: Timestamp, slot: Slot<()> },
    RemoveDevice { user: UserId, device: DeviceId, slot: Slot<bool> },
    PublishKeys { user: UserId, device: DeviceId, keys: PublishedKeys, slot: Slot<PublishOutcome> },
    ClaimKeys { user: UserId, slot: Slot<Vec<ClaimedKeys>> },
    ApplyRemoteReceipt(RemoteReceipt, Slot<Option<MessageStatus>>),
    EnqueueEnvelopes(Vec<OutboxEntry>, Slot<()>),
    OutboxRemove { destination: String, seqs: Vec<i64>, slot: Slot<()> },
    Trust(super::TrustOp, Slot<super::TrustOutcome>),
}

impl Job {
    /// Answers with the job's result if its transaction committed, or with why it did not.
    fn settle(&mut self, failure: Option<&str>) {
        fn settle<T>(slot: &mut Slot<T>, failure: Option<&str>) {
            let result = match (failure, slot.result.take()) {
                (None, Some(result)) => result,
                (None, None) => Err(StoreError::WriteFailed("operation was not applied".to_owned())),
                (Some(reason), _) => Err(StoreError::WriteFailed(reason.to_owned())),
            };
            slot.answer(result);
        }
        match self {
            Self::CreateUser(_, slot) => settle(slot, failure),
            Self::ImportUsers(_, slot) => settle(slot, failure),
            Self::AppendMessage(_, slot) => settle(slot, failure),
            Self::RecordReceipt(_, slot) => settle(slot, failure),
            Self::SetPresence { slot, .. } => settle(slot, failure),
            Self::ResetPresence(_, slot) => settle(slot, failure),
            Self::AddDevice { slot, .. } => settle(slot, failure),
            Self::RemoveDevice { slot, .. } => settle(slot, failure),
            Self::PublishKeys { slot, .. } => settle(slot, failure),
            Self::ClaimKeys { slot, .. } => settle(slot, failure),
            Self::ApplyRemoteReceipt(_, slot) => settle(slot, failure),
            Self::EnqueueEnvelopes(_, slot) => settle(slot, failure),
            Self::OutboxRemove { slot, .. } => settle(slot, failure),
            Self::Trust(_, slot) => settle(slot, failure),
        }
    }
}

impl StoreError {
    /// Whether this error poisons the transaction it happened in.
    fn aborts_batch(&self) -> bool {
        matches!(self, Self::Database(_) | Self::Migrate(_) | Self::Closed | Self::Config(_) | Self::WriteFailed(_))
    }
}

fn settle_all(batch: &mut [Job], failure: Option<&str>) {
    for job in batch {
        job.settle(failure);
    }
}

/// Keeps a job's result for the commit to settle, or hands back an error that aborts the batch.
pub(super) fn keep<T>(slot: &mut Slot<T>, result: Result<T, StoreError>) -> Option<StoreError> {
    match result {
        Err(e) if e.aborts_batch() => Some(e),
        result => {
            slot.result = Some(result);
            None
        }
    }
}

pub(super) type Tx<DB> = Transaction<'static, DB>;

/// One partition's writer: owns its queue's consumer end and borrows connections from `pool`.
#[derive(Debug)]
pub(crate) struct Writer<DB: Database> {
    pub(crate) pool: Pool<DB>,
    pub(crate) max_batch: usize,
}

impl<DB> Writer<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    DB::QueryResult: RowsAffected,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> String: Decode<'r, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'r> Vec<u8>: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    /// Runs one writer until its queue closes, then returns after the last commit.
    pub(crate) async fn run(self, mut queue: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while queue.recv_many(&mut batch, self.max_batch).await > 0 {
            debug!(ops = batch.len(), "group commit");
            if let Err(e) = self.apply_batch(&mut batch).await {
                if batch.len() == 1 {
                    warn!(error = %e, "write failed");
                    settle_all(&mut batch, Some(&e.to_string()));
                } else {
                    warn!(error = %e, ops = batch.len(), "group commit failed; retrying its operations one by one");
                    for job in &mut batch {
                        let single = std::slice::from_mut(job);
                        if let Err(e) = self.apply_batch(single).await {
                            settle_all(single, Some(&e.to_string()));
                        }
                    }
                }
            }
            batch.clear();
        }
    }

    /// Applies `batch` in one transaction and answers every job once it has committed. On error
    /// nothing is answered and nothing is committed.
    async fn apply_batch(&self, batch: &mut [Job]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        Self::group_hot_path(batch);
        let mut start = 0;
        while start < batch.len() {
            // The longest run of operations of one kind from here.
            let kind = std::mem::discriminant(&batch[start]);
            let end = batch[start..]
                .iter()
                .position(|job| std::mem::discriminant(job) != kind)
                .map_or(batch.len(), |n| start + n);
            match &batch[start] {
                Job::AppendMessage(..) => Self::append_messages(&mut tx, &mut batch[start..end]).await?,
                Job::RecordReceipt(..) => Self::record_receipts(&mut tx, &mut batch[start..end]).await?,
                _ => Self::apply_one_by_one(&mut tx, &mut batch[start..end]).await?,
            }
            start = end;
        }
        tx.commit().await?;
        settle_all(batch, None);
        Ok(())
    }

    /// Reorders each stretch of appends and receipts so that its appends come first, then its
    /// receipts, each kind in its own order, so that they apply as two long bulk runs instead
    /// of many short ones. Safe because a receipt is only ever for a message committed in an
    /// earlier batch (it is pushed after its commit, and acked after that), and appends do not
    /// depend on receipts. Other operations stay where they are and bound the stretches.
    fn group_hot_path(batch: &mut [Job]) {
        let hot = |job: &Job| matches!(job, Job::AppendMessage(..) | Job::RecordReceipt(..));
        let mut start = 0;
        while start < batch.len() {
            let end = batch[start..].iter().position(|job| !hot(job)).map_or(batch.len(), |n| start + n);
            // Stable: the order within each kind is kept.
            batch[start..end].sort_by_key(|job| matches!(job, Job::RecordReceipt(..)));
            start = end + 1;
        }
    }

    /// Applies operations of the kinds that are rare on the hot path, one statement set each.
    async fn apply_one_by_one(tx: &mut Tx<DB>, jobs: &mut [Job]) -> Result<(), StoreError> {
        for job in jobs.iter_mut() {
            let fatal = match job {
                Job::CreateUser(user, slot) => keep(slot, Self::create_user(tx, user).await),
                Job::ImportUsers(users, slot) => keep(slot, Self::import_users(tx, users).await),
                // Runs of these two are applied in bulk above.
                Job::AppendMessage(..) | Job::RecordReceipt(..) => None,
                Job::SetPresence { user_id, online, at, slot } => {
                    keep(slot, Self::set_presence(tx, user_id, *online, *at).await)
                }
                Job::ResetPresence(at, slot) => keep(slot, Self::reset_presence(tx, *at).await),
                Job::AddDevice { user, device, at, slot } => keep(slot, Self::add_device(tx, user, *device, *at).await),
                Job::RemoveDevice { user, device, slot } => keep(slot, Self::remove_device(tx, user, *device).await),
                Job::PublishKeys { user, device, keys, slot } => {
                    keep(slot, Self::publish_keys(tx, user, *device, keys).await)
                }
                Job::ClaimKeys { user, slot } => keep(slot, Self::claim_keys(tx, user).await),
                Job::ApplyRemoteReceipt(receipt, slot) => keep(slot, Self::apply_remote_receipt(tx, receipt).await),
                Job::EnqueueEnvelopes(entries, slot) => keep(slot, Self::enqueue_envelopes(tx, entries).await),
                Job::OutboxRemove { destination, seqs, slot } => {
                    keep(slot, Self::outbox_remove(tx, destination, seqs).await)
                }
                Job::Trust(op, slot) => keep(slot, Self::apply_trust(tx, op).await),
            };
            if let Some(e) = fatal {
                return Err(e);
            }
        }
        Ok(())
    }

    async fn create_user(tx: &mut Tx<DB>, user: &NewUser) -> Result<(), StoreError> {
        if Self::insert_user(tx, user).await? { Ok(()) } else { Err(StoreError::UserExists(user.user_id.clone())) }
    }

    async fn import_users(tx: &mut Tx<DB>, users: &[NewUser]) -> Result<ImportReport, StoreError> {
        let mut report = ImportReport::default();
        for user in users {
            if Self::insert_user(tx, user).await? {
                report.created += 1;
            } else {
                report.skipped += 1;
            }
        }
        Ok(report)
    }

    /// Inserts an account unless its id exists; says whether it did.
    async fn insert_user(tx: &mut Tx<DB>, user: &NewUser) -> Result<bool, StoreError> {
        let done = sqlx::query::<DB>(
            "INSERT INTO users (user_id, name, password_hash, created_at, status) \
             VALUES ($1, $2, $3, $4, 'offline') ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user.user_id.as_str())
        .bind(user.user_id.name())
        .bind(user.password_hash.as_str())
        .bind(user.created_at.as_millis())
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        Self::insert_device(tx, user.user_id.as_str(), user.device, user.created_at).await?;
        Ok(true)
    }

    async fn insert_device(tx: &mut Tx<DB>, user: &str, device: DeviceId, at: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query::<DB>(
            "INSERT INTO devices (user_id, device_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, device_id) DO NOTHING",
        )
        .bind(user)
        .bind(i64::from(device.0))
        .bind(at.as_millis())
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records an envelope from another node; false if it was recorded before (a repeat).
    async fn first_receipt_of(tx: &mut Tx<DB>, received: &InboxKey) -> Result<bool, StoreError> {
        let done = sqlx::query::<DB>(
            "INSERT INTO inbox (origin, envelope_id, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT (origin, envelope_id) DO NOTHING",
        )
        .bind(received.origin.as_str())
        .bind(received.envelope_id.as_str())
        .bind(Timestamp::now().as_millis())
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn enqueue_envelopes(tx: &mut Tx<DB>, entries: &[OutboxEntry]) -> Result<(), StoreError> {
        Self::insert_outbox_rows(tx, &entries.iter().collect::<Vec<_>>()).await
    }

    async fn outbox_remove(tx: &mut Tx<DB>, destination: &str, seqs: &[i64]) -> Result<(), StoreError> {
        for seq in seqs {
            sqlx::query::<DB>("DELETE FROM outbox WHERE destination = $1 AND seq = $2")
                .bind(destination)
                .bind(*seq)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn apply_remote_receipt(
        tx: &mut Tx<DB>,
        receipt: &RemoteReceipt,
    ) -> Result<Option<MessageStatus>, StoreError> {
        if !Self::first_receipt_of(tx, &receipt.received).await? {
            return Ok(None);
        }
        let status = match receipt.status {
            MessageStatus::Sent => return Ok(None),
            status => status,
        };
        // Only the message's receiver (a user of the receipt's origin) moves its status.
        let message_id = receipt.message_id.to_string();
        let mut query = QueryBuilder::<DB>::new("UPDATE messages SET status = ");
        query.push_bind(status.as_str()).push(" WHERE owner_id = ").push_bind(receipt.sender.as_str());
        query.push(" AND message_id = ").push_bind(message_id.as_str());
        query.push(" AND receiver_id = ").push_bind(receipt.receiver.as_str()).push(" AND ");
        push_advances(&mut query, status);
        let advanced = query.build().execute(&mut **tx).await?.rows_affected() > 0;
        Ok(advanced.then_some(status))
    }

    async fn add_device(tx: &mut Tx<DB>, user: &UserId, device: DeviceId, at: Timestamp) -> Result<(), StoreError> {
        let (count,) =
            sqlx::query_as::<DB, (i64,)>("SELECT COUNT(*) FROM devices WHERE user_id = $1 AND device_id <> $2")
                .bind(user.as_str())
                .bind(i64::from(device.0))
                .fetch_one(&mut **tx)
                .await?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= MAX_DEVICES {
            let (exists,) =
                sqlx::query_as::<DB, (i64,)>("SELECT COUNT(*) FROM devices WHERE user_id = $1 AND device_id = $2")
                    .bind(user.as_str())
                    .bind(i64::from(device.0))
                    .fetch_one(&mut **tx)
                    .await?;
            if exists == 0 {
                return Err(StoreError::TooManyDevices { max: MAX_DEVICES });
            }
        }
        Self::insert_device(tx, user.as_str(), device, at).await?;
        Ok(())
    }

    async fn remove_device(tx: &mut Tx<DB>, user: &UserId, device: DeviceId) -> Result<bool, StoreError> {
        let device_id = i64::from(device.0);
        for table in [
            "DELETE FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM device_pending WHERE owner_id = $1 AND device_id = $2",
        ] {
            sqlx::query::<DB>(table).bind(user.as_str()).bind(device_id).execute(&mut **tx).await?;
        }
        let done = sqlx::query::<DB>("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
            .bind(user.as_str())
            .bind(device_id)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn publish_keys(
        tx: &mut Tx<DB>,
        user: &UserId,
        device: DeviceId,
        keys: &PublishedKeys,
    ) -> Result<PublishOutcome, StoreError> {
        let device_id = i64::from(device.0);
        let previous = sqlx::query_as::<DB, (Option<Vec<u8>>,)>(
            "SELECT identity FROM devices WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user.as_str())
        .bind(device_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::DeviceNotFound(user.clone(), device))?
        .0;
        let identity_changed = previous.as_deref().is_some_and(|p| p != keys.identity.as_slice());
        // Prekeys signed by an old identity are worthless: a new identity starts from none.
        let stored = if identity_changed { 0 } else { Self::count_prekeys(tx, user, device).await? };
        let would_hold = stored + keys.one_time.len();
        if would_hold > MAX_PREKEYS_STORED {
            return Err(StoreError::TooManyPrekeys { would_hold, max: MAX_PREKEYS_STORED });
        }
        if identity_changed {
            sqlx::query::<DB>("DELETE FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2")
                .bind(user.as_str())
                .bind(device_id)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query::<DB>("UPDATE devices SET identity = $3, signed_prekey = $4 WHERE user_id = $1 AND device_id = $2")
            .bind(user.as_str())
            .bind(device_id)
            .bind(keys.identity.as_slice())
            .bind(keys.signed_prekey.as_slice())
            .execute(&mut **tx)
            .await?;
        for (key_id, key) in &keys.one_time {
            sqlx::query::<DB>(
                "INSERT INTO one_time_prekeys (user_id, device_id, key_id, key) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, device_id, key_id) DO NOTHING",
            )
            .bind(user.as_str())
            .bind(device_id)
            .bind(i64::from(*key_id))
            .bind(key.as_slice())
            .execute(&mut **tx)
            .await?;
        }
        let one_time_prekeys = u32::try_from(Self::count_prekeys(tx, user, device).await?).unwrap_or(u32::MAX);
        Ok(PublishOutcome { identity_changed, one_time_prekeys })
    }

    async fn count_prekeys(tx: &mut Tx<DB>, user: &UserId, device: DeviceId) -> Result<usize, StoreError> {
        let (count,) =
            sqlx::query_as::<DB, (i64,)>("SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2")
                .bind(user.as_str())
                .bind(i64::from(device.0))
                .fetch_one(&mut **tx)
                .await?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    async fn claim_keys(tx: &mut Tx<DB>, user: &UserId) -> Result<Vec<ClaimedKeys>, StoreError> {
        let devices = sqlx::query_as::<DB, (i64, Vec<u8>, Vec<u8>)>(
            "SELECT device_id, identity, signed_prekey FROM devices \
             WHERE user_id = $1 AND identity IS NOT NULL AND signed_prekey IS NOT NULL ORDER BY device_id",
        )
        .bind(user.as_str())
        .fetch_all(&mut **tx)
        .await?;
        let mut claimed = Vec::with_capacity(devices.len());
        for (device_id, identity, signed_prekey) in devices {
            let one_time = sqlx::query_as::<DB, (i64, Vec<u8>)>(
                "SELECT key_id, key FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2 \
                 ORDER BY key_id LIMIT 1",
            )
            .bind(user.as_str())
            .bind(device_id)
            .fetch_optional(&mut **tx)
            .await?;
            let one_time = match one_time {
                Some((key_id, key)) => {
                    sqlx::query::<DB>(
                        "DELETE FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2 AND key_id = $3",
                    )
                    .bind(user.as_str())
                    .bind(device_id)
                    .bind(key_id)
                    .execute(&mut **tx)
                    .await?;
                    Some(key)
                }
                None => None,
            };
            let device_id = u32::try_from(device_id)
                .map_err(|_| StoreError::Corrupt { table: "devices", detail: format!("device id {device_id}") })?;
            claimed.push(ClaimedKeys { device_id: DeviceId(device_id), identity, signed_prekey, one_time });
        }
        Ok(claimed)
    }

    async fn set_presence(tx: &mut Tx<DB>, user_id: &str, online: bool, at: Timestamp) -> Result<(), StoreError> {
        let (status, last_seen) = if online { ("online", None) } else { ("offline", Some(at.as_millis())) };
        sqlx::query::<DB>("UPDATE users SET status = $2, last_seen = COALESCE($3, last_seen) WHERE user_id = $1")
            .bind(user_id)
            .bind(status)
            .bind(last_seen)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn reset_presence(tx: &mut Tx<DB>, at: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query::<DB>("UPDATE users SET status = 'offline', last_seen = $1 WHERE status = 'online'")
            .bind(at.as_millis())
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected())
    }
}
