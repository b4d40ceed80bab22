//! libFuzzer target `ws_frame`: see `../entries/ws_frame.rs` for the input and the checks.

#![no_main]

#[path = "../entries/ws_frame.rs"]
mod entry;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entry::run(data));
