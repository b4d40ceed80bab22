//! The scaled-out engine: PostgreSQL, with several group-commit writers, each owning a
//! partition of conversations so that one conversation's messages commit in order. A node may
//! have several PostgreSQL shards (see `sharded`); each is one of these.

use std::str::FromStr;

use kith_proto::ServerName;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Postgres, migrate::Migrator};

use super::leases::{Guard, Instances, PgLocks};
use super::placement::Placement;
use super::sql::SqlStore;
use super::writer::Writer;
use super::{StoreError, StoreOptions};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Lets the transaction it runs in commit without waiting for the WAL flush.
const RELAXED_COMMIT: &str = "SET LOCAL synchronous_commit = off";

/// Connects to the PostgreSQL database at `url`, migrates it and checks that it is shard
/// `placement`; with `instances`, also takes the instance lock (on shard 0 of a node).
///
/// # Errors
/// When the server is unreachable, the schema cannot be migrated, the shard was initialised
/// as another one, or the instance lock is taken.
pub(crate) async fn open_postgres(
    url: &str,
    options: &StoreOptions,
    local: &ServerName,
    placement: Placement,
    instances: Option<Instances>,
) -> Result<SqlStore<Postgres>, StoreError> {
    // The bulk writer's statements come in a few fixed sizes (see `bulk`); all stay prepared.
    let connect = PgConnectOptions::from_str(url)?.application_name("kith").statement_cache_capacity(256);
    let writers = options.writers.max(1);
    // Writers and readers have pools of their own, so that a storm of reads (thousands of
    // clients replaying what is pending after a restart) never keeps a commit waiting.
    let write = PgPoolOptions::new()
        .max_connections(u32::try_from(writers).unwrap_or(u32::MAX))
        .connect_with(connect.clone())
        .await?;
    MIGRATOR.run(&write).await?;
    let guard = match instances {
        Some(Instances::Tool) | None => None,
        Some(instances) => Some(Guard::Postgres(Box::new(PgLocks::take(connect.clone(), instances).await?))),
    };
    // Durable only if commits wait for their WAL flush (read back over a writer connection).
    let synchronous_commit = super::durability::postgres(&write).await?;
    let description = format!(
        "postgres {}:{}/{} (synchronous_commit={synchronous_commit})",
        connect.get_host(),
        connect.get_port(),
        connect.get_database().unwrap_or("")
    );
    let read = PgPoolOptions::new().max_connections(options.read_connections.max(1)).connect_with(connect).await?;
    // A commit of local devices' acks and outbox removals alone does not wait for its WAL flush
    // (`Job::must_reach_disk` says why that is safe); the next commit that waits flushes it too,
    // WAL being in order.
    let spawn = |mut writer: Writer<Postgres>, queue| {
        writer.relaxed_commit = Some(RELAXED_COMMIT);
        writer.spawn(queue)
    };
    SqlStore::start(read, write, writers, options, local, placement, guard, description, spawn).await
}
