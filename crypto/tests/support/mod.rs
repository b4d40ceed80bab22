//! Helpers shared by the integration tests (and, by path, the fuzz target).
#![allow(dead_code)]
// Helpers outside #[test] functions: a failure here is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod rng;
pub mod scenario;

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes hex; panics on malformed input (test data only).
pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd-length hex {s:?}");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit")).collect()
}

/// Decodes hex into a fixed-size array.
pub fn unhex_array<const N: usize>(s: &str) -> [u8; N] {
    unhex(s).try_into().expect("hex of the right length")
}

use kith_crypto::{
    DeviceCertificate, DeviceIdentity, OneTimePreKey, PreKeyBundle, ReplayRecord, Session, SignedPreKey, UserIdentity,
    VerifiedPreKeyBundle,
};

/// The clock the tests run at (milliseconds), unless they move it.
pub const NOW: u64 = 1_800_000_000_000;

/// Alice's user id in tests.
pub const ALICE: &str = "alice@example.org";
/// Bob's user id in tests.
pub const BOB: &str = "bob@example.org";

/// Bob's published keys and the two ends of an established session.
pub struct Pair {
    pub rng: rng::TestRng,
    pub alice_user: UserIdentity,
    pub bob_user: UserIdentity,
    pub alice_identity: DeviceIdentity,
    pub alice_certificate: DeviceCertificate,
    pub bob_identity: DeviceIdentity,
    pub bob_certificate: DeviceCertificate,
    pub bob_signed_prekey: SignedPreKey,
    pub bob_one_time_prekeys: Vec<OneTimePreKey>,
    /// Bob's record of accepted first messages.
    pub bob_replays: ReplayRecord,
    pub alice: Session,
    pub bob: Session,
}

impl Pair {
    /// Bob's bundle, with one-time prekey `one_time` (an index into his keys) or none,
    /// verified against his certificate.
    pub fn bob_bundle(&self, one_time: Option<usize>) -> VerifiedPreKeyBundle {
        PreKeyBundle::new(
            self.bob_identity.public().clone(),
            self.bob_signed_prekey.public().clone(),
            one_time.map(|i| self.bob_one_time_prekeys[i].public().clone()),
        )
        .verify(&self.bob_certificate, self.bob_user.public(), BOB, 2)
        .unwrap()
    }

    /// Bob accepts a first message with his signed prekey and one-time prekey `one_time`.
    pub fn bob_respond(
        &mut self,
        one_time: Option<usize>,
        wire: &[u8],
    ) -> kith_crypto::Result<(Session, kith_crypto::Decrypted)> {
        Session::respond(
            &self.bob_identity,
            &self.bob_certificate,
            &self.bob_signed_prekey,
            one_time.map(|i| &self.bob_one_time_prekeys[i]),
            &mut self.bob_replays,
            wire,
            NOW,
        )
    }
}

/// Alice (device 1) starts a session with Bob (device 2) using one-time prekey 100 and
/// sends one message; Bob accepts it. If `reply`, Bob answers and Alice decrypts, so that
/// both sides send plain ratchet messages from then on.
pub fn pair(seed: u64, reply: bool) -> Pair {
    let mut rng = rng::TestRng::from_seed(seed);
    let alice_user = UserIdentity::generate(&mut rng);
    let bob_user = UserIdentity::generate(&mut rng);
    let alice_identity = DeviceIdentity::generate(&mut rng);
    let bob_identity = DeviceIdentity::generate(&mut rng);
    let alice_certificate = alice_user.certify(ALICE, 1, alice_identity.public()).unwrap();
    let bob_certificate = bob_user.certify(BOB, 2, bob_identity.public()).unwrap();
    let bob_signed_prekey = SignedPreKey::generate(1, &bob_identity, &mut rng);
    let bob_one_time_prekeys = OneTimePreKey::generate_batch(100, 2, &mut rng).unwrap();
    let bundle = PreKeyBundle::new(
        bob_identity.public().clone(),
        bob_signed_prekey.public().clone(),
        Some(bob_one_time_prekeys[0].public().clone()),
    )
    .verify(&bob_certificate, bob_user.public(), BOB, 2)
    .unwrap();
    let mut alice = Session::initiate(&alice_identity, &alice_certificate, &bundle, &mut rng).unwrap();
    let first = alice.encrypt(b"first", &mut rng).unwrap();
    let mut bob_replays = ReplayRecord::new();
    let (mut bob, first) = Session::respond(
        &bob_identity,
        &bob_certificate,
        &bob_signed_prekey,
        Some(&bob_one_time_prekeys[0]),
        &mut bob_replays,
        &first,
        NOW,
    )
    .unwrap();
    assert_eq!(first.plaintext, b"first");
    if reply {
        let wire = bob.encrypt(b"reply", &mut rng).unwrap();
        assert_eq!(alice.decrypt(&wire, NOW).unwrap().plaintext, b"reply");
    }
    Pair {
        rng,
        alice_user,
        bob_user,
        alice_identity,
        alice_certificate,
        bob_identity,
        bob_certificate,
        bob_signed_prekey,
        bob_one_time_prekeys,
        bob_replays,
        alice,
        bob,
    }
}
