//! Checkpoints the SQLite WAL in the background, off the commit path.
//!
//! With SQLite's automatic checkpoint, the commit that crosses the threshold copies the whole
//! WAL into the database and syncs it before it returns: at 5,000 messages/s that was a commit
//! of 40 MB every few seconds, and every message queued behind it waited (docs/benchmarks.md).
//! A passive checkpoint on a connection of its own copies what the WAL holds while the writer
//! goes on appending; the writers keep an automatic checkpoint only as a backstop
//! ([`BACKSTOP_PAGES`]) should this thread fall behind.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tracing::warn;

use super::StoreError;
use super::sqlite::{BUSY_TIMEOUT, PRAGMAS};

/// How often the WAL is checkpointed.
const EVERY: Duration = Duration::from_secs(1);

/// The writers' automatic checkpoint (pages of WAL, ~400 MB): reached only if this thread
/// falls behind.
pub(crate) const BACKSTOP_PAGES: i64 = 100_000;

/// The checkpointing thread; it stops when this is dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    _stop: mpsc::Sender<()>,
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
        std::thread::Builder::new()
            .name("kith-checkpoint".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        warn!(error = %e, "WAL checkpoint failed; the writers' automatic checkpoint stands in");
                    }
                }
            })
            .map_err(|e| StoreError::Config(format!("cannot start the WAL checkpoint thread: {e}")))?;
        Ok(Self { _stop: stop })
    }
}
