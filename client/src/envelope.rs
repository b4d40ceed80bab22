//! The end-to-end encrypted envelope: what an encrypting client puts in a message's `message`
//! field, and what it encrypts.
//!
//! The node stores and relays the field unchanged. An envelope is JSON (specified in
//! `docs/crypto.md`, section "The message envelope"):
//!
//! ```json
//! {"v":2,"kind":"kith.e2ee","from":{"deviceId":42},
//!  "to":[{"userId":"bob@kith.example","deviceId":7,"body":"AgI…"}]}
//! ```
//!
//! with one `to` entry per device that should read the message: every device of the receiver
//! and every other device of the sender. Each `body` is standard base64 (with padding) of the
//! `kith-crypto` wire bytes encrypted for that device; what is encrypted is a [`Payload`]. A
//! control envelope (`"control":true`, one entry) announces a new session to one device and is
//! not shown. A link message, `{"v":2,"kind":"kith.link","body":"…"}`, carries a
//! `kith-crypto` link request or response between two devices of one account.
//!
//! Decoding never panics on untrusted text and caps every size.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kith_proto::limits::{MAX_DEVICES, MAX_MESSAGE_BYTES};
use kith_proto::{DeviceId, UserId};
use serde::{Deserialize, Serialize};

/// The envelope format version this library writes and reads (end-to-end protocol version 2).
pub const ENVELOPE_VERSION: u32 = 2;

/// The `kind` that marks a `message` field as an envelope.
pub const ENVELOPE_KIND: &str = "kith.e2ee";

/// The `kind` of a link message (see [`Content::Link`]).
pub const LINK_KIND: &str = "kith.link";

/// Most `to` entries an envelope may carry: every device of the receiver plus every other
/// device of the sender.
pub const MAX_RECIPIENTS: usize = 2 * MAX_DEVICES;

/// Why a `message` field that claims to be an envelope cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// It is marked as an envelope but does not have the documented shape.
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// It was written by a client of end-to-end protocol version 1, which this client no
    /// longer reads (it had no user identities).
    #[error(
        "sent by a client that speaks end-to-end protocol version {got}, which this client no longer reads; the sender must update"
    )]
    Outdated {
        /// The version found.
        got: u64,
    },
    /// It was written by a newer client.
    #[error("envelope version {got} is not supported (this client reads version {supported})")]
    UnsupportedVersion {
        /// The version found.
        got: u64,
        /// The version this client reads.
        supported: u32,
    },
    /// More recipients than any valid envelope has.
    #[error("envelope has {got} recipients; the limit is {max}")]
    TooManyRecipients {
        /// How many it has.
        got: usize,
        /// [`MAX_RECIPIENTS`].
        max: usize,
    },
    /// The same device is named twice.
    #[error("envelope names device {device} of {user} twice")]
    DuplicateRecipient {
        /// Whose device.
        user: UserId,
        /// Which.
        device: DeviceId,
    },
    /// A body is not base64.
    #[error("envelope body for device {device} of {user} is not base64: {reason}")]
    BadBody {
        /// Whose device.
        user: UserId,
        /// Which.
        device: DeviceId,
        /// The decoder's complaint.
        reason: String,
    },
    /// The encoded envelope would not fit in a message.
    #[error("the encrypted message is {got} bytes for {recipients} devices; the limit is {max}")]
    TooLarge {
        /// Its size.
        got: usize,
        /// How many devices it was encrypted for.
        recipients: usize,
        /// [`MAX_MESSAGE_BYTES`].
        max: usize,
    },
    /// The decrypted payload is not the documented JSON.
    #[error("malformed payload: {0}")]
    BadPayload(String),
}

/// One device's copy of the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Whose device.
    pub user_id: UserId,
    /// Which device.
    pub device_id: DeviceId,
    /// The `kith-crypto` wire bytes for that device.
    pub body: Vec<u8>,
}

/// A decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The sending device (of the message's sender).
    pub from_device: DeviceId,
    /// One copy per reading device.
    pub to: Vec<Recipient>,
    /// A control envelope (a new session announced to one device), not shown. The flag is not
    /// authenticated: it only lets devices without a copy skip it quietly; what a copy holds
    /// is decided by its payload.
    pub control: bool,
}

/// What a `message` field turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// An end-to-end encrypted envelope.
    Encrypted(Envelope),
    /// A link message: the `kith-crypto` bytes of a link request or response, for the device
    /// of this account that is linking (others ignore it).
    Link(Vec<u8>),
    /// Anything else: a message from a client that does not encrypt, shown marked as such.
    Plain(String),
}

#[derive(Serialize, Deserialize)]
struct WireEnvelope {
    v: u64,
    kind: String,
    from: WireFrom,
    to: Vec<WireRecipient>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    control: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFrom {
    device_id: DeviceId,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRecipient {
    user_id: UserId,
    device_id: DeviceId,
    body: String,
}

#[derive(Serialize, Deserialize)]
struct WireLink {
    v: u64,
    kind: String,
    body: String,
}

/// Just enough to tell an envelope from other text.
#[derive(Deserialize)]
struct Probe {
    kind: Option<serde_json::Value>,
    v: Option<serde_json::Value>,
}

impl Envelope {
    /// Encodes the envelope as the JSON text of a `message` field.
    ///
    /// # Errors
    /// [`EnvelopeError::TooLarge`] when the text would exceed [`MAX_MESSAGE_BYTES`];
    /// [`EnvelopeError::TooManyRecipients`] past [`MAX_RECIPIENTS`].
    pub fn encode(&self) -> Result<String, EnvelopeError> {
        if self.to.len() > MAX_RECIPIENTS {
            return Err(EnvelopeError::TooManyRecipients { got: self.to.len(), max: MAX_RECIPIENTS });
        }
        let wire = WireEnvelope {
            v: ENVELOPE_VERSION.into(),
            kind: ENVELOPE_KIND.into(),
            from: WireFrom { device_id: self.from_device },
            to: self
                .to
                .iter()
                .map(|r| WireRecipient {
                    user_id: r.user_id.clone(),
                    device_id: r.device_id,
                    body: BASE64.encode(&r.body),
                })
                .collect(),
            control: self.control,
        };
        let text = serde_json::to_string(&wire).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(EnvelopeError::TooLarge { got: text.len(), recipients: self.to.len(), max: MAX_MESSAGE_BYTES });
        }
        Ok(text)
    }

    /// The copy for `user`'s `device`, if the envelope has one.
    pub fn body_for(&self, user: &UserId, device: DeviceId) -> Option<&[u8]> {
        self.to.iter().find(|r| &r.user_id == user && r.device_id == device).map(|r| r.body.as_slice())
    }
}

/// Encodes a link message (request or response bytes) as the JSON text of a `message` field.
///
/// # Errors
/// Never in practice; serialisation of these fields cannot fail.
pub fn encode_link(bytes: &[u8]) -> Result<String, EnvelopeError> {
    let wire = WireLink { v: ENVELOPE_VERSION.into(), kind: LINK_KIND.into(), body: BASE64.encode(bytes) };
    serde_json::to_string(&wire).map_err(|e| EnvelopeError::Malformed(e.to_string()))
}

/// Reads a `message` field: an envelope when it is a JSON object whose `kind` is
/// [`ENVELOPE_KIND`], a link message when it is [`LINK_KIND`], plain text otherwise.
///
/// # Errors
/// For text marked as an envelope that is not a valid one (version, shape, sizes, base64).
pub fn decode(message: &str) -> Result<Content, EnvelopeError> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(EnvelopeError::TooLarge { got: message.len(), recipients: 0, max: MAX_MESSAGE_BYTES });
    }
    let probe = match serde_json::from_str::<Probe>(message) {
        Ok(probe) => probe,
        Err(_) => return Ok(Content::Plain(message.to_owned())),
    };
    let kind = probe.kind.as_ref().and_then(serde_json::Value::as_str);
    if kind != Some(ENVELOPE_KIND) && kind != Some(LINK_KIND) {
        return Ok(Content::Plain(message.to_owned()));
    }
    match probe.v.as_ref().and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(ENVELOPE_VERSION) => {}
        Some(got) if got < u64::from(ENVELOPE_VERSION) => return Err(EnvelopeError::Outdated { got }),
        Some(got) => return Err(EnvelopeError::UnsupportedVersion { got, supported: ENVELOPE_VERSION }),
        None => return Err(EnvelopeError::Malformed("\"v\" must be a number".into())),
    }
    if kind == Some(LINK_KIND) {
        let wire: WireLink = serde_json::from_str(message).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        let body = BASE64.decode(wire.body.as_bytes()).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        return Ok(Content::Link(body));
    }
    let wire: WireEnvelope = serde_json::from_str(message).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    if wire.to.len() > MAX_RECIPIENTS {
        return Err(EnvelopeError::TooManyRecipients { got: wire.to.len(), max: MAX_RECIPIENTS });
    }
    let mut to: Vec<Recipient> = Vec::with_capacity(wire.to.len());
    for r in wire.to {
        if to.iter().any(|seen| seen.user_id == r.user_id && seen.device_id == r.device_id) {
            return Err(EnvelopeError::DuplicateRecipient { user: r.user_id, device: r.device_id });
        }
        let body = BASE64.decode(r.body.as_bytes()).map_err(|e| EnvelopeError::BadBody {
            user: r.user_id.clone(),
            device: r.device_id,
            reason: e.to_string(),
        })?;
        to.push(Recipient { user_id: r.user_id, device_id: r.device_id, body });
    }
    Ok(Content::Encrypted(Envelope { from_device: wire.from.device_id, to, control: wire.control }))
}

/// What is encrypted for each device: the conversation it belongs to (so that a server cannot
/// present a message as sent to someone else) and either a text or a control instruction.
///
/// JSON: `{"to":"bob@kith.example","text":"hello"}` or
/// `{"to":"bob@kith.example","control":"session-reset"}`; readers ignore unknown fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The user the message was written to (the conversation partner of the sender).
    pub to: UserId,
    /// What it holds.
    pub body: PayloadBody,
}

/// What a [`Payload`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadBody {
    /// A message.
    Text(String),
    /// An instruction between devices, never shown.
    Control(Control),
}

/// An instruction between devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// "My session with you could not decrypt your messages; this message starts a new one":
    /// the receiver accepts it and writes in it from then on.
    #[serde(rename = "session-reset")]
    SessionReset,
}

#[derive(Serialize, Deserialize)]
struct WirePayload {
    to: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    control: Option<Control>,
}

impl Payload {
    /// A payload holding `text`.
    pub fn text(to: &UserId, text: &str) -> Self {
        Self { to: to.clone(), body: PayloadBody::Text(text.to_owned()) }
    }

    /// The UTF-8 JSON bytes that get encrypted.
    ///
    /// # Errors
    /// Never in practice; serialisation of these fields cannot fail.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EnvelopeError> {
        let (text, control) = match &self.body {
            PayloadBody::Text(text) => (Some(text.clone()), None),
            PayloadBody::Control(control) => (None, Some(*control)),
        };
        serde_json::to_vec(&WirePayload { to: self.to.clone(), text, control })
            .map_err(|e| EnvelopeError::BadPayload(e.to_string()))
    }

    /// Reads decrypted bytes.
    ///
    /// # Errors
    /// [`EnvelopeError::BadPayload`] when they are not the documented JSON (exactly one of
    /// `text` and `control`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let wire: WirePayload = serde_json::from_slice(bytes).map_err(|e| EnvelopeError::BadPayload(e.to_string()))?;
        let body = match (wire.text, wire.control) {
            (Some(text), None) => PayloadBody::Text(text),
            (None, Some(control)) => PayloadBody::Control(control),
            _ => return Err(EnvelopeError::BadPayload("exactly one of \"text\" and \"control\" must be given".into())),
        };
        Ok(Self { to: wire.to, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    fn sample() -> Envelope {
        Envelope {
            from_device: DeviceId(42),
            to: vec![
                Recipient { user_id: user("bob@test"), device_id: DeviceId(7), body: vec![1, 2, 3, 255] },
                Recipient { user_id: user("alice@test"), device_id: DeviceId(9), body: vec![0; 40] },
            ],
            control: false,
        }
    }

    #[test]
    fn envelopes_round_trip_through_the_documented_json() {
        let text = sample().encode().unwrap();
        assert!(
            text.starts_with(r#"{"v":2,"kind":"kith.e2ee","from":{"deviceId":42},"to":[{"userId":"bob@test","deviceId":7,"body":"AQID/w=="}"#),
            "{text}"
        );
        assert!(!text.contains("control"), "{text}");
        assert_eq!(decode(&text).unwrap(), Content::Encrypted(sample()));
        let envelope = sample();
        assert_eq!(envelope.body_for(&user("bob@test"), DeviceId(7)), Some(&[1u8, 2, 3, 255][..]));
        assert_eq!(envelope.body_for(&user("bob@test"), DeviceId(8)), None);
        let control = Envelope { control: true, ..sample() };
        let text = control.encode().unwrap();
        assert!(text.ends_with(r#"],"control":true}"#), "{text}");
        assert_eq!(decode(&text).unwrap(), Content::Encrypted(control));
    }

    #[test]
    fn link_messages_are_their_own_kind() {
        let text = encode_link(&[2, 0x34, 9]).unwrap();
        assert_eq!(text, r#"{"v":2,"kind":"kith.link","body":"AjQJ"}"#);
        assert_eq!(decode(&text).unwrap(), Content::Link(vec![2, 0x34, 9]));
        assert!(decode(r#"{"v":2,"kind":"kith.link","body":"!"}"#).is_err());
    }

    #[test]
    fn anything_not_marked_as_an_envelope_is_plain_text() {
        for plain in ["hi bob", "", "{", "[1,2]", "42", r#"{"kind":"other"}"#, r#"{"text":"hi"}"#, "null"] {
            assert_eq!(decode(plain).unwrap(), Content::Plain(plain.into()), "{plain}");
        }
    }

    #[test]
    fn broken_envelopes_are_errors_not_panics() {
        let cases = [
            (r#"{"kind":"kith.e2ee"}"#, "malformed"),
            (r#"{"v":3,"kind":"kith.e2ee","from":{"deviceId":1},"to":[]}"#, "version"),
            (r#"{"v":1,"kind":"kith.e2ee","from":{"deviceId":1},"to":[]}"#, "protocol version 1"),
            (r#"{"v":"2","kind":"kith.e2ee","from":{"deviceId":1},"to":[]}"#, "malformed"),
            (r#"{"v":2,"kind":"kith.e2ee","from":{},"to":[]}"#, "malformed"),
            (r#"{"v":2,"kind":"kith.e2ee","from":{"deviceId":-1},"to":[]}"#, "malformed"),
            (
                r#"{"v":2,"kind":"kith.e2ee","from":{"deviceId":1},"to":[{"userId":"nope","deviceId":1,"body":""}]}"#,
                "malformed",
            ),
            (
                r#"{"v":2,"kind":"kith.e2ee","from":{"deviceId":1},"to":[{"userId":"a@b","deviceId":1,"body":"!!"}]}"#,
                "base64",
            ),
            (
                r#"{"v":2,"kind":"kith.e2ee","from":{"deviceId":1},"to":[{"userId":"a@b","deviceId":1,"body":""},{"userId":"a@b","deviceId":1,"body":""}]}"#,
                "twice",
            ),
        ];
        for (text, expect) in cases {
            let err = decode(text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text}: {err}");
        }
        let many: Vec<String> =
            (0..=MAX_RECIPIENTS).map(|i| format!(r#"{{"userId":"a@b","deviceId":{i},"body":""}}"#)).collect();
        let text = format!(r#"{{"v":2,"kind":"kith.e2ee","from":{{"deviceId":1}},"to":[{}]}}"#, many.join(","));
        assert!(matches!(decode(&text), Err(EnvelopeError::TooManyRecipients { .. })));
    }

    #[test]
    fn an_envelope_too_large_for_a_message_is_refused_before_sending() {
        let mut envelope = sample();
        envelope.to[0].body = vec![7; MAX_MESSAGE_BYTES];
        assert!(matches!(envelope.encode(), Err(EnvelopeError::TooLarge { recipients: 2, .. })));
    }

    #[test]
    fn payloads_bind_the_conversation() {
        let payload = Payload::text(&user("bob@test"), "hi \u{1f44b}");
        let bytes = payload.to_bytes().unwrap();
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), "{\"to\":\"bob@test\",\"text\":\"hi \u{1f44b}\"}");
        assert_eq!(Payload::from_bytes(&bytes).unwrap(), payload);
        let control = Payload { to: user("bob@test"), body: PayloadBody::Control(Control::SessionReset) };
        let bytes = control.to_bytes().unwrap();
        assert_eq!(bytes, br#"{"to":"bob@test","control":"session-reset"}"#);
        assert_eq!(Payload::from_bytes(&bytes).unwrap(), control);
        assert!(matches!(Payload::from_bytes(b"hi"), Err(EnvelopeError::BadPayload(_))));
        assert!(matches!(Payload::from_bytes(br#"{"to":"bad","text":"x"}"#), Err(EnvelopeError::BadPayload(_))));
        assert!(Payload::from_bytes(br#"{"to":"a@b"}"#).is_err());
        assert!(Payload::from_bytes(br#"{"to":"a@b","text":"x","control":"session-reset"}"#).is_err());
    }
}
