//! Limits of the HTTP edge (the protocol's own limits are in [`kith_proto::limits`]).

/// Largest request body accepted. Generous enough that a JSON-escaped message at the 64 KiB
/// field limit still parses, so the client hears `413` about the field rather than the body.
pub const MAX_BODY_BYTES: usize = 512 * 1024;
