//! Replays the committed corpora of the `envelope` and `request` fuzz targets (`fuzz/`)
//! through the same entry functions the fuzzer runs, so every input that once found something
//! (and every seed) stays a regression test of ordinary `cargo test`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

#[path = "../../fuzz/entries/envelope.rs"]
mod envelope;
#[path = "../../fuzz/entries/request.rs"]
mod request;

#[path = "../../fuzz/entries/corpus.rs"]
mod corpus;
use corpus::corpus;

#[test]
fn the_envelope_corpus_replays_without_a_panic() {
    for (_path, input) in corpus("envelope") {
        envelope::run(&input);
    }
}

#[test]
fn the_request_corpus_replays_without_a_panic() {
    for (_path, input) in corpus("request") {
        request::run(&input);
    }
}
