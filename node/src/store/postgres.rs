//! The scaled-out engine: PostgreSQL, with several group-commit writers, each owning a
//! partition of conversations so that one conversation's messages commit in order.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Postgres, migrate::Migrator};

use super::sql::SqlStore;
use super::{StoreError, StoreOptions};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Connects to the PostgreSQL database at `url` and migrates it.
///
/// # Errors
/// When the server is unreachable or the schema cannot be migrated.
pub(crate) async fn open_postgres(url: &str, options: &StoreOptions) -> Result<SqlStore<Postgres>, StoreError> {
    // The bulk writer's statements come in a few fixed sizes (see `bulk`); all stay prepared.
    let connect = PgConnectOptions::from_str(url)?.application_name("kith").statement_cache_capacity(256);
    let description =
        format!("postgres {}:{}/{}", connect.get_host(), connect.get_port(), connect.get_database().unwrap_or(""));
    let writers = options.writers.max(1);
    let max = u32::try_from(writers).unwrap_or(u32::MAX).saturating_add(options.read_connections.max(1));
    let pool = PgPoolOptions::new().max_connections(max).connect_with(connect).await?;
    MIGRATOR.run(&pool).await?;
    Ok(SqlStore::start(pool.clone(), pool, writers, options, description))
}
