//! The WebSocket handshake's request headers, as the OpenAPI document states them: exactly the
//! rules the upgrade extractor checks (RFC 6455 section 4.2.1), so that a request valid by the
//! document is a handshake and any other is refused.

use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// A header value matching `pattern`.
fn header(pattern: &str) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern)).into()
}

/// `Connection`: any value naming `upgrade`, in any case.
pub(crate) struct Connection;

impl PartialSchema for Connection {
    fn schema() -> RefOr<Schema> {
        header("^.*[Uu][Pp][Gg][Rr][Aa][Dd][Ee].*$")
    }
}
impl ToSchema for Connection {}

/// `Upgrade: websocket`, in any case.
pub(crate) struct Upgrade;

impl PartialSchema for Upgrade {
    fn schema() -> RefOr<Schema> {
        header("^[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]$")
    }
}
impl ToSchema for Upgrade {}

/// `Sec-WebSocket-Version: 13`, the only version there is.
pub(crate) struct Version;

impl PartialSchema for Version {
    fn schema() -> RefOr<Schema> {
        header("^13$")
    }
}
impl ToSchema for Version {}
