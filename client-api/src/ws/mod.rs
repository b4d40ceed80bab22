//! The WebSocket endpoint: authenticate, upgrade, then hand the socket to a [`connection`].

mod connection;
pub mod frame;
mod handshake;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::HeaderMap;
use axum::response::Response;
use kith_proto::ErrorBody;
use kith_proto::limits::MAX_WS_FRAME_BYTES;

use crate::auth::WsAuthUser;
use crate::error::ApiError;
use crate::routes::ClientAddr;
use crate::service::ServiceError;
use crate::state::ApiState;

/// What the socket layer reads at most before giving up on a frame. Above the protocol's
/// limit on purpose: a frame between the two is read whole and answered with a clean close
/// (1009); only a larger one is cut off mid-frame, where the TCP connection may end in a reset
/// before the client reads the close frame.
pub(crate) const SOCKET_FRAME_CAP: usize = 2 * MAX_WS_FRAME_BYTES;

/// Socket buffer sizes: small, because most connections are idle most of the time and memory
/// per connection is what bounds how many one node holds.
const READ_BUFFER_BYTES: usize = 1024;
const WRITE_BUFFER_BYTES: usize = 2 * 1024;

/// `GET /api/v1/ws`: upgrades to the real-time protocol (JSON text frames, see `docs/api.md`).
///
/// The token comes as `Authorization: Bearer …` or as `?token=…`.
#[utoipa::path(
    get,
    path = "/api/v1/ws",
    tag = "websocket",
    params(
        ("token" = Option<String>, Query, description = "The bearer token, for clients that cannot set headers"),
        ("Connection" = inline(handshake::Connection), Header, description = "Must name `upgrade`"),
        ("Upgrade" = inline(handshake::Upgrade), Header, description = "`websocket`"),
        ("Sec-WebSocket-Version" = inline(handshake::Version), Header, description = "`13`"),
        ("Sec-WebSocket-Key" = String, Header, description = "The client's handshake nonce (RFC 6455: base64 of 16 random bytes)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol: ClientFrame and ServerFrame JSON text frames"),
        (status = 400, description = "Not a WebSocket handshake (no Upgrade: websocket, Sec-WebSocket-Version not 13, no Sec-WebSocket-Key)", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token, or a device that does not exist", body = ErrorBody),
        (status = 403, description = "An Origin header of a web page this node does not allow (--allowed-origin)", body = ErrorBody),
        (status = 426, description = "The connection cannot be upgraded (HTTP/1.0, or no Connection: upgrade)", body = ErrorBody),
        (status = 429, description = "Too many connection attempts from this address or by this user, or the user holds as many connections as one may", body = ErrorBody),
        (status = 503, description = "The node holds as many connections as it may, or the store does not answer", body = ErrorBody),
    )
)]
pub(crate) async fn upgrade(
    State(state): State<ApiState>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    auth: Result<WsAuthUser, ApiError>,
) -> Result<Response, ApiError> {
    // The handshake is checked before the token: it is cheaper, and a request that is no
    // handshake gets the same JSON error body as every other refusal, not axum's plain text.
    let upgrade = upgrade
        .map_err(|rejection| ApiError::NotWebSocket { status: rejection.status(), reason: rejection.body_text() })?;
    state.origins.check(&headers)?;
    state.limits.check_ws_address(addr)?;
    let (caller, until) = auth?.into_parts();
    state.limits.check_ws_user(&caller.user)?;
    // The session opens before the upgrade, so a refusal (a removed device, a store that does
    // not answer) is an HTTP error the client can read, not a socket closed at once.
    let slot = state
        .connection_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ServiceError::Unavailable("the node holds as many connections as it may".into()))?;
    let session = state.service.open_session(&caller).await?;
    let connections = state.connections.clone();
    Ok(upgrade
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(SOCKET_FRAME_CAP)
        .max_frame_size(SOCKET_FRAME_CAP)
        .on_upgrade(move |socket| {
            connections.track_future(async move {
                connection::serve(socket, caller, until, session, state).await;
                drop(slot);
            })
        }))
}
