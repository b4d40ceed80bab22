//! Who may run on a store, and which instance does a job that only one may do at a time.
//!
//! - **SQLite** is one process's: an exclusive lock on a file beside the database refuses a
//!   second `kith serve` on it, and every lease is this process's.
//! - **PostgreSQL** coordinates with session advisory locks held on one dedicated connection:
//!   an instance running alone takes the instance lock exclusively, instances running together
//!   (with Redis) take it shared, so a lone instance and a cluster never run on one store.
//!   Leases (one outbox pump per destination across the node) are exclusive locks on the same
//!   connection. The database frees them when the connection ends, so a killed holder's
//!   leases are free at once and another instance takes them on its next try.
//!
//! Lock keys are derived from the schema, so clusters in different schemas of one database
//! (as the tests run) never contend.

use std::collections::HashSet;
use std::path::PathBuf;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::Mutex;
use tracing::warn;

use sha2::{Digest, Sha256};

use super::StoreError;

/// How many processes serve one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    /// This process alone: a second instance on the same store is refused.
    Alone,
    /// Several instances of one node, coordinated through Redis.
    Shared,
    /// A command-line tool working beside whatever serves the store (`kith user import`):
    /// takes no lock and holds no lease.
    Tool,
}

/// The lock a store's instances hold.
#[derive(Debug)]
pub(crate) enum Guard {
    /// SQLite: the locked file (unlocked when closed, so when the process exits).
    File(#[expect(dead_code, reason = "held for the lock it carries, never read")] std::fs::File),
    /// PostgreSQL: advisory locks on a dedicated connection.
    Postgres(Box<PgLocks>),
}

impl Guard {
    /// Takes the lock on the file beside a SQLite database.
    ///
    /// # Errors
    /// [`StoreError::InstanceRunning`] when another process holds it; I/O errors.
    pub(crate) fn sqlite(database: &std::path::Path, instances: Instances) -> Result<Option<Self>, StoreError> {
        if instances == Instances::Tool {
            return Ok(None);
        }
        if instances == Instances::Shared {
            return Err(StoreError::Config(
                "several instances need PostgreSQL (--database-url postgres://… or --shard …); \
                 SQLite serves one process"
                    .into(),
            ));
        }
        let mut path = PathBuf::from(database);
        path.as_mut_os_string().push(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::Config(format!("{}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self::File(file))),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InstanceRunning(format!(
                "another kith instance has {} open (its lock {} is taken)",
                database.display(),
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Config(format!("{}: {e}", path.display()))),
        }
    }

    /// Takes the named lease (see [`super::Store::try_lease`]).
    pub(crate) async fn try_lease(&self, name: &str) -> Result<bool, StoreError> {
        match self {
            Self::File(_) => Ok(true),
            Self::Postgres(locks) => locks.try_lease(name).await,
        }
    }
}

/// Advisory locks on a connection of their own.
#[derive(Debug)]
pub(crate) struct PgLocks {
    options: PgConnectOptions,
    /// The schema the node's tables are in: part of every lock key.
    schema: String,
    instances: Instances,
    state: Mutex<LockState>,
}

#[derive(Debug)]
struct LockState {
    /// `None` after the connection failed, until the next use reconnects.
    connection: Option<PgConnection>,
    /// Leases held on `connection`.
    held: HashSet<String>,
}

impl PgLocks {
    /// Connects and takes the instance lock.
    ///
    /// # Errors
    /// [`StoreError::InstanceRunning`] when instances of the other kind hold it; database
    /// errors.
    pub(crate) async fn take(options: PgConnectOptions, instances: Instances) -> Result<Self, StoreError> {
        let mut connection = options.connect().await?;
        let (schema,): (String,) = sqlx::query_as("SELECT current_schema()").fetch_one(&mut connection).await?;
        let locks = Self {
            options,
            schema,
            instances,
            state: Mutex::new(LockState { connection: None, held: HashSet::new() }),
        };
        locks.lock_instance(&mut connection).await?;
        locks.state.lock().await.connection = Some(connection);
        Ok(locks)
    }

    /// The advisory-lock key of `name` in this schema: the first 8 bytes of
    /// SHA-256("kith:<schema>:<name>"), stable across versions.
    fn key(&self, name: &str) -> i64 {
        let digest = Sha256::digest(format!("kith:{}:{name}", self.schema).as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    }

    async fn lock_instance(&self, connection: &mut PgConnection) -> Result<(), StoreError> {
        let key = self.key("instances");
        let sql = match self.instances {
            Instances::Alone => "SELECT pg_try_advisory_lock($1)",
            Instances::Shared => "SELECT pg_try_advisory_lock_shared($1)",
            Instances::Tool => return Ok(()),
        };
        let (taken,): (bool,) = sqlx::query_as(sql).bind(key).fetch_one(&mut *connection).await?;
        if taken {
            return Ok(());
        }
        Err(StoreError::InstanceRunning(match self.instances {
            Instances::Alone => format!(
                "another kith instance is serving this database (schema {}); run several instances \
                 only with --redis-url, or stop the other one",
                self.schema
            ),
            Instances::Shared | Instances::Tool => format!(
                "a kith instance without --redis-url is serving this database (schema {}); stop it \
                 before starting instances that share it",
                self.schema
            ),
        }))
    }

    async fn try_lease(&self, name: &str) -> Result<bool, StoreError> {
        let mut state = self.state.lock().await;
        if state.connection.is_none() {
            let mut connection = self.options.connect().await?;
            // The old connection's locks died with it; this one starts from none.
            state.held.clear();
            self.lock_instance(&mut connection).await?;
            state.connection = Some(connection);
        }
        let LockState { connection: Some(connection), held } = &mut *state else {
            return Ok(false);
        };
        let result = if held.contains(name) {
            // Held while the connection lives.
            connection.ping().await.map(|()| true)
        } else {
            sqlx::query_as::<_, (bool,)>("SELECT pg_try_advisory_lock($1)")
                .bind(self.key(&format!("lease:{name}")))
                .fetch_one(&mut *connection)
                .await
                .map(|(taken,)| taken)
        };
        match result {
            Ok(true) => {
                held.insert(name.to_owned());
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => {
                warn!(error = %e, "the lock connection failed; its leases are lost");
                state.connection = None;
                state.held.clear();
                Err(e.into())
            }
        }
    }
}
