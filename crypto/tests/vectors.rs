//! Published test vectors, run through the exact primitives kith-crypto uses
//! (x25519-dalek, ed25519-dalek's strict verification, chacha20poly1305):
//! Wycheproof for X25519, Ed25519 and ChaCha20-Poly1305 (files under
//! `tests/data/wycheproof/`, see the README there), RFC 7748 and RFC 8439.

// Helpers outside #[test] functions: a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::Value;
use support::{unhex, unhex_array};
use x25519_dalek::{PublicKey, StaticSecret, x25519};

fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/wycheproof/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("valid JSON")
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("missing string field {key}"))
}

/// Yields (group, test) pairs and checks the declared test count.
fn tests(file: &Value) -> Vec<(&Value, &Value)> {
    let all: Vec<_> = file["testGroups"]
        .as_array()
        .expect("testGroups")
        .iter()
        .flat_map(|g| g["tests"].as_array().expect("tests").iter().map(move |t| (g, t)))
        .collect();
    assert_eq!(all.len() as u64, file["numberOfTests"].as_u64().expect("numberOfTests"));
    all
}

#[test]
fn wycheproof_x25519() {
    let file = load("x25519_test.json");
    let (mut valid, mut acceptable, mut zero) = (0, 0, 0);
    for (group, t) in tests(&file) {
        assert_eq!(group["curve"], "curve25519");
        let id = &t["tcId"];
        let private: [u8; 32] = unhex_array(str_field(t, "private"));
        let public: [u8; 32] = unhex_array(str_field(t, "public"));
        let shared: [u8; 32] = unhex_array(str_field(t, "shared"));
        // Every vector in this file is valid or acceptable: X25519 is total,
        // and an implementation that computes must get the right answer.
        let result = str_field(t, "result");
        assert!(matches!(result, "valid" | "acceptable"), "tcId {id}: {result}");
        assert_eq!(x25519(private, public), shared, "tcId {id}: raw function");
        let agreed = StaticSecret::from(private).diffie_hellman(&PublicKey::from(public));
        assert_eq!(agreed.to_bytes(), shared, "tcId {id}: StaticSecret");
        // kith-crypto refuses non-contributory agreements; that check must
        // flag exactly the all-zero outputs.
        assert_eq!(agreed.was_contributory(), shared != [0u8; 32], "tcId {id}");
        if shared == [0u8; 32] {
            zero += 1;
        }
        match result {
            "valid" => valid += 1,
            _ => acceptable += 1,
        }
    }
    assert_eq!((valid, acceptable), (264, 254));
    assert!(zero > 0, "the file covers low-order points");
}

#[test]
fn wycheproof_chacha20_poly1305() {
    let file = load("chacha20_poly1305_test.json");
    let (mut valid, mut invalid) = (0, 0);
    for (group, t) in tests(&file) {
        assert_eq!(group["keySize"], 256);
        assert_eq!(group["tagSize"], 128);
        let id = &t["tcId"];
        let key = Key::from(unhex_array::<32>(str_field(t, "key")));
        let iv = unhex(str_field(t, "iv"));
        let aad = unhex(str_field(t, "aad"));
        let msg = unhex(str_field(t, "msg"));
        let mut sealed = unhex(str_field(t, "ct"));
        sealed.extend_from_slice(&unhex(str_field(t, "tag")));
        let result = str_field(t, "result");
        let cipher = ChaCha20Poly1305::new(&key);

        // The AEAD takes only 96-bit nonces; others cannot even be expressed.
        let Ok(nonce) = Nonce::try_from(iv.as_slice()) else {
            assert_eq!(result, "invalid", "tcId {id}: nonce of {} bytes", iv.len());
            invalid += 1;
            continue;
        };
        let opened = cipher.decrypt(&nonce, Payload { msg: &sealed, aad: &aad });
        match result {
            "valid" => {
                assert_eq!(opened.as_deref(), Ok(msg.as_slice()), "tcId {id}: decrypt");
                let produced = cipher.encrypt(&nonce, Payload { msg: &msg, aad: &aad });
                assert_eq!(produced.as_deref(), Ok(sealed.as_slice()), "tcId {id}: encrypt");
                valid += 1;
            }
            "invalid" => {
                assert!(opened.is_err(), "tcId {id}: accepted an invalid ciphertext");
                invalid += 1;
            }
            other => panic!("tcId {id}: unexpected result {other}"),
        }
    }
    assert_eq!((valid, invalid), (256, 69));
}

#[test]
fn wycheproof_ed25519_strict_verification() {
    let file = load("ed25519_test.json");
    let (mut valid, mut invalid) = (0, 0);
    for (group, t) in tests(&file) {
        let id = &t["tcId"];
        let pk: [u8; 32] = unhex_array(str_field(&group["publicKey"], "pk"));
        let key = VerifyingKey::from_bytes(&pk).expect("group keys are valid points");
        let msg = unhex(str_field(t, "msg"));
        let sig = unhex(str_field(t, "sig"));
        // Wrong-length signatures are rejected before verification, as our
        // fixed 64-byte fields do.
        let verified = <[u8; 64]>::try_from(sig.as_slice())
            .ok()
            .is_some_and(|s| key.verify_strict(&msg, &Signature::from_bytes(&s)).is_ok());
        match str_field(t, "result") {
            "valid" => {
                assert!(verified, "tcId {id}: rejected a valid signature");
                valid += 1;
            }
            "invalid" => {
                assert!(!verified, "tcId {id}: accepted an invalid signature");
                invalid += 1;
            }
            other => panic!("tcId {id}: unexpected result {other}"),
        }
    }
    assert_eq!((valid, invalid), (88, 63));
}

// RFC 7748, section 5.2: scalar multiplication vectors.
#[test]
fn rfc7748_scalar_multiplication() {
    let cases = [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ];
    for (scalar, u, out) in cases {
        assert_eq!(x25519(unhex_array(scalar), unhex_array(u)), unhex_array::<32>(out));
    }
}

/// RFC 7748, section 5.2: `k = u = 9`, then repeatedly `k, u = X25519(k, u), k`.
fn iterate(n: u32) -> [u8; 32] {
    let mut k = x25519_dalek::X25519_BASEPOINT_BYTES;
    let mut u = k;
    for _ in 0..n {
        let next = x25519(k, u);
        u = k;
        k = next;
    }
    k
}

#[test]
fn rfc7748_iterated_once_and_a_thousand_times() {
    assert_eq!(iterate(1), unhex_array::<32>("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"));
    assert_eq!(iterate(1000), unhex_array::<32>("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"));
}

/// The million-iteration case takes about 90 seconds; run with `--ignored`.
#[test]
#[ignore = "slow: about 90 seconds"]
fn rfc7748_iterated_a_million_times() {
    assert_eq!(
        iterate(1_000_000),
        unhex_array::<32>("7c3911e0ab2586fd864497297e575e6f3bc601c0883c30df5f4dd2d24f665424")
    );
}

// RFC 7748, section 6.1: Diffie-Hellman between Alice and Bob.
#[test]
fn rfc7748_diffie_hellman() {
    let alice =
        StaticSecret::from(unhex_array::<32>("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"));
    let bob = StaticSecret::from(unhex_array::<32>("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"));
    let alice_public = PublicKey::from(&alice);
    let bob_public = PublicKey::from(&bob);
    assert_eq!(
        alice_public.to_bytes(),
        unhex_array::<32>("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    );
    assert_eq!(
        bob_public.to_bytes(),
        unhex_array::<32>("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    );
    let shared = unhex_array::<32>("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(alice.diffie_hellman(&bob_public).to_bytes(), shared);
    assert_eq!(bob.diffie_hellman(&alice_public).to_bytes(), shared);
}

// RFC 8439, section 2.8.2: AEAD_CHACHA20_POLY1305 test vector.
#[test]
fn rfc8439_aead_chacha20_poly1305() {
    let key = Key::from(unhex_array::<32>("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"));
    let nonce = Nonce::from(unhex_array::<12>("070000004041424344454647"));
    let aad = unhex("50515253c0c1c2c3c4c5c6c7");
    let plaintext: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let ciphertext = unhex(concat!(
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6",
        "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36",
        "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc",
        "3ff4def08e4b7a9de576d26586cec64b6116",
    ));
    let tag = unhex("1ae10b594f09e26a7e902ecbd0600691");
    let cipher = ChaCha20Poly1305::new(&key);
    let sealed = cipher.encrypt(&nonce, Payload { msg: plaintext, aad: &aad }).expect("encrypts");
    assert_eq!(&sealed[..plaintext.len()], ciphertext.as_slice());
    assert_eq!(&sealed[plaintext.len()..], tag.as_slice());
    let opened = cipher.decrypt(&nonce, Payload { msg: &sealed, aad: &aad }).expect("decrypts");
    assert_eq!(opened, plaintext);
    let mut forged = sealed.clone();
    forged[0] ^= 1;
    assert!(cipher.decrypt(&nonce, Payload { msg: &forged, aad: &aad }).is_err());
}
