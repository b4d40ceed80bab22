//! Learning other users' devices: fetching device lists, claiming bundles where a session is
//! needed, and taking them into the key store.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kith_crypto::{PreKeyBundle, VerifiedPreKeyBundle};
use kith_proto::keys::KeyBundles;
use kith_proto::{DeviceId, Timestamp, UserId};

use super::{Event, Messenger, MessengerError, not_found};

impl Messenger {
    /// Fetches `user`'s device list (which claims nothing), and only when a device needs a new
    /// session claims a bundle per device; checks every bundle and takes it in: new devices,
    /// changed identities, sessions for devices that have none.
    pub(super) async fn refresh(&mut self, user: &UserId) -> Result<Vec<Event>, MessengerError> {
        let listed = match self.api.device_keys(user.as_str()).await {
            Err(e) if not_found(&e) => return Err(MessengerError::UnknownUser(user.to_string())),
            other => verified_bundles(user, &other?),
        };
        let (me, my_device) = self.me();
        let wants_sessions = self.profile.read()?.keys.wants_sessions(user, (&me, my_device), &listed);
        let bundles = if wants_sessions {
            match self.api.claim_keys(user.as_str()).await {
                Err(e) if not_found(&e) => return Err(MessengerError::UnknownUser(user.to_string())),
                other => verified_bundles(user, &other?),
            }
        } else {
            listed
        };
        let mut locked = self.profile.lock().await?;
        let notices =
            locked.state.keys.apply_bundles(user, (&me, my_device), &bundles, Timestamp::now(), &mut self.rng)?;
        locked.save()?;
        Ok(notices.into_iter().map(Event::from).collect())
    }

    pub(super) async fn refresh_if_needed(&mut self, users: &[&UserId]) -> Result<Vec<Event>, MessengerError> {
        let state = self.profile.read()?;
        let now = Timestamp::now();
        let due: Vec<UserId> =
            users.iter().filter(|u| state.keys.needs_refresh(u, now)).map(|u| (*u).clone()).collect();
        drop(state);
        let mut events = Vec::new();
        for user in due {
            events.extend(self.refresh(&user).await?);
        }
        Ok(events)
    }
}

/// Decodes and verifies the bundles of `user`'s devices, leaving out (and logging) any that
/// does not verify: the node checks keys before storing them, so a bad one is its doing.
fn verified_bundles(user: &UserId, bundles: &KeyBundles) -> Vec<(DeviceId, VerifiedPreKeyBundle)> {
    bundles
        .devices
        .iter()
        .filter_map(|device| {
            let verified = BASE64
                .decode(device.bundle.as_bytes())
                .map_err(|e| e.to_string())
                .and_then(|bytes| PreKeyBundle::from_bytes(&bytes).map_err(|e| e.to_string()))
                .and_then(|bundle| bundle.verify().map_err(|e| e.to_string()));
            match verified {
                Ok(bundle) => Some((device.device_id, bundle)),
                Err(e) => {
                    tracing::warn!(%user, device = %device.device_id, error = %e, "ignoring a bad key bundle");
                    None
                }
            }
        })
        .collect()
}
