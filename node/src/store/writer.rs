//! The group-commit writer: one task per partition takes every operation waiting in its queue,
//! applies them in one transaction, commits once, then answers each.
//!
//! An operation that fails on its own terms (a taken username, an unknown message) answers
//! with its error and the batch goes on. A database error aborts the transaction; the writer
//! then retries each operation of the batch in a transaction of its own, so one bad operation
//! never fails its neighbours.
//!
//! The SQL lives elsewhere: the hot path (appends, receipts) in bulk runs ([`super::bulk`]),
//! everything else one operation at a time ([`super::ops`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use kith_proto::{DeviceId, MessageId, MessageStatus, ServerName, Timestamp, UserId};
use sqlx::{Pool, Transaction};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::ack_hold::{Busy, hold_acks};
use super::bulk::{append_messages, apply_remote_receipts, record_receipts, remove_outbox_rows};
use super::engine::engine;
use super::placement::Placement;
use super::{
    AppendOutcome, ClaimedKeys, ImportReport, NewMessage, NewUser, OutboxEntry, PublishOutcome, PublishedKeys, Receipt,
    ReceiptOutcome, RemoteReceipt, StoreError,
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

    /// Keeps the operation's result for the commit to settle, or hands back an error that
    /// aborts the whole batch.
    pub(super) fn keep(&mut self, result: Result<T, StoreError>) -> Result<(), StoreError> {
        match result {
            Err(e) if e.aborts_batch() => Err(e),
            result => {
                self.result = Some(result);
                Ok(())
            }
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
    SetPresence {
        user_id: String,
        online: bool,
        at: Timestamp,
        slot: Slot<()>,
    },
    ResetPresence(Timestamp, Slot<u64>),
    SetPresenceVisibility {
        user_id: String,
        visibility: kith_proto::PresenceVisibility,
        slot: Slot<bool>,
    },
    AddDevice {
        user: UserId,
        device: DeviceId,
        at: Timestamp,
        slot: Slot<()>,
    },
    RemoveDevice {
        user: UserId,
        device: DeviceId,
        slot: Slot<bool>,
    },
    PublishKeys {
        user: UserId,
        device: DeviceId,
        keys: PublishedKeys,
        slot: Slot<PublishOutcome>,
    },
    ClaimKeys {
        user: UserId,
        slot: Slot<Vec<ClaimedKeys>>,
    },
    ApplyRemoteReceipt(RemoteReceipt, Slot<Option<MessageStatus>>),
    EnqueueEnvelopes(Vec<OutboxEntry>, Slot<()>),
    OutboxRemove {
        destination: String,
        seqs: Vec<i64>,
        slot: Slot<()>,
    },
    /// The sender's copy, on this shard, of a message whose receiver's shard recorded a receipt.
    ApplyStatus {
        sender: UserId,
        message_id: MessageId,
        status: MessageStatus,
        slot: Slot<bool>,
    },
    /// Hand-offs completed on their target shards.
    RemoveHandoffs(Vec<String>, Slot<()>),
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
            Self::SetPresenceVisibility { slot, .. } => settle(slot, failure),
            Self::AddDevice { slot, .. } => settle(slot, failure),
            Self::RemoveDevice { slot, .. } => settle(slot, failure),
            Self::PublishKeys { slot, .. } => settle(slot, failure),
            Self::ClaimKeys { slot, .. } => settle(slot, failure),
            Self::ApplyRemoteReceipt(_, slot) => settle(slot, failure),
            Self::EnqueueEnvelopes(_, slot) => settle(slot, failure),
            Self::OutboxRemove { slot, .. } => settle(slot, failure),
            Self::ApplyStatus { slot, .. } => settle(slot, failure),
            Self::RemoveHandoffs(_, slot) => settle(slot, failure),
            Self::Trust(_, slot) => settle(slot, failure),
        }
    }

    /// Whether its commit must be on disk before it is answered. All must but two, whose loss
    /// in a power cut (never in a crash, which leaves the page cache to the kernel) only makes
    /// something come again that its receiver drops as a repeat. A local device's ack (a
    /// `delivered` receipt): the message is still queued for the device and comes again, which
    /// every client drops by its id and acks again. The removal of envelopes a peer acked: they
    /// are sent again, and the peer acks them again without applying them twice (its inbox
    /// keeps `(origin, id)`). A `read` waits: a client does not say it again, so losing it
    /// would leave the sender's copy at `delivered` for good. A send answered `sent`, an envelope or a
    /// receipt acked to another node, an account, a key: each promises something to someone
    /// who will not ask again, so each waits for the disk. At low rates, where every message
    /// and every ack is a commit of its own, this halves the `fsync`s per message.
    pub(super) fn must_reach_disk(&self) -> bool {
        !matches!(self, Self::RecordReceipt(receipt, _) if receipt.status == MessageStatus::Delivered)
            && !matches!(self, Self::OutboxRemove { .. })
    }

    /// Whether this may wait for the next commit ([`super::ack_hold`]): a local device's `delivered`
    /// ack. Nobody waits on its commit but the sender's `delivered` tick, it does not wait for
    /// the disk anyway ([`Self::must_reach_disk`]), and should it be lost, the message is only
    /// delivered again (the client drops the repeat by its id).
    pub(super) fn may_wait(&self) -> bool {
        matches!(self, Self::RecordReceipt(receipt, _) if receipt.status == MessageStatus::Delivered)
    }

    /// Whether this is one of the hot-path kinds applied in bulk runs.
    pub(super) fn is_hot(&self) -> bool {
        matches!(
            self,
            Self::AppendMessage(..)
                | Self::RecordReceipt(..)
                | Self::ApplyRemoteReceipt(..)
                | Self::OutboxRemove { .. }
        )
    }
}

impl StoreError {
    /// Whether this error poisons the transaction it happened in.
    fn aborts_batch(&self) -> bool {
        matches!(
            self,
            Self::Database(_)
                | Self::Sqlite(_)
                | Self::Migrate(_)
                | Self::Closed
                | Self::Config(_)
                | Self::WriteFailed(_)
        )
    }
}

/// Whether a transaction holding `batch` must be on disk before its answers go out (see
/// [`Job::must_reach_disk`]).
pub(super) fn must_reach_disk(batch: &[Job]) -> bool {
    batch.iter().any(Job::must_reach_disk)
}

pub(super) fn settle_all(batch: &mut [Job], failure: Option<&str>) {
    for job in batch {
        job.settle(failure);
    }
}

pub(super) type Tx<DB> = Transaction<'static, DB>;

/// One partition's writer: owns its queue's consumer end and borrows connections from `pool`.
#[derive(Debug)]
pub(crate) struct Writer<DB: sqlx::Database> {
    pub(crate) pool: Pool<DB>,
    pub(crate) max_batch: usize,
    /// This node's server name: a receipt for a sender elsewhere becomes an envelope.
    pub(crate) local: ServerName,
    /// Which shard this is: the other half of a message or receipt whose other owner lives
    /// on another shard becomes a hand-off.
    pub(crate) placement: Placement,
    /// Failed group commits, shared with the store for `/metrics`.
    pub(crate) errors: Arc<AtomicU64>,
    /// The statement that lets the transaction it runs in commit without waiting for the disk,
    /// run in a transaction that holds nothing [`Job::must_reach_disk`]; `None` where the
    /// engine has none or every commit waits anyway.
    pub(crate) relaxed_commit: Option<&'static str>,
}

/// What a writer loop drives: something that applies a batch of operations in one
/// transaction.
pub(crate) trait Commit {
    /// Whether one transaction can hold operations of every kind. The SQLite writer applies
    /// messages and receipts on a connection of its own and everything else through sqlx, so
    /// the loop gives it each stretch of the two apart.
    const MIXES_KINDS: bool;

    /// Applies `batch` in one transaction and answers every job once it has committed. On
    /// error nothing is answered and nothing is committed.
    async fn commit(&mut self, batch: &mut [Job]) -> Result<(), StoreError>;
}

/// Runs one writer until its queue closes, then returns after the last commit. A batch that
/// fails is retried one operation at a time, so one bad operation never fails its neighbours.
pub(crate) async fn run<C: Commit>(
    mut writer: C,
    mut queue: mpsc::Receiver<Job>,
    max_batch: usize,
    errors: &AtomicU64,
) {
    let mut batch = Vec::with_capacity(max_batch);
    let mut busy = Busy::default();
    while queue.recv_many(&mut batch, max_batch).await > 0 {
        if busy.has_time_to_spare() {
            hold_acks(&mut queue, &mut batch, max_batch, Job::may_wait).await;
        }
        let started = tokio::time::Instant::now();
        debug!(ops = batch.len(), "group commit");
        group_hot_path(&mut batch);
        if C::MIXES_KINDS {
            commit_or_retry(&mut writer, &mut batch, errors).await;
        } else {
            for stretch in runs_by(&batch, Job::is_hot) {
                commit_or_retry(&mut writer, &mut batch[stretch], errors).await;
            }
        }
        busy.record(started);
        batch.clear();
    }
}

async fn commit_or_retry<C: Commit>(writer: &mut C, batch: &mut [Job], errors: &AtomicU64) {
    let Err(e) = writer.commit(batch).await else { return };
    errors.fetch_add(1, Ordering::Relaxed);
    if batch.len() == 1 {
        warn!(error = %e, "write failed");
        settle_all(batch, Some(&e.to_string()));
        return;
    }
    warn!(error = %e, ops = batch.len(), "group commit failed; retrying its operations one by one");
    for job in batch {
        let single = std::slice::from_mut(job);
        if let Err(e) = writer.commit(single).await {
            settle_all(single, Some(&e.to_string()));
        }
    }
}

/// Runs `writer` on a thread and runtime of its own (with an I/O driver when its connections
/// need one). Each statement of a group commit is a round trip after which the writer must run
/// again at once; on the shared runtime it would wait behind the WebSocket work, and profiles
/// showed that wait to be half of every commit. Returns what resolves when it has stopped.
pub(crate) fn spawn<C: Commit + Send + 'static>(
    writer: C,
    queue: mpsc::Receiver<Job>,
    max_batch: usize,
    errors: Arc<AtomicU64>,
    io: bool,
) -> Result<oneshot::Receiver<()>, StoreError> {
    let (done, stopped) = oneshot::channel();
    let mut runtime = tokio::runtime::Builder::new_current_thread();
    runtime.enable_time();
    if io {
        runtime.enable_io();
    }
    let runtime = runtime.build().map_err(|e| StoreError::Config(format!("cannot start a store writer: {e}")))?;
    std::thread::Builder::new()
        .name("kith-writer".into())
        .spawn(move || {
            runtime.block_on(run(writer, queue, max_batch, &errors));
            let _ = done.send(());
        })
        .map_err(|e| StoreError::Config(format!("cannot start a store writer thread: {e}")))?;
    Ok(stopped)
}

engine! {
impl<DB> Writer<DB> {
    /// Runs this writer on its own thread (see [`spawn`]).
    pub(crate) fn spawn(self, queue: mpsc::Receiver<Job>) -> Result<oneshot::Receiver<()>, StoreError> {
        let (max_batch, errors) = (self.max_batch, self.errors.clone());
        spawn(self, queue, max_batch, errors, true)
    }
}
}

engine! {
impl<DB> Commit for Writer<DB> {
    const MIXES_KINDS: bool = true;

    async fn commit(&mut self, batch: &mut [Job]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(relaxed) = self.relaxed_commit.filter(|_| !must_reach_disk(batch)) {
            sqlx::query(relaxed).execute(&mut *tx).await?;
        }
        for range in runs_by(batch, std::mem::discriminant) {
            let run = &mut batch[range];
            match &run[0] {
                Job::AppendMessage(..) => append_messages(&mut tx, self.placement, run).await?,
                Job::RecordReceipt(..) => record_receipts(&mut tx, &self.local, self.placement, run).await?,
                Job::ApplyRemoteReceipt(..) => apply_remote_receipts(&mut tx, run).await?,
                Job::OutboxRemove { .. } => remove_outbox_rows(&mut tx, run).await?,
                _ => {
                    for job in run {
                        Self::apply_one(&mut tx, job).await?;
                    }
                }
            }
        }
        tx.commit().await?;
        settle_all(batch, None);
        Ok(())
    }
}
}

/// The longest runs of consecutive operations with the same `key`, in order (by kind: each
/// applies as one bulk run).
pub(super) fn runs_by<K: PartialEq>(batch: &[Job], key: impl Fn(&Job) -> K) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < batch.len() {
        let first = key(&batch[start]);
        let end = batch[start..].iter().position(|job| key(job) != first).map_or(batch.len(), |n| start + n);
        runs.push(start..end);
        start = end;
    }
    runs
}

/// Reorders each stretch of appends and receipts so that its appends come first, then its
/// local receipts, then receipts from other nodes, each kind in its own order, so that they
/// apply as three long bulk runs instead of many short ones. Safe because a receipt is only
/// ever for a message committed in an earlier batch (it is pushed, or sent to the other node,
/// after its commit, and acked after that), appends do not depend on receipts, and the two
/// kinds of receipt move different copies (a local receipt's sender copies are of messages to
/// local users, a remote receipt's of messages to users of other nodes). Other operations
/// stay where they are and bound the stretches.
pub(super) fn group_hot_path(batch: &mut [Job]) {
    let mut start = 0;
    while start < batch.len() {
        let end = batch[start..].iter().position(|job| !job.is_hot()).map_or(batch.len(), |n| start + n);
        // Stable: the order within each kind is kept.
        batch[start..end].sort_by_key(|job| match job {
            Job::AppendMessage(..) => 0,
            Job::RecordReceipt(..) => 1,
            Job::ApplyRemoteReceipt(..) => 2,
            _ => 3,
        });
        start = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use kith_proto::{DeviceId, MessageId, MessageStatus, ServerName, Timestamp, UserId};
    use tokio::sync::oneshot;

    use super::{Job, Slot, must_reach_disk};
    use crate::store::{InboxKey, NewMessage, Receipt, Recipient, RemoteReceipt, Source};

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn slot<T>() -> Slot<T> {
        Slot::new(oneshot::channel().0)
    }

    fn local_receipt_of(status: MessageStatus) -> Job {
        let receipt = Receipt {
            reader: user("bob@here"),
            device: DeviceId(0),
            message_id: MessageId::now(),
            status,
            at: Timestamp::now(),
        };
        Job::RecordReceipt(receipt, slot())
    }

    fn local_receipt() -> Job {
        local_receipt_of(MessageStatus::Delivered)
    }

    fn message() -> Job {
        let message = NewMessage {
            message_id: MessageId::now(),
            sender: user("alice@here"),
            receiver: user("bob@here"),
            content: "hi".into(),
            timestamp: Timestamp::now(),
            from: Source::Device { device: DeviceId(0), client_message_id: None },
            to: Recipient::User,
        };
        Job::AppendMessage(message, slot())
    }

    fn remote_receipt() -> Job {
        let origin = ServerName::parse("there").unwrap_or_else(|e| panic!("{e}"));
        let receipt = RemoteReceipt {
            sender: user("alice@here"),
            receiver: user("carol@there"),
            message_id: MessageId::now(),
            status: MessageStatus::Read,
            at: Timestamp::now(),
            received: InboxKey { origin, envelope_id: "e1".into() },
        };
        Job::ApplyRemoteReceipt(receipt, slot())
    }

    #[test]
    fn only_a_commit_of_local_acks_and_outbox_removals_alone_may_skip_waiting_for_the_disk() {
        assert!(!must_reach_disk(&[local_receipt()]));
        assert!(!must_reach_disk(&[local_receipt(), local_receipt()]));
        // A client says `read` once: losing it would leave the sender's copy behind.
        assert!(must_reach_disk(&[local_receipt_of(MessageStatus::Read)]));
        assert!(must_reach_disk(&[local_receipt(), local_receipt_of(MessageStatus::Read)]));
        // A send is answered `sent` only once it is on disk, whatever shares its commit.
        assert!(must_reach_disk(&[message()]));
        assert!(must_reach_disk(&[local_receipt(), message(), local_receipt()]));
        // A receipt from another node is acked to it after the commit: the node will not send
        // it again.
        assert!(must_reach_disk(&[remote_receipt()]));
        assert!(must_reach_disk(&[local_receipt(), remote_receipt()]));
        // A peer's acked envelopes, lost from the outbox's removal, are sent again and deduplicated.
        let removal = || Job::OutboxRemove { destination: "there".into(), seqs: vec![1], slot: slot() };
        assert!(!must_reach_disk(&[removal()]));
        assert!(!must_reach_disk(&[local_receipt(), removal(), local_receipt()]));
        assert!(must_reach_disk(&[removal(), message()]));
        let bookkeeping = Job::RemoveHandoffs(vec!["h1".into()], slot());
        assert!(must_reach_disk(&[local_receipt(), bookkeeping]));
    }

    #[test]
    fn only_a_local_delivered_ack_may_wait_for_the_next_commit() {
        assert!(local_receipt().may_wait());
        // A `read` must reach the disk; a message's `sent` and a peer's receipt are awaited.
        assert!(!local_receipt_of(MessageStatus::Read).may_wait());
        assert!(!message().may_wait());
        assert!(!remote_receipt().may_wait());
        // The outbox pump awaits its removal before it reads the next batch.
        let removal = Job::OutboxRemove { destination: "there".into(), seqs: vec![1], slot: slot() };
        assert!(!removal.may_wait());
    }
}
