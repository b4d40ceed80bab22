//! Linking a device: how a new device of an account gets its certificate and the user
//! identity from a device the account already has, with a code shown on one and typed on the
//! other. A password is never enough: only someone who holds the code can ask, and only the
//! device that made the code can answer.
//!
//! 1. The existing device draws a [`LinkSecret`] and shows its [`LinkCode`] (the user id and
//!    16 secret bytes).
//! 2. The new device, given the code, makes a [`LinkRequest`]: its user id, device id, device
//!    identity and an ephemeral X25519 key, sealed under a key derived from the secret.
//! 3. The existing device opens the request ([`LinkRequest::open`]), certifies the device and
//!    answers with a [`LinkResponse`]: the certificate and the user identity, sealed under a
//!    key derived from the secret and a fresh X25519 agreement with the ephemeral key.
//! 4. The new device opens the response ([`LinkResponse::open`]) and checks that the
//!    certificate is for it and made by the user identity it received.
//!
//! The server relays both messages. Without the code it can neither make a request that the
//! existing device accepts nor read or alter a response; the X25519 agreement means that even
//! a code that leaks later does not open a recorded response.

use core::fmt;

use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::codec::{self, Reader, kind};
use crate::error::{CryptoError, Result};
use crate::kdf;
use crate::keys::{DeviceIdentity, DhPublic, PublicIdentity, dh, random_dh_secret};
use crate::user::{DeviceCertificate, UserIdentity};

/// HKDF info of the link id.
const LINK_ID_INFO: &[u8] = b"kith-link-id-v2";
/// HKDF info of the request's key and nonce.
const REQUEST_INFO: &[u8] = b"kith-link-request-v2";
/// HKDF info of the response's key and nonce.
const RESPONSE_INFO: &[u8] = b"kith-link-response-v2";

/// Bytes of secret in a link code.
pub const LINK_SECRET_LEN: usize = 16;

/// The secret a link code carries: 16 random bytes, used for one link.
pub struct LinkSecret(Zeroizing<[u8; LINK_SECRET_LEN]>);

impl LinkSecret {
    /// Draws a new secret: 32 bytes from `rng`, of which the first 16 are the secret (every
    /// draw this crate makes is 32 bytes).
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut draw = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(draw.as_mut());
        let mut secret = Zeroizing::new([0u8; LINK_SECRET_LEN]);
        secret.copy_from_slice(&draw[..LINK_SECRET_LEN]);
        Self(secret)
    }

    /// The id both link messages carry, so that devices can tell which link a message is
    /// for without being able to open it: `HKDF(salt = 32 zero bytes, IKM = secret, info =
    /// "kith-link-id-v2")`, 16 bytes.
    ///
    /// # Errors
    /// None in practice ([`CryptoError::Internal`] if HKDF refused 16 bytes).
    pub fn link_id(&self) -> Result<[u8; 16]> {
        Ok(*kdf::hkdf_bytes::<16>(&[0u8; 32], self.0.as_slice(), LINK_ID_INFO)?)
    }
}

impl fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkSecret").finish_non_exhaustive()
    }
}

/// What the existing device shows and the new device is given: the user id and the link
/// secret, written `<user id>/<secret as 32 hex digits in 8 groups of 4, joined by '-'>`, for
/// example `alice@kith.example/4f2a-91c0-7b3e-d815-0c6a-22f9-e401-b7cd`.
#[derive(Debug)]
pub struct LinkCode {
    /// The account the new device joins.
    pub user_id: String,
    /// The secret.
    pub secret: LinkSecret,
}

impl LinkCode {
    /// The code as text. It holds the secret: show it to the user, do not log it.
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(self.user_id.len() + 1 + 39));
        out.push_str(&self.user_id);
        out.push('/');
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in self.secret.0.iter().enumerate() {
            if i > 0 && i % 2 == 0 {
                out.push('-');
            }
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
        out
    }

    /// Reads a code typed by a person: the user id, `/`, then 32 hex digits (either case;
    /// dashes and spaces between them are ignored).
    ///
    /// # Errors
    /// [`CryptoError::InvalidLinkCode`], [`CryptoError::InvalidUserId`].
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let (user_id, secret_text) =
            text.rsplit_once('/').ok_or(CryptoError::InvalidLinkCode { reason: "no '/' after the user id" })?;
        codec::check_user_id_len(user_id.len())?;
        let digits: Zeroizing<Vec<u8>> =
            Zeroizing::new(secret_text.bytes().filter(|b| !matches!(b, b'-' | b' ')).collect());
        if digits.len() != 2 * LINK_SECRET_LEN {
            return Err(CryptoError::InvalidLinkCode { reason: "the secret must be 32 hex digits" });
        }
        let mut secret = Zeroizing::new([0u8; LINK_SECRET_LEN]);
        for (out, pair) in secret.iter_mut().zip(digits.chunks_exact(2)) {
            let high = hex_digit(pair[0])?;
            let low = hex_digit(pair[1])?;
            *out = high << 4 | low;
        }
        Ok(Self { user_id: user_id.to_owned(), secret: LinkSecret(secret) })
    }
}

fn hex_digit(b: u8) -> Result<u8> {
    match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        b'A'..=b'F' => Ok(b - b'A' + 10),
        _ => Err(CryptoError::InvalidLinkCode { reason: "the secret must be hex digits" }),
    }
}

/// A new device's request to be linked, as sealed bytes and with the ephemeral secret the
/// new device keeps to open the answer.
pub struct LinkRequest {
    bytes: Vec<u8>,
    ephemeral: StaticSecret,
    user_id: String,
    device_id: u32,
    device: PublicIdentity,
}

/// What the existing device learns from a request it opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedLinkRequest {
    /// The account the device wants to join.
    pub user_id: String,
    /// The device's id.
    pub device_id: u32,
    /// The device's identity, to certify.
    pub device: PublicIdentity,
    ephemeral: DhPublic,
    transcript: [u8; 32],
}

/// `key (32) || nonce (12)` of the request: `HKDF(salt = 32 zero bytes, IKM = secret ||
/// ephemeral public key, info = "kith-link-request-v2")`.
fn request_key(secret: &LinkSecret, ephemeral: &DhPublic) -> Result<Zeroizing<[u8; 44]>> {
    let mut ikm = Zeroizing::new(Vec::with_capacity(LINK_SECRET_LEN + 32));
    ikm.extend_from_slice(secret.0.as_slice());
    ikm.extend_from_slice(ephemeral.as_bytes());
    kdf::hkdf_bytes::<44>(&[0u8; 32], &ikm, REQUEST_INFO)
}

/// `key (32) || nonce (12)` of the response: `HKDF(salt = secret, IKM = DH(response
/// ephemeral, request ephemeral), info = "kith-link-response-v2")`.
fn response_key(secret: &LinkSecret, shared: &[u8; 32]) -> Result<Zeroizing<[u8; 44]>> {
    kdf::hkdf_bytes::<44>(secret.0.as_slice(), shared, RESPONSE_INFO)
}

impl LinkRequest {
    /// Makes the request of device `device_id` (with `identity`) to join `code`'s account.
    /// Draws 32 bytes: the ephemeral X25519 secret.
    ///
    /// Layout: `version, kind 0x34, link id (16), ephemeral public key (32), sealed body`,
    /// where the body is `u16 length, user id, u32 device id, device identity body (128)`,
    /// sealed with ChaCha20-Poly1305 under the request key, the associated data being the 50
    /// bytes before it.
    ///
    /// # Errors
    /// [`CryptoError::InvalidUserId`].
    pub fn new<R: CryptoRng + ?Sized>(
        code: &LinkCode,
        device_id: u32,
        identity: &DeviceIdentity,
        rng: &mut R,
    ) -> Result<Self> {
        codec::check_user_id_len(code.user_id.len())?;
        let ephemeral = random_dh_secret(rng);
        let ephemeral_public = DhPublic::from_secret(&ephemeral);
        let mut bytes = codec::writer(kind::LINK_REQUEST, 2 + 16 + 32 + 2 + code.user_id.len() + 4 + 128 + 16);
        bytes.extend_from_slice(&code.secret.link_id()?);
        bytes.extend_from_slice(ephemeral_public.as_bytes());
        let mut body = Zeroizing::new(Vec::with_capacity(2 + code.user_id.len() + 4 + PublicIdentity::BODY_LEN));
        codec::put_user_id(&mut body, &code.user_id);
        body.extend_from_slice(&device_id.to_be_bytes());
        identity.public().write_body(&mut body);
        let key = request_key(&code.secret, &ephemeral_public)?;
        let sealed = kdf::seal_with(&key, &bytes, &body)?;
        bytes.extend_from_slice(&sealed);
        Ok(Self { bytes, ephemeral, user_id: code.user_id.clone(), device_id, device: identity.public().clone() })
    }

    /// The bytes to send to the existing device (through the server).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The existing device's side: opens `bytes` with the secret of the code it showed.
    ///
    /// # Errors
    /// Decoding errors; [`CryptoError::LinkAuthenticationFailed`] for a request made without
    /// the secret (or for another link).
    pub fn open(secret: &LinkSecret, bytes: &[u8]) -> Result<OpenedLinkRequest> {
        let mut r = Reader::new(bytes, "link request");
        r.header(kind::LINK_REQUEST)?;
        let link_id: [u8; 16] = r.array()?;
        if link_id != secret.link_id()? {
            return Err(CryptoError::LinkAuthenticationFailed);
        }
        let ephemeral = DhPublic::read(&mut r, "link ephemeral key")?;
        let sealed = r.rest();
        let key = request_key(secret, &ephemeral)?;
        let header = &bytes[..bytes.len() - sealed.len()];
        let body = Zeroizing::new(kdf::open_with(&key, header, sealed)?.ok_or(CryptoError::LinkAuthenticationFailed)?);
        let mut r = Reader::new(&body, "link request body");
        let user_id = r.user_id()?;
        let device_id = r.u32()?;
        let device = PublicIdentity::read_body(&mut r)?;
        r.finish()?;
        Ok(OpenedLinkRequest { user_id, device_id, device, ephemeral, transcript: Sha256::digest(bytes).into() })
    }
}

impl fmt::Debug for LinkRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkRequest")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// The existing device's answer to a link request: the new device's certificate and the user
/// identity, sealed for the new device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkResponse {
    bytes: Vec<u8>,
}

/// What the new device takes from the response.
#[derive(Debug)]
pub struct Linked {
    /// The account's user identity (secret).
    pub user_identity: UserIdentity,
    /// The new device's certificate, checked: made by `user_identity` for the requesting
    /// device.
    pub certificate: DeviceCertificate,
}

impl LinkResponse {
    /// Certifies the requesting device and seals the certificate and `user_identity` for it.
    /// Draws 32 bytes: the response's ephemeral X25519 secret.
    ///
    /// Layout: `version, kind 0x35, link id (16), ephemeral public key (32), sealed body`,
    /// where the body is `certificate body, user identity seed (32)`, sealed with
    /// ChaCha20-Poly1305 under the response key, the associated data being the 50 bytes
    /// before it followed by SHA-256 of the whole request.
    ///
    /// # Errors
    /// [`CryptoError::InvalidUserId`]; [`CryptoError::NonContributoryKeyAgreement`] for a
    /// small-order ephemeral key in the request.
    pub fn new<R: CryptoRng + ?Sized>(
        secret: &LinkSecret,
        request: &OpenedLinkRequest,
        user_identity: &UserIdentity,
        rng: &mut R,
    ) -> Result<Self> {
        let certificate = user_identity.certify(&request.user_id, request.device_id, &request.device)?;
        let ephemeral = random_dh_secret(rng);
        let ephemeral_public = DhPublic::from_secret(&ephemeral);
        let shared = dh(&ephemeral, &request.ephemeral, "link key agreement")?;
        let mut bytes = codec::writer(kind::LINK_RESPONSE, 2 + 16 + 32 + certificate.body_len() + 32 + 16);
        bytes.extend_from_slice(&secret.link_id()?);
        bytes.extend_from_slice(ephemeral_public.as_bytes());
        let mut aad = bytes.clone();
        aad.extend_from_slice(&request.transcript);
        let mut body = Zeroizing::new(Vec::with_capacity(certificate.body_len() + 32));
        certificate.write_body(&mut body);
        body.extend_from_slice(user_identity.seed());
        let key = response_key(secret, &shared)?;
        let sealed = kdf::seal_with(&key, &aad, &body)?;
        bytes.extend_from_slice(&sealed);
        Ok(Self { bytes })
    }

    /// The bytes to send back (through the server).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The new device's side: opens the answer to `request` and checks that it certifies
    /// exactly the requesting device, with the user identity it carries.
    ///
    /// # Errors
    /// Decoding errors; [`CryptoError::LinkAuthenticationFailed`] for an answer not made for
    /// this request with the secret; [`CryptoError::LinkMismatch`] for a certificate of
    /// another device or by another identity.
    pub fn open(secret: &LinkSecret, request: &LinkRequest, bytes: &[u8]) -> Result<Linked> {
        let mut r = Reader::new(bytes, "link response");
        r.header(kind::LINK_RESPONSE)?;
        let link_id: [u8; 16] = r.array()?;
        if link_id != secret.link_id()? {
            return Err(CryptoError::LinkAuthenticationFailed);
        }
        let ephemeral = DhPublic::read(&mut r, "link ephemeral key")?;
        let sealed = r.rest();
        let mut aad = bytes[..bytes.len() - sealed.len()].to_vec();
        aad.extend_from_slice(&Sha256::digest(&request.bytes));
        let shared = dh(&request.ephemeral, &ephemeral, "link key agreement")?;
        let key = response_key(secret, &shared)?;
        let body = Zeroizing::new(kdf::open_with(&key, &aad, sealed)?.ok_or(CryptoError::LinkAuthenticationFailed)?);
        let mut r = Reader::new(&body, "link response body");
        let certificate = DeviceCertificate::read_body(&mut r)?;
        let seed = r.secret::<32>()?;
        r.finish()?;
        let user_identity = UserIdentity::from_seed(&seed);
        if certificate.user_key() != user_identity.public() {
            return Err(CryptoError::LinkMismatch { reason: "the certificate is not by the user identity sent" });
        }
        if certificate.user_id() != request.user_id
            || certificate.device_id() != request.device_id
            || certificate.device() != &request.device
        {
            return Err(CryptoError::LinkMismatch { reason: "the certificate is for another device" });
        }
        Ok(Linked { user_identity, certificate })
    }

    /// Wraps received bytes (checked only by [`Self::open`]).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self { bytes: bytes.to_vec() }
    }
}

/// Reads the link id of a link message (request or response) without opening it, so that a
/// device can ignore messages for links it did not start.
pub fn link_message_id(bytes: &[u8]) -> Option<[u8; 16]> {
    let mut r = Reader::new(bytes, "link message");
    let version = r.u8().ok()?;
    let kind = r.u8().ok()?;
    if version != codec::VERSION || !(kind == kind::LINK_REQUEST || kind == kind::LINK_RESPONSE) {
        return None;
    }
    r.array().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_tolerate_case_and_spacing() {
        let code = LinkCode { user_id: "alice@example.org".into(), secret: LinkSecret(Zeroizing::new([0xab; 16])) };
        let text = code.to_text();
        assert_eq!(text.as_str(), "alice@example.org/abab-abab-abab-abab-abab-abab-abab-abab");
        let back = LinkCode::parse(" alice@example.org/ABAB ABAB-abab abab-ABAB-abab-abab-abab\n").unwrap();
        assert_eq!(back.user_id, "alice@example.org");
        assert_eq!(*back.secret.0, [0xab; 16]);
        for bad in ["no-slash", "a@b/abcd", "a@b/zzzz-abab-abab-abab-abab-abab-abab-abab", "/abab"] {
            assert!(LinkCode::parse(bad).is_err(), "{bad}");
        }
    }
}
