//! OpenAPI schemas for the id and time types, which serialize as strings with rules of
//! their own, and for the request fields that carry them (only with the `openapi` feature).
//!
//! Every constraint here is built from [`crate::limits`] and from the patterns in
//! [`crate::patterns`], which state the same rules the parsers in [`crate::ids`] check, so the
//! document cannot promise other numbers than the node enforces.

use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Required, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::ids::{ClientMessageId, MessageId, UserId};
use crate::limits::{
    CLIENT_MESSAGE_ID_MAX_BYTES, MAX_CERTIFICATE_BYTES, MAX_KEY_BYTES, MAX_MESSAGE_BYTES, MAX_PREKEYS_PER_UPLOAD,
    PASSWORD_MAX_CHARS, PASSWORD_MIN_CHARS, USERNAME_MAX_BYTES,
};
use crate::patterns;
use crate::time::Timestamp;

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).description(Some(description))
}

/// A string that may also be `null` (an optional field, which serde reads `null` as absent).
fn nullable(builder: ObjectBuilder) -> ObjectBuilder {
    builder.schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]))
}

impl PartialSchema for UserId {
    fn schema() -> RefOr<Schema> {
        string("A user id, `name@server`: the name is 1-32 of [a-z0-9._-] and not only dots; the server a lowercase DNS name (at most 253 characters) with an optional :port.")
            .pattern(Some(patterns::user_id()))
            .max_length(Some(patterns::USER_ID_MAX_BYTES))
            .examples(["alice@kith.example"])
            .into()
    }
}
impl ToSchema for UserId {}

impl PartialSchema for MessageId {
    fn schema() -> RefOr<Schema> {
        string("A message id minted by the sender's home node: a time-ordered UUID (v7) in its hyphenated form, the same everywhere the message travels.")
            .format(Some(SchemaFormat::Custom("uuid".to_owned())))
            .pattern(Some(patterns::MESSAGE_ID))
            .examples(["019ac8f2-3b1e-7cc0-9a51-4f1d2e3c4b5a"])
            .into()
    }
}
impl ToSchema for MessageId {}

impl PartialSchema for ClientMessageId {
    fn schema() -> RefOr<Schema> {
        client_message_id().into()
    }
}
impl ToSchema for ClientMessageId {}

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        string("RFC 3339 time in UTC with milliseconds.")
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .examples(["2026-11-28T01:51:13.123Z"])
            .into()
    }
}
impl ToSchema for Timestamp {}

/// `username` of register and login.
pub fn username() -> ObjectBuilder {
    string("1-32 characters of a-z, 0-9, '.', '_', '-', not only dots.")
        .pattern(Some(patterns::username()))
        .min_length(Some(1))
        .max_length(Some(USERNAME_MAX_BYTES))
        .examples(["alice"])
}

/// `password` of register and login.
pub fn password() -> ObjectBuilder {
    string("8-256 characters.")
        .min_length(Some(PASSWORD_MIN_CHARS))
        .max_length(Some(PASSWORD_MAX_CHARS))
        .examples(["correct horse battery"])
}

/// A user named in a request: `name@server`, or a bare `name` for a user of this server.
pub fn user_ref() -> ObjectBuilder {
    string("`name@server`, or a bare `name` for a user of this server.")
        .pattern(Some(patterns::user_ref()))
        .max_length(Some(patterns::USER_ID_MAX_BYTES))
        .examples(["bob"])
}

/// [`user_ref`] as a query or path parameter's schema.
pub fn user_ref_schema() -> RefOr<Schema> {
    user_ref().into()
}

/// The schema of a user named in a request path (`/presence/{userId}`, `/keys/{userId}`).
#[derive(Debug, Clone, Copy)]
pub struct UserRef;

impl PartialSchema for UserRef {
    fn schema() -> RefOr<Schema> {
        user_ref_schema()
    }
}
impl ToSchema for UserRef {}

/// `clientMessageId`.
pub fn client_message_id() -> ObjectBuilder {
    string("The client's own id for a message (1-128 printable ASCII characters, no space); a repeat from the same sender is the same message.")
        .pattern(Some(patterns::CLIENT_MESSAGE_ID))
        .min_length(Some(1))
        .max_length(Some(CLIENT_MESSAGE_ID_MAX_BYTES))
        .examples(["c-42"])
}

/// `clientMessageId` where it may be left out.
pub fn optional_client_message_id() -> ObjectBuilder {
    nullable(client_message_id())
}

/// The content of a message to send.
pub fn message() -> ObjectBuilder {
    string("The content, up to 65536 bytes of UTF-8 as sent (413 over that), without NUL characters; the server stores and relays it unchanged.")
        .pattern(Some(patterns::NO_NUL))
        .max_length(Some(MAX_MESSAGE_BYTES))
}

/// A key in an upload: standard base64 with padding.
pub fn key() -> ObjectBuilder {
    string("Standard base64 (with padding) of a kith-crypto encoding.")
        .content_encoding("base64")
        .pattern(Some(patterns::BASE64))
        .max_length(Some(MAX_KEY_BYTES))
}

/// The one-time prekeys of an upload.
pub fn one_time_pre_keys() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(key())
        .max_items(Some(MAX_PREKEYS_PER_UPLOAD))
        .description(Some("More one-time prekeys (`OneTimePreKeyPublic`), base64; at most 100 per upload."))
}

/// A certificate or a removal in an upload.
pub fn certificate() -> ObjectBuilder {
    string("Standard base64 (with padding) of a kith-crypto encoding.")
        .content_encoding("base64")
        .pattern(Some(patterns::BASE64))
        .max_length(Some(MAX_CERTIFICATE_BYTES))
}

/// The query of `GET /api/v1/messages`, with the rules the node checks.
impl utoipa::IntoParams for crate::rest::HistoryQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let param = |name: &str, required: bool, description: &str, schema: RefOr<Schema>| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(if required { Required::True } else { Required::False })
                .description(Some(description))
                .schema(Some(schema))
                .build()
        };
        let limit = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(crate::limits::HISTORY_MAX_LIMIT))
            .default(Some(crate::limits::HISTORY_DEFAULT_LIMIT.into()));
        let before = string("A message id (hyphenated UUID).")
            .format(Some(SchemaFormat::Custom("uuid".to_owned())))
            .pattern(Some(patterns::MESSAGE_ID));
        vec![
            param(
                "user1",
                true,
                "One side of the conversation (the caller must be one of the two).",
                user_ref_schema(),
            ),
            param("user2", true, "The other side.", user_ref_schema()),
            param(
                "before",
                false,
                "Only messages older than this message id (the previous page's `nextBefore`).",
                before.into(),
            ),
            param("limit", false, "Page size, 1-100 (default 50).", limit.into()),
        ]
    }
}

impl PartialSchema for crate::ids::DeviceId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(0))
            .maximum(Some(u32::MAX))
            .description(Some("One of a user's devices, 0 to 4294967295 (a user has at most 5)."))
            .into()
    }
}
impl ToSchema for crate::ids::DeviceId {}
