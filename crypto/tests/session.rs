//! Behaviour of sessions: rejection of tampered, truncated, replayed and
//! out-of-range messages (always leaving the session unchanged), session
//! setup errors, and what Debug output may show.

// Helpers outside #[test] functions: a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ed25519_dalek::{Signer, SigningKey};
use kith_crypto::{
    CryptoError, MAX_SKIP, MAX_SKIPPED_KEYS, MIN_MESSAGE_LEN, MessageInfo, OneTimePreKey, PreKeyBundle, PublicIdentity,
    Role, Session, SignedPreKey, SignedPreKeyPublic, inspect, safety_number,
};
use support::rng::TestRng;
use support::{hex, pair};

/// Decrypts `wire`, which must fail; asserts the session did not change.
fn rejected(session: &mut Session, wire: &[u8]) -> CryptoError {
    let before = session.to_bytes();
    let err = session.decrypt(wire).expect_err("must be rejected");
    assert_eq!(*session.to_bytes(), *before, "rejecting {err:?} changed the session");
    err
}

#[test]
fn prekey_messages_until_the_first_reply() {
    let mut p = pair(1, false);
    assert!(p.alice.awaiting_reply());
    let second = p.alice.encrypt(b"second", &mut p.rng).unwrap();
    let MessageInfo::PreKey(info) = inspect(&second).unwrap() else { panic!("prekey message expected") };
    assert_eq!(info.sender(), p.alice_identity.public());
    assert_eq!(info.signed_prekey_id(), 1);
    assert_eq!(info.one_time_prekey_id(), Some(100));
    assert_eq!(info.counter(), 1);
    assert_eq!(info.base_key(), p.alice.base_key());
    assert!(p.bob.matches_prekey_message(&info));
    assert_eq!(p.bob.decrypt(&second).unwrap(), b"second");

    let reply = p.bob.encrypt(b"reply", &mut p.rng).unwrap();
    assert!(!kith_crypto::is_prekey_message(&reply));
    assert!(!inspect(&reply).unwrap().is_prekey());
    assert_eq!(p.alice.decrypt(&reply).unwrap(), b"reply");
    assert!(!p.alice.awaiting_reply());
    let third = p.alice.encrypt(b"third", &mut p.rng).unwrap();
    let info = inspect(&third).unwrap();
    assert!(matches!(info, MessageInfo::Ratchet { counter: 0, .. }));
    let MessageInfo::Ratchet { ratchet_key, .. } = &info else { panic!() };
    assert_eq!(format!("{info:?}"), format!("Ratchet {{ ratchet_key: {}, counter: 0 }}", hex(ratchet_key)));
    assert_eq!(info.sender(), None);
    assert_eq!(p.bob.decrypt(&third).unwrap(), b"third");
    assert_eq!(p.alice.role(), Role::Initiator);
    assert_eq!(p.bob.role(), Role::Responder);
    assert_eq!(p.bob.remote_identity(), p.alice_identity.public());
    assert_eq!(p.alice.remote_identity(), p.bob_identity.public());
    assert_eq!(p.alice.local_identity(), p.alice_identity.public());
}

#[test]
fn tampered_header_is_rejected() {
    let mut p = pair(2, true);
    let wire = p.alice.encrypt(b"hello", &mut p.rng).unwrap();
    for byte in 0..42 {
        for bit in 0..8 {
            let mut bad = wire.clone();
            bad[byte] ^= 1 << bit;
            rejected(&mut p.bob, &bad);
        }
    }
    // A changed previous-chain length is caught by authentication.
    let mut bad = wire.clone();
    bad[37] ^= 1;
    assert_eq!(rejected(&mut p.bob, &bad), CryptoError::AuthenticationFailed { counter: 0 });
    // A changed version byte is caught by decoding.
    let mut bad = wire.clone();
    bad[0] = 2;
    assert!(matches!(rejected(&mut p.bob, &bad), CryptoError::UnsupportedVersion { got: 2, .. }));
    assert_eq!(p.bob.decrypt(&wire).unwrap(), b"hello");
}

#[test]
fn tampered_ciphertext_and_tag_are_rejected() {
    let mut p = pair(3, true);
    let wire = p.alice.encrypt(b"attack at dawn", &mut p.rng).unwrap();
    for i in 42..wire.len() {
        let mut bad = wire.clone();
        bad[i] ^= 0x80;
        assert_eq!(rejected(&mut p.bob, &bad), CryptoError::AuthenticationFailed { counter: 0 });
    }
    assert_eq!(p.bob.decrypt(&wire).unwrap(), b"attack at dawn");
}

#[test]
fn truncated_messages_are_rejected() {
    let mut p = pair(4, true);
    let wire = p.alice.encrypt(b"0123456789", &mut p.rng).unwrap();
    for len in 0..wire.len() {
        let err = rejected(&mut p.bob, &wire[..len]);
        if len < MIN_MESSAGE_LEN {
            assert!(matches!(err, CryptoError::Truncated { .. }), "{len}: {err:?}");
        } else {
            assert_eq!(err, CryptoError::AuthenticationFailed { counter: 0 }, "{len}");
        }
    }
    let mut longer = wire.clone();
    longer.push(0);
    assert_eq!(rejected(&mut p.bob, &longer), CryptoError::AuthenticationFailed { counter: 0 });
    assert_eq!(p.bob.decrypt(&wire).unwrap(), b"0123456789");
}

#[test]
fn replays_are_rejected() {
    let mut p = pair(5, true);
    let a = p.alice.encrypt(b"a", &mut p.rng).unwrap();
    let b = p.alice.encrypt(b"b", &mut p.rng).unwrap();
    assert_eq!(p.bob.decrypt(&b).unwrap(), b"b");
    assert_eq!(rejected(&mut p.bob, &b), CryptoError::DuplicateMessage { counter: 1 });
    assert_eq!(p.bob.skipped_key_count(), 1);
    assert_eq!(p.bob.decrypt(&a).unwrap(), b"a");
    assert_eq!(p.bob.skipped_key_count(), 0);
    assert_eq!(rejected(&mut p.bob, &a), CryptoError::DuplicateMessage { counter: 0 });
}

#[test]
fn messages_of_an_old_chain_still_decrypt_after_the_ratchet_turns() {
    let mut p = pair(6, true);
    let old: Vec<_> = (0..3).map(|i| p.alice.encrypt(&[i], &mut p.rng).unwrap()).collect();
    assert_eq!(p.bob.decrypt(&old[1]).unwrap(), [1]);
    let reply = p.bob.encrypt(b"turn", &mut p.rng).unwrap();
    assert_eq!(p.alice.decrypt(&reply).unwrap(), b"turn");
    let new = p.alice.encrypt(b"new chain", &mut p.rng).unwrap();
    assert_eq!(p.bob.decrypt(&new).unwrap(), b"new chain");
    assert_eq!(p.bob.skipped_key_count(), 2);
    assert_eq!(p.bob.decrypt(&old[2]).unwrap(), [2]);
    assert_eq!(p.bob.decrypt(&old[0]).unwrap(), [0]);
    // A replay from an old chain is not mistaken for a new ratchet step.
    rejected(&mut p.bob, &old[1]);
}

#[test]
fn a_jump_over_max_skip_is_rejected() {
    let mut p = pair(7, true);
    let wires: Vec<_> = (0..=MAX_SKIP + 1).map(|_| p.alice.encrypt(b"x", &mut p.rng).unwrap()).collect();
    let err = rejected(&mut p.bob, &wires[MAX_SKIP as usize + 1]);
    assert_eq!(err, CryptoError::SkipTooLarge { got: 2001, max: 2000 });
    assert_eq!(err.to_string(), "skip of 2001 messages exceeds max 2000");
    // Exactly MAX_SKIP is allowed.
    assert_eq!(p.bob.decrypt(&wires[MAX_SKIP as usize]).unwrap(), b"x");
    assert_eq!(p.bob.skipped_key_count(), MAX_SKIP as usize);
    assert_eq!(p.bob.decrypt(&wires[MAX_SKIP as usize + 1]).unwrap(), b"x");
    assert_eq!(p.bob.decrypt(&wires[17]).unwrap(), b"x");
}

#[test]
fn a_jump_over_max_skip_in_the_first_message_is_rejected() {
    let p = pair(8, false);
    let mut alice = p.alice;
    let mut rng = p.rng;
    let wires: Vec<_> = (0..=MAX_SKIP + 1).map(|_| alice.encrypt(b"y", &mut rng).unwrap()).collect();
    let respond =
        |wire: &[u8]| Session::respond(&p.bob_identity, &p.bob_signed_prekey, Some(&p.bob_one_time_prekeys[0]), wire);
    // The first message of this chain was message 1 (pair() sent message 0).
    assert_eq!(respond(&wires[MAX_SKIP as usize]).unwrap_err(), CryptoError::SkipTooLarge { got: 2001, max: 2000 });
    let (bob, _) = respond(&wires[MAX_SKIP as usize - 1]).unwrap();
    assert_eq!(bob.skipped_key_count(), MAX_SKIP as usize);
}

#[test]
fn the_skipped_key_store_is_bounded() {
    let mut p = pair(9, true);
    // 1500 skipped keys in Alice's second chain...
    let first: Vec<_> = (0..1501).map(|_| p.alice.encrypt(b"1", &mut p.rng).unwrap()).collect();
    assert_eq!(p.bob.decrypt(&first[1500]).unwrap(), b"1");
    assert_eq!(p.bob.skipped_key_count(), 1500);
    let reply = p.bob.encrypt(b"r", &mut p.rng).unwrap();
    p.alice.decrypt(&reply).unwrap();
    // ...and a skip of 600 in her third would make 2100.
    let second: Vec<_> = (0..601).map(|_| p.alice.encrypt(b"2", &mut p.rng).unwrap()).collect();
    let err = rejected(&mut p.bob, &second[600]);
    assert_eq!(err, CryptoError::TooManySkippedKeys { would_hold: 2100, max: MAX_SKIPPED_KEYS });
    assert_eq!(p.bob.decrypt(&second[500]).unwrap(), b"2");
    assert_eq!(p.bob.skipped_key_count(), 2000);
    // Full store: only messages with stored keys, or no skip, get through.
    assert_eq!(rejected(&mut p.bob, &second[502]), CryptoError::TooManySkippedKeys { would_hold: 2001, max: 2000 });
    assert_eq!(p.bob.decrypt(&second[501]).unwrap(), b"2");
    assert_eq!(p.bob.decrypt(&first[3]).unwrap(), b"1");
    assert_eq!(p.bob.decrypt(&second[502]).unwrap(), b"2");
}

#[test]
fn respond_checks_the_prekeys_it_is_given() {
    let mut p = pair(10, false);
    let wire = p.alice.encrypt(b"again", &mut p.rng).unwrap();
    let other_spk = SignedPreKey::generate(2, &p.bob_identity, &mut p.rng);
    let respond = |spk: &SignedPreKey, otpk: Option<&OneTimePreKey>| {
        Session::respond(&p.bob_identity, spk, otpk, &wire).map(|(_, pt)| pt)
    };
    assert_eq!(
        respond(&other_spk, Some(&p.bob_one_time_prekeys[0])).unwrap_err(),
        CryptoError::SignedPreKeyMismatch { in_message: 1, supplied: 2 }
    );
    assert_eq!(
        respond(&p.bob_signed_prekey, None).unwrap_err(),
        CryptoError::OneTimePreKeyMismatch { in_message: Some(100), supplied: None }
    );
    assert_eq!(
        respond(&p.bob_signed_prekey, Some(&p.bob_one_time_prekeys[1])).unwrap_err(),
        CryptoError::OneTimePreKeyMismatch { in_message: Some(100), supplied: Some(101) }
    );
    assert_eq!(respond(&p.bob_signed_prekey, Some(&p.bob_one_time_prekeys[0])).unwrap(), b"again");

    // A key with the right id but the wrong secret fails authentication.
    let impostor = OneTimePreKey::generate(100, &mut p.rng);
    assert!(matches!(
        respond(&p.bob_signed_prekey, Some(&impostor)).unwrap_err(),
        CryptoError::AuthenticationFailed { .. }
    ));

    let reply = p.bob.encrypt(b"reply", &mut p.rng).unwrap();
    assert_eq!(
        Session::respond(&p.alice_identity, &p.bob_signed_prekey, None, &reply).unwrap_err(),
        CryptoError::NotAPreKeyMessage { got: 0x01 }
    );
}

#[test]
fn a_sender_without_the_claimed_identity_key_fails() {
    // Mallory copies Alice's public identity into a prekey message but does
    // not have her X25519 identity secret: DH1 differs, so it cannot open.
    let mut p = pair(11, false);
    let mallory = kith_crypto::DeviceIdentity::generate(&mut p.rng);
    let bundle = PreKeyBundle::new(
        p.bob_identity.public().clone(),
        p.bob_signed_prekey.public().clone(),
        Some(p.bob_one_time_prekeys[1].public().clone()),
    )
    .verify()
    .unwrap();
    let mut session = Session::initiate(&mallory, &bundle, &mut p.rng).unwrap();
    let mut wire = session.encrypt(b"I am Alice", &mut p.rng).unwrap();
    wire[2..130].copy_from_slice(&p.alice_identity.public().to_bytes()[2..]);
    let err =
        Session::respond(&p.bob_identity, &p.bob_signed_prekey, Some(&p.bob_one_time_prekeys[1]), &wire).unwrap_err();
    assert!(matches!(err, CryptoError::AuthenticationFailed { .. }), "{err:?}");
}

#[test]
fn prekey_messages_of_another_setup_do_not_match() {
    let mut p = pair(12, false);
    let mut rng = TestRng::from_seed(99);
    let bundle = PreKeyBundle::new(p.bob_identity.public().clone(), p.bob_signed_prekey.public().clone(), None)
        .verify()
        .unwrap();
    let mut second = Session::initiate(&p.alice_identity, &bundle, &mut rng).unwrap();
    let wire = second.encrypt(b"other setup", &mut rng).unwrap();
    let MessageInfo::PreKey(info) = inspect(&wire).unwrap() else { panic!() };
    assert!(!p.bob.matches_prekey_message(&info));
    assert_eq!(
        rejected(&mut p.bob, &wire),
        CryptoError::SessionMismatch { reason: "prekey message of another session setup" }
    );
    let own = p.alice.encrypt(b"own", &mut p.rng).unwrap();
    assert!(matches!(rejected(&mut p.alice, &own), CryptoError::SessionMismatch { .. }));
}

#[test]
fn bad_signed_prekey_signature_is_rejected() {
    let mut p = pair(13, false);
    let public = p.bob_signed_prekey.public();
    let mut signature = public.signature();
    signature[5] ^= 4;
    let forged = SignedPreKeyPublic::from_parts(public.id(), public.key(), signature).unwrap();
    let bundle = PreKeyBundle::new(p.bob_identity.public().clone(), forged, None);
    assert_eq!(bundle.verify().unwrap_err(), CryptoError::BadSignedPreKeySignature { id: 1 });

    // A different id under the same signature does not verify either.
    let renumbered = SignedPreKeyPublic::from_parts(9, public.key(), public.signature()).unwrap();
    let bundle = PreKeyBundle::new(p.bob_identity.public().clone(), renumbered, None);
    assert_eq!(bundle.verify().unwrap_err(), CryptoError::BadSignedPreKeySignature { id: 9 });

    // A prekey signed by someone else (the server substituting its own).
    let mallory = kith_crypto::DeviceIdentity::generate(&mut p.rng);
    let theirs = SignedPreKey::generate(1, &mallory, &mut p.rng);
    let bundle = PreKeyBundle::new(p.bob_identity.public().clone(), theirs.public().clone(), None);
    assert_eq!(bundle.verify().unwrap_err(), CryptoError::BadSignedPreKeySignature { id: 1 });
}

#[test]
fn bad_identity_binding_is_rejected() {
    let p = pair(14, false);
    let alice = p.alice_identity.public();
    let bob = p.bob_identity.public();
    // Alice's signing key claiming Bob's X25519 key.
    assert_eq!(
        PublicIdentity::from_parts(alice.signing_key(), bob.dh_key(), alice.binding_signature()).unwrap_err(),
        CryptoError::BadIdentityBinding
    );
    let mut sig = alice.binding_signature();
    sig[63] ^= 0x10;
    assert_eq!(
        PublicIdentity::from_parts(alice.signing_key(), alice.dh_key(), sig).unwrap_err(),
        CryptoError::BadIdentityBinding
    );
    assert_eq!(
        &PublicIdentity::from_parts(alice.signing_key(), alice.dh_key(), alice.binding_signature()).unwrap(),
        alice
    );
}

/// Signs a signed prekey with an arbitrary public key, as a malicious
/// device could, following the documented signature format.
fn sign_prekey(identity: &kith_crypto::DeviceIdentity, id: u32, key: [u8; 32]) -> SignedPreKeyPublic {
    let seed: [u8; 32] = identity.to_bytes()[2..34].try_into().unwrap();
    let mut msg = b"kith-signed-prekey-v1\0".to_vec();
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&key);
    let signature = SigningKey::from_bytes(&seed).sign(&msg).to_bytes();
    SignedPreKeyPublic::from_parts(id, key, signature).unwrap()
}

#[test]
fn small_order_keys_are_refused() {
    let mut p = pair(15, true);
    // A correctly signed bundle whose prekey has small order (u = 0 and 1).
    for u in [0u8, 1] {
        let mut key = [0u8; 32];
        key[0] = u;
        let bundle = PreKeyBundle::new(p.bob_identity.public().clone(), sign_prekey(&p.bob_identity, 5, key), None)
            .verify()
            .unwrap();
        assert_eq!(
            Session::initiate(&p.alice_identity, &bundle, &mut p.rng).unwrap_err(),
            CryptoError::NonContributoryKeyAgreement { what: "DH1" }
        );
    }
    // A ratchet message announcing a small-order ratchet key.
    let mut wire = vec![1, 1];
    wire.extend_from_slice(&[0; 32]);
    wire.extend_from_slice(&[0; 8]);
    wire.extend_from_slice(&[0; 16]);
    assert_eq!(rejected(&mut p.bob, &wire), CryptoError::NonContributoryKeyAgreement { what: "receiving ratchet" });
}

#[test]
fn the_sending_counter_cannot_wrap() {
    let p = pair(16, false); // Alice keeps her first sending chain
    let mut rng = p.rng;
    // Session layout (docs/crypto.md): with no skipped keys the encoding ends
    // with Ns, Nr, PN and the skipped-key count, four bytes each.
    let mut state = p.alice.to_bytes().to_vec();
    let len = state.len();
    state[len - 16..len - 12].copy_from_slice(&u32::MAX.to_be_bytes());
    let mut alice = Session::from_bytes(&state).unwrap();
    let before = alice.to_bytes();
    assert_eq!(alice.encrypt(b"one too many", &mut rng).unwrap_err(), CryptoError::CounterExhausted { sent: u32::MAX });
    assert_eq!(*alice.to_bytes(), *before);
}

#[test]
fn debug_output_shows_public_keys_only() {
    let p = pair(17, true);
    let identity_secret = hex(&p.alice_identity.to_bytes()[2..]);
    let shown = format!("{:?}", p.alice_identity);
    assert!(!shown.contains(&identity_secret[..64]) && !shown.contains(&identity_secret[64..]), "{shown}");
    assert!(shown.contains(&hex(&p.alice_identity.public().signing_key())), "{shown}");

    let public = p.alice_identity.public();
    assert_eq!(
        format!("{public:?}"),
        format!("PublicIdentity {{ signing_key: {}, dh_key: {} }}", hex(&public.signing_key()), hex(&public.dh_key()))
    );

    let spk_secret = hex(&p.bob_signed_prekey.to_bytes()[6..38]);
    let shown = format!("{:?}", p.bob_signed_prekey);
    assert!(!shown.contains(&spk_secret) && shown.contains(&hex(&p.bob_signed_prekey.public().key())), "{shown}");
    let otpk_secret = hex(&p.bob_one_time_prekeys[0].to_bytes()[6..]);
    assert!(!format!("{:?}", p.bob_one_time_prekeys[0]).contains(&otpk_secret));

    // Session layout (docs/crypto.md): for an initiator that used a one-time
    // prekey, the root key is at bytes 301..333 and the ratchet secret at
    // 333..365; chain keys follow their presence flags.
    let state = p.alice.to_bytes();
    let shown = format!("{:?}", p.alice);
    for range in [301..333, 333..365] {
        assert!(!shown.contains(&hex(&state[range])), "{shown}");
    }
    assert!(shown.contains("Session {"), "{shown}");
}

#[test]
fn safety_numbers_are_symmetric_and_distinguish_identities() {
    let mut rng = TestRng::from_seed(18);
    let a = kith_crypto::DeviceIdentity::generate(&mut rng);
    let b = kith_crypto::DeviceIdentity::generate(&mut rng);
    let c = kith_crypto::DeviceIdentity::generate(&mut rng);
    let ab = safety_number(a.public(), "@a:x", b.public(), "@b:x");
    assert_eq!(ab, safety_number(b.public(), "@b:x", a.public(), "@a:x"));
    assert_eq!(ab.len(), 71);
    let groups: Vec<_> = ab.split(' ').collect();
    assert_eq!(groups.len(), 12);
    assert!(groups.iter().all(|g| g.len() == 5 && g.bytes().all(|d| d.is_ascii_digit())));
    assert_ne!(ab, safety_number(a.public(), "@a:x", c.public(), "@b:x"), "a substituted key shows");
    assert_ne!(ab, safety_number(a.public(), "@a:x", b.public(), "@c:x"), "the user id counts");
    // Each side's half is fixed by its own key and id alone.
    let ac = safety_number(a.public(), "@a:x", c.public(), "@c:x");
    let half = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
    let (ab, ac) = (half(&ab), half(&ac));
    assert!(ab[..6] == ac[..6] || ab[..6] == ac[6..] || ab[6..] == ac[..6] || ab[6..] == ac[6..]);
}

#[test]
fn one_time_prekey_batches() {
    let mut rng = TestRng::from_seed(19);
    let batch = OneTimePreKey::generate_batch(u32::MAX - 2, 3, &mut rng).unwrap();
    assert_eq!(batch.iter().map(OneTimePreKey::id).collect::<Vec<_>>(), [u32::MAX - 2, u32::MAX - 1, u32::MAX]);
    assert_ne!(batch[0].public().key(), batch[1].public().key());
    assert!(OneTimePreKey::generate_batch(7, 0, &mut rng).unwrap().is_empty());
    assert_eq!(
        OneTimePreKey::generate_batch(u32::MAX - 2, 4, &mut rng).unwrap_err(),
        CryptoError::PreKeyIdOverflow { start: u32::MAX - 2, count: 4 }
    );
}
