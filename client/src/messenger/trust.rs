//! Trust: the safety number with a contact (one per pair of users), and accepting a contact's
//! identity that changed.

use kith_crypto::safety_number;
use kith_proto::UserId;

use super::{Event, Messenger, MessengerError, SafetyNumber};
use crate::sessions::{IdentityStatus, SessionError};

impl Messenger {
    /// Fetches `peer`'s current devices and returns the safety number of this user with
    /// `peer`: it covers both users' identities, so it stays the same whichever devices either
    /// links or removes. While `peer`'s identity changed and was not accepted, it is the number
    /// with the new identity (the one to compare before [`Messenger::trust`]).
    ///
    /// # Errors
    /// [`MessengerError::UnknownUser`]; [`SessionError::NoDevices`] when `peer` has no user
    /// identity yet; transport and profile errors.
    pub async fn safety_number(&mut self, peer: &UserId) -> Result<(SafetyNumber, Vec<Event>), MessengerError> {
        let events = self.refresh(peer).await?;
        let state = self.profile.read()?;
        let (me, _) = self.me();
        let mine = state.keys.user.public();
        let known = state.keys.users.get(peer).ok_or_else(|| SessionError::NoDevices(peer.clone()))?;
        let theirs = known.changed_to.unwrap_or(known.identity);
        let number = safety_number(mine, me.as_str(), &theirs, peer.as_str());
        Ok((SafetyNumber { user_id: peer.clone(), number, changed: known.changed_to.is_some() }, events))
    }

    /// Whether `user`'s identity changed and was not accepted yet (nothing is sent to them
    /// until it is).
    ///
    /// # Errors
    /// Profile errors.
    pub fn identity_changed(&self, user: &UserId) -> Result<bool, MessengerError> {
        Ok(self.profile.read()?.keys.status(user) == IdentityStatus::Changed)
    }

    /// Accepts `user`'s changed identity (after comparing safety numbers), so that sending to
    /// them works again: devices certified by the old identity are forgotten and the new ones
    /// are fetched. Returns whether there was a change to accept.
    ///
    /// # Errors
    /// Profile errors; transport errors fetching the new devices.
    pub async fn trust(&mut self, user: &UserId) -> Result<bool, MessengerError> {
        let accepted = {
            let mut locked = self.profile.lock().await?;
            let accepted = locked.state.keys.accept(user);
            locked.save()?;
            accepted
        };
        if accepted {
            self.refresh(user).await?;
        }
        Ok(accepted)
    }
}
