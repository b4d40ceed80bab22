//! Serialization: round trips for every persistent type, and rejection of
//! truncated, extended, mislabelled and random input without panicking.

// Helpers outside #[test] functions: a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use kith_crypto::{
    CryptoError, DeviceCertificate, DeviceIdentity, DeviceRemoval, OneTimePreKey, OneTimePreKeyPublic, PreKeyBundle,
    PublicIdentity, ReplayRecord, Session, SignedPreKey, SignedPreKeyPublic, UserIdentity, UserIdentityPublic, VERSION,
    inspect,
};
use rand_core::Rng;
use support::rng::TestRng;
use support::{BOB, NOW, pair};

type Decoder = fn(&[u8]) -> Result<(), CryptoError>;

/// Every decoder, by name, discarding the decoded value.
const DECODERS: [(&str, Decoder); 14] = [
    ("DeviceIdentity", |b| DeviceIdentity::from_bytes(b).map(drop)),
    ("PublicIdentity", |b| PublicIdentity::from_bytes(b).map(drop)),
    ("SignedPreKey", |b| SignedPreKey::from_bytes(b).map(drop)),
    ("SignedPreKeyPublic", |b| SignedPreKeyPublic::from_bytes(b).map(drop)),
    ("OneTimePreKey", |b| OneTimePreKey::from_bytes(b).map(drop)),
    ("OneTimePreKeyPublic", |b| OneTimePreKeyPublic::from_bytes(b).map(drop)),
    ("PreKeyBundle", |b| PreKeyBundle::from_bytes(b).map(drop)),
    ("Session", |b| Session::from_bytes(b).map(drop)),
    ("ReplayRecord", |b| ReplayRecord::from_bytes(b).map(drop)),
    ("UserIdentity", |b| UserIdentity::from_bytes(b).map(drop)),
    ("UserIdentityPublic", |b| UserIdentityPublic::from_bytes(b).map(drop)),
    ("DeviceCertificate", |b| DeviceCertificate::from_bytes(b).map(drop)),
    ("DeviceRemoval", |b| DeviceRemoval::from_bytes(b).map(drop)),
    ("message", |b| inspect(b).map(drop)),
];

/// One valid encoding of each type (in `DECODERS` order), from a session
/// with skipped keys so the variable-length part is exercised.
fn samples() -> Vec<Vec<u8>> {
    let mut p = pair(40, true);
    let skipped: Vec<_> = (0..3).map(|_| p.alice.encrypt(b"s", &mut p.rng).unwrap()).collect();
    p.bob.decrypt(&skipped[2], NOW).unwrap();
    assert_eq!(p.bob.skipped_key_count(), 2);
    assert_eq!(p.bob_replays.len(), 1);
    let bundle = PreKeyBundle::new(
        p.bob_identity.public().clone(),
        p.bob_signed_prekey.public().clone(),
        Some(p.bob_one_time_prekeys[1].public().clone()),
    );
    vec![
        p.alice_identity.to_bytes().to_vec(),
        p.alice_identity.public().to_bytes(),
        p.bob_signed_prekey.to_bytes().to_vec(),
        p.bob_signed_prekey.public().to_bytes(),
        p.bob_one_time_prekeys[1].to_bytes().to_vec(),
        p.bob_one_time_prekeys[1].public().to_bytes(),
        bundle.to_bytes(),
        p.bob.to_bytes().to_vec(),
        p.bob_replays.to_bytes(),
        p.bob_user.to_bytes().to_vec(),
        p.bob_user.public().to_bytes(),
        p.bob_certificate.to_bytes(),
        p.bob_user.remove(BOB, 2, p.bob_identity.public()).unwrap().to_bytes(),
        skipped[0].clone(),
    ]
}

#[test]
fn round_trips() {
    let p = pair(41, true);
    let id = DeviceIdentity::from_bytes(&p.alice_identity.to_bytes()).unwrap();
    assert_eq!(id.public(), p.alice_identity.public());
    assert_eq!(*id.to_bytes(), *p.alice_identity.to_bytes());
    assert_eq!(id.to_bytes().len(), DeviceIdentity::ENCODED_LEN);

    let public = p.alice_identity.public();
    assert_eq!(&PublicIdentity::from_bytes(&public.to_bytes()).unwrap(), public);
    assert_eq!(public.to_bytes().len(), PublicIdentity::ENCODED_LEN);

    let spk = SignedPreKey::from_bytes(&p.bob_signed_prekey.to_bytes()).unwrap();
    assert_eq!(spk.public(), p.bob_signed_prekey.public());
    assert_eq!(spk.to_bytes().len(), SignedPreKey::ENCODED_LEN);
    let spk_public = SignedPreKeyPublic::from_bytes(&spk.public().to_bytes()).unwrap();
    assert_eq!(&spk_public, spk.public());
    assert_eq!(spk_public.to_bytes().len(), SignedPreKeyPublic::ENCODED_LEN);
    spk_public.verify(p.bob_identity.public()).unwrap();

    let otpk = OneTimePreKey::from_bytes(&p.bob_one_time_prekeys[1].to_bytes()).unwrap();
    assert_eq!(otpk.public(), p.bob_one_time_prekeys[1].public());
    assert_eq!(otpk.to_bytes().len(), OneTimePreKey::ENCODED_LEN);
    let otpk_public = OneTimePreKeyPublic::from_bytes(&otpk.public().to_bytes()).unwrap();
    assert_eq!(&otpk_public, otpk.public());
    assert_eq!(otpk_public.to_bytes().len(), OneTimePreKeyPublic::ENCODED_LEN);

    for one_time in [None, Some(otpk_public)] {
        let bundle = PreKeyBundle::new(p.bob_identity.public().clone(), spk_public.clone(), one_time);
        let decoded = PreKeyBundle::from_bytes(&bundle.to_bytes()).unwrap();
        assert_eq!(decoded, bundle);
        assert_eq!(decoded.verify(&p.bob_certificate, p.bob_user.public(), BOB, 2).unwrap().bundle(), &bundle);
    }

    for session in [&p.alice, &p.bob] {
        let bytes = session.to_bytes();
        let decoded = Session::from_bytes(&bytes).unwrap();
        assert_eq!(*decoded.to_bytes(), *bytes);
        assert_eq!(decoded.role(), session.role());
        assert_eq!(decoded.remote_identity(), session.remote_identity());
        assert_eq!(decoded.base_key(), session.base_key());
        assert_eq!(decoded.remote_certificate(), session.remote_certificate());
    }

    let user = UserIdentity::from_bytes(&p.alice_user.to_bytes()).unwrap();
    assert_eq!(user.public(), p.alice_user.public());
    assert_eq!(user.to_bytes().len(), UserIdentity::ENCODED_LEN);
    assert_eq!(UserIdentityPublic::from_bytes(&user.public().to_bytes()).unwrap(), *user.public());
    assert_eq!(user.public().to_bytes().len(), UserIdentityPublic::ENCODED_LEN);
    let certificate = DeviceCertificate::from_bytes(&p.alice_certificate.to_bytes()).unwrap();
    assert_eq!(certificate, p.alice_certificate);
    assert_eq!(certificate.to_bytes().len(), 2 + 32 + 2 + 17 + 4 + 128 + 64);
}

#[test]
fn sessions_keep_working_after_a_round_trip() {
    let mut p = pair(42, false);
    let pending = p.alice.encrypt(b"pending", &mut p.rng).unwrap();
    let mut alice = Session::from_bytes(&p.alice.to_bytes()).unwrap();
    assert!(alice.awaiting_reply());
    let mut bob = Session::from_bytes(&p.bob.to_bytes()).unwrap();
    assert_eq!(bob.decrypt(&pending, NOW).unwrap().plaintext, b"pending");
    let reply = bob.encrypt(b"reply", &mut p.rng).unwrap();
    let mut bob = Session::from_bytes(&bob.to_bytes()).unwrap();
    assert_eq!(alice.decrypt(&reply, NOW).unwrap().plaintext, b"reply");
    let again = alice.encrypt(b"again", &mut p.rng).unwrap();
    assert_eq!(bob.decrypt(&again, NOW).unwrap().plaintext, b"again");
}

#[test]
fn every_truncation_and_extension_is_rejected() {
    for ((name, decode), bytes) in DECODERS.iter().zip(samples()) {
        decode(&bytes).unwrap_or_else(|e| panic!("{name}: sample does not decode: {e}"));
        let minimum = if *name == "message" { kith_crypto::MIN_MESSAGE_LEN } else { bytes.len() };
        for len in 0..minimum {
            let err = decode(&bytes[..len]).expect_err(name);
            assert!(matches!(err, CryptoError::Truncated { .. }), "{name} cut to {len}: {err:?}");
        }
        if *name != "message" {
            // (A message's ciphertext runs to the end: an extra byte is a
            // different ciphertext, rejected when it fails to authenticate.)
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(
                matches!(decode(&longer), Err(CryptoError::TrailingBytes { extra: 1, .. })),
                "{name} with a trailing byte: {:?}",
                decode(&longer)
            );
        }
    }
}

#[test]
fn unknown_versions_and_wrong_kinds_are_rejected() {
    let samples = samples();
    for ((name, decode), bytes) in DECODERS.iter().zip(&samples) {
        assert_eq!(bytes[0], VERSION);
        // Version 1 (the protocol before user identities) is refused like any other.
        for version in [0u8, 1, 3, 0x80, 0xff] {
            let mut other = bytes.clone();
            other[0] = version;
            assert!(
                matches!(decode(&other), Err(CryptoError::UnsupportedVersion { got, supported: 2, .. }) if got == version),
                "{name} v{version}: {:?}",
                decode(&other)
            );
        }
        // Every other type's encoding is refused by kind, not misread.
        for (j, theirs) in samples.iter().enumerate() {
            if theirs[1] != bytes[1] && !(*name == "message" && theirs[1] <= 0x02) {
                let err = decode(theirs).expect_err(name);
                assert!(matches!(err, CryptoError::WrongKind { .. }), "{name} given {}: {err:?}", DECODERS[j].0);
            }
        }
    }
}

#[test]
fn random_bytes_never_panic_and_are_rejected() {
    let mut rng = TestRng::from_seed(43);
    let samples = samples();
    for round in 0..3000usize {
        let len = (rng.next_u32() % 400) as usize;
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        if round % 2 == 0 && len >= 2 {
            // Valid prefix bytes so decoding gets past the header.
            let sample = &samples[round % samples.len()];
            bytes[0] = VERSION;
            bytes[1] = sample[1];
        }
        for (name, decode) in DECODERS {
            // Random data of the exact length can be a valid key (secrets are
            // any 32 bytes; public prekeys are any canonical value and their
            // signatures are checked by `verify`, not by decoding), a replay
            // record, or a syntactically valid message. Anything holding an
            // identity, certificate or removal has a signature that random
            // data cannot satisfy.
            let may_be_valid =
                !matches!(name, "PublicIdentity" | "PreKeyBundle" | "Session" | "DeviceCertificate" | "DeviceRemoval");
            if decode(&bytes).is_ok() && !may_be_valid {
                panic!("{name} accepted random bytes {bytes:02x?}");
            }
        }
    }
}

#[test]
fn mutated_encodings_never_panic() {
    let mut rng = TestRng::from_seed(44);
    let p = pair(45, false);
    for ((_, decode), sample) in DECODERS.iter().zip(samples()) {
        for _ in 0..300 {
            let mut bytes = sample.clone();
            for _ in 0..1 + rng.next_u32() % 4 {
                let i = (rng.next_u32() as usize) % bytes.len();
                bytes[i] = rng.next_u32() as u8;
            }
            let _ = decode(&bytes);
            let mut session = Session::from_bytes(&p.bob.to_bytes()).unwrap();
            let _ = session.decrypt(&bytes, NOW);
        }
    }
}

#[test]
fn malformed_fields_are_rejected_with_specific_errors() {
    let p = pair(46, true);
    let bundle =
        PreKeyBundle::new(p.bob_identity.public().clone(), p.bob_signed_prekey.public().clone(), None).to_bytes();
    let mut bad = bundle.clone();
    *bad.last_mut().unwrap() = 2;
    assert_eq!(
        PreKeyBundle::from_bytes(&bad).unwrap_err(),
        CryptoError::InvalidFlag { what: "one-time prekey flag", value: 2 }
    );

    // X25519 public keys must be canonical: below 2^255 - 19, top bit clear.
    let p_minus_1 = {
        let mut k = [0xff; 32];
        k[0] = 0xec;
        k[31] = 0x7f;
        k
    };
    assert!(OneTimePreKeyPublic::from_parts(1, p_minus_1).is_ok());
    let mut p_itself = p_minus_1;
    p_itself[0] = 0xed;
    let mut top_bit = [0u8; 32];
    top_bit[31] = 0x80;
    for key in [p_itself, top_bit, [0xff; 32]] {
        assert_eq!(
            OneTimePreKeyPublic::from_parts(1, key).unwrap_err(),
            CryptoError::NonCanonicalKey { what: "one-time prekey" }
        );
    }

    // Ed25519 identity keys: not a point, small order, non-canonical.
    let public = p.alice_identity.public();
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    // y = p + 1 encodes the same point as y = 1, non-canonically.
    let mut non_canonical = [0xff; 32];
    non_canonical[0] = 0xee;
    non_canonical[31] = 0x7f;
    for key in [not_a_point, identity_point, non_canonical] {
        assert_eq!(
            PublicIdentity::from_parts(key, public.dh_key(), public.binding_signature()).unwrap_err(),
            CryptoError::InvalidSigningKey { what: "identity signing key" },
            "{key:02x?}"
        );
    }
}

#[test]
fn inconsistent_sessions_are_rejected() {
    let mut p = pair(47, true);
    let wires: Vec<_> = (0..4).map(|_| p.alice.encrypt(b"k", &mut p.rng).unwrap()).collect();
    p.bob.decrypt(&wires[3], NOW).unwrap();
    let state = p.bob.to_bytes().to_vec();
    // Layout tail: ..., count (4), then 76-byte entries (key, counter, stamp, secret).
    let count_at = state.len() - 3 * 76 - 4;
    assert_eq!(state[count_at..count_at + 4], 3u32.to_be_bytes());
    // The entries are in insertion order, stamped with the clock.
    assert_eq!(state[count_at + 4 + 36..count_at + 4 + 44], NOW.to_be_bytes());

    let mut too_many = state.clone();
    too_many[count_at..count_at + 4].copy_from_slice(&2001u32.to_be_bytes());
    assert_eq!(
        Session::from_bytes(&too_many).unwrap_err(),
        CryptoError::TooManyEntries { what: "skipped-key store", count: 2001, max: 2000 }
    );

    // A stamp earlier than the one before it: not in insertion order.
    let mut unordered = state.clone();
    let second_stamp = count_at + 4 + 76 + 36;
    unordered[second_stamp..second_stamp + 8].copy_from_slice(&(NOW - 1).to_be_bytes());
    assert!(matches!(Session::from_bytes(&unordered), Err(CryptoError::InconsistentState { .. })));

    // The same key twice.
    let mut twice = state.clone();
    let (first, second) = (count_at + 4, count_at + 4 + 76);
    let entry: Vec<u8> = twice[first..second].to_vec();
    twice[second..second + 76].copy_from_slice(&entry);
    assert!(matches!(Session::from_bytes(&twice), Err(CryptoError::InconsistentState { .. })));

    // Byte 2 is the role; the awaiting-reply flag follows the two certificate
    // bodies and the setup (base key, signed prekey id, one-time prekey id).
    let flag = 3 + (p.bob_certificate.to_bytes().len() - 2) + (p.alice_certificate.to_bytes().len() - 2) + 32 + 4 + 5;
    let mut awaiting = state.clone();
    assert_eq!(awaiting[flag], 0);
    awaiting[flag] = 1;
    assert!(matches!(Session::from_bytes(&awaiting), Err(CryptoError::InconsistentState { .. })));
    let mut role = state;
    role[2] = 7;
    assert_eq!(Session::from_bytes(&role).unwrap_err(), CryptoError::InvalidFlag { what: "session role", value: 7 });
}

#[test]
fn a_version_1_session_is_refused_with_a_clear_error() {
    let p = pair(48, true);
    let mut old = p.bob.to_bytes().to_vec();
    old[0] = 1;
    let err = Session::from_bytes(&old).unwrap_err();
    assert_eq!(err, CryptoError::UnsupportedVersion { what: "session", got: 1, supported: 2 });
    assert_eq!(err.to_string(), "unsupported session version 1 (this library reads version 2)");
}
