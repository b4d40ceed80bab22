//! Presence over REST.

use axum::extract::State;

use crate::path::Path;
use kith_proto::openapi::UserRef;
use kith_proto::{ErrorBody, PresenceView};

use crate::auth::AuthUser;
use crate::error::ApiError;
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
    _auth: AuthUser,
    Path(user_id): Path<String>,
) -> Result<axum::Json<PresenceView>, ApiError> {
    let user = validate::user_field("userId", &user_id, state.service.server_name())?;
    Ok(axum::Json(state.service.presence(&user).await?))
}
