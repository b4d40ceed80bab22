//! Decrypting what other devices sent: first messages start sessions (after their certificate
//! is checked against the identity trusted for the sender), everything else goes to the
//! device's sessions; sessions that cannot decrypt any more are marked for a reset.

use kith_crypto::{CryptoError, Decrypted, MessageInfo, Session, inspect};
use kith_proto::{DeviceId, Timestamp, UserId};

use super::{KeyStore, Notice, PeerDevice, PeerUser, Reset, SessionError, millis, promote, push_session};

impl KeyStore {
    /// Decrypts wire bytes from `user`'s `device`: a first message starts a session (using and
    /// then deleting the one-time prekey it names, and refusing a setup accepted before),
    /// anything else goes to the device's sessions, newest first; the session that decrypts
    /// becomes the one in use. `me` is this account.
    ///
    /// A first message must carry a certificate for exactly that user and device, by the
    /// identity trusted for the user (by this account's own identity for its own devices);
    /// from a contact whose identity differs from the pinned one it is read, and the change is
    /// noted (sending stays blocked until it is accepted).
    pub(crate) fn decrypt(
        &mut self,
        user: &UserId,
        device: DeviceId,
        me: &UserId,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<(Decrypted, Vec<Notice>), SessionError> {
        let key = (user.clone(), device);
        let result = match inspect(bytes)? {
            MessageInfo::PreKey(info) => {
                let certificate = info.certificate();
                let untrusted = |reason: &str| SessionError::UntrustedDevice {
                    user: user.clone(),
                    device,
                    reason: reason.to_owned(),
                };
                if certificate.user_id() != user.as_str() || certificate.device_id() != device.0 {
                    return Err(untrusted("its certificate is for another user or device"));
                }
                let device_key = certificate.device().signing_key();
                if self.removed.contains(&(user.clone(), device, device_key)) {
                    return Err(SessionError::RemovedDevice { user: user.clone(), device });
                }
                let signer = *certificate.user_key();
                let mut notices = Vec::new();
                match self.trusted(user, me) {
                    Some(trusted) if trusted == signer => {}
                    Some(_) if user == me => return Err(untrusted("it is not signed by this account's identity")),
                    Some(_) if self.users.get(user).and_then(|p| p.changed_to) != Some(signer) => {
                        notices.push(Notice::IdentityChanged(user.clone()));
                    }
                    Some(_) | None => {}
                }
                if let Some(peer) = self.devices.get_mut(&key)
                    && let Some(index) = peer.sessions.iter().position(|s| s.matches_prekey_message(&info))
                {
                    let decrypted = peer.sessions[index].decrypt(bytes, millis(now))?;
                    promote(&mut peer.sessions, index);
                    Ok((decrypted, notices))
                } else {
                    let signed = self
                        .signed_prekeys
                        .iter()
                        .find(|r| r.key.id() == info.signed_prekey_id())
                        .ok_or(SessionError::UnknownSignedPreKey(info.signed_prekey_id()))?;
                    let one_time = match info.one_time_prekey_id() {
                        Some(id) => Some(self.one_time_prekeys.get(&id).ok_or(SessionError::UnknownOneTimePreKey(id))?),
                        None => None,
                    };
                    let (session, decrypted) = Session::respond(
                        &self.identity,
                        &self.certificate,
                        &signed.key,
                        one_time,
                        &mut self.replays,
                        bytes,
                        millis(now),
                    )?;
                    if let Some(id) = info.one_time_prekey_id() {
                        self.one_time_prekeys.remove(&id);
                    }
                    self.take_in(user, me, device, session, &mut notices);
                    if !notices.is_empty() {
                        tracing::info!(%user, %device, "first message from a device with news");
                    }
                    match self.users.get_mut(user) {
                        Some(peer) if peer.identity != signer && user != me => peer.changed_to = Some(signer),
                        Some(_) => {}
                        None if user != me => {
                            self.users.insert(user.clone(), PeerUser { identity: signer, changed_to: None });
                        }
                        None => {}
                    }
                    Ok((decrypted, notices))
                }
            }
            _ => {
                let peer =
                    self.devices.get_mut(&key).ok_or_else(|| SessionError::NoSession { user: user.clone(), device })?;
                let mut first_error = None;
                let mut found = None;
                for index in 0..peer.sessions.len() {
                    match peer.sessions[index].decrypt(bytes, millis(now)) {
                        Ok(decrypted) => {
                            found = Some((index, decrypted));
                            break;
                        }
                        // A replay says more than "another session could not open it".
                        Err(e @ CryptoError::DuplicateMessage { .. }) => first_error = Some(e),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                match found {
                    Some((index, decrypted)) => {
                        promote(&mut peer.sessions, index);
                        Ok((decrypted, Vec::new()))
                    }
                    None => Err(first_error
                        .map_or(SessionError::NoSession { user: user.clone(), device }, SessionError::Crypto)),
                }
            }
        };
        let (decrypted, mut notices) = result?;
        // It decrypted: whatever reset was under way is over.
        self.resets.remove(&key);
        if decrypted.lost > 0 {
            notices.push(Notice::MessagesLost { user: user.clone(), device, count: decrypted.lost });
        }
        Ok((decrypted, notices))
    }

    /// Keeps a session accepted from a first message of `user`'s `device`.
    fn take_in(&mut self, user: &UserId, me: &UserId, device: DeviceId, session: Session, notices: &mut Vec<Notice>) {
        let certificate = session.remote_certificate().clone();
        // News only of a device its user's trusted identity certified (a change of identity
        // is told by its own notice).
        let list_known =
            self.devices.keys().any(|(u, _)| u == user) && self.trusted(user, me) == Some(*certificate.user_key());
        match self.devices.get_mut(&(user.clone(), device)) {
            Some(peer) => {
                if peer.certificate != certificate {
                    // Linked again under the same id: old sessions are with keys that are gone.
                    peer.certificate = certificate;
                    peer.sessions.clear();
                }
                peer.active = true;
                push_session(&mut peer.sessions, session);
            }
            None => {
                if list_known && user != me {
                    notices.push(Notice::NewDevice(user.clone(), device));
                }
                self.devices
                    .insert((user.clone(), device), PeerDevice { certificate, active: true, sessions: vec![session] });
            }
        }
    }

    /// Notes that the session with `user`'s `device` cannot decrypt (see
    /// [`SessionError::is_stuck`]); returns whether this is news (the first failure since the
    /// last message that decrypted), which is the one the user is told about.
    pub(crate) fn mark_reset(&mut self, user: &UserId, device: DeviceId) -> bool {
        self.mark_stale(user);
        match self.resets.get(&(user.clone(), device)) {
            Some(_) => false,
            None => {
                self.resets.insert((user.clone(), device), Reset::Needed);
                true
            }
        }
    }

    /// The devices a new session must be started with and announced to.
    pub(crate) fn resets_to_send(&self) -> Vec<(UserId, DeviceId)> {
        self.resets.iter().filter(|(_, r)| **r == Reset::Needed).map(|(k, _)| k.clone()).collect()
    }

    /// Notes that the new session with `user`'s `device` was announced to it.
    pub(crate) fn reset_sent(&mut self, user: &UserId, device: DeviceId) {
        if let Some(reset) = self.resets.get_mut(&(user.clone(), device)) {
            *reset = Reset::Sent;
        }
    }
}
