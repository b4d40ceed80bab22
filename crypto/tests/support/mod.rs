//! Helpers shared by the integration tests (and, by path, the fuzz target).
#![allow(dead_code)]

pub mod rng;
pub mod scenario;

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes hex; panics on malformed input (test data only).
pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd-length hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Decodes hex into a fixed-size array.
pub fn unhex_array<const N: usize>(s: &str) -> [u8; N] {
    unhex(s).try_into().expect("hex of the right length")
}
