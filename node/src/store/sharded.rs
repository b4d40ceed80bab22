//! A node's store over several PostgreSQL shards: every row that belongs to a user lives on
//! shard `hash(owner) % N` (see `placement`), so each operation goes to its owner's shard.
//!
//! A local message between users on different shards is two commits on two databases, kept
//! to the promises one commit keeps by the shape the federation outbox has:
//!
//! 1. The sender's shard commits the sender's copy, the idempotency key and a **hand-off** row
//!    (the receiver's copy to write) in one transaction. The message is durable from here.
//! 2. A relay for that pair of shards writes the receiver's copy on the receiver's shard,
//!    idempotently (a copy that exists already stays as it is), in the order the messages
//!    were sent; then the hand-off row is removed.
//! 3. The send is answered once both commits are done, so `sent` means the receiver can read
//!    it. Should the process die between them, the hand-off row stays, and any instance's
//!    sweep ([`Store::resume_handoffs`]) completes it later: never lost, never applied twice.
//!
//! Receipts go the other way the same way: the reader's shard records the receipt and a
//! hand-off that moves the sender's copy forward on the sender's shard.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use kith_proto::{DeviceId, MessageId, MessageStatus, MessageView, ServerName, Timestamp, UserId};
use sqlx::Postgres;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::handoff::{Handoff, message_handoff_id, status_handoff_id};
use super::placement::{shard_of, shard_of_key};
use super::sql::SqlStore;
use super::{
    AppendOutcome, ClaimedKeys, Committed, DeviceRecord, ImportReport, NewMessage, NewUser, OutboxEntry, OutboxKey,
    OutboxRow, OutboxStats, PendingMessage, PublishOutcome, PublishedKeys, Receipt, ReceiptOutcome, Recipient,
    RemoteReceipt, Resumed, Source, Store, StoreError, UserRecord,
};

/// One shard.
type Shard = Arc<SqlStore<Postgres>>;

/// Cross-shard appends queued per direction, waiting for their first commit.
const RELAY_QUEUE: usize = 16_384;

/// Most hand-offs one sweep takes from one shard.
const SWEEP_BATCH: i64 = 256;

/// A cross-shard append between its two commits.
struct Pending {
    first: Committed<AppendOutcome>,
    message: NewMessage,
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// The appends from one shard to another, in the order they were enqueued on the first.
struct Relay {
    /// Held while enqueueing on the source shard and here, so both orders are the same.
    queue: Mutex<Option<mpsc::Sender<Pending>>>,
}

/// The store over shards.
pub(crate) struct ShardedStore {
    shards: Vec<Shard>,
    /// `relays[source][target]`, `None` on the diagonal.
    relays: Vec<Vec<Option<Relay>>>,
    /// Per source shard: ids of hand-offs completed on their target, to remove in bulk.
    /// Emptied on close, so the clean-up tasks end.
    finished: std::sync::Mutex<Vec<mpsc::Sender<String>>>,
    /// This node's server name.
    local: ServerName,
    /// Relays, clean-ups and second commits: `close` waits for them.
    tasks: TaskTracker,
    description: String,
}

impl std::fmt::Debug for ShardedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl ShardedStore {
    /// Serves the node from `shards` (in order: shard `i` is `shards[i]`).
    pub(crate) fn start(shards: Vec<Shard>, local: ServerName) -> Self {
        let tasks = TaskTracker::new();
        let finished = shards
            .iter()
            .map(|shard| {
                let (tx, rx) = mpsc::channel(RELAY_QUEUE);
                tasks.spawn(remove_finished(shard.clone(), rx));
                tx
            })
            .collect::<Vec<mpsc::Sender<String>>>();
        let relays = (0..shards.len())
            .map(|source| {
                (0..shards.len())
                    .map(|target| {
                        (source != target).then(|| {
                            let (tx, rx) = mpsc::channel(RELAY_QUEUE);
                            tasks.spawn(relay(shards[target].clone(), rx, finished[source].clone(), tasks.clone()));
                            Relay { queue: Mutex::new(Some(tx)) }
                        })
                    })
                    .collect()
            })
            .collect();
        let description = format!(
            "postgres, {} shards: {}",
            shards.len(),
            shards.iter().map(|s| s.describe()).collect::<Vec<_>>().join(", ")
        );
        Self { shards, relays, finished: std::sync::Mutex::new(finished), local, tasks, description }
    }

    fn count(&self) -> u32 {
        u32::try_from(self.shards.len()).unwrap_or(u32::MAX)
    }

    fn index_of(&self, user: &UserId) -> usize {
        shard_of(user, self.count()) as usize
    }

    /// The shard holding `user`'s rows.
    fn shard(&self, user: &UserId) -> &Shard {
        &self.shards[self.index_of(user)]
    }

    /// The shard that queues envelopes of no user's (presence) for `destination`.
    fn shard_for_destination(&self, destination: &ServerName) -> usize {
        shard_of_key(destination.as_str(), self.count()) as usize
    }

    /// Sends a message whose receiver's rows are on another shard than its sender's.
    async fn append_across(
        &self,
        message: NewMessage,
        source: usize,
        target: usize,
    ) -> Result<Committed<AppendOutcome>, StoreError> {
        let Some(relay) = &self.relays[source][target] else {
            return self.shards[source].append_message(message).await;
        };
        let queue = relay.queue.lock().await;
        let Some(queue) = queue.as_ref() else {
            return Err(StoreError::Closed);
        };
        let first = self.shards[source].append_message(message.clone()).await?;
        let (reply, answer) = oneshot::channel();
        queue.send(Pending { first, message, reply }).await.map_err(|_| StoreError::Closed)?;
        Ok(Committed::new(answer))
    }

    /// Completes the hand-offs of `source` older than `older_than`: rows are locked while
    /// applied (`FOR UPDATE SKIP LOCKED`), so instances sweeping at once share the work.
    async fn sweep(&self, source: usize, older_than: Duration) -> Result<Vec<Resumed>, StoreError> {
        let shard = &self.shards[source];
        let cutoff = Timestamp::now().as_millis() - i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let mut tx = shard.write_pool().begin().await?;
        let rows = sqlx::query_as::<Postgres, (i64, i64, Vec<u8>)>(
            "SELECT seq, target_shard, body FROM handoffs WHERE created_at < $1 ORDER BY seq LIMIT $2 \
             FOR UPDATE SKIP LOCKED",
        )
        .bind(cutoff)
        .bind(SWEEP_BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let mut resumed = Vec::new();
        let mut done = Vec::new();
        for (seq, target, body) in rows {
            let Some(target) = usize::try_from(target).ok().and_then(|t| self.shards.get(t)) else {
                warn!(seq, target, "a hand-off names a shard this node does not have; left in place");
                continue;
            };
            let handoff = match Handoff::decode(&body) {
                Ok(handoff) => handoff,
                Err(e) => {
                    // A bug or a hand-edited row: left in place (and reported), not retried in
                    // a loop that would hold every later one back.
                    warn!(seq, error = %e, "a hand-off that cannot be read; left in place");
                    continue;
                }
            };
            match apply(target, handoff).await {
                Ok(Some(outcome)) => resumed.push(outcome),
                Ok(None) => {}
                Err(e) => {
                    // Left for the next sweep; the ones before it are done.
                    warn!(error = %e, "a hand-off could not be completed yet");
                    break;
                }
            }
            done.push(seq);
        }
        if !done.is_empty() {
            sqlx::query::<Postgres>("DELETE FROM handoffs WHERE seq = ANY($1)").bind(&done).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        if !done.is_empty() {
            debug!(shard = source, completed = done.len(), "hand-offs resumed");
        }
        Ok(resumed)
    }
}

/// Writes a hand-off's copy on its target shard; says what it did when that is news.
async fn apply(target: &Shard, handoff: Handoff) -> Result<Option<Resumed>, StoreError> {
    match handoff {
        Handoff::Message { message_id, sender_id, receiver_id, content, timestamp } => {
            let view = MessageView {
                message_id,
                sender_id: sender_id.clone(),
                receiver_id: receiver_id.clone(),
                message: content.clone(),
                timestamp,
                status: MessageStatus::Sent,
            };
            let message = NewMessage {
                message_id,
                sender: sender_id,
                receiver: receiver_id,
                content,
                timestamp,
                from: Source::OtherShard,
                to: Recipient::User,
            };
            // Pushed only if this sweep wrote it: a copy the relay wrote was pushed by the send.
            match target.append_message(message).await?.await? {
                AppendOutcome::Stored { .. } => Ok(Some(Resumed::Message(view))),
                AppendOutcome::Duplicate { .. } => Ok(None),
            }
        }
        Handoff::Status { message_id, sender_id, receiver_id, status, at } => {
            let moved = target.apply_status(&sender_id, message_id, status).await?.await?;
            Ok(moved.then_some(Resumed::Status { sender: sender_id, receiver: receiver_id, message_id, status, at }))
        }
    }
}

/// Runs one direction's relay: waits for each message's first commit, in order, enqueues its
/// receiver's copy on the target shard (in the same order), and answers the send once that
/// commits too.
async fn relay(
    target: Shard,
    mut pending: mpsc::Receiver<Pending>,
    finished: mpsc::Sender<String>,
    tasks: TaskTracker,
) {
    while let Some(Pending { first, mut message, reply }) = pending.recv().await {
        let outcome = first.await;
        let Ok(stored @ AppendOutcome::Stored { .. }) = outcome else {
            // A repeat (its first attempt's hand-off is completed by the sweep if need be) or
            // a failure: nothing to hand off.
            let _ = reply.send(outcome);
            continue;
        };
        let id = message_handoff_id(message.message_id);
        message.from = Source::OtherShard;
        match target.append_message(message).await {
            Ok(second) => {
                let finished = finished.clone();
                tasks.spawn(async move {
                    match second.await {
                        Ok(_) => {
                            let _ = finished.send(id).await;
                        }
                        Err(e) => warn!(error = %e, "receiver's copy not stored yet; the hand-off sweep will"),
                    }
                    // Durable since the first commit either way.
                    let _ = reply.send(Ok(stored));
                });
            }
            Err(e) => {
                warn!(error = %e, "receiver's copy not queued; the hand-off sweep will store it");
                let _ = reply.send(Ok(stored));
            }
        }
    }
}

/// Removes completed hand-offs of one shard, many per commit.
async fn remove_finished(shard: Shard, mut finished: mpsc::Receiver<String>) {
    let mut ids = Vec::new();
    while finished.recv_many(&mut ids, 4096).await > 0 {
        match shard.remove_handoffs(std::mem::take(&mut ids)).await {
            Ok(committed) => {
                if let Err(e) = committed.await {
                    debug!(error = %e, "completed hand-offs not removed; the sweep will find them done");
                }
            }
            Err(e) => debug!(error = %e, "completed hand-offs not removed; the sweep will find them done"),
        }
    }
}

/// One commit made of several shards' commits: resolves once all have, with their results
/// folded into `init` by `fold`; the first failure wins.
fn gather<T, A>(tasks: &TaskTracker, commits: Vec<Committed<T>>, init: A, fold: fn(A, T) -> A) -> Committed<A>
where
    T: Send + 'static,
    A: Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    tasks.spawn(async move {
        let mut folded = init;
        for commit in commits {
            match commit.await {
                Ok(part) => folded = fold(folded, part),
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let _ = reply.send(Ok(folded));
    });
    Committed::new(answer)
}

#[async_trait]
impl Store for ShardedStore {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        for shard in &self.shards {
            shard.ping().await?;
        }
        Ok(())
    }

    async fn create_user(&self, user: NewUser) -> Result<Committed<()>, StoreError> {
        self.shard(&user.user_id).create_user(user).await
    }

    async fn import_users(&self, users: Vec<NewUser>) -> Result<Committed<ImportReport>, StoreError> {
        let mut by_shard: HashMap<usize, Vec<NewUser>> = HashMap::new();
        for user in users {
            by_shard.entry(self.index_of(&user.user_id)).or_default().push(user);
        }
        let mut commits = Vec::new();
        for (index, users) in by_shard {
            commits.push(self.shards[index].import_users(users).await?);
        }
        Ok(gather(&self.tasks, commits, ImportReport::default(), |sum, part| ImportReport {
            created: sum.created + part.created,
            skipped: sum.skipped + part.skipped,
        }))
    }

    async fn user(&self, user_id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.shard(user_id).user(user_id).await
    }

    async fn append_message(&self, message: NewMessage) -> Result<Committed<AppendOutcome>, StoreError> {
        match (&message.from, &message.to) {
            (Source::Device { .. }, Recipient::User) => {
                let (source, target) = (self.index_of(&message.sender), self.index_of(&message.receiver));
                if source == target {
                    self.shards[source].append_message(message).await
                } else {
                    self.append_across(message, source, target).await
                }
            }
            (Source::Device { .. }, Recipient::Peer(_)) => self.shard(&message.sender).append_message(message).await,
            (Source::Peer(_) | Source::OtherShard, _) => self.shard(&message.receiver).append_message(message).await,
        }
    }

    async fn record_receipt(&self, receipt: Receipt) -> Result<Committed<ReceiptOutcome>, StoreError> {
        let reader_shard = self.index_of(&receipt.reader);
        let finished = self.finished.lock().unwrap_or_else(PoisonError::into_inner).get(reader_shard).cloned();
        let finished = finished.ok_or(StoreError::Closed)?;
        let committed = self.shards[reader_shard].record_receipt(receipt.clone()).await?;
        let shards = self.shards.clone();
        let (count, local) = (self.count(), self.local.clone());
        let (reply, answer) = oneshot::channel();
        self.tasks.spawn(async move {
            let outcome = committed.await;
            if let Ok(ReceiptOutcome { sender, advanced_to: Some(status) }) = &outcome {
                let sender_shard = shard_of(sender, count) as usize;
                if sender_shard != reader_shard && sender.is_on(&local) && *sender != receipt.reader {
                    // The reader's shard holds a hand-off for the sender's copy: apply it now.
                    let moved = match shards[sender_shard].apply_status(sender, receipt.message_id, *status).await {
                        Ok(moved) => moved.await,
                        Err(e) => Err(e),
                    };
                    match moved {
                        Ok(_) => {
                            let _ = finished.send(status_handoff_id(receipt.message_id, *status)).await;
                        }
                        Err(e) => warn!(error = %e, "sender's copy not moved yet; the hand-off sweep will"),
                    }
                }
            }
            let _ = reply.send(outcome);
        });
        Ok(Committed::new(answer))
    }

    async fn set_presence(&self, user_id: &UserId, online: bool, at: Timestamp) -> Result<Committed<()>, StoreError> {
        self.shard(user_id).set_presence(user_id, online, at).await
    }

    async fn set_presence_visibility(
        &self,
        user_id: &UserId,
        visibility: kith_proto::PresenceVisibility,
    ) -> Result<Committed<bool>, StoreError> {
        self.shard(user_id).set_presence_visibility(user_id, visibility).await
    }

    async fn reset_presence(&self, at: Timestamp) -> Result<Committed<u64>, StoreError> {
        let mut commits = Vec::new();
        for shard in &self.shards {
            commits.push(shard.reset_presence(at).await?);
        }
        Ok(gather(&self.tasks, commits, 0, |total, n| total + n))
    }

    async fn history(
        &self,
        owner: &UserId,
        peer: &UserId,
        before: Option<MessageId>,
        limit: u32,
    ) -> Result<Vec<MessageView>, StoreError> {
        self.shard(owner).history(owner, peer, before, limit).await
    }

    async fn pending(
        &self,
        owner: &UserId,
        device: DeviceId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<PendingMessage>, StoreError> {
        self.shard(owner).pending(owner, device, after_seq, limit).await
    }

    async fn add_device(&self, user: &UserId, device: DeviceId, at: Timestamp) -> Result<Committed<()>, StoreError> {
        self.shard(user).add_device(user, device, at).await
    }

    async fn remove_device(&self, user: &UserId, device: DeviceId) -> Result<Committed<bool>, StoreError> {
        self.shard(user).remove_device(user, device).await
    }

    async fn devices(&self, user: &UserId) -> Result<Vec<DeviceRecord>, StoreError> {
        self.shard(user).devices(user).await
    }

    async fn publish_keys(
        &self,
        user: &UserId,
        device: DeviceId,
        keys: PublishedKeys,
    ) -> Result<Committed<PublishOutcome>, StoreError> {
        self.shard(user).publish_keys(user, device, keys).await
    }

    async fn claim_keys(&self, user: &UserId) -> Result<Committed<Vec<ClaimedKeys>>, StoreError> {
        self.shard(user).claim_keys(user).await
    }

    async fn device_keys(&self, user: &UserId) -> Result<Vec<ClaimedKeys>, StoreError> {
        self.shard(user).device_keys(user).await
    }

    async fn prekey_count(&self, user: &UserId, device: DeviceId) -> Result<u32, StoreError> {
        self.shard(user).prekey_count(user, device).await
    }

    async fn trust(&self, op: super::TrustOp) -> Result<Committed<super::TrustOutcome>, StoreError> {
        self.shard(op.user()).trust(op).await
    }

    async fn trust_records(&self, user: &UserId) -> Result<super::TrustRecords, StoreError> {
        self.shard(user).trust_records(user).await
    }

    async fn conversation_peers(&self, user: &UserId) -> Result<Vec<UserId>, StoreError> {
        self.shard(user).conversation_peers(user).await
    }

    async fn apply_remote_receipt(
        &self,
        receipt: RemoteReceipt,
    ) -> Result<Committed<Option<MessageStatus>>, StoreError> {
        self.shard(&receipt.sender).apply_remote_receipt(receipt).await
    }

    async fn enqueue_envelopes(&self, entries: Vec<OutboxEntry>) -> Result<Committed<()>, StoreError> {
        let mut by_shard: HashMap<usize, Vec<OutboxEntry>> = HashMap::new();
        for entry in entries {
            by_shard.entry(self.shard_for_destination(&entry.destination)).or_default().push(entry);
        }
        let mut commits = Vec::new();
        for (index, entries) in by_shard {
            commits.push(self.shards[index].enqueue_envelopes(entries).await?);
        }
        Ok(gather(&self.tasks, commits, (), |(), ()| ()))
    }

    async fn outbox_batch(&self, destination: &ServerName, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        // Each shard's rows in its own order, taken in turn, so no shard starves another.
        let mut per_shard = Vec::with_capacity(self.shards.len());
        for shard in &self.shards {
            per_shard.push(shard.outbox_batch(destination, limit).await?.into_iter());
        }
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut rows = Vec::new();
        while rows.len() < limit {
            let before = rows.len();
            for shard in &mut per_shard {
                if rows.len() < limit
                    && let Some(row) = shard.next()
                {
                    rows.push(row);
                }
            }
            if rows.len() == before {
                break;
            }
        }
        Ok(rows)
    }

    async fn outbox_remove(&self, destination: &ServerName, keys: Vec<OutboxKey>) -> Result<Committed<()>, StoreError> {
        let mut by_shard: HashMap<u32, Vec<OutboxKey>> = HashMap::new();
        for key in keys {
            by_shard.entry(key.shard).or_default().push(key);
        }
        let mut commits = Vec::new();
        for (index, keys) in by_shard {
            let shard = self.shards.get(index as usize).ok_or_else(|| StoreError::Corrupt {
                table: "outbox",
                detail: format!("shard {index} of {}", self.shards.len()),
            })?;
            commits.push(shard.outbox_remove(destination, keys).await?);
        }
        Ok(gather(&self.tasks, commits, (), |(), ()| ()))
    }

    async fn outbox_stats(&self) -> Result<Vec<OutboxStats>, StoreError> {
        let mut merged: HashMap<String, OutboxStats> = HashMap::new();
        for shard in &self.shards {
            for stats in shard.outbox_stats().await? {
                let entry = merged.entry(stats.destination.clone()).or_insert(OutboxStats {
                    destination: stats.destination.clone(),
                    depth: 0,
                    oldest: None,
                });
                entry.depth += stats.depth;
                entry.oldest = match (entry.oldest, stats.oldest) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        let mut stats: Vec<OutboxStats> = merged.into_values().collect();
        stats.sort_by(|a, b| a.destination.cmp(&b.destination));
        Ok(stats)
    }

    async fn resume_handoffs(&self, older_than: Duration) -> Result<Vec<Resumed>, StoreError> {
        let mut resumed = Vec::new();
        for source in 0..self.shards.len() {
            resumed.extend(self.sweep(source, older_than).await?);
        }
        Ok(resumed)
    }

    fn errors(&self) -> Vec<(u32, u64)> {
        self.shards.iter().flat_map(|shard| shard.errors()).collect()
    }

    async fn try_lease(&self, name: &str) -> Result<bool, StoreError> {
        self.shards[0].try_lease(name).await
    }

    async fn close(&self) {
        // Relays first (they write to other shards), then the clean-ups they feed, then the
        // shards.
        for relay in self.relays.iter().flatten().flatten() {
            relay.queue.lock().await.take();
        }
        self.finished.lock().unwrap_or_else(PoisonError::into_inner).clear();
        self.tasks.close();
        self.tasks.wait().await;
        for shard in &self.shards {
            shard.close().await;
        }
    }
}
