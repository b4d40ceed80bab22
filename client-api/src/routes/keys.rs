//! The key directory: devices publish the public halves of their end-to-end keys; senders
//! claim them to set up sessions. The node stores and serves keys; it never holds a secret.

use axum::extract::State;

use crate::path::Path;
use axum::http::StatusCode;
use kith_proto::keys::{KeyBundles, KeyCount, KeyUpload, RemovalUpload};
use kith_proto::limits::{MAX_CERTIFICATE_BYTES, MAX_KEY_BYTES, MAX_PREKEYS_PER_UPLOAD};
use kith_proto::openapi::UserRef;
use kith_proto::{DeviceId, ErrorBody};

use crate::auth::AuthUser;
use crate::error::ApiError;
use crate::json::Json;
use crate::service::ServiceError;
use crate::state::ApiState;
use crate::validate;

/// `PUT /api/v1/keys`: publishes (or rotates) the calling device's identity, signed prekey and
/// certificate and adds one-time prekeys. Every signature is checked before anything is stored;
/// the certificate's user key becomes the account's user identity if it has none.
#[utoipa::path(
    put,
    path = "/api/v1/keys",
    tag = "keys",
    request_body = KeyUpload,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Stored; how many one-time prekeys the device now has", body = KeyCount),
        (status = 400, description = "Not JSON of this shape, or a field outside its rules (length, count, base64 alphabet)", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 409, description = "The certificate is by another user identity than the account's", body = ErrorBody),
        (status = 408, description = "The body did not arrive within --http-body-timeout; the connection is closed", body = ErrorBody),
        (status = 413, description = "Request body over 512 KiB", body = ErrorBody),
        (status = 422, description = "Well formed, but a key does not decode, a signature does not verify, or the device would hold more than 500 one-time prekeys", body = ErrorBody),
        (status = 503, description = "The store (or a peer the request needs) does not answer; retry later", body = ErrorBody),
    )
)]
pub(crate) async fn publish(
    State(state): State<ApiState>,
    auth: AuthUser,
    Json(body): Json<KeyUpload>,
) -> Result<axum::Json<KeyCount>, ApiError> {
    let caller = auth.into_caller();
    if body.one_time_pre_keys.len() > MAX_PREKEYS_PER_UPLOAD {
        return Err(ServiceError::InvalidRequest(format!(
            "at most {MAX_PREKEYS_PER_UPLOAD} one-time prekeys per upload (got {})",
            body.one_time_pre_keys.len()
        ))
        .into());
    }
    let oversized = std::iter::once(&body.identity)
        .chain(std::iter::once(&body.signed_pre_key))
        .chain(&body.one_time_pre_keys)
        .any(|key| key.len() > MAX_KEY_BYTES);
    if oversized {
        return Err(ServiceError::InvalidRequest(format!("a key is longer than {MAX_KEY_BYTES} characters")).into());
    }
    if body.certificate.len() > MAX_CERTIFICATE_BYTES {
        return Err(ServiceError::InvalidRequest(format!(
            "the certificate is longer than {MAX_CERTIFICATE_BYTES} characters"
        ))
        .into());
    }
    Ok(axum::Json(state.service.publish_keys(&caller, body).await?))
}

/// `GET /api/v1/keys/{userId}`: a prekey bundle for each of the user's devices, each with one
/// one-time prekey claimed for the caller alone (none when the device has run out; the bundle
/// then holds only the signed prekey). Rate limited per caller.
#[utoipa::path(
    get,
    path = "/api/v1/keys/{userId}",
    tag = "keys",
    params(("userId" = inline(UserRef), Path, description = "name@server, or a bare name for a user of this server")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One bundle per device with keys", body = KeyBundles),
        (status = 400, description = "Malformed user id", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such user, or no such server", body = ErrorBody),
        (status = 429, description = "Claiming too fast", body = ErrorBody),
        (status = 503, description = "The store (or a peer the request needs) does not answer; retry later", body = ErrorBody),
    )
)]
pub(crate) async fn claim(
    State(state): State<ApiState>,
    auth: AuthUser,
    Path(user_id): Path<String>,
) -> Result<axum::Json<KeyBundles>, ApiError> {
    let caller = auth.into_caller();
    let user = validate::user_field("userId", &user_id, state.service.server_name())?;
    state.limits.check_key_claim(&caller.user)?;
    Ok(axum::Json(state.service.claim_keys(&caller, &user).await?))
}

/// `GET /api/v1/keys/{userId}/devices`: the user's devices with their identity and signed
/// prekey, claiming no one-time prekey; for keeping a device list current without using up
/// the user's prekeys.
#[utoipa::path(
    get,
    path = "/api/v1/keys/{userId}/devices",
    tag = "keys",
    params(("userId" = inline(UserRef), Path, description = "name@server, or a bare name for a user of this server")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One bundle per device with keys, without one-time prekeys", body = KeyBundles),
        (status = 400, description = "Malformed user id", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such user, or no such server", body = ErrorBody),
        (status = 503, description = "The store (or a peer the request needs) does not answer; retry later", body = ErrorBody),
    )
)]
pub(crate) async fn devices(
    State(state): State<ApiState>,
    auth: AuthUser,
    Path(user_id): Path<String>,
) -> Result<axum::Json<KeyBundles>, ApiError> {
    let caller = auth.into_caller();
    let user = validate::user_field("userId", &user_id, state.service.server_name())?;
    Ok(axum::Json(state.service.device_keys(&caller, &user).await?))
}

/// `GET /api/v1/keys/count`: how many one-time prekeys the calling device has left, so it
/// knows when to upload more.
#[utoipa::path(
    get,
    path = "/api/v1/keys/count",
    tag = "keys",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The count", body = KeyCount),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 503, description = "The store (or a peer the request needs) does not answer; retry later", body = ErrorBody),
    )
)]
pub(crate) async fn count(State(state): State<ApiState>, auth: AuthUser) -> Result<axum::Json<KeyCount>, ApiError> {
    let caller = auth.into_caller();
    Ok(axum::Json(state.service.key_count(&caller).await?))
}

/// `DELETE /api/v1/devices/{deviceId}`: removes one of the caller's devices with its keys and
/// its queue (to make room for a new one, or after losing a phone).
#[utoipa::path(
    delete,
    path = "/api/v1/devices/{deviceId}",
    tag = "keys",
    params(("deviceId" = DeviceId, Path, description = "The device to remove")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Not a device id (an integer 0 to 4294967295)", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such device", body = ErrorBody),
        (status = 503, description = "The store (or a peer the request needs) does not answer; retry later", body = ErrorBody),
    )
)]
pub(crate) async fn remove_device(
    State(state): State<ApiState>,
    auth: AuthUser,
    Path(device): Path<DeviceId>,
) -> Result<StatusCode, ApiError> {
    let caller = auth.into_caller();
    state.service.remove_device(&caller, device).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/keys/removals`: stores a removal of one of the caller's devices, signed by the
/// account's user identity, and removes that device. Contacts are served the removal with the
/// account's keys and stop writing to the device for good.
#[utoipa::path(
    post,
    path = "/api/v1/keys/removals",
    tag = "keys",
    request_body = RemovalUpload,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Stored; the device is gone"),
        (status = 400, description = "Not JSON of this shape, or a field outside its rules (length, base64 alphabet)", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 408, description = "The body did not arrive within --http-body-timeout; the connection is closed", body = ErrorBody),
        (status = 413, description = "Request body over 512 KiB", body = ErrorBody),
        (status = 422, description = "Well formed, but the removal does not decode, is for another user, or is not signed by the account's user identity", body = ErrorBody),
        (status = 503, description = "The store (or a peer the request needs) does not answer; retry later", body = ErrorBody),
    )
)]
pub(crate) async fn publish_removal(
    State(state): State<ApiState>,
    auth: AuthUser,
    Json(body): Json<RemovalUpload>,
) -> Result<StatusCode, ApiError> {
    let caller = auth.into_caller();
    if body.removal.len() > MAX_CERTIFICATE_BYTES {
        return Err(ServiceError::InvalidRequest(format!(
            "the removal is longer than {MAX_CERTIFICATE_BYTES} characters"
        ))
        .into());
    }
    state.service.publish_removal(&caller, body).await?;
    Ok(StatusCode::NO_CONTENT)
}
