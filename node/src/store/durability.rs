//! Durable before acknowledged needs the engine to flush a commit to disk before it returns:
//! SQLite's `synchronous` at `FULL` (or `EXTRA`) in WAL mode, PostgreSQL's
//! `synchronous_commit` anything but `off`. A SIGKILL cannot tell the difference (the page
//! cache survives it); a power cut can. So the store reads the setting back over its own write
//! connection when it opens, refuses to start without it, and says what it found in its
//! description (the node's start-up line).

use sqlx::{PgPool, SqlitePool};

use super::StoreError;

/// A store whose commits would not survive a power cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the {engine} connections run with {setting}={value}: a message acknowledged to a client could be lost in a \
     power cut; {fix}"
)]
pub struct NotDurable {
    /// `SQLite` or `PostgreSQL`.
    pub engine: &'static str,
    /// The setting.
    pub setting: &'static str,
    /// Its value, as the connection reported it.
    pub value: String,
    /// What to do about it.
    pub fix: &'static str,
}

/// `PRAGMA synchronous` of the writer connection, by name; `FULL` or `EXTRA`.
///
/// # Errors
/// [`StoreError::NotDurable`] for `OFF` or `NORMAL`; database errors.
pub(crate) async fn sqlite(write: &SqlitePool) -> Result<&'static str, StoreError> {
    sqlite_level(sqlx::query_scalar("PRAGMA synchronous").fetch_one(write).await?)
}

/// The name of a `PRAGMA synchronous` level as a connection reported it; `FULL` or `EXTRA`.
///
/// # Errors
/// [`StoreError::NotDurable`] for `OFF` or `NORMAL`.
pub(crate) fn sqlite_level(level: i64) -> Result<&'static str, StoreError> {
    let name = match level {
        0 => "OFF",
        1 => "NORMAL",
        2 => "FULL",
        3 => "EXTRA",
        _ => "unknown",
    };
    if level >= 2 {
        return Ok(name);
    }
    Err(StoreError::NotDurable(NotDurable {
        engine: "SQLite",
        setting: "synchronous",
        value: name.into(),
        fix: "this is a bug: kith asks for FULL on every connection",
    }))
}

/// `synchronous_commit` of a writer connection; anything but `off`.
///
/// # Errors
/// [`StoreError::NotDurable`] for `off`; database errors.
pub(crate) async fn postgres(write: &PgPool) -> Result<String, StoreError> {
    let value: String = sqlx::query_scalar("SHOW synchronous_commit").fetch_one(write).await?;
    if value != "off" {
        return Ok(value);
    }
    Err(StoreError::NotDurable(NotDurable {
        engine: "PostgreSQL",
        setting: "synchronous_commit",
        value,
        fix: "set it to on for kith's database or role (ALTER DATABASE … SET synchronous_commit = on), or drop \
              options[synchronous_commit] from the database URL",
    }))
}
