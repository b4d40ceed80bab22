//! One model of a hostile network between two devices, shared by the
//! property tests (`tests/properties.rs`) and the fuzz target
//! (`fuzz/fuzz_targets/scenario.rs`).
//!
//! Alice starts a session from Bob's bundle; then a list of [`Op`]s sends,
//! delivers (in any order, any number of times), drops, tampers with and
//! truncates messages, and persists/reloads sessions. The runner checks:
//!
//! - every message delivered for the first time decrypts, to the right
//!   plaintext, exactly once;
//! - every later delivery (a replay), every bit-flipped copy and every
//!   truncated copy is rejected, and leaves the receiver's serialized
//!   session byte-for-byte unchanged;
//! - a session survives `to_bytes`/`from_bytes` unchanged.

use kith_crypto::{DeviceIdentity, MessageInfo, OneTimePreKey, PreKeyBundle, Session, SignedPreKey, inspect};

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
    /// Deliver a message: the first delivery must decrypt, later ones fail.
    Deliver { to: Party, pick: u16 },
    /// Lose a message forever (it is never delivered).
    Drop { to: Party, pick: u16 },
    /// Deliver a copy with one bit flipped: must fail, state unchanged.
    Tamper { to: Party, pick: u16, bit: u16 },
    /// Deliver a strict prefix of a message: must fail, state unchanged.
    Truncate { to: Party, pick: u16, keep: u16 },
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
                match c[0] % 16 {
                    0..=5 => Op::Send { from: party, len: c[2] },
                    6..=11 => Op::Deliver { to: party, pick: wide },
                    12 => Op::Drop { to: party, pick: wide },
                    13 => Op::Tamper { to: party, pick: u16::from(c[2]), bit: u16::from(c[3]) * 13 },
                    14 => Op::Truncate { to: party, pick: u16::from(c[2]), keep: u16::from(c[3]) },
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
    signed_prekey: SignedPreKey,
    one_time_prekeys: Vec<OneTimePreKey>,
    session: Option<Session>,
}

/// The two devices and the messages in flight.
pub struct World {
    rng: TestRng,
    alice: Session,
    bob: Bob,
    /// Messages sent to Alice and to Bob (index 0 and 1), minus dropped ones.
    inbox: [Vec<Envelope>; 2],
    pub stats: Stats,
}

/// The most ops a run executes: keeps every run far below the skipped-key
/// limits, which the model does not try to exercise.
pub const MAX_OPS: usize = 1500;

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

impl World {
    /// Bob publishes a bundle with a one-time prekey; Alice starts a session.
    pub fn new(seed: u64) -> Self {
        let mut rng = TestRng::from_seed(seed);
        let alice_identity = DeviceIdentity::generate(&mut rng);
        let identity = DeviceIdentity::generate(&mut rng);
        let signed_prekey = SignedPreKey::generate(7, &identity, &mut rng);
        let one_time_prekeys = OneTimePreKey::generate_batch(1000, 3, &mut rng).expect("ids fit");
        let bundle = PreKeyBundle::new(
            identity.public().clone(),
            signed_prekey.public().clone(),
            Some(one_time_prekeys[1].public().clone()),
        )
        .verify()
        .expect("own bundle verifies");
        let alice = Session::initiate(&alice_identity, &bundle, &mut rng).expect("initiate");
        World {
            rng,
            alice,
            bob: Bob { identity, signed_prekey, one_time_prekeys, session: None },
            inbox: [Vec::new(), Vec::new()],
            stats: Stats::default(),
        }
    }

    fn session(&self, who: Party) -> Option<&Session> {
        match who {
            Party::Alice => Some(&self.alice),
            Party::Bob => self.bob.session.as_ref(),
        }
    }

    fn snapshot(&self, who: Party) -> Option<Vec<u8>> {
        self.session(who).map(|s| s.to_bytes().to_vec())
    }

    /// What a client does with incoming bytes: route ratchet messages and
    /// prekey messages of a known setup to the session, otherwise accept a
    /// new session with the prekeys the message names.
    fn receive(&mut self, to: Party, wire: &[u8]) -> Result<Vec<u8>, kith_crypto::CryptoError> {
        if to == Party::Alice {
            return self.alice.decrypt(wire);
        }
        let info = inspect(wire)?;
        if let Some(session) = self.bob.session.as_mut() {
            match &info {
                MessageInfo::PreKey(setup) if !session.matches_prekey_message(setup) => {}
                _ => return session.decrypt(wire),
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
        let (session, plaintext) = Session::respond(
            &self.bob.identity,
            &self.bob.signed_prekey,
            position.map(|i| &self.bob.one_time_prekeys[i]),
            wire,
        )?;
        if let Some(i) = position {
            self.bob.one_time_prekeys.remove(i);
        }
        self.bob.session = Some(session);
        Ok(plaintext)
    }

    /// Delivers a copy that must be rejected, checking nothing changed.
    fn must_reject(&mut self, to: Party, wire: &[u8], what: &str) -> Result<(), String> {
        let before = self.snapshot(to);
        let keys_before = self.bob.one_time_prekeys.len();
        match self.receive(to, wire) {
            Ok(_) => Err(format!("{what} delivered to {to:?} was accepted")),
            Err(_) => {
                ensure!(self.snapshot(to) == before, "{what} changed {to:?}'s session");
                ensure!(self.bob.one_time_prekeys.len() == keys_before, "{what} consumed a one-time prekey");
                Ok(())
            }
        }
    }

    /// Executes one op, checking the invariants.
    pub fn step(&mut self, op: Op) -> Result<(), String> {
        match op {
            Op::Send { from, len } => {
                let Some(_) = self.session(from) else {
                    return Ok(()); // Bob cannot speak before Alice does.
                };
                let n = self.stats.sent[slot(from)];
                let mut plaintext = format!("{from:?} #{n} ").into_bytes();
                plaintext.resize(plaintext.len() + usize::from(len), b'.');
                let session = match from {
                    Party::Alice => &mut self.alice,
                    Party::Bob => self.bob.session.as_mut().ok_or("checked above")?,
                };
                let wire = session.encrypt(&plaintext, &mut self.rng).map_err(|e| format!("encrypt: {e}"))?;
                self.stats.sent[slot(from)] += 1;
                self.inbox[slot(from.other())].push(Envelope { wire, plaintext, delivered: false });
            }
            Op::Deliver { to, pick } => {
                let inbox = &self.inbox[slot(to)];
                if inbox.is_empty() {
                    return Ok(());
                }
                let i = usize::from(pick) % inbox.len();
                let (wire, plaintext, delivered) =
                    (inbox[i].wire.clone(), inbox[i].plaintext.clone(), inbox[i].delivered);
                if delivered {
                    self.must_reject(to, &wire, "a replay")?;
                    self.stats.replays_rejected += 1;
                } else {
                    let got = self
                        .receive(to, &wire)
                        .map_err(|e| format!("first delivery of message {i} to {to:?} failed: {e}"))?;
                    ensure!(got == plaintext, "message {i} to {to:?} decrypted to the wrong plaintext");
                    self.inbox[slot(to)][i].delivered = true;
                    self.stats.delivered[slot(to)] += 1;
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
            Op::Reload { who } => {
                let Some(bytes) = self.snapshot(who) else {
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
/// checked to decrypt.
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
