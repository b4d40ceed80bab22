//! Everything a profile persists besides its history, and its on-disk form (`state.json`).
//!
//! Secrets are stored as standard base64 of their `kith-crypto` encodings; the file is
//! replaced atomically and readable by its owner only (see [`crate::profile`]).

use std::collections::{BTreeMap, HashSet, VecDeque};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kith_crypto::{
    DeviceCertificate, DeviceIdentity, OneTimePreKey, ReplayRecord, Session, SignedPreKey, UserIdentity,
    UserIdentityPublic, Zeroizing,
};
use kith_proto::{DeviceId, MessageId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

use crate::sessions::{DeviceList, KeyStore, PeerDevice, PeerUser, Reset, SignedPreKeyRecord};

/// The version of `state.json` this library writes and reads: 2, the first with user
/// identities (end-to-end protocol version 2). Version 1 is refused.
pub const STATE_VERSION: u32 = 2;

/// How many processed message ids are remembered, to acknowledge a redelivery (an ack that
/// did not reach the node) without decrypting it twice. Redeliveries come first on the next
/// connect, so only the last few matter; an id forgotten too early costs a duplicate
/// "undecryptable (replay)" line that the history hides behind the original.
pub const PROCESSED_IDS_KEPT: usize = 1000;

/// The account a profile belongs to.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// The node's base URL.
    pub server: String,
    /// The user.
    pub user_id: UserId,
    /// This device.
    pub device_id: DeviceId,
    /// The bearer token from the last login.
    pub token: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("server", &self.server)
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A message encrypted and persisted but not yet confirmed by the node: it is sent again,
/// with the same `clientMessageId` (so the node stores it once), until the node answers.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Outgoing {
    pub(crate) client_message_id: String,
    pub(crate) to: UserId,
    pub(crate) text: String,
    /// The envelope, exactly as it will be sent.
    pub(crate) message: String,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("client_message_id", &self.client_message_id)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

/// The ids of messages already handled, newest last, bounded.
#[derive(Debug, Default)]
pub(crate) struct Processed {
    order: VecDeque<MessageId>,
    set: HashSet<MessageId>,
}

impl Processed {
    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.set.contains(id)
    }

    pub(crate) fn insert(&mut self, id: MessageId) {
        if self.set.insert(id) {
            self.order.push_back(id);
        }
        while self.order.len() > PROCESSED_IDS_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// A profile's state.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) account: Account,
    pub(crate) keys: KeyStore,
    pub(crate) processed: Processed,
    pub(crate) outbox: Vec<Outgoing>,
    /// Whether this profile's keys reached the node at least once.
    pub(crate) keys_published: bool,
    /// The first publish replaces the account's user identity (a new identity after losing
    /// every device).
    pub(crate) reset_identity: bool,
}

/// Why `state.json` could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Corrupt(pub(crate) String);

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StateFile {
    version: u32,
    account: Account,
    user_identity: String,
    identity: String,
    certificate: String,
    signed_pre_keys: Vec<SignedPreKeyFile>,
    next_signed_pre_key_id: u32,
    one_time_pre_keys: Vec<String>,
    next_one_time_pre_key_id: u32,
    replay_record: String,
    users: Vec<UserFile>,
    devices: Vec<DeviceFile>,
    removed: Vec<RemovedFile>,
    resets: Vec<ResetFile>,
    device_lists: Vec<DeviceListFile>,
    processed: Vec<MessageId>,
    outbox: Vec<Outgoing>,
    keys_published: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    reset_user_identity: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserFile {
    user_id: UserId,
    identity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    changed_to: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RemovedFile {
    user_id: UserId,
    device_id: DeviceId,
    device_key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResetFile {
    user_id: UserId,
    device_id: DeviceId,
    sent: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignedPreKeyFile {
    key: String,
    created_at: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceFile {
    user_id: UserId,
    device_id: DeviceId,
    certificate: String,
    active: bool,
    sessions: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceListFile {
    user_id: UserId,
    refreshed_at: Option<i64>,
    stale: bool,
}

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

fn unb64(what: &str, text: &str) -> Result<Zeroizing<Vec<u8>>, Corrupt> {
    BASE64.decode(text).map(Zeroizing::new).map_err(|e| Corrupt(format!("{what} is not base64: {e}")))
}

fn decoded<T>(what: &str, text: &str, decode: impl FnOnce(&[u8]) -> kith_crypto::Result<T>) -> Result<T, Corrupt> {
    decode(&unb64(what, text)?).map_err(|e| Corrupt(format!("{what}: {e}")))
}

impl State {
    /// The JSON text of `state.json`. It holds secrets: the buffer is wiped when dropped.
    pub(crate) fn to_json(&self) -> Result<Zeroizing<Vec<u8>>, Corrupt> {
        let keys = &self.keys;
        let file = StateFile {
            version: STATE_VERSION,
            account: self.account.clone(),
            user_identity: b64(&keys.user.to_bytes()),
            identity: b64(&keys.identity.to_bytes()),
            certificate: b64(&keys.certificate.to_bytes()),
            signed_pre_keys: keys
                .signed_prekeys
                .iter()
                .map(|r| SignedPreKeyFile { key: b64(&r.key.to_bytes()), created_at: r.created_at.as_millis() })
                .collect(),
            next_signed_pre_key_id: keys.next_signed_prekey_id,
            one_time_pre_keys: keys.one_time_prekeys.values().map(|k| b64(&k.to_bytes())).collect(),
            next_one_time_pre_key_id: keys.next_one_time_prekey_id,
            replay_record: b64(&keys.replays.to_bytes()),
            users: keys
                .users
                .iter()
                .map(|(user, peer)| UserFile {
                    user_id: user.clone(),
                    identity: b64(&peer.identity.to_bytes()),
                    changed_to: peer.changed_to.map(|k| b64(&k.to_bytes())),
                })
                .collect(),
            devices: keys
                .devices
                .iter()
                .map(|((user, device), peer)| DeviceFile {
                    user_id: user.clone(),
                    device_id: *device,
                    certificate: b64(&peer.certificate.to_bytes()),
                    active: peer.active,
                    sessions: peer.sessions.iter().map(|s| b64(&s.to_bytes())).collect(),
                })
                .collect(),
            removed: keys
                .removed
                .iter()
                .map(|(user, device, key)| RemovedFile {
                    user_id: user.clone(),
                    device_id: *device,
                    device_key: b64(key),
                })
                .collect(),
            resets: keys
                .resets
                .iter()
                .map(|((user, device), reset)| ResetFile {
                    user_id: user.clone(),
                    device_id: *device,
                    sent: *reset == Reset::Sent,
                })
                .collect(),
            device_lists: keys
                .lists
                .iter()
                .map(|(user, list)| DeviceListFile {
                    user_id: user.clone(),
                    refreshed_at: list.refreshed_at.map(Timestamp::as_millis),
                    stale: list.stale,
                })
                .collect(),
            processed: self.processed.order.iter().copied().collect(),
            outbox: self.outbox.clone(),
            keys_published: self.keys_published,
            reset_user_identity: self.reset_identity,
        };
        let json = serde_json::to_vec_pretty(&file).map(Zeroizing::new).map_err(|e| Corrupt(e.to_string()));
        // The intermediate strings hold secrets too.
        zeroize_file(file);
        json
    }

    /// Reads `state.json`.
    pub(crate) fn from_json(bytes: &[u8]) -> Result<Self, Corrupt> {
        let file: StateFile = serde_json::from_slice(bytes).map_err(|e| Corrupt(e.to_string()))?;
        if file.version != STATE_VERSION {
            return Err(Corrupt(format!(
                "state version {} is not supported (this client reads version {STATE_VERSION})",
                file.version
            )));
        }
        let user = decoded("user identity", &file.user_identity, UserIdentity::from_bytes)?;
        let identity = decoded("identity", &file.identity, DeviceIdentity::from_bytes)?;
        let certificate = decoded("certificate", &file.certificate, DeviceCertificate::from_bytes)?;
        let replays = decoded("replay record", &file.replay_record, ReplayRecord::from_bytes)?;
        let signed_prekeys = file
            .signed_pre_keys
            .iter()
            .map(|r| {
                Ok(SignedPreKeyRecord {
                    key: decoded("signed prekey", &r.key, SignedPreKey::from_bytes)?,
                    created_at: Timestamp::from_millis(r.created_at),
                })
            })
            .collect::<Result<Vec<_>, Corrupt>>()?;
        let mut one_time_prekeys = BTreeMap::new();
        for text in &file.one_time_pre_keys {
            let key = decoded("one-time prekey", text, OneTimePreKey::from_bytes)?;
            one_time_prekeys.insert(key.id(), key);
        }
        let mut devices = BTreeMap::new();
        for d in &file.devices {
            let sessions = d
                .sessions
                .iter()
                .map(|s| decoded("session", s, Session::from_bytes))
                .collect::<Result<Vec<_>, Corrupt>>()?;
            let peer = PeerDevice {
                certificate: decoded("peer certificate", &d.certificate, DeviceCertificate::from_bytes)?,
                active: d.active,
                sessions,
            };
            devices.insert((d.user_id.clone(), d.device_id), peer);
        }
        let mut users = BTreeMap::new();
        for u in &file.users {
            let identity = decoded("peer user identity", &u.identity, UserIdentityPublic::from_bytes)?;
            let changed_to = u
                .changed_to
                .as_deref()
                .map(|text| decoded("changed user identity", text, UserIdentityPublic::from_bytes))
                .transpose()?;
            users.insert(u.user_id.clone(), PeerUser { identity, changed_to });
        }
        let mut removed = std::collections::BTreeSet::new();
        for r in &file.removed {
            let key = unb64("removed device key", &r.device_key)?;
            let key: [u8; 32] =
                key.as_slice().try_into().map_err(|_| Corrupt("a removed device key is not 32 bytes".into()))?;
            removed.insert((r.user_id.clone(), r.device_id, key));
        }
        let resets = file
            .resets
            .iter()
            .map(|r| ((r.user_id.clone(), r.device_id), if r.sent { Reset::Sent } else { Reset::Needed }))
            .collect();
        let lists = file
            .device_lists
            .iter()
            .map(|l| {
                (
                    l.user_id.clone(),
                    DeviceList { refreshed_at: l.refreshed_at.map(Timestamp::from_millis), stale: l.stale },
                )
            })
            .collect();
        let mut processed = Processed::default();
        for id in &file.processed {
            processed.insert(*id);
        }
        let keys = KeyStore {
            user,
            identity,
            certificate,
            signed_prekeys,
            next_signed_prekey_id: file.next_signed_pre_key_id,
            one_time_prekeys,
            next_one_time_prekey_id: file.next_one_time_pre_key_id,
            replays,
            users,
            devices,
            removed,
            lists,
            resets,
        };
        let state = Self {
            account: file.account.clone(),
            keys,
            processed,
            outbox: file.outbox.clone(),
            keys_published: file.keys_published,
            reset_identity: file.reset_user_identity,
        };
        zeroize_file(file);
        Ok(state)
    }
}

/// Wipes the secret strings of a file form before it is dropped.
fn zeroize_file(mut file: StateFile) {
    use kith_crypto::Zeroizing as Z;
    let wipe = |s: &mut String| drop(Z::new(std::mem::take(s)));
    wipe(&mut file.identity);
    wipe(&mut file.user_identity);
    wipe(&mut file.account.token);
    file.signed_pre_keys.iter_mut().for_each(|r| wipe(&mut r.key));
    file.one_time_pre_keys.iter_mut().for_each(wipe);
    file.devices.iter_mut().flat_map(|d| d.sessions.iter_mut()).for_each(wipe);
    file.outbox.iter_mut().for_each(|o| wipe(&mut o.text));
}

#[cfg(test)]
mod tests {
    use rand_core::UnwrapErr;

    use super::*;

    #[test]
    fn processed_ids_are_bounded_oldest_first() {
        let mut processed = Processed::default();
        let first = MessageId::now();
        processed.insert(first);
        for _ in 0..PROCESSED_IDS_KEPT {
            processed.insert(MessageId::now());
        }
        assert!(!processed.contains(&first));
        assert_eq!(processed.order.len(), PROCESSED_IDS_KEPT);
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut rng = UnwrapErr(getrandom::SysRng);
        let mut keys =
            KeyStore::generate(&UserId::parse("a@b").unwrap(), DeviceId(5), Timestamp::now(), &mut rng).unwrap();
        keys.new_one_time_prekeys(3, &mut rng).unwrap();
        let account = Account {
            server: "http://127.0.0.1:1".into(),
            user_id: UserId::parse("a@b").unwrap(),
            device_id: DeviceId(5),
            token: "t".into(),
        };
        let state = State {
            account: account.clone(),
            keys,
            processed: Processed::default(),
            outbox: Vec::new(),
            keys_published: true,
            reset_identity: false,
        };
        let json = state.to_json().unwrap();
        let back = State::from_json(&json).unwrap();
        assert_eq!(back.account, account);
        assert_eq!(back.keys.identity.public(), state.keys.identity.public());
        assert_eq!(back.keys.user.public(), state.keys.user.public());
        assert_eq!(back.keys.certificate, state.keys.certificate);
        assert_eq!(back.keys.one_time_prekeys.len(), 3);
        assert_eq!(*back.to_json().unwrap(), *json, "encoding is stable");
        assert!(matches!(State::from_json(b"{}"), Err(Corrupt(_))));
        assert!(!format!("{account:?}").contains("\"t\""), "the token is not printed");
    }
}
