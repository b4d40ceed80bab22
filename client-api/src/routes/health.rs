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

/// `GET /readyz`: the node can serve requests (its store, and Redis when instances share one,
/// answer); a 503 names the part that does not.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, body = HealthResponse),
        (status = 503, description = "The store or Redis does not answer (the message says which)", body = ErrorBody),
    )
)]
pub(crate) async fn readyz(State(state): State<ApiState>) -> Result<axum::Json<HealthResponse>, ApiError> {
    state.service.ready().await.map_err(|e| match e {
        crate::service::ServiceError::Unavailable(why) => ApiError::NotReady(why),
        other => other.into(),
    })?;
    Ok(axum::Json(HealthResponse { status: "ok".into() }))
}
