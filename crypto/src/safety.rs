//! Safety numbers: a human-comparable fingerprint of two users' identities.

use sha2::{Digest, Sha512};

use crate::user::UserIdentityPublic;

/// Domain-separation label hashed first into every fingerprint.
const LABEL: &[u8] = b"kith-safety-number-v2";

/// How many times the fingerprint hash is iterated. Makes searching for an
/// identity key whose fingerprint collides with a target's ~5,200 times more
/// expensive, as in Signal.
pub const SAFETY_NUMBER_ITERATIONS: u32 = 5200;

/// One side's 30 digits.
fn fingerprint(identity: &UserIdentityPublic, user_id: &str) -> [u8; 30] {
    let key = identity.key();
    let id = user_id.as_bytes();
    let mut hasher = Sha512::new();
    hasher.update(LABEL);
    hasher.update([0u8]);
    hasher.update(key);
    hasher.update((id.len() as u64).to_be_bytes());
    hasher.update(id);
    let mut hash = hasher.finalize();
    for _ in 0..SAFETY_NUMBER_ITERATIONS {
        let mut hasher = Sha512::new();
        hasher.update(hash);
        hasher.update(key);
        hash = hasher.finalize();
    }
    let mut digits = [0u8; 30];
    for (chunk, out) in hash[..30].chunks_exact(5).zip(digits.chunks_exact_mut(5)) {
        let mut value = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)) % 100_000;
        for d in out.iter_mut().rev() {
            *d = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    digits
}

/// The safety number of two users: 60 decimal digits in 12 groups of 5
/// separated by spaces, e.g. `"12345 67890 ..."`.
///
/// Each side contributes 30 digits computed from its user identity key and
/// user id (see `docs/crypto.md` for the exact hash); the two halves are
/// sorted, so both users see the same number whichever way round they call
/// this. It covers the user identities, not devices: it stays the same when
/// either user links or removes a device. If the numbers two users read to
/// each other match, the server did not substitute either identity, and
/// every device those identities certified is really theirs.
pub fn safety_number(
    identity_a: &UserIdentityPublic,
    user_id_a: &str,
    identity_b: &UserIdentityPublic,
    user_id_b: &str,
) -> String {
    let a = fingerprint(identity_a, user_id_a);
    let b = fingerprint(identity_b, user_id_b);
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let mut out = String::with_capacity(71);
    for (i, group) in first.chunks_exact(5).chain(second.chunks_exact(5)).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.extend(group.iter().map(|&d| char::from(d)));
    }
    out
}
