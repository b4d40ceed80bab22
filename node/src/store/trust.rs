//! The key directory's trust records: each account's user identity, the certificate each device
//! uploaded, and the signed device removals. Checked (by signature) before they get here; the
//! store only keeps them, in the same group-commit writer as every other write.

use kith_proto::limits::MAX_REMOVALS_SERVED;
use kith_proto::{DeviceId, Timestamp, UserId};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};

use super::StoreError;
use super::engine::engine;
use super::writer::{Tx, Writer};

/// A change to the trust records.
#[derive(Debug, Clone)]
pub enum TrustOp {
    /// Stores `device`'s certificate, and makes `user_identity` (the certificate's user key)
    /// the account's user identity if it has none. If the account has another one, nothing is
    /// stored unless `reset`, which replaces it.
    Certify {
        /// The account.
        user: UserId,
        /// The device.
        device: DeviceId,
        /// `UserIdentityPublic` bytes.
        user_identity: Vec<u8>,
        /// `DeviceCertificate` bytes.
        certificate: Vec<u8>,
        /// Replace a different user identity.
        reset: bool,
        /// When.
        at: Timestamp,
    },
    /// Stores a signed removal of `device`, keeping the newest [`MAX_REMOVALS_SERVED`] of the
    /// account.
    Remove {
        /// The account.
        user: UserId,
        /// The removed device.
        device: DeviceId,
        /// The removed device's Ed25519 identity key.
        device_key: Vec<u8>,
        /// `DeviceRemoval` bytes.
        removal: Vec<u8>,
        /// When.
        at: Timestamp,
    },
    /// Forgets a removed device's certificate.
    Forget {
        /// The account.
        user: UserId,
        /// The device.
        device: DeviceId,
    },
}

impl TrustOp {
    /// The account it concerns (its writes go through that account's writer).
    pub fn user(&self) -> &UserId {
        match self {
            Self::Certify { user, .. } | Self::Remove { user, .. } | Self::Forget { user, .. } => user,
        }
    }
}

/// What a [`TrustOp`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustOutcome {
    /// The certificate is stored.
    Certified {
        /// The account had no user identity before: this is its first.
        first: bool,
        /// The account's user identity was replaced (a reset).
        changed: bool,
    },
    /// The certificate is by another user identity than the account's and no reset was asked
    /// for; nothing was stored.
    Conflict,
    /// The removal is stored.
    Removed,
    /// The certificate is forgotten (or there was none).
    Forgotten,
}

/// An account's trust records, as served with its keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustRecords {
    /// `UserIdentityPublic` bytes, once a device uploaded a certificate.
    pub user_identity: Option<Vec<u8>>,
    /// `DeviceCertificate` bytes per device.
    pub certificates: Vec<(DeviceId, Vec<u8>)>,
    /// `DeviceRemoval` bytes, oldest first.
    pub removals: Vec<Vec<u8>>,
}

fn device_id(table: &'static str, id: i64) -> Result<DeviceId, StoreError> {
    u32::try_from(id).map(DeviceId).map_err(|_| StoreError::Corrupt { table, detail: format!("device id {id}") })
}

/// Reads `user`'s trust records from `pool`.
pub(super) async fn records<DB>(pool: &Pool<DB>, user: &UserId) -> Result<TrustRecords, StoreError>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB> + Type<DB>,
    for<'r> Vec<u8>: Decode<'r, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let user_identity = sqlx::query_as::<DB, (Vec<u8>,)>("SELECT identity FROM user_identities WHERE user_id = $1")
        .bind(user.as_str())
        .fetch_optional(pool)
        .await?
        .map(|(identity,)| identity);
    let certificates = sqlx::query_as::<DB, (i64, Vec<u8>)>(
        "SELECT device_id, certificate FROM device_certificates WHERE user_id = $1 ORDER BY device_id",
    )
    .bind(user.as_str())
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(id, certificate)| Ok((device_id("device_certificates", id)?, certificate)))
    .collect::<Result<Vec<_>, StoreError>>()?;
    let removals = sqlx::query_as::<DB, (Vec<u8>,)>(
        "SELECT removal FROM device_removals WHERE user_id = $1 ORDER BY created_at, device_id, device_key",
    )
    .bind(user.as_str())
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(removal,)| removal)
    .collect();
    Ok(TrustRecords { user_identity, certificates, removals })
}

engine! {
impl<DB> Writer<DB> {
    /// Applies one trust operation inside the writer's transaction.
    pub(super) async fn apply_trust(tx: &mut Tx<DB>, op: &TrustOp) -> Result<TrustOutcome, StoreError> {
        match op {
            TrustOp::Certify { user, device, user_identity, certificate, reset, at } => {
                let stored =
                    sqlx::query_as::<DB, (Vec<u8>,)>("SELECT identity FROM user_identities WHERE user_id = $1")
                        .bind(user.as_str())
                        .fetch_optional(&mut **tx)
                        .await?;
                let (first, changed) = match stored {
                    None => (true, false),
                    Some((current,)) if current == *user_identity => (false, false),
                    Some(_) if *reset => (false, true),
                    Some(_) => return Ok(TrustOutcome::Conflict),
                };
                if first || changed {
                    sqlx::query::<DB>("DELETE FROM user_identities WHERE user_id = $1")
                        .bind(user.as_str())
                        .execute(&mut **tx)
                        .await?;
                    sqlx::query::<DB>(
                        "INSERT INTO user_identities (user_id, identity, updated_at) VALUES ($1, $2, $3)",
                    )
                    .bind(user.as_str())
                    .bind(user_identity.as_slice())
                    .bind(at.as_millis())
                    .execute(&mut **tx)
                    .await?;
                }
                sqlx::query::<DB>("DELETE FROM device_certificates WHERE user_id = $1 AND device_id = $2")
                    .bind(user.as_str())
                    .bind(i64::from(device.0))
                    .execute(&mut **tx)
                    .await?;
                sqlx::query::<DB>(
                    "INSERT INTO device_certificates (user_id, device_id, certificate) VALUES ($1, $2, $3)",
                )
                .bind(user.as_str())
                .bind(i64::from(device.0))
                .bind(certificate.as_slice())
                .execute(&mut **tx)
                .await?;
                Ok(TrustOutcome::Certified { first, changed })
            }
            TrustOp::Remove { user, device, device_key, removal, at } => {
                sqlx::query::<DB>(
                    "DELETE FROM device_removals WHERE user_id = $1 AND device_id = $2 AND device_key = $3",
                )
                .bind(user.as_str())
                .bind(i64::from(device.0))
                .bind(device_key.as_slice())
                .execute(&mut **tx)
                .await?;
                sqlx::query::<DB>(
                    "INSERT INTO device_removals (user_id, device_id, device_key, removal, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(user.as_str())
                .bind(i64::from(device.0))
                .bind(device_key.as_slice())
                .bind(removal.as_slice())
                .bind(at.as_millis())
                .execute(&mut **tx)
                .await?;
                // Keep the newest MAX_REMOVALS_SERVED.
                let kept = sqlx::query_as::<DB, (i64, Vec<u8>, i64)>(
                    "SELECT device_id, device_key, created_at FROM device_removals WHERE user_id = $1 \
                     ORDER BY created_at DESC, device_id DESC, device_key DESC",
                )
                .bind(user.as_str())
                .fetch_all(&mut **tx)
                .await?;
                for (id, key, _) in kept.into_iter().skip(MAX_REMOVALS_SERVED) {
                    sqlx::query::<DB>(
                        "DELETE FROM device_removals WHERE user_id = $1 AND device_id = $2 AND device_key = $3",
                    )
                    .bind(user.as_str())
                    .bind(id)
                    .bind(key.as_slice())
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(TrustOutcome::Removed)
            }
            TrustOp::Forget { user, device } => {
                sqlx::query::<DB>("DELETE FROM device_certificates WHERE user_id = $1 AND device_id = $2")
                    .bind(user.as_str())
                    .bind(i64::from(device.0))
                    .execute(&mut **tx)
                    .await?;
                Ok(TrustOutcome::Forgotten)
            }
        }
    }
}
}
