//! Known-answer vectors for protocol version 2.
//!
//! `tests/data/kat.json` records, for fixed randomness, every key,
//! certificate, removal, bundle, wire message, linking message, replay record,
//! serialized session and safety number the library produces, plus the
//! intermediate values of the key schedule and the eviction order of the
//! skipped-key store. The test
//!
//! 1. re-runs the library with the same deterministic RNG,
//! 2. independently rebuilds every expected byte from `docs/crypto.md` with
//!    nothing but the primitives (X25519, Ed25519, HKDF/HMAC-SHA256,
//!    SHA-256, ChaCha20-Poly1305) — a second implementation of the protocol
//!    that the library's output must match byte for byte,
//! 3. compares both with the file.
//!
//! Regenerate the file after a deliberate format change with
//! `KITH_REGENERATE_KAT=1 cargo test -p kith-crypto --test kat`.
//!
//! # Randomness
//!
//! Block `i` of the stream is `SHA-256("kith-kat-v2" || u64_be(i))`; every
//! draw the library makes is 32 bytes, so draw `i` is block `i`. The draws,
//! in order: 0 Alice's user identity seed, 1 Bob's; 2 and 3 Alice's device
//! (Ed25519 seed, X25519 secret), 4 and 5 Bob's; 6 Bob's signed prekey (id
//! 1); 7 and 8 Bob's one-time prekeys (ids 100, 101); 9 Alice's base key;
//! 10 Alice's first ratchet key; 11 Bob's first ratchet key (his first
//! encrypt); 12 Alice's second ratchet key; 13 and 14 the base and ratchet
//! keys of a second session without a one-time prekey; 15 the link secret
//! (its first 16 bytes); 16 and 17 Alice's new device (the laptop); 18 the
//! laptop's link ephemeral key; 19 the phone's link ephemeral key.

// Helpers outside #[test] functions: a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signer, SigningKey};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use kith_crypto::{
    DeviceIdentity, LinkCode, LinkRequest, LinkResponse, LinkSecret, OneTimePreKey, PreKeyBundle, ReplayRecord,
    Session, SignedPreKey, UserIdentity, safety_number,
};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use support::hex;
use support::rng::TestRng;
use x25519_dalek::{X25519_BASEPOINT_BYTES, x25519};

const LABEL: &[u8] = b"kith-kat-v2";
const ALICE_USER: &str = "alice@example.org";
const BOB_USER: &str = "bob@example.org";
const ALICE_DEVICE: u32 = 1;
const BOB_DEVICE: u32 = 2;
const LAPTOP_DEVICE: u32 = 3;
/// The clock (milliseconds) every decryption of the flow runs at.
const T0: u64 = 1_800_000_000_000;
/// Seven days and one millisecond later: past the skipped-key age limit.
const T1: u64 = T0 + 7 * 24 * 3600 * 1000 + 1;
/// Messages Alice sends in her second chain that never reach Bob, before one that does.
const WITHHELD: u32 = 1099;

/// Plaintexts of the messages, in sending order.
const PLAINTEXTS: [&str; 6] = [
    "Hello, Bob!",
    "Are you there?",
    "Hi Alice.",
    "Yes, here.",
    "The ratchet turned.",
    "No one-time prekey this time.",
];

fn draw(i: u64) -> [u8; 32] {
    TestRng::block(LABEL, i)
}

// ---------------------------------------------------------------------------
// The library's side.

struct LibraryRun {
    value: Map<String, Value>,
    wires: Vec<Vec<u8>>,
    link_request: Vec<u8>,
    link_response: Vec<u8>,
    /// Bob's first session after two skipped keys of Alice's second chain were stored.
    skipped_layout: Vec<u8>,
}

fn run_library() -> LibraryRun {
    let mut rng = TestRng::new(LABEL);
    let alice_user = UserIdentity::generate(&mut rng);
    let bob_user = UserIdentity::generate(&mut rng);
    let alice = DeviceIdentity::generate(&mut rng);
    let bob = DeviceIdentity::generate(&mut rng);
    let alice_cert = alice_user.certify(ALICE_USER, ALICE_DEVICE, alice.public()).unwrap();
    let bob_cert = bob_user.certify(BOB_USER, BOB_DEVICE, bob.public()).unwrap();
    let spk = SignedPreKey::generate(1, &bob, &mut rng);
    let otpks = OneTimePreKey::generate_batch(100, 2, &mut rng).expect("ids fit");
    let bundle = PreKeyBundle::new(bob.public().clone(), spk.public().clone(), Some(otpks[0].public().clone()));
    let verified = bundle.verify(&bob_cert, bob_user.public(), BOB_USER, BOB_DEVICE).expect("verifies");
    let mut a = Session::initiate(&alice, &alice_cert, &verified, &mut rng).expect("initiate");
    let m0 = a.encrypt(PLAINTEXTS[0].as_bytes(), &mut rng).expect("encrypt");
    let m1 = a.encrypt(PLAINTEXTS[1].as_bytes(), &mut rng).expect("encrypt");
    let mut replays = ReplayRecord::new();
    let (mut b, p0) = Session::respond(&bob, &bob_cert, &spk, Some(&otpks[0]), &mut replays, &m0, T0).expect("respond");
    assert_eq!(p0.plaintext, PLAINTEXTS[0].as_bytes());
    assert_eq!(b.decrypt(&m1, T0).expect("decrypt").plaintext, PLAINTEXTS[1].as_bytes());
    let m2 = b.encrypt(PLAINTEXTS[2].as_bytes(), &mut rng).expect("encrypt");
    let m3 = b.encrypt(PLAINTEXTS[3].as_bytes(), &mut rng).expect("encrypt");
    assert_eq!(a.decrypt(&m3, T0).expect("decrypt").plaintext, PLAINTEXTS[3].as_bytes());
    assert_eq!(a.decrypt(&m2, T0).expect("decrypt").plaintext, PLAINTEXTS[2].as_bytes());
    let m4 = a.encrypt(PLAINTEXTS[4].as_bytes(), &mut rng).expect("encrypt");
    assert_eq!(b.decrypt(&m4, T0).expect("decrypt").plaintext, PLAINTEXTS[4].as_bytes());

    let bundle2 = PreKeyBundle::new(bob.public().clone(), spk.public().clone(), None);
    let verified2 = bundle2.verify(&bob_cert, bob_user.public(), BOB_USER, BOB_DEVICE).expect("verifies");
    let mut a2 = Session::initiate(&alice, &alice_cert, &verified2, &mut rng).expect("initiate");
    let m5 = a2.encrypt(PLAINTEXTS[5].as_bytes(), &mut rng).expect("encrypt");
    let (b2, p5) = Session::respond(&bob, &bob_cert, &spk, None, &mut replays, &m5, T0).expect("respond");
    assert_eq!(p5.plaintext, PLAINTEXTS[5].as_bytes());

    // Linking Alice's laptop.
    let secret = LinkSecret::generate(&mut rng);
    let code = LinkCode { user_id: ALICE_USER.into(), secret };
    let code_text = code.to_text().to_string();
    let laptop = DeviceIdentity::generate(&mut rng);
    let request = LinkRequest::new(&LinkCode::parse(&code_text).unwrap(), LAPTOP_DEVICE, &laptop, &mut rng).unwrap();
    let opened = LinkRequest::open(&code.secret, request.bytes()).unwrap();
    assert_eq!((opened.user_id.as_str(), opened.device_id), (ALICE_USER, LAPTOP_DEVICE));
    let response = LinkResponse::new(&code.secret, &opened, &alice_user, &mut rng).unwrap();
    let linked = LinkResponse::open(&code.secret, &request, response.bytes()).unwrap();
    assert_eq!(linked.user_identity.public(), alice_user.public());
    let removal = alice_user.remove(ALICE_USER, LAPTOP_DEVICE, laptop.public()).unwrap();

    let wires = vec![m0, m1, m2, m3, m4, m5];
    let senders = ["alice", "alice", "bob", "bob", "alice", "alice"];
    let sessions = ["first", "first", "first", "first", "first", "second"];
    let messages: Vec<Value> = wires
        .iter()
        .zip(PLAINTEXTS)
        .zip(senders.iter().zip(sessions))
        .map(|((wire, plaintext), (from, session))| {
            json!({ "from": from, "session": session, "plaintext": plaintext, "wire": hex(wire) })
        })
        .collect();
    let final_sessions = json!({
        "alice_first": hex(&a.to_bytes()),
        "bob_first": hex(&b.to_bytes()),
        "alice_second": hex(&a2.to_bytes()),
        "bob_second": hex(&b2.to_bytes()),
    });

    // The skipped-key store, continuing the first session: Alice sends three more
    // messages in her second chain (counters 1, 2, 3); Bob gets the third at T0.
    let more: Vec<_> = (0..3).map(|i| a.encrypt(format!("more {i}").as_bytes(), &mut rng).unwrap()).collect();
    b.decrypt(&more[2], T0).unwrap();
    let skipped_layout = b.to_bytes().to_vec();
    // Eviction: WITHHELD more messages never arrive, then one does; Bob's store keeps
    // the newest 1,000 keys of the chain.
    let withheld: Vec<_> = (0..WITHHELD).map(|_| a.encrypt(b"withheld", &mut rng).unwrap()).collect();
    let arrived = a.encrypt(b"after the gap", &mut rng).unwrap();
    let after_gap = b.decrypt(&arrived, T0).unwrap();
    let kept = b.skipped_key_count();
    let session_after_gap = Sha256::digest(&b.to_bytes()[..]);
    let oldest_kept = (0..WITHHELD as usize).find(|&i| {
        let mut probe = Session::from_bytes(&b.to_bytes()).unwrap();
        probe.decrypt(&withheld[i], T0).is_ok()
    });
    // Expiry: a message at T1 finds every stored key too old.
    let late = a.encrypt(b"a week later", &mut rng).unwrap();
    let after_week = b.decrypt(&late, T1).unwrap();

    let value = json!({
        "alice": {
            "user_id": ALICE_USER,
            "device_id": ALICE_DEVICE,
            "user_identity": hex(&alice_user.to_bytes()),
            "user_identity_public": hex(&alice_user.public().to_bytes()),
            "device_identity": hex(&alice.to_bytes()),
            "public_identity": hex(&alice.public().to_bytes()),
            "device_certificate": hex(&alice_cert.to_bytes()),
        },
        "bob": {
            "user_id": BOB_USER,
            "device_id": BOB_DEVICE,
            "user_identity": hex(&bob_user.to_bytes()),
            "user_identity_public": hex(&bob_user.public().to_bytes()),
            "device_identity": hex(&bob.to_bytes()),
            "public_identity": hex(&bob.public().to_bytes()),
            "device_certificate": hex(&bob_cert.to_bytes()),
            "signed_prekey": hex(&spk.to_bytes()),
            "signed_prekey_public": hex(&spk.public().to_bytes()),
            "one_time_prekeys": otpks.iter().map(|k| hex(&k.to_bytes())).collect::<Vec<_>>(),
            "one_time_prekeys_public": otpks.iter().map(|k| hex(&k.public().to_bytes())).collect::<Vec<_>>(),
            "replay_record": hex(&replays.to_bytes()),
        },
        "bundle_with_one_time_prekey": hex(&bundle.to_bytes()),
        "bundle_without_one_time_prekey": hex(&bundle2.to_bytes()),
        "messages": messages,
        "final_sessions": final_sessions,
        "safety_number": safety_number(alice_user.public(), ALICE_USER, bob_user.public(), BOB_USER),
        "link": {
            "code": code_text,
            "laptop_device_id": LAPTOP_DEVICE,
            "laptop_device_identity": hex(&laptop.to_bytes()),
            "link_id": hex(&code.secret.link_id().unwrap()),
            "request": hex(request.bytes()),
            "response": hex(response.bytes()),
            "laptop_certificate": hex(&linked.certificate.to_bytes()),
            "laptop_removal": hex(&removal.to_bytes()),
        },
        "skipped_keys": {
            "bob_first_with_two_skipped": hex(&skipped_layout),
            "withheld": WITHHELD,
            "lost_when_the_next_arrives": after_gap.lost,
            "kept": kept,
            "oldest_kept_withheld_index": oldest_kept,
            "bob_first_after_the_gap_sha256": hex(&session_after_gap),
            "lost_a_week_later": after_week.lost,
            "kept_a_week_later": b.skipped_key_count(),
        },
    });
    let Value::Object(value) = value else { unreachable!() };
    LibraryRun {
        value,
        wires,
        link_request: request.bytes().to_vec(),
        link_response: response.bytes().to_vec(),
        skipped_layout,
    }
}

// ---------------------------------------------------------------------------
// The specification's side: docs/crypto.md, written out with raw primitives.

mod spec {
    use super::*;

    pub fn x_pub(secret: [u8; 32]) -> [u8; 32] {
        x25519(secret, X25519_BASEPOINT_BYTES)
    }

    pub fn hkdf<const N: usize>(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; N] {
        let mut out = [0u8; N];
        Hkdf::<Sha256>::new(Some(salt), ikm).expand(info, &mut out).expect("length");
        out
    }

    pub fn x3dh(dhs: &[[u8; 32]]) -> [u8; 32] {
        let mut ikm = vec![0xFF; 32];
        for dh in dhs {
            ikm.extend_from_slice(dh);
        }
        hkdf::<32>(&[0; 32], &ikm, b"kith-x3dh-v1")
    }

    pub fn kdf_rk(rk: &[u8; 32], dh: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
        let okm = hkdf::<64>(rk, dh, b"kith-ratchet-root-v1");
        (okm[..32].try_into().expect("32"), okm[32..].try_into().expect("32"))
    }

    fn hmac(key: &[u8; 32], byte: u8) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key).expect("any length");
        mac.update(&[byte]);
        mac.finalize().into_bytes().into()
    }

    /// Returns (message key, next chain key).
    pub fn kdf_ck(ck: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
        (hmac(ck, 0x01), hmac(ck, 0x02))
    }

    pub fn header(ratchet_pub: &[u8; 32], pn: u32, n: u32) -> Vec<u8> {
        let mut h = vec![2, 0x01];
        h.extend_from_slice(ratchet_pub);
        h.extend_from_slice(&pn.to_be_bytes());
        h.extend_from_slice(&n.to_be_bytes());
        h
    }

    /// ChaCha20-Poly1305 with the key and nonce of a 44-byte HKDF output.
    pub fn seal(key_nonce: &[u8; 44], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let key = Key::from(<[u8; 32]>::try_from(&key_nonce[..32]).expect("32"));
        let nonce = Nonce::from(<[u8; 12]>::try_from(&key_nonce[32..]).expect("12"));
        ChaCha20Poly1305::new(&key).encrypt(&nonce, Payload { msg: plaintext, aad }).expect("encrypts")
    }

    /// A complete ratchet message: header, then ChaCha20-Poly1305 of the
    /// plaintext under the message key, authenticating `AD || header`.
    pub fn ratchet_message(mk: &[u8; 32], ad: &[u8], header: Vec<u8>, plaintext: &str) -> Vec<u8> {
        let okm = hkdf::<44>(&[0; 32], mk, b"kith-message-keys-v1");
        let mut aad = ad.to_vec();
        aad.extend_from_slice(&header);
        let ct = seal(&okm, &aad, plaintext.as_bytes());
        let mut out = header;
        out.extend_from_slice(&ct);
        out
    }

    pub struct Identity {
        pub ed_seed: [u8; 32],
        pub x_secret: [u8; 32],
        pub ed_pub: [u8; 32],
        pub x_pub: [u8; 32],
        pub binding: [u8; 64],
    }

    pub fn identity(ed_seed: [u8; 32], x_secret: [u8; 32]) -> Identity {
        let signing = SigningKey::from_bytes(&ed_seed);
        let ed_pub = signing.verifying_key().to_bytes();
        let x = x_pub(x_secret);
        let mut msg = b"kith-identity-binding-v1\0".to_vec();
        msg.extend_from_slice(&ed_pub);
        msg.extend_from_slice(&x);
        Identity { ed_seed, x_secret, ed_pub, x_pub: x, binding: signing.sign(&msg).to_bytes() }
    }

    impl Identity {
        pub fn body(&self) -> Vec<u8> {
            [&self.ed_pub[..], &self.x_pub, &self.binding].concat()
        }
    }

    pub fn user_id(user: &str) -> Vec<u8> {
        [&(user.len() as u16).to_be_bytes()[..], user.as_bytes()].concat()
    }

    pub fn user_pub(seed: [u8; 32]) -> [u8; 32] {
        SigningKey::from_bytes(&seed).verifying_key().to_bytes()
    }

    /// `party = user key || u16 len || user id || u32 device id || IKs || IKd`.
    pub fn party(user_seed: [u8; 32], user: &str, device: u32, id: &Identity) -> Vec<u8> {
        [&user_pub(user_seed)[..], &user_id(user), &device.to_be_bytes(), &id.ed_pub, &id.x_pub].concat()
    }

    /// A certificate body: user key, user id, device id, identity body, signature.
    pub fn certificate_body(user_seed: [u8; 32], user: &str, device: u32, id: &Identity) -> Vec<u8> {
        let mut msg = b"kith-device-certificate-v2\0".to_vec();
        msg.extend_from_slice(&party(user_seed, user, device, id));
        let signature = SigningKey::from_bytes(&user_seed).sign(&msg).to_bytes();
        [&user_pub(user_seed)[..], &user_id(user), &device.to_be_bytes(), &id.body(), &signature].concat()
    }

    pub fn removal(user_seed: [u8; 32], user: &str, device: u32, id: &Identity) -> Vec<u8> {
        let head = [&user_pub(user_seed)[..], &user_id(user), &device.to_be_bytes(), &id.ed_pub].concat();
        let msg = [&b"kith-device-removal-v2\0"[..], &head].concat();
        let signature = SigningKey::from_bytes(&user_seed).sign(&msg).to_bytes();
        [&[2u8, 0x33][..], &head, &signature].concat()
    }

    pub fn signed_prekey_signature(identity: &Identity, id: u32, key: &[u8; 32]) -> [u8; 64] {
        let mut msg = b"kith-signed-prekey-v1\0".to_vec();
        msg.extend_from_slice(&id.to_be_bytes());
        msg.extend_from_slice(key);
        SigningKey::from_bytes(&identity.ed_seed).sign(&msg).to_bytes()
    }
}

/// What the specification says the library must produce.
struct SpecRun {
    wires: Vec<Vec<u8>>,
    /// The intermediate key schedule, recorded for other implementers.
    derived: Map<String, Value>,
    /// Alice's then Bob's encoded public identity.
    identities: Vec<u8>,
    /// Alice's then Bob's encoded certificate.
    certificates: Vec<u8>,
    bundle: Vec<u8>,
    replay_record: Vec<u8>,
    link_id: [u8; 16],
    link_request: Vec<u8>,
    link_response: Vec<u8>,
    laptop_removal: Vec<u8>,
    /// Bob's two skipped keys (counters 1 and 2 of Alice's second chain), as serialized.
    skipped_entries: Vec<u8>,
}

/// Rebuilds everything from the specification.
fn run_spec() -> SpecRun {
    let (alice_seed, bob_seed) = (draw(0), draw(1));
    let alice = spec::identity(draw(2), draw(3));
    let bob = spec::identity(draw(4), draw(5));
    let (spk, spk_pub) = (draw(6), spec::x_pub(draw(6)));
    let spk_sig = spec::signed_prekey_signature(&bob, 1, &spk_pub);
    let (otpk, otpk_pub) = (draw(7), spec::x_pub(draw(7)));
    let (base, base_pub) = (draw(9), spec::x_pub(draw(9)));
    let (a1, a1_pub) = (draw(10), spec::x_pub(draw(10)));
    let (b1, b1_pub) = (draw(11), spec::x_pub(draw(11)));
    let (a2, a2_pub) = (draw(12), spec::x_pub(draw(12)));

    let public_identity = |id: &spec::Identity| [&[2u8, 0x10][..], &id.body()].concat();
    let alice_cert = spec::certificate_body(alice_seed, ALICE_USER, ALICE_DEVICE, &alice);
    let bob_cert = spec::certificate_body(bob_seed, BOB_USER, BOB_DEVICE, &bob);
    let bundle = [
        &[2u8, 0x16][..],
        &bob.body(),
        &1u32.to_be_bytes(),
        &spk_pub,
        &spk_sig,
        &[1],
        &100u32.to_be_bytes(),
        &otpk_pub,
    ]
    .concat();

    // Associated data: the initiator's party, then the responder's.
    let ad =
        [spec::party(alice_seed, ALICE_USER, ALICE_DEVICE, &alice), spec::party(bob_seed, BOB_USER, BOB_DEVICE, &bob)]
            .concat();

    // X3DH, initiator's view.
    let dh1 = x25519(alice.x_secret, spk_pub);
    let dh2 = x25519(base, bob.x_pub);
    let dh3 = x25519(base, spk_pub);
    let dh4 = x25519(base, otpk_pub);
    let sk = spec::x3dh(&[dh1, dh2, dh3, dh4]);
    // The responder computes the same values from its side.
    assert_eq!(dh1, x25519(spk, alice.x_pub));
    assert_eq!(dh2, x25519(bob.x_secret, base_pub));
    assert_eq!(dh4, x25519(otpk, base_pub));

    // Alice's first sending chain; her prekey messages carry her certificate.
    let (rk1, ck_a1) = spec::kdf_rk(&sk, &x25519(a1, spk_pub));
    let (mk0, ck) = spec::kdf_ck(&ck_a1);
    let (mk1, _) = spec::kdf_ck(&ck);
    let prefix = [&[2u8, 0x02][..], &alice_cert, &base_pub, &1u32.to_be_bytes(), &[1], &100u32.to_be_bytes()].concat();
    let m0 = [prefix.clone(), spec::ratchet_message(&mk0, &ad, spec::header(&a1_pub, 0, 0), PLAINTEXTS[0])].concat();
    let m1 = [prefix, spec::ratchet_message(&mk1, &ad, spec::header(&a1_pub, 0, 1), PLAINTEXTS[1])].concat();

    // Bob turns the ratchet on his first send.
    let (rk2, ck_b1) = spec::kdf_rk(&rk1, &x25519(b1, a1_pub));
    let (mk2, ck) = spec::kdf_ck(&ck_b1);
    let (mk3, _) = spec::kdf_ck(&ck);
    let m2 = spec::ratchet_message(&mk2, &ad, spec::header(&b1_pub, 0, 0), PLAINTEXTS[2]);
    let m3 = spec::ratchet_message(&mk3, &ad, spec::header(&b1_pub, 0, 1), PLAINTEXTS[3]);

    // Alice receives (same root step from her side), then turns it again.
    assert_eq!(spec::kdf_rk(&rk1, &x25519(a1, b1_pub)).0, rk2);
    let (rk3, ck_a2) = spec::kdf_rk(&rk2, &x25519(a2, b1_pub));
    let (mk4, ck_a2_next) = spec::kdf_ck(&ck_a2);
    let m4 = spec::ratchet_message(&mk4, &ad, spec::header(&a2_pub, 2, 0), PLAINTEXTS[4]);

    // The skipped keys Bob stores when counter 3 of that chain arrives before 1 and 2:
    // ratchet key, u32 counter, u64 stamp, message key, in derivation order.
    let (mk_1, ck) = spec::kdf_ck(&ck_a2_next);
    let (mk_2, _) = spec::kdf_ck(&ck);
    let skipped_entries = [
        &a2_pub[..],
        &1u32.to_be_bytes(),
        &T0.to_be_bytes(),
        &mk_1,
        &a2_pub,
        &2u32.to_be_bytes(),
        &T0.to_be_bytes(),
        &mk_2,
    ]
    .concat();

    // Second session, no one-time prekey: no DH4, flag byte 0.
    let (base2, base2_pub) = (draw(13), spec::x_pub(draw(13)));
    let (a3, a3_pub) = (draw(14), spec::x_pub(draw(14)));
    let sk2 = spec::x3dh(&[dh1, x25519(base2, bob.x_pub), x25519(base2, spk_pub)]);
    let (rk_second, ck_second) = spec::kdf_rk(&sk2, &x25519(a3, spk_pub));
    let (mk5, _) = spec::kdf_ck(&ck_second);
    let prefix2 = [&[2u8, 0x02][..], &alice_cert, &base2_pub, &1u32.to_be_bytes(), &[0]].concat();
    let m5 = [prefix2, spec::ratchet_message(&mk5, &ad, spec::header(&a3_pub, 0, 0), PLAINTEXTS[5])].concat();

    // Bob's replay record: both setups, sorted by (signed prekey id, base key).
    let mut setups = [base_pub, base2_pub];
    setups.sort();
    let replay_record =
        [&[2u8, 0x21][..], &2u32.to_be_bytes(), &1u32.to_be_bytes(), &setups[0], &1u32.to_be_bytes(), &setups[1]]
            .concat();

    // Linking the laptop.
    let secret: [u8; 16] = draw(15)[..16].try_into().unwrap();
    let laptop = spec::identity(draw(16), draw(17));
    let (e_laptop, e_laptop_pub) = (draw(18), spec::x_pub(draw(18)));
    let (e_phone, e_phone_pub) = (draw(19), spec::x_pub(draw(19)));
    let link_id: [u8; 16] = spec::hkdf::<16>(&[0; 32], &secret, b"kith-link-id-v2");
    let request_head = [&[2u8, 0x34][..], &link_id, &e_laptop_pub].concat();
    let request_key = spec::hkdf::<44>(&[0; 32], &[&secret[..], &e_laptop_pub].concat(), b"kith-link-request-v2");
    let request_body = [spec::user_id(ALICE_USER), LAPTOP_DEVICE.to_be_bytes().to_vec(), laptop.body()].concat();
    let link_request = [request_head.clone(), spec::seal(&request_key, &request_head, &request_body)].concat();
    let response_head = [&[2u8, 0x35][..], &link_id, &e_phone_pub].concat();
    let shared = x25519(e_phone, e_laptop_pub);
    assert_eq!(shared, x25519(e_laptop, e_phone_pub));
    let response_key = spec::hkdf::<44>(&secret, &shared, b"kith-link-response-v2");
    let response_aad = [&response_head[..], &Sha256::digest(&link_request)].concat();
    let laptop_cert = spec::certificate_body(alice_seed, ALICE_USER, LAPTOP_DEVICE, &laptop);
    let response_body = [&laptop_cert[..], &alice_seed].concat();
    let link_response = [response_head, spec::seal(&response_key, &response_aad, &response_body)].concat();
    let laptop_removal = spec::removal(alice_seed, ALICE_USER, LAPTOP_DEVICE, &laptop);

    let derived = json!({
        "associated_data": hex(&ad),
        "first_session": {
            "dh1": hex(&dh1), "dh2": hex(&dh2), "dh3": hex(&dh3), "dh4": hex(&dh4),
            "x3dh_secret": hex(&sk),
            "root_key_1": hex(&rk1), "alice_chain_key_1": hex(&ck_a1),
            "message_keys_alice_1": [hex(&mk0), hex(&mk1)],
            "root_key_2": hex(&rk2), "bob_chain_key_1": hex(&ck_b1),
            "message_keys_bob_1": [hex(&mk2), hex(&mk3)],
            "root_key_3": hex(&rk3), "alice_chain_key_2": hex(&ck_a2),
            "message_keys_alice_2": [hex(&mk4), hex(&mk_1), hex(&mk_2)],
        },
        "second_session": {
            "x3dh_secret": hex(&sk2),
            "root_key_1": hex(&rk_second), "alice_chain_key_1": hex(&ck_second),
            "message_keys_alice_1": [hex(&mk5)],
        },
        "link": {
            "request_key_and_nonce": hex(&request_key),
            "shared_secret": hex(&shared),
            "response_key_and_nonce": hex(&response_key),
        },
    });
    let Value::Object(derived) = derived else { unreachable!() };
    SpecRun {
        wires: vec![m0, m1, m2, m3, m4, m5],
        derived,
        identities: [public_identity(&alice), public_identity(&bob)].concat(),
        certificates: [[&[2u8, 0x32][..], &alice_cert].concat(), [&[2u8, 0x32][..], &bob_cert].concat()].concat(),
        bundle,
        replay_record,
        link_id,
        link_request,
        link_response,
        laptop_removal,
        skipped_entries,
    }
}

fn document() -> Value {
    let library = run_library();
    let spec = run_spec();

    // The library must produce exactly what the specification says.
    for (i, (got, want)) in library.wires.iter().zip(&spec.wires).enumerate() {
        assert_eq!(hex(got), hex(want), "message {i} differs from the specification");
    }
    let lib = &library.value;
    let field = |path: &[&str]| {
        let mut v = &lib[path[0]];
        for key in &path[1..] {
            v = &v[*key];
        }
        v.as_str().unwrap_or_else(|| panic!("{path:?} is a string")).to_owned()
    };
    assert_eq!(
        field(&["alice", "public_identity"]) + &field(&["bob", "public_identity"]),
        hex(&spec.identities),
        "public identities differ from the specification"
    );
    assert_eq!(
        field(&["alice", "device_certificate"]) + &field(&["bob", "device_certificate"]),
        hex(&spec.certificates),
        "certificates differ from the specification"
    );
    assert_eq!(field(&["bundle_with_one_time_prekey"]), hex(&spec.bundle), "bundle differs from the specification");
    assert_eq!(field(&["bob", "replay_record"]), hex(&spec.replay_record), "replay record differs");
    assert_eq!(field(&["link", "link_id"]), hex(&spec.link_id), "link id differs");
    assert_eq!(hex(&library.link_request), hex(&spec.link_request), "link request differs from the specification");
    assert_eq!(hex(&library.link_response), hex(&spec.link_response), "link response differs from the specification");
    assert_eq!(field(&["link", "laptop_removal"]), hex(&spec.laptop_removal), "removal differs");
    // The serialized session ends with the skipped-key count and the entries.
    let tail = &library.skipped_layout[library.skipped_layout.len() - spec.skipped_entries.len() - 4..];
    assert_eq!(hex(tail), hex(&[&2u32.to_be_bytes()[..], &spec.skipped_entries].concat()), "skipped-key layout");
    // Eviction and expiry as the specification states them.
    let skipped = &lib["skipped_keys"];
    assert_eq!(skipped["lost_when_the_next_arrives"], 2 + WITHHELD - 1000, "1,101 skipped, 1,000 kept");
    assert_eq!(skipped["kept"], 1000);
    assert_eq!(skipped["oldest_kept_withheld_index"], WITHHELD + 1 - 1000 - 1);
    assert_eq!(skipped["lost_a_week_later"], 1000);
    assert_eq!(skipped["kept_a_week_later"], 0);

    let draws: Vec<String> = (0..20).map(|i| hex(&draw(i))).collect();
    let mut doc = Map::new();
    doc.insert(
        "description".into(),
        json!([
            "Known-answer vectors for kith-crypto, protocol version 2; see docs/crypto.md.",
            "Generated by crypto/tests/kat.rs, which also rebuilds every wire message, certificate, removal, link message and replay record from the specification with raw primitives.",
            "Randomness: draw i (32 bytes) = SHA-256(\"kith-kat-v2\" || u64_be(i)); the draws are listed under 'draws'.",
            "Draw order: 0 Alice user identity seed; 1 Bob user identity seed; 2,3 Alice device (Ed25519 seed, X25519 secret); 4,5 Bob device; 6 Bob signed prekey id 1; 7,8 Bob one-time prekeys ids 100,101; 9 Alice base key; 10 Alice ratchet key; 11 Bob ratchet key (his first encrypt); 12 Alice second ratchet key; 13,14 base and ratchet key of the second session (no one-time prekey); 15 link secret (first 16 bytes); 16,17 Alice's laptop device; 18 laptop link ephemeral key; 19 phone link ephemeral key.",
            "Devices: Alice's phone is device 1, Bob's device 2, Alice's laptop device 3. Every decryption runs at clock T0 = 1800000000000 ms unless noted.",
            "Message flow: Alice sends 0,1 (prekey messages); Bob responds with 0, decrypts 1; Bob sends 2,3; Alice decrypts 3 then 2; Alice sends 4 (a plain ratchet message); Bob decrypts it. Message 5 starts a second session without a one-time prekey. final_sessions are the serialized sessions after that flow; the replay record is Bob's after both setups.",
            "skipped_keys continues the first session: Alice sends counters 1,2,3 of her second chain ('more 0'..'more 2'), Bob decrypts counter 3: bob_first_with_two_skipped. Then Alice sends 1,099 messages Bob never gets and one he does (counter 1103): 1,101 keys skipped, the newest 1,000 of the chain kept (oldest first evicted), 101 lost; oldest_kept_withheld_index is the index among the 1,099 withheld of the oldest one still decryptable. Then Alice's next message decrypts at T0 + 7 days + 1 ms: every stored key has expired.",
            "link: Alice's phone shows 'code' (its secret is the first 16 bytes of draw 15); the laptop sends 'request', the phone answers 'response', which carries laptop_certificate and Alice's user identity; laptop_removal is the phone's signed removal of the laptop.",
            "All byte strings are lowercase hex.",
        ]),
    );
    doc.insert("draws".into(), json!(draws));
    doc.extend(library.value);
    doc.insert("derived".into(), Value::Object(spec.derived));
    Value::Object(doc)
}

#[test]
fn known_answer_vectors_match_the_file_and_the_specification() {
    let path = format!("{}/tests/data/kat.json", env!("CARGO_MANIFEST_DIR"));
    let generated = document();
    if std::env::var_os("KITH_REGENERATE_KAT").is_some() {
        let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
        return;
    }
    let text =
        std::fs::read_to_string(&path).expect("tests/data/kat.json exists (regenerate with KITH_REGENERATE_KAT=1)");
    let stored: Value = serde_json::from_str(&text).expect("valid JSON");
    for (key, value) in generated.as_object().unwrap() {
        assert_eq!(stored.get(key), Some(value), "kat.json field {key:?} differs from what the library produces");
    }
    assert_eq!(stored.as_object().unwrap().len(), generated.as_object().unwrap().len());
}

#[test]
fn stored_state_from_the_file_still_works() {
    // Sessions persisted by an earlier build keep working: decode Bob's and
    // Alice's final states and exchange one more message each way.
    let text = std::fs::read_to_string(format!("{}/tests/data/kat.json", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let stored: Value = serde_json::from_str(&text).unwrap();
    let session =
        |name: &str| Session::from_bytes(&support::unhex(stored["final_sessions"][name].as_str().unwrap())).unwrap();
    let mut alice = session("alice_first");
    let mut bob = session("bob_first");
    let mut rng = TestRng::new(b"kat-continuation");
    let wire = bob.encrypt(b"after reload", &mut rng).unwrap();
    assert_eq!(alice.decrypt(&wire, T0).unwrap().plaintext, b"after reload");
    let wire = alice.encrypt(b"and back", &mut rng).unwrap();
    assert_eq!(bob.decrypt(&wire, T0).unwrap().plaintext, b"and back");
    let identity =
        DeviceIdentity::from_bytes(&support::unhex(stored["bob"]["device_identity"].as_str().unwrap())).unwrap();
    assert_eq!(hex(&identity.public().to_bytes()), stored["bob"]["public_identity"].as_str().unwrap());
    let record = ReplayRecord::from_bytes(&support::unhex(stored["bob"]["replay_record"].as_str().unwrap())).unwrap();
    assert_eq!(record.len(), 2);
}
