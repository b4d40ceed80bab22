//! Fuzz entry `envelope`: an envelope from a peer, built from the input's fields (signed with
//! the pinned origin's key when the input says so, so that the checks behind the signature are
//! reached), through `Verifier::verify` or, alone in a sealed batch, `Verifier::verify_sealed`. Shared by `fuzz_targets/envelope.rs` and the corpus
//! replay test (`federation/tests/fuzz_corpus.rs`).
//!
//! Input: one flags byte (bit 0: sign with alpha's key; bit 1: origin is `alpha`; bit 2:
//! destination is `beta`; bits 3-5: the kind; bit 6: travel in a sealed batch, through
//! `Verifier::verify_sealed`, sealed by alpha when bit 0 says so), two bytes of clock offset (seconds, signed),
//! then `id`, `origin`, `destination` and the body, separated by 0xFF.
//!
//! Checks: nothing panics; an envelope that verifies came from alpha over alpha's connection,
//! and its payload speaks only for alpha's users.

use std::sync::OnceLock;
use std::time::Duration;

use kith_federation::envelope::{Envelope, Kind, Verifier};
use kith_federation::peers::{Directory, PinnedPeer};
use kith_federation::{NodeKey, SealedBatch};
use kith_proto::{ServerName, Timestamp};

const KINDS: [Kind; 6] =
    [Kind::Message, Kind::Receipt, Kind::Presence, Kind::PresenceSubscribe, Kind::KeysClaim, Kind::KeysBundles];

/// A fixed time, so a run depends on its input alone.
const NOW: i64 = 1_800_000_000_000;

struct Fixture {
    alpha: NodeKey,
    directory: Directory,
    verifier: Verifier,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let alpha = NodeKey::ephemeral();
        let pinned: PinnedPeer = format!("alpha=/ip4/127.0.0.1/tcp/1/p2p/{}", alpha.peer_id())
            .parse()
            .unwrap_or_else(|e| panic!("pin: {e:?}"));
        let directory = Directory::new([pinned]).unwrap_or_else(|e| panic!("directory: {e:?}"));
        let local = ServerName::parse("beta").unwrap_or_else(|e| panic!("{e}"));
        Fixture { alpha, directory, verifier: Verifier::new(local, Duration::from_secs(600)) }
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let [flags, offset_hi, offset_lo, rest @ ..] = data else { return };
    let f = fixture();
    let mut fields = rest.splitn(4, |b| *b == 0xFF);
    let id = text(fields.next().unwrap_or_default());
    let origin = text(fields.next().unwrap_or_default());
    let destination = text(fields.next().unwrap_or_default());
    let body = fields.next().unwrap_or_default().to_vec();
    let offset_secs = i64::from(i16::from_be_bytes([*offset_hi, *offset_lo]));
    let mut envelope = Envelope {
        id,
        origin: if flags & 2 != 0 { "alpha".to_owned() } else { origin },
        destination: if flags & 4 != 0 { "beta".to_owned() } else { destination },
        kind: KINDS[usize::from((flags >> 3) & 7) % KINDS.len()],
        body,
        sent_at: NOW + offset_secs * 1000,
        signature: Vec::new(),
    };
    let now = Timestamp::from_millis(NOW);
    let verified = if flags & 0x40 != 0 {
        // In a sealed batch: sealed by alpha, or an unsigned batch claiming to be alpha's.
        let batch = if flags & 1 != 0 {
            let alpha = ServerName::parse("alpha").unwrap_or_else(|e| panic!("{e}"));
            SealedBatch::seal(&f.alpha, &alpha, vec![envelope]).unwrap_or_else(|e| panic!("seal: {e}"))
        } else {
            SealedBatch {
                origin: "alpha".into(),
                envelopes: vec![envelope],
                digests: Vec::new(),
                signature: Vec::new(),
            }
        };
        let mut verdicts = f.verifier.verify_sealed(&f.directory, &f.alpha.peer_id(), batch, now);
        assert_eq!(verdicts.len(), 1, "one verdict per envelope");
        verdicts.pop().map_or_else(|| unreachable!(), |(_, verdict)| verdict)
    } else {
        if flags & 1 != 0 {
            envelope.signature = f.alpha.sign(&envelope.signed_bytes()).unwrap_or_default();
        }
        f.verifier.verify(&f.directory, &f.alpha.peer_id(), envelope, now)
    };
    if let Ok(verified) = verified {
        assert_eq!(verified.origin().as_str(), "alpha", "verified, so from the pinned origin");
        let _ = verified.payload().kind();
    }
}
