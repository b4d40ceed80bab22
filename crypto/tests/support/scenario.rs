//! One model of a hostile network between two devices, shared by the
//! property tests (`tests/properties.rs`) and the fuzz target
//! (`fuzz/fuzz_targets/scenario.rs`).
//!
//! Alice starts a session from Bob's bundle; then a list of [`Op`]s sends,
//! withholds (bursts of messages that may never arrive), delivers (in any
//! order, any number of times), drops, tampers with and truncates messages,
//! lets time pass, and persists/reloads sessions. Each receiver's store of
//! skipped keys is mirrored by a [`StoreModel`] written from the rules in
//! `docs/crypto.md` (insertion order, per-chain and per-session eviction,
//! expiry), so the runner knows which messages must still decrypt. It checks:
//!
//! - every message delivered for the first time decrypts, to the right
//!   plaintext, exactly when the model says its key is still there; no
//!   message ever decrypts twice;
//! - the keys the library reports as lost are the ones the model dropped;
//! - every rejected delivery (a replay, a message whose key was evicted or
//!   expired, a bit-flipped or truncated copy) leaves the receiver's
//!   serialized session byte-for-byte unchanged;
//! - a session survives `to_bytes`/`from_bytes` unchanged.

use std::collections::{HashSet, VecDeque};

use kith_crypto::{
    DeviceCertificate, DeviceIdentity, MAX_SKIP, MAX_SKIPPED_KEYS, MAX_SKIPPED_KEYS_PER_CHAIN, MessageInfo,
    OneTimePreKey, PreKeyBundle, ReplayRecord, SKIPPED_KEY_MAX_AGE_MS, Session, SignedPreKey, UserIdentity, inspect,
};

use super::rng::TestRng;

/// One of the two devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The initiator.
    Alice,
    /// The responder.
    Bob,
}

impl Party {
    fn other(self) -> Self {
        match self {
            Party::Alice => Party::Bob,
            Party::Bob => Party::Alice,
        }
    }
}

/// One step of a scenario. `pick` selects among all messages ever sent to
/// `to` that were not dropped (modulo their number), delivered or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `from` encrypts a message of `len` bytes.
    Send { from: Party, len: u8 },
    /// `from` encrypts `count` messages that the network holds back: they
    /// stay undelivered (a later `Deliver` may still pick them).
    Withhold { from: Party, count: u16 },
    /// Deliver a message: the first delivery decrypts if its key is still
    /// there, later ones fail.
    Deliver { to: Party, pick: u16 },
    /// Lose a message forever (it is never delivered).
    Drop { to: Party, pick: u16 },
    /// Deliver a copy with one bit flipped: must fail, state unchanged.
    Tamper { to: Party, pick: u16, bit: u16 },
    /// Deliver a strict prefix of a message: must fail, state unchanged.
    Truncate { to: Party, pick: u16, keep: u16 },
    /// Let `hours` hours pass (skipped keys expire after 168).
    Wait { hours: u8 },
    /// Persist and reload `who`'s session.
    Reload { who: Party },
}

impl Op {
    /// Decodes ops from fuzzer bytes, four bytes per op (a trailing partial
    /// op is ignored): `[tag, party, a, b]`.
    pub fn decode_all(bytes: &[u8]) -> Vec<Op> {
        bytes
            .chunks_exact(4)
            .map(|c| {
                let party = if c[1] & 1 == 0 { Party::Alice } else { Party::Bob };
                let wide = u16::from_be_bytes([c[2], c[3]]);
                match c[0] % 32 {
                    0..=11 => Op::Send { from: party, len: c[2] },
                    12..=23 => Op::Deliver { to: party, pick: wide },
                    24 => Op::Withhold { from: party, count: wide % 1500 },
                    25 => Op::Drop { to: party, pick: wide },
                    26 | 27 => Op::Tamper { to: party, pick: u16::from(c[2]), bit: u16::from(c[3]) * 13 },
                    28 => Op::Truncate { to: party, pick: u16::from(c[2]), keep: u16::from(c[3]) },
                    29 => Op::Wait { hours: c[2] },
                    _ => Op::Reload { who: party },
                }
            })
            .collect()
    }
}

/// Counts of what a run did, so tests can check they exercised something.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub sent: [usize; 2],
    pub delivered: [usize; 2],
    /// First deliveries the model said could not decrypt (key evicted or
    /// expired, or the chain passed), and that were rejected.
    pub gone_rejected: usize,
    /// Keys the library reported lost (and the model agreed).
    pub lost: u64,
    pub replays_rejected: usize,
    pub tampered_rejected: usize,
    pub truncated_rejected: usize,
    pub reloads: usize,
}

struct Envelope {
    wire: Vec<u8>,
    plaintext: Vec<u8>,
    delivered: bool,
}

struct Bob {
    identity: DeviceIdentity,
    certificate: DeviceCertificate,
    signed_prekey: SignedPreKey,
    one_time_prekeys: Vec<OneTimePreKey>,
    replays: ReplayRecord,
    session: Option<Session>,
}

/// The receiving side of one session, as `docs/crypto.md` describes it:
/// the current receiving chain and the skipped keys in insertion order.
#[derive(Default)]
struct StoreModel {
    /// The peer's current ratchet key and the next counter expected in it.
    current: Option<([u8; 32], u32)>,
    /// Ratchet keys of chains already passed or in use.
    chains: HashSet<[u8; 32]>,
    /// (ratchet key, counter, stamp), oldest first.
    stored: VecDeque<([u8; 32], u32, u64)>,
}

impl StoreModel {
    fn usable(&self, key: &[u8; 32], counter: u32, now: u64) -> Option<usize> {
        self.stored
            .iter()
            .position(|(k, n, at)| k == key && *n == counter && now.saturating_sub(*at) <= SKIPPED_KEY_MAX_AGE_MS)
    }

    /// Whether a message with this header can be decrypted at `now`.
    fn decryptable(&self, key: &[u8; 32], previous: u32, counter: u32, now: u64) -> bool {
        if self.usable(key, counter, now).is_some() {
            return true;
        }
        match self.current {
            Some((current, next)) if current == *key => counter >= next && counter - next <= MAX_SKIP,
            _ if self.chains.contains(key) => false,
            Some((_, next)) => previous.saturating_sub(next) <= MAX_SKIP && counter <= MAX_SKIP,
            None => counter <= MAX_SKIP,
        }
    }

    /// Applies the successful decryption of a message; returns the keys it dropped.
    fn apply(&mut self, key: [u8; 32], previous: u32, counter: u32, now: u64) -> u64 {
        if let Some(index) = self.usable(&key, counter, now) {
            self.stored.remove(index);
            return self.expire(now);
        }
        let mut new = Vec::new();
        if self.current.map(|(k, _)| k) != Some(key) {
            if let Some((old, next)) = self.current {
                new.extend((next..previous).map(|n| (old, n)));
            }
            self.current = Some((key, 0));
            self.chains.insert(key);
        }
        if let Some((k, next)) = self.current.as_mut() {
            new.extend((*next..counter).map(|n| (*k, n)));
            *next = counter + 1;
        }
        let stamp = self.stored.back().map_or(now, |(_, _, at)| (*at).max(now));
        // Only chains that got new keys can be over the limit.
        let mut touched: Vec<[u8; 32]> = new.iter().map(|(k, _)| *k).collect();
        touched.dedup();
        for (k, n) in new {
            self.stored.push_back((k, n, stamp));
        }
        let mut dropped = 0;
        // Per chain: the oldest keys of any chain holding more than the limit go.
        for chain in touched {
            let mut excess =
                self.stored.iter().filter(|(k, _, _)| *k == chain).count().saturating_sub(MAX_SKIPPED_KEYS_PER_CHAIN);
            self.stored.retain(|(k, _, _)| {
                if *k == chain && excess > 0 {
                    excess -= 1;
                    dropped += 1;
                    false
                } else {
                    true
                }
            });
        }
        while self.stored.len() > MAX_SKIPPED_KEYS {
            self.stored.pop_front();
            dropped += 1;
        }
        dropped + self.expire(now)
    }

    fn expire(&mut self, now: u64) -> u64 {
        let before = self.stored.len();
        self.stored.retain(|(_, _, at)| now.saturating_sub(*at) <= SKIPPED_KEY_MAX_AGE_MS);
        (before - self.stored.len()) as u64
    }
}

/// A party's serialized session (if it has one), Bob's replay record and his count of
/// one-time prekeys: everything a rejected message must leave as it was.
type Snapshot = (Option<Vec<u8>>, Vec<u8>, usize);

/// The two devices and the messages in flight.
pub struct World {
    rng: TestRng,
    now: u64,
    alice: Session,
    bob: Bob,
    /// Messages sent to Alice and to Bob (index 0 and 1), minus dropped ones.
    inbox: [Vec<Envelope>; 2],
    /// Each receiver's skipped-key store, as the specification describes it.
    model: [StoreModel; 2],
    /// The last snapshot taken of each party's state, while nothing changed it since:
    /// consecutive rejections (most of a final sweep) compare against it.
    snapshots: [Option<Snapshot>; 2],
    pub stats: Stats,
}

/// The most ops a run executes.
pub const MAX_OPS: usize = 1500;

/// The most messages a run sends: bounds the work of withholding.
pub const MAX_MESSAGES: usize = 5_000;

fn slot(p: Party) -> usize {
    match p {
        Party::Alice => 0,
        Party::Bob => 1,
    }
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// The header of the ratchet message inside `wire` (a prekey message ends with
/// one): its ratchet key, previous chain length and counter. `plaintext_len`
/// locates it (docs/crypto.md: 42 header bytes, the ciphertext, a 16-byte tag).
fn header_of(wire: &[u8], plaintext_len: usize) -> ([u8; 32], u32, u32) {
    let inner = &wire[wire.len() - (42 + plaintext_len + 16)..];
    let key: [u8; 32] = inner[2..34].try_into().expect("32 bytes");
    let previous = u32::from_be_bytes(inner[34..38].try_into().expect("4 bytes"));
    let counter = u32::from_be_bytes(inner[38..42].try_into().expect("4 bytes"));
    (key, previous, counter)
}

impl World {
    /// Bob publishes a bundle with a one-time prekey; Alice starts a session.
    pub fn new(seed: u64) -> Self {
        let mut rng = TestRng::from_seed(seed);
        let alice_user = UserIdentity::generate(&mut rng);
        let bob_user = UserIdentity::generate(&mut rng);
        let alice_identity = DeviceIdentity::generate(&mut rng);
        let identity = DeviceIdentity::generate(&mut rng);
        let alice_certificate = alice_user.certify("alice@a", 1, alice_identity.public()).expect("certify");
        let certificate = bob_user.certify("bob@b", 2, identity.public()).expect("certify");
        let signed_prekey = SignedPreKey::generate(7, &identity, &mut rng);
        let one_time_prekeys = OneTimePreKey::generate_batch(1000, 3, &mut rng).expect("ids fit");
        let bundle = PreKeyBundle::new(
            identity.public().clone(),
            signed_prekey.public().clone(),
            Some(one_time_prekeys[1].public().clone()),
        )
        .verify(&certificate, bob_user.public(), "bob@b", 2)
        .expect("own bundle verifies");
        let alice = Session::initiate(&alice_identity, &alice_certificate, &bundle, &mut rng).expect("initiate");
        World {
            rng,
            now: 1_800_000_000_000,
            alice,
            bob: Bob {
                identity,
                certificate,
                signed_prekey,
                one_time_prekeys,
                replays: ReplayRecord::new(),
                session: None,
            },
            inbox: [Vec::new(), Vec::new()],
            model: [StoreModel::default(), StoreModel::default()],
            snapshots: [None, None],
            stats: Stats::default(),
        }
    }

    fn session(&self, who: Party) -> Option<&Session> {
        match who {
            Party::Alice => Some(&self.alice),
            Party::Bob => self.bob.session.as_ref(),
        }
    }

    fn snapshot(&self, who: Party) -> Snapshot {
        (self.session(who).map(|s| s.to_bytes().to_vec()), self.bob.replays.to_bytes(), self.bob.one_time_prekeys.len())
    }

    /// What a client does with incoming bytes: route ratchet messages and
    /// prekey messages of a known setup to the session, otherwise accept a
    /// new session with the prekeys the message names.
    fn receive(&mut self, to: Party, wire: &[u8]) -> Result<kith_crypto::Decrypted, kith_crypto::CryptoError> {
        let now = self.now;
        if to == Party::Alice {
            return self.alice.decrypt(wire, now);
        }
        let info = inspect(wire)?;
        if let Some(session) = self.bob.session.as_mut() {
            match &info {
                MessageInfo::PreKey(setup) if !session.matches_prekey_message(setup) => {}
                _ => return session.decrypt(wire, now),
            }
        }
        let MessageInfo::PreKey(setup) = info else {
            return Err(kith_crypto::CryptoError::SessionMismatch { reason: "ratchet message without a session" });
        };
        if setup.signed_prekey_id() != self.bob.signed_prekey.id() {
            return Err(kith_crypto::CryptoError::SignedPreKeyMismatch {
                in_message: setup.signed_prekey_id(),
                supplied: self.bob.signed_prekey.id(),
            });
        }
        let position =
            match setup.one_time_prekey_id() {
                None => None,
                Some(id) => {
                    Some(self.bob.one_time_prekeys.iter().position(|k| k.id() == id).ok_or(
                        kith_crypto::CryptoError::OneTimePreKeyMismatch { in_message: Some(id), supplied: None },
                    )?)
                }
            };
        let (session, decrypted) = Session::respond(
            &self.bob.identity,
            &self.bob.certificate,
            &self.bob.signed_prekey,
            position.map(|i| &self.bob.one_time_prekeys[i]),
            &mut self.bob.replays,
            wire,
            now,
        )?;
        if let Some(i) = position {
            self.bob.one_time_prekeys.remove(i);
        }
        self.bob.session = Some(session);
        Ok(decrypted)
    }

    /// Delivers a copy that must be rejected, checking nothing changed.
    fn must_reject(&mut self, to: Party, wire: &[u8], what: &str) -> Result<(), String> {
        let before = match self.snapshots[slot(to)].take() {
            Some(cached) => cached,
            None => self.snapshot(to),
        };
        match self.receive(to, wire) {
            Ok(_) => Err(format!("{what} delivered to {to:?} was accepted")),
            Err(_) => {
                let after = self.snapshot(to);
                ensure!(after == before, "{what} changed {to:?}'s state");
                self.snapshots[slot(to)] = Some(after);
                Ok(())
            }
        }
    }

    fn send(&mut self, from: Party, len: usize) -> Result<(), String> {
        let n = self.stats.sent[slot(from)];
        let mut plaintext = format!("{from:?} #{n} ").into_bytes();
        plaintext.resize(plaintext.len() + len, b'.');
        let session = match from {
            Party::Alice => &mut self.alice,
            Party::Bob => self.bob.session.as_mut().ok_or("Bob has no session")?,
        };
        let wire = session.encrypt(&plaintext, &mut self.rng).map_err(|e| format!("encrypt: {e}"))?;
        self.stats.sent[slot(from)] += 1;
        self.inbox[slot(from.other())].push(Envelope { wire, plaintext, delivered: false });
        Ok(())
    }

    fn sent(&self) -> usize {
        self.stats.sent[0] + self.stats.sent[1]
    }

    /// Executes one op, checking the invariants.
    pub fn step(&mut self, op: Op) -> Result<(), String> {
        // Anything but a rejection may change a state: forget the cached snapshots.
        if !matches!(op, Op::Tamper { .. } | Op::Truncate { .. } | Op::Deliver { .. }) {
            self.snapshots = [None, None];
        }
        match op {
            Op::Send { from, len } => {
                if self.session(from).is_some() && self.sent() < MAX_MESSAGES {
                    self.send(from, usize::from(len))?;
                }
            }
            Op::Withhold { from, count } => {
                if self.session(from).is_some() {
                    for _ in 0..count {
                        if self.sent() >= MAX_MESSAGES {
                            break;
                        }
                        self.send(from, 0)?;
                    }
                }
            }
            Op::Deliver { to, pick } => {
                let inbox = &self.inbox[slot(to)];
                if inbox.is_empty() {
                    return Ok(());
                }
                let i = usize::from(pick) % inbox.len();
                let (wire, plaintext, delivered) =
                    (inbox[i].wire.clone(), inbox[i].plaintext.clone(), inbox[i].delivered);
                let (key, previous, counter) = header_of(&wire, plaintext.len());
                if delivered {
                    self.must_reject(to, &wire, "a replay")?;
                    self.stats.replays_rejected += 1;
                } else if !self.model[slot(to)].decryptable(&key, previous, counter, self.now) {
                    self.must_reject(to, &wire, &format!("message {i} whose key is gone"))?;
                    self.stats.gone_rejected += 1;
                } else {
                    self.snapshots = [None, None];
                    let got = self
                        .receive(to, &wire)
                        .map_err(|e| format!("first delivery of message {i} to {to:?} failed: {e}"))?;
                    ensure!(got.plaintext == plaintext, "message {i} to {to:?} decrypted to the wrong plaintext");
                    let dropped = self.model[slot(to)].apply(key, previous, counter, self.now);
                    ensure!(
                        got.lost == dropped,
                        "message {i} to {to:?}: the library lost {} keys, the specification {dropped}",
                        got.lost
                    );
                    let count = self.session(to).map_or(0, Session::skipped_key_count);
                    ensure!(
                        count == self.model[slot(to)].stored.len(),
                        "{to:?} stores {count} skipped keys, the specification {}",
                        self.model[slot(to)].stored.len()
                    );
                    self.inbox[slot(to)][i].delivered = true;
                    self.stats.delivered[slot(to)] += 1;
                    self.stats.lost += got.lost;
                }
            }
            Op::Drop { to, pick } => {
                let inbox = &mut self.inbox[slot(to)];
                if !inbox.is_empty() {
                    let i = usize::from(pick) % inbox.len();
                    inbox.remove(i);
                }
            }
            Op::Tamper { to, pick, bit } => {
                let inbox = &self.inbox[slot(to)];
                if inbox.is_empty() {
                    return Ok(());
                }
                let mut wire = inbox[usize::from(pick) % inbox.len()].wire.clone();
                let bit = usize::from(bit) % (wire.len() * 8);
                wire[bit / 8] ^= 1 << (bit % 8);
                self.must_reject(to, &wire, "a bit-flipped message")?;
                self.stats.tampered_rejected += 1;
            }
            Op::Truncate { to, pick, keep } => {
                let inbox = &self.inbox[slot(to)];
                if inbox.is_empty() {
                    return Ok(());
                }
                let wire = &inbox[usize::from(pick) % inbox.len()].wire;
                let cut = wire[..usize::from(keep) % wire.len()].to_vec();
                self.must_reject(to, &cut, "a truncated message")?;
                self.stats.truncated_rejected += 1;
            }
            Op::Wait { hours } => self.now += u64::from(hours) * 3_600_000,
            Op::Reload { who } => {
                let Some(bytes) = self.session(who).map(|s| s.to_bytes().to_vec()) else {
                    return Ok(());
                };
                let reloaded = Session::from_bytes(&bytes).map_err(|e| format!("reload: {e}"))?;
                ensure!(reloaded.to_bytes().as_slice() == bytes.as_slice(), "reload changed the state");
                match who {
                    Party::Alice => self.alice = reloaded,
                    Party::Bob => self.bob.session = Some(reloaded),
                }
                self.stats.reloads += 1;
            }
        }
        Ok(())
    }
}

/// Runs `ops` (at most [`MAX_OPS`]) from a fresh world, then delivers every
/// message still in flight once, so that every message not dropped is
/// checked against the model.
pub fn run(seed: u64, ops: &[Op]) -> Result<Stats, String> {
    let mut world = World::new(seed);
    for op in ops.iter().take(MAX_OPS) {
        world.step(*op)?;
    }
    for to in [Party::Bob, Party::Alice] {
        for i in 0..world.inbox[slot(to)].len() {
            if !world.inbox[slot(to)][i].delivered {
                world.step(Op::Deliver { to, pick: i as u16 })?;
            }
        }
    }
    Ok(world.stats)
}
