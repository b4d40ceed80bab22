//! End-to-end encryption for kith (protocol version 2).
//!
//! This crate is the cryptographic core of kith's end-to-end encrypted chat:
//! pure code with no I/O, no async, no clock and no global randomness. The
//! caller passes randomness in as a [`rand_core::CryptoRng`] and the time as
//! milliseconds, and persists everything through `to_bytes`/`from_bytes`.
//!
//! It follows the shape of Signal's protocols, with one identity per account:
//!
//! - **User identity** ([`UserIdentity`]): one Ed25519 key per account, made
//!   at registration and handed to each linked device ([`link`]). It signs a
//!   [`DeviceCertificate`] for every device of the account and a
//!   [`DeviceRemoval`] when one leaves. Contacts pin its public half per user
//!   and write only to devices it certified; [`safety_number`]s cover it.
//! - **Device keys** ([`DeviceIdentity`], [`SignedPreKey`], [`OneTimePreKey`]):
//!   each device has an Ed25519 identity signing key, an X25519 identity key
//!   bound to it by signature, a signed X25519 prekey that it rotates, and
//!   batches of one-time X25519 prekeys. The public parts travel as a
//!   [`PreKeyBundle`], verified together with the device's certificate.
//! - **Session setup** ([`Session::initiate`], [`Session::respond`]): X3DH
//!   (four X25519 agreements, the fourth only with a one-time prekey, fed to
//!   HKDF-SHA256). The initiator's messages are *prekey messages* carrying its
//!   certificate until a reply arrives; both certificates are bound into every
//!   message. A [`ReplayRecord`] refuses a first message accepted before.
//! - **Messages** ([`Session::encrypt`], [`Session::decrypt`]): the Double
//!   Ratchet with ChaCha20-Poly1305, out-of-order delivery through a store of
//!   skipped keys that evicts its oldest keys ([`MAX_SKIPPED_KEYS`],
//!   [`MAX_SKIPPED_KEYS_PER_CHAIN`]) and expires them
//!   ([`SKIPPED_KEY_MAX_AGE_MS`]), and replay rejection. A failed decryption
//!   leaves the session untouched.
//!
//! The exact protocol, wire format and threat model are in `docs/crypto.md`
//! at the repository root.
//!
//! # Example
//!
//! ```
//! use kith_crypto::{
//!     DeviceIdentity, MessageInfo, OneTimePreKey, PreKeyBundle, ReplayRecord, Session, SignedPreKey,
//!     UserIdentity, inspect, safety_number,
//! };
//! use rand_core::UnwrapErr;
//!
//! // Any `rand_core` 0.10 `CryptoRng` will do; here, the operating system's.
//! let mut rng = UnwrapErr(getrandom::SysRng);
//! let now = 1_800_000_000_000; // the caller's clock, in milliseconds
//!
//! // Bob registers: a user identity, and a device certified by it.
//! let bob_user = UserIdentity::generate(&mut rng);
//! let bob = DeviceIdentity::generate(&mut rng);
//! let bob_certificate = bob_user.certify("bob@example.org", 7, bob.public())?;
//! let bob_signed_prekey = SignedPreKey::generate(1, &bob, &mut rng);
//! let bob_one_time_prekeys = OneTimePreKey::generate_batch(100, 20, &mut rng)?;
//! let bundle_bytes = PreKeyBundle::new(
//!     bob.public().clone(),
//!     bob_signed_prekey.public().clone(),
//!     Some(bob_one_time_prekeys[0].public().clone()),
//! )
//! .to_bytes();
//! let certificate_bytes = bob_certificate.to_bytes();
//!
//! // Alice fetches both through the server, checks them against the user
//! // identity she trusts for bob, and starts a session.
//! let alice_user = UserIdentity::generate(&mut rng);
//! let alice = DeviceIdentity::generate(&mut rng);
//! let alice_certificate = alice_user.certify("alice@example.org", 3, alice.public())?;
//! let certificate = kith_crypto::DeviceCertificate::from_bytes(&certificate_bytes)?;
//! let trusted = *certificate.user_key(); // trust on first use; pin it from now on
//! let bundle = PreKeyBundle::from_bytes(&bundle_bytes)?.verify(&certificate, &trusted, "bob@example.org", 7)?;
//! let mut alice_session = Session::initiate(&alice, &alice_certificate, &bundle, &mut rng)?;
//! let wire = alice_session.encrypt(b"hello Bob", &mut rng)?;
//!
//! // Bob sees a prekey message, checks who vouches for its sender, finds the
//! // one-time prekey it names, and accepts the session.
//! let MessageInfo::PreKey(setup) = inspect(&wire)? else {
//!     panic!("the first message is a prekey message");
//! };
//! setup.certificate().check(alice_user.public(), "alice@example.org", 3)?;
//! let one_time_prekey = bob_one_time_prekeys
//!     .iter()
//!     .find(|k| Some(k.id()) == setup.one_time_prekey_id());
//! let mut replays = ReplayRecord::new();
//! let (mut bob_session, first) = Session::respond(
//!     &bob, &bob_certificate, &bob_signed_prekey, one_time_prekey, &mut replays, &wire, now,
//! )?;
//! assert_eq!(first.plaintext, b"hello Bob");
//!
//! // From here on both sides ratchet.
//! let reply = bob_session.encrypt(b"hi Alice", &mut rng)?;
//! assert_eq!(alice_session.decrypt(&reply, now)?.plaintext, b"hi Alice");
//! assert!(alice_session.decrypt(&reply, now).is_err(), "a replay is rejected");
//!
//! // Sessions persist as versioned bytes.
//! let mut bob_session = Session::from_bytes(&bob_session.to_bytes())?;
//! let next = alice_session.encrypt(b"still there?", &mut rng)?;
//! assert_eq!(bob_session.decrypt(&next, now)?.plaintext, b"still there?");
//!
//! // Both users see the same safety number, whatever devices they add.
//! let ours = safety_number(alice_user.public(), "alice@example.org", bob_user.public(), "bob@example.org");
//! let theirs = safety_number(bob_user.public(), "bob@example.org", alice_user.public(), "alice@example.org");
//! assert_eq!(ours, theirs);
//! # Ok::<(), kith_crypto::CryptoError>(())
//! ```

mod bundle;
mod codec;
mod error;
mod kdf;
mod keys;
pub mod link;
mod message;
mod replay;
mod safety;
mod session;
mod skipped;
mod user;

pub use bundle::{PreKeyBundle, VerifiedPreKeyBundle};
pub use codec::{MAX_USER_ID_LEN, VERSION};
pub use error::{CryptoError, Result};
pub use keys::{DeviceIdentity, OneTimePreKey, OneTimePreKeyPublic, PublicIdentity, SignedPreKey, SignedPreKeyPublic};
pub use link::{LinkCode, LinkRequest, LinkResponse, LinkSecret, Linked, OpenedLinkRequest};
pub use message::{MIN_MESSAGE_LEN, MessageInfo, PreKeyMessageInfo, inspect, is_prekey_message};
pub use replay::{MAX_REPLAY_RECORDS, ReplayRecord};
pub use safety::{SAFETY_NUMBER_ITERATIONS, safety_number};
pub use session::{Decrypted, MAX_SKIP, Role, Session};
pub use skipped::{MAX_SKIPPED_KEYS, MAX_SKIPPED_KEYS_PER_CHAIN, SKIPPED_KEY_MAX_AGE_MS};
pub use user::{DeviceCertificate, DeviceRemoval, UserIdentity, UserIdentityPublic};
pub use zeroize::Zeroizing;
