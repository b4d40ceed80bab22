//! Messages over REST: send one, read a conversation's history.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use kith_proto::limits::{HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT};
use kith_proto::rest::{HistoryPage, HistoryQuery, SendMessageRequest, SendMessageResponse, SendStatus};
use kith_proto::{ErrorBody, MessageId};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::json::Json;
use crate::service::ServiceError;
use crate::state::ApiState;
use crate::validate;

/// `POST /api/v1/messages`: stores a message and delivers it.
///
/// Answers 201 once the message is durably stored; a repeat of a `clientMessageId` answers 200
/// with the first message's id and stores nothing.
#[utoipa::path(
    post,
    path = "/api/v1/messages",
    tag = "messages",
    request_body = SendMessageRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Stored", body = SendMessageResponse),
        (status = 200, description = "A repeat of an earlier clientMessageId; nothing new stored", body = SendMessageResponse),
        (status = 400, description = "Not JSON of this shape, or a field outside its rules", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 403, description = "senderId is not the token's user", body = ErrorBody),
        (status = 404, description = "Unknown receiver or server", body = ErrorBody),
        (status = 413, description = "Message over 64 KiB, or the body over 512 KiB", body = ErrorBody),
        (status = 429, description = "Sending too fast", body = ErrorBody),
        (status = 408, description = "The body did not arrive within --http-body-timeout; the connection is closed", body = ErrorBody),
        (status = 503, description = "The store (or a peer the request needs) does not answer; retry later", body = ErrorBody),
    )
)]
pub(crate) async fn send(
    State(state): State<ApiState>,
    auth: AuthUser,
    Json(body): Json<SendMessageRequest>,
) -> Result<(StatusCode, axum::Json<SendMessageResponse>), ApiError> {
    let caller = auth.into_caller();
    let home = state.service.server_name();
    let sender = validate::user_field("senderId", &body.sender_id, home)?;
    if sender != caller.user {
        return Err(ServiceError::Forbidden(format!("senderId {sender} is not you ({})", caller.user)).into());
    }
    let message = validate::outgoing(&body.receiver_id, body.message, body.client_message_id.as_deref(), home)?;
    state.limits.check_message(&caller.user)?;
    let outcome = state.service.send(&caller, message).await?.await?;
    let status = if outcome.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((
        status,
        axum::Json(SendMessageResponse {
            status: SendStatus::Sent,
            message_id: outcome.message_id,
            timestamp: outcome.timestamp,
        }),
    ))
}

/// `GET /api/v1/messages`: a page of the caller's conversation with another user.
///
/// The newest `limit` messages before `before`, oldest first; `nextBefore` pages back.
#[utoipa::path(
    get,
    path = "/api/v1/messages",
    tag = "messages",
    params(HistoryQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of history", body = HistoryPage),
        (status = 400, description = "A query parameter missing or outside its rules", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such conversation for the caller", body = ErrorBody),
        (status = 503, description = "The store (or a peer the request needs) does not answer; retry later", body = ErrorBody),
    )
)]
pub(crate) async fn history(
    State(state): State<ApiState>,
    auth: AuthUser,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<HistoryPage>, ApiError> {
    let caller = auth.into_caller().user;
    let Query(query) = query.map_err(|e| ServiceError::InvalidRequest(e.body_text()))?;
    let home = state.service.server_name();
    let user1 = validate::user_field("user1", &query.user1, home)?;
    let user2 = validate::user_field("user2", &query.user2, home)?;
    let peer = if user1 == caller {
        user2
    } else if user2 == caller {
        user1
    } else {
        // The same answer as for a conversation that does not exist: no probing others' chats.
        return Err(ServiceError::UnknownConversation(user1, user2).into());
    };
    let limit = query.limit.unwrap_or(HISTORY_DEFAULT_LIMIT);
    if !(1..=HISTORY_MAX_LIMIT).contains(&limit) {
        return Err(
            ServiceError::InvalidRequest(format!("limit must be 1 to {HISTORY_MAX_LIMIT} (got {limit})")).into()
        );
    }
    let before = query
        .before
        .as_deref()
        .map(MessageId::parse)
        .transpose()
        .map_err(|e| ServiceError::InvalidRequest(format!("before: {e}")))?;
    match state.service.history(&caller, &peer, before, limit).await {
        Ok(page) => Ok(axum::Json(page)),
        Err(ServiceError::UnknownUser(_)) => Err(ServiceError::UnknownConversation(caller, peer).into()),
        Err(e) => Err(e.into()),
    }
}
