//! Replays the committed corpora of the `envelope` and `request` fuzz targets (`fuzz/`)
//! through the same entry functions the fuzzer runs, so every input that once found something
//! (and every seed) stays a regression test of ordinary `cargo test`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, reason = "a test fails by panicking")]

use std::path::PathBuf;

#[path = "../../fuzz/entries/envelope.rs"]
mod envelope;
#[path = "../../fuzz/entries/request.rs"]
mod request;

/// The files of `fuzz/corpus/<target>`, which must not be empty.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap_or_else(|e| panic!("{e}")).path())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "the {target} corpus is empty");
    inputs
}

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
