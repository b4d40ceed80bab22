//! Learning users' devices: fetching device lists, checking each device's certificate against
//! the identity trusted for its user, claiming bundles where a session is needed, and taking
//! them into the key store; and removing one of this account's devices with a signed removal.

use kith_proto::keys::RemovalUpload;
use kith_proto::{DeviceId, Timestamp, UserId};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{Event, Messenger, MessengerError, not_found};
use crate::sessions::{DeviceListing, KnownDevice};

impl Messenger {
    /// Fetches `user`'s device list (which claims nothing), and only when a device needs a new
    /// session claims a bundle per device; checks every device against the identity trusted
    /// for `user` and takes in the ones it certified: new devices, sessions for devices that
    /// have none, removals, a changed identity. Devices it did not certify come back as
    /// [`Event::UntrustedDevice`] and are never written to.
    pub(super) async fn refresh(&mut self, user: &UserId) -> Result<Vec<Event>, MessengerError> {
        let listed = match self.api.device_keys(user.as_str()).await {
            Err(e) if not_found(&e) => return Err(MessengerError::UnknownUser(user.to_string())),
            other => DeviceListing::decode(&other?),
        };
        let (me, my_device) = self.me();
        let wants_sessions = self.profile.read()?.keys.wants_sessions(user, (&me, my_device), &listed);
        let listing = if wants_sessions {
            match self.api.claim_keys(user.as_str()).await {
                Err(e) if not_found(&e) => return Err(MessengerError::UnknownUser(user.to_string())),
                other => DeviceListing::decode(&other?),
            }
        } else {
            listed
        };
        let mut locked = self.profile.lock().await?;
        let notices =
            locked.state.keys.apply_listing(user, (&me, my_device), &listing, Timestamp::now(), &mut self.rng)?;
        locked.save()?;
        for notice in &notices {
            if let crate::sessions::Notice::UntrustedDevice { user, device, reason } = notice {
                tracing::warn!(%user, %device, %reason, "not writing to a device its user did not certify");
            }
        }
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

    /// This account's other devices, fetched again, that its identity certified.
    ///
    /// # Errors
    /// Transport and profile errors.
    pub async fn own_devices(&mut self) -> Result<(Vec<KnownDevice>, Vec<Event>), MessengerError> {
        let (me, _) = self.me();
        let events = self.refresh(&me).await?;
        Ok((self.profile.read()?.keys.devices_of(&me, &me), events))
    }

    /// Removes another device of this account: signs its removal with the account's identity
    /// and hands it to the node, which serves it to every contact (they stop writing to the
    /// device for good, whatever a server lists later) and removes the device. A device the
    /// identity never certified (a link that did not finish) has nothing to sign: it is just
    /// removed from the node.
    ///
    /// # Errors
    /// [`MessengerError::UnknownDevice`] when this account has no such device;
    /// [`MessengerError::RemoveSelf`]; transport and profile errors.
    pub async fn remove_device(&mut self, device: DeviceId) -> Result<(), MessengerError> {
        let (me, my_device) = self.me();
        if device == my_device {
            return Err(MessengerError::RemoveSelf);
        }
        self.refresh(&me).await?;
        let removal = {
            let mut locked = self.profile.lock().await?;
            let removal = locked.state.keys.record_own_removal(&me, device);
            if removal.is_some() {
                locked.save()?;
            }
            removal
        };
        match removal {
            Some(removal) => {
                self.api.publish_removal(&RemovalUpload { removal: BASE64.encode(removal.to_bytes()) }).await?;
            }
            None => match self.api.remove_device(device).await {
                Err(e) if not_found(&e) => return Err(MessengerError::UnknownDevice(device)),
                other => other?,
            },
        }
        Ok(())
    }
}
