//! Keeping this device's keys published: one-time prekey top-ups and signed prekey rotation.

use kith_proto::Timestamp;

use super::{Messenger, MessengerError, PREKEY_LOW_WATER, PREKEY_TARGET};

impl Messenger {
    /// Tops up this device's one-time prekeys on the node (to [`PREKEY_TARGET`] when fewer
    /// than [`PREKEY_LOW_WATER`] are left) and replaces the signed prekey when it is due (every
    /// upload carries the device's certificate);
    /// returns how many one-time prekeys the node holds. The secrets are saved before the
    /// public halves are uploaded.
    ///
    /// # Errors
    /// Transport and profile errors; the node refusing the keys.
    pub async fn replenish_prekeys(&mut self) -> Result<u32, MessengerError> {
        // Until this profile's keys were published once, the node's count may be another
        // installation's (a reused device id): publish a full batch regardless.
        let state = self.profile.read()?;
        let first = !state.keys_published;
        let reset = first && state.reset_identity;
        drop(state);
        let count = if first { 0 } else { self.api.key_count().await?.one_time_pre_keys };
        let upload = {
            let mut locked = self.profile.lock().await?;
            let keys = &mut locked.state.keys;
            let rotated = keys.rotate_signed_prekey_if_due(Timestamp::now(), &mut self.rng);
            let missing = if count < PREKEY_LOW_WATER { PREKEY_TARGET - count } else { 0 };
            if missing == 0 && !rotated {
                return Ok(count);
            }
            let new = keys.new_one_time_prekeys(missing, &mut self.rng)?;
            let upload = keys.upload(&new, reset);
            locked.save()?;
            upload
        };
        let published = self.api.publish_keys(&upload).await?;
        tracing::debug!(one_time_prekeys = published.one_time_pre_keys, "published keys");
        if first {
            let mut locked = self.profile.lock().await?;
            locked.state.keys_published = true;
            locked.state.reset_identity = false;
            locked.save()?;
        }
        Ok(published.one_time_pre_keys)
    }
}
