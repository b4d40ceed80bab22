//! The rules of the ids as regular expressions (ECMA-262, which JSON Schema uses; Python's `re`
//! reads them too), for the OpenAPI document and for clients that check input before sending it.
//!
//! They state exactly what the parsers in [`crate::ids`] accept, built from the same
//! [`crate::limits`]. `scripts/contract` holds the two together: schemathesis sends strings
//! that match and strings that do not, and the node must accept the first and refuse the second.

use crate::limits::{HOST_MAX_BYTES, SERVER_NAME_MAX_BYTES, USERNAME_MAX_BYTES};

/// Longest user id, in bytes: a name, `@`, a server name.
pub const USER_ID_MAX_BYTES: usize = USERNAME_MAX_BYTES + 1 + SERVER_NAME_MAX_BYTES;

/// A message id: a UUID in its hyphenated form.
pub const MESSAGE_ID: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// A `clientMessageId`: printable ASCII without space (its length is `minLength`/`maxLength`).
pub const CLIENT_MESSAGE_ID: &str = "^[!-~]+$";

/// Text without NUL characters, which no text column of PostgreSQL can hold.
pub const NO_NUL: &str = "^[^\\u0000]*$";

/// Standard base64 with padding.
pub const BASE64: &str = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";

/// A port: 1 to 65535, without a sign or leading zeros.
const PORT: &str = "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";

/// A username without anchors: 1-32 of `[a-z0-9._-]`, not only dots. `end` is what may follow
/// it (the negative lookahead refuses dots alone up to there).
fn name(end: &str) -> String {
    format!("(?!\\.+{end})[a-z0-9._-]{{1,{USERNAME_MAX_BYTES}}}")
}

/// A server name without anchors: a lowercase DNS-like host that neither starts nor ends with
/// `.` or `-`, and an optional `:port`.
fn server() -> String {
    let inner = HOST_MAX_BYTES - 2;
    format!("[a-z0-9](?:[a-z0-9.-]{{0,{inner}}}[a-z0-9])?(?::{PORT})?")
}

/// A username.
pub fn username() -> String {
    format!("^{}$", name("$"))
}

/// A server name.
pub fn server_name() -> String {
    format!("^{}$", server())
}

/// A user id, `name@server`.
pub fn user_id() -> String {
    format!("^{}@{}$", name("@"), server())
}

/// A user named in a request: `name@server`, or a bare `name` for a user of this server.
pub fn user_ref() -> String {
    format!("^{}(?:@{})?$", name("(?:@|$)"), server())
}
