//! Prekey bundles: what a device publishes so others can start sessions
//! with it while it is offline.

use crate::codec::{self, Reader, kind};
use crate::error::Result;
use crate::keys::{OneTimePreKeyPublic, PublicIdentity, SignedPreKeyPublic};

/// The public keys a device publishes (through the server) for others to
/// start a session with it: its identity, its current signed prekey and, if
/// any are left, one one-time prekey.
///
/// A bundle arrives from an untrusted server: turn it into a
/// [`VerifiedPreKeyBundle`] with [`PreKeyBundle::verify`] before use. That
/// proves the keys belong to `identity()`; whether `identity()` is really the
/// person you mean is what safety numbers are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreKeyBundle {
    identity: PublicIdentity,
    signed_prekey: SignedPreKeyPublic,
    one_time_prekey: Option<OneTimePreKeyPublic>,
}

impl PreKeyBundle {
    /// Assembles a bundle from its parts.
    pub fn new(
        identity: PublicIdentity,
        signed_prekey: SignedPreKeyPublic,
        one_time_prekey: Option<OneTimePreKeyPublic>,
    ) -> Self {
        Self { identity, signed_prekey, one_time_prekey }
    }

    /// The identity the bundle claims to belong to.
    pub fn identity(&self) -> &PublicIdentity {
        &self.identity
    }

    /// The signed prekey.
    pub fn signed_prekey(&self) -> &SignedPreKeyPublic {
        &self.signed_prekey
    }

    /// The one-time prekey, if the server had one left.
    pub fn one_time_prekey(&self) -> Option<&OneTimePreKeyPublic> {
        self.one_time_prekey.as_ref()
    }

    /// Checks the signed prekey's signature against the identity (whose own
    /// binding signature was checked when it was built) and returns the proof
    /// that [`Session::initiate`](crate::Session::initiate) requires.
    ///
    /// # Errors
    /// [`CryptoError::BadSignedPreKeySignature`](crate::CryptoError::BadSignedPreKeySignature)
    /// if the signature does not verify.
    pub fn verify(&self) -> Result<VerifiedPreKeyBundle> {
        self.signed_prekey.verify(&self.identity)?;
        Ok(VerifiedPreKeyBundle(self.clone()))
    }

    /// Encodes as `version, kind 0x16, identity (128), signed prekey (100),
    /// flag, [one-time prekey (36)]`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = codec::writer(
            kind::PREKEY_BUNDLE,
            2 + PublicIdentity::BODY_LEN + SignedPreKeyPublic::BODY_LEN + 1 + OneTimePreKeyPublic::BODY_LEN,
        );
        self.identity.write_body(&mut out);
        self.signed_prekey.write_body(&mut out);
        match &self.one_time_prekey {
            Some(otpk) => {
                out.push(1);
                otpk.write_body(&mut out);
            }
            None => out.push(0),
        }
        out
    }

    /// Decodes [`Self::to_bytes`] output. The identity binding is checked
    /// here; the signed prekey's signature is checked by [`Self::verify`].
    ///
    /// # Errors
    /// Any decoding error for bytes not produced by [`Self::to_bytes`], and
    /// [`CryptoError::BadIdentityBinding`](crate::CryptoError::BadIdentityBinding).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "prekey bundle");
        r.header(kind::PREKEY_BUNDLE)?;
        let identity = PublicIdentity::read_body(&mut r)?;
        let signed_prekey = SignedPreKeyPublic::read_body(&mut r)?;
        let one_time_prekey =
            if r.flag("one-time prekey flag")? { Some(OneTimePreKeyPublic::read_body(&mut r)?) } else { None };
        r.finish()?;
        Ok(Self { identity, signed_prekey, one_time_prekey })
    }
}

/// A [`PreKeyBundle`] whose signatures have been checked. Only
/// [`PreKeyBundle::verify`] can build one, so holding one is proof that the
/// check happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPreKeyBundle(PreKeyBundle);

impl VerifiedPreKeyBundle {
    /// The verified bundle.
    pub fn bundle(&self) -> &PreKeyBundle {
        &self.0
    }

    /// The identity the bundle belongs to.
    pub fn identity(&self) -> &PublicIdentity {
        &self.0.identity
    }
}
