//! Other users' devices as the key directory lists them: which of them the trusted user
//! identity certified (the only ones written to), new sessions, removals, changed identities.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kith_crypto::{
    CryptoError, DeviceCertificate, DeviceRemoval, PreKeyBundle, Session, UserIdentityPublic, VerifiedPreKeyBundle,
};
use kith_proto::keys::KeyBundles;
use kith_proto::{DeviceId, Timestamp, UserId};
use rand_core::CryptoRng;

use super::{
    DeviceList, IdentityStatus, KeyStore, KnownDevice, Notice, PeerDevice, PeerUser, SessionError, push_session,
};

/// One device of a listing, decoded but not yet checked against the trusted identity.
#[derive(Debug, Clone)]
pub(crate) struct ListedDevice {
    pub(crate) device_id: DeviceId,
    /// The bundle and its certificate, or why they could not be decoded.
    pub(crate) keys: Result<(PreKeyBundle, DeviceCertificate), String>,
}

/// A user's device list from the key directory, decoded.
#[derive(Debug, Clone)]
pub(crate) struct DeviceListing {
    /// The user identity the node serves for the account.
    pub(crate) user_identity: Option<UserIdentityPublic>,
    pub(crate) devices: Vec<ListedDevice>,
    /// Removals whose signature verifies (by whichever identity; checked against the trusted
    /// one when applied).
    pub(crate) removals: Vec<DeviceRemoval>,
}

impl DeviceListing {
    /// Decodes what the node served. Undecodable parts are kept as reasons (a device) or
    /// dropped (a removal, an identity) and logged: nothing the node sends is trusted yet.
    pub(crate) fn decode(bundles: &KeyBundles) -> Self {
        let user = &bundles.user_id;
        let user_identity = bundles.user_identity.as_deref().and_then(|text| {
            let decoded = BASE64
                .decode(text)
                .map_err(|e| e.to_string())
                .and_then(|b| UserIdentityPublic::from_bytes(&b).map_err(|e| e.to_string()));
            decoded.map_err(|e| tracing::warn!(%user, error = %e, "ignoring a malformed user identity")).ok()
        });
        let devices = bundles
            .devices
            .iter()
            .map(|d| {
                let bundle = BASE64
                    .decode(d.bundle.as_bytes())
                    .map_err(|e| format!("its bundle is not base64: {e}"))
                    .and_then(|b| PreKeyBundle::from_bytes(&b).map_err(|e| format!("its bundle does not decode: {e}")));
                let certificate = match &d.certificate {
                    None => Err("it has no certificate".to_owned()),
                    Some(text) => BASE64
                        .decode(text.as_bytes())
                        .map_err(|e| format!("its certificate is not base64: {e}"))
                        .and_then(|b| DeviceCertificate::from_bytes(&b).map_err(|e| format!("its certificate: {e}"))),
                };
                ListedDevice { device_id: d.device_id, keys: bundle.and_then(|b| certificate.map(|c| (b, c))) }
            })
            .collect();
        let removals = bundles
            .removals
            .iter()
            .filter_map(|text| {
                let decoded = BASE64
                    .decode(text.as_bytes())
                    .map_err(|e| e.to_string())
                    .and_then(|b| DeviceRemoval::from_bytes(&b).map_err(|e| e.to_string()));
                decoded.map_err(|e| tracing::warn!(%user, error = %e, "ignoring a bad device removal")).ok()
            })
            .collect();
        Self { user_identity, devices, removals }
    }
}

/// What checking a listing against the trusted identity gave.
struct Checked {
    trusted: Option<UserIdentityPublic>,
    verified: Vec<(DeviceId, VerifiedPreKeyBundle)>,
    notices: Vec<Notice>,
    /// Removals by the trusted identity: (device, device key).
    removals: Vec<(DeviceId, [u8; 32])>,
    /// A different identity the node serves for the user (not accepted).
    changed_to: Option<UserIdentityPublic>,
}

impl KeyStore {
    /// Checks every listed device against the identity trusted for `user` (pinning the served
    /// one on first contact, without changing anything yet).
    fn check_listing(&self, user: &UserId, me: (&UserId, DeviceId), listing: &DeviceListing) -> Checked {
        let is_me = user == me.0;
        let pinned = self.trusted(user, me.0);
        let (trusted, changed_to) = match (pinned, listing.user_identity) {
            (None, served) => (served, None),
            (Some(pinned), Some(served)) if served != pinned && !is_me => (Some(pinned), Some(served)),
            (Some(pinned), _) => (Some(pinned), None),
        };
        let mut notices = Vec::new();
        let removals: Vec<(DeviceId, [u8; 32])> = listing
            .removals
            .iter()
            .filter(|r| Some(*r.user_key()) == trusted && r.user_id() == user.as_str())
            .map(|r| (DeviceId(r.device_id()), r.device_key()))
            .collect();
        let mut verified = Vec::new();
        for listed in &listing.devices {
            let device = listed.device_id;
            if is_me && device == me.1 {
                continue;
            }
            let untrusted = |reason: String| Notice::UntrustedDevice { user: user.clone(), device, reason };
            let (bundle, certificate) = match &listed.keys {
                Ok(keys) => keys,
                Err(reason) => {
                    notices.push(untrusted(reason.clone()));
                    continue;
                }
            };
            let Some(trusted) = trusted else {
                notices.push(untrusted(format!("{user} has no user identity")));
                continue;
            };
            if changed_to.is_some_and(|new| *certificate.user_key() == new) {
                // Certified by the new identity, which is not accepted yet: said loudly once,
                // by IdentityChanged.
                continue;
            }
            let device_key = certificate.device().signing_key();
            if removals.contains(&(device, device_key)) || self.removed.contains(&(user.clone(), device, device_key)) {
                tracing::info!(%user, %device, "ignoring a listed device whose removal was signed");
                continue;
            }
            match bundle.verify(certificate, &trusted, user.as_str(), device.0) {
                Ok(bundle) => verified.push((device, bundle)),
                Err(e) => notices.push(untrusted(match e {
                    CryptoError::UntrustedUserIdentity { .. } => {
                        format!("it is signed by another identity than the one trusted for {user}")
                    }
                    other => other.to_string(),
                })),
            }
        }
        Checked { trusted, verified, notices, removals, changed_to }
    }

    /// Whether taking in `listing` would start a session: a new device, a device with a new
    /// certificate, or a device with no session (or one being reset). Only then is it worth
    /// claiming one-time prekeys.
    pub(crate) fn wants_sessions(&self, user: &UserId, me: (&UserId, DeviceId), listing: &DeviceListing) -> bool {
        let checked = self.check_listing(user, me, listing);
        checked.verified.iter().any(|(device, bundle)| self.needs_session(user, *device, bundle))
    }

    fn needs_session(&self, user: &UserId, device: DeviceId, bundle: &VerifiedPreKeyBundle) -> bool {
        self.resets.get(&(user.clone(), device)) == Some(&super::Reset::Needed)
            || match self.devices.get(&(user.clone(), device)) {
                Some(peer) => peer.certificate != *bundle.certificate() || peer.sessions.is_empty(),
                None => true,
            }
    }

    /// Takes in a freshly fetched device list of `user`: pins the user identity on first
    /// contact (or notes a change, which blocks sending until accepted), records signed
    /// removals, starts sessions with certified devices that have none (or are being reset),
    /// and marks devices that are gone, removed or no longer certified as inactive. `me` is
    /// skipped. Devices the trusted identity did not certify are reported, never written to.
    pub(crate) fn apply_listing<R: CryptoRng + ?Sized>(
        &mut self,
        user: &UserId,
        me: (&UserId, DeviceId),
        listing: &DeviceListing,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Vec<Notice>, SessionError> {
        let list_known = self.lists.get(user).is_some_and(|l| l.refreshed_at.is_some())
            || self.devices.keys().any(|(u, _)| u == user);
        let Checked { trusted, verified, mut notices, removals, changed_to } = self.check_listing(user, me, listing);
        // Sessions first, so that a failure leaves nothing half-applied.
        let mut updates = Vec::new();
        for (device, bundle) in &verified {
            let session = if self.needs_session(user, *device, bundle) {
                Some(Session::initiate(&self.identity, &self.certificate, bundle, rng)?)
            } else {
                None
            };
            updates.push((*device, bundle.certificate().clone(), session));
        }
        if user != me.0 {
            match (self.users.get_mut(user), trusted) {
                (None, Some(identity)) => {
                    self.users.insert(user.clone(), PeerUser { identity, changed_to: None });
                }
                (Some(peer), _) => {
                    if let Some(new) = changed_to
                        && peer.changed_to != Some(new)
                    {
                        tracing::warn!(%user, "user identity changed");
                        peer.changed_to = Some(new);
                        notices.push(Notice::IdentityChanged(user.clone()));
                    }
                }
                (None, None) => {}
            }
        }
        for (device, key) in removals {
            if self.removed.insert((user.clone(), device, key))
                && let Some(peer) = self.devices.get(&(user.clone(), device))
                && peer.identity().signing_key() == key
            {
                notices.push(Notice::DeviceRemoved(user.clone(), device));
            }
        }
        let present: Vec<DeviceId> = updates.iter().map(|(d, _, _)| *d).collect();
        for ((u, d), peer) in &mut self.devices {
            if u == user && !present.contains(d) {
                peer.active = false;
            }
        }
        for (device, certificate, session) in updates {
            let key = (user.clone(), device);
            match self.devices.get_mut(&key) {
                Some(peer) => {
                    if peer.certificate != certificate {
                        // Linked again under the same id (new device keys): old sessions are
                        // with keys that are gone.
                        peer.certificate = certificate;
                        peer.sessions.clear();
                        if list_known {
                            notices.push(Notice::NewDevice(user.clone(), device));
                        }
                    }
                    peer.active = true;
                    if let Some(session) = session {
                        push_session(&mut peer.sessions, session);
                    }
                }
                None => {
                    if list_known {
                        notices.push(Notice::NewDevice(user.clone(), device));
                    }
                    self.devices.insert(
                        key.clone(),
                        PeerDevice { certificate, active: true, sessions: session.into_iter().collect() },
                    );
                }
            }
        }
        self.lists.insert(user.clone(), DeviceList { refreshed_at: Some(now), stale: false });
        Ok(notices)
    }

    /// The devices a message to `peer` is encrypted for: `peer`'s active certified devices and
    /// the other active devices of `me`.
    ///
    /// # Errors
    /// [`SessionError::IdentityChanged`] while `peer`'s identity changed and was not accepted;
    /// [`SessionError::NoDevices`] when `peer` has no certified device.
    pub(crate) fn recipients(
        &self,
        peer: &UserId,
        me: (&UserId, DeviceId),
    ) -> Result<Vec<(UserId, DeviceId)>, SessionError> {
        if peer != me.0 && self.users.get(peer).is_some_and(|p| p.changed_to.is_some()) {
            return Err(SessionError::IdentityChanged { user: peer.clone() });
        }
        let mut out = Vec::new();
        for ((user, device), known) in &self.devices {
            let wanted = (user == peer || user == me.0) && !(user == me.0 && *device == me.1);
            if !wanted || !known.active || known.sessions.is_empty() {
                continue;
            }
            let certified = self.trusted(user, me.0) == Some(*known.certificate.user_key());
            let removed = self.removed.contains(&(user.clone(), *device, known.identity().signing_key()));
            if certified && !removed {
                out.push((user.clone(), *device));
            }
        }
        if !out.iter().any(|(user, _)| user == peer) {
            return Err(SessionError::NoDevices(peer.clone()));
        }
        Ok(out)
    }

    /// Accepts `user`'s changed identity: devices certified by the old one are forgotten and
    /// the device list is fetched again. Returns whether there was a change to accept.
    pub(crate) fn accept(&mut self, user: &UserId) -> bool {
        let Some(peer) = self.users.get_mut(user) else { return false };
        let Some(new) = peer.changed_to.take() else { return false };
        peer.identity = new;
        self.devices.retain(|(u, _), d| u != user || *d.certificate.user_key() == new);
        self.mark_stale(user);
        true
    }

    /// Whether `user`'s identity changed and was not accepted.
    pub(crate) fn status(&self, user: &UserId) -> IdentityStatus {
        match self.users.get(user) {
            Some(PeerUser { changed_to: Some(_), .. }) => IdentityStatus::Changed,
            _ => IdentityStatus::Accepted,
        }
    }

    /// `user`'s active certified devices as this profile knows them.
    pub(crate) fn devices_of(&self, user: &UserId, me: &UserId) -> Vec<KnownDevice> {
        let trusted = self.trusted(user, me);
        self.devices
            .iter()
            .filter(|((u, _), peer)| u == user && peer.active && trusted == Some(*peer.certificate.user_key()))
            .map(|((u, d), peer)| KnownDevice { user_id: u.clone(), device_id: *d, identity: peer.identity().clone() })
            .collect()
    }

    /// Records that this device removed one of the account's own devices.
    pub(crate) fn record_own_removal(&mut self, me: &UserId, device: DeviceId) -> Option<DeviceRemoval> {
        let peer = self.devices.get_mut(&(me.clone(), device))?;
        let removal = self.user.remove(me.as_str(), device.0, peer.identity()).ok()?;
        peer.active = false;
        self.removed.insert((me.clone(), device, peer.identity().signing_key()));
        Some(removal)
    }
}
