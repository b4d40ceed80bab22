//! The store of skipped message keys: keys of messages that were skipped over (not yet
//! received) in a receiving chain, kept so those messages still decrypt when they arrive
//! late.
//!
//! The store never refuses a message: it is bounded by evicting its oldest keys, per chain
//! and per session, and keys expire after [`SKIPPED_KEY_MAX_AGE_MS`]. Entries are kept in
//! insertion order (oldest first), each stamped with the caller's clock, so that eviction and
//! expiry are a deterministic function of the state and the inputs (see `docs/crypto.md`).

use std::collections::{BTreeMap, VecDeque};

use crate::codec::Reader;
use crate::error::{CryptoError, Result};
use crate::kdf::Secret32;
use crate::keys::DhPublic;

/// The most skipped message keys a session stores; beyond it the oldest are evicted.
pub const MAX_SKIPPED_KEYS: usize = 2000;

/// The most skipped message keys a session stores for one receiving chain (one ratchet key
/// of the peer); beyond it that chain's oldest are evicted.
pub const MAX_SKIPPED_KEYS_PER_CHAIN: usize = 1000;

/// How long a skipped key is kept, in milliseconds of the caller's clock: 7 days after it was
/// stored. A message held back longer than this cannot be decrypted any more, and a later
/// compromise of the device cannot open it either.
pub const SKIPPED_KEY_MAX_AGE_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Bytes of one serialized entry: ratchet key, counter, stamp, message key.
pub(crate) const ENTRY_LEN: usize = 32 + 4 + 8 + 32;

/// One stored key.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) ratchet_key: DhPublic,
    pub(crate) counter: u32,
    /// The caller's clock (milliseconds) when the key was stored, never earlier than the
    /// stamp of the entry before it.
    pub(crate) stored_at: u64,
    pub(crate) key: Secret32,
}

impl Entry {
    fn expired(&self, now: u64) -> bool {
        now.saturating_sub(self.stored_at) > SKIPPED_KEY_MAX_AGE_MS
    }
}

/// The skipped keys of one session, oldest first.
#[derive(Clone, Default)]
pub(crate) struct SkippedKeys {
    entries: VecDeque<Entry>,
}

impl SkippedKeys {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Where the unexpired key of message `counter` of chain `ratchet_key` is, if stored.
    pub(crate) fn find(&self, ratchet_key: &DhPublic, counter: u32, now: u64) -> Option<usize> {
        self.entries.iter().position(|e| e.ratchet_key == *ratchet_key && e.counter == counter && !e.expired(now))
    }

    pub(crate) fn key(&self, index: usize) -> Option<&Secret32> {
        self.entries.get(index).map(|e| &e.key)
    }

    pub(crate) fn remove(&mut self, index: usize) {
        self.entries.remove(index);
    }

    /// Appends `new` (in derivation order), evicts to the limits, then expires; returns how
    /// many keys were dropped by eviction (including new ones that never fit) and by expiry.
    ///
    /// Eviction: for each chain, while it holds more than [`MAX_SKIPPED_KEYS_PER_CHAIN`]
    /// keys its oldest goes; then, while the store holds more than [`MAX_SKIPPED_KEYS`], the
    /// oldest key overall goes.
    pub(crate) fn insert(&mut self, new: Vec<(DhPublic, u32, Secret32)>, dropped_before: u64, now: u64) -> Dropped {
        let stamp = self.entries.back().map_or(now, |last| last.stored_at.max(now));
        let mut evicted = dropped_before;
        // How many keys each chain holds once `new` is in, and so how many of its oldest go.
        let mut per_chain: BTreeMap<DhPublic, usize> = BTreeMap::new();
        for e in &self.entries {
            *per_chain.entry(e.ratchet_key).or_default() += 1;
        }
        for (ratchet_key, _, _) in &new {
            *per_chain.entry(*ratchet_key).or_default() += 1;
        }
        let mut excess: BTreeMap<DhPublic, usize> = per_chain
            .into_iter()
            .filter(|(_, n)| *n > MAX_SKIPPED_KEYS_PER_CHAIN)
            .map(|(k, n)| (k, n - MAX_SKIPPED_KEYS_PER_CHAIN))
            .collect();
        let mut take = |ratchet_key: &DhPublic| match excess.get_mut(ratchet_key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        let before = self.entries.len();
        self.entries.retain(|e| !take(&e.ratchet_key));
        evicted += (before - self.entries.len()) as u64;
        for (ratchet_key, counter, key) in new {
            if take(&ratchet_key) {
                evicted += 1;
            } else {
                self.entries.push_back(Entry { ratchet_key, counter, stored_at: stamp, key });
            }
        }
        while self.entries.len() > MAX_SKIPPED_KEYS {
            self.entries.pop_front();
            evicted += 1;
        }
        let expired = self.expire(now);
        Dropped { evicted, expired }
    }

    /// Drops every key older than [`SKIPPED_KEY_MAX_AGE_MS`] at `now`; returns how many.
    pub(crate) fn expire(&mut self, now: u64) -> u64 {
        let before = self.entries.len();
        self.entries.retain(|e| !e.expired(now));
        (before - self.entries.len()) as u64
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        // The count fits: the store never exceeds MAX_SKIPPED_KEYS.
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            out.extend_from_slice(e.ratchet_key.as_bytes());
            out.extend_from_slice(&e.counter.to_be_bytes());
            out.extend_from_slice(&e.stored_at.to_be_bytes());
            out.extend_from_slice(e.key.as_slice());
        }
    }

    /// Reads what [`Self::write`] wrote, refusing anything it could not have written: too many
    /// keys (in all or for one chain), the same key twice, stamps that go back.
    pub(crate) fn read(r: &mut Reader<'_>, what: &'static str) -> Result<Self> {
        let count = r.u32()?;
        if count as usize > MAX_SKIPPED_KEYS {
            return Err(CryptoError::TooManyEntries {
                what: "skipped-key store",
                count: u64::from(count),
                max: MAX_SKIPPED_KEYS,
            });
        }
        let inconsistent = |reason| CryptoError::InconsistentState { what, reason };
        let mut entries = VecDeque::with_capacity(count as usize);
        let mut seen = std::collections::BTreeSet::new();
        let mut per_chain: BTreeMap<DhPublic, usize> = BTreeMap::new();
        for _ in 0..count {
            let ratchet_key = DhPublic::read(r, "skipped ratchet key")?;
            let counter = r.u32()?;
            let stored_at = r.u64()?;
            let key = r.secret::<32>()?;
            if entries.back().is_some_and(|last: &Entry| last.stored_at > stored_at) {
                return Err(inconsistent("skipped keys not in insertion order"));
            }
            if !seen.insert((ratchet_key, counter)) {
                return Err(inconsistent("the same skipped key twice"));
            }
            let in_chain = per_chain.entry(ratchet_key).or_default();
            *in_chain += 1;
            if *in_chain > MAX_SKIPPED_KEYS_PER_CHAIN {
                return Err(inconsistent("more skipped keys for one chain than allowed"));
            }
            entries.push_back(Entry { ratchet_key, counter, stored_at, key });
        }
        Ok(Self { entries })
    }
}

/// Keys a successful decryption dropped, so that a client can say messages were lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub(crate) evicted: u64,
    pub(crate) expired: u64,
}
