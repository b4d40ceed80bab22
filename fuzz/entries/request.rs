//! Fuzz entry `request`: bytes from a peer's stream through the federation codec, as a request
//! and as a response. Shared by `fuzz_targets/request.rs` and the corpus replay test.
//!
//! Checks: nothing panics; whatever decodes re-encodes to bytes that decode to the same value
//! (no trailing data is accepted, so one stream is one value).

use kith_federation::codec::{decode_request, decode_response, encode};

/// Runs one input.
pub fn run(data: &[u8]) {
    if let Ok(request) = decode_request(data) {
        let again = encode(&request).unwrap_or_else(|e| panic!("re-encoding a decoded request: {e}"));
        assert_eq!(decode_request(&again).as_ref(), Ok(&request), "a request round-trips");
    }
    if let Ok(response) = decode_response(data) {
        let again = encode(&response).unwrap_or_else(|e| panic!("re-encoding a decoded response: {e}"));
        assert_eq!(decode_response(&again).as_ref(), Ok(&response), "a response round-trips");
    }
}
