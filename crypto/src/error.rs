//! The crate's single error type.

/// Everything that can go wrong in `kith-crypto`.
///
/// Every failing operation leaves the value it was called on exactly as it
/// was: a [`Session`](crate::Session) that rejects a message can keep being
/// used, and nothing is half-updated. Variants carry the numbers that explain
/// the failure so logs are useful, but never any secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The input ended before a complete value could be read.
    #[error("truncated {what}: needed {needed} more bytes but only {available} remain")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// How many bytes the next field needed.
        needed: usize,
        /// How many bytes were left.
        available: usize,
    },

    /// Bytes were left over after a complete value was decoded.
    #[error("{extra} trailing bytes after {what}")]
    TrailingBytes {
        /// What was being decoded.
        what: &'static str,
        /// How many bytes were left over.
        extra: usize,
    },

    /// The version byte is not one this library understands.
    #[error("unsupported {what} version {got} (this library reads version {supported})")]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// The version byte found.
        got: u8,
        /// The version this library reads and writes.
        supported: u8,
    },

    /// The kind byte (second byte of every encoding) names another type.
    #[error("expected {what} (kind {expected:#04x}) but found kind {got:#04x}")]
    WrongKind {
        /// What was being decoded.
        what: &'static str,
        /// The kind byte of `what`.
        expected: u8,
        /// The kind byte found.
        got: u8,
    },

    /// A flag byte (presence of an optional field, a role) had a value
    /// outside its defined range.
    #[error("invalid {what} byte {value}")]
    InvalidFlag {
        /// Which flag.
        what: &'static str,
        /// The value found.
        value: u8,
    },

    /// An X25519 public key was not canonically encoded (top bit set or
    /// value not below 2^255 - 19). Only canonical encodings are accepted so
    /// that every key has exactly one encoding.
    #[error("{what} is not a canonical X25519 public key")]
    NonCanonicalKey {
        /// Which key.
        what: &'static str,
    },

    /// An Ed25519 public key did not decode, was not canonically encoded, or
    /// has small order (a "weak" key that verifies forged signatures).
    #[error("{what} is not a valid Ed25519 public key")]
    InvalidSigningKey {
        /// Which key.
        what: &'static str,
    },

    /// The signature binding an X25519 identity key to an Ed25519 identity
    /// key does not verify.
    #[error("identity binding signature does not verify")]
    BadIdentityBinding,

    /// The identity's signature over a signed prekey does not verify; the
    /// bundle must not be used.
    #[error("signature on signed prekey {id} does not verify")]
    BadSignedPreKeySignature {
        /// The id of the signed prekey.
        id: u32,
    },

    /// A prekey message names a different signed prekey than the one
    /// supplied to [`Session::respond`](crate::Session::respond).
    #[error("message was made for signed prekey {in_message} but signed prekey {supplied} was supplied")]
    SignedPreKeyMismatch {
        /// The id in the message.
        in_message: u32,
        /// The id of the key supplied.
        supplied: u32,
    },

    /// A prekey message names a different one-time prekey (or none) than the
    /// one supplied to [`Session::respond`](crate::Session::respond).
    #[error("message was made with one-time prekey {in_message:?} but {supplied:?} was supplied")]
    OneTimePreKeyMismatch {
        /// The id in the message, if any.
        in_message: Option<u32>,
        /// The id of the key supplied, if any.
        supplied: Option<u32>,
    },

    /// An X25519 agreement produced the all-zero value, which happens only
    /// when the peer's public key has small order. Such a key contributes
    /// nothing secret, so it is rejected.
    #[error("key agreement with {what} produced an all-zero secret (small-order key)")]
    NonContributoryKeyAgreement {
        /// Which key agreement.
        what: &'static str,
    },

    /// A message would require deriving and storing more skipped message
    /// keys in one chain than allowed.
    #[error("skip of {got} messages exceeds max {max}")]
    SkipTooLarge {
        /// How many keys the message would skip.
        got: u64,
        /// The limit ([`MAX_SKIP`](crate::MAX_SKIP)).
        max: u32,
    },

    /// The message is behind its receiving chain and its key is not stored: a
    /// replay or duplicate delivery of a message that was decrypted before, or
    /// a message held back so long that its skipped key was evicted or expired.
    #[error(
        "message {counter} was already decrypted, or its key was evicted or expired (replay, duplicate or very late)"
    )]
    DuplicateMessage {
        /// The message counter from the header.
        counter: u32,
    },

    /// Authenticated decryption failed: the header or ciphertext was
    /// modified or truncated, or the message belongs to another session.
    #[error("message {counter} failed authentication (tampered, truncated, or not for this session)")]
    AuthenticationFailed {
        /// The message counter from the (unauthenticated) header.
        counter: u32,
    },

    /// The message cannot be decrypted by this session: a prekey message
    /// from another session setup (different sender, base key or prekeys),
    /// a prekey message sent to the initiator, or a message in a chain this
    /// session never had.
    #[error("message does not belong to this session: {reason}")]
    SessionMismatch {
        /// Why it does not belong.
        reason: &'static str,
    },

    /// [`Session::respond`](crate::Session::respond) was given a message that
    /// is not a prekey message.
    #[error("expected a prekey message but got message kind {got:#04x}")]
    NotAPreKeyMessage {
        /// The kind byte found.
        got: u8,
    },

    /// A sending chain reached the largest counter a header can carry.
    #[error("message counter exhausted after {sent} messages in one chain")]
    CounterExhausted {
        /// Messages sent in the chain.
        sent: u32,
    },

    /// A batch of one-time prekeys would run past the largest id.
    #[error("one-time prekey ids overflow: start {start} + count {count} exceeds u32")]
    PreKeyIdOverflow {
        /// The first id requested.
        start: u32,
        /// How many keys were requested.
        count: u32,
    },

    /// A serialized value lists more entries than any valid value can have.
    #[error("{what} lists {count} entries, more than max {max}")]
    TooManyEntries {
        /// What was being decoded.
        what: &'static str,
        /// The count found.
        count: u64,
        /// The limit.
        max: usize,
    },

    /// A serialized value is well-formed byte by byte but describes an
    /// impossible state (for example, entries out of order or a responder
    /// still waiting for a reply).
    #[error("inconsistent {what}: {reason}")]
    InconsistentState {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A user id is empty, longer than [`MAX_USER_ID_LEN`](crate::MAX_USER_ID_LEN)
    /// bytes, or not UTF-8.
    #[error("user id of {len} bytes is not valid (1 to 255 bytes of UTF-8)")]
    InvalidUserId {
        /// Its length in bytes.
        len: usize,
    },

    /// A device certificate's signature does not verify under the user
    /// identity key it names.
    #[error("device certificate signature does not verify")]
    BadCertificateSignature,

    /// A device removal's signature does not verify under the user identity
    /// key it names.
    #[error("device removal signature does not verify")]
    BadRemovalSignature,

    /// A certificate (or removal) is signed by a user identity other than the
    /// one trusted for that user: the device must not be written to.
    #[error("signed by user identity {got}, not by the trusted identity {trusted} of that user")]
    UntrustedUserIdentity {
        /// The signing key found (hex).
        got: String,
        /// The key that was expected (hex).
        trusted: String,
    },

    /// A certificate vouches for something other than what it accompanies: another
    /// device identity, user or device id.
    #[error("certificate does not match: {reason}")]
    CertificateMismatch {
        /// What differs.
        reason: &'static str,
    },

    /// A first message whose session setup (signed prekey and base key) was
    /// already accepted once: a replay. Refused even when the session it set up
    /// is no longer kept.
    #[error("first message of a session already set up with signed prekey {signed_prekey_id} (replay)")]
    ReplayedFirstMessage {
        /// The signed prekey the setup used.
        signed_prekey_id: u32,
    },

    /// The replay record is full; no more sessions can be accepted until the
    /// oldest signed prekey is dropped (rotate the signed prekey).
    #[error("the first-message replay record holds its maximum of {max} setups")]
    ReplayRecordFull {
        /// The limit ([`MAX_REPLAY_RECORDS`](crate::MAX_REPLAY_RECORDS)).
        max: usize,
    },

    /// A link request or response does not authenticate under the link secret
    /// (a wrong or mistyped code, or a message for another link).
    #[error("link message does not authenticate (wrong code, or not for this link)")]
    LinkAuthenticationFailed,

    /// A link response authenticates but does not describe the device that
    /// asked to be linked.
    #[error("link response does not fit the request: {reason}")]
    LinkMismatch {
        /// What differs.
        reason: &'static str,
    },

    /// A link code is not of the documented form.
    #[error("not a link code: {reason}")]
    InvalidLinkCode {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A primitive reported an error that its inputs rule out. This is a bug
    /// in this crate; nothing was changed.
    #[error("internal error in {0}")]
    Internal(&'static str),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = CryptoError> = core::result::Result<T, E>;
