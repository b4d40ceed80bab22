//! The SQLite writer: messages and receipts committed on a connection the writer's thread owns.
//!
//! Through sqlx, every statement of a group commit is a round trip to sqlx's worker thread for
//! the connection, and every row it returns another hand-off: at low rates, where each
//! message and each receipt is a commit of its own, those thread switches (about 70 per
//! message) were most of a message's CPU (docs/benchmarks.md). Here the statements run on the
//! writer's own thread, so a commit costs its SQLite work, its `fsync` and one hand-off in and
//! one out (the outbox's removals of acked envelopes ride along). The rare operations
//! (accounts, devices, keys, presence, the rest of the outbox's bookkeeping)
//! still go through sqlx on the store's write pool; the loop gives this writer each stretch of
//! the two kinds apart ([`Commit::MIXES_KINDS`]), and being one thread, it never has both
//! connections in a transaction at once.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use sqlx::Sqlite;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::bulk::{append_messages, apply_remote_receipts, record_receipts, remove_outbox_rows};
use super::durability::sqlite_level;
use super::sqlite::{BUSY_TIMEOUT, PRAGMAS};
use super::sqlite_checkpoint::{BACKSTOP_PAGES, Checkpointer};
use super::writer::{Commit, Job, Writer, must_reach_disk, runs_by, settle_all, spawn};

/// The one writer of an SQLite store.
#[derive(Debug)]
pub(crate) struct SqliteWriter {
    /// Messages and receipts.
    conn: Connection,
    /// Everything else, and the writer's settings.
    others: Writer<Sqlite>,
    /// Checkpoints the WAL while the writer runs, and says when the writer should finish a
    /// checkpoint so that the WAL starts over; stops with it.
    checkpointer: Checkpointer,
    /// Whether `conn` is at `synchronous=FULL` (each commit waits for its `fsync`) rather than
    /// `NORMAL` (set for a commit of local devices' acks and outbox removals alone: see
    /// [`Job::must_reach_disk`]).
    synchronous_full: bool,
}

impl SqliteWriter {
    /// Opens the writer's own connection to the (migrated) database at `path`, with the same
    /// settings as the store's sqlx connections ([`PRAGMAS`]; `synchronous=FULL` read back),
    /// and starts the WAL's background checkpoint.
    ///
    /// # Errors
    /// When the file cannot be opened or would not be durable.
    pub(crate) fn open(path: &Path, others: Writer<Sqlite>) -> Result<Self, StoreError> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.set_prepared_statement_cache_capacity(256);
        for (name, value) in PRAGMAS {
            conn.pragma_update(None, name, value)?;
        }
        conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES)?;
        sqlite_level(conn.query_row("PRAGMA synchronous", [], |row| row.get(0))?)?;
        Ok(Self { conn, others, checkpointer: Checkpointer::start(path)?, synchronous_full: true })
    }

    /// Sets how the next commit reaches the disk: `FULL` waits for the WAL's `fsync`;
    /// `NORMAL` leaves the WAL to the kernel until the next `FULL` commit or checkpoint syncs
    /// it (in WAL mode a commit never survives without the ones before it).
    fn synchronous(&mut self, full: bool) -> Result<(), StoreError> {
        if full != self.synchronous_full {
            // Prepared anew each time: SQLite applies this pragma when it compiles it, so a
            // cached statement would not set it again. Outside a transaction, as SQLite asks.
            self.conn.pragma_update(None, "synchronous", if full { "FULL" } else { "NORMAL" })?;
            self.synchronous_full = full;
        }
        Ok(())
    }

    /// Runs the writer on a thread of its own (no I/O driver: nothing here waits on a socket).
    pub(crate) fn spawn(self, queue: mpsc::Receiver<Job>) -> Result<oneshot::Receiver<()>, StoreError> {
        let (max_batch, errors) = (self.others.max_batch, self.others.errors.clone());
        spawn(self, queue, max_batch, errors, false)
    }
}

impl Commit for SqliteWriter {
    const MIXES_KINDS: bool = false;

    async fn commit(&mut self, batch: &mut [Job]) -> Result<(), StoreError> {
        if !batch.first().is_some_and(Job::is_hot) {
            return self.others.commit(batch).await;
        }
        self.synchronous(must_reach_disk(batch))?;
        let mut tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for range in runs_by(batch, std::mem::discriminant) {
            let run = &mut batch[range];
            match &run[0] {
                Job::AppendMessage(..) => append_messages(&mut tx, self.others.placement, run).await?,
                Job::RecordReceipt(..) => {
                    record_receipts(&mut tx, &self.others.local, self.others.placement, run).await?;
                }
                Job::ApplyRemoteReceipt(..) => apply_remote_receipts(&mut tx, run).await?,
                Job::OutboxRemove { .. } => remove_outbox_rows(&mut tx, run).await?,
                // The loop hands this writer stretches of one side only.
                _ => return Err(StoreError::WriteFailed("an operation reached the wrong connection".into())),
            }
        }
        tx.commit()?;
        settle_all(batch, None);
        // After the replies: only the next commit waits for the last few pages' sync.
        self.checkpointer.finish_if_drained(&self.conn);
        Ok(())
    }
}
