//! The [`Store`] implementation shared by SQLite and PostgreSQL: reads on a pool, writes queued
//! to partitioned group-commit writers.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use async_trait::async_trait;
use kith_proto::{DeviceId, MessageId, MessageStatus, MessageView, ServerName, Timestamp, UserId};
use sqlx::{Database, Pool};
use tokio::sync::{mpsc, oneshot};

use super::engine::engine;
use super::leases::Guard;
use super::placement::Placement;
use super::rows::{MessageRow, UserRow, message_columns};
use super::writer::{Job, Slot, Writer};
use super::{
    AppendOutcome, ClaimedKeys, Committed, DeviceRecord, ImportReport, NewMessage, NewUser, OutboxEntry, OutboxRow,
    OutboxStats, PendingMessage, PublishOutcome, PublishedKeys, Receipt, ReceiptOutcome, RemoteReceipt, Store,
    StoreError, StoreOptions,
};
use super::{Kind, OutboxKey, Resumed};

/// A store over one sqlx engine.
#[derive(Debug)]
pub(crate) struct SqlStore<DB: Database> {
    /// Connections for reads.
    read: Pool<DB>,
    /// Connections the writers borrow; closed after they stop.
    write: Pool<DB>,
    /// One queue per writer; emptied by [`Store::close`] so the writers drain and stop.
    queues: RwLock<Vec<mpsc::Sender<Job>>>,
    /// Resolve when each writer has stopped, awaited on close.
    writers: Mutex<Vec<oneshot::Receiver<()>>>,
    /// What [`Store::describe`] says.
    description: String,
    /// Which shard this database is.
    placement: Placement,
    /// The instance lock and leases, on a node's only or first database.
    guard: Option<Guard>,
    /// Operations that failed on the database (reads, and group commits the writers had to
    /// retry or fail), for `/metrics`.
    errors: Arc<AtomicU64>,
}

engine! {
impl<DB> SqlStore<DB> {
    /// Checks that the database is shard `placement` (recording it on first use), then starts
    /// `writers` group-commit writers with `spawn` and serves reads from `read`.
    #[allow(clippy::too_many_arguments, reason = "called from the two engines' open functions only")]
    pub(crate) async fn start(
        read: Pool<DB>,
        write: Pool<DB>,
        writers: usize,
        options: &StoreOptions,
        local: &ServerName,
        placement: Placement,
        guard: Option<Guard>,
        description: String,
        mut spawn: impl FnMut(Writer<DB>, mpsc::Receiver<Job>) -> Result<oneshot::Receiver<()>, StoreError>,
    ) -> Result<Self, StoreError> {
        check_placement(&write, placement, &description).await?;
        let errors = Arc::new(AtomicU64::new(0));
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..writers.max(1) {
            let (tx, rx) = mpsc::channel(options.queue_depth);
            let writer = Writer {
                pool: write.clone(),
                max_batch: options.max_batch,
                local: local.clone(),
                placement,
                errors: errors.clone(),
                relaxed_commit: None,
            };
            queues.push(tx);
            tasks.push(spawn(writer, rx)?);
        }
        Ok(Self {
            read,
            write,
            queues: RwLock::new(queues),
            writers: Mutex::new(tasks),
            description,
            placement,
            guard,
            errors,
        })
    }

    /// Counts a failed read and hands its error on.
    fn failed(&self, e: sqlx::Error) -> StoreError {
        self.errors.fetch_add(1, Ordering::Relaxed);
        StoreError::Database(e)
    }

    /// The pool the writers use, for work that needs its own transaction (the hand-off sweep).
    pub(crate) fn write_pool(&self) -> &Pool<DB> {
        &self.write
    }

    /// Moves the sender's copy of a message forward (a receipt recorded on the receiver's
    /// shard); resolves to whether it moved.
    pub(crate) async fn apply_status(
        &self,
        sender: &UserId,
        message_id: MessageId,
        status: MessageStatus,
    ) -> Result<Committed<bool>, StoreError> {
        let key = sender.to_string();
        let sender = sender.clone();
        self.enqueue(&key, |slot| Job::ApplyStatus { sender, message_id, status, slot }).await
    }

    /// Removes hand-offs completed on their target shards.
    pub(crate) async fn remove_handoffs(&self, ids: Vec<String>) -> Result<Committed<()>, StoreError> {
        self.enqueue("handoffs", |slot| Job::RemoveHandoffs(ids, slot)).await
    }

    /// Queues a job on the writer that owns `key` and returns its commit.
    async fn enqueue<T>(&self, key: &str, job: impl FnOnce(Slot<T>) -> Job) -> Result<Committed<T>, StoreError> {
        let queue = {
            let queues = self.queues.read().unwrap_or_else(PoisonError::into_inner);
            if queues.is_empty() {
                return Err(StoreError::Closed);
            }
            let mut hasher = std::hash::DefaultHasher::new();
            key.hash(&mut hasher);
            let index = usize::try_from(hasher.finish() % queues.len() as u64).unwrap_or(0);
            queues[index].clone()
        };
        let (tx, rx) = oneshot::channel();
        queue.send(job(Slot::new(tx))).await.map_err(|_| StoreError::Closed)?;
        Ok(Committed::new(rx))
    }
}
}

/// Records `placement` in a new database, or checks it against what was recorded.
async fn check_placement<DB>(pool: &Pool<DB>, placement: Placement, description: &str) -> Result<(), StoreError>
where
    DB: Database,
    for<'c> &'c Pool<DB>: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> i64: sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    sqlx::query::<DB>(
        "INSERT INTO shard_info (id, shard_index, shard_count, created_at) VALUES (0, $1, $2, $3) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(i64::from(placement.index))
    .bind(i64::from(placement.count))
    .bind(Timestamp::now().as_millis())
    .execute(pool)
    .await?;
    let (index, count) =
        sqlx::query_as::<DB, (i64, i64)>("SELECT shard_index, shard_count FROM shard_info WHERE id = 0")
            .fetch_one(pool)
            .await?;
    let recorded = (u32::try_from(index).unwrap_or(u32::MAX), u32::try_from(count).unwrap_or(u32::MAX));
    if recorded == (placement.index, placement.count) {
        return Ok(());
    }
    Err(StoreError::ShardMismatch {
        database: description.to_owned(),
        configured_index: placement.index,
        configured_count: placement.count,
        recorded_index: recorded.0,
        recorded_count: recorded.1,
    })
}

/// The partition key of a conversation: the same for both directions, so that its messages are
/// written by one writer, in order.
fn conversation_key(a: &UserId, b: &UserId) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("{lo}\n{hi}")
}

engine! {
#[async_trait]
impl<DB> Store for SqlStore<DB> {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query::<DB>("SELECT 1").execute(&self.read).await.map_err(|e| self.failed(e))?;
        Ok(())
    }

    async fn create_user(&self, user: NewUser) -> Result<Committed<()>, StoreError> {
        let key = user.user_id.to_string();
        self.enqueue(&key, |slot| Job::CreateUser(user, slot)).await
    }

    async fn import_users(&self, users: Vec<NewUser>) -> Result<Committed<ImportReport>, StoreError> {
        self.enqueue("import", |slot| Job::ImportUsers(users, slot)).await
    }

    async fn user(&self, user_id: &UserId) -> Result<Option<super::UserRecord>, StoreError> {
        sqlx::query_as::<DB, UserRow>("SELECT user_id, password_hash, last_seen, presence_visibility FROM users WHERE user_id = $1")
            .bind(user_id.as_str())
            .fetch_optional(&self.read)
            .await.map_err(|e| self.failed(e))?
            .map(UserRow::into_record)
            .transpose()
    }

    async fn append_message(&self, message: NewMessage) -> Result<Committed<AppendOutcome>, StoreError> {
        let key = conversation_key(&message.sender, &message.receiver);
        self.enqueue(&key, |slot| Job::AppendMessage(message, slot)).await
    }

    async fn record_receipt(&self, receipt: Receipt) -> Result<Committed<ReceiptOutcome>, StoreError> {
        let key = receipt.reader.to_string();
        self.enqueue(&key, |slot| Job::RecordReceipt(receipt, slot)).await
    }

    async fn set_presence(&self, user_id: &UserId, online: bool, at: Timestamp) -> Result<Committed<()>, StoreError> {
        let user_id = user_id.to_string();
        let key = user_id.clone();
        self.enqueue(&key, |slot| Job::SetPresence { user_id, online, at, slot }).await
    }

    async fn reset_presence(&self, at: Timestamp) -> Result<Committed<u64>, StoreError> {
        self.enqueue("presence", |slot| Job::ResetPresence(at, slot)).await
    }

    async fn set_presence_visibility(
        &self,
        user_id: &UserId,
        visibility: kith_proto::PresenceVisibility,
    ) -> Result<Committed<bool>, StoreError> {
        let user_id = user_id.to_string();
        let key = user_id.clone();
        self.enqueue(&key, |slot| Job::SetPresenceVisibility { user_id, visibility, slot }).await
    }

    async fn history(
        &self,
        owner: &UserId,
        peer: &UserId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<MessageView>, StoreError> {
        let rows = match before {
            None => {
                sqlx::query_as::<DB, MessageRow>(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages WHERE owner_id = $1 AND peer_id = $2 ORDER BY message_id DESC LIMIT $3"
                ))
                .bind(owner.as_str())
                .bind(peer.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await.map_err(|e| self.failed(e))?
            }
            Some(before) => {
                sqlx::query_as::<DB, MessageRow>(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages WHERE owner_id = $1 AND peer_id = $2 AND message_id < $3 \
                     ORDER BY message_id DESC LIMIT $4"
                ))
                .bind(owner.as_str())
                .bind(peer.as_str())
                .bind(before.to_string().as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await.map_err(|e| self.failed(e))?
            }
        };
        rows.into_iter().rev().map(MessageRow::into_view).collect()
    }

    async fn pending(
        &self,
        owner: &UserId,
        device: DeviceId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<PendingMessage>, StoreError> {
        sqlx::query_as::<DB, MessageRow>(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE seq IN (SELECT seq FROM device_pending \
              WHERE owner_id = $1 AND device_id = $2 AND seq > $3 ORDER BY seq LIMIT $4) ORDER BY seq"
        ))
        .bind(owner.as_str())
        .bind(i64::from(device.0))
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await.map_err(|e| self.failed(e))?
        .into_iter()
        .map(MessageRow::into_pending)
        .collect()
    }

    async fn add_device(&self, user: &UserId, device: DeviceId, at: Timestamp) -> Result<Committed<()>, StoreError> {
        let key = user.to_string();
        let user = user.clone();
        self.enqueue(&key, |slot| Job::AddDevice { user, device, at, slot }).await
    }

    async fn remove_device(&self, user: &UserId, device: DeviceId) -> Result<Committed<bool>, StoreError> {
        let key = user.to_string();
        let user = user.clone();
        self.enqueue(&key, |slot| Job::RemoveDevice { user, device, slot }).await
    }

    async fn devices(&self, user: &UserId) -> Result<Vec<DeviceRecord>, StoreError> {
        sqlx::query_as::<DB, (i64, Option<Vec<u8>>)>(
            "SELECT device_id, identity FROM devices WHERE user_id = $1 ORDER BY device_id",
        )
        .bind(user.as_str())
        .fetch_all(&self.read)
        .await.map_err(|e| self.failed(e))?
        .into_iter()
        .map(|(device_id, identity)| {
            let device_id = u32::try_from(device_id)
                .map_err(|_| StoreError::Corrupt { table: "devices", detail: format!("device id {device_id}") })?;
            Ok(DeviceRecord { device_id: DeviceId(device_id), identity })
        })
        .collect()
    }

    async fn publish_keys(
        &self,
        user: &UserId,
        device: DeviceId,
        keys: PublishedKeys,
    ) -> Result<Committed<PublishOutcome>, StoreError> {
        let key = user.to_string();
        let user = user.clone();
        self.enqueue(&key, |slot| Job::PublishKeys { user, device, keys, slot }).await
    }

    async fn claim_keys(&self, user: &UserId) -> Result<Committed<Vec<ClaimedKeys>>, StoreError> {
        let key = user.to_string();
        let user = user.clone();
        self.enqueue(&key, |slot| Job::ClaimKeys { user, slot }).await
    }

    async fn device_keys(&self, user: &UserId) -> Result<Vec<ClaimedKeys>, StoreError> {
        sqlx::query_as::<DB, (i64, Vec<u8>, Vec<u8>)>(
            "SELECT device_id, identity, signed_prekey FROM devices \
             WHERE user_id = $1 AND identity IS NOT NULL AND signed_prekey IS NOT NULL ORDER BY device_id",
        )
        .bind(user.as_str())
        .fetch_all(&self.read)
        .await.map_err(|e| self.failed(e))?
        .into_iter()
        .map(|(device_id, identity, signed_prekey)| {
            let device_id = u32::try_from(device_id)
                .map_err(|_| StoreError::Corrupt { table: "devices", detail: format!("device id {device_id}") })?;
            Ok(ClaimedKeys { device_id: DeviceId(device_id), identity, signed_prekey, one_time: None })
        })
        .collect()
    }

    async fn prekey_count(&self, user: &UserId, device: DeviceId) -> Result<u32, StoreError> {
        let (count,) =
            sqlx::query_as::<DB, (i64,)>("SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2")
                .bind(user.as_str())
                .bind(i64::from(device.0))
                .fetch_one(&self.read)
                .await.map_err(|e| self.failed(e))?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    async fn trust(&self, op: super::TrustOp) -> Result<Committed<super::TrustOutcome>, StoreError> {
        let key = op.user().to_string();
        self.enqueue(&key, |slot| Job::Trust(op, slot)).await
    }

    async fn trust_records(&self, user: &UserId) -> Result<super::TrustRecords, StoreError> {
        super::trust::records(&self.read, user).await
    }

    async fn conversation_peers(&self, user: &UserId) -> Result<Vec<UserId>, StoreError> {
        sqlx::query_as::<DB, (String,)>("SELECT DISTINCT peer_id FROM messages WHERE owner_id = $1")
            .bind(user.as_str())
            .fetch_all(&self.read)
            .await.map_err(|e| self.failed(e))?
            .into_iter()
            .map(|(peer,)| super::rows::parse_user("messages", &peer))
            .collect()
    }

    async fn apply_remote_receipt(
        &self,
        receipt: RemoteReceipt,
    ) -> Result<Committed<Option<MessageStatus>>, StoreError> {
        let key = receipt.sender.to_string();
        self.enqueue(&key, |slot| Job::ApplyRemoteReceipt(receipt, slot)).await
    }

    async fn enqueue_envelopes(&self, entries: Vec<OutboxEntry>) -> Result<Committed<()>, StoreError> {
        self.enqueue("outbox", |slot| Job::EnqueueEnvelopes(entries, slot)).await
    }

    async fn outbox_batch(&self, destination: &ServerName, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query_as::<DB, (i64, String, String, Vec<u8>, i64)>(
            "SELECT seq, envelope_id, kind, body, created_at FROM outbox WHERE destination = $1 ORDER BY seq LIMIT $2",
        )
        .bind(destination.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await.map_err(|e| self.failed(e))?;
        rows.into_iter()
            .map(|(seq, envelope_id, kind, body, created_at)| {
                let kind = Kind::parse(&kind)
                    .ok_or_else(|| StoreError::Corrupt { table: "outbox", detail: format!("kind {kind:?}") })?;
                let key = OutboxKey { shard: self.placement.index, seq };
                Ok(OutboxRow { key, envelope_id, kind, body, created_at: Timestamp::from_millis(created_at) })
            })
            .collect()
    }

    async fn outbox_remove(&self, destination: &ServerName, keys: Vec<OutboxKey>) -> Result<Committed<()>, StoreError> {
        let seqs = keys.into_iter().filter(|k| k.shard == self.placement.index).map(|k| k.seq).collect();
        let destination = destination.to_string();
        let key = destination.clone();
        self.enqueue(&key, |slot| Job::OutboxRemove { destination, seqs, slot }).await
    }

    async fn outbox_stats(&self) -> Result<Vec<OutboxStats>, StoreError> {
        let rows = sqlx::query_as::<DB, (String, i64, i64)>(
            "SELECT destination, COUNT(*), MIN(created_at) FROM outbox GROUP BY destination ORDER BY destination",
        )
        .fetch_all(&self.read)
        .await.map_err(|e| self.failed(e))?;
        Ok(rows
            .into_iter()
            .map(|(destination, depth, oldest)| OutboxStats {
                destination,
                depth: u64::try_from(depth).unwrap_or(0),
                oldest: Some(Timestamp::from_millis(oldest)),
            })
            .collect())
    }

    async fn resume_handoffs(&self, _older_than: std::time::Duration) -> Result<Vec<Resumed>, StoreError> {
        // One database holds both copies of everything: nothing is ever handed off.
        Ok(Vec::new())
    }

    fn errors(&self) -> Vec<(u32, u64)> {
        vec![(self.placement.index, self.errors.load(Ordering::Relaxed))]
    }

    async fn try_lease(&self, name: &str) -> Result<bool, StoreError> {
        match &self.guard {
            Some(guard) => guard.try_lease(name).await,
            None => Err(StoreError::Config(format!("lease {name}: leases are held on a node's first shard"))),
        }
    }

    async fn close(&self) {
        self.queues.write().unwrap_or_else(PoisonError::into_inner).clear();
        let writers = std::mem::take(&mut *self.writers.lock().unwrap_or_else(PoisonError::into_inner));
        for writer in writers {
            if writer.await.is_err() {
                tracing::error!("a store writer stopped without finishing its queue");
            }
        }
        self.write.close().await;
        self.read.close().await;
    }
}
}
