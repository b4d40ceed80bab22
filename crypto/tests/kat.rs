//! Known-answer vectors for session setup and the first ratchet messages.
//!
//! `tests/data/kat.json` records, for fixed randomness, every key, bundle,
//! wire message, final session state and safety number the library
//! produces, plus the intermediate values of the key schedule. The test
//!
//! 1. re-runs the library with the same deterministic RNG,
//! 2. independently rebuilds every expected byte from `docs/crypto.md` with
//!    nothing but the primitives (X25519, Ed25519, HKDF/HMAC-SHA256,
//!    ChaCha20-Poly1305) — a second implementation of the protocol that the
//!    library's output must match byte for byte,
//! 3. compares both with the file.
//!
//! Regenerate the file after a deliberate format change with
//! `KITH_REGENERATE_KAT=1 cargo test -p kith-crypto --test kat`.
//!
//! # Randomness
//!
//! Block `i` of the stream is `SHA-256("kith-kat-v1" || u64_be(i))`; every
//! draw the library makes is 32 bytes, so draw `i` is block `i`. The draws,
//! in order: 0 Alice's Ed25519 seed, 1 Alice's X25519 identity secret, 2 and
//! 3 the same for Bob, 4 Bob's signed prekey (id 1), 5 and 6 Bob's one-time
//! prekeys (ids 100, 101), 7 Alice's base key, 8 Alice's first ratchet key,
//! 9 Bob's first ratchet key (drawn by his first encrypt), 10 Alice's second
//! ratchet key (her first encrypt after his reply), 11 and 12 the base and
//! ratchet keys of a second session set up without a one-time prekey.

// Helpers outside #[test] functions: a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signer, SigningKey};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use kith_crypto::{DeviceIdentity, OneTimePreKey, PreKeyBundle, Session, SignedPreKey, safety_number};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use support::hex;
use support::rng::TestRng;
use x25519_dalek::{X25519_BASEPOINT_BYTES, x25519};

const LABEL: &[u8] = b"kith-kat-v1";
const ALICE_USER: &str = "@alice:example.org";
const BOB_USER: &str = "@bob:example.org";

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
}

fn run_library() -> LibraryRun {
    let mut rng = TestRng::new(LABEL);
    let alice = DeviceIdentity::generate(&mut rng);
    let bob = DeviceIdentity::generate(&mut rng);
    let spk = SignedPreKey::generate(1, &bob, &mut rng);
    let otpks = OneTimePreKey::generate_batch(100, 2, &mut rng).expect("ids fit");
    let bundle = PreKeyBundle::new(bob.public().clone(), spk.public().clone(), Some(otpks[0].public().clone()));
    let mut a = Session::initiate(&alice, &bundle.verify().expect("verifies"), &mut rng).expect("initiate");
    let m0 = a.encrypt(PLAINTEXTS[0].as_bytes(), &mut rng).expect("encrypt");
    let m1 = a.encrypt(PLAINTEXTS[1].as_bytes(), &mut rng).expect("encrypt");
    let (mut b, p0) = Session::respond(&bob, &spk, Some(&otpks[0]), &m0).expect("respond");
    assert_eq!(p0, PLAINTEXTS[0].as_bytes());
    assert_eq!(b.decrypt(&m1).expect("decrypt"), PLAINTEXTS[1].as_bytes());
    let m2 = b.encrypt(PLAINTEXTS[2].as_bytes(), &mut rng).expect("encrypt");
    let m3 = b.encrypt(PLAINTEXTS[3].as_bytes(), &mut rng).expect("encrypt");
    assert_eq!(a.decrypt(&m3).expect("decrypt"), PLAINTEXTS[3].as_bytes());
    assert_eq!(a.decrypt(&m2).expect("decrypt"), PLAINTEXTS[2].as_bytes());
    let m4 = a.encrypt(PLAINTEXTS[4].as_bytes(), &mut rng).expect("encrypt");
    assert_eq!(b.decrypt(&m4).expect("decrypt"), PLAINTEXTS[4].as_bytes());

    let bundle2 = PreKeyBundle::new(bob.public().clone(), spk.public().clone(), None);
    let mut a2 = Session::initiate(&alice, &bundle2.verify().expect("verifies"), &mut rng).expect("initiate");
    let m5 = a2.encrypt(PLAINTEXTS[5].as_bytes(), &mut rng).expect("encrypt");
    let (b2, p5) = Session::respond(&bob, &spk, None, &m5).expect("respond");
    assert_eq!(p5, PLAINTEXTS[5].as_bytes());

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

    let value = json!({
        "alice": {
            "user_id": ALICE_USER,
            "device_identity": hex(&alice.to_bytes()),
            "public_identity": hex(&alice.public().to_bytes()),
        },
        "bob": {
            "user_id": BOB_USER,
            "device_identity": hex(&bob.to_bytes()),
            "public_identity": hex(&bob.public().to_bytes()),
            "signed_prekey": hex(&spk.to_bytes()),
            "signed_prekey_public": hex(&spk.public().to_bytes()),
            "one_time_prekeys": otpks.iter().map(|k| hex(&k.to_bytes())).collect::<Vec<_>>(),
            "one_time_prekeys_public": otpks.iter().map(|k| hex(&k.public().to_bytes())).collect::<Vec<_>>(),
        },
        "bundle_with_one_time_prekey": hex(&bundle.to_bytes()),
        "bundle_without_one_time_prekey": hex(&bundle2.to_bytes()),
        "messages": messages,
        "final_sessions": {
            "alice_first": hex(&a.to_bytes()),
            "bob_first": hex(&b.to_bytes()),
            "alice_second": hex(&a2.to_bytes()),
            "bob_second": hex(&b2.to_bytes()),
        },
        "safety_number": safety_number(alice.public(), ALICE_USER, bob.public(), BOB_USER),
    });
    let Value::Object(value) = value else { unreachable!() };
    LibraryRun { value, wires }
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
        let mut h = vec![1, 0x01];
        h.extend_from_slice(ratchet_pub);
        h.extend_from_slice(&pn.to_be_bytes());
        h.extend_from_slice(&n.to_be_bytes());
        h
    }

    /// A complete ratchet message: header, then ChaCha20-Poly1305 of the
    /// plaintext under the message key, authenticating `AD || header`.
    pub fn ratchet_message(mk: &[u8; 32], ad: &[u8], header: Vec<u8>, plaintext: &str) -> Vec<u8> {
        let okm = hkdf::<44>(&[0; 32], mk, b"kith-message-keys-v1");
        let key = Key::from(<[u8; 32]>::try_from(&okm[..32]).expect("32"));
        let nonce = Nonce::from(<[u8; 12]>::try_from(&okm[32..]).expect("12"));
        let mut aad = ad.to_vec();
        aad.extend_from_slice(&header);
        let ct = ChaCha20Poly1305::new(&key)
            .encrypt(&nonce, Payload { msg: plaintext.as_bytes(), aad: &aad })
            .expect("encrypts");
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
    bundle: Vec<u8>,
}

/// Rebuilds everything from the specification.
fn run_spec() -> SpecRun {
    let alice = spec::identity(draw(0), draw(1));
    let bob = spec::identity(draw(2), draw(3));
    let (spk, spk_pub) = (draw(4), spec::x_pub(draw(4)));
    let spk_sig = spec::signed_prekey_signature(&bob, 1, &spk_pub);
    let (otpk, otpk_pub) = (draw(5), spec::x_pub(draw(5)));
    let (base, base_pub) = (draw(7), spec::x_pub(draw(7)));
    let (a1, a1_pub) = (draw(8), spec::x_pub(draw(8)));
    let (b1, b1_pub) = (draw(9), spec::x_pub(draw(9)));
    let (a2, a2_pub) = (draw(10), spec::x_pub(draw(10)));

    let public_identity = |id: &spec::Identity| [&[1u8, 0x10][..], &id.body()].concat();
    let bundle = [
        &[1u8, 0x16][..],
        &bob.body(),
        &1u32.to_be_bytes(),
        &spk_pub,
        &spk_sig,
        &[1],
        &100u32.to_be_bytes(),
        &otpk_pub,
    ]
    .concat();

    // Associated data: initiator's keys, then responder's.
    let ad = [&alice.ed_pub[..], &alice.x_pub, &bob.ed_pub, &bob.x_pub].concat();

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

    // Alice's first sending chain.
    let (rk1, ck_a1) = spec::kdf_rk(&sk, &x25519(a1, spk_pub));
    let (mk0, ck) = spec::kdf_ck(&ck_a1);
    let (mk1, _) = spec::kdf_ck(&ck);
    let prefix =
        [&[1u8, 0x02][..], &alice.body(), &base_pub, &1u32.to_be_bytes(), &[1], &100u32.to_be_bytes()].concat();
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
    let (mk4, _) = spec::kdf_ck(&ck_a2);
    let m4 = spec::ratchet_message(&mk4, &ad, spec::header(&a2_pub, 2, 0), PLAINTEXTS[4]);

    // Second session, no one-time prekey: no DH4, flag byte 0.
    let (base2, base2_pub) = (draw(11), spec::x_pub(draw(11)));
    let (a3, a3_pub) = (draw(12), spec::x_pub(draw(12)));
    let sk2 = spec::x3dh(&[dh1, x25519(base2, bob.x_pub), x25519(base2, spk_pub)]);
    let (rk_second, ck_second) = spec::kdf_rk(&sk2, &x25519(a3, spk_pub));
    let (mk5, _) = spec::kdf_ck(&ck_second);
    let prefix2 = [&[1u8, 0x02][..], &alice.body(), &base2_pub, &1u32.to_be_bytes(), &[0]].concat();
    let m5 = [prefix2, spec::ratchet_message(&mk5, &ad, spec::header(&a3_pub, 0, 0), PLAINTEXTS[5])].concat();

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
            "message_keys_alice_2": [hex(&mk4)],
        },
        "second_session": {
            "x3dh_secret": hex(&sk2),
            "root_key_1": hex(&rk_second), "alice_chain_key_1": hex(&ck_second),
            "message_keys_alice_1": [hex(&mk5)],
        },
    });
    let Value::Object(derived) = derived else { unreachable!() };
    SpecRun {
        wires: vec![m0, m1, m2, m3, m4, m5],
        derived,
        identities: [public_identity(&alice), public_identity(&bob)].concat(),
        bundle,
    }
}

fn document() -> Value {
    let library = run_library();
    let SpecRun { wires: expected_wires, derived, identities, bundle } = run_spec();

    // The library must produce exactly what the specification says.
    for (i, (got, want)) in library.wires.iter().zip(&expected_wires).enumerate() {
        assert_eq!(hex(got), hex(want), "message {i} differs from the specification");
    }
    let lib = &library.value;
    assert_eq!(
        format!(
            "{}{}",
            lib["alice"]["public_identity"].as_str().unwrap(),
            lib["bob"]["public_identity"].as_str().unwrap()
        ),
        hex(&identities),
        "public identities differ from the specification"
    );
    assert_eq!(lib["bundle_with_one_time_prekey"], hex(&bundle), "bundle differs from the specification");

    let draws: Vec<String> = (0..13).map(|i| hex(&draw(i))).collect();
    let mut doc = Map::new();
    doc.insert(
        "description".into(),
        json!([
            "Known-answer vectors for kith-crypto (protocol version 1); see docs/crypto.md.",
            "Generated by crypto/tests/kat.rs, which also rebuilds every wire message from the specification with raw primitives.",
            "Randomness: draw i (32 bytes) = SHA-256(\"kith-kat-v1\" || u64_be(i)); the draws are listed under 'draws'.",
            "Draw order: 0,1 Alice identity (Ed25519 seed, X25519 secret); 2,3 Bob identity; 4 Bob signed prekey id 1; 5,6 Bob one-time prekeys ids 100,101; 7 Alice base key; 8 Alice ratchet key; 9 Bob ratchet key (his first encrypt); 10 Alice second ratchet key; 11,12 base and ratchet key of the second session (no one-time prekey).",
            "Message flow: Alice sends 0,1 (prekey messages); Bob responds with 0, decrypts 1; Bob sends 2,3; Alice decrypts 3 then 2; Alice sends 4 (a plain ratchet message); Bob decrypts it. Message 5 starts a second session without a one-time prekey.",
            "All byte strings are lowercase hex. final_sessions are the serialized sessions after the flow.",
        ]),
    );
    doc.insert("draws".into(), json!(draws));
    doc.extend(library.value);
    doc.insert("derived".into(), Value::Object(derived));
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
    assert_eq!(alice.decrypt(&wire).unwrap(), b"after reload");
    let wire = alice.encrypt(b"and back", &mut rng).unwrap();
    assert_eq!(bob.decrypt(&wire).unwrap(), b"and back");
    let identity =
        DeviceIdentity::from_bytes(&support::unhex(stored["bob"]["device_identity"].as_str().unwrap())).unwrap();
    assert_eq!(hex(&identity.public().to_bytes()), stored["bob"]["public_identity"].as_str().unwrap());
}
