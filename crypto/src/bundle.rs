//! Prekey bundles: what a device publishes so others can start sessions
//! with it while it is offline.

use crate::codec::{self, Reader, kind};
use crate::error::{CryptoError, Result};
use crate::keys::{OneTimePreKeyPublic, PublicIdentity, SignedPreKeyPublic};
use crate::user::{DeviceCertificate, UserIdentityPublic};

/// The public keys a device publishes (through the server) for others to
/// start a session with it: its identity, its current signed prekey and, if
/// any are left, one one-time prekey.
///
/// A bundle arrives from an untrusted server, with the device's
/// [`DeviceCertificate`]: turn both into a [`VerifiedPreKeyBundle`] with
/// [`PreKeyBundle::verify`] before use. That proves the keys belong to
/// `identity()` and that the user identity you trust for the user vouches for
/// that device; whether that user identity is really the person you mean is
/// what safety numbers are for.
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

    /// Checks that `certificate` is signed by `trusted` (the user identity you
    /// trust for `user_id`), names device `device_id` of `user_id` and vouches
    /// for this bundle's identity, and that the signed prekey's signature
    /// verifies under that identity (whose own binding signature was checked
    /// when it was built). Returns the proof that
    /// [`Session::initiate`](crate::Session::initiate) requires.
    ///
    /// # Errors
    /// [`CryptoError::UntrustedUserIdentity`] and
    /// [`CryptoError::CertificateMismatch`] for a device the trusted identity
    /// did not certify (write nothing to it),
    /// [`CryptoError::BadSignedPreKeySignature`] if the prekey signature does
    /// not verify.
    pub fn verify(
        &self,
        certificate: &DeviceCertificate,
        trusted: &UserIdentityPublic,
        user_id: &str,
        device_id: u32,
    ) -> Result<VerifiedPreKeyBundle> {
        certificate.check(trusted, user_id, device_id)?;
        if certificate.device() != &self.identity {
            return Err(CryptoError::CertificateMismatch { reason: "it vouches for another device identity" });
        }
        self.signed_prekey.verify(&self.identity)?;
        Ok(VerifiedPreKeyBundle { bundle: self.clone(), certificate: certificate.clone() })
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
    /// [`CryptoError::BadIdentityBinding`].
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

/// A [`PreKeyBundle`] whose signatures have been checked, with the
/// certificate from the trusted user identity that vouches for it. Only
/// [`PreKeyBundle::verify`] can build one, so holding one is proof that the
/// checks happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPreKeyBundle {
    bundle: PreKeyBundle,
    certificate: DeviceCertificate,
}

impl VerifiedPreKeyBundle {
    /// The verified bundle.
    pub fn bundle(&self) -> &PreKeyBundle {
        &self.bundle
    }

    /// The identity the bundle belongs to.
    pub fn identity(&self) -> &PublicIdentity {
        &self.bundle.identity
    }

    /// The certificate vouching for the bundle's identity.
    pub fn certificate(&self) -> &DeviceCertificate {
        &self.certificate
    }
}
