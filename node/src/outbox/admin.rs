//! The admin routes, served next to `/metrics` on `--metrics-listen`, for loopback clients
//! only (the metrics port may be open to a scraper; these are for the operator on the machine):
//!
//! - `GET /federation/status`: every destination's outbox and pump ([`FederationStatus`]).
//! - `POST /federation/retry/{peer}`: the pump of `peer` retries now, without waiting out its
//!   backoff; `202`, or `404` for a peer nobody pinned.
//!
//! `kith federation status|retry` (`federation_ctl`) call them. A running node learns of a
//! retry at once this way (a row in the store would have to be polled), and the state shown
//! lives in the pumps' memory anyway.
//!
//! [`FederationStatus`]: super::status::FederationStatus

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kith_proto::{ErrorBody, ErrorCode, ServerName};
use serde::{Deserialize, Serialize};

use crate::state::AppState;

/// The admin routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/federation/status", get(status)).route("/federation/retry/{peer}", post(retry))
}

/// The answer to a retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryAnswer {
    /// The peer whose pump retries now.
    pub destination: String,
}

fn error(status: StatusCode, code: ErrorCode, message: String) -> Response {
    (status, Json(ErrorBody::new(code, message))).into_response()
}

fn refuse_remote(client: SocketAddr) -> Option<Response> {
    (!client.ip().is_loopback()).then(|| {
        error(StatusCode::FORBIDDEN, ErrorCode::Forbidden, "the admin routes answer loopback clients only".into())
    })
}

/// `GET /federation/status`.
async fn status(ConnectInfo(client): ConnectInfo<SocketAddr>, State(state): State<AppState>) -> Response {
    if let Some(refused) = refuse_remote(client) {
        return refused;
    }
    match state.outbox.status(&state.peers).await {
        Ok(status) => Json(status).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, format!("store: {e}")),
    }
}

/// `POST /federation/retry/{peer}`.
async fn retry(
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
    Path(peer): Path<String>,
) -> Response {
    if let Some(refused) = refuse_remote(client) {
        return refused;
    }
    let name = match ServerName::parse(&peer) {
        Ok(name) => name,
        Err(e) => return error(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, format!("peer {peer:?}: {e}")),
    };
    if !state.outbox.retry_now(&name) {
        return error(StatusCode::NOT_FOUND, ErrorCode::UnknownServer, format!("{name} is not a pinned peer"));
    }
    tracing::info!(destination = %name, "retry requested by an operator");
    (StatusCode::ACCEPTED, Json(RetryAnswer { destination: name.to_string() })).into_response()
}
