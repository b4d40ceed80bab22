//! Checkpoints the SQLite WAL in the background, off the commit path, and lets the writer
//! restart it at a moment when that costs a few pages.
//!
//! With SQLite's automatic checkpoint, the commit that crosses the threshold copies the whole
//! WAL into the database and syncs it before it returns: at 5,000 messages/s that was a commit
//! of 40 MB every few seconds, and every message queued behind it waited (docs/benchmarks.md).
//! A passive checkpoint on a connection of its own copies what the WAL holds while the writer
//! goes on appending. But SQLite starts the WAL over only when a write transaction begins with
//! every frame copied, which never happens while commits come every millisecond: the copy is
//! always a few commits behind. So once the WAL is long ([`RESTART_AFTER_FRAMES`]), this thread
//! checkpoints again and again, each pass copying what came in during the one before, until a
//! pass finds almost nothing new ([`DRAINED_FRAMES`]); then it tells the writer, which copies
//! that last handful of pages itself between two commits (a database `fsync` of a few pages:
//! 6–12 ms on the benchmark machine, against 25–44 ms when the backstop copied and synced
//! seconds of backlog inside a commit, docs/benchmarks.md) so that its next transaction starts
//! the WAL over. The writers keep an automatic checkpoint only as a backstop
//! ([`BACKSTOP_PAGES`]) should this thread fall behind.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tracing::{debug, warn};

use super::StoreError;
use super::sqlite::{BUSY_TIMEOUT, PRAGMAS};

/// How often the WAL is checkpointed.
const EVERY: Duration = Duration::from_secs(1);

/// The writers' automatic checkpoint (pages of WAL, ~400 MB): reached only if this thread
/// falls behind.
pub(crate) const BACKSTOP_PAGES: i64 = 100_000;

/// From this many frames (~256 MB) the thread drains the WAL for the writer to restart it.
const RESTART_AFTER_FRAMES: i64 = 65_536;

/// A pass that found at most this many new frames leaves the rest to the writer.
const DRAINED_FRAMES: i64 = 64;

/// At most this many passes in a row (each copying what came in during the one before) before
/// the thread waits for the next round; at a rate where the passes cannot catch up, the
/// backstop restarts the WAL.
const MAX_PASSES: usize = 16;

/// The checkpointing thread; it stops when this is dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    _stop: mpsc::Sender<()>,
    /// Set when the WAL is copied up to its last few frames: the writer's moment to finish the
    /// checkpoint so that the WAL starts over.
    drained: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` every second.
    ///
    /// # Errors
    /// When the database cannot be opened or the thread cannot start.
    pub(crate) fn start(path: &Path) -> Result<Self, StoreError> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Among them `synchronous=FULL`: the checkpoint syncs the database file before the WAL
        // may be reused.
        for (name, value) in PRAGMAS {
            conn.pragma_update(None, name, value)?;
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let drained = Arc::new(AtomicBool::new(false));
        let signal = Arc::clone(&drained);
        std::thread::Builder::new()
            .name("kith-checkpoint".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    if let Err(e) = drain(&conn, &signal, RESTART_AFTER_FRAMES) {
                        warn!(error = %e, "WAL checkpoint failed; the writers' automatic checkpoint stands in");
                    }
                }
            })
            .map_err(|e| StoreError::Config(format!("cannot start the WAL checkpoint thread: {e}")))?;
        Ok(Self { _stop: stop, drained })
    }

    /// Finishes the checkpoint on the writer's connection if the thread has copied all but the
    /// last few frames, so that the writer's next transaction starts the WAL over. Called by
    /// the writer between commits; a no-op (one atomic load) otherwise.
    pub(crate) fn finish_if_drained(&self, writer: &Connection) {
        if self.drained.load(Ordering::Relaxed) && self.drained.swap(false, Ordering::AcqRel) {
            match passive(writer) {
                Ok((log, copied)) => debug!(log, copied, "the writer finished the WAL checkpoint"),
                Err(e) => warn!(error = %e, "the writer's WAL checkpoint failed; the WAL goes on growing"),
            }
        }
    }
}

/// One round of the thread: a passive checkpoint, and while the WAL is at least `restart_after`
/// frames long, more passes until one finds almost nothing new, which it signals through
/// `drained`.
fn drain(conn: &Connection, drained: &AtomicBool, restart_after: i64) -> rusqlite::Result<()> {
    let (mut log, mut copied) = passive(conn)?;
    for _ in 0..MAX_PASSES {
        // Not long enough to be worth restarting, or held back by a reader: the next round.
        if log < restart_after || copied < log {
            return Ok(());
        }
        let before = log;
        (log, copied) = passive(conn)?;
        if log < before {
            return Ok(()); // the WAL started over meanwhile
        }
        if log - before <= DRAINED_FRAMES && copied == log {
            drained.store(true, Ordering::Release);
            return Ok(());
        }
    }
    Ok(())
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: copies what it can without waiting for anyone; returns
/// the frames in the WAL and how many of them are now in the database.
fn passive(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get(1)?, row.get(2)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that commits `commits` transactions of a few pages each.
    fn write(conn: &Connection, commits: usize) -> rusqlite::Result<()> {
        for i in 0..commits {
            conn.execute("INSERT INTO t (v) VALUES (?1)", [format!("{i:0>2000}")])?;
        }
        Ok(())
    }

    #[test]
    fn a_long_wal_is_drained_and_the_writer_starts_it_over() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("kith.db");
        let writer = Connection::open(&path)?;
        writer.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
        writer.pragma_update(None, "wal_autocheckpoint", 0)?; // no restart but ours
        writer.execute("CREATE TABLE t (v TEXT)", [])?;
        let thread = Connection::open(&path)?;
        let (_stop, _) = mpsc::channel();
        let checkpointer = Checkpointer { _stop, drained: Arc::new(AtomicBool::new(false)) };

        // Single-threaded, the first pass copies everything and the second finds nothing new;
        // and the next commit would start the WAL over after the thread's copy alone. What
        // this pins is the signal (none below the threshold, once past it) and that the
        // restart loses nothing; the race it exists for is measured (docs/benchmarks.md §2).
        write(&writer, 100)?;
        drain(&thread, &checkpointer.drained, i64::MAX)?;
        assert!(!checkpointer.drained.load(Ordering::Acquire), "a WAL below the threshold is left alone");
        write(&writer, 100)?;
        let long = std::fs::metadata(dir.path().join("kith.db-wal"))?.len() / 4096;
        drain(&thread, &checkpointer.drained, 50)?;
        assert!(checkpointer.drained.load(Ordering::Acquire), "a copied WAL past the threshold is signalled");

        checkpointer.finish_if_drained(&writer);
        assert!(!checkpointer.drained.load(Ordering::Acquire), "the signal is taken once");
        write(&writer, 1)?;
        let (after, copied) = passive(&thread)?;
        assert!(after < 10, "the writer's next commit starts the WAL over: {after} frames, ~{long} pages before");
        assert_eq!(copied, after);
        let rows: i64 = writer.query_row("SELECT count(*) FROM t", [], |row| row.get(0))?;
        assert_eq!(rows, 201, "nothing lost across the restarts");
        Ok(())
    }
}
