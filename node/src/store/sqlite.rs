//! The embedded engine: one SQLite file in WAL mode with `synchronous=FULL` (read back at
//! open), a single group-commit writer (SQLite has one writer anyway; messages and receipts on
//! a connection of its own, [`super::sqlite_writer`]) and a pool of readers.
//! One process may open it (a lock file beside it says so).

use std::str::FromStr;
use std::time::Duration;

use kith_proto::ServerName;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Sqlite, migrate::Migrator};

use super::leases::{Guard, Instances};
use super::placement::Placement;
use super::sql::SqlStore;
use super::sqlite_writer::SqliteWriter;
use super::{StoreError, StoreOptions};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// The settings of every connection to the file, whichever driver opens it (sqlx here, rusqlite
/// in [`super::sqlite_writer`] and [`super::sqlite_checkpoint`]).
pub(super) const PRAGMAS: [(&str, &str); 4] = [
    // Durable before acknowledged: a commit returns only after its WAL frames are synced.
    ("synchronous", "FULL"),
    ("foreign_keys", "ON"),
    // Multi-row statements with RETURNING and derived tables build temporary B-trees: keep them
    // in memory, and give the page cache room for the hot indexes: 16 MiB, not more. A B-tree
    // split that reorders its new pages renumbers one through the lock-byte page (page 262,145
    // at 4 KiB, 1 GiB into the file), and while the database is smaller than that, the end of
    // every write transaction that split a page scans the whole page cache's hash table for
    // pages past the end of the file, a table that grows with the cache (to 32,768 buckets at
    // 64 MiB, 8,192 at 16 MiB). At 5,000 messages/s that scan was a fifth of the writer's
    // time; at full speed, with a database of ~900 MB, 16 MiB moves 7 % more messages than
    // 64 MiB did (docs/benchmarks.md).
    ("temp_store", "MEMORY"),
    ("cache_size", "-16384"),
];

/// How long a connection waits for another's lock before failing.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens (creating if needed) the SQLite database at `url` (`sqlite:PATH`) and migrates it.
///
/// # Errors
/// When the file cannot be opened, another process has it open, or the schema cannot be
/// migrated.
pub(crate) async fn open_sqlite(
    url: &str,
    options: &StoreOptions,
    local: &ServerName,
    instances: Instances,
) -> Result<SqlStore<Sqlite>, StoreError> {
    let connect = PRAGMAS.iter().fold(
        SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
            .statement_cache_capacity(256),
        |connect, (name, value)| connect.pragma(*name, *value),
    );
    let guard = Guard::sqlite(connect.get_filename(), instances)?;
    let path = connect.get_filename().to_owned();

    // The WAL is checkpointed in the background (`sqlite_checkpoint`); a writer's automatic
    // checkpoint inside a commit is only the backstop.
    let writer = connect.clone().pragma("wal_autocheckpoint", super::sqlite_checkpoint::BACKSTOP_PAGES.to_string());
    let write = SqlitePoolOptions::new().max_connections(1).min_connections(1).connect_with(writer).await?;
    MIGRATOR.run(&write).await?;
    let synchronous = super::durability::sqlite(&write).await?;
    let description = format!("sqlite {} (synchronous={synchronous})", connect.get_filename().display());
    let read = SqlitePoolOptions::new()
        .max_connections(options.read_connections.max(1))
        .connect_with(connect.read_only(true))
        .await?;
    let spawn = move |writer, queue| SqliteWriter::open(&path, writer)?.spawn(queue);
    SqlStore::start(read, write, 1, options, local, Placement::SINGLE, guard, description, spawn).await
}

#[cfg(test)]
mod tests {
    use sqlx::Row;
    use sqlx::sqlite::SqliteConnectOptions;

    use super::MIGRATOR;

    /// The last migration before the mailbox rows' uniqueness was keyed by message id first.
    const BEFORE_UNIQUE_BY_MESSAGE_ID: i64 = 20261215000001;

    /// An existing database keeps every mailbox row, their `seq`, and AUTOINCREMENT's high-water
    /// mark across the table rebuild, and the new key still refuses a second copy of a row.
    #[tokio::test]
    async fn upgrading_keeps_mailbox_rows_their_order_and_uniqueness() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let connect = SqliteConnectOptions::new().filename(dir.path().join("kith.db")).create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(connect).await?;
        MIGRATOR.run_to(BEFORE_UNIQUE_BY_MESSAGE_ID, &pool).await?;
        let insert = "INSERT INTO messages (owner_id, message_id, peer_id, sender_id, receiver_id, content, timestamp, status) \
                      VALUES (?, ?, 'bob@a', 'alice@a', 'bob@a', 'ciphertext', 1, 'sent')";
        for (owner, id) in [("alice@a", "m1"), ("bob@a", "m1"), ("alice@a", "m2"), ("bob@a", "m2")] {
            sqlx::query(insert).bind(owner).bind(id).execute(&pool).await?;
        }
        // The newest row is gone (seq 4): a new row must still not reuse its seq.
        sqlx::query("DELETE FROM messages WHERE seq = 4").execute(&pool).await?;

        MIGRATOR.run(&pool).await?;

        let rows: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT seq, owner_id, message_id FROM messages ORDER BY seq").fetch_all(&pool).await?;
        let expected = [(1, "alice@a", "m1"), (2, "bob@a", "m1"), (3, "alice@a", "m2")];
        assert_eq!(rows.len(), expected.len());
        for (row, (seq, owner, id)) in rows.iter().zip(expected) {
            assert_eq!((row.0, row.1.as_str(), row.2.as_str()), (seq, owner, id));
        }
        let next = sqlx::query(insert).bind("bob@a").bind("m3").execute(&pool).await?.last_insert_rowid();
        assert_eq!(next, 5, "AUTOINCREMENT reused a deleted seq");
        let again = sqlx::query(insert).bind("alice@a").bind("m1").execute(&pool).await;
        assert!(again.is_err(), "a second copy of alice's m1 was accepted");

        // A lookup by owner and id uses the new key, and the conversation index is back.
        let plan: Vec<String> =
            sqlx::query("EXPLAIN QUERY PLAN SELECT seq FROM messages WHERE owner_id = ? AND message_id = ?")
                .bind("alice@a")
                .bind("m1")
                .fetch_all(&pool)
                .await?
                .iter()
                .map(|row| row.get::<String, _>("detail"))
                .collect();
        assert!(plan.iter().any(|step| step.contains("(message_id=? AND owner_id=?)")), "{plan:?}");
        let conversation: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'messages_conversation'",
        )
        .fetch_one(&pool)
        .await?;
        assert_eq!(conversation, 1);
        Ok(())
    }
}
