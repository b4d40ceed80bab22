//! The end-to-end encrypted envelope: what an encrypting client puts in a message's `message`
//! field, and what it encrypts.
//!
//! The node stores and relays the field unchanged. An envelope is JSON (specified in
//! `docs/crypto.md`, section "The message envelope"):
//!
//! ```json
//! {"v":1,"kind":"kith.e2ee","from":{"deviceId":42},
//!  "to":[{"userId":"bob@kith.example","deviceId":7,"body":"AQI…"}]}
//! ```
//!
//! with one `to` entry per device that should read the message: every device of the receiver
//! and every other device of the sender. Each `body` is standard base64 (with padding) of the
//! `kith-crypto` wire bytes encrypted for that device; what is encrypted is a [`Payload`].
//!
//! Decoding never panics on untrusted text and caps every size.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kith_proto::limits::{MAX_DEVICES, MAX_MESSAGE_BYTES};
use kith_proto::{DeviceId, UserId};
use serde::{Deserialize, Serialize};

/// The envelope format version this library writes and reads.
pub const ENVELOPE_VERSION: u32 = 1;

/// The `kind` that marks a `message` field as an envelope.
pub const ENVELOPE_KIND: &str = "kith.e2ee";

/// Most `to` entries an envelope may carry: every device of the receiver plus every other
/// device of the sender.
pub const MAX_RECIPIENTS: usize = 2 * MAX_DEVICES;

/// Why a `message` field that claims to be an envelope cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// It is marked as an envelope but does not have the documented shape.
    #[error("malformed envelope: {0}")]
    Malformed(String),
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
}

/// What a `message` field turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// An end-to-end encrypted envelope.
    Encrypted(Envelope),
    /// Anything else: a message from a client that does not encrypt, shown marked as such.
    Plain(String),
}

#[derive(Serialize, Deserialize)]
struct WireEnvelope {
    v: u64,
    kind: String,
    from: WireFrom,
    to: Vec<WireRecipient>,
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

/// Reads a `message` field: an envelope when it is a JSON object whose `kind` is
/// [`ENVELOPE_KIND`], plain text otherwise.
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
    if probe.kind.as_ref().and_then(serde_json::Value::as_str) != Some(ENVELOPE_KIND) {
        return Ok(Content::Plain(message.to_owned()));
    }
    match probe.v.as_ref().and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(ENVELOPE_VERSION) => {}
        Some(got) => return Err(EnvelopeError::UnsupportedVersion { got, supported: ENVELOPE_VERSION }),
        None => return Err(EnvelopeError::Malformed("\"v\" must be a number".into())),
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
    Ok(Content::Encrypted(Envelope { from_device: wire.from.device_id, to }))
}

/// What is encrypted for each device: the text, and the conversation it belongs to, so that a
/// server cannot present a message as sent to someone else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// The user the message was written to (the conversation partner of the sender).
    pub to: UserId,
    /// The message.
    pub text: String,
}

impl Payload {
    /// The UTF-8 JSON bytes that get encrypted.
    ///
    /// # Errors
    /// Never in practice; serialisation of these fields cannot fail.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EnvelopeError> {
        serde_json::to_vec(self).map_err(|e| EnvelopeError::BadPayload(e.to_string()))
    }

    /// Reads decrypted bytes.
    ///
    /// # Errors
    /// [`EnvelopeError::BadPayload`] when they are not the documented JSON.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError::BadPayload(e.to_string()))
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
        }
    }

    #[test]
    fn envelopes_round_trip_through_the_documented_json() {
        let text = sample().encode().unwrap();
        assert!(
            text.starts_with(r#"{"v":1,"kind":"kith.e2ee","from":{"deviceId":42},"to":[{"userId":"bob@test","deviceId":7,"body":"AQID/w=="}"#),
            "{text}"
        );
        assert_eq!(decode(&text).unwrap(), Content::Encrypted(sample()));
        let envelope = sample();
        assert_eq!(envelope.body_for(&user("bob@test"), DeviceId(7)), Some(&[1u8, 2, 3, 255][..]));
        assert_eq!(envelope.body_for(&user("bob@test"), DeviceId(8)), None);
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
            (r#"{"v":2,"kind":"kith.e2ee","from":{"deviceId":1},"to":[]}"#, "version"),
            (r#"{"v":"1","kind":"kith.e2ee","from":{"deviceId":1},"to":[]}"#, "malformed"),
            (r#"{"v":1,"kind":"kith.e2ee","from":{},"to":[]}"#, "malformed"),
            (r#"{"v":1,"kind":"kith.e2ee","from":{"deviceId":-1},"to":[]}"#, "malformed"),
            (
                r#"{"v":1,"kind":"kith.e2ee","from":{"deviceId":1},"to":[{"userId":"nope","deviceId":1,"body":""}]}"#,
                "malformed",
            ),
            (
                r#"{"v":1,"kind":"kith.e2ee","from":{"deviceId":1},"to":[{"userId":"a@b","deviceId":1,"body":"!!"}]}"#,
                "base64",
            ),
            (
                r#"{"v":1,"kind":"kith.e2ee","from":{"deviceId":1},"to":[{"userId":"a@b","deviceId":1,"body":""},{"userId":"a@b","deviceId":1,"body":""}]}"#,
                "twice",
            ),
        ];
        for (text, expect) in cases {
            let err = decode(text).unwrap_err().to_string();
            assert!(err.contains(expect), "{text}: {err}");
        }
        let many: Vec<String> =
            (0..=MAX_RECIPIENTS).map(|i| format!(r#"{{"userId":"a@b","deviceId":{i},"body":""}}"#)).collect();
        let text = format!(r#"{{"v":1,"kind":"kith.e2ee","from":{{"deviceId":1}},"to":[{}]}}"#, many.join(","));
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
        let payload = Payload { to: user("bob@test"), text: "hi \u{1f44b}".into() };
        let bytes = payload.to_bytes().unwrap();
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), "{\"to\":\"bob@test\",\"text\":\"hi \u{1f44b}\"}");
        assert_eq!(Payload::from_bytes(&bytes).unwrap(), payload);
        assert!(matches!(Payload::from_bytes(b"hi"), Err(EnvelopeError::BadPayload(_))));
        assert!(matches!(Payload::from_bytes(br#"{"to":"bad","text":"x"}"#), Err(EnvelopeError::BadPayload(_))));
    }
}
