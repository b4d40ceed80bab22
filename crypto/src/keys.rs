//! Long-term and medium-term device keys: the identity, signed prekeys and
//! one-time prekeys.

use core::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRng;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::codec::{self, Hex, Reader, kind};
use crate::error::{CryptoError, Result};

/// Domain-separation label of the signature binding an identity's X25519
/// key to its Ed25519 key.
pub(crate) const IDENTITY_BINDING_LABEL: &[u8] = b"kith-identity-binding-v1";
/// Domain-separation label of the signature over a signed prekey.
pub(crate) const SIGNED_PREKEY_LABEL: &[u8] = b"kith-signed-prekey-v1";

/// A canonically encoded X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct DhPublic([u8; 32]);

impl DhPublic {
    /// Accepts only the canonical encoding (little-endian `u < 2^255 - 19`),
    /// so that each key has one encoding and no header bit is ignored.
    pub(crate) fn from_bytes(bytes: [u8; 32], what: &'static str) -> Result<Self> {
        let top_bit_set = bytes[31] & 0x80 != 0;
        // Values in [2^255 - 19, 2^255): 0x7f, then 30 bytes of 0xff, then a
        // lowest byte of at least 0xed.
        let at_least_p = bytes[31] == 0x7f && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[0] >= 0xed;
        if top_bit_set || at_least_p {
            return Err(CryptoError::NonCanonicalKey { what });
        }
        Ok(Self(bytes))
    }

    pub(crate) fn from_secret(secret: &StaticSecret) -> Self {
        Self(x25519_dalek::PublicKey::from(secret).to_bytes())
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub(crate) fn read(r: &mut Reader<'_>, what: &'static str) -> Result<Self> {
        Self::from_bytes(r.array()?, what)
    }
}

impl fmt::Debug for DhPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Hex(&self.0))
    }
}

/// X25519 agreement that refuses small-order public keys.
pub(crate) fn dh(secret: &StaticSecret, public: &DhPublic, what: &'static str) -> Result<Zeroizing<[u8; 32]>> {
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(public.0));
    if !shared.was_contributory() {
        return Err(CryptoError::NonContributoryKeyAgreement { what });
    }
    Ok(Zeroizing::new(*shared.as_bytes()))
}

/// Draws a fresh X25519 secret: 32 bytes from `rng`.
pub(crate) fn random_dh_secret<R: CryptoRng + ?Sized>(rng: &mut R) -> StaticSecret {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(bytes.as_mut());
    StaticSecret::from(*bytes)
}

/// Decodes an Ed25519 public key, accepting only canonical encodings of
/// points that are not of small order.
pub(crate) fn signing_key_from_bytes(bytes: &[u8; 32], what: &'static str) -> Result<VerifyingKey> {
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| CryptoError::InvalidSigningKey { what })?;
    if key.is_weak() || key.to_edwards().compress().to_bytes() != *bytes {
        return Err(CryptoError::InvalidSigningKey { what });
    }
    Ok(key)
}

fn binding_message(signing_key: &[u8; 32], dh_key: &[u8; 32]) -> [u8; 89] {
    let mut msg = [0u8; 89];
    let (label, rest) = msg.split_at_mut(IDENTITY_BINDING_LABEL.len());
    label.copy_from_slice(IDENTITY_BINDING_LABEL);
    // rest[0] stays 0: the label terminator.
    rest[1..33].copy_from_slice(signing_key);
    rest[33..65].copy_from_slice(dh_key);
    msg
}

fn signed_prekey_message(id: u32, key: &[u8; 32]) -> [u8; 58] {
    let mut msg = [0u8; 58];
    let (label, rest) = msg.split_at_mut(SIGNED_PREKEY_LABEL.len());
    label.copy_from_slice(SIGNED_PREKEY_LABEL);
    rest[1..5].copy_from_slice(&id.to_be_bytes());
    rest[5..37].copy_from_slice(key);
    msg
}

// ---------------------------------------------------------------------------
// Identity

/// The public half of a device's identity: an Ed25519 signing key, an X25519
/// key used in session setup, and the Ed25519 signature binding the two.
///
/// A value of this type always has a valid binding signature: every way of
/// building one checks it. Safety numbers are computed from the Ed25519 key,
/// which the binding makes stand for the X25519 key too.
///
/// `Debug` prints both keys as lowercase hex.
///
/// Two identities are equal when their keys are equal (any valid binding
/// signature over the same keys is equivalent).
#[derive(Clone)]
pub struct PublicIdentity {
    /// Canonical encoding of a valid, not small-order Ed25519 point.
    signing: [u8; 32],
    dh: DhPublic,
    binding: [u8; 64],
}

impl PublicIdentity {
    /// Length of [`PublicIdentity::to_bytes`].
    pub const ENCODED_LEN: usize = 2 + Self::BODY_LEN;
    pub(crate) const BODY_LEN: usize = 32 + 32 + 64;

    /// Builds an identity from its three parts, checking that both keys are
    /// well formed and that the binding signature verifies.
    ///
    /// # Errors
    /// [`CryptoError::InvalidSigningKey`] or [`CryptoError::NonCanonicalKey`]
    /// for a malformed key, [`CryptoError::BadIdentityBinding`] if the
    /// signature does not verify.
    pub fn from_parts(signing_key: [u8; 32], dh_key: [u8; 32], binding_signature: [u8; 64]) -> Result<Self> {
        let verifying = signing_key_from_bytes(&signing_key, "identity signing key")?;
        let dh = DhPublic::from_bytes(dh_key, "identity X25519 key")?;
        verifying
            .verify_strict(&binding_message(&signing_key, &dh_key), &Signature::from_bytes(&binding_signature))
            .map_err(|_| CryptoError::BadIdentityBinding)?;
        Ok(Self { signing: signing_key, dh, binding: binding_signature })
    }

    /// The Ed25519 identity key.
    pub fn signing_key(&self) -> [u8; 32] {
        self.signing
    }

    /// The X25519 identity key used in session setup.
    pub fn dh_key(&self) -> [u8; 32] {
        self.dh.0
    }

    /// The Ed25519 signature binding [`Self::dh_key`] to [`Self::signing_key`].
    pub fn binding_signature(&self) -> [u8; 64] {
        self.binding
    }

    pub(crate) fn dh_public(&self) -> &DhPublic {
        &self.dh
    }

    /// The Ed25519 key, decoded. Cannot fail for a constructed identity,
    /// but the decoding is redone rather than trusted.
    pub(crate) fn verifying_key(&self) -> Result<VerifyingKey> {
        signing_key_from_bytes(&self.signing, "identity signing key")
    }

    pub(crate) fn write_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.signing);
        out.extend_from_slice(&self.dh.0);
        out.extend_from_slice(&self.binding);
    }

    pub(crate) fn read_body(r: &mut Reader<'_>) -> Result<Self> {
        let signing = r.array()?;
        let dh = r.array()?;
        let sig = r.array()?;
        Self::from_parts(signing, dh, sig)
    }

    /// Encodes as `version, kind 0x10, ed25519 key, x25519 key, signature`
    /// (130 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = codec::writer(kind::PUBLIC_IDENTITY, Self::ENCODED_LEN);
        self.write_body(&mut out);
        out
    }

    /// Decodes [`Self::to_bytes`] output, checking keys and binding.
    ///
    /// # Errors
    /// Any decoding error for bytes not produced by [`Self::to_bytes`], and
    /// the errors of [`Self::from_parts`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "public identity");
        r.header(kind::PUBLIC_IDENTITY)?;
        let id = Self::read_body(&mut r)?;
        r.finish()?;
        Ok(id)
    }
}

impl PartialEq for PublicIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.signing == other.signing && self.dh == other.dh
    }
}

impl Eq for PublicIdentity {}

impl core::hash::Hash for PublicIdentity {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.signing.hash(state);
        self.dh.hash(state);
    }
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicIdentity").field("signing_key", &Hex(&self.signing)).field("dh_key", &self.dh).finish()
    }
}

/// A device's long-term identity: an Ed25519 signing key and an X25519 key
/// bound to it by signature.
///
/// Kith uses two separate keys rather than Signal's XEdDSA (one X25519 key
/// that also signs); the binding signature gives the same guarantee that both
/// belong to the same device. Secrets are wiped when the value is dropped and
/// never appear in `Debug` output.
pub struct DeviceIdentity {
    signing: SigningKey,
    dh: StaticSecret,
    public: PublicIdentity,
}

impl DeviceIdentity {
    /// Length of [`DeviceIdentity::to_bytes`].
    pub const ENCODED_LEN: usize = 2 + 32 + 32;

    /// Generates a new identity. Draws 32 bytes for the Ed25519 seed, then
    /// 32 bytes for the X25519 secret.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        let dh = random_dh_secret(rng);
        Self::from_secrets(&seed, dh)
    }

    fn from_secrets(seed: &[u8; 32], dh: StaticSecret) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let signing_public = signing.verifying_key();
        let dh_public = DhPublic::from_secret(&dh);
        let binding = signing.sign(&binding_message(signing_public.as_bytes(), &dh_public.0));
        Self {
            public: PublicIdentity { signing: signing_public.to_bytes(), dh: dh_public, binding: binding.to_bytes() },
            signing,
            dh,
        }
    }

    /// The public half, to publish and to compare with safety numbers.
    pub fn public(&self) -> &PublicIdentity {
        &self.public
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    pub(crate) fn dh_secret(&self) -> &StaticSecret {
        &self.dh
    }

    /// Encodes as `version, kind 0x11, ed25519 seed, x25519 secret` (66
    /// bytes). The result holds secrets: store it encrypted at rest; it is
    /// wiped when dropped.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = codec::secret_writer(kind::DEVICE_IDENTITY, Self::ENCODED_LEN);
        out.extend_from_slice(self.signing.as_bytes());
        out.extend_from_slice(self.dh.as_bytes());
        out
    }

    /// Decodes [`Self::to_bytes`] output and recomputes the public half.
    ///
    /// # Errors
    /// [`CryptoError::Truncated`], [`CryptoError::TrailingBytes`],
    /// [`CryptoError::UnsupportedVersion`] or [`CryptoError::WrongKind`] for
    /// bytes not produced by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "device identity");
        r.header(kind::DEVICE_IDENTITY)?;
        let seed = r.secret::<32>()?;
        let dh = r.secret::<32>()?;
        r.finish()?;
        Ok(Self::from_secrets(&seed, StaticSecret::from(*dh)))
    }
}

impl fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceIdentity").field("public", &self.public).finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Signed prekeys

/// The public part of a signed prekey, as published in a [`PreKeyBundle`](crate::PreKeyBundle).
///
/// The signature covers the id and the key; check it with
/// [`SignedPreKeyPublic::verify`] (done by [`PreKeyBundle::verify`](crate::PreKeyBundle::verify)).
#[derive(Clone, PartialEq, Eq)]
pub struct SignedPreKeyPublic {
    id: u32,
    key: DhPublic,
    signature: [u8; 64],
}

impl SignedPreKeyPublic {
    /// Length of [`SignedPreKeyPublic::to_bytes`].
    pub const ENCODED_LEN: usize = 2 + Self::BODY_LEN;
    pub(crate) const BODY_LEN: usize = 4 + 32 + 64;

    /// Builds the public part from its fields. The signature is not checked
    /// here (that needs the identity): see [`Self::verify`].
    ///
    /// # Errors
    /// [`CryptoError::NonCanonicalKey`] if `key` is not canonical.
    pub fn from_parts(id: u32, key: [u8; 32], signature: [u8; 64]) -> Result<Self> {
        Ok(Self { id, key: DhPublic::from_bytes(key, "signed prekey")?, signature })
    }

    /// The prekey's id, chosen by its owner.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The X25519 public key.
    pub fn key(&self) -> [u8; 32] {
        self.key.0
    }

    /// The identity's Ed25519 signature over the id and key.
    pub fn signature(&self) -> [u8; 64] {
        self.signature
    }

    pub(crate) fn dh_public(&self) -> &DhPublic {
        &self.key
    }

    /// Checks the signature with `identity`'s Ed25519 key (strict
    /// verification: no malleable or small-order encodings).
    ///
    /// # Errors
    /// [`CryptoError::BadSignedPreKeySignature`] if it does not verify.
    pub fn verify(&self, identity: &PublicIdentity) -> Result<()> {
        identity
            .verifying_key()?
            .verify_strict(&signed_prekey_message(self.id, &self.key.0), &Signature::from_bytes(&self.signature))
            .map_err(|_| CryptoError::BadSignedPreKeySignature { id: self.id })
    }

    pub(crate) fn write_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.key.0);
        out.extend_from_slice(&self.signature);
    }

    pub(crate) fn read_body(r: &mut Reader<'_>) -> Result<Self> {
        let id = r.u32()?;
        let key = DhPublic::read(r, "signed prekey")?;
        let signature = r.array()?;
        Ok(Self { id, key, signature })
    }

    /// Encodes as `version, kind 0x13, id, key, signature` (102 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = codec::writer(kind::SIGNED_PREKEY_PUBLIC, Self::ENCODED_LEN);
        self.write_body(&mut out);
        out
    }

    /// Decodes [`Self::to_bytes`] output (the signature is not checked).
    ///
    /// # Errors
    /// Any decoding error for bytes not produced by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "signed prekey (public)");
        r.header(kind::SIGNED_PREKEY_PUBLIC)?;
        let v = Self::read_body(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

impl fmt::Debug for SignedPreKeyPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedPreKeyPublic").field("id", &self.id).field("key", &self.key).finish_non_exhaustive()
    }
}

/// A signed prekey with its secret: a medium-term X25519 key signed by the
/// identity, rotated by its owner (keep the previous one a while so that
/// messages started against it still open).
pub struct SignedPreKey {
    secret: StaticSecret,
    public: SignedPreKeyPublic,
}

impl SignedPreKey {
    /// Length of [`SignedPreKey::to_bytes`].
    pub const ENCODED_LEN: usize = 2 + 4 + 32 + 64;

    /// Generates a prekey with the given `id` and signs it with `identity`.
    /// Draws 32 bytes from `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(id: u32, identity: &DeviceIdentity, rng: &mut R) -> Self {
        let secret = random_dh_secret(rng);
        let key = DhPublic::from_secret(&secret);
        let signature = identity.signing_key().sign(&signed_prekey_message(id, &key.0)).to_bytes();
        Self { secret, public: SignedPreKeyPublic { id, key, signature } }
    }

    /// The prekey's id.
    pub fn id(&self) -> u32 {
        self.public.id
    }

    /// The public part, to publish.
    pub fn public(&self) -> &SignedPreKeyPublic {
        &self.public
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    /// Encodes as `version, kind 0x12, id, secret, signature` (102 bytes).
    /// Holds a secret; wiped when dropped.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = codec::secret_writer(kind::SIGNED_PREKEY, Self::ENCODED_LEN);
        out.extend_from_slice(&self.public.id.to_be_bytes());
        out.extend_from_slice(self.secret.as_bytes());
        out.extend_from_slice(&self.public.signature);
        out
    }

    /// Decodes [`Self::to_bytes`] output.
    ///
    /// # Errors
    /// Any decoding error for bytes not produced by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "signed prekey");
        r.header(kind::SIGNED_PREKEY)?;
        let id = r.u32()?;
        let secret = StaticSecret::from(*r.secret::<32>()?);
        let signature = r.array()?;
        r.finish()?;
        let key = DhPublic::from_secret(&secret);
        Ok(Self { secret, public: SignedPreKeyPublic { id, key, signature } })
    }
}

impl fmt::Debug for SignedPreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedPreKey").field("public", &self.public).finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// One-time prekeys

/// The public part of a one-time prekey, as published in a bundle.
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimePreKeyPublic {
    id: u32,
    key: DhPublic,
}

impl OneTimePreKeyPublic {
    /// Length of [`OneTimePreKeyPublic::to_bytes`].
    pub const ENCODED_LEN: usize = 2 + Self::BODY_LEN;
    pub(crate) const BODY_LEN: usize = 4 + 32;

    /// Builds the public part from its fields.
    ///
    /// # Errors
    /// [`CryptoError::NonCanonicalKey`] if `key` is not canonical.
    pub fn from_parts(id: u32, key: [u8; 32]) -> Result<Self> {
        Ok(Self { id, key: DhPublic::from_bytes(key, "one-time prekey")? })
    }

    /// The prekey's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The X25519 public key.
    pub fn key(&self) -> [u8; 32] {
        self.key.0
    }

    pub(crate) fn dh_public(&self) -> &DhPublic {
        &self.key
    }

    pub(crate) fn write_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.key.0);
    }

    pub(crate) fn read_body(r: &mut Reader<'_>) -> Result<Self> {
        let id = r.u32()?;
        let key = DhPublic::read(r, "one-time prekey")?;
        Ok(Self { id, key })
    }

    /// Encodes as `version, kind 0x15, id, key` (38 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = codec::writer(kind::ONE_TIME_PREKEY_PUBLIC, Self::ENCODED_LEN);
        self.write_body(&mut out);
        out
    }

    /// Decodes [`Self::to_bytes`] output.
    ///
    /// # Errors
    /// Any decoding error for bytes not produced by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "one-time prekey (public)");
        r.header(kind::ONE_TIME_PREKEY_PUBLIC)?;
        let v = Self::read_body(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

impl fmt::Debug for OneTimePreKeyPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneTimePreKeyPublic").field("id", &self.id).field("key", &self.key).finish()
    }
}

/// A one-time prekey with its secret. Each is handed out at most once by the
/// server; its owner deletes it after the first session set up with it, so
/// that a later compromise cannot reopen that session's first messages.
pub struct OneTimePreKey {
    secret: StaticSecret,
    public: OneTimePreKeyPublic,
}

impl OneTimePreKey {
    /// Length of [`OneTimePreKey::to_bytes`].
    pub const ENCODED_LEN: usize = 2 + 4 + 32;

    /// Generates one key with the given id. Draws 32 bytes from `rng`.
    pub fn generate<R: CryptoRng + ?Sized>(id: u32, rng: &mut R) -> Self {
        let secret = random_dh_secret(rng);
        let key = DhPublic::from_secret(&secret);
        Self { secret, public: OneTimePreKeyPublic { id, key } }
    }

    /// Generates `count` keys with ids `start_id, start_id + 1, ...`, drawing
    /// 32 bytes per key in id order.
    ///
    /// # Errors
    /// [`CryptoError::PreKeyIdOverflow`] if the last id would exceed
    /// `u32::MAX`.
    pub fn generate_batch<R: CryptoRng + ?Sized>(start_id: u32, count: u32, rng: &mut R) -> Result<Vec<Self>> {
        let overflow = CryptoError::PreKeyIdOverflow { start: start_id, count };
        if count > 0 && start_id.checked_add(count - 1).is_none() {
            return Err(overflow);
        }
        Ok((0..count).map(|i| Self::generate(start_id.wrapping_add(i), rng)).collect())
    }

    /// The prekey's id.
    pub fn id(&self) -> u32 {
        self.public.id
    }

    /// The public part, to publish.
    pub fn public(&self) -> &OneTimePreKeyPublic {
        &self.public
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }

    /// Encodes as `version, kind 0x14, id, secret` (38 bytes). Holds a
    /// secret; wiped when dropped.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = codec::secret_writer(kind::ONE_TIME_PREKEY, Self::ENCODED_LEN);
        out.extend_from_slice(&self.public.id.to_be_bytes());
        out.extend_from_slice(self.secret.as_bytes());
        out
    }

    /// Decodes [`Self::to_bytes`] output.
    ///
    /// # Errors
    /// Any decoding error for bytes not produced by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "one-time prekey");
        r.header(kind::ONE_TIME_PREKEY)?;
        let id = r.u32()?;
        let secret = StaticSecret::from(*r.secret::<32>()?);
        r.finish()?;
        let key = DhPublic::from_secret(&secret);
        Ok(Self { secret, public: OneTimePreKeyPublic { id, key } })
    }
}

impl fmt::Debug for OneTimePreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneTimePreKey").field("public", &self.public).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x25519_public_keys_must_be_canonical() {
        let mut p_minus_1 = [0xff; 32];
        p_minus_1[0] = 0xec;
        p_minus_1[31] = 0x7f;
        assert!(DhPublic::from_bytes(p_minus_1, "k").is_ok());
        assert!(DhPublic::from_bytes([0; 32], "k").is_ok());
        let mut p = p_minus_1;
        p[0] = 0xed;
        let mut max = [0xff; 32];
        max[31] = 0x7f;
        let mut top = [0u8; 32];
        top[31] = 0x80;
        for bad in [p, max, top] {
            assert_eq!(DhPublic::from_bytes(bad, "k").unwrap_err(), CryptoError::NonCanonicalKey { what: "k" });
        }
    }

    #[test]
    fn signed_messages_are_domain_separated() {
        let binding = binding_message(&[1; 32], &[2; 32]);
        assert!(binding.starts_with(b"kith-identity-binding-v1\0"));
        assert_eq!(&binding[25..57], &[1; 32]);
        assert_eq!(&binding[57..], &[2; 32]);
        let spk = signed_prekey_message(0x01020304, &[3; 32]);
        assert!(spk.starts_with(b"kith-signed-prekey-v1\0"));
        assert_eq!(&spk[22..26], &[1, 2, 3, 4]);
        assert_eq!(&spk[26..], &[3; 32]);
    }
}
