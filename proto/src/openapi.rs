//! OpenAPI schemas for the id and time types, which serialize as strings with rules of
//! their own (only with the `openapi` feature).

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::ids::{ClientMessageId, MessageId, UserId};
use crate::time::Timestamp;

fn string_schema(description: &str, format: Option<SchemaFormat>, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(format)
        .description(Some(description))
        .examples([example])
        .into()
}

impl PartialSchema for UserId {
    fn schema() -> RefOr<Schema> {
        string_schema(
            "A user id, `name@server`; the name is 1-32 of [a-z0-9._-]. Where a request takes a user id, a bare `name` means a user of this server.",
            None,
            "alice@kith.example",
        )
    }
}
impl ToSchema for UserId {}

impl PartialSchema for MessageId {
    fn schema() -> RefOr<Schema> {
        string_schema(
            "A message id minted by the sender's home node: a time-ordered UUID (v7), the same everywhere the message travels.",
            Some(SchemaFormat::Custom("uuid".to_owned())),
            "019ac8f2-3b1e-7cc0-9a51-4f1d2e3c4b5a",
        )
    }
}
impl ToSchema for MessageId {}

impl PartialSchema for ClientMessageId {
    fn schema() -> RefOr<Schema> {
        string_schema(
            "The client's own id for a message (1-128 printable ASCII characters); a repeat from the same sender is the same message.",
            None,
            "c-42",
        )
    }
}
impl ToSchema for ClientMessageId {}

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        string_schema(
            "RFC 3339 time in UTC with milliseconds.",
            Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)),
            "2026-11-28T01:51:13.123Z",
        )
    }
}
impl ToSchema for Timestamp {}
