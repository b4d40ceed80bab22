//! Accounts: register and log in.

use axum::extract::State;
use axum::http::StatusCode;
use kith_proto::rest::{AuthResponse, Credentials};
use kith_proto::{ErrorBody, Username};

use crate::error::ApiError;
use crate::json::Json;
use crate::routes::ClientAddr;
use crate::service::{Password, ServiceError};
use crate::state::ApiState;

/// `POST /api/v1/register`: creates an account and returns a token for it.
#[utoipa::path(
    post,
    path = "/api/v1/register",
    tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 201, description = "Account created", body = AuthResponse),
        (status = 400, description = "Invalid username or password", body = ErrorBody),
        (status = 409, description = "Username taken", body = ErrorBody),
        (status = 429, description = "Too many account requests from this address", body = ErrorBody),
    )
)]
pub(crate) async fn register(
    State(state): State<ApiState>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<Credentials>,
) -> Result<(StatusCode, axum::Json<AuthResponse>), ApiError> {
    state.limits.check_account(addr)?;
    let (username, password) = parse_credentials(body)?;
    let user_id = state.service.register(username, password).await?;
    let token = state.tokens.issue(&user_id)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(AuthResponse { user_id, token }),
    ))
}

/// `POST /api/v1/login`: exchanges a username and password for a token.
#[utoipa::path(
    post,
    path = "/api/v1/login",
    tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 200, description = "Logged in", body = AuthResponse),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "Wrong username or password", body = ErrorBody),
        (status = 429, description = "Too many account requests from this address", body = ErrorBody),
    )
)]
pub(crate) async fn login(
    State(state): State<ApiState>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<Credentials>,
) -> Result<axum::Json<AuthResponse>, ApiError> {
    state.limits.check_account(addr)?;
    // A malformed username cannot belong to anyone: answer as for a wrong password.
    let (username, password) =
        parse_credentials(body).map_err(|_| ServiceError::InvalidCredentials)?;
    let user_id = state.service.login(username, password).await?;
    let token = state.tokens.issue(&user_id)?;
    Ok(axum::Json(AuthResponse { user_id, token }))
}

fn parse_credentials(body: Credentials) -> Result<(Username, Password), ApiError> {
    let username =
        Username::parse(&body.username).map_err(|e| ServiceError::InvalidRequest(e.to_string()))?;
    let password = Password::parse(body.password)?;
    Ok((username, password))
}
