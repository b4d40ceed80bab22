//! `GET /metrics` in the OpenMetrics text format, on its own address (`--metrics-listen`) so it
//! is never exposed with the client API. Per instance: what it counted (messages in, pushed,
//! receipts, commit-to-push latency; see `telemetry`), live sessions, the hand-off between
//! instances (lag, backlog), Redis and database failures (by shard), and per destination the
//! outbox depth, the age of its oldest envelope, whether this instance holds its lease and its
//! pump's state (connected, failed attempts, next attempt, last error). The federation admin
//! routes share the address (loopback clients only).

use std::fmt::Write;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kith_proto::Timestamp;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Serves metrics until shutdown.
pub(crate) async fn serve(listener: TcpListener, state: AppState, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .merge(crate::outbox::admin::routes())
        .with_state(state)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
        tracing::warn!(error = %e, "metrics listener failed");
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.telemetry.encode();
    let _ = writeln!(text, "# HELP kith_instance This instance's name.\n# TYPE kith_instance info");
    let _ = writeln!(text, "kith_instance_info{{instance=\"{}\"}} 1", state.cluster.instance_id());
    let _ = writeln!(text, "# HELP kith_sessions Live WebSocket sessions.\n# TYPE kith_sessions gauge");
    let _ = writeln!(text, "kith_sessions {}", state.sessions.len());
    let _ = writeln!(
        text,
        "# HELP kith_store_errors Database operations that failed, by shard.\n# TYPE kith_store_errors counter"
    );
    for (shard, errors) in state.store.errors() {
        let _ = writeln!(text, "kith_store_errors_total{{shard=\"{shard}\"}} {errors}");
    }
    if state.cluster.is_shared() {
        let _ = writeln!(text, "# HELP kith_redis_up Whether Redis answers.\n# TYPE kith_redis_up gauge");
        let _ = writeln!(text, "kith_redis_up {}", u8::from(state.cluster.ready().is_ok()));
        let _ =
            writeln!(text, "# HELP kith_redis_errors Redis operations that failed.\n# TYPE kith_redis_errors counter");
        let _ = writeln!(text, "kith_redis_errors_total {}", state.cluster.redis_errors());
        let _ = writeln!(
            text,
            "# HELP kith_handoff_lag_seconds How long the newest entry read from this instance's stream waited.\n# TYPE kith_handoff_lag_seconds gauge"
        );
        let _ = writeln!(text, "kith_handoff_lag_seconds {}", state.cluster.handoff_lag_ms() as f64 / 1000.0);
        let _ = writeln!(
            text,
            "# HELP kith_handoff_backlog Entries waiting in this instance's stream.\n# TYPE kith_handoff_backlog gauge"
        );
        let _ = writeln!(text, "kith_handoff_backlog {}", state.cluster.backlog().await.unwrap_or(0));
    }
    let stats = match state.store.outbox_stats().await {
        Ok(stats) => stats,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response(),
    };
    let now = Timestamp::now().as_millis();
    let _ =
        writeln!(text, "# HELP kith_outbox_depth Envelopes waiting for a peer's ack.\n# TYPE kith_outbox_depth gauge");
    for s in &stats {
        let _ = writeln!(text, "kith_outbox_depth{{destination=\"{}\"}} {}", s.destination, s.depth);
    }
    let _ = writeln!(
        text,
        "# HELP kith_outbox_oldest_age_seconds Age of the oldest waiting envelope.\n# TYPE kith_outbox_oldest_age_seconds gauge"
    );
    for s in &stats {
        let age = s.oldest.map_or(0.0, |t| (now - t.as_millis()) as f64 / 1000.0);
        let _ = writeln!(text, "kith_outbox_oldest_age_seconds{{destination=\"{}\"}} {age}", s.destination);
    }
    match state.outbox.status(&state.peers).await {
        Ok(status) => status.write_metrics(&mut text),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n")).into_response(),
    }
    text.push_str("# EOF\n");
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}
