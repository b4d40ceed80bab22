//! Untrusted bytes into every decoder, `inspect`, `Session::decrypt` on
//! both ends of an established session, and `Session::respond`.
//!
//! Checks: nothing panics; whatever decodes re-encodes to exactly the input
//! (encodings are canonical); a rejected message leaves the session's
//! serialized state unchanged.

#![no_main]

use std::sync::OnceLock;

use kith_crypto::{
    DeviceIdentity, OneTimePreKey, OneTimePreKeyPublic, PreKeyBundle, PublicIdentity, Session,
    SignedPreKey, SignedPreKeyPublic, inspect,
};
use libfuzzer_sys::fuzz_target;

// Shared with the integration tests (`super::rng` resolves to these).
#[path = "../../tests/support/rng.rs"]
#[allow(dead_code)]
mod rng;

struct Fixture {
    bob: DeviceIdentity,
    signed_prekey: SignedPreKey,
    one_time_prekey: OneTimePreKey,
    /// Serialized sessions after a few messages each way.
    alice_state: Vec<u8>,
    bob_state: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut rng = rng::TestRng::new(b"kith-fuzz-decode");
        let alice = DeviceIdentity::generate(&mut rng);
        let bob = DeviceIdentity::generate(&mut rng);
        let signed_prekey = SignedPreKey::generate(1, &bob, &mut rng);
        let one_time_prekey = OneTimePreKey::generate(100, &mut rng);
        let bundle = PreKeyBundle::new(
            bob.public().clone(),
            signed_prekey.public().clone(),
            Some(one_time_prekey.public().clone()),
        )
        .verify()
        .expect("fixture bundle verifies");
        let mut a = Session::initiate(&alice, &bundle, &mut rng).expect("initiate");
        let first = a.encrypt(b"hello", &mut rng).expect("encrypt");
        let skipped = a.encrypt(b"skipped", &mut rng).expect("encrypt");
        let (mut b, _) = Session::respond(&bob, &signed_prekey, Some(&one_time_prekey), &first)
            .expect("respond");
        let _ = skipped;
        let reply = b.encrypt(b"reply", &mut rng).expect("encrypt");
        a.decrypt(&reply).expect("decrypt");
        Fixture {
            alice_state: a.to_bytes().to_vec(),
            bob_state: b.to_bytes().to_vec(),
            bob,
            signed_prekey,
            one_time_prekey,
        }
    })
}

macro_rules! canonical {
    ($ty:ty, $data:expr) => {
        if let Ok(value) = <$ty>::from_bytes($data) {
            assert_eq!(&value.to_bytes()[..], $data, "{} re-encodes differently", stringify!($ty));
        }
    };
}

fuzz_target!(|data: &[u8]| {
    canonical!(DeviceIdentity, data);
    canonical!(PublicIdentity, data);
    canonical!(SignedPreKey, data);
    canonical!(SignedPreKeyPublic, data);
    canonical!(OneTimePreKey, data);
    canonical!(OneTimePreKeyPublic, data);
    canonical!(PreKeyBundle, data);
    canonical!(Session, data);
    if let Ok(bundle) = PreKeyBundle::from_bytes(data) {
        let _ = bundle.verify();
    }

    let _ = inspect(data);
    let f = fixture();
    for state in [&f.alice_state, &f.bob_state] {
        let mut session = Session::from_bytes(state).expect("fixture state decodes");
        if session.decrypt(data).is_err() {
            assert_eq!(&session.to_bytes()[..], &state[..], "a rejected message changed the session");
        }
    }
    let _ = Session::respond(&f.bob, &f.signed_prekey, Some(&f.one_time_prekey), data);
    let _ = Session::respond(&f.bob, &f.signed_prekey, None, data);
});
