//! Where a user's rows live: shard `hash(owner) % N`.
//!
//! The hash is fixed and documented so that any tool (and any future version) finds a user's
//! shard the same way: the first 8 bytes of the SHA-256 of the user id (`name@server`, UTF-8),
//! read as a big-endian unsigned integer, modulo the number of shards. Rust's `DefaultHasher`
//! is not used: it may change between releases.

use kith_proto::UserId;
use sha2::{Digest, Sha256};

/// The shard that holds `key`'s rows, of `count` shards.
pub fn shard_of_key(key: &str, count: u32) -> u32 {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let hash = u64::from_be_bytes(first);
    u32::try_from(hash % u64::from(count.max(1))).unwrap_or(0)
}

/// The shard that holds `user`'s rows (account, devices, keys, mailbox, queues), of `count`.
pub fn shard_of(user: &UserId, count: u32) -> u32 {
    shard_of_key(user.as_str(), count)
}

/// Which shard of how many one database is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// This shard's index, from 0.
    pub index: u32,
    /// How many shards there are.
    pub count: u32,
}

impl Placement {
    /// The only shard: everything lives here.
    pub const SINGLE: Self = Self { index: 0, count: 1 };

    /// Whether `user`'s rows live on this shard.
    pub fn holds(&self, user: &UserId) -> bool {
        shard_of(user, self.count) == self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_the_documented_one() {
        // SHA-256("alice@test") begins 53 21 f5 61 f4 69 12 53; these shards were computed from
        // that by a second implementation (Python's hashlib), so a change of hash, which would
        // move every user, fails here.
        let alice = UserId::parse("alice@test").unwrap_or_else(|e| panic!("{e}"));
        let shards: Vec<u32> = (1..=5).map(|n| shard_of(&alice, n)).collect();
        assert_eq!(shards, [0, 1, 2, 3, 3]);
    }

    #[test]
    fn users_spread_over_the_shards() {
        let mut counts = [0u32; 3];
        for i in 0..3000 {
            let user = UserId::parse(&format!("user{i}@test")).unwrap_or_else(|e| panic!("{e}"));
            counts[shard_of(&user, 3) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }
}
