//! The operations that are rare on the hot path (accounts, devices, keys, presence, the
//! outbox's bookkeeping), applied one at a time inside a group commit: each is a few
//! statements, and batching them would buy nothing.

use kith_proto::limits::{MAX_DEVICES, MAX_PREKEYS_STORED};
use kith_proto::{DeviceId, MessageId, MessageStatus, Timestamp, UserId};
use sqlx::QueryBuilder;

use super::bulk::chunks;
use super::engine::engine;
use super::rows::RowsAffected;
use super::status::push_advances;
use super::writer::{Job, Tx, Writer};
use super::{ClaimedKeys, ImportReport, NewUser, OutboxEntry, PublishOutcome, PublishedKeys, StoreError};

engine! {
impl<DB> Writer<DB> {
    /// Applies one operation of a kind that is not applied in bulk; an error that aborts the
    /// batch is returned, any other is kept as the operation's answer.
    pub(super) async fn apply_one(tx: &mut Tx<DB>, job: &mut Job) -> Result<(), StoreError> {
        match job {
            Job::CreateUser(user, slot) => slot.keep(Self::create_user(tx, user).await),
            Job::ImportUsers(users, slot) => slot.keep(Self::import_users(tx, users).await),
            Job::SetPresence { user_id, online, at, slot } => {
                slot.keep(Self::set_presence(tx, user_id, *online, *at).await)
            }
            Job::ResetPresence(at, slot) => slot.keep(Self::reset_presence(tx, *at).await),
            Job::SetPresenceVisibility { user_id, visibility, slot } => {
                slot.keep(Self::set_presence_visibility(tx, user_id, *visibility).await)
            }
            Job::AddDevice { user, device, at, slot } => slot.keep(Self::add_device(tx, user, *device, *at).await),
            Job::RemoveDevice { user, device, slot } => slot.keep(Self::remove_device(tx, user, *device).await),
            Job::PublishKeys { user, device, keys, slot } => {
                slot.keep(Self::publish_keys(tx, user, *device, keys).await)
            }
            Job::ClaimKeys { user, slot } => slot.keep(Self::claim_keys(tx, user).await),
            Job::EnqueueEnvelopes(entries, slot) => {
                let entries: Vec<&OutboxEntry> = entries.iter().collect();
                slot.keep(super::bulk::insert_outbox_rows(tx, &entries).await)
            }
            Job::ApplyStatus { sender, message_id, status, slot } => {
                slot.keep(Self::apply_status(tx, sender, *message_id, *status).await)
            }
            Job::RemoveHandoffs(ids, slot) => slot.keep(Self::remove_handoffs(tx, ids).await),
            Job::Trust(op, slot) => slot.keep(Self::apply_trust(tx, op).await),
            // Applied in bulk runs by the writer, never one by one.
            Job::AppendMessage(..) | Job::RecordReceipt(..) | Job::ApplyRemoteReceipt(..) | Job::OutboxRemove { .. } => {
                Ok(())
            }
        }
    }

    async fn create_user(tx: &mut Tx<DB>, user: &NewUser) -> Result<(), StoreError> {
        if Self::insert_user(tx, user).await? { Ok(()) } else { Err(StoreError::UserExists(user.user_id.clone())) }
    }

    async fn import_users(tx: &mut Tx<DB>, users: &[NewUser]) -> Result<ImportReport, StoreError> {
        let mut report = ImportReport::default();
        for user in users {
            if Self::insert_user(tx, user).await? {
                report.created += 1;
            } else {
                report.skipped += 1;
            }
        }
        Ok(report)
    }

    /// Inserts an account unless its id exists; says whether it did.
    async fn insert_user(tx: &mut Tx<DB>, user: &NewUser) -> Result<bool, StoreError> {
        let done = sqlx::query::<DB>(
            "INSERT INTO users (user_id, name, password_hash, created_at, status) \
             VALUES ($1, $2, $3, $4, 'offline') ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user.user_id.as_str())
        .bind(user.user_id.name())
        .bind(user.password_hash.as_str())
        .bind(user.created_at.as_millis())
        .execute(&mut **tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        Self::insert_device(tx, user.user_id.as_str(), user.device, user.created_at).await?;
        Ok(true)
    }

    pub(super) async fn insert_device(tx: &mut Tx<DB>, user: &str, device: DeviceId, at: Timestamp) -> Result<bool, StoreError> {
        let done = sqlx::query::<DB>(
            "INSERT INTO devices (user_id, device_id, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, device_id) DO NOTHING",
        )
        .bind(user)
        .bind(i64::from(device.0))
        .bind(at.as_millis())
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves the sender's copy forward to `status`; says whether it moved.
    async fn apply_status(
        tx: &mut Tx<DB>,
        sender: &UserId,
        message_id: MessageId,
        status: MessageStatus,
    ) -> Result<bool, StoreError> {
        let message_id = message_id.to_string();
        let mut query = QueryBuilder::<DB>::new("UPDATE messages SET status = ");
        query.push_bind(status.as_str()).push(" WHERE owner_id = ").push_bind(sender.as_str());
        query.push(" AND message_id = ").push_bind(message_id.as_str()).push(" AND ");
        push_advances(&mut query, status);
        Ok(query.build().execute(&mut **tx).await?.rows_affected() > 0)
    }

    /// One `DELETE … IN (…)` per chunk: a sweep completes hand-offs by the hundred.
    async fn remove_handoffs(tx: &mut Tx<DB>, ids: &[String]) -> Result<(), StoreError> {
        for chunk in chunks(ids) {
            let mut query = QueryBuilder::<DB>::new("DELETE FROM handoffs WHERE handoff_id IN (");
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(id.as_str());
            }
            query.push(")");
            query.build().execute(&mut **tx).await?;
        }
        Ok(())
    }

    async fn add_device(tx: &mut Tx<DB>, user: &UserId, device: DeviceId, at: Timestamp) -> Result<(), StoreError> {
        let (count,) =
            sqlx::query_as::<DB, (i64,)>("SELECT COUNT(*) FROM devices WHERE user_id = $1 AND device_id <> $2")
                .bind(user.as_str())
                .bind(i64::from(device.0))
                .fetch_one(&mut **tx)
                .await?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= MAX_DEVICES {
            let (exists,) =
                sqlx::query_as::<DB, (i64,)>("SELECT COUNT(*) FROM devices WHERE user_id = $1 AND device_id = $2")
                    .bind(user.as_str())
                    .bind(i64::from(device.0))
                    .fetch_one(&mut **tx)
                    .await?;
            if exists == 0 {
                return Err(StoreError::TooManyDevices { max: MAX_DEVICES });
            }
        }
        Self::insert_device(tx, user.as_str(), device, at).await?;
        Ok(())
    }

    async fn remove_device(tx: &mut Tx<DB>, user: &UserId, device: DeviceId) -> Result<bool, StoreError> {
        let device_id = i64::from(device.0);
        for table in [
            "DELETE FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2",
            "DELETE FROM device_pending WHERE owner_id = $1 AND device_id = $2",
        ] {
            sqlx::query::<DB>(table).bind(user.as_str()).bind(device_id).execute(&mut **tx).await?;
        }
        let done = sqlx::query::<DB>("DELETE FROM devices WHERE user_id = $1 AND device_id = $2")
            .bind(user.as_str())
            .bind(device_id)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn publish_keys(
        tx: &mut Tx<DB>,
        user: &UserId,
        device: DeviceId,
        keys: &PublishedKeys,
    ) -> Result<PublishOutcome, StoreError> {
        let device_id = i64::from(device.0);
        let previous = sqlx::query_as::<DB, (Option<Vec<u8>>,)>(
            "SELECT identity FROM devices WHERE user_id = $1 AND device_id = $2",
        )
        .bind(user.as_str())
        .bind(device_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::DeviceNotFound(user.clone(), device))?
        .0;
        let identity_changed = previous.as_deref().is_some_and(|p| p != keys.identity.as_slice());
        // Prekeys signed by an old identity are worthless: a new identity starts from none.
        let stored = if identity_changed { 0 } else { Self::count_prekeys(tx, user, device).await? };
        let would_hold = stored + keys.one_time.len();
        if would_hold > MAX_PREKEYS_STORED {
            return Err(StoreError::TooManyPrekeys { would_hold, max: MAX_PREKEYS_STORED });
        }
        if identity_changed {
            sqlx::query::<DB>("DELETE FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2")
                .bind(user.as_str())
                .bind(device_id)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query::<DB>("UPDATE devices SET identity = $3, signed_prekey = $4 WHERE user_id = $1 AND device_id = $2")
            .bind(user.as_str())
            .bind(device_id)
            .bind(keys.identity.as_slice())
            .bind(keys.signed_prekey.as_slice())
            .execute(&mut **tx)
            .await?;
        for (key_id, key) in &keys.one_time {
            sqlx::query::<DB>(
                "INSERT INTO one_time_prekeys (user_id, device_id, key_id, key) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, device_id, key_id) DO NOTHING",
            )
            .bind(user.as_str())
            .bind(device_id)
            .bind(i64::from(*key_id))
            .bind(key.as_slice())
            .execute(&mut **tx)
            .await?;
        }
        let one_time_prekeys = u32::try_from(Self::count_prekeys(tx, user, device).await?).unwrap_or(u32::MAX);
        Ok(PublishOutcome { identity_changed, one_time_prekeys })
    }

    async fn count_prekeys(tx: &mut Tx<DB>, user: &UserId, device: DeviceId) -> Result<usize, StoreError> {
        let (count,) =
            sqlx::query_as::<DB, (i64,)>("SELECT COUNT(*) FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2")
                .bind(user.as_str())
                .bind(i64::from(device.0))
                .fetch_one(&mut **tx)
                .await?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    async fn claim_keys(tx: &mut Tx<DB>, user: &UserId) -> Result<Vec<ClaimedKeys>, StoreError> {
        let devices = sqlx::query_as::<DB, (i64, Vec<u8>, Vec<u8>)>(
            "SELECT device_id, identity, signed_prekey FROM devices \
             WHERE user_id = $1 AND identity IS NOT NULL AND signed_prekey IS NOT NULL ORDER BY device_id",
        )
        .bind(user.as_str())
        .fetch_all(&mut **tx)
        .await?;
        let mut claimed = Vec::with_capacity(devices.len());
        for (device_id, identity, signed_prekey) in devices {
            let one_time = sqlx::query_as::<DB, (i64, Vec<u8>)>(
                "SELECT key_id, key FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2 \
                 ORDER BY key_id LIMIT 1",
            )
            .bind(user.as_str())
            .bind(device_id)
            .fetch_optional(&mut **tx)
            .await?;
            let one_time = match one_time {
                Some((key_id, key)) => {
                    sqlx::query::<DB>(
                        "DELETE FROM one_time_prekeys WHERE user_id = $1 AND device_id = $2 AND key_id = $3",
                    )
                    .bind(user.as_str())
                    .bind(device_id)
                    .bind(key_id)
                    .execute(&mut **tx)
                    .await?;
                    Some(key)
                }
                None => None,
            };
            let device_id = u32::try_from(device_id)
                .map_err(|_| StoreError::Corrupt { table: "devices", detail: format!("device id {device_id}") })?;
            claimed.push(ClaimedKeys { device_id: DeviceId(device_id), identity, signed_prekey, one_time });
        }
        Ok(claimed)
    }

    async fn set_presence(tx: &mut Tx<DB>, user_id: &str, online: bool, at: Timestamp) -> Result<(), StoreError> {
        let (status, last_seen) = if online { ("online", None) } else { ("offline", Some(at.as_millis())) };
        sqlx::query::<DB>("UPDATE users SET status = $2, last_seen = COALESCE($3, last_seen) WHERE user_id = $1")
            .bind(user_id)
            .bind(status)
            .bind(last_seen)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn set_presence_visibility(
        tx: &mut Tx<DB>,
        user_id: &str,
        visibility: kith_proto::PresenceVisibility,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query::<DB>("UPDATE users SET presence_visibility = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(visibility.as_str())
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn reset_presence(tx: &mut Tx<DB>, at: Timestamp) -> Result<u64, StoreError> {
        let done = sqlx::query::<DB>("UPDATE users SET status = 'offline', last_seen = $1 WHERE status = 'online'")
            .bind(at.as_millis())
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected())
    }
}
}
