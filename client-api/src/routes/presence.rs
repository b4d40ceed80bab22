//! Presence over REST.

use axum::extract::State;

use crate::path::Path;
use kith_proto::openapi::UserRef;
use kith_proto::{ErrorBody, PresenceSettings, PresenceView};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::json::Json;
use crate::state::ApiState;
use crate::validate;

/// `GET /api/v1/presence/{userId}`: whether a user is online, and when they were last seen.
#[utoipa::path(
    get,
    path = "/api/v1/presence/{userId}",
    tag = "presence",
    params(("userId" = inline(UserRef), Path, description = "name@server, or a bare name for a user of this server")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user's presence", body = PresenceView),
        (status = 400, description = "Malformed user id", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such user, or no such server", body = ErrorBody),
        (status = 503, description = "The store (or a peer the request needs) does not answer; retry later", body = ErrorBody),
    )
)]
pub(crate) async fn presence(
    State(state): State<ApiState>,
    auth: AuthUser,
    Path(user_id): Path<String>,
) -> Result<axum::Json<PresenceView>, ApiError> {
    let user = validate::user_field("userId", &user_id, state.service.server_name())?;
    Ok(axum::Json(state.service.presence(&auth.caller().user, &user).await?))
}

/// `GET /api/v1/settings/presence`: who may see the caller's presence.
#[utoipa::path(
    get,
    path = "/api/v1/settings/presence",
    tag = "presence",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's presence setting", body = PresenceSettings),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "The store (or a peer the request needs) does not answer; retry later", body = ErrorBody),
    )
)]
pub(crate) async fn settings(
    State(state): State<ApiState>,
    auth: AuthUser,
) -> Result<axum::Json<PresenceSettings>, ApiError> {
    let visibility = state.service.presence_visibility(&auth.caller().user).await?;
    Ok(axum::Json(PresenceSettings { visibility }))
}

/// `PUT /api/v1/settings/presence`: sets who may see the caller's presence and `lastSeen`:
/// `everyone`, `contacts` (users with a conversation with them; the default) or `nobody`.
/// Takes effect at once, for watchers already subscribed too.
#[utoipa::path(
    put,
    path = "/api/v1/settings/presence",
    tag = "presence",
    request_body = PresenceSettings,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Stored", body = PresenceSettings),
        (status = 400, description = "Not JSON of this shape, or a visibility other than everyone, contacts, nobody", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 408, description = "The body did not arrive within --http-body-timeout; the connection is closed", body = ErrorBody),
        (status = 413, description = "Request body over 512 KiB", body = ErrorBody),
        (status = 503, description = "The store (or a peer the request needs) does not answer; retry later", body = ErrorBody),
    )
)]
pub(crate) async fn set_settings(
    State(state): State<ApiState>,
    auth: AuthUser,
    Json(body): Json<PresenceSettings>,
) -> Result<axum::Json<PresenceSettings>, ApiError> {
    state.service.set_presence_visibility(&auth.caller().user, body.visibility).await?;
    Ok(axum::Json(body))
}
