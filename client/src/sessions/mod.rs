//! The device's end-to-end keys, the user identities it trusts, and its sessions with other
//! devices: pure state, no I/O.
//!
//! A key store holds this account's user identity (every device of the account holds it: it is
//! made at registration and handed over when a device is linked), this device's identity,
//! certificate, signed prekeys, one-time prekey secrets and replay record, and for every other
//! user it talks to the user identity it pinned (trust on first use; a change is loud and
//! blocks sending until accepted). For every other device it has met — the contacts' devices
//! and the user's own other devices, each certified by the trusted user identity — it keeps
//! the certificate and up to [`MAX_SESSIONS_PER_DEVICE`] `kith-crypto` sessions, the one in
//! use first. A device that is not certified by the identity trusted for its user is never
//! written to.
//!
//! Every operation either succeeds or leaves the store as it was; the caller persists the
//! store after each change (see [`crate::profile`]) and never goes back to an older copy.

mod directory;
mod incoming;

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kith_crypto::{
    CryptoError, DeviceCertificate, DeviceIdentity, Linked, OneTimePreKey, OneTimePreKeyPublic, PublicIdentity,
    ReplayRecord, Session, SignedPreKey, UserIdentity, UserIdentityPublic,
};
use kith_proto::keys::KeyUpload;
use kith_proto::{DeviceId, Timestamp, UserId};
use rand_core::CryptoRng;

pub(crate) use directory::DeviceListing;
#[cfg(test)]
pub(crate) use directory::ListedDevice;

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
    /// The user has no device with published keys that their user identity certified.
    #[error("{0} has no device with end-to-end encryption keys (they must log in with an encrypting client first)")]
    NoDevices(UserId),
    /// The user identity of a recipient differs from the one this profile trusts; sending
    /// waits until the user accepts it.
    #[error("the identity of {user} changed; compare safety numbers, then accept it")]
    IdentityChanged {
        /// Whose identity.
        user: UserId,
    },
    /// A message comes from a device that the user identity trusted for its user did not
    /// certify (or certified for another user or device): it is not read.
    #[error("device {device} of {user} is not signed by the identity trusted for {user}: {reason}")]
    UntrustedDevice {
        /// Whose device it claims to be.
        user: UserId,
        /// Which.
        device: DeviceId,
        /// What is wrong with its certificate.
        reason: String,
    },
    /// A message comes from a device whose removal its user signed.
    #[error("device {device} of {user} was removed by {user}; its messages are not read")]
    RemovedDevice {
        /// Whose device.
        user: UserId,
        /// Which.
        device: DeviceId,
    },
}

impl SessionError {
    /// Whether the session the message belongs to cannot decrypt anything from that device
    /// any more (it lost track, or never had the keys): a new session must be set up. A
    /// tampered or replayed ratchet message is not such a failure. A first message whose
    /// setup was accepted before is: it is a replay, or the sender still writes in a session
    /// this device no longer keeps, and a new session costs nothing but a handshake.
    pub fn is_stuck(&self) -> bool {
        matches!(
            self,
            Self::NoSession { .. }
                | Self::UnknownSignedPreKey(_)
                | Self::UnknownOneTimePreKey(_)
                | Self::Crypto(
                    CryptoError::SkipTooLarge { .. }
                        | CryptoError::SessionMismatch { .. }
                        | CryptoError::ReplayedFirstMessage { .. }
                )
        )
    }
}

/// Something learned about another user or device while handling keys or messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A user's identity differs from the one this profile trusts.
    IdentityChanged(UserId),
    /// A device of a user whose devices were known appeared (certified by the user).
    NewDevice(UserId, DeviceId),
    /// A listed device is not certified by the identity trusted for its user: not written to.
    UntrustedDevice {
        /// Whose device it claims to be.
        user: UserId,
        /// Which.
        device: DeviceId,
        /// Why it is not trusted.
        reason: String,
    },
    /// The user signed the removal of one of their devices: it is not written to any more.
    DeviceRemoved(UserId, DeviceId),
    /// Messages from a device were lost: their keys were evicted or expired before they came.
    MessagesLost {
        /// Whose device.
        user: UserId,
        /// Which.
        device: DeviceId,
        /// How many.
        count: u64,
    },
}

/// Whether a user's identity is the one this profile has accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityStatus {
    /// Seen first (trust on first use) or accepted after a change.
    Accepted,
    /// Differs from the identity this profile knew for the user; shown loudly, and nothing
    /// is sent to the user until it is accepted.
    Changed,
}

/// A signed prekey and when it was made.
pub(crate) struct SignedPreKeyRecord {
    pub(crate) key: SignedPreKey,
    pub(crate) created_at: Timestamp,
}

/// The user identity this profile trusts for another user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerUser {
    /// Pinned on first contact, replaced only when the user accepts a change.
    pub(crate) identity: UserIdentityPublic,
    /// A different identity the user was seen with, not accepted yet.
    pub(crate) changed_to: Option<UserIdentityPublic>,
}

/// What this profile knows about one remote device.
pub(crate) struct PeerDevice {
    /// The certificate of the trusted user identity for it (which holds its identity).
    pub(crate) certificate: DeviceCertificate,
    /// Whether the device was in the user's last device list (or wrote since): messages are
    /// encrypted for active devices only.
    pub(crate) active: bool,
    /// Newest first; the first one encrypts.
    pub(crate) sessions: Vec<Session>,
}

impl PeerDevice {
    pub(crate) fn identity(&self) -> &PublicIdentity {
        self.certificate.device()
    }
}

/// When a user's device list was last fetched.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DeviceList {
    pub(crate) refreshed_at: Option<Timestamp>,
    /// Something (a `keys.changed` frame, an unknown device in an envelope) says the list may
    /// be out of date.
    pub(crate) stale: bool,
}

/// A remote device whose session cannot decrypt: a new session is being set up with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reset {
    /// A message from it could not be decrypted; a new session must be started and announced.
    Needed,
    /// The new session was started and announced to the device; its next message heals.
    Sent,
}

/// This device's keys, the identities it trusts and its sessions.
pub(crate) struct KeyStore {
    /// The account's user identity (secret).
    pub(crate) user: UserIdentity,
    pub(crate) identity: DeviceIdentity,
    /// The user identity's certificate for this device.
    pub(crate) certificate: DeviceCertificate,
    /// Newest first: the first is published, older ones stay for a grace period.
    pub(crate) signed_prekeys: Vec<SignedPreKeyRecord>,
    pub(crate) next_signed_prekey_id: u32,
    pub(crate) one_time_prekeys: BTreeMap<u32, OneTimePreKey>,
    pub(crate) next_one_time_prekey_id: u32,
    /// Setups of first messages accepted, for as long as their signed prekey is kept.
    pub(crate) replays: ReplayRecord,
    /// The identity trusted for each other user.
    pub(crate) users: BTreeMap<UserId, PeerUser>,
    pub(crate) devices: BTreeMap<(UserId, DeviceId), PeerDevice>,
    /// Devices whose removal their user signed: (user, device id, device signing key).
    pub(crate) removed: BTreeSet<(UserId, DeviceId, [u8; 32])>,
    pub(crate) lists: BTreeMap<UserId, DeviceList>,
    /// Devices a new session is being set up with.
    pub(crate) resets: BTreeMap<(UserId, DeviceId), Reset>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("user", self.user.public())
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
}

/// The millisecond clock `kith-crypto` takes, from a timestamp.
pub(crate) fn millis(now: Timestamp) -> u64 {
    u64::try_from(now.as_millis()).unwrap_or(0)
}

impl KeyStore {
    /// A new account's first device: a new user identity, a device identity it certifies as
    /// device `device` of `me`, and a first signed prekey, no one-time prekeys yet.
    pub(crate) fn generate<R: CryptoRng + ?Sized>(
        me: &UserId,
        device: DeviceId,
        now: Timestamp,
        rng: &mut R,
    ) -> Result<Self, SessionError> {
        let user = UserIdentity::generate(rng);
        let identity = DeviceIdentity::generate(rng);
        let certificate = user.certify(me.as_str(), device.0, identity.public())?;
        Ok(Self::with(user, identity, certificate, now, rng))
    }

    /// A device that was just linked: its own identity and what the linking device sent.
    pub(crate) fn linked<R: CryptoRng + ?Sized>(
        identity: DeviceIdentity,
        linked: Linked,
        now: Timestamp,
        rng: &mut R,
    ) -> Self {
        Self::with(linked.user_identity, identity, linked.certificate, now, rng)
    }

    fn with<R: CryptoRng + ?Sized>(
        user: UserIdentity,
        identity: DeviceIdentity,
        certificate: DeviceCertificate,
        now: Timestamp,
        rng: &mut R,
    ) -> Self {
        let signed = SignedPreKey::generate(1, &identity, rng);
        Self {
            user,
            identity,
            certificate,
            signed_prekeys: vec![SignedPreKeyRecord { key: signed, created_at: now }],
            next_signed_prekey_id: 2,
            one_time_prekeys: BTreeMap::new(),
            next_one_time_prekey_id: 1,
            replays: ReplayRecord::new(),
            users: BTreeMap::new(),
            devices: BTreeMap::new(),
            removed: BTreeSet::new(),
            lists: BTreeMap::new(),
            resets: BTreeMap::new(),
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
    /// replaced ones older than the grace period (with the replay records of first messages
    /// made with them). Returns whether a new one was made.
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
        let kept: Vec<u32> = self.signed_prekeys.iter().map(|r| r.key.id()).collect();
        self.replays.retain_signed_prekeys(&kept);
        due
    }

    /// The upload that publishes this device's identity, certificate, current signed prekey
    /// and `one_time`. `reset` replaces the account's user identity on the node.
    pub(crate) fn upload(&self, one_time: &[OneTimePreKeyPublic], reset: bool) -> KeyUpload {
        let signed = self.signed_prekeys.first().map(|r| r.key.public().to_bytes()).unwrap_or_default();
        KeyUpload {
            identity: BASE64.encode(self.identity.public().to_bytes()),
            signed_pre_key: BASE64.encode(signed),
            one_time_pre_keys: one_time.iter().map(|k| BASE64.encode(k.to_bytes())).collect(),
            certificate: BASE64.encode(self.certificate.to_bytes()),
            reset_user_identity: reset,
        }
    }

    /// The user identity trusted for `user`: ours for our own account, the pinned one for
    /// others.
    pub(crate) fn trusted(&self, user: &UserId, me: &UserId) -> Option<UserIdentityPublic> {
        if user == me { Some(*self.user.public()) } else { self.users.get(user).map(|p| p.identity) }
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

    /// Drops skipped keys that are too old in every session; returns how many.
    pub(crate) fn expire_skipped_keys(&mut self, now: Timestamp) -> u64 {
        let now = millis(now);
        self.devices.values_mut().flat_map(|d| d.sessions.iter_mut()).map(|s| s.expire_skipped_keys(now)).sum()
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
pub(crate) mod tests;
