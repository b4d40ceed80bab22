//! Sessions: X3DH-style setup followed by the Double Ratchet.

use core::fmt;
use std::collections::VecDeque;

use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::bundle::VerifiedPreKeyBundle;
use crate::codec::{self, Hex, Reader, kind};
use crate::error::{CryptoError, Result};
use crate::kdf::{self, Secret32};
use crate::keys::{DeviceIdentity, DhPublic, OneTimePreKey, PublicIdentity, SignedPreKey, dh, random_dh_secret};
use crate::message::{self, Header, RatchetMessage, Setup, Wire};
use crate::replay::ReplayRecord;
use crate::skipped::{self, Dropped, MAX_SKIPPED_KEYS_PER_CHAIN, SkippedKeys};
use crate::user::DeviceCertificate;

/// The largest number of message keys one message may make the receiver
/// derive in a single chain (messages it skips over). At most
/// [`MAX_SKIPPED_KEYS_PER_CHAIN`] of them are kept; the rest are derived only
/// to move the chain forward.
pub const MAX_SKIP: u32 = 25_000;

/// What a successful decryption yields.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decrypted {
    /// The plaintext.
    pub plaintext: Vec<u8>,
    /// Skipped message keys this decryption dropped: evicted to keep the store within its
    /// limits, or expired. The messages they belonged to can no longer be decrypted: report
    /// them as lost.
    pub lost: u64,
}

impl fmt::Debug for Decrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decrypted").field("plaintext_len", &self.plaintext.len()).field("lost", &self.lost).finish()
    }
}

/// Which side of the session setup this session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Started the session from the peer's prekey bundle.
    Initiator,
    /// Accepted the session from the peer's prekey message.
    Responder,
}

/// The Double Ratchet state proper; cloned and updated as a whole so that a
/// failed operation changes nothing.
#[derive(Clone)]
struct Ratchet {
    root_key: Secret32,
    /// DHs: our current ratchet key pair.
    ours: StaticSecret,
    ours_public: DhPublic,
    /// DHr: the peer's current ratchet key.
    theirs: Option<DhPublic>,
    /// CKs; `None` after a DH ratchet step on receipt, until we next send
    /// (that is when our new ratchet key pair is generated).
    sending: Option<Secret32>,
    /// CKr.
    receiving: Option<Secret32>,
    /// Ns, Nr, PN.
    sent: u32,
    received: u32,
    previous_sent: u32,
}

/// An end-to-end encrypted session with one device of a peer.
///
/// Created by [`Session::initiate`] (from the peer's prekey bundle) or
/// [`Session::respond`] (from the peer's first message). Messages are
/// encrypted with the Double Ratchet: every reply turns the DH ratchet, every
/// message uses a fresh key once, and old keys are deleted (forward secrecy).
///
/// Every method that fails leaves the session exactly as it was. Persist the
/// session ([`Session::to_bytes`]) after every successful `encrypt` or
/// `decrypt`, and never go back to an older copy: reusing a stale state
/// would reuse message keys.
///
/// `Session` is deliberately not `Clone`, for the same reason.
///
/// A session is between two *certified* devices: each side's
/// [`DeviceCertificate`] (user identity, user id, device id, device keys) is
/// bound into every message's associated data, so a message cannot be passed
/// off as coming from, or going to, another user or device.
pub struct Session {
    role: Role,
    local: DeviceCertificate,
    remote: DeviceCertificate,
    setup: Setup,
    /// Initiator only: still wrapping messages as prekey messages because
    /// nothing from the responder has been decrypted yet.
    awaiting_reply: bool,
    ratchet: Ratchet,
    /// Keys of messages skipped over, oldest first.
    skipped: SkippedKeys,
}

impl Session {
    /// Starts a session with the owner of `bundle`.
    ///
    /// Performs the initiator's half of the X3DH-style key agreement (DH1 =
    /// our identity × their signed prekey, DH2 = our base key × their
    /// identity, DH3 = our base key × their signed prekey, DH4 = our base key
    /// × their one-time prekey if the bundle has one) and the first DH
    /// ratchet step. Draws 32 bytes for the base key, then 32 bytes for the
    /// first ratchet key.
    ///
    /// Messages from the new session are prekey messages until the first
    /// reply is decrypted; they carry `our_certificate`, which must vouch for
    /// `our_identity`.
    ///
    /// # Errors
    /// [`CryptoError::CertificateMismatch`] if `our_certificate` is for
    /// another identity; [`CryptoError::NonContributoryKeyAgreement`] if a key
    /// in the bundle has small order.
    pub fn initiate<R: CryptoRng + ?Sized>(
        our_identity: &DeviceIdentity,
        our_certificate: &DeviceCertificate,
        bundle: &VerifiedPreKeyBundle,
        rng: &mut R,
    ) -> Result<Self> {
        check_own_certificate(our_identity, our_certificate)?;
        let remote = bundle.certificate().clone();
        let bundle = bundle.bundle();
        let their_identity = bundle.identity();
        let signed_prekey = bundle.signed_prekey().dh_public();

        let base = random_dh_secret(rng);
        let dh1 = dh(our_identity.dh_secret(), signed_prekey, "DH1")?;
        let dh2 = dh(&base, their_identity.dh_public(), "DH2")?;
        let dh3 = dh(&base, signed_prekey, "DH3")?;
        let shared = match bundle.one_time_prekey() {
            Some(otpk) => {
                let dh4 = dh(&base, otpk.dh_public(), "DH4")?;
                kdf::x3dh(&[&dh1, &dh2, &dh3, &dh4])?
            }
            None => kdf::x3dh(&[&dh1, &dh2, &dh3])?,
        };

        let ours = random_dh_secret(rng);
        let first = dh(&ours, signed_prekey, "initial ratchet")?;
        let (root_key, sending) = kdf::kdf_rk(&shared, &first)?;
        Ok(Self {
            role: Role::Initiator,
            local: our_certificate.clone(),
            remote,
            setup: Setup {
                base_key: DhPublic::from_secret(&base),
                signed_prekey_id: bundle.signed_prekey().id(),
                one_time_prekey_id: bundle.one_time_prekey().map(|k| k.id()),
            },
            awaiting_reply: true,
            ratchet: Ratchet {
                root_key,
                ours_public: DhPublic::from_secret(&ours),
                ours,
                theirs: Some(*signed_prekey),
                sending: Some(sending),
                receiving: None,
                sent: 0,
                received: 0,
                previous_sent: 0,
            },
            skipped: SkippedKeys::default(),
        })
    }

    /// Accepts a session from a prekey message and decrypts the message.
    ///
    /// The caller looks up which keys the message needs with
    /// [`inspect`](crate::inspect) ([`PreKeyMessageInfo::signed_prekey_id`](crate::PreKeyMessageInfo::signed_prekey_id)
    /// and [`one_time_prekey_id`](crate::PreKeyMessageInfo::one_time_prekey_id)),
    /// checks the sender's [`certificate`](crate::PreKeyMessageInfo::certificate)
    /// against the user identity it trusts for the sender, passes the keys
    /// here, and deletes the one-time prekey once this succeeds. Before calling
    /// this, check whether a session that
    /// [`matches_prekey_message`](Self::matches_prekey_message) exists: later
    /// prekey messages of a session go to [`Session::decrypt`].
    ///
    /// `replays` is this device's record of accepted setups: a setup it holds
    /// is refused (a replayed first message, even one whose session is gone),
    /// and on success the new setup is added. `now` is the caller's clock in
    /// milliseconds (it stamps skipped keys).
    ///
    /// Uses no randomness: our first ratchet key is generated on our first
    /// [`Session::encrypt`].
    ///
    /// # Errors
    /// [`CryptoError::NotAPreKeyMessage`], decoding errors,
    /// [`CryptoError::CertificateMismatch`] if `our_certificate` is for
    /// another identity, [`CryptoError::ReplayedFirstMessage`],
    /// [`CryptoError::ReplayRecordFull`],
    /// [`CryptoError::SignedPreKeyMismatch`] /
    /// [`CryptoError::OneTimePreKeyMismatch`] if the supplied keys are not
    /// the ones the message names, and the errors of [`Session::decrypt`]
    /// (notably [`CryptoError::AuthenticationFailed`] if the sender does not
    /// hold the identity it claims). On any error nothing changes.
    pub fn respond(
        our_identity: &DeviceIdentity,
        our_certificate: &DeviceCertificate,
        our_signed_prekey: &SignedPreKey,
        our_one_time_prekey: Option<&OneTimePreKey>,
        replays: &mut ReplayRecord,
        message: &[u8],
        now: u64,
    ) -> Result<(Self, Decrypted)> {
        check_own_certificate(our_identity, our_certificate)?;
        let prekey = match message::parse(message)? {
            Wire::PreKey(p) => p,
            Wire::Ratchet(_) => {
                return Err(CryptoError::NotAPreKeyMessage { got: kind::MESSAGE });
            }
        };
        let setup = &prekey.setup;
        replays.check(setup)?;
        if setup.signed_prekey_id != our_signed_prekey.id() {
            return Err(CryptoError::SignedPreKeyMismatch {
                in_message: setup.signed_prekey_id,
                supplied: our_signed_prekey.id(),
            });
        }
        let supplied = our_one_time_prekey.map(OneTimePreKey::id);
        if setup.one_time_prekey_id != supplied {
            return Err(CryptoError::OneTimePreKeyMismatch { in_message: setup.one_time_prekey_id, supplied });
        }

        let spk = our_signed_prekey.secret();
        let sender = prekey.sender.device();
        let dh1 = dh(spk, sender.dh_public(), "DH1")?;
        let dh2 = dh(our_identity.dh_secret(), &setup.base_key, "DH2")?;
        let dh3 = dh(spk, &setup.base_key, "DH3")?;
        let shared = match our_one_time_prekey {
            Some(otpk) => {
                let dh4 = dh(otpk.secret(), &setup.base_key, "DH4")?;
                kdf::x3dh(&[&dh1, &dh2, &dh3, &dh4])?
            }
            None => kdf::x3dh(&[&dh1, &dh2, &dh3])?,
        };

        let mut session = Self {
            role: Role::Responder,
            local: our_certificate.clone(),
            remote: prekey.sender.clone(),
            setup: prekey.setup.clone(),
            awaiting_reply: false,
            ratchet: Ratchet {
                root_key: shared,
                ours: spk.clone(),
                ours_public: *our_signed_prekey.public().dh_public(),
                theirs: None,
                sending: None,
                receiving: None,
                sent: 0,
                received: 0,
                previous_sent: 0,
            },
            skipped: SkippedKeys::default(),
        };
        let decrypted = session.decrypt_ratchet(&prekey.inner, now)?;
        replays.insert(&session.setup);
        Ok((session, decrypted))
    }

    /// Encrypts `plaintext` and returns the wire bytes to send.
    ///
    /// If the last thing that happened was receiving a message with a new
    /// ratchet key, this turns the DH ratchet first, drawing 32 bytes for our
    /// new ratchet key; otherwise it draws nothing. While the initiator has
    /// not yet decrypted a reply, the result is a prekey message.
    ///
    /// # Errors
    /// [`CryptoError::CounterExhausted`] after 2^32 - 1 messages in one
    /// sending chain (the peer never replied); the session is unchanged.
    pub fn encrypt<R: CryptoRng + ?Sized>(&mut self, plaintext: &[u8], rng: &mut R) -> Result<Vec<u8>> {
        let mut next = self.ratchet.clone();
        let sending = match &next.sending {
            Some(ck) => ck.clone(),
            None => {
                let theirs = next.theirs.ok_or(CryptoError::Internal("sending ratchet without a peer ratchet key"))?;
                let ours = random_dh_secret(rng);
                let shared = dh(&ours, &theirs, "sending ratchet")?;
                let (root_key, chain) = kdf::kdf_rk(&next.root_key, &shared)?;
                next.root_key = root_key;
                next.ours_public = DhPublic::from_secret(&ours);
                next.ours = ours;
                next.previous_sent = next.sent;
                next.sent = 0;
                chain
            }
        };
        let counter = next.sent;
        next.sent = counter.checked_add(1).ok_or(CryptoError::CounterExhausted { sent: counter })?;
        let (message_key, chain) = kdf::kdf_ck(&sending)?;
        next.sending = Some(chain);

        let header = Header { ratchet_key: next.ours_public, previous_counter: next.previous_sent, counter }.encode();
        let ciphertext = kdf::seal(&message_key, &self.aad(&header), plaintext)?;

        let mut out =
            Vec::with_capacity(message::MIN_MESSAGE_LEN + plaintext.len() + if self.awaiting_reply { 180 } else { 0 });
        if self.awaiting_reply {
            message::write_prekey_prefix(&mut out, &self.local, &self.setup);
        }
        out.extend_from_slice(&header);
        out.extend_from_slice(&ciphertext);
        self.ratchet = next;
        Ok(out)
    }

    /// Decrypts wire bytes from the peer: an ordinary message, or a prekey
    /// message of this session's setup (one the initiator sent before it
    /// received our reply).
    ///
    /// Out-of-order messages decrypt with stored skipped keys; each message
    /// decrypts once. The store of skipped keys is bounded by evicting its
    /// oldest keys and keys expire after
    /// [`SKIPPED_KEY_MAX_AGE_MS`](crate::SKIPPED_KEY_MAX_AGE_MS) of `now` (the
    /// caller's clock, in milliseconds); [`Decrypted::lost`] says how many
    /// keys that dropped. On any error the session is unchanged.
    ///
    /// # Errors
    /// Decoding errors for malformed bytes; [`CryptoError::SessionMismatch`]
    /// for a prekey message of another session setup;
    /// [`CryptoError::DuplicateMessage`] for a replay (or a message whose key
    /// was evicted or expired); [`CryptoError::AuthenticationFailed`] for a
    /// tampered or truncated message; [`CryptoError::SkipTooLarge`] when the
    /// message is more than [`MAX_SKIP`] ahead;
    /// [`CryptoError::NonContributoryKeyAgreement`] for a small-order ratchet
    /// key.
    pub fn decrypt(&mut self, bytes: &[u8], now: u64) -> Result<Decrypted> {
        match message::parse(bytes)? {
            Wire::Ratchet(m) => self.decrypt_ratchet(&m, now),
            Wire::PreKey(p) => {
                if self.role == Role::Initiator {
                    return Err(CryptoError::SessionMismatch {
                        reason: "prekey message sent to the session's initiator",
                    });
                }
                if p.sender != self.remote {
                    return Err(CryptoError::SessionMismatch { reason: "prekey message from another identity" });
                }
                if p.setup != self.setup {
                    return Err(CryptoError::SessionMismatch { reason: "prekey message of another session setup" });
                }
                self.decrypt_ratchet(&p.inner, now)
            }
        }
    }

    /// Drops skipped keys older than
    /// [`SKIPPED_KEY_MAX_AGE_MS`](crate::SKIPPED_KEY_MAX_AGE_MS) at `now`
    /// (milliseconds); returns how many. Call it now and then (for example on
    /// loading a session) so keys expire even when no message comes.
    pub fn expire_skipped_keys(&mut self, now: u64) -> u64 {
        self.skipped.expire(now)
    }

    /// `AD || header`: both parties (initiator first: user key, user id,
    /// device id, device keys) then the header.
    fn aad(&self, header: &[u8]) -> Vec<u8> {
        let (initiator, responder) = match self.role {
            Role::Initiator => (&self.local, &self.remote),
            Role::Responder => (&self.remote, &self.local),
        };
        let mut aad = Vec::with_capacity(2 * (32 + 2 + 64 + 4 + 64) + header.len());
        initiator.write_party(&mut aad);
        responder.write_party(&mut aad);
        aad.extend_from_slice(header);
        aad
    }

    fn decrypt_ratchet(&mut self, m: &RatchetMessage<'_>, now: u64) -> Result<Decrypted> {
        let h = m.header;
        let aad = self.aad(m.header_bytes);
        let failed = CryptoError::AuthenticationFailed { counter: h.counter };

        if let Some(index) = self.skipped.find(&h.ratchet_key, h.counter, now) {
            let key = self.skipped.key(index).ok_or(CryptoError::Internal("skipped key index"))?;
            let plaintext = kdf::open(key, &aad, m.ciphertext)?.ok_or(failed)?;
            self.skipped.remove(index);
            let lost = self.skipped.expire(now);
            self.awaiting_reply = false;
            return Ok(Decrypted { plaintext, lost });
        }

        let mut next = self.ratchet.clone();
        let mut new_skipped = Skip::default();
        if next.theirs != Some(h.ratchet_key) {
            // The peer turned its ratchet: keep the keys of the rest of its
            // previous chain, then step the root chain with the new key.
            if let Some(theirs) = next.theirs {
                skip(&mut next, theirs, h.previous_counter, &mut new_skipped)?;
            }
            let shared = dh(&next.ours, &h.ratchet_key, "receiving ratchet")?;
            let (root_key, chain) = kdf::kdf_rk(&next.root_key, &shared)?;
            next.root_key = root_key;
            next.receiving = Some(chain);
            next.received = 0;
            next.theirs = Some(h.ratchet_key);
            next.sending = None;
        }
        if h.counter < next.received {
            return Err(CryptoError::DuplicateMessage { counter: h.counter });
        }
        skip(&mut next, h.ratchet_key, h.counter, &mut new_skipped)?;
        let chain = next
            .receiving
            .as_ref()
            .ok_or(CryptoError::SessionMismatch { reason: "no receiving chain for this ratchet key" })?;
        let (message_key, chain) = kdf::kdf_ck(chain)?;
        next.receiving = Some(chain);
        next.received = h.counter.checked_add(1).ok_or(CryptoError::CounterExhausted { sent: h.counter })?;

        let plaintext = kdf::open(&message_key, &aad, m.ciphertext)?.ok_or(failed)?;

        // Commit.
        self.ratchet = next;
        let Dropped { evicted, expired } = self.skipped.insert(new_skipped.keys, new_skipped.dropped, now);
        self.awaiting_reply = false;
        Ok(Decrypted { plaintext, lost: evicted + expired })
    }

    /// Which side of the setup this session is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Our device identity's public half.
    pub fn local_identity(&self) -> &PublicIdentity {
        self.local.device()
    }

    /// The peer's device identity.
    pub fn remote_identity(&self) -> &PublicIdentity {
        self.remote.device()
    }

    /// Our device's certificate, bound into the session.
    pub fn local_certificate(&self) -> &DeviceCertificate {
        &self.local
    }

    /// The peer's certificate: its user, device id and the user identity that
    /// vouched for it when the session was set up.
    pub fn remote_certificate(&self) -> &DeviceCertificate {
        &self.remote
    }

    /// The id of the responder's signed prekey the setup used.
    pub fn signed_prekey_id(&self) -> u32 {
        self.setup.signed_prekey_id
    }

    /// The initiator's base (ephemeral) key, which identifies this session's
    /// setup and every prekey message sent in it.
    pub fn base_key(&self) -> [u8; 32] {
        *self.setup.base_key.as_bytes()
    }

    /// Whether a prekey message (as reported by [`inspect`](crate::inspect))
    /// belongs to this session, i.e. should go to [`Session::decrypt`] rather
    /// than start a new session with [`Session::respond`].
    pub fn matches_prekey_message(&self, info: &crate::PreKeyMessageInfo) -> bool {
        self.role == Role::Responder && info.certificate() == &self.remote && info.setup() == &self.setup
    }

    /// Initiator only: whether messages are still sent as prekey messages
    /// because no reply has been decrypted yet.
    pub fn awaiting_reply(&self) -> bool {
        self.awaiting_reply
    }

    /// How many skipped message keys are stored (at most
    /// [`MAX_SKIPPED_KEYS`](crate::MAX_SKIPPED_KEYS)).
    pub fn skipped_key_count(&self) -> usize {
        self.skipped.len()
    }

    /// Encodes the whole session state; see `docs/crypto.md` for the layout.
    /// Holds secrets: store it encrypted at rest. Wiped when dropped.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let r = &self.ratchet;
        let mut out = codec::secret_writer(
            kind::SESSION,
            2 + 1
                + self.local.body_len()
                + self.remote.body_len()
                + 32
                + 4
                + 5
                + 1
                + 32
                + 32
                + 3 * 33
                + 12
                + 4
                + self.skipped.len() * skipped::ENTRY_LEN,
        );
        out.push(match self.role {
            Role::Initiator => 0,
            Role::Responder => 1,
        });
        self.local.write_body(&mut out);
        self.remote.write_body(&mut out);
        out.extend_from_slice(self.setup.base_key.as_bytes());
        out.extend_from_slice(&self.setup.signed_prekey_id.to_be_bytes());
        codec::put_opt_u32(&mut out, self.setup.one_time_prekey_id);
        out.push(u8::from(self.awaiting_reply));
        out.extend_from_slice(r.root_key.as_slice());
        out.extend_from_slice(r.ours.as_bytes());
        put_opt_32(&mut out, r.theirs.as_ref().map(DhPublic::as_bytes));
        put_opt_32(&mut out, r.sending.as_deref());
        put_opt_32(&mut out, r.receiving.as_deref());
        out.extend_from_slice(&r.sent.to_be_bytes());
        out.extend_from_slice(&r.received.to_be_bytes());
        out.extend_from_slice(&r.previous_sent.to_be_bytes());
        self.skipped.write(&mut out);
        out
    }

    /// Decodes [`Self::to_bytes`] output.
    ///
    /// # Errors
    /// Decoding errors for anything [`Self::to_bytes`] cannot produce,
    /// including [`CryptoError::TooManyEntries`] and
    /// [`CryptoError::InconsistentState`]; [`CryptoError::UnsupportedVersion`]
    /// for a session of protocol version 1, which cannot be used under
    /// version 2 (its peer was never certified).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "session";
        let mut r = Reader::new(bytes, WHAT);
        r.header(kind::SESSION)?;
        let role = match r.u8()? {
            0 => Role::Initiator,
            1 => Role::Responder,
            value => {
                return Err(CryptoError::InvalidFlag { what: "session role", value });
            }
        };
        let local = DeviceCertificate::read_body(&mut r)?;
        let remote = DeviceCertificate::read_body(&mut r)?;
        let setup = Setup {
            base_key: DhPublic::read(&mut r, "base key")?,
            signed_prekey_id: r.u32()?,
            one_time_prekey_id: r.opt_u32("one-time prekey flag")?,
        };
        let awaiting_reply = r.flag("awaiting-reply flag")?;
        if awaiting_reply && role == Role::Responder {
            return Err(CryptoError::InconsistentState { what: WHAT, reason: "a responder never awaits a reply" });
        }
        let root_key = r.secret::<32>()?;
        let ours = StaticSecret::from(*r.secret::<32>()?);
        let theirs =
            if r.flag("peer ratchet key flag")? { Some(DhPublic::read(&mut r, "peer ratchet key")?) } else { None };
        let sending = opt_secret(&mut r, "sending chain flag")?;
        let receiving = opt_secret(&mut r, "receiving chain flag")?;
        if theirs.is_none() && (sending.is_some() || receiving.is_some()) {
            return Err(CryptoError::InconsistentState { what: WHAT, reason: "chains without a peer ratchet key" });
        }
        let sent = r.u32()?;
        let received = r.u32()?;
        let previous_sent = r.u32()?;
        let skipped = SkippedKeys::read(&mut r, WHAT)?;
        r.finish()?;
        Ok(Self {
            role,
            local,
            remote,
            setup,
            awaiting_reply,
            ratchet: Ratchet {
                root_key,
                ours_public: DhPublic::from_secret(&ours),
                ours,
                theirs,
                sending,
                receiving,
                sent,
                received,
                previous_sent,
            },
            skipped,
        })
    }
}

/// Keys derived while skipping over messages: the newest
/// [`MAX_SKIPPED_KEYS_PER_CHAIN`] of each run, in derivation order, and how
/// many older ones of the run were dropped at once.
#[derive(Default)]
struct Skip {
    keys: Vec<(DhPublic, u32, Secret32)>,
    dropped: u64,
}

/// Derives the keys of messages `next.received..until` of the current
/// receiving chain (if there is one) into `out`, checking [`MAX_SKIP`] before
/// deriving anything.
fn skip(next: &mut Ratchet, theirs: DhPublic, until: u32, out: &mut Skip) -> Result<()> {
    let Some(mut chain) = next.receiving.clone() else {
        return Ok(());
    };
    if until <= next.received {
        return Ok(());
    }
    let gap = until - next.received;
    if gap > MAX_SKIP {
        return Err(CryptoError::SkipTooLarge { got: u64::from(gap), max: MAX_SKIP });
    }
    // Only the newest keys of a long run can be kept; the older ones are
    // derived to move the chain forward and dropped at once.
    let mut run: VecDeque<(DhPublic, u32, Secret32)> = VecDeque::new();
    while next.received < until {
        let (message_key, following) = kdf::kdf_ck(&chain)?;
        if run.len() == MAX_SKIPPED_KEYS_PER_CHAIN {
            run.pop_front();
            out.dropped += 1;
        }
        run.push_back((theirs, next.received, message_key));
        chain = following;
        next.received += 1;
    }
    out.keys.extend(run);
    next.receiving = Some(chain);
    Ok(())
}

/// Fails unless `certificate` vouches for `identity`.
fn check_own_certificate(identity: &DeviceIdentity, certificate: &DeviceCertificate) -> Result<()> {
    if certificate.device() == identity.public() {
        Ok(())
    } else {
        Err(CryptoError::CertificateMismatch { reason: "our certificate vouches for another device identity" })
    }
}

fn put_opt_32(out: &mut Vec<u8>, value: Option<&[u8; 32]>) {
    match value {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(v);
        }
        None => out.push(0),
    }
}

fn opt_secret(r: &mut Reader<'_>, what: &'static str) -> Result<Option<Secret32>> {
    if r.flag(what)? { Ok(Some(r.secret::<32>()?)) } else { Ok(None) }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("remote", &self.remote)
            .field("base_key", &Hex(self.setup.base_key.as_bytes()))
            .field("awaiting_reply", &self.awaiting_reply)
            .field("ratchet_key", &self.ratchet.ours_public)
            .field("sent", &self.ratchet.sent)
            .field("received", &self.ratchet.received)
            .field("previous_sent", &self.ratchet.previous_sent)
            .field("skipped_keys", &self.skipped.len())
            .finish_non_exhaustive()
    }
}
