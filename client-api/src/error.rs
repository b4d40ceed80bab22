//! Every failure of the API, mapped once to an HTTP status and the JSON error body (and, for
//! the WebSocket, to an `error` frame).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kith_proto::{ErrorBody, ErrorCode, ServerFrame};
use tracing::error;

use crate::service::ServiceError;

/// An error on its way to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The node refused or failed the request.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The body is not JSON of the documented shape.
    #[error("{0}")]
    InvalidJson(String),
    /// The body or a field is over its size limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// No `Authorization: Bearer` header (or `?token=` on the WebSocket).
    #[error("missing bearer token: send Authorization: Bearer <token>")]
    MissingToken,
    /// The token is malformed, not signed by this node, or not for one of its users.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The token's `exp` has passed.
    #[error("token expired: log in again")]
    TokenExpired,
    /// No route matches the path.
    #[error("{0}")]
    NoRoute(String),
    /// The route exists but not for this method.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// Too many requests from this user or address.
    #[error("rate limit exceeded: slow down and retry")]
    RateLimited,
    /// `GET /api/v1/ws` without a valid WebSocket handshake (no `Upgrade: websocket`, a
    /// `Sec-WebSocket-Version` other than 13, no `Sec-WebSocket-Key`): the status the handshake
    /// rules give (400, or 426 when the connection cannot be upgraded) and what is wrong.
    #[error("not a WebSocket handshake: {reason}")]
    NotWebSocket {
        /// 400 or 426.
        status: StatusCode,
        /// Which header is missing or wrong.
        reason: String,
    },
    /// The request's body did not arrive within the body read timeout.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// The account has failed logins in a row; the next attempt must wait this long.
    #[error("too many failed logins for this account: retry in {} s", .0.as_secs().max(1))]
    LoginBackoff(std::time::Duration),
    /// A WebSocket handshake from a web page whose origin this node does not allow.
    #[error("origin {0:?} may not open a WebSocket to this node")]
    OriginNotAllowed(String),
    /// `GET /readyz`: the node cannot serve now, and which of its parts is why (words for an
    /// operator, naming a component, never a detail such as an address).
    #[error("not ready: {0}")]
    NotReady(String),
}

impl ApiError {
    /// The status, code and client-facing message. Internal details stay in the log.
    pub fn parts(&self) -> (StatusCode, ErrorCode, String) {
        use ServiceError as S;
        let (status, code) = match self {
            Self::Service(S::InvalidRequest(_)) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest),
            Self::Service(S::UsernameTaken(_)) => (StatusCode::CONFLICT, ErrorCode::UsernameTaken),
            Self::Service(S::InvalidCredentials) => (StatusCode::UNAUTHORIZED, ErrorCode::InvalidCredentials),
            Self::Service(S::UnknownUser(_) | S::UnknownMessage(_) | S::UnknownConversation(..)) => {
                (StatusCode::NOT_FOUND, ErrorCode::NotFound)
            }
            Self::Service(S::UnknownServer(_)) => (StatusCode::NOT_FOUND, ErrorCode::UnknownServer),
            Self::Service(S::Forbidden(_)) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            Self::Service(S::TooManyDevices(_)) => (StatusCode::CONFLICT, ErrorCode::TooManyDevices),
            Self::Service(S::NoSuchDevice(..)) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            Self::Service(S::UnknownDevice(..)) => (StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken),
            // Well formed by the schema, but the keys do not decode or verify: no schema can say
            // that, so it is not the 400 of a malformed request.
            Self::Service(S::InvalidKeys(_)) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::InvalidRequest),
            Self::Service(S::UserIdentityConflict(_)) => (StatusCode::CONFLICT, ErrorCode::UserIdentityConflict),
            Self::Service(S::TooManySessions(_)) => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            Self::Service(S::Unavailable(_)) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            Self::Service(S::Internal(_)) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
            Self::InvalidJson(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidJson),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge),
            Self::MissingToken => (StatusCode::UNAUTHORIZED, ErrorCode::MissingToken),
            Self::InvalidToken(_) => (StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken),
            Self::TokenExpired => (StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired),
            Self::RateLimited => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            Self::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            Self::NoRoute(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            Self::NotWebSocket { status, .. } => (*status, ErrorCode::InvalidRequest),
            Self::OriginNotAllowed(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            Self::LoginBackoff(_) => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, ErrorCode::RequestTimeout),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::InvalidRequest),
        };
        let message = match self {
            Self::Service(S::Internal(detail)) => {
                error!(%detail, "internal error");
                "internal error; the server log has the details".to_owned()
            }
            Self::Service(S::Unavailable(detail)) => {
                tracing::warn!(%detail, "service unavailable");
                "the server cannot handle this right now; retry later".to_owned()
            }
            other => other.to_string(),
        };
        (status, code, message)
    }

    /// The WebSocket `error` frame for this error.
    pub fn to_frame(&self, client_message_id: Option<String>) -> ServerFrame {
        let (_, code, message) = self.parts();
        ServerFrame::Error { code, message, client_message_id }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        (status, axum::Json(ErrorBody::new(code, message))).into_response()
    }
}
