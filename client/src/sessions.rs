//! The device's end-to-end keys and its sessions with other devices: pure state, no I/O.
//!
//! A key store holds this device's identity, signed prekeys and one-time prekey secrets, and
//! for every other device it has met (the conversation partners' devices and the user's own
//! other devices) the identity it knows and up to [`MAX_SESSIONS_PER_DEVICE`] `kith-crypto`
//! sessions, the one in use first. Keeping a few older sessions lets messages of a session
//! that was replaced (both devices set one up at once, or a late message) still decrypt.
//!
//! Every operation either succeeds or leaves the store as it was; the caller persists the
//! store after each change (see [`crate::profile`]) and never goes back to an older copy.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kith_crypto::{
    CryptoError, DeviceIdentity, MessageInfo, OneTimePreKey, OneTimePreKeyPublic, PublicIdentity, Session,
    SignedPreKey, VerifiedPreKeyBundle, inspect,
};
use kith_proto::keys::KeyUpload;
use kith_proto::{DeviceId, Timestamp, UserId};
use rand_core::CryptoRng;

/// Sessions kept per remote device (the one in use and older ones that may still get messages).
pub const MAX_SESSIONS_PER_DEVICE: usize = 5;

/// One-time prekey secrets kept at most (the node keeps at most 500 unclaimed public halves;
/// the rest are claimed keys whose first message may still come). The oldest go first.
pub const MAX_ONE_TIME_PREKEYS: usize = 1000;

/// How often the signed prekey is replaced.
pub const SIGNED_PREKEY_ROTATION_MS: i64 = 7 * 24 * 3600 * 1000;

/// How long a replaced signed prekey is kept for first messages that were made with it.
pub const SIGNED_PREKEY_GRACE_MS: i64 = 30 * 24 * 3600 * 1000;

/// How long a user's device list is trusted before it is fetched again when sending.
pub const DEVICE_LIST_MAX_AGE_MS: i64 = 10 * 60 * 1000;

/// Why a session operation failed. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The protocol rejected the message (tampered, replayed, not for this session …).
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// No session with the device and the message cannot start one.
    #[error("no session with device {device} of {user} (the message is not a first message)")]
    NoSession {
        /// Whose device.
        user: UserId,
        /// Which.
        device: DeviceId,
    },
    /// A first message names a signed prekey this device does not have (any more).
    #[error("the message was made for signed prekey {0}, which this device does not have")]
    UnknownSignedPreKey(u32),
    /// A first message names a one-time prekey this device does not have (used or dropped).
    #[error("the message was made with one-time prekey {0}, which this device does not have (already used?)")]
    UnknownOneTimePreKey(u32),
    /// The user has no device with published keys.
    #[error("{0} has no device with end-to-end encryption keys (they must log in with an encrypting client first)")]
    NoDevices(UserId),
    /// One or more devices of a recipient have a different identity key than before; sending
    /// waits until the user accepts it.
    #[error("the identity key of {user} changed (device {devices:?})")]
    IdentityChanged {
        /// Whose identity.
        user: UserId,
        /// Which of their devices.
        devices: Vec<DeviceId>,
    },
}

/// Whether a remote device's identity is the one this profile has accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityStatus {
    /// Seen first (trust on first use) or accepted after a change.
    Accepted,
    /// Differs from the identity this profile knew for the device; shown loudly, and nothing
    /// is sent to the user until it is accepted.
    Changed,
}

/// Something learned about another device while handling keys or messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A known device now has a different identity key.
    IdentityChanged(UserId, DeviceId),
    /// A device of a user whose devices were known appeared.
    NewDevice(UserId, DeviceId),
}

/// A signed prekey and when it was made.
pub(crate) struct SignedPreKeyRecord {
    pub(crate) key: SignedPreKey,
    pub(crate) created_at: Timestamp,
}

/// What this profile knows about one remote device.
pub(crate) struct PeerDevice {
    pub(crate) identity: PublicIdentity,
    pub(crate) status: IdentityStatus,
    /// Whether the device was in the user's last device list (or wrote since): messages are
    /// encrypted for active devices only.
    pub(crate) active: bool,
    /// Newest first; the first one encrypts.
    pub(crate) sessions: Vec<Session>,
}

/// When a user's device list was last fetched.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DeviceList {
    pub(crate) refreshed_at: Option<Timestamp>,
    /// Something (a `keys.changed` frame, an unknown device in an envelope) says the list may
    /// be out of date.
    pub(crate) stale: bool,
}

/// This device's keys and sessions.
pub(crate) struct KeyStore {
    pub(crate) identity: DeviceIdentity,
    /// Newest first: the first is published, older ones stay for a grace period.
    pub(crate) signed_prekeys: Vec<SignedPreKeyRecord>,
    pub(crate) next_signed_prekey_id: u32,
    pub(crate) one_time_prekeys: BTreeMap<u32, OneTimePreKey>,
    pub(crate) next_one_time_prekey_id: u32,
    pub(crate) devices: BTreeMap<(UserId, DeviceId), PeerDevice>,
    pub(crate) lists: BTreeMap<UserId, DeviceList>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("identity", self.identity.public())
            .field("signed_prekeys", &self.signed_prekeys.len())
            .field("one_time_prekeys", &self.one_time_prekeys.len())
            .field("devices", &self.devices.len())
            .finish_non_exhaustive()
    }
}

/// One remote device as shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownDevice {
    /// Whose device.
    pub user_id: UserId,
    /// Which.
    pub device_id: DeviceId,
    /// Its identity as this profile knows it.
    pub identity: PublicIdentity,
    /// Whether that identity is accepted.
    pub status: IdentityStatus,
}

impl KeyStore {
    /// A new device: a fresh identity and a first signed prekey, no one-time prekeys yet.
    pub(crate) fn generate<R: CryptoRng + ?Sized>(now: Timestamp, rng: &mut R) -> Self {
        let identity = DeviceIdentity::generate(rng);
        let signed = SignedPreKey::generate(1, &identity, rng);
        Self {
            identity,
            signed_prekeys: vec![SignedPreKeyRecord { key: signed, created_at: now }],
            next_signed_prekey_id: 2,
            one_time_prekeys: BTreeMap::new(),
            next_one_time_prekey_id: 1,
            devices: BTreeMap::new(),
            lists: BTreeMap::new(),
        }
    }

    /// Makes `count` new one-time prekeys, keeps their secrets and returns the public halves.
    pub(crate) fn new_one_time_prekeys<R: CryptoRng + ?Sized>(
        &mut self,
        count: u32,
        rng: &mut R,
    ) -> Result<Vec<OneTimePreKeyPublic>, SessionError> {
        let batch = OneTimePreKey::generate_batch(self.next_one_time_prekey_id, count, rng)?;
        // `generate_batch` checked that start + count fits.
        self.next_one_time_prekey_id = self.next_one_time_prekey_id.saturating_add(count);
        let publics = batch.iter().map(|k| k.public().clone()).collect();
        for key in batch {
            self.one_time_prekeys.insert(key.id(), key);
        }
        while self.one_time_prekeys.len() > MAX_ONE_TIME_PREKEYS {
            self.one_time_prekeys.pop_first();
        }
        Ok(publics)
    }

    /// Replaces the signed prekey when it is older than [`SIGNED_PREKEY_ROTATION_MS`], and drops
    /// replaced ones older than the grace period. Returns whether a new one was made.
    pub(crate) fn rotate_signed_prekey_if_due<R: CryptoRng + ?Sized>(&mut self, now: Timestamp, rng: &mut R) -> bool {
        let due = self.signed_prekeys.first().is_none_or(|current| {
            now.as_millis().saturating_sub(current.created_at.as_millis()) >= SIGNED_PREKEY_ROTATION_MS
        });
        if due {
            let id = self.next_signed_prekey_id;
            self.next_signed_prekey_id = id.wrapping_add(1).max(1);
            let key = SignedPreKey::generate(id, &self.identity, rng);
            self.signed_prekeys.insert(0, SignedPreKeyRecord { key, created_at: now });
        }
        // A replaced key is kept until GRACE after it was replaced, i.e. after its successor
        // was made.
        let mut keep = 1;
        while keep < self.signed_prekeys.len() {
            let replaced_at = self.signed_prekeys[keep - 1].created_at.as_millis();
            if now.as_millis().saturating_sub(replaced_at) > SIGNED_PREKEY_GRACE_MS {
                break;
            }
            keep += 1;
        }
        self.signed_prekeys.truncate(keep);
        due
    }

    /// The upload that publishes this device's identity, current signed prekey and `one_time`.
    pub(crate) fn upload(&self, one_time: &[OneTimePreKeyPublic]) -> KeyUpload {
        let signed = self.signed_prekeys.first().map(|r| r.key.public().to_bytes()).unwrap_or_default();
        KeyUpload {
            identity: BASE64.encode(self.identity.public().to_bytes()),
            signed_pre_key: BASE64.encode(signed),
            one_time_pre_keys: one_time.iter().map(|k| BASE64.encode(k.to_bytes())).collect(),
        }
    }

    /// Whether `user`'s device list should be fetched before encrypting for them.
    pub(crate) fn needs_refresh(&self, user: &UserId, now: Timestamp) -> bool {
        match self.lists.get(user) {
            None => true,
            Some(list) => {
                list.stale
                    || list
                        .refreshed_at
                        .is_none_or(|at| now.as_millis().saturating_sub(at.as_millis()) > DEVICE_LIST_MAX_AGE_MS)
            }
        }
    }

    /// Notes that `user`'s device list may be out of date.
    pub(crate) fn mark_stale(&mut self, user: &UserId) {
        self.lists.entry(user.clone()).or_default().stale = true;
    }

    /// Whether this profile knows `user`'s `device`.
    pub(crate) fn knows(&self, user: &UserId, device: DeviceId) -> bool {
        self.devices.contains_key(&(user.clone(), device))
    }

    /// Whether taking in `bundles` (a device list of `user`) would start a session: a new
    /// device, a changed identity, or a device with no session. Only then is it worth claiming
    /// one-time prekeys.
    pub(crate) fn wants_sessions(
        &self,
        user: &UserId,
        me: (&UserId, DeviceId),
        bundles: &[(DeviceId, VerifiedPreKeyBundle)],
    ) -> bool {
        bundles.iter().filter(|(device, _)| !(user == me.0 && *device == me.1)).any(|(device, bundle)| {
            match self.devices.get(&(user.clone(), *device)) {
                Some(peer) => peer.identity != *bundle.identity() || peer.sessions.is_empty(),
                None => true,
            }
        })
    }

    /// Takes in a freshly claimed device list of `user` (bundles already verified): remembers
    /// new devices, flags changed identities, starts sessions where there are none, and marks
    /// devices that are gone as inactive. `me` is skipped.
    pub(crate) fn apply_bundles<R: CryptoRng + ?Sized>(
        &mut self,
        user: &UserId,
        me: (&UserId, DeviceId),
        bundles: &[(DeviceId, VerifiedPreKeyBundle)],
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Vec<Notice>, SessionError> {
        let list_known = self.lists.get(user).is_some_and(|l| l.refreshed_at.is_some())
            || self.devices.keys().any(|(u, _)| u == user);
        let mut notices = Vec::new();
        // Sessions first, so that a failure leaves nothing half-applied.
        let mut updates = Vec::new();
        for (device, bundle) in bundles {
            if user == me.0 && *device == me.1 {
                continue;
            }
            let identity = bundle.identity();
            let existing = self.devices.get(&(user.clone(), *device));
            let needs_session = match existing {
                Some(peer) => peer.identity != *identity || peer.sessions.is_empty(),
                None => true,
            };
            let session = if needs_session { Some(Session::initiate(&self.identity, bundle, rng)?) } else { None };
            updates.push((*device, identity.clone(), session));
        }
        let present: Vec<DeviceId> = updates.iter().map(|(d, _, _)| *d).collect();
        for ((u, d), peer) in &mut self.devices {
            if u == user && !present.contains(d) {
                peer.active = false;
            }
        }
        for (device, identity, session) in updates {
            match self.devices.get_mut(&(user.clone(), device)) {
                Some(peer) => {
                    if peer.identity != identity {
                        tracing::warn!(%user, %device, "device identity changed");
                        peer.identity = identity;
                        peer.status = IdentityStatus::Changed;
                        notices.push(Notice::IdentityChanged(user.clone(), device));
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
                        (user.clone(), device),
                        PeerDevice {
                            identity,
                            status: IdentityStatus::Accepted,
                            active: true,
                            sessions: session.into_iter().collect(),
                        },
                    );
                }
            }
        }
        self.lists.insert(user.clone(), DeviceList { refreshed_at: Some(now), stale: false });
        Ok(notices)
    }

    /// The devices a message to `peer` is encrypted for: `peer`'s active devices and the other
    /// active devices of `me`.
    ///
    /// # Errors
    /// [`SessionError::IdentityChanged`] while any of them has an unaccepted new identity;
    /// [`SessionError::NoDevices`] when `peer` has none.
    pub(crate) fn recipients(
        &self,
        peer: &UserId,
        me: (&UserId, DeviceId),
    ) -> Result<Vec<(UserId, DeviceId)>, SessionError> {
        let mut out = Vec::new();
        let mut changed: BTreeMap<&UserId, Vec<DeviceId>> = BTreeMap::new();
        for ((user, device), known) in &self.devices {
            let wanted = (user == peer || user == me.0) && !(user == me.0 && *device == me.1);
            if !wanted || !known.active || known.sessions.is_empty() {
                continue;
            }
            if known.status == IdentityStatus::Changed {
                changed.entry(user).or_default().push(*device);
            }
            out.push((user.clone(), *device));
        }
        if let Some((user, devices)) = changed.into_iter().next() {
            return Err(SessionError::IdentityChanged { user: user.clone(), devices });
        }
        if !out.iter().any(|(user, _)| user == peer) {
            return Err(SessionError::NoDevices(peer.clone()));
        }
        Ok(out)
    }

    /// Encrypts `plaintext` for `user`'s `device` with the session in use.
    pub(crate) fn encrypt<R: CryptoRng + ?Sized>(
        &mut self,
        user: &UserId,
        device: DeviceId,
        plaintext: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, SessionError> {
        let no_session = || SessionError::NoSession { user: user.clone(), device };
        let peer = self.devices.get_mut(&(user.clone(), device)).ok_or_else(no_session)?;
        let session = peer.sessions.first_mut().ok_or_else(no_session)?;
        Ok(session.encrypt(plaintext, rng)?)
    }

    /// Decrypts wire bytes from `user`'s `device`: a first message starts a session (using and
    /// then deleting the one-time prekey it names), anything else goes to the device's sessions,
    /// newest first; the session that decrypts becomes the one in use.
    pub(crate) fn decrypt(
        &mut self,
        user: &UserId,
        device: DeviceId,
        bytes: &[u8],
    ) -> Result<(Vec<u8>, Vec<Notice>), SessionError> {
        let key = (user.clone(), device);
        match inspect(bytes)? {
            MessageInfo::PreKey(info) => {
                if let Some(peer) = self.devices.get_mut(&key)
                    && let Some(index) = peer.sessions.iter().position(|s| s.matches_prekey_message(&info))
                {
                    let plaintext = peer.sessions[index].decrypt(bytes)?;
                    promote(&mut peer.sessions, index);
                    return Ok((plaintext, Vec::new()));
                }
                let signed = self
                    .signed_prekeys
                    .iter()
                    .find(|r| r.key.id() == info.signed_prekey_id())
                    .ok_or(SessionError::UnknownSignedPreKey(info.signed_prekey_id()))?;
                let one_time = match info.one_time_prekey_id() {
                    Some(id) => Some(self.one_time_prekeys.get(&id).ok_or(SessionError::UnknownOneTimePreKey(id))?),
                    None => None,
                };
                let (session, plaintext) = Session::respond(&self.identity, &signed.key, one_time, bytes)?;
                if let Some(id) = info.one_time_prekey_id() {
                    self.one_time_prekeys.remove(&id);
                }
                let sender = info.sender().clone();
                let list_known = self.devices.keys().any(|(u, _)| u == user);
                let mut notices = Vec::new();
                match self.devices.get_mut(&key) {
                    Some(peer) => {
                        if peer.identity != sender {
                            tracing::warn!(%user, %device, "device identity changed");
                            peer.identity = sender;
                            peer.status = IdentityStatus::Changed;
                            notices.push(Notice::IdentityChanged(user.clone(), device));
                        }
                        peer.active = true;
                        push_session(&mut peer.sessions, session);
                    }
                    None => {
                        if list_known {
                            notices.push(Notice::NewDevice(user.clone(), device));
                        }
                        self.devices.insert(
                            key,
                            PeerDevice {
                                identity: sender,
                                status: IdentityStatus::Accepted,
                                active: true,
                                sessions: vec![session],
                            },
                        );
                    }
                }
                Ok((plaintext, notices))
            }
            _ => {
                let peer =
                    self.devices.get_mut(&key).ok_or_else(|| SessionError::NoSession { user: user.clone(), device })?;
                let mut first_error = None;
                for index in 0..peer.sessions.len() {
                    match peer.sessions[index].decrypt(bytes) {
                        Ok(plaintext) => {
                            promote(&mut peer.sessions, index);
                            return Ok((plaintext, Vec::new()));
                        }
                        // A replay says more than "another session could not open it".
                        Err(e @ CryptoError::DuplicateMessage { .. }) => first_error = Some(e),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                Err(first_error.map_or(SessionError::NoSession { user: user.clone(), device }, SessionError::Crypto))
            }
        }
    }

    /// Accepts the current identities of `user`'s devices; returns how many were changed.
    pub(crate) fn accept(&mut self, user: &UserId) -> usize {
        let mut accepted = 0;
        for ((u, _), peer) in &mut self.devices {
            if u == user && peer.status == IdentityStatus::Changed {
                peer.status = IdentityStatus::Accepted;
                accepted += 1;
            }
        }
        accepted
    }

    /// `user`'s active devices as this profile knows them.
    pub(crate) fn devices_of(&self, user: &UserId) -> Vec<KnownDevice> {
        self.devices
            .iter()
            .filter(|((u, _), peer)| u == user && peer.active)
            .map(|((u, d), peer)| KnownDevice {
                user_id: u.clone(),
                device_id: *d,
                identity: peer.identity.clone(),
                status: peer.status,
            })
            .collect()
    }
}

fn push_session(sessions: &mut Vec<Session>, session: Session) {
    sessions.insert(0, session);
    sessions.truncate(MAX_SESSIONS_PER_DEVICE);
}

fn promote(sessions: &mut Vec<Session>, index: usize) {
    if index > 0 {
        let session = sessions.remove(index);
        sessions.insert(0, session);
    }
}

#[cfg(test)]
mod tests {
    use kith_crypto::PreKeyBundle;
    use rand_core::UnwrapErr;

    use super::*;

    fn rng() -> UnwrapErr<getrandom::SysRng> {
        UnwrapErr(getrandom::SysRng)
    }

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn bundle_of(store: &mut KeyStore) -> VerifiedPreKeyBundle {
        let one_time = store.new_one_time_prekeys(1, &mut rng()).unwrap().pop();
        PreKeyBundle::new(store.identity.public().clone(), store.signed_prekeys[0].key.public().clone(), one_time)
            .verify()
            .unwrap()
    }

    #[test]
    fn two_stores_talk_and_a_changed_identity_blocks_sending() {
        let now = Timestamp::now();
        let (alice, bob) = (user("alice@t"), user("bob@t"));
        let mut a = KeyStore::generate(now, &mut rng());
        let mut b = KeyStore::generate(now, &mut rng());
        let notices =
            a.apply_bundles(&bob, (&alice, DeviceId(1)), &[(DeviceId(2), bundle_of(&mut b))], now, &mut rng());
        assert_eq!(notices.unwrap(), vec![], "first contact is quiet");
        assert_eq!(a.recipients(&bob, (&alice, DeviceId(1))).unwrap(), vec![(bob.clone(), DeviceId(2))]);
        let wire = a.encrypt(&bob, DeviceId(2), b"hi", &mut rng()).unwrap();
        let (plain, _) = b.decrypt(&alice, DeviceId(1), &wire).unwrap();
        assert_eq!(plain, b"hi");
        assert!(b.one_time_prekeys.is_empty(), "the one-time prekey was used up");
        assert!(matches!(
            b.decrypt(&alice, DeviceId(1), &wire),
            Err(SessionError::Crypto(CryptoError::DuplicateMessage { .. }))
        ));
        let reply = b.encrypt(&alice, DeviceId(1), b"hello", &mut rng()).unwrap();
        assert_eq!(a.decrypt(&bob, DeviceId(2), &reply).unwrap().0, b"hello");

        // Bob reinstalls on the same device.
        let mut b2 = KeyStore::generate(now, &mut rng());
        let notices = a
            .apply_bundles(&bob, (&alice, DeviceId(1)), &[(DeviceId(2), bundle_of(&mut b2))], now, &mut rng())
            .unwrap();
        assert_eq!(notices, vec![Notice::IdentityChanged(bob.clone(), DeviceId(2))]);
        assert!(matches!(
            a.recipients(&bob, (&alice, DeviceId(1))),
            Err(SessionError::IdentityChanged { devices, .. }) if devices == vec![DeviceId(2)]
        ));
        assert_eq!(a.accept(&bob), 1);
        let wire = a.encrypt(&bob, DeviceId(2), b"again", &mut rng()).unwrap();
        assert_eq!(b2.decrypt(&alice, DeviceId(1), &wire).unwrap().0, b"again");
    }

    #[test]
    fn crossed_session_setups_still_decrypt_both_ways() {
        let now = Timestamp::now();
        let (alice, bob) = (user("alice@t"), user("bob@t"));
        let mut a = KeyStore::generate(now, &mut rng());
        let mut b = KeyStore::generate(now, &mut rng());
        let for_b = bundle_of(&mut b);
        let for_a = bundle_of(&mut a);
        a.apply_bundles(&bob, (&alice, DeviceId(1)), &[(DeviceId(2), for_b)], now, &mut rng()).unwrap();
        b.apply_bundles(&alice, (&bob, DeviceId(2)), &[(DeviceId(1), for_a)], now, &mut rng()).unwrap();
        let from_a = a.encrypt(&bob, DeviceId(2), b"a1", &mut rng()).unwrap();
        let from_b = b.encrypt(&alice, DeviceId(1), b"b1", &mut rng()).unwrap();
        assert_eq!(b.decrypt(&alice, DeviceId(1), &from_a).unwrap().0, b"a1");
        assert_eq!(a.decrypt(&bob, DeviceId(2), &from_b).unwrap().0, b"b1");
        for i in 0..3 {
            let m = a.encrypt(&bob, DeviceId(2), format!("a{i}").as_bytes(), &mut rng()).unwrap();
            assert_eq!(b.decrypt(&alice, DeviceId(1), &m).unwrap().0, format!("a{i}").as_bytes());
            let m = b.encrypt(&alice, DeviceId(1), format!("b{i}").as_bytes(), &mut rng()).unwrap();
            assert_eq!(a.decrypt(&bob, DeviceId(2), &m).unwrap().0, format!("b{i}").as_bytes());
        }
    }

    #[test]
    fn signed_prekeys_rotate_and_old_ones_expire() {
        let t0 = Timestamp::from_millis(1_000_000_000_000);
        let mut store = KeyStore::generate(t0, &mut rng());
        assert!(!store.rotate_signed_prekey_if_due(t0, &mut rng()));
        let t1 = Timestamp::from_millis(t0.as_millis() + SIGNED_PREKEY_ROTATION_MS);
        assert!(store.rotate_signed_prekey_if_due(t1, &mut rng()));
        assert_eq!(store.signed_prekeys.iter().map(|r| r.key.id()).collect::<Vec<_>>(), vec![2, 1]);
        let t2 = Timestamp::from_millis(t1.as_millis() + SIGNED_PREKEY_GRACE_MS + 1);
        assert!(store.rotate_signed_prekey_if_due(t2, &mut rng()));
        assert_eq!(store.signed_prekeys.iter().map(|r| r.key.id()).collect::<Vec<_>>(), vec![3, 2]);
    }
}
