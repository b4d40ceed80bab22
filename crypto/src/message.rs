//! The wire format of encrypted messages, and cheap inspection of it.

use crate::codec::{Reader, VERSION, kind};
use crate::error::{CryptoError, Result};
use crate::kdf::TAG_LEN;
use crate::keys::{DhPublic, PublicIdentity};
use crate::user::DeviceCertificate;

/// Length of a ratchet message header: version, kind, ratchet key (32),
/// previous chain length (4), counter (4).
pub(crate) const HEADER_LEN: usize = 2 + 32 + 4 + 4;

/// Smallest possible ratchet message: a header and a tag (empty plaintext).
pub const MIN_MESSAGE_LEN: usize = HEADER_LEN + TAG_LEN;

/// The decoded header of a ratchet message.
#[derive(Clone, Copy)]
pub(crate) struct Header {
    pub(crate) ratchet_key: DhPublic,
    pub(crate) previous_counter: u32,
    pub(crate) counter: u32,
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = VERSION;
        out[1] = kind::MESSAGE;
        out[2..34].copy_from_slice(self.ratchet_key.as_bytes());
        out[34..38].copy_from_slice(&self.previous_counter.to_be_bytes());
        out[38..42].copy_from_slice(&self.counter.to_be_bytes());
        out
    }
}

/// A ratchet message split into its parts (no cryptography done yet).
pub(crate) struct RatchetMessage<'a> {
    pub(crate) header: Header,
    /// The exact header bytes, authenticated as associated data.
    pub(crate) header_bytes: &'a [u8],
    /// Ciphertext followed by the tag; at least [`TAG_LEN`] bytes.
    pub(crate) ciphertext: &'a [u8],
}

/// The session-setup fields a prekey message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Setup {
    pub(crate) base_key: DhPublic,
    pub(crate) signed_prekey_id: u32,
    pub(crate) one_time_prekey_id: Option<u32>,
}

/// A prekey message split into its parts.
pub(crate) struct PreKeyMessage<'a> {
    /// The sending device's certificate (signature checked), which names its identity.
    pub(crate) sender: DeviceCertificate,
    pub(crate) setup: Setup,
    pub(crate) inner: RatchetMessage<'a>,
}

/// Either kind of wire message.
pub(crate) enum Wire<'a> {
    Ratchet(RatchetMessage<'a>),
    PreKey(Box<PreKeyMessage<'a>>),
}

fn parse_ratchet(bytes: &[u8]) -> Result<RatchetMessage<'_>> {
    let mut r = Reader::new(bytes, "message");
    let header_bytes = {
        let mut h = Reader::new(r.take(HEADER_LEN)?, "message header");
        h.header(kind::MESSAGE)?;
        let ratchet_key = DhPublic::read(&mut h, "ratchet key")?;
        let previous_counter = h.u32()?;
        let counter = h.u32()?;
        h.finish()?;
        Header { ratchet_key, previous_counter, counter }
    };
    if r.remaining() < TAG_LEN {
        return Err(CryptoError::Truncated { what: "message", needed: TAG_LEN, available: r.remaining() });
    }
    Ok(RatchetMessage { header: header_bytes, header_bytes: &bytes[..HEADER_LEN], ciphertext: r.rest() })
}

/// Splits wire bytes into their parts, checking every field's syntax (and a
/// prekey message's sender certificate and binding signatures) but doing no
/// decryption.
pub(crate) fn parse(bytes: &[u8]) -> Result<Wire<'_>> {
    let mut r = Reader::new(bytes, "message");
    let version = r.u8()?;
    if version != VERSION {
        return Err(CryptoError::UnsupportedVersion { what: "message", got: version, supported: VERSION });
    }
    match r.u8()? {
        kind::MESSAGE => Ok(Wire::Ratchet(parse_ratchet(bytes)?)),
        kind::PREKEY_MESSAGE => {
            let sender = DeviceCertificate::read_body(&mut r)?;
            let base_key = DhPublic::read(&mut r, "base key")?;
            let signed_prekey_id = r.u32()?;
            let one_time_prekey_id = r.opt_u32("one-time prekey flag")?;
            let inner = parse_ratchet(r.rest())?;
            Ok(Wire::PreKey(Box::new(PreKeyMessage {
                sender,
                setup: Setup { base_key, signed_prekey_id, one_time_prekey_id },
                inner,
            })))
        }
        got => Err(CryptoError::WrongKind { what: "message", expected: kind::MESSAGE, got }),
    }
}

/// Writes the prekey-message prefix that precedes the inner ratchet message.
pub(crate) fn write_prekey_prefix(out: &mut Vec<u8>, sender: &DeviceCertificate, setup: &Setup) {
    out.push(VERSION);
    out.push(kind::PREKEY_MESSAGE);
    sender.write_body(out);
    out.extend_from_slice(setup.base_key.as_bytes());
    out.extend_from_slice(&setup.signed_prekey_id.to_be_bytes());
    crate::codec::put_opt_u32(out, setup.one_time_prekey_id);
}

/// What can be learned from a message without decrypting it; see
/// [`inspect`].
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageInfo {
    /// A prekey message: it can start a new session (see
    /// [`Session::respond`](crate::Session::respond)) or belong to one
    /// started by an earlier prekey message with the same base key.
    PreKey(Box<PreKeyMessageInfo>),
    /// An ordinary ratchet message for an existing session.
    Ratchet {
        /// The sender's current ratchet public key.
        ratchet_key: [u8; 32],
        /// The length of the sender's previous sending chain (`PN`).
        previous_counter: u32,
        /// The message's number in its sending chain.
        counter: u32,
    },
}

impl core::fmt::Debug for MessageInfo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::PreKey(info) => f.debug_tuple("PreKey").field(info).finish(),
            Self::Ratchet { ratchet_key, previous_counter, counter } => f
                .debug_struct("Ratchet")
                .field("ratchet_key", &crate::codec::Hex(ratchet_key))
                .field("previous_counter", previous_counter)
                .field("counter", counter)
                .finish(),
        }
    }
}

impl MessageInfo {
    /// Whether this is a prekey message.
    pub fn is_prekey(&self) -> bool {
        matches!(self, Self::PreKey(_))
    }

    /// The sender's device identity, which only prekey messages carry.
    pub fn sender(&self) -> Option<&PublicIdentity> {
        match self {
            Self::PreKey(info) => Some(info.sender.device()),
            Self::Ratchet { .. } => None,
        }
    }
}

/// The unauthenticated session-setup fields of a prekey message.
///
/// The sender's certificate and identity binding have been checked (they are
/// self-consistent), but nothing proves yet that the sender holds its keys:
/// that is proven only when the message decrypts. Whether the certificate's
/// user key is the one trusted for the sender is for the caller to check
/// ([`DeviceCertificate::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreKeyMessageInfo {
    sender: DeviceCertificate,
    setup: Setup,
    ratchet_key: DhPublic,
    counter: u32,
}

impl PreKeyMessageInfo {
    /// The device identity the message claims to come from.
    pub fn sender(&self) -> &PublicIdentity {
        self.sender.device()
    }

    /// The certificate the sending device presents: its user, device id and the
    /// user identity that vouches for it.
    pub fn certificate(&self) -> &DeviceCertificate {
        &self.sender
    }

    /// The sender's first ratchet public key (that of the enclosed message).
    pub fn ratchet_key(&self) -> [u8; 32] {
        *self.ratchet_key.as_bytes()
    }

    /// The sender's ephemeral ("base") key, which identifies the session
    /// setup: every prekey message of one session carries the same one.
    pub fn base_key(&self) -> [u8; 32] {
        *self.setup.base_key.as_bytes()
    }

    /// The id of the recipient's signed prekey the sender used.
    pub fn signed_prekey_id(&self) -> u32 {
        self.setup.signed_prekey_id
    }

    /// The id of the recipient's one-time prekey the sender used, if any:
    /// look it up, pass it to [`Session::respond`](crate::Session::respond),
    /// and delete it once that succeeds.
    pub fn one_time_prekey_id(&self) -> Option<u32> {
        self.setup.one_time_prekey_id
    }

    /// The number of the enclosed message in the sender's first chain.
    pub fn counter(&self) -> u32 {
        self.counter
    }

    pub(crate) fn setup(&self) -> &Setup {
        &self.setup
    }
}

/// Whether `bytes` look like a prekey message (version and kind bytes only;
/// nothing is verified). Use [`inspect`] for the sender and prekey ids.
pub fn is_prekey_message(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == VERSION && bytes[1] == kind::PREKEY_MESSAGE
}

/// Reads a message's kind and plaintext fields without decrypting it, so a
/// receiver can tell whether it is a prekey message, from which identity,
/// and which prekeys it needs. Costs one signature check for prekey
/// messages and nothing for others.
///
/// # Errors
/// Decoding errors ([`CryptoError::Truncated`],
/// [`CryptoError::UnsupportedVersion`], [`CryptoError::WrongKind`],
/// [`CryptoError::NonCanonicalKey`], ...) and
/// [`CryptoError::BadIdentityBinding`] or
/// [`CryptoError::BadCertificateSignature`] for a prekey message whose sender
/// identity or certificate is not self-consistent.
pub fn inspect(bytes: &[u8]) -> Result<MessageInfo> {
    Ok(match parse(bytes)? {
        Wire::Ratchet(m) => MessageInfo::Ratchet {
            ratchet_key: *m.header.ratchet_key.as_bytes(),
            previous_counter: m.header.previous_counter,
            counter: m.header.counter,
        },
        Wire::PreKey(p) => {
            let PreKeyMessage { sender, setup, inner } = *p;
            MessageInfo::PreKey(Box::new(PreKeyMessageInfo {
                sender,
                setup,
                ratchet_key: inner.header.ratchet_key,
                counter: inner.header.counter,
            }))
        }
    })
}
