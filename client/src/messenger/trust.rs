//! Trust: safety numbers, and accepting an identity that changed.

use kith_crypto::safety_number;
use kith_proto::{DeviceId, UserId};

use super::{Event, Messenger, MessengerError, SafetyNumber};
use crate::sessions::IdentityStatus;

impl Messenger {
    /// Fetches `peer`'s current devices and returns this device's safety number with each.
    ///
    /// # Errors
    /// [`MessengerError::UnknownUser`], transport and profile errors.
    pub async fn safety_numbers(&mut self, peer: &UserId) -> Result<(Vec<SafetyNumber>, Vec<Event>), MessengerError> {
        let events = self.refresh(peer).await?;
        let state = self.profile.read()?;
        let (me, my_device) = self.me();
        let mine = state.keys.identity.public();
        let numbers = state
            .keys
            .devices_of(peer)
            .into_iter()
            .filter(|d| !(d.user_id == me && d.device_id == my_device))
            .map(|d| SafetyNumber {
                number: safety_number(mine, me.as_str(), &d.identity, d.user_id.as_str()),
                user_id: d.user_id,
                device_id: d.device_id,
                our_device_id: my_device,
                changed: d.status == IdentityStatus::Changed,
            })
            .collect();
        Ok((numbers, events))
    }

    /// The devices of `user` whose identity changed and was not accepted yet.
    ///
    /// # Errors
    /// Profile errors.
    pub fn changed_identities(&self, user: &UserId) -> Result<Vec<DeviceId>, MessengerError> {
        Ok(self
            .profile
            .read()?
            .keys
            .devices_of(user)
            .into_iter()
            .filter(|d| d.status == IdentityStatus::Changed)
            .map(|d| d.device_id)
            .collect())
    }

    /// Accepts the current identities of `user`'s devices (after comparing safety numbers), so
    /// that sending to them works again; returns how many changed identities were accepted.
    ///
    /// # Errors
    /// Profile errors.
    pub async fn trust(&mut self, user: &UserId) -> Result<usize, MessengerError> {
        let mut locked = self.profile.lock().await?;
        let accepted = locked.state.keys.accept(user);
        locked.save()?;
        Ok(accepted)
    }
}
