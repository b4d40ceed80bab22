//! The router: one module per resource.

mod accounts;
mod health;
mod keys;
mod messages;
pub(crate) mod openapi;
mod presence;
mod web;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, post, put};

use crate::error::ApiError;
use crate::limits::MAX_BODY_BYTES;
use crate::state::ApiState;

/// Every route of the client API.
pub fn router(state: ApiState) -> Router {
    routes()
        .router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Every path the router serves, in axum's syntax (`/api/v1/keys/{user_id}`): the test that
/// holds the OpenAPI document to the router compares the two.
pub fn route_paths() -> Vec<&'static str> {
    routes().paths
}

/// The routes, with the list of their paths, built together so neither can miss one.
struct Routes {
    router: Router<ApiState>,
    paths: Vec<&'static str>,
}

impl Routes {
    fn route(mut self, path: &'static str, handlers: MethodRouter<ApiState>) -> Self {
        self.router = self.router.route(path, handlers);
        self.paths.push(path);
        self
    }
}

fn routes() -> Routes {
    Routes { router: Router::new(), paths: Vec::new() }
        .route("/api/v1/register", post(accounts::register))
        .route("/api/v1/login", post(accounts::login))
        .route("/api/v1/messages", post(messages::send).get(messages::history))
        .route("/api/v1/presence/{user_id}", get(presence::presence))
        .route("/api/v1/settings/presence", get(presence::settings).put(presence::set_settings))
        .route("/api/v1/keys", put(keys::publish))
        .route("/api/v1/keys/count", get(keys::count))
        .route("/api/v1/keys/removals", post(keys::publish_removal))
        .route("/api/v1/keys/{user_id}", get(keys::claim))
        .route("/api/v1/keys/{user_id}/devices", get(keys::devices))
        .route("/api/v1/devices/{device_id}", delete(keys::remove_device))
        .route("/api/v1/ws", get(crate::ws::upgrade))
        .route("/api/v1/openapi.json", get(openapi::openapi_json))
        .route("/", get(web::index))
        .route("/app.js", get(web::app_js))
        .route("/app.css", get(web::app_css))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
}

async fn not_found() -> ApiError {
    ApiError::NoRoute("no such endpoint; see /api/v1/openapi.json".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The client's IP address (the TCP peer, or what a trusted proxy forwarded).
pub(crate) use crate::client_addr::ClientAddr;
