//! The error body every failed request and every WebSocket `error` frame carries.

use serde::{Deserialize, Serialize};

/// A machine-readable error code; the `message` beside it is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not valid JSON or does not have the documented shape.
    InvalidJson,
    /// A field has a value outside its documented rules (ids, lengths, limits).
    InvalidRequest,
    /// The username is taken.
    UsernameTaken,
    /// The user has five devices already; remove one to add another.
    TooManyDevices,
    /// The account has a different user identity than the one uploaded: link this device from
    /// one of the account's devices, or reset the identity explicitly.
    UserIdentityConflict,
    /// Wrong username or password.
    InvalidCredentials,
    /// No bearer token was given.
    MissingToken,
    /// The token is malformed, wrongly signed or for a user that does not exist.
    InvalidToken,
    /// The token's `exp` has passed; log in again.
    TokenExpired,
    /// The request speaks for another user than the token's.
    Forbidden,
    /// The user, message or conversation does not exist (or is not the caller's to see).
    NotFound,
    /// The receiver's home server is not one this node can reach.
    UnknownServer,
    /// The message or frame is larger than the documented limit.
    PayloadTooLarge,
    /// The request's body did not arrive in time (`--http-body-timeout`); the connection is
    /// closed.
    RequestTimeout,
    /// Too many requests; retry later.
    RateLimited,
    /// The node cannot serve the request right now (store unreachable, shutting down).
    Unavailable,
    /// A bug on the server; the details are in its log.
    Internal,
    /// A code this client does not know yet.
    #[serde(other)]
    Unknown,
}

/// `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong: a code for programs, a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation naming the problem.
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { error: ErrorDetail { code, message: message.into() } }
    }
}
