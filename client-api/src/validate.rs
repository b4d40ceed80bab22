//! Checks of request fields against the protocol's rules, shared by REST and WebSocket.

use kith_proto::limits::MAX_MESSAGE_BYTES;
use kith_proto::{ClientMessageId, ServerName, UserId};

use crate::error::ApiError;
use crate::service::{OutgoingMessage, ServiceError};

/// Parses a user id field, where a bare name means a user of `home`.
///
/// # Errors
/// [`ServiceError::InvalidRequest`] naming the field.
pub fn user_field(field: &str, value: &str, home: &ServerName) -> Result<UserId, ApiError> {
    UserId::parse_or_local(value, home).map_err(|e| ServiceError::InvalidRequest(format!("{field}: {e}")).into())
}

/// Checks a message to send: its receiver, its size, its characters and its client id.
///
/// # Errors
/// [`ApiError::PayloadTooLarge`] over 64 KiB; [`ServiceError::InvalidRequest`] for a bad id
/// or a NUL character (which no text column of PostgreSQL can hold).
pub fn outgoing(
    receiver: &str,
    content: String,
    client_message_id: Option<&str>,
    home: &ServerName,
) -> Result<OutgoingMessage, ApiError> {
    if content.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::PayloadTooLarge(format!(
            "message is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
            content.len()
        )));
    }
    if content.contains('\0') {
        return Err(ServiceError::InvalidRequest("message must not contain NUL characters (\\u0000)".into()).into());
    }
    let receiver = user_field("receiverId", receiver, home)?;
    let client_message_id = client_message_id
        .map(ClientMessageId::parse)
        .transpose()
        .map_err(|e| ServiceError::InvalidRequest(e.to_string()))?;
    Ok(OutgoingMessage { receiver, content, client_message_id })
}
