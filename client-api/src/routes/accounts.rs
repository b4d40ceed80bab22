//! Accounts: register and log in.

use axum::extract::State;
use axum::http::StatusCode;
use kith_proto::rest::{AuthResponse, Credentials};
use kith_proto::{ErrorBody, Username};

use crate::error::ApiError;
use crate::json::Json;
use crate::routes::ClientAddr;
use crate::service::{Caller, Password, ServiceError};
use crate::state::ApiState;

/// `POST /api/v1/register`: creates an account and returns a token for it.
#[utoipa::path(
    post,
    path = "/api/v1/register",
    tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 201, description = "Account created", body = AuthResponse),
        (status = 400, description = "Not JSON of this shape, or a username or password outside its rules", body = ErrorBody),
        (status = 409, description = "Username taken", body = ErrorBody),
        (status = 413, description = "Request body over 512 KiB", body = ErrorBody),
        (status = 429, description = "Too many account requests from this address", body = ErrorBody),
        (status = 408, description = "The body did not arrive within --http-body-timeout; the connection is closed", body = ErrorBody),
        (status = 503, description = "The store (or a peer the request needs) does not answer; retry later", body = ErrorBody),
    )
)]
pub(crate) async fn register(
    State(state): State<ApiState>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<Credentials>,
) -> Result<(StatusCode, axum::Json<AuthResponse>), ApiError> {
    limit(&state, addr)?;
    let device = body.device_id.unwrap_or_default();
    let (username, password) = parse_credentials(body)?;
    let user = state.service.register(username, password, device).await?;
    respond(&state, Caller { user, device }).map(|auth| (StatusCode::CREATED, auth))
}

/// `POST /api/v1/login`: exchanges a username and password for a token.
#[utoipa::path(
    post,
    path = "/api/v1/login",
    tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 200, description = "Logged in", body = AuthResponse),
        (status = 400, description = "Not JSON of this shape", body = ErrorBody),
        (status = 401, description = "Wrong username or password (also for a username outside its rules: no account has it)", body = ErrorBody),
        (status = 409, description = "A new device, but the user has five already", body = ErrorBody),
        (status = 408, description = "The body did not arrive within --http-body-timeout; the connection is closed", body = ErrorBody),
        (status = 413, description = "Request body over 512 KiB", body = ErrorBody),
        (status = 429, description = "Too many account requests from this address, or too many failed logins of this account (retry after the wait the message names)", body = ErrorBody),
        (status = 503, description = "The store (or a peer the request needs) does not answer; retry later", body = ErrorBody),
    )
)]
pub(crate) async fn login(
    State(state): State<ApiState>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<Credentials>,
) -> Result<axum::Json<AuthResponse>, ApiError> {
    limit(&state, addr)?;
    // A malformed username cannot belong to anyone: answer as for a wrong password.
    let device = body.device_id.unwrap_or_default();
    let (username, password) = parse_credentials(body).map_err(|_| ServiceError::InvalidCredentials)?;
    // Guesses at one account slow down wherever they come from.
    state.limits.check_login(username.as_str())?;
    let result = state.service.login(username.clone(), password, device).await;
    match &result {
        Ok(_) => state.limits.login_result(username.as_str(), true),
        Err(ServiceError::InvalidCredentials) => state.limits.login_result(username.as_str(), false),
        Err(_) => {}
    }
    respond(&state, Caller { user: result?, device })
}

/// The per-address allowance of account requests; `addr` is the real client (behind a
/// trusted proxy, the address it forwarded).
fn limit(state: &ApiState, addr: std::net::IpAddr) -> Result<(), ApiError> {
    state.limits.check_account(addr).inspect_err(|_| tracing::debug!(client = %addr, "account requests rate limited"))
}

fn respond(state: &ApiState, caller: Caller) -> Result<axum::Json<AuthResponse>, ApiError> {
    let token = state.tokens.issue(&caller)?;
    Ok(axum::Json(AuthResponse { user_id: caller.user, device_id: caller.device, token }))
}

fn parse_credentials(body: Credentials) -> Result<(Username, Password), ApiError> {
    let username = Username::parse(&body.username).map_err(|e| ServiceError::InvalidRequest(e.to_string()))?;
    let password = Password::parse(body.password)?;
    Ok((username, password))
}
