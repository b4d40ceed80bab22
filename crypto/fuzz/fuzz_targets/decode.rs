//! Untrusted bytes into every decoder, `inspect`, `Session::decrypt` on
//! both ends of an established session, and `Session::respond`.
//!
//! Checks: nothing panics; whatever decodes re-encodes to exactly the input
//! (encodings are canonical); a rejected message leaves the session's
//! serialized state unchanged.

#![no_main]

use std::sync::OnceLock;

use kith_crypto::{
    DeviceCertificate, DeviceIdentity, DeviceRemoval, LinkRequest, LinkSecret, OneTimePreKey, OneTimePreKeyPublic,
    PreKeyBundle, PublicIdentity, ReplayRecord, Session, SignedPreKey, SignedPreKeyPublic, UserIdentity,
    UserIdentityPublic, inspect,
};
use libfuzzer_sys::fuzz_target;

// Shared with the integration tests (`super::rng` resolves to these).
#[path = "../../tests/support/rng.rs"]
#[allow(dead_code)]
mod rng;

const NOW: u64 = 1_800_000_000_000;

struct Fixture {
    bob: DeviceIdentity,
    bob_user: UserIdentityPublic,
    bob_certificate: DeviceCertificate,
    link_secret: LinkSecret,
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
        let alice_user = UserIdentity::generate(&mut rng);
        let bob_user = UserIdentity::generate(&mut rng);
        let alice = DeviceIdentity::generate(&mut rng);
        let bob = DeviceIdentity::generate(&mut rng);
        let alice_certificate = alice_user.certify("alice@a", 1, alice.public()).expect("certify");
        let bob_certificate = bob_user.certify("bob@b", 2, bob.public()).expect("certify");
        let signed_prekey = SignedPreKey::generate(1, &bob, &mut rng);
        let one_time_prekey = OneTimePreKey::generate(100, &mut rng);
        let bundle = PreKeyBundle::new(
            bob.public().clone(),
            signed_prekey.public().clone(),
            Some(one_time_prekey.public().clone()),
        )
        .verify(&bob_certificate, bob_user.public(), "bob@b", 2)
        .expect("fixture bundle verifies");
        let mut a = Session::initiate(&alice, &alice_certificate, &bundle, &mut rng).expect("initiate");
        let first = a.encrypt(b"hello", &mut rng).expect("encrypt");
        let skipped = a.encrypt(b"skipped", &mut rng).expect("encrypt");
        let (mut b, _) = Session::respond(
            &bob,
            &bob_certificate,
            &signed_prekey,
            Some(&one_time_prekey),
            &mut ReplayRecord::new(),
            &first,
            NOW,
        )
        .expect("respond");
        let _ = skipped;
        let reply = b.encrypt(b"reply", &mut rng).expect("encrypt");
        a.decrypt(&reply, NOW).expect("decrypt");
        Fixture {
            alice_state: a.to_bytes().to_vec(),
            bob_state: b.to_bytes().to_vec(),
            bob,
            bob_user: *bob_user.public(),
            bob_certificate,
            link_secret: LinkSecret::generate(&mut rng),
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
    canonical!(ReplayRecord, data);
    canonical!(UserIdentity, data);
    canonical!(UserIdentityPublic, data);
    canonical!(DeviceCertificate, data);
    canonical!(DeviceRemoval, data);
    let f = fixture();
    if let Ok(bundle) = PreKeyBundle::from_bytes(data) {
        let _ = bundle.verify(&f.bob_certificate, &f.bob_user, "bob@b", 2);
    }
    let _ = LinkRequest::open(&f.link_secret, data);

    let _ = inspect(data);
    for state in [&f.alice_state, &f.bob_state] {
        let mut session = Session::from_bytes(state).expect("fixture state decodes");
        if session.decrypt(data, NOW).is_err() {
            assert_eq!(&session.to_bytes()[..], &state[..], "a rejected message changed the session");
        }
    }
    for one_time in [Some(&f.one_time_prekey), None] {
        let mut replays = ReplayRecord::new();
        if Session::respond(&f.bob, &f.bob_certificate, &f.signed_prekey, one_time, &mut replays, data, NOW).is_err() {
            assert!(replays.is_empty(), "a rejected first message was recorded");
        }
    }
});
