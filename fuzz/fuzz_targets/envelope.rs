//! libFuzzer target `envelope`: see `../entries/envelope.rs` for the input and the checks.

#![no_main]

#[path = "../entries/envelope.rs"]
mod entry;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entry::run(data));
