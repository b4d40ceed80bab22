//! Behaviour of sessions: rejection of tampered, truncated, replayed and
//! out-of-range messages (always leaving the session unchanged), the bounded
//! and expiring store of skipped keys, certificates bound into sessions, the
//! replay record, session setup errors, and what Debug output may show.

// Helpers outside #[test] functions: a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use ed25519_dalek::{Signer, SigningKey};
use kith_crypto::{
    CryptoError, DeviceCertificate, DeviceIdentity, DeviceRemoval, MAX_SKIP, MAX_SKIPPED_KEYS,
    MAX_SKIPPED_KEYS_PER_CHAIN, MIN_MESSAGE_LEN, MessageInfo, OneTimePreKey, PreKeyBundle, PublicIdentity,
    ReplayRecord, Role, SKIPPED_KEY_MAX_AGE_MS, Session, SignedPreKey, SignedPreKeyPublic, UserIdentity, inspect,
    safety_number,
};
use support::rng::TestRng;
use support::{ALICE, BOB, NOW, hex, pair};

/// Decrypts `wire`, which must fail; asserts the session did not change.
fn rejected(session: &mut Session, wire: &[u8]) -> CryptoError {
    let before = session.to_bytes();
    let err = session.decrypt(wire, NOW).expect_err("must be rejected");
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
    assert_eq!(info.certificate(), &p.alice_certificate);
    info.certificate().check(p.alice_user.public(), ALICE, 1).unwrap();
    assert_eq!(info.signed_prekey_id(), 1);
    assert_eq!(info.one_time_prekey_id(), Some(100));
    assert_eq!(info.counter(), 1);
    assert_eq!(info.base_key(), p.alice.base_key());
    assert!(p.bob.matches_prekey_message(&info));
    assert_eq!(p.bob.decrypt(&second, NOW).unwrap().plaintext, b"second");

    let reply = p.bob.encrypt(b"reply", &mut p.rng).unwrap();
    assert!(!kith_crypto::is_prekey_message(&reply));
    assert!(!inspect(&reply).unwrap().is_prekey());
    assert_eq!(p.alice.decrypt(&reply, NOW).unwrap().plaintext, b"reply");
    assert!(!p.alice.awaiting_reply());
    let third = p.alice.encrypt(b"third", &mut p.rng).unwrap();
    let info = inspect(&third).unwrap();
    // Alice's first chain held two messages.
    assert!(matches!(info, MessageInfo::Ratchet { counter: 0, previous_counter: 2, .. }));
    let MessageInfo::Ratchet { ratchet_key, .. } = &info else { panic!() };
    assert_eq!(
        format!("{info:?}"),
        format!("Ratchet {{ ratchet_key: {}, previous_counter: 2, counter: 0 }}", hex(ratchet_key))
    );
    assert_eq!(info.sender(), None);
    assert_eq!(p.bob.decrypt(&third, NOW).unwrap().plaintext, b"third");
    assert_eq!(p.alice.role(), Role::Initiator);
    assert_eq!(p.bob.role(), Role::Responder);
    assert_eq!(p.bob.remote_identity(), p.alice_identity.public());
    assert_eq!(p.alice.remote_identity(), p.bob_identity.public());
    assert_eq!(p.alice.local_identity(), p.alice_identity.public());
    assert_eq!(p.alice.remote_certificate(), &p.bob_certificate);
    assert_eq!(p.bob.remote_certificate(), &p.alice_certificate);
    assert_eq!(p.bob.local_certificate(), &p.bob_certificate);
    assert_eq!(p.bob.signed_prekey_id(), 1);
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
    // A changed version byte is caught by decoding; version 1 is the old protocol.
    let mut bad = wire.clone();
    bad[0] = 1;
    assert!(matches!(rejected(&mut p.bob, &bad), CryptoError::UnsupportedVersion { got: 1, supported: 2, .. }));
    assert_eq!(p.bob.decrypt(&wire, NOW).unwrap().plaintext, b"hello");
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
    assert_eq!(p.bob.decrypt(&wire, NOW).unwrap().plaintext, b"attack at dawn");
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
    assert_eq!(p.bob.decrypt(&wire, NOW).unwrap().plaintext, b"0123456789");
}

#[test]
fn replays_are_rejected() {
    let mut p = pair(5, true);
    let a = p.alice.encrypt(b"a", &mut p.rng).unwrap();
    let b = p.alice.encrypt(b"b", &mut p.rng).unwrap();
    assert_eq!(p.bob.decrypt(&b, NOW).unwrap().plaintext, b"b");
    assert_eq!(rejected(&mut p.bob, &b), CryptoError::DuplicateMessage { counter: 1 });
    assert_eq!(p.bob.skipped_key_count(), 1);
    assert_eq!(p.bob.decrypt(&a, NOW).unwrap().plaintext, b"a");
    assert_eq!(p.bob.skipped_key_count(), 0);
    assert_eq!(rejected(&mut p.bob, &a), CryptoError::DuplicateMessage { counter: 0 });
}

#[test]
fn messages_of_an_old_chain_still_decrypt_after_the_ratchet_turns() {
    let mut p = pair(6, true);
    let old: Vec<_> = (0..3).map(|i| p.alice.encrypt(&[i], &mut p.rng).unwrap()).collect();
    assert_eq!(p.bob.decrypt(&old[1], NOW).unwrap().plaintext, [1]);
    let reply = p.bob.encrypt(b"turn", &mut p.rng).unwrap();
    assert_eq!(p.alice.decrypt(&reply, NOW).unwrap().plaintext, b"turn");
    let new = p.alice.encrypt(b"new chain", &mut p.rng).unwrap();
    assert_eq!(p.bob.decrypt(&new, NOW).unwrap().plaintext, b"new chain");
    assert_eq!(p.bob.skipped_key_count(), 2);
    assert_eq!(p.bob.decrypt(&old[2], NOW).unwrap().plaintext, [2]);
    assert_eq!(p.bob.decrypt(&old[0], NOW).unwrap().plaintext, [0]);
    // A replay from an old chain is not mistaken for a new ratchet step.
    rejected(&mut p.bob, &old[1]);
}

#[test]
fn a_jump_over_max_skip_is_rejected() {
    let mut p = pair(7, true);
    let wires: Vec<_> = (0..=MAX_SKIP + 1).map(|_| p.alice.encrypt(b"x", &mut p.rng).unwrap()).collect();
    let err = rejected(&mut p.bob, &wires[MAX_SKIP as usize + 1]);
    assert_eq!(err, CryptoError::SkipTooLarge { got: 25_001, max: 25_000 });
    assert_eq!(err.to_string(), "skip of 25001 messages exceeds max 25000");
    // Exactly MAX_SKIP is allowed; only the newest keys of the run are kept.
    let decrypted = p.bob.decrypt(&wires[MAX_SKIP as usize], NOW).unwrap();
    assert_eq!(decrypted.plaintext, b"x");
    assert_eq!(decrypted.lost, u64::from(MAX_SKIP) - MAX_SKIPPED_KEYS_PER_CHAIN as u64);
    assert_eq!(p.bob.skipped_key_count(), MAX_SKIPPED_KEYS_PER_CHAIN);
    assert_eq!(p.bob.decrypt(&wires[MAX_SKIP as usize + 1], NOW).unwrap().plaintext, b"x");
    assert_eq!(p.bob.decrypt(&wires[MAX_SKIP as usize - 1], NOW).unwrap().plaintext, b"x");
    // An early message whose key was dropped cannot be read, and changes nothing.
    assert_eq!(rejected(&mut p.bob, &wires[17]), CryptoError::DuplicateMessage { counter: 17 });
}

#[test]
fn a_jump_over_max_skip_in_the_first_message_is_rejected() {
    let mut p = pair(8, false);
    let wires: Vec<_> = (0..=MAX_SKIP + 1).map(|_| p.alice.encrypt(b"y", &mut p.rng).unwrap()).collect();
    // The first message of this chain was message 1 (pair() sent message 0), so a fresh
    // responder skips `counter` messages.
    let mut fresh = ReplayRecord::new();
    let mut respond = |wire: &[u8]| {
        Session::respond(
            &p.bob_identity,
            &p.bob_certificate,
            &p.bob_signed_prekey,
            Some(&p.bob_one_time_prekeys[0]),
            &mut fresh,
            wire,
            NOW,
        )
    };
    assert_eq!(respond(&wires[MAX_SKIP as usize]).unwrap_err(), CryptoError::SkipTooLarge { got: 25_001, max: 25_000 });
    let (bob, _) = respond(&wires[MAX_SKIP as usize - 1]).unwrap();
    assert_eq!(bob.skipped_key_count(), MAX_SKIPPED_KEYS_PER_CHAIN);
}

#[test]
fn a_full_chain_evicts_its_oldest_keys_and_never_wedges() {
    let mut p = pair(9, true);
    let wires: Vec<_> = (0..3001).map(|i| p.alice.encrypt(format!("{i}").as_bytes(), &mut p.rng).unwrap()).collect();
    // 3,000 messages withheld, then one gets through: the newest 1,000 skipped keys are kept.
    let last = p.bob.decrypt(&wires[3000], NOW).unwrap();
    assert_eq!((last.plaintext.as_slice(), last.lost), (&b"3000"[..], 2000));
    assert_eq!(p.bob.skipped_key_count(), MAX_SKIPPED_KEYS_PER_CHAIN);
    assert_eq!(rejected(&mut p.bob, &wires[1999]), CryptoError::DuplicateMessage { counter: 1999 });
    assert_eq!(p.bob.decrypt(&wires[2000], NOW).unwrap().plaintext, b"2000");
    // The chain goes on; further gaps in it evict its oldest keys first: 999 kept plus
    // 10 new is 9 over the limit.
    let more: Vec<_> = (0..11).map(|_| p.alice.encrypt(b"more", &mut p.rng).unwrap()).collect();
    let next = p.bob.decrypt(&more[10], NOW).unwrap();
    assert_eq!(next.lost, 9);
    assert_eq!(rejected(&mut p.bob, &wires[2009]), CryptoError::DuplicateMessage { counter: 2009 });
    assert_eq!(p.bob.decrypt(&wires[2010], NOW).unwrap().plaintext, b"2010");
    assert_eq!(p.bob.decrypt(&more[0], NOW).unwrap().plaintext, b"more");
}

#[test]
fn the_skipped_key_store_is_bounded_per_session_oldest_first() {
    let mut p = pair(10, true);
    // Three chains of Alice's with 900 skipped keys each: the store keeps the newest 2,000.
    let mut chains = Vec::new();
    for round in 0..3 {
        let wires: Vec<_> = (0..901).map(|_| p.alice.encrypt(b"k", &mut p.rng).unwrap()).collect();
        let got = p.bob.decrypt(&wires[900], NOW).unwrap();
        assert_eq!(got.lost, [0, 0, 700][round], "round {round}");
        let reply = p.bob.encrypt(b"r", &mut p.rng).unwrap();
        p.alice.decrypt(&reply, NOW).unwrap();
        chains.push(wires);
    }
    assert_eq!(p.bob.skipped_key_count(), MAX_SKIPPED_KEYS);
    // The first chain's oldest 700 went; the rest of all three chains still decrypt.
    assert_eq!(rejected(&mut p.bob, &chains[0][699]), CryptoError::AuthenticationFailed { counter: 699 });
    assert_eq!(p.bob.decrypt(&chains[0][700], NOW).unwrap().plaintext, b"k");
    assert_eq!(p.bob.decrypt(&chains[1][0], NOW).unwrap().plaintext, b"k");
    assert_eq!(p.bob.decrypt(&chains[2][899], NOW).unwrap().plaintext, b"k");
}

#[test]
fn skipped_keys_expire() {
    let mut p = pair(11, true);
    let wires: Vec<_> = (0..4).map(|_| p.alice.encrypt(b"late", &mut p.rng).unwrap()).collect();
    assert_eq!(p.bob.decrypt(&wires[3], NOW).unwrap().lost, 0);
    assert_eq!(p.bob.skipped_key_count(), 3);
    // Exactly at the age limit a key still works...
    assert_eq!(p.bob.decrypt(&wires[0], NOW + SKIPPED_KEY_MAX_AGE_MS).unwrap().plaintext, b"late");
    // ...one millisecond later it is gone, and the next decryption drops it.
    let later = NOW + SKIPPED_KEY_MAX_AGE_MS + 1;
    let before = p.bob.to_bytes();
    assert_eq!(p.bob.decrypt(&wires[1], later).unwrap_err(), CryptoError::DuplicateMessage { counter: 1 });
    assert_eq!(*p.bob.to_bytes(), *before, "a rejected message changes nothing, expiry included");
    let next = p.alice.encrypt(b"now", &mut p.rng).unwrap();
    assert_eq!(p.bob.decrypt(&next, later).unwrap().lost, 2);
    assert_eq!(p.bob.skipped_key_count(), 0);

    // Expiry also runs on its own, for a session that hears nothing.
    let wires: Vec<_> = (0..3).map(|_| p.alice.encrypt(b"x", &mut p.rng).unwrap()).collect();
    p.bob.decrypt(&wires[2], later).unwrap();
    assert_eq!(p.bob.expire_skipped_keys(later + SKIPPED_KEY_MAX_AGE_MS), 0);
    assert_eq!(p.bob.expire_skipped_keys(later + SKIPPED_KEY_MAX_AGE_MS + 1), 2);
}

#[test]
fn a_clock_that_goes_back_does_not_make_the_store_inconsistent() {
    let mut p = pair(12, true);
    let wires: Vec<_> = (0..6).map(|_| p.alice.encrypt(b"t", &mut p.rng).unwrap()).collect();
    p.bob.decrypt(&wires[2], NOW).unwrap();
    p.bob.decrypt(&wires[5], NOW - 1000).unwrap();
    let reloaded = Session::from_bytes(&p.bob.to_bytes()).unwrap();
    assert_eq!(reloaded.skipped_key_count(), 4);
}

#[test]
fn respond_checks_the_prekeys_it_is_given() {
    let mut p = pair(13, false);
    let wire = p.alice.encrypt(b"again", &mut p.rng).unwrap();
    let other_spk = SignedPreKey::generate(2, &p.bob_identity, &mut p.rng);
    let respond = |spk: &SignedPreKey, otpk: Option<&OneTimePreKey>| {
        // A fresh record each time: these are not replays.
        Session::respond(&p.bob_identity, &p.bob_certificate, spk, otpk, &mut ReplayRecord::new(), &wire, NOW)
            .map(|(_, d)| d.plaintext)
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
    // Our certificate must be for our identity.
    let err = Session::respond(
        &p.bob_identity,
        &p.alice_certificate,
        &p.bob_signed_prekey,
        Some(&p.bob_one_time_prekeys[0]),
        &mut ReplayRecord::new(),
        &wire,
        NOW,
    )
    .unwrap_err();
    assert!(matches!(err, CryptoError::CertificateMismatch { .. }), "{err:?}");

    let reply = p.bob.encrypt(b"reply", &mut p.rng).unwrap();
    assert_eq!(
        Session::respond(
            &p.alice_identity,
            &p.alice_certificate,
            &p.bob_signed_prekey,
            None,
            &mut ReplayRecord::new(),
            &reply,
            NOW
        )
        .unwrap_err(),
        CryptoError::NotAPreKeyMessage { got: 0x01 }
    );
}

#[test]
fn a_replayed_first_message_is_refused_even_without_its_session() {
    let mut p = pair(14, true);
    // A first message made without a one-time prekey (the server handed out none).
    let bundle = p.bob_bundle(None);
    let mut second = Session::initiate(&p.alice_identity, &p.alice_certificate, &bundle, &mut p.rng).unwrap();
    let wire = second.encrypt(b"prekey-less", &mut p.rng).unwrap();
    let (accepted, first) = p.bob_respond(None, &wire).unwrap();
    assert_eq!(first.plaintext, b"prekey-less");
    assert_eq!(p.bob_replays.len(), 2, "both setups are recorded");
    // The session is gone (evicted by newer ones); the replay is still refused.
    drop(accepted);
    let before = p.bob_replays.clone();
    assert_eq!(p.bob_respond(None, &wire).unwrap_err(), CryptoError::ReplayedFirstMessage { signed_prekey_id: 1 });
    assert_eq!(p.bob_replays, before);
    // Once the signed prekey is dropped, so are its records (and such a message cannot be
    // accepted anyway: the key is gone).
    assert_eq!(p.bob_replays.retain_signed_prekeys(&[2]), 2);
    assert!(p.bob_replays.is_empty());
    let back = ReplayRecord::from_bytes(&before.to_bytes()).unwrap();
    assert_eq!(back, before);
}

#[test]
fn a_sender_without_the_claimed_identity_key_fails() {
    // Mallory copies Alice's certificate into a prekey message but does not
    // have her X25519 identity secret: DH1 differs, so it cannot open.
    let mut p = pair(15, false);
    let mallory = DeviceIdentity::generate(&mut p.rng);
    let mallory_certificate = p.alice_user.certify(ALICE, 1, mallory.public()).unwrap();
    let bundle = p.bob_bundle(Some(1));
    let mut session = Session::initiate(&mallory, &mallory_certificate, &bundle, &mut p.rng).unwrap();
    let mut wire = session.encrypt(b"I am Alice", &mut p.rng).unwrap();
    let body_len = p.alice_certificate.to_bytes().len() - 2;
    wire[2..2 + body_len].copy_from_slice(&p.alice_certificate.to_bytes()[2..]);
    let err = p.bob_respond(Some(1), &wire).unwrap_err();
    assert!(matches!(err, CryptoError::AuthenticationFailed { .. }), "{err:?}");
}

#[test]
fn a_message_cannot_be_passed_off_as_another_users() {
    // A server re-labels Alice's first message with a certificate that Mallory's user
    // identity signed for Alice's very device keys: the setup is the same, but the
    // associated data binds the user, so it does not open.
    let mut p = pair(16, false);
    let mallory_user = UserIdentity::generate(&mut p.rng);
    let relabelled = mallory_user.certify("mallory@example.org", 1, p.alice_identity.public()).unwrap();
    assert_eq!(relabelled.to_bytes().len(), p.alice_certificate.to_bytes().len() + 2);
    let wire = p.alice.encrypt(b"from alice", &mut p.rng).unwrap();
    let body_len = p.alice_certificate.to_bytes().len() - 2;
    let mut forged = wire[..2].to_vec();
    forged.extend_from_slice(&relabelled.to_bytes()[2..]);
    forged.extend_from_slice(&wire[2 + body_len..]);
    let MessageInfo::PreKey(info) = inspect(&forged).unwrap() else { panic!() };
    assert_eq!(info.certificate().user_id(), "mallory@example.org");
    let err = Session::respond(
        &p.bob_identity,
        &p.bob_certificate,
        &p.bob_signed_prekey,
        Some(&p.bob_one_time_prekeys[0]),
        &mut ReplayRecord::new(),
        &forged,
        NOW,
    )
    .unwrap_err();
    assert!(matches!(err, CryptoError::AuthenticationFailed { .. }), "{err:?}");
}

#[test]
fn bundles_are_accepted_only_with_a_certificate_from_the_trusted_identity() {
    let mut p = pair(17, false);
    let bundle = PreKeyBundle::new(p.bob_identity.public().clone(), p.bob_signed_prekey.public().clone(), None);
    assert!(bundle.verify(&p.bob_certificate, p.bob_user.public(), BOB, 2).is_ok());
    // A device the server added, with a certificate by some other identity.
    let server_user = UserIdentity::generate(&mut p.rng);
    let ghost = DeviceIdentity::generate(&mut p.rng);
    let ghost_spk = SignedPreKey::generate(1, &ghost, &mut p.rng);
    let ghost_bundle = PreKeyBundle::new(ghost.public().clone(), ghost_spk.public().clone(), None);
    let ghost_certificate = server_user.certify(BOB, 9, ghost.public()).unwrap();
    let err = ghost_bundle.verify(&ghost_certificate, p.bob_user.public(), BOB, 9).unwrap_err();
    assert!(matches!(err, CryptoError::UntrustedUserIdentity { .. }), "{err:?}");
    assert!(err.to_string().contains(&p.bob_user.public().to_string()), "{err}");
    // Bob's real certificate does not vouch for the ghost's keys, nor for another device id.
    assert_eq!(
        ghost_bundle.verify(&p.bob_certificate, p.bob_user.public(), BOB, 2).unwrap_err(),
        CryptoError::CertificateMismatch { reason: "it vouches for another device identity" }
    );
    assert_eq!(
        bundle.verify(&p.bob_certificate, p.bob_user.public(), BOB, 3).unwrap_err(),
        CryptoError::CertificateMismatch { reason: "it names another device id" }
    );
    assert_eq!(
        bundle.verify(&p.bob_certificate, p.bob_user.public(), ALICE, 2).unwrap_err(),
        CryptoError::CertificateMismatch { reason: "it names another user" }
    );
    // A certificate whose signature was tampered with does not even decode.
    let mut bytes = p.bob_certificate.to_bytes();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert_eq!(DeviceCertificate::from_bytes(&bytes).unwrap_err(), CryptoError::BadCertificateSignature);
}

#[test]
fn removals_are_signed_and_name_one_device_key() {
    let mut p = pair(18, false);
    let removal = p.bob_user.remove(BOB, 2, p.bob_identity.public()).unwrap();
    assert!(removal.revokes(&p.bob_certificate));
    let back = DeviceRemoval::from_bytes(&removal.to_bytes()).unwrap();
    assert_eq!(back, removal);
    assert_eq!(removal.to_bytes().len(), DeviceRemoval::encoded_len(BOB.len()));
    // A re-linked device (new keys, same id) is not revoked by the old removal.
    let relinked = DeviceIdentity::generate(&mut p.rng);
    assert!(!removal.revokes(&p.bob_user.certify(BOB, 2, relinked.public()).unwrap()));
    // Nobody but the user identity can sign one.
    let mut bytes = removal.to_bytes();
    bytes[40] ^= 1; // inside the user id
    assert!(DeviceRemoval::from_bytes(&bytes).is_err());
    let other = UserIdentity::generate(&mut p.rng).remove(BOB, 2, p.bob_identity.public()).unwrap();
    assert!(!other.revokes(&p.bob_certificate));
}

#[test]
fn prekey_messages_of_another_setup_do_not_match() {
    let mut p = pair(19, false);
    let mut rng = TestRng::from_seed(99);
    let bundle = p.bob_bundle(None);
    let mut second = Session::initiate(&p.alice_identity, &p.alice_certificate, &bundle, &mut rng).unwrap();
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
    let mut p = pair(20, false);
    let verify = |bundle: PreKeyBundle| bundle.verify(&p.bob_certificate, p.bob_user.public(), BOB, 2).map(drop);
    let public = p.bob_signed_prekey.public();
    let mut signature = public.signature();
    signature[5] ^= 4;
    let forged = SignedPreKeyPublic::from_parts(public.id(), public.key(), signature).unwrap();
    let bundle = PreKeyBundle::new(p.bob_identity.public().clone(), forged, None);
    assert_eq!(verify(bundle).unwrap_err(), CryptoError::BadSignedPreKeySignature { id: 1 });

    // A different id under the same signature does not verify either.
    let renumbered = SignedPreKeyPublic::from_parts(9, public.key(), public.signature()).unwrap();
    let bundle = PreKeyBundle::new(p.bob_identity.public().clone(), renumbered, None);
    assert_eq!(verify(bundle).unwrap_err(), CryptoError::BadSignedPreKeySignature { id: 9 });

    // A prekey signed by someone else (the server substituting its own).
    let mallory = DeviceIdentity::generate(&mut p.rng);
    let theirs = SignedPreKey::generate(1, &mallory, &mut p.rng);
    let bundle = PreKeyBundle::new(p.bob_identity.public().clone(), theirs.public().clone(), None);
    assert_eq!(verify(bundle).unwrap_err(), CryptoError::BadSignedPreKeySignature { id: 1 });
}

#[test]
fn bad_identity_binding_is_rejected() {
    let p = pair(21, false);
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
fn sign_prekey(identity: &DeviceIdentity, id: u32, key: [u8; 32]) -> SignedPreKeyPublic {
    let seed: [u8; 32] = identity.to_bytes()[2..34].try_into().unwrap();
    let mut msg = b"kith-signed-prekey-v1\0".to_vec();
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&key);
    let signature = SigningKey::from_bytes(&seed).sign(&msg).to_bytes();
    SignedPreKeyPublic::from_parts(id, key, signature).unwrap()
}

#[test]
fn small_order_keys_are_refused() {
    let mut p = pair(22, true);
    // A correctly signed bundle whose prekey has small order (u = 0 and 1).
    for u in [0u8, 1] {
        let mut key = [0u8; 32];
        key[0] = u;
        let bundle = PreKeyBundle::new(p.bob_identity.public().clone(), sign_prekey(&p.bob_identity, 5, key), None)
            .verify(&p.bob_certificate, p.bob_user.public(), BOB, 2)
            .unwrap();
        assert_eq!(
            Session::initiate(&p.alice_identity, &p.alice_certificate, &bundle, &mut p.rng).unwrap_err(),
            CryptoError::NonContributoryKeyAgreement { what: "DH1" }
        );
    }
    // A ratchet message announcing a small-order ratchet key.
    let mut wire = vec![2, 1];
    wire.extend_from_slice(&[0; 32]);
    wire.extend_from_slice(&[0; 8]);
    wire.extend_from_slice(&[0; 16]);
    assert_eq!(rejected(&mut p.bob, &wire), CryptoError::NonContributoryKeyAgreement { what: "receiving ratchet" });
}

#[test]
fn the_sending_counter_cannot_wrap() {
    let p = pair(23, false); // Alice keeps her first sending chain
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
    let p = pair(24, true);
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

    // Session layout (docs/crypto.md): after the two certificate bodies and the
    // setup fields come the awaiting-reply flag, the root key and the ratchet
    // secret; chain keys follow their presence flags.
    let state = p.alice.to_bytes();
    let bodies = p.alice_certificate.to_bytes().len() - 2 + p.bob_certificate.to_bytes().len() - 2;
    let root = 3 + bodies + 32 + 4 + 5 + 1;
    let shown = format!("{:?}", p.alice);
    for range in [root..root + 32, root + 32..root + 64] {
        assert!(!shown.contains(&hex(&state[range])), "{shown}");
    }
    assert!(shown.contains("Session {"), "{shown}");
    let shown = format!("{:?}", p.alice_user);
    assert!(!shown.contains(&hex(&p.alice_user.to_bytes()[2..])), "{shown}");
    assert!(shown.contains(&hex(&p.alice_user.public().key())), "{shown}");
}

#[test]
fn safety_numbers_are_symmetric_and_distinguish_identities() {
    let mut rng = TestRng::from_seed(18);
    let a = UserIdentity::generate(&mut rng);
    let b = UserIdentity::generate(&mut rng);
    let c = UserIdentity::generate(&mut rng);
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
