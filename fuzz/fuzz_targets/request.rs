//! libFuzzer target `request`: see `../entries/request.rs` for the input and the checks.

#![no_main]

#[path = "../entries/request.rs"]
mod entry;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entry::run(data));
