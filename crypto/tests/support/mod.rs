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

use kith_crypto::{DeviceIdentity, OneTimePreKey, PreKeyBundle, Session, SignedPreKey};

/// Bob's published keys and the two ends of an established session.
pub struct Pair {
    pub rng: rng::TestRng,
    pub alice_identity: DeviceIdentity,
    pub bob_identity: DeviceIdentity,
    pub bob_signed_prekey: SignedPreKey,
    pub bob_one_time_prekeys: Vec<OneTimePreKey>,
    pub alice: Session,
    pub bob: Session,
}

/// Alice starts a session (with one-time prekey 100) and sends one message;
/// Bob accepts it. If `reply`, Bob answers and Alice decrypts, so that both
/// sides send plain ratchet messages from then on.
pub fn pair(seed: u64, reply: bool) -> Pair {
    let mut rng = rng::TestRng::from_seed(seed);
    let alice_identity = DeviceIdentity::generate(&mut rng);
    let bob_identity = DeviceIdentity::generate(&mut rng);
    let bob_signed_prekey = SignedPreKey::generate(1, &bob_identity, &mut rng);
    let bob_one_time_prekeys = OneTimePreKey::generate_batch(100, 2, &mut rng).unwrap();
    let bundle = PreKeyBundle::new(
        bob_identity.public().clone(),
        bob_signed_prekey.public().clone(),
        Some(bob_one_time_prekeys[0].public().clone()),
    )
    .verify()
    .unwrap();
    let mut alice = Session::initiate(&alice_identity, &bundle, &mut rng).unwrap();
    let first = alice.encrypt(b"first", &mut rng).unwrap();
    let (mut bob, plaintext) =
        Session::respond(&bob_identity, &bob_signed_prekey, Some(&bob_one_time_prekeys[0]), &first).unwrap();
    assert_eq!(plaintext, b"first");
    if reply {
        let wire = bob.encrypt(b"reply", &mut rng).unwrap();
        assert_eq!(alice.decrypt(&wire).unwrap(), b"reply");
    }
    Pair { rng, alice_identity, bob_identity, bob_signed_prekey, bob_one_time_prekeys, alice, bob }
}
