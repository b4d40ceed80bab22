//! Sealed batches: the envelopes of one request under one signature. The origin signs the
//! list of their digests (SHA-256 of each envelope's [`Envelope::signed_bytes`]), so a request
//! costs one ed25519 signature and one verification however many envelopes it carries, where
//! envelopes signed one by one cost one of each per envelope (the largest part of a federated
//! message's CPU). Each envelope still stands or falls alone: the signed list names it, so one
//! whose digest is not the listed one is refused by itself and its neighbours go through.

use kith_proto::{ServerName, Timestamp};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::envelope::{Envelope, Rejection, VerifiedEnvelope, Verifier};
use crate::error::FederationError;
use crate::identity::NodeKey;
use crate::peers::Directory;

/// Domain separation for batch signatures (never valid as an envelope's, whose context differs).
const BATCH_CONTEXT: &[u8] = b"kith-batch-v1\0";

/// Bytes per digest in [`SealedBatch::digests`].
const DIGEST_BYTES: usize = 32;

/// Envelopes from one origin, signed together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SealedBatch {
    /// The node that sealed it: every envelope's origin.
    pub origin: String,
    /// The envelopes, in order, each with an empty `signature`.
    pub envelopes: Vec<Envelope>,
    /// The SHA-256 digest of each envelope's signed bytes, in order, 32 bytes each.
    #[serde(with = "serde_bytes")]
    pub digests: Vec<u8>,
    /// The origin's ed25519 signature over [`SealedBatch::signed_bytes`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl SealedBatch {
    /// Signs `envelopes` (built by [`Envelope::unsigned`]) as one batch from `origin`.
    ///
    /// # Errors
    /// When signing fails (never in practice).
    pub fn seal(key: &NodeKey, origin: &ServerName, envelopes: Vec<Envelope>) -> Result<Self, FederationError> {
        let digests = envelopes.iter().flat_map(digest).collect();
        let mut batch = Self { origin: origin.to_string(), envelopes, digests, signature: Vec::new() };
        batch.signature = key.sign(&batch.signed_bytes())?;
        Ok(batch)
    }

    /// What the signature covers: a context string, the origin (length-prefixed, u32
    /// big-endian), the number of envelopes (u32 big-endian), then the digests.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let count = u32::try_from(self.envelopes.len()).unwrap_or(u32::MAX);
        let origin = self.origin.as_bytes();
        let mut bytes = Vec::with_capacity(BATCH_CONTEXT.len() + 8 + origin.len() + self.digests.len());
        bytes.extend_from_slice(BATCH_CONTEXT);
        bytes.extend_from_slice(&u32::try_from(origin.len()).unwrap_or(u32::MAX).to_be_bytes());
        bytes.extend_from_slice(origin);
        bytes.extend_from_slice(&count.to_be_bytes());
        bytes.extend_from_slice(&self.digests);
        bytes
    }
}

/// The digest the batch lists for `envelope`.
fn digest(envelope: &Envelope) -> [u8; DIGEST_BYTES] {
    Sha256::digest(envelope.signed_bytes()).into()
}

impl Verifier {
    /// Verifies a sealed batch that arrived on a connection from `peer`: its one signature by
    /// the pinned key of its origin, then each envelope as [`Verifier::verify`] would, with
    /// "signed" meaning "its digest is the one the signed list gives at its place". Returns
    /// each envelope's id and verdict, in order. A batch whose signature does not hold, or
    /// whose list does not match its envelopes in number, refuses every envelope.
    pub fn verify_sealed(
        &self,
        directory: &Directory,
        peer: &PeerId,
        batch: SealedBatch,
        now: Timestamp,
    ) -> Vec<(String, Result<VerifiedEnvelope, Rejection>)> {
        let sealed_by = self.seal_holds(directory, peer, &batch);
        let SealedBatch { origin, envelopes, digests, .. } = batch;
        envelopes
            .into_iter()
            .enumerate()
            .map(|(index, envelope)| {
                let id = envelope.id.clone();
                let verdict = sealed_by.clone().and_then(|_| {
                    let (name, _) = self.origin_of(directory, peer, &envelope)?;
                    let listed = digests.get(index * DIGEST_BYTES..(index + 1) * DIGEST_BYTES);
                    if envelope.origin != origin || listed != Some(&digest(&envelope)[..]) {
                        return Err(Rejection::BadSignature(envelope.origin));
                    }
                    self.check_signed(envelope, name, now)
                });
                (id, verdict)
            })
            .collect()
    }

    /// Whether the batch's signature is its origin's, and the origin the connection's peer.
    fn seal_holds(&self, directory: &Directory, peer: &PeerId, batch: &SealedBatch) -> Result<(), Rejection> {
        let origin = ServerName::parse(&batch.origin).map_err(|_| Rejection::UnknownOrigin(batch.origin.clone()))?;
        let pinned = directory.by_name(&origin).ok_or_else(|| Rejection::UnknownOrigin(batch.origin.clone()))?;
        if pinned.peer_id() != *peer {
            return Err(Rejection::WrongPeer { origin: batch.origin.clone() });
        }
        let whole = batch.digests.len() == batch.envelopes.len().saturating_mul(DIGEST_BYTES);
        if !whole || !pinned.public_key().verify(&batch.signed_bytes(), &batch.signature) {
            return Err(Rejection::BadSignature(batch.origin.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use kith_proto::{MessageId, UserId};

    use super::*;
    use crate::envelope::tests::{World, name, world};
    use crate::envelope::{MessageBody, Payload};

    fn unsigned(id: &str, origin: &str) -> Envelope {
        let body = Payload::Message(MessageBody {
            message_id: MessageId::now(),
            sender_id: UserId::parse(&format!("a@{origin}")).unwrap(),
            receiver_id: UserId::parse("b@beta").unwrap(),
            message: "hi".into(),
            timestamp: Timestamp::now(),
        });
        let (kind, body) = (body.kind(), body.encode().unwrap());
        Envelope::unsigned(id, &name(origin), &name("beta"), kind, body, Timestamp::now())
    }

    fn five() -> Vec<Envelope> {
        (1..=5).map(|n| unsigned(&n.to_string(), "alpha")).collect()
    }

    fn verdicts(w: &World, batch: SealedBatch) -> Vec<String> {
        w.verifier
            .verify_sealed(&w.directory, &w.alpha.peer_id(), batch, Timestamp::now())
            .into_iter()
            .map(|(id, v)| match v {
                Ok(_) => format!("{id}:ok"),
                Err(Rejection::BadSignature(_)) => format!("{id}:bad signature"),
                Err(other) => format!("{id}:{other}"),
            })
            .collect()
    }

    #[test]
    fn a_sealed_batch_verifies_every_envelope_under_one_signature() {
        let w = world();
        let batch = SealedBatch::seal(&w.alpha, &name("alpha"), five()).unwrap();
        assert!(batch.envelopes.iter().all(|e| e.signature.is_empty()));
        assert_eq!(verdicts(&w, batch), ["1:ok", "2:ok", "3:ok", "4:ok", "5:ok"]);
    }

    #[test]
    fn an_envelope_changed_after_sealing_is_refused_alone() {
        let w = world();
        let mut batch = SealedBatch::seal(&w.alpha, &name("alpha"), five()).unwrap();
        batch.envelopes[1].body.push(b' ');
        batch.envelopes[3].sent_at += 1;
        assert_eq!(verdicts(&w, batch), ["1:ok", "2:bad signature", "3:ok", "4:bad signature", "5:ok"]);
    }

    #[test]
    fn an_envelope_slipped_in_or_swapped_is_refused_alone() {
        let w = world();
        let mut batch = SealedBatch::seal(&w.alpha, &name("alpha"), five()).unwrap();
        // Moved to another place in the list: each is checked against its own place's digest.
        batch.envelopes.swap(0, 1);
        // Claims another origin inside alpha's batch.
        batch.envelopes[4] = unsigned("5", "gamma");
        let verdicts = verdicts(&w, batch);
        assert_eq!(verdicts[..4], ["2:bad signature", "1:bad signature", "3:ok", "4:ok"]);
        assert_eq!(verdicts[4], "5:envelope from gamma arrived from another peer");
    }

    #[test]
    fn a_batch_whose_seal_does_not_hold_refuses_everything() {
        let w = world();
        // Sealed by gamma's key in alpha's name.
        let forged = SealedBatch::seal(&w.gamma, &name("alpha"), five()).unwrap();
        assert!(verdicts(&w, forged).iter().all(|v| v.ends_with(":bad signature")));
        // One more envelope than the signed list names.
        let mut longer = SealedBatch::seal(&w.alpha, &name("alpha"), five()).unwrap();
        longer.envelopes.push(unsigned("6", "alpha"));
        assert!(verdicts(&w, longer).iter().all(|v| v.ends_with(":bad signature")));
        // A digest list cut short of the signed one.
        let mut cut = SealedBatch::seal(&w.alpha, &name("alpha"), five()).unwrap();
        cut.digests.truncate(4 * DIGEST_BYTES);
        assert!(verdicts(&w, cut).iter().all(|v| v.ends_with(":bad signature")));
        // Gamma's own batch over alpha's connection.
        let wrong_peer = SealedBatch::seal(&w.gamma, &name("gamma"), vec![unsigned("7", "gamma")]).unwrap();
        assert!(verdicts(&w, wrong_peer)[0].contains("gamma"));
    }

    #[test]
    fn an_envelope_signature_is_no_batch_signature() {
        let w = world();
        let batch = SealedBatch::seal(&w.alpha, &name("alpha"), five()).unwrap();
        let mut reused = batch.clone();
        // An envelope-style signature over the same bytes under the envelope context is refused.
        reused.signature = w.alpha.sign(&batch.envelopes[0].signed_bytes()).unwrap();
        assert!(verdicts(&w, reused).iter().all(|v| v.ends_with(":bad signature")));
    }
}
