//! Envelopes: what one node sends another. Each is signed by its origin over a canonical
//! encoding of everything else, carries an id that makes redelivery idempotent, and is only
//! acted on as a [`VerifiedEnvelope`], which only [`Verifier::verify`] builds.

use std::time::Duration;

use kith_proto::keys::KeyBundles;
use kith_proto::limits::MAX_MESSAGE_BYTES;
use kith_proto::{MessageId, MessageStatus, PresenceStatus, ServerName, Timestamp, UserId};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::error::FederationError;
use crate::identity::NodeKey;
use crate::peers::{Directory, PinnedPeer};

/// Domain separation for envelope signatures.
const SIGNATURE_CONTEXT: &[u8] = b"kith-envelope-v1\0";

/// What an envelope asks of its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A message for a user of the destination.
    #[serde(rename = "message")]
    Message,
    /// A receipt for a message a user of the destination sent.
    #[serde(rename = "receipt")]
    Receipt,
    /// A user's presence, for the destination's watchers.
    #[serde(rename = "presence")]
    Presence,
    /// The origin has users watching these users of the destination.
    #[serde(rename = "presence.subscribe")]
    PresenceSubscribe,
    /// A user of the origin wants key bundles of a user of the destination.
    #[serde(rename = "keys.claim")]
    KeysClaim,
    /// The answer to `keys.claim`.
    #[serde(rename = "keys.bundles")]
    KeysBundles,
}

impl Kind {
    /// The kind with this name.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Message, Self::Receipt, Self::Presence, Self::PresenceSubscribe, Self::KeysClaim, Self::KeysBundles]
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// The name signed over and shown in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Receipt => "receipt",
            Self::Presence => "presence",
            Self::PresenceSubscribe => "presence.subscribe",
            Self::KeysClaim => "keys.claim",
            Self::KeysBundles => "keys.bundles",
        }
    }
}

/// `message`: a message from a user of the origin to a user of the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageBody {
    /// Minted by the origin; the same in both mailboxes.
    pub message_id: MessageId,
    /// A user of the origin.
    pub sender_id: UserId,
    /// A user of the destination.
    pub receiver_id: UserId,
    /// The content, unchanged.
    pub message: String,
    /// When the origin stored it.
    pub timestamp: Timestamp,
}

/// `receipt`: the receiver (a user of the origin) has the message or has read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptBody {
    /// The message.
    pub message_id: MessageId,
    /// Who sent it: a user of the destination.
    pub sender_id: UserId,
    /// Who received it: a user of the origin.
    pub receiver_id: UserId,
    /// `delivered` or `read`.
    pub status: MessageStatus,
    /// When.
    pub at: Timestamp,
}

/// `presence`: a user of the origin came online or went offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceBody {
    /// A user of the origin.
    pub user_id: UserId,
    /// Online or offline.
    pub status: PresenceStatus,
    /// When they were last seen.
    pub last_seen: Option<Timestamp>,
    /// When the origin observed this state: older news is ignored.
    pub at: Timestamp,
    /// The users of the destination the user shares their presence with (their contacts
    /// there, under the `contacts` setting; none under `nobody`); absent for everyone. The
    /// destination shows the presence only to these and `unknown` to its other users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Vec<UserId>>,
}

/// `presence.subscribe`: the origin has users watching these users of the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceSubscribeBody {
    /// Users of the destination.
    pub user_ids: Vec<UserId>,
}

/// `keys.claim`: a user of the origin starts sessions with a user of the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeysClaimBody {
    /// Who asks (rate limits apply per requester): a user of the origin.
    pub requester_id: UserId,
    /// Whose bundles: a user of the destination.
    pub user_id: UserId,
    /// Whether to claim one one-time prekey per device (to start sessions) or none (to list
    /// devices).
    #[serde(default = "claim_one_time")]
    pub one_time: bool,
}

fn claim_one_time() -> bool {
    true
}

/// What a verified envelope carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// See [`MessageBody`].
    Message(MessageBody),
    /// See [`ReceiptBody`].
    Receipt(ReceiptBody),
    /// See [`PresenceBody`].
    Presence(PresenceBody),
    /// See [`PresenceSubscribeBody`].
    PresenceSubscribe(PresenceSubscribeBody),
    /// See [`KeysClaimBody`].
    KeysClaim(KeysClaimBody),
    /// The bundles of a user of the origin.
    KeysBundles(KeyBundles),
}

impl Payload {
    /// The kind this payload travels as.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Message(_) => Kind::Message,
            Self::Receipt(_) => Kind::Receipt,
            Self::Presence(_) => Kind::Presence,
            Self::PresenceSubscribe(_) => Kind::PresenceSubscribe,
            Self::KeysClaim(_) => Kind::KeysClaim,
            Self::KeysBundles(_) => Kind::KeysBundles,
        }
    }

    /// The body as it travels (JSON).
    ///
    /// # Errors
    /// Never in practice: the bodies are plain data.
    pub fn encode(&self) -> Result<Vec<u8>, FederationError> {
        let encoded = match self {
            Self::Message(b) => serde_json::to_vec(b),
            Self::Receipt(b) => serde_json::to_vec(b),
            Self::Presence(b) => serde_json::to_vec(b),
            Self::PresenceSubscribe(b) => serde_json::to_vec(b),
            Self::KeysClaim(b) => serde_json::to_vec(b),
            Self::KeysBundles(b) => serde_json::to_vec(b),
        };
        encoded.map_err(|e| FederationError::Signing(format!("encoding {} body: {e}", self.kind().as_str())))
    }

    fn decode(kind: Kind, body: &[u8]) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            Kind::Message => Self::Message(serde_json::from_slice(body)?),
            Kind::Receipt => Self::Receipt(serde_json::from_slice(body)?),
            Kind::Presence => Self::Presence(serde_json::from_slice(body)?),
            Kind::PresenceSubscribe => Self::PresenceSubscribe(serde_json::from_slice(body)?),
            Kind::KeysClaim => Self::KeysClaim(serde_json::from_slice(body)?),
            Kind::KeysBundles => Self::KeysBundles(serde_json::from_slice(body)?),
        })
    }

    /// The users this payload speaks for (must be users of the origin) and the users it
    /// addresses (must be users of the destination).
    fn parties(&self) -> (Vec<&UserId>, Vec<&UserId>) {
        match self {
            Self::Message(b) => (vec![&b.sender_id], vec![&b.receiver_id]),
            Self::Receipt(b) => (vec![&b.receiver_id], vec![&b.sender_id]),
            Self::Presence(b) => (vec![&b.user_id], vec![]),
            Self::PresenceSubscribe(b) => (vec![], b.user_ids.iter().collect()),
            Self::KeysClaim(b) => (vec![&b.requester_id], vec![&b.user_id]),
            Self::KeysBundles(b) => (vec![&b.user_id], vec![]),
        }
    }
}

/// An envelope as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Unique per origin; a repeat of an id is the same envelope.
    pub id: String,
    /// The sending node's server name.
    pub origin: String,
    /// The receiving node's server name.
    pub destination: String,
    /// What it is.
    pub kind: Kind,
    /// The JSON body of that kind.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// When the origin signed it (milliseconds since the Unix epoch); resends are re-signed.
    pub sent_at: i64,
    /// The origin's ed25519 signature over [`Envelope::signed_bytes`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl Envelope {
    /// Builds and signs an envelope.
    ///
    /// # Errors
    /// When the body cannot be encoded or signing fails (neither happens in practice).
    pub fn seal(
        key: &NodeKey,
        id: &str,
        origin: &ServerName,
        destination: &ServerName,
        payload: &Payload,
        sent_at: Timestamp,
    ) -> Result<Self, FederationError> {
        Self::seal_encoded(key, id, origin, destination, payload.kind(), payload.encode()?, sent_at)
    }

    /// Builds and signs an envelope around a body encoded earlier (as an outbox keeps it).
    ///
    /// # Errors
    /// When signing fails (never in practice).
    pub fn seal_encoded(
        key: &NodeKey,
        id: &str,
        origin: &ServerName,
        destination: &ServerName,
        kind: Kind,
        body: Vec<u8>,
        sent_at: Timestamp,
    ) -> Result<Self, FederationError> {
        let mut envelope = Self::unsigned(id, origin, destination, kind, body, sent_at);
        envelope.signature = key.sign(&envelope.signed_bytes())?;
        Ok(envelope)
    }

    /// Builds an envelope without a signature of its own, to travel in a
    /// [`SealedBatch`](crate::batch::SealedBatch), whose one signature covers it.
    pub fn unsigned(
        id: &str,
        origin: &ServerName,
        destination: &ServerName,
        kind: Kind,
        body: Vec<u8>,
        sent_at: Timestamp,
    ) -> Self {
        Self {
            id: id.to_owned(),
            origin: origin.to_string(),
            destination: destination.to_string(),
            kind,
            body,
            sent_at: sent_at.as_millis(),
            signature: Vec::new(),
        }
    }

    /// The canonical encoding the signature covers: a context string, then every field but
    /// the signature, each length-prefixed (u32 big-endian), then `sentAt` as i64 big-endian.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let fields: [&[u8]; 5] = [
            self.id.as_bytes(),
            self.origin.as_bytes(),
            self.destination.as_bytes(),
            self.kind.as_str().as_bytes(),
            &self.body,
        ];
        let mut bytes =
            Vec::with_capacity(SIGNATURE_CONTEXT.len() + fields.iter().map(|f| f.len() + 4).sum::<usize>() + 8);
        bytes.extend_from_slice(SIGNATURE_CONTEXT);
        for field in fields {
            bytes.extend_from_slice(&u32::try_from(field.len()).unwrap_or(u32::MAX).to_be_bytes());
            bytes.extend_from_slice(field);
        }
        bytes.extend_from_slice(&self.sent_at.to_be_bytes());
        bytes
    }
}

/// An envelope whose signature, origin, destination, time and parties have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEnvelope {
    id: String,
    origin: ServerName,
    payload: Payload,
}

impl VerifiedEnvelope {
    /// The envelope id (unique per origin).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The node that sent it.
    pub fn origin(&self) -> &ServerName {
        &self.origin
    }

    /// What it carries.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// Takes the payload.
    pub fn into_payload(self) -> Payload {
        self.payload
    }
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The origin is not a pinned peer.
    #[error("origin {0} is not a configured peer")]
    UnknownOrigin(String),
    /// The connection it came on is not the origin's pinned peer.
    #[error("envelope from {origin} arrived from another peer")]
    WrongPeer {
        /// The claimed origin.
        origin: String,
    },
    /// The signature does not verify with the origin's pinned key.
    #[error("signature does not verify with {0}'s key")]
    BadSignature(String),
    /// The envelope is for another node.
    #[error("destination {0} is not this node")]
    WrongDestination(String),
    /// `sentAt` is outside the replay window.
    #[error("sentAt is {skew_ms} ms from now; the window is ±{window_ms} ms")]
    OutsideWindow {
        /// How far off.
        skew_ms: i64,
        /// The window.
        window_ms: i64,
    },
    /// The body does not decode as its kind.
    #[error("body is not a valid {kind}: {reason}")]
    BadBody {
        /// The kind.
        kind: &'static str,
        /// Why.
        reason: String,
    },
    /// A user the envelope speaks for is not a user of the origin, or one it addresses is not a
    /// user of the destination.
    #[error("user {0} does not belong to the server it is claimed for")]
    ForeignUser(String),
}

impl Rejection {
    /// Whether resending the same envelope can never succeed. A `sentAt` outside the window may
    /// be a clock that is off for a while: the origin should keep the envelope and try again.
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::OutsideWindow { .. })
    }
}

/// Checks inbound envelopes for this node.
#[derive(Debug, Clone)]
pub struct Verifier {
    local: ServerName,
    window: Duration,
}

impl Verifier {
    /// A verifier for envelopes addressed to `local`, accepting `sentAt` within ±`window`.
    pub fn new(local: ServerName, window: Duration) -> Self {
        Self { local, window }
    }

    /// Verifies an envelope that arrived on a connection from `peer`.
    ///
    /// # Errors
    /// The first [`Rejection`] that applies.
    pub fn verify(
        &self,
        directory: &Directory,
        peer: &PeerId,
        envelope: Envelope,
        now: Timestamp,
    ) -> Result<VerifiedEnvelope, Rejection> {
        let (origin, pinned) = self.origin_of(directory, peer, &envelope)?;
        if !pinned.public_key().verify(&envelope.signed_bytes(), &envelope.signature) {
            return Err(Rejection::BadSignature(envelope.origin));
        }
        self.check_signed(envelope, origin, now)
    }

    /// Verifies the envelopes of one request from `peer`, each as [`Verifier::verify`] would,
    /// with their signatures checked together in one batch (`ed25519-dalek`'s batch
    /// verification, about half the work per signature). Only if the batch fails is each
    /// signature checked alone, so a bad envelope is refused by itself and never takes its
    /// neighbours with it. Returns each envelope's id and verdict, in order.
    ///
    /// A batch accepts what the one-by-one check accepts; it may also accept a signature the
    /// one-by-one check would refuse for a non-canonical encoding that only the holder of the
    /// origin's key can produce, so no one but the origin can get an envelope through this way.
    pub fn verify_all(
        &self,
        directory: &Directory,
        peer: &PeerId,
        envelopes: Vec<Envelope>,
        now: Timestamp,
    ) -> Vec<(String, Result<VerifiedEnvelope, Rejection>)> {
        let checked: Vec<_> = envelopes
            .into_iter()
            .map(|envelope| {
                let origin = self.origin_of(directory, peer, &envelope);
                let signed = envelope.signed_bytes();
                (envelope, origin, signed)
            })
            .collect();
        let mut messages: Vec<&[u8]> = Vec::new();
        let mut signatures = Vec::new();
        let mut keys = Vec::new();
        for (envelope, origin, signed) in &checked {
            if let (Ok((_, pinned)), Ok(signature)) =
                (origin, ed25519_dalek::Signature::from_slice(&envelope.signature))
            {
                messages.push(signed.as_slice());
                signatures.push(signature);
                keys.push(*pinned.verifying_key());
            }
        }
        let all_good = !messages.is_empty()
            && messages.len() == checked.len()
            && ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok();
        checked
            .into_iter()
            .map(|(envelope, origin, signed)| {
                let id = envelope.id.clone();
                let verdict = origin.and_then(|(name, pinned)| {
                    if !all_good && !pinned.public_key().verify(&signed, &envelope.signature) {
                        return Err(Rejection::BadSignature(envelope.origin));
                    }
                    self.check_signed(envelope, name, now)
                });
                (id, verdict)
            })
            .collect()
    }

    /// The envelope's origin and its pinned key, if it is a peer's and came over that peer's
    /// connection.
    pub(crate) fn origin_of<'d>(
        &self,
        directory: &'d Directory,
        peer: &PeerId,
        envelope: &Envelope,
    ) -> Result<(ServerName, &'d PinnedPeer), Rejection> {
        let origin =
            ServerName::parse(&envelope.origin).map_err(|_| Rejection::UnknownOrigin(envelope.origin.clone()))?;
        let pinned = directory.by_name(&origin).ok_or_else(|| Rejection::UnknownOrigin(envelope.origin.clone()))?;
        if pinned.peer_id() != *peer {
            return Err(Rejection::WrongPeer { origin: envelope.origin.clone() });
        }
        Ok((origin, pinned))
    }

    /// Everything but the signature: destination, time window, body, parties.
    pub(crate) fn check_signed(
        &self,
        envelope: Envelope,
        origin: ServerName,
        now: Timestamp,
    ) -> Result<VerifiedEnvelope, Rejection> {
        if envelope.destination != self.local.as_str() {
            return Err(Rejection::WrongDestination(envelope.destination));
        }
        let window_ms = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        let skew_ms = envelope.sent_at.saturating_sub(now.as_millis());
        if skew_ms.saturating_abs() > window_ms {
            return Err(Rejection::OutsideWindow { skew_ms, window_ms });
        }
        let payload = Payload::decode(envelope.kind, &envelope.body)
            .map_err(|e| Rejection::BadBody { kind: envelope.kind.as_str(), reason: e.to_string() })?;
        if let Payload::Message(body) = &payload {
            if body.message.contains('\0') {
                // No text column of PostgreSQL can hold it; a client API refuses it too.
                return Err(Rejection::BadBody { kind: "message", reason: "contains a NUL character".into() });
            }
            if body.message.len() > MAX_MESSAGE_BYTES {
                // The client API's limit holds whichever node a message comes from.
                return Err(Rejection::BadBody {
                    kind: "message",
                    reason: format!("message is {} bytes; the limit is {MAX_MESSAGE_BYTES}", body.message.len()),
                });
            }
        }
        let (speaks_for, addresses) = payload.parties();
        if let Some(user) = speaks_for.iter().find(|u| !u.is_on(&origin)) {
            return Err(Rejection::ForeignUser(user.to_string()));
        }
        if let Some(user) = addresses.iter().find(|u| !u.is_on(&self.local)) {
            return Err(Rejection::ForeignUser(user.to_string()));
        }
        Ok(VerifiedEnvelope { id: envelope.id, origin, payload })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::peers::PinnedPeer;

    pub(crate) fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    fn message(from: &str, to: &str) -> Payload {
        Payload::Message(MessageBody {
            message_id: MessageId::now(),
            sender_id: UserId::parse(from).unwrap(),
            receiver_id: UserId::parse(to).unwrap(),
            message: "hi".into(),
            timestamp: Timestamp::now(),
        })
    }

    /// Two pinned peers, alpha and gamma, and beta's verifier.
    pub(crate) struct World {
        pub(crate) alpha: NodeKey,
        pub(crate) gamma: NodeKey,
        pub(crate) directory: Directory,
        pub(crate) verifier: Verifier,
    }

    pub(crate) fn world() -> World {
        let (alpha, gamma) = (NodeKey::ephemeral(), NodeKey::ephemeral());
        let pin = |n: &str, k: &NodeKey| {
            format!("{n}=/ip4/127.0.0.1/tcp/1/p2p/{}", k.peer_id()).parse::<PinnedPeer>().unwrap()
        };
        let directory = Directory::new([pin("alpha", &alpha), pin("gamma", &gamma)]).unwrap();
        World { alpha, gamma, directory, verifier: Verifier::new(name("beta"), Duration::from_secs(300)) }
    }

    #[test]
    fn a_well_formed_envelope_verifies() {
        let w = world();
        let e = Envelope::seal(
            &w.alpha,
            "1",
            &name("alpha"),
            &name("beta"),
            &message("a@alpha", "b@beta"),
            Timestamp::now(),
        )
        .unwrap();
        let verified = w.verifier.verify(&w.directory, &w.alpha.peer_id(), e, Timestamp::now()).unwrap();
        assert_eq!((verified.id(), verified.origin().as_str()), ("1", "alpha"));
    }

    #[test]
    fn a_batch_refuses_only_its_bad_envelopes() {
        let w = world();
        let seal = |id: &str| {
            Envelope::seal(&w.alpha, id, &name("alpha"), &name("beta"), &message("a@alpha", "b@beta"), Timestamp::now())
                .unwrap()
        };
        let ids = |verdicts: &[(String, Result<VerifiedEnvelope, Rejection>)]| {
            verdicts
                .iter()
                .map(|(id, v)| format!("{id}:{}", if v.is_ok() { "ok" } else { "refused" }))
                .collect::<Vec<_>>()
        };
        let good: Vec<Envelope> = (1..=5).map(|n| seal(&n.to_string())).collect();
        let verdicts = w.verifier.verify_all(&w.directory, &w.alpha.peer_id(), good.clone(), Timestamp::now());
        assert_eq!(ids(&verdicts), ["1:ok", "2:ok", "3:ok", "4:ok", "5:ok"]);

        let mut mixed = good;
        mixed[1].body.push(b' '); // tampered after signing
        mixed[3].signature = vec![0; 12]; // not a signature at all
        let forged = Envelope::seal(
            &w.gamma,
            "6",
            &name("alpha"),
            &name("beta"),
            &message("a@alpha", "b@beta"),
            Timestamp::now(),
        )
        .unwrap(); // signed by another node's key
        mixed.push(forged);
        let verdicts = w.verifier.verify_all(&w.directory, &w.alpha.peer_id(), mixed, Timestamp::now());
        assert_eq!(ids(&verdicts), ["1:ok", "2:refused", "3:ok", "4:refused", "5:ok", "6:refused"]);
        assert!(matches!(verdicts[1].1, Err(Rejection::BadSignature(_))));
        assert!(matches!(verdicts[3].1, Err(Rejection::BadSignature(_))));
        assert!(matches!(verdicts[5].1, Err(Rejection::BadSignature(_))));
    }

    #[test]
    fn the_replay_window_holds_to_the_millisecond_on_both_sides_of_now() {
        let w = world();
        let now = Timestamp::from_millis(1_800_000_000_000);
        let window = 300_000;
        let at = |skew: i64| {
            let e = Envelope::seal(
                &w.alpha,
                "1",
                &name("alpha"),
                &name("beta"),
                &message("a@alpha", "b@beta"),
                Timestamp::from_millis(now.as_millis() + skew),
            )
            .unwrap();
            w.verifier.verify(&w.directory, &w.alpha.peer_id(), e, now)
        };
        for skew in [-window, 0, window] {
            assert!(at(skew).is_ok(), "{skew} ms is inside");
        }
        for skew in [-window - 1, window + 1] {
            match at(skew) {
                Err(Rejection::OutsideWindow { skew_ms, window_ms }) => {
                    assert_eq!((skew_ms, window_ms), (skew, window))
                }
                other => panic!("{skew} ms: {other:?}"),
            }
        }
    }

    #[test]
    fn a_message_over_the_client_apis_limit_is_refused_from_a_peer_too() {
        let w = world();
        let now = Timestamp::now();
        let sized = |bytes: usize| {
            let mut payload = message("a@alpha", "b@beta");
            if let Payload::Message(body) = &mut payload {
                body.message = "x".repeat(bytes);
            }
            let e = Envelope::seal(&w.alpha, "1", &name("alpha"), &name("beta"), &payload, now).unwrap();
            w.verifier.verify(&w.directory, &w.alpha.peer_id(), e, now)
        };
        assert!(sized(MAX_MESSAGE_BYTES).is_ok());
        let refused = sized(MAX_MESSAGE_BYTES + 1);
        assert!(matches!(&refused, Err(Rejection::BadBody { kind: "message", .. })), "{refused:?}");
        assert!(refused.is_err_and(|r| r.is_final()), "sending it again cannot help");
    }

    #[test]
    fn forgeries_and_strays_are_rejected() {
        let w = world();
        let now = Timestamp::now();
        let seal = |key: &NodeKey, origin: &str, dest: &str, payload: &Payload, at: Timestamp| {
            Envelope::seal(key, "1", &name(origin), &name(dest), payload, at).unwrap()
        };
        let ok = message("a@alpha", "b@beta");
        // Signed by gamma, claiming alpha, over gamma's connection and over alpha's.
        let forged = seal(&w.gamma, "alpha", "beta", &ok, now);
        assert!(matches!(
            w.verifier.verify(&w.directory, &w.gamma.peer_id(), forged.clone(), now),
            Err(Rejection::WrongPeer { .. })
        ));
        assert!(matches!(
            w.verifier.verify(&w.directory, &w.alpha.peer_id(), forged, now),
            Err(Rejection::BadSignature(_))
        ));
        // A flipped body byte.
        let mut tampered = seal(&w.alpha, "alpha", "beta", &ok, now);
        tampered.body[5] ^= 1;
        assert!(matches!(
            w.verifier.verify(&w.directory, &w.alpha.peer_id(), tampered, now),
            Err(Rejection::BadSignature(_))
        ));
        // For another node, too old, speaking for a user of another server.
        let elsewhere = seal(&w.alpha, "alpha", "gamma", &message("a@alpha", "c@gamma"), now);
        assert!(matches!(
            w.verifier.verify(&w.directory, &w.alpha.peer_id(), elsewhere, now),
            Err(Rejection::WrongDestination(_))
        ));
        let stale = seal(&w.alpha, "alpha", "beta", &ok, Timestamp::from_millis(now.as_millis() - 600_000));
        assert!(matches!(
            w.verifier.verify(&w.directory, &w.alpha.peer_id(), stale, now),
            Err(Rejection::OutsideWindow { .. })
        ));
        let foreign = seal(&w.alpha, "alpha", "beta", &message("c@gamma", "b@beta"), now);
        assert!(matches!(
            w.verifier.verify(&w.directory, &w.alpha.peer_id(), foreign, now),
            Err(Rejection::ForeignUser(_))
        ));
        let stranger = NodeKey::ephemeral();
        let unknown = seal(&stranger, "delta", "beta", &message("d@delta", "b@beta"), now);
        assert!(matches!(
            w.verifier.verify(&w.directory, &stranger.peer_id(), unknown, now),
            Err(Rejection::UnknownOrigin(_))
        ));
    }
}
