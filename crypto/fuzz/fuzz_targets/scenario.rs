//! The hostile-network scenario model of `tests/support/scenario.rs` (shared
//! with the property tests), driven by fuzzer bytes: the first 8 bytes seed
//! the keys, every following 4 bytes are one operation. Any violated
//! invariant (a delivered message that does not decrypt exactly once, an
//! accepted replay or corruption, a rejection that changed state) panics.

#![no_main]

use libfuzzer_sys::fuzz_target;

// Shared with the integration tests (`super::rng` resolves to these).
#[path = "../../tests/support/rng.rs"]
mod rng;
#[path = "../../tests/support/scenario.rs"]
mod scenario;

use scenario::{Op, run};

fuzz_target!(|data: &[u8]| {
    let (seed, ops) = data.split_at(data.len().min(8));
    let mut seed_bytes = [0u8; 8];
    seed_bytes[..seed.len()].copy_from_slice(seed);
    if let Err(violation) = run(u64::from_be_bytes(seed_bytes), &Op::decode_all(ops)) {
        panic!("{violation}");
    }
});
