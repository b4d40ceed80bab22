//! The OpenAPI document of the client API, served at `GET /api/v1/openapi.json`.

use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use kith_proto::DeviceId;
use kith_proto::keys::{DeviceBundle, KeyBundles, KeyCount, KeyUpload, RemovalUpload};
use kith_proto::rest::{
    AuthResponse, Credentials, HealthResponse, HistoryPage, MessageStatus, MessageView, PresenceSettings,
    PresenceStatus, PresenceView, PresenceVisibility, SendMessageRequest, SendMessageResponse, SendStatus,
};
use kith_proto::ws::{ClientFrame, IncomingMessage, ServerFrame};
use kith_proto::{ErrorBody, ErrorCode, ErrorDetail};

/// The client API's contract.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "kith client API",
        description = "REST and WebSocket API of a kith home node. JSON with camelCase fields; \
                       errors are {\"error\": {\"code\", \"message\"}}. The WebSocket protocol \
                       (GET /api/v1/ws) exchanges ClientFrame and ServerFrame JSON text frames."
    ),
    paths(
        super::accounts::register,
        super::accounts::login,
        super::messages::send,
        super::messages::history,
        super::presence::presence,
        super::presence::settings,
        super::presence::set_settings,
        super::keys::publish,
        super::keys::claim,
        super::keys::devices,
        super::keys::count,
        super::keys::remove_device,
        super::keys::publish_removal,
        crate::ws::upgrade,
        super::health::healthz,
        super::health::readyz,
        openapi_json,
        super::web::index,
        super::web::app_js,
        super::web::app_css,
    ),
    components(schemas(
        Credentials, AuthResponse, SendMessageRequest, SendMessageResponse, SendStatus, HistoryPage,
        MessageView, MessageStatus, PresenceView, PresenceStatus, PresenceSettings,
        PresenceVisibility, HealthResponse, ErrorBody, ErrorDetail,
        ErrorCode, ClientFrame, ServerFrame, IncomingMessage, KeyUpload, KeyCount, KeyBundles, DeviceBundle,
        RemovalUpload, DeviceId,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "accounts", description = "Register and log in"),
        (name = "messages", description = "Send messages and read history"),
        (name = "presence", description = "Who is online"),
        (name = "keys", description = "End-to-end encryption keys of devices"),
        (name = "websocket", description = "Real-time push, acks, receipts and presence"),
        (name = "health", description = "Probes for load balancers"),
        (name = "web", description = "The browser client the node serves (not part of the API)"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme the paths refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "health",
    responses((status = 200, description = "The OpenAPI document of this API", content_type = "application/json")),
)]
pub(crate) async fn openapi_json() -> impl IntoResponse {
    axum::Json(ApiDoc::openapi())
}
