//! End-to-end encryption for kith.
//!
//! This crate is the cryptographic core of kith's end-to-end encrypted chat:
//! pure code with no I/O, no async, no clock and no global randomness. The
//! caller passes randomness in as a [`rand_core::CryptoRng`] and persists
//! everything through `to_bytes`/`from_bytes`.
//!
//! It follows the shape of Signal's protocols:
//!
//! - **Keys** ([`DeviceIdentity`], [`SignedPreKey`], [`OneTimePreKey`]): each
//!   device has an Ed25519 identity signing key, an X25519 identity key
//!   bound to it by signature, a signed X25519 prekey that it rotates, and
//!   batches of one-time X25519 prekeys. The public parts travel as a
//!   [`PreKeyBundle`].
//! - **Session setup** ([`Session::initiate`], [`Session::respond`]): X3DH
//!   (four X25519 agreements, the fourth only with a one-time prekey, fed to
//!   HKDF-SHA256). The initiator's messages are *prekey messages* carrying
//!   what the responder needs until a reply arrives.
//! - **Messages** ([`Session::encrypt`], [`Session::decrypt`]): the Double
//!   Ratchet with ChaCha20-Poly1305, out-of-order delivery through a bounded
//!   store of skipped keys ([`MAX_SKIP`], [`MAX_SKIPPED_KEYS`]), and replay
//!   rejection. A failed decryption leaves the session untouched.
//! - **Safety numbers** ([`safety_number`]): 60 digits both users can compare
//!   to detect a server that substituted an identity.
//!
//! The exact protocol, wire format and threat model are in `docs/crypto.md`
//! at the repository root.
//!
//! # Example
//!
//! ```
//! use kith_crypto::{
//!     DeviceIdentity, MessageInfo, OneTimePreKey, PreKeyBundle, Session, SignedPreKey, inspect,
//!     safety_number,
//! };
//! use rand_core::UnwrapErr;
//!
//! // Any `rand_core` 0.10 `CryptoRng` will do; here, the operating system's.
//! let mut rng = UnwrapErr(getrandom::SysRng);
//!
//! // Bob's device creates its keys and publishes a bundle through the server.
//! let bob = DeviceIdentity::generate(&mut rng);
//! let bob_signed_prekey = SignedPreKey::generate(1, &bob, &mut rng);
//! let bob_one_time_prekeys = OneTimePreKey::generate_batch(100, 20, &mut rng)?;
//! let bundle_bytes = PreKeyBundle::new(
//!     bob.public().clone(),
//!     bob_signed_prekey.public().clone(),
//!     Some(bob_one_time_prekeys[0].public().clone()),
//! )
//! .to_bytes();
//!
//! // Alice fetches the bundle, verifies it and starts a session.
//! let alice = DeviceIdentity::generate(&mut rng);
//! let bundle = PreKeyBundle::from_bytes(&bundle_bytes)?.verify()?;
//! let mut alice_session = Session::initiate(&alice, &bundle, &mut rng)?;
//! let wire = alice_session.encrypt(b"hello Bob", &mut rng)?;
//!
//! // Bob sees a prekey message, finds the one-time prekey it names, and
//! // accepts the session (then deletes that one-time prekey).
//! let MessageInfo::PreKey(setup) = inspect(&wire)? else {
//!     panic!("the first message is a prekey message");
//! };
//! assert_eq!(setup.sender(), alice.public());
//! let one_time_prekey = bob_one_time_prekeys
//!     .iter()
//!     .find(|k| Some(k.id()) == setup.one_time_prekey_id());
//! let (mut bob_session, plaintext) =
//!     Session::respond(&bob, &bob_signed_prekey, one_time_prekey, &wire)?;
//! assert_eq!(plaintext, b"hello Bob");
//!
//! // From here on both sides ratchet.
//! let reply = bob_session.encrypt(b"hi Alice", &mut rng)?;
//! assert_eq!(alice_session.decrypt(&reply)?, b"hi Alice");
//! assert!(alice_session.decrypt(&reply).is_err(), "a replay is rejected");
//!
//! // Sessions persist as versioned bytes.
//! let mut bob_session = Session::from_bytes(&bob_session.to_bytes())?;
//! let next = alice_session.encrypt(b"still there?", &mut rng)?;
//! assert_eq!(bob_session.decrypt(&next)?, b"still there?");
//!
//! // Both users see the same safety number.
//! let ours = safety_number(alice.public(), "@alice:example.org", bob.public(), "@bob:example.org");
//! let theirs = safety_number(bob.public(), "@bob:example.org", alice.public(), "@alice:example.org");
//! assert_eq!(ours, theirs);
//! # Ok::<(), kith_crypto::CryptoError>(())
//! ```

mod bundle;
mod codec;
mod error;
mod kdf;
mod keys;
mod message;
mod safety;
mod session;

pub use bundle::{PreKeyBundle, VerifiedPreKeyBundle};
pub use codec::VERSION;
pub use error::{CryptoError, Result};
pub use keys::{DeviceIdentity, OneTimePreKey, OneTimePreKeyPublic, PublicIdentity, SignedPreKey, SignedPreKeyPublic};
pub use message::{MIN_MESSAGE_LEN, MessageInfo, PreKeyMessageInfo, inspect, is_prekey_message};
pub use safety::{SAFETY_NUMBER_ITERATIONS, safety_number};
pub use session::{MAX_SKIP, MAX_SKIPPED_KEYS, Role, Session};
pub use zeroize::Zeroizing;
