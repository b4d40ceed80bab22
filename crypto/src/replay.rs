//! The replay record: the session setups (signed prekey id and base key) of the first
//! messages a device has accepted.
//!
//! A first message made without a one-time prekey sets up the same session every time it is
//! processed, so once the session it set up is no longer kept, a replay of it would look new.
//! [`Session::respond`](crate::Session::respond) refuses a setup the record holds and adds
//! the ones it accepts. Records are needed only while the signed prekey they name is kept
//! (a first message for a dropped signed prekey cannot be accepted anyway): drop them with
//! [`ReplayRecord::retain_signed_prekeys`] when rotating.

use std::collections::BTreeSet;

use crate::codec::{self, Reader, kind};
use crate::error::{CryptoError, Result};
use crate::message::Setup;

/// The most setups a replay record holds. Beyond it new sessions are refused
/// ([`CryptoError::ReplayRecordFull`]) until the oldest signed prekey is dropped.
pub const MAX_REPLAY_RECORDS: usize = 50_000;

/// Bytes of one serialized entry: signed prekey id, base key.
const ENTRY_LEN: usize = 4 + 32;

/// The first-message setups a device accepted, by (signed prekey id, base key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayRecord {
    seen: BTreeSet<(u32, [u8; 32])>,
}

impl ReplayRecord {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many setups it holds.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    pub(crate) fn contains(&self, setup: &Setup) -> bool {
        self.seen.contains(&(setup.signed_prekey_id, *setup.base_key.as_bytes()))
    }

    /// Checks that `setup` can be added: it is not there yet and there is room.
    pub(crate) fn check(&self, setup: &Setup) -> Result<()> {
        if self.contains(setup) {
            return Err(CryptoError::ReplayedFirstMessage { signed_prekey_id: setup.signed_prekey_id });
        }
        if self.seen.len() >= MAX_REPLAY_RECORDS {
            return Err(CryptoError::ReplayRecordFull { max: MAX_REPLAY_RECORDS });
        }
        Ok(())
    }

    pub(crate) fn insert(&mut self, setup: &Setup) {
        self.seen.insert((setup.signed_prekey_id, *setup.base_key.as_bytes()));
    }

    /// Keeps only the setups made with the signed prekeys in `kept`; returns how many went.
    pub fn retain_signed_prekeys(&mut self, kept: &[u32]) -> usize {
        let before = self.seen.len();
        self.seen.retain(|(id, _)| kept.contains(id));
        before - self.seen.len()
    }

    /// Encodes as `version, kind 0x21, u32 count, entries sorted by (signed prekey id, base
    /// key): u32 id, base key (32)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = codec::writer(kind::REPLAY_RECORD, 2 + 4 + ENTRY_LEN * self.seen.len());
        // The count fits: the record never exceeds MAX_REPLAY_RECORDS.
        out.extend_from_slice(&(self.seen.len() as u32).to_be_bytes());
        for (id, base_key) in &self.seen {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(base_key);
        }
        out
    }

    /// Decodes [`Self::to_bytes`] output.
    ///
    /// # Errors
    /// Decoding errors, [`CryptoError::TooManyEntries`], and
    /// [`CryptoError::InconsistentState`] for entries out of order.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes, "replay record");
        r.header(kind::REPLAY_RECORD)?;
        let count = r.u32()?;
        if count as usize > MAX_REPLAY_RECORDS {
            return Err(CryptoError::TooManyEntries {
                what: "replay record",
                count: u64::from(count),
                max: MAX_REPLAY_RECORDS,
            });
        }
        let mut seen = BTreeSet::new();
        let mut last = None;
        for _ in 0..count {
            let entry = (r.u32()?, r.array::<32>()?);
            if last.is_some_and(|prev| prev >= entry) {
                return Err(CryptoError::InconsistentState {
                    what: "replay record",
                    reason: "entries not in strictly increasing order",
                });
            }
            last = Some(entry);
            seen.insert(entry);
        }
        r.finish()?;
        Ok(Self { seen })
    }
}
