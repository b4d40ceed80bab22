//! The committed corpus of a fuzz target, for the tests that replay it (included with
//! `#[path]` by `federation/tests/fuzz_corpus.rs` and `client-api/tests/fuzz_corpus.rs`, whose
//! crates both sit beside `fuzz/`).

use std::path::PathBuf;

/// The files of `fuzz/corpus/<target>`, sorted, which must not be empty.
pub fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
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
