//! User identities: the one signing key per account that vouches for the account's devices.
//!
//! A [`UserIdentity`] is made when the account is registered and handed to each device the
//! account links (see [`crate::link`]). It signs a [`DeviceCertificate`] for every device
//! identity of the account and a [`DeviceRemoval`] when a device leaves. Contacts pin the
//! public half, [`UserIdentityPublic`], per user (that is what safety numbers cover) and write
//! only to devices whose certificate that key signed. A server holds no user identity secret,
//! so it cannot add a device anyone will write to.

use core::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

use crate::codec::{self, Hex, Reader, kind};
use crate::error::{CryptoError, Result};
use crate::keys::{PublicIdentity, signing_key_from_bytes};

/// Domain-separation label of a device certificate's signature.
pub(crate) const CERTIFICATE_LABEL: &[u8] = b"kith-device-certificate-v2";
/// Domain-separation label of a device removal's signature.
pub(crate) const REMOVAL_LABEL: &[u8] = b"kith-device-removal-v2";

/// The public half of a user identity: one Ed25519 key per account.
///
/// Always a canonically encoded Ed25519 point that does not have small order. `Debug` and
/// `Display` print it as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserIdentityPublic([u8; 32]);

impl UserIdentityPublic {
    /// Length of [`UserIdentityPublic::to_bytes`].
    pub const ENCODED_LEN: usize = 2 + 32;

    /// Checks and wraps an Ed25519 public key.
    ///
    /// # Errors
    /// [`CryptoError::InvalidSigningKey`] for a key that is not canonical or has small order.
    pub fn from_key(key: [u8; 32]) -> Result<Self> {
        signing_key_from_bytes(&key, "user identity key")?;
        Ok(Self(key))
    }

    /// The Ed25519 key.
    pub fn key(&self) -> [u8; 32] {
        self.0
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        Self::from_key(r.array()?)
    }

    /// Strict Ed25519 verification of `signature` over `message` with this key.
    fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> Result<bool> {
        let key = signing_key_from_bytes(&self.0, "user identity key")?;
        Ok(key.verify_strict(message, &Signature::from_bytes(signature)).is_ok())
    }

    /// Encodes as `version, kind 0x31, ed25519 key` (34 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = codec::writer(kind::USER_IDENTITY_PUBLIC, Self::ENCODED_LEN);
        out.extend_from_slice(&self.0);
        out
    }

    /// Decodes [`Self::to_bytes`] output.
    ///
    /// # Errors
    /// Decoding errors and [`CryptoError::InvalidSigningKey`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "user identity (public)");
        r.header(kind::USER_IDENTITY_PUBLIC)?;
        let key = Self::read(&mut r)?;
        r.finish()?;
        Ok(key)
    }

    /// Fails with [`CryptoError::UntrustedUserIdentity`] unless `self` is `trusted`.
    pub(crate) fn expect(&self, trusted: &UserIdentityPublic) -> Result<()> {
        if self == trusted {
            Ok(())
        } else {
            Err(CryptoError::UntrustedUserIdentity { got: self.to_string(), trusted: trusted.to_string() })
        }
    }
}

impl fmt::Debug for UserIdentityPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserIdentityPublic({})", Hex(&self.0))
    }
}

impl fmt::Display for UserIdentityPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Hex(&self.0), f)
    }
}

/// An account's user identity, with its secret: the key that certifies the account's devices.
///
/// Made once, at registration ([`UserIdentity::generate`]), and given to every device the
/// account links. Whoever holds it can add devices that contacts will write to, so it is
/// stored like any other secret (encrypted at rest) and never sent anywhere but inside a
/// [`LinkResponse`](crate::LinkResponse). Wiped when dropped; never printed by `Debug`.
pub struct UserIdentity {
    signing: SigningKey,
    public: UserIdentityPublic,
}

impl UserIdentity {
    /// Length of [`UserIdentity::to_bytes`].
    pub const ENCODED_LEN: usize = 2 + 32;

    /// Makes a new user identity. Draws 32 bytes: the Ed25519 seed.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        Self::from_seed(&seed)
    }

    pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let public = UserIdentityPublic(signing.verifying_key().to_bytes());
        Self { signing, public }
    }

    pub(crate) fn seed(&self) -> &[u8; 32] {
        self.signing.as_bytes()
    }

    /// The public half, which contacts pin and safety numbers cover.
    pub fn public(&self) -> &UserIdentityPublic {
        &self.public
    }

    /// Certifies `device` as device `device_id` of user `user_id`.
    ///
    /// # Errors
    /// [`CryptoError::InvalidUserId`] for an empty or over-long user id.
    pub fn certify(&self, user_id: &str, device_id: u32, device: &PublicIdentity) -> Result<DeviceCertificate> {
        codec::check_user_id_len(user_id.len())?;
        let message = certificate_message(&self.public, user_id, device_id, device);
        let signature = self.signing.sign(&message).to_bytes();
        Ok(DeviceCertificate {
            user_key: self.public,
            user_id: user_id.to_owned(),
            device_id,
            device: device.clone(),
            signature,
        })
    }

    /// Signs the removal of device `device_id` (with identity `device`) of user `user_id`:
    /// contacts that see it stop writing to that device for good.
    ///
    /// # Errors
    /// [`CryptoError::InvalidUserId`] for an empty or over-long user id.
    pub fn remove(&self, user_id: &str, device_id: u32, device: &PublicIdentity) -> Result<DeviceRemoval> {
        codec::check_user_id_len(user_id.len())?;
        let device_key = device.signing_key();
        let message = removal_message(&self.public, user_id, device_id, &device_key);
        let signature = self.signing.sign(&message).to_bytes();
        Ok(DeviceRemoval { user_key: self.public, user_id: user_id.to_owned(), device_id, device_key, signature })
    }

    /// Encodes as `version, kind 0x30, ed25519 seed` (34 bytes). Holds the secret: store it
    /// encrypted at rest. Wiped when dropped.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = codec::secret_writer(kind::USER_IDENTITY, Self::ENCODED_LEN);
        out.extend_from_slice(self.signing.as_bytes());
        out
    }

    /// Decodes [`Self::to_bytes`] output and recomputes the public half.
    ///
    /// # Errors
    /// Decoding errors for bytes not produced by [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "user identity");
        r.header(kind::USER_IDENTITY)?;
        let seed = r.secret::<32>()?;
        r.finish()?;
        Ok(Self::from_seed(&seed))
    }
}

impl fmt::Debug for UserIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserIdentity").field("public", &self.public).finish_non_exhaustive()
    }
}

/// `label || 0x00 || user key || u16 len || user id || u32 device id`: the common start of
/// the messages a user identity signs.
fn signed_prefix(label: &[u8], user_key: &UserIdentityPublic, user_id: &str, device_id: u32) -> Vec<u8> {
    let mut msg = Vec::with_capacity(label.len() + 1 + 32 + 2 + user_id.len() + 4 + 64);
    msg.extend_from_slice(label);
    msg.push(0);
    msg.extend_from_slice(&user_key.0);
    codec::put_user_id(&mut msg, user_id);
    msg.extend_from_slice(&device_id.to_be_bytes());
    msg
}

fn certificate_message(
    user_key: &UserIdentityPublic,
    user_id: &str,
    device_id: u32,
    device: &PublicIdentity,
) -> Vec<u8> {
    let mut msg = signed_prefix(CERTIFICATE_LABEL, user_key, user_id, device_id);
    msg.extend_from_slice(&device.signing_key());
    msg.extend_from_slice(&device.dh_key());
    msg
}

fn removal_message(user_key: &UserIdentityPublic, user_id: &str, device_id: u32, device_key: &[u8; 32]) -> Vec<u8> {
    let mut msg = signed_prefix(REMOVAL_LABEL, user_key, user_id, device_id);
    msg.extend_from_slice(device_key);
    msg
}

/// A user identity's signature vouching that a device identity is device `device_id` of
/// user `user_id`.
///
/// Every value of this type has a signature that verifies under the user key it names
/// (every way of building one checks it); whether that user key is the one trusted for the
/// user is for the caller to check (see [`DeviceCertificate::check`]). A device's
/// certificate travels with its prekey bundle and in its first messages, and is bound into
/// every session with it (the associated data covers the user key, user id and device id).
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceCertificate {
    user_key: UserIdentityPublic,
    user_id: String,
    device_id: u32,
    device: PublicIdentity,
    signature: [u8; 64],
}

impl DeviceCertificate {
    /// The user identity that signed it.
    pub fn user_key(&self) -> &UserIdentityPublic {
        &self.user_key
    }

    /// The user the device belongs to.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The device's id within the account.
    pub fn device_id(&self) -> u32 {
        self.device_id
    }

    /// The device identity it vouches for.
    pub fn device(&self) -> &PublicIdentity {
        &self.device
    }

    /// Checks that this certificate is from `trusted` and vouches for `device_id` of
    /// `user_id`.
    ///
    /// # Errors
    /// [`CryptoError::UntrustedUserIdentity`] or [`CryptoError::CertificateMismatch`].
    pub fn check(&self, trusted: &UserIdentityPublic, user_id: &str, device_id: u32) -> Result<()> {
        self.user_key.expect(trusted)?;
        if self.user_id != user_id {
            return Err(CryptoError::CertificateMismatch { reason: "it names another user" });
        }
        if self.device_id != device_id {
            return Err(CryptoError::CertificateMismatch { reason: "it names another device id" });
        }
        Ok(())
    }

    /// The fields the session's associated data binds: user key, user id, device id and the
    /// device's two identity keys.
    pub(crate) fn write_party(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.user_key.0);
        codec::put_user_id(out, &self.user_id);
        out.extend_from_slice(&self.device_id.to_be_bytes());
        out.extend_from_slice(&self.device.signing_key());
        out.extend_from_slice(&self.device.dh_key());
    }

    pub(crate) fn write_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.user_key.0);
        codec::put_user_id(out, &self.user_id);
        out.extend_from_slice(&self.device_id.to_be_bytes());
        self.device.write_body(out);
        out.extend_from_slice(&self.signature);
    }

    /// Reads a body and checks the device identity's binding and the signature.
    pub(crate) fn read_body(r: &mut Reader<'_>) -> Result<Self> {
        let user_key = UserIdentityPublic::read(r)?;
        let user_id = r.user_id()?;
        let device_id = r.u32()?;
        let device = PublicIdentity::read_body(r)?;
        let signature = r.array()?;
        if !user_key.verifies(&certificate_message(&user_key, &user_id, device_id, &device), &signature)? {
            return Err(CryptoError::BadCertificateSignature);
        }
        Ok(Self { user_key, user_id, device_id, device, signature })
    }

    /// The length of the body ([`Self::to_bytes`] without version and kind).
    pub(crate) fn body_len(&self) -> usize {
        32 + 2 + self.user_id.len() + 4 + PublicIdentity::BODY_LEN + 64
    }

    /// Encodes as `version, kind 0x32, user key (32), u16 length, user id, u32 device id,
    /// device identity body (128), signature (64)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = codec::writer(kind::DEVICE_CERTIFICATE, 2 + self.body_len());
        self.write_body(&mut out);
        out
    }

    /// Decodes [`Self::to_bytes`] output, checking the device identity and the signature.
    ///
    /// # Errors
    /// Decoding errors, [`CryptoError::BadIdentityBinding`],
    /// [`CryptoError::BadCertificateSignature`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "device certificate");
        r.header(kind::DEVICE_CERTIFICATE)?;
        let certificate = Self::read_body(&mut r)?;
        r.finish()?;
        Ok(certificate)
    }
}

impl fmt::Debug for DeviceCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceCertificate")
            .field("user_key", &self.user_key)
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// A user identity's signature saying that device `device_id` (with the given device signing
/// key) no longer belongs to user `user_id`: contacts that see it stop writing to that device
/// and never accept its certificate again, whatever a server serves later.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceRemoval {
    user_key: UserIdentityPublic,
    user_id: String,
    device_id: u32,
    device_key: [u8; 32],
    signature: [u8; 64],
}

impl DeviceRemoval {
    /// Length of [`DeviceRemoval::to_bytes`] for a user id of `user_id_len` bytes.
    pub const fn encoded_len(user_id_len: usize) -> usize {
        2 + 32 + 2 + user_id_len + 4 + 32 + 64
    }

    /// The user identity that signed it.
    pub fn user_key(&self) -> &UserIdentityPublic {
        &self.user_key
    }

    /// The user.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The removed device's id.
    pub fn device_id(&self) -> u32 {
        self.device_id
    }

    /// The removed device's Ed25519 identity key.
    pub fn device_key(&self) -> [u8; 32] {
        self.device_key
    }

    /// Whether this removal is of the device `certificate` vouches for.
    pub fn revokes(&self, certificate: &DeviceCertificate) -> bool {
        self.user_key == certificate.user_key
            && self.user_id == certificate.user_id
            && self.device_id == certificate.device_id
            && self.device_key == certificate.device.signing_key()
    }

    /// Encodes as `version, kind 0x33, user key (32), u16 length, user id, u32 device id,
    /// device signing key (32), signature (64)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = codec::writer(kind::DEVICE_REMOVAL, Self::encoded_len(self.user_id.len()));
        out.extend_from_slice(&self.user_key.0);
        codec::put_user_id(&mut out, &self.user_id);
        out.extend_from_slice(&self.device_id.to_be_bytes());
        out.extend_from_slice(&self.device_key);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes [`Self::to_bytes`] output, checking the signature.
    ///
    /// # Errors
    /// Decoding errors, [`CryptoError::InvalidSigningKey`] for a malformed device key,
    /// [`CryptoError::BadRemovalSignature`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "device removal");
        r.header(kind::DEVICE_REMOVAL)?;
        let user_key = UserIdentityPublic::read(&mut r)?;
        let user_id = r.user_id()?;
        let device_id = r.u32()?;
        let device_key: [u8; 32] = r.array()?;
        signing_key_from_bytes(&device_key, "removed device key")?;
        let signature = r.array()?;
        r.finish()?;
        if !user_key.verifies(&removal_message(&user_key, &user_id, device_id, &device_key), &signature)? {
            return Err(CryptoError::BadRemovalSignature);
        }
        Ok(Self { user_key, user_id, device_id, device_key, signature })
    }
}

impl fmt::Debug for DeviceRemoval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceRemoval")
            .field("user_key", &self.user_key)
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("device_key", &Hex(&self.device_key))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_messages_are_domain_separated_and_laid_out_as_documented() {
        let key = UserIdentityPublic([7; 32]);
        let msg = signed_prefix(CERTIFICATE_LABEL, &key, "a@b", 0x0102_0304);
        assert!(msg.starts_with(b"kith-device-certificate-v2\0"));
        assert_eq!(&msg[27..59], &[7; 32]);
        assert_eq!(&msg[59..64], b"\x00\x03a@b");
        assert_eq!(&msg[64..], &[1, 2, 3, 4]);
        let removal = removal_message(&key, "a@b", 5, &[9; 32]);
        assert!(removal.starts_with(b"kith-device-removal-v2\0"));
        assert_eq!(&removal[removal.len() - 32..], &[9; 32]);
    }
}
