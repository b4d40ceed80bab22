//! Probes for load balancers and orchestrators.

use axum::extract::State;
use kith_proto::ErrorBody;
use kith_proto::rest::HealthResponse;

use crate::error::ApiError;
use crate::state::ApiState;

/// `GET /healthz`: the process is alive and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = HealthResponse)))]
pub(crate) async fn healthz() -> axum::Json<HealthResponse> {
    axum::Json(HealthResponse { status: "ok".into() })
}

/// `GET /readyz`: the node can serve requests (its store answers).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, body = HealthResponse),
        (status = 503, description = "The store does not answer", body = ErrorBody),
    )
)]
pub(crate) async fn readyz(State(state): State<ApiState>) -> Result<axum::Json<HealthResponse>, ApiError> {
    state.service.ready().await?;
    Ok(axum::Json(HealthResponse { status: "ok".into() }))
}
