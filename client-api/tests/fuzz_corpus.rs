//! Replays the committed corpora of the `ws_frame` fuzz target (`fuzz/`)
//! through the same entry functions the fuzzer runs, so every input that once found something
//! (and every seed) stays a regression test of ordinary `cargo test`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

#[path = "../../fuzz/entries/ws_frame.rs"]
mod ws_frame;

#[path = "../../fuzz/entries/corpus.rs"]
mod corpus;
use corpus::corpus;

#[test]
fn the_ws_frame_corpus_replays_without_a_panic() {
    for (_path, input) in corpus("ws_frame") {
        ws_frame::run(&input);
    }
}
