//! The limits of the client API, in one place so that the server enforces and the
//! documentation states the same numbers.

/// Largest `message` field accepted, in bytes of UTF-8 as sent (an encrypted envelope counts
/// at its full size).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Largest WebSocket frame (and message) a client may send; larger closes the socket with 1009.
pub const MAX_WS_FRAME_BYTES: usize = 128 * 1024;

/// Longest username, in bytes.
pub const USERNAME_MAX_BYTES: usize = 32;

/// Longest host part of a server name, in bytes (the longest DNS name).
pub const HOST_MAX_BYTES: usize = 253;

/// Longest server name, in bytes (a DNS name plus `:` and a port).
pub const SERVER_NAME_MAX_BYTES: usize = HOST_MAX_BYTES + 6;

/// Shortest password, in characters.
pub const PASSWORD_MIN_CHARS: usize = 8;

/// Longest password, in characters.
pub const PASSWORD_MAX_CHARS: usize = 256;

/// Longest `clientMessageId`, in bytes.
pub const CLIENT_MESSAGE_ID_MAX_BYTES: usize = 128;

/// History page size when the request names none.
pub const HISTORY_DEFAULT_LIMIT: u32 = 50;

/// Largest history page.
pub const HISTORY_MAX_LIMIT: u32 = 100;

/// Most users one WebSocket session may watch with `presence.subscribe`.
pub const MAX_PRESENCE_SUBSCRIPTIONS: usize = 1000;

/// Most devices one user may have.
pub const MAX_DEVICES: usize = 5;

/// Most one-time prekeys one upload may carry.
pub const MAX_PREKEYS_PER_UPLOAD: usize = 100;

/// Most unclaimed one-time prekeys the node keeps per device.
pub const MAX_PREKEYS_STORED: usize = 500;

/// Largest encoded key in an upload, in bytes (identities are 129, prekeys under 110).
pub const MAX_KEY_BYTES: usize = 512;

/// Longest base64 certificate or removal in an upload, in characters.
pub const MAX_CERTIFICATE_BYTES: usize = 1024;

/// Most signed device removals the key directory keeps (and serves) per user; older ones go.
pub const MAX_REMOVALS_SERVED: usize = 50;
