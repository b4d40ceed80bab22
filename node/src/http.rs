//! The client listener: accepts connections and serves HTTP/1.1 (with WebSocket upgrades) on
//! each, so that a client who opens a socket and stalls costs the node a bounded amount.
//!
//! - Request headers must arrive within `--http-header-timeout`, counted from when the node
//!   starts waiting for a request (so an idle keep-alive connection is closed after it too).
//! - A request body must arrive whole within `--http-body-timeout`; otherwise `408` and the
//!   connection closes.
//! - At most `--max-http-connections` plain HTTP connections are open at once; beyond them a
//!   new connection gets `503` and is closed. A connection upgraded to a WebSocket stops
//!   counting here (it holds one of `--max-connections` instead).
//!
//! Connections closed for stalling are logged as a warning, at most once per
//! [`STALL_LOG_EVERY`], with how many were closed since the last line.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use kith_client_api::ApiError;
use kith_client_api::limits::MAX_BODY_BYTES;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, warn};

/// How often, at most, the node logs that it closed stalled connections or refused some.
pub const STALL_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long the accept loop pauses after an accept error (out of file descriptors, most
/// likely), so that it does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long shutdown waits for plain HTTP connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Timeouts and caps of the client listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Request headers must arrive within this long (and an idle keep-alive connection is
    /// closed after it).
    pub header_timeout: Duration,
    /// A request body must arrive whole within this long once its headers did.
    pub body_timeout: Duration,
    /// Plain HTTP connections open at once (WebSockets are counted apart).
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(10), body_timeout: Duration::from_secs(30), max_connections: 8192 }
    }
}

/// Counts what the listener shed, and says so in the log now and then.
#[derive(Debug, Default)]
struct Shed {
    stalled: AtomicU64,
    refused: AtomicU64,
    last_log: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Shed {
    fn stalled(&self, limits: &HttpLimits) {
        self.stalled.fetch_add(1, Ordering::Relaxed);
        self.maybe_log(limits);
    }

    fn refused(&self, limits: &HttpLimits) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.maybe_log(limits);
    }

    fn maybe_log(&self, limits: &HttpLimits) {
        let now = tokio::time::Instant::now();
        {
            let mut last = self.last_log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| now.duration_since(at) < STALL_LOG_EVERY) {
                return;
            }
            *last = Some(now);
        }
        let stalled = self.stalled.swap(0, Ordering::Relaxed);
        let refused = self.refused.swap(0, Ordering::Relaxed);
        warn!(
            stalled,
            refused,
            header_timeout = ?limits.header_timeout,
            body_timeout = ?limits.body_timeout,
            max_http_connections = limits.max_connections,
            "closed HTTP connections that stalled (headers or body not sent in time) or were over the cap"
        );
    }
}

/// Where client connections come from: plain TCP (behind a TLS proxy, or on loopback), or a
/// listener that completes TLS handshakes itself.
#[derive(Debug)]
pub enum ClientListener {
    /// Plain HTTP.
    Plain(TcpListener),
    /// `https://` and `wss://`.
    Tls(crate::tls::TlsListener),
}

/// Serves `app` on `listener` until `shutdown`, then waits (a while) for requests in progress.
///
/// # Errors
/// Never today: accept errors are logged and retried, since they pass (a full file table
/// empties as stalled connections are closed).
pub async fn serve(
    listener: ClientListener,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let shed = Arc::new(Shed::default());
    let connections = TaskTracker::new();
    let accepting =
        Accepting { app, limits, shed: shed.clone(), shutdown: shutdown.clone(), connections: connections.clone() };
    match listener {
        ClientListener::Plain(listener) => {
            let mut accept_errors = 0u64;
            loop {
                let (stream, addr) = tokio::select! {
                    () = shutdown.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            accept_errors += 1;
                            // Logged on the first and then every 100th, not on each: it repeats fast.
                            if accept_errors % 100 == 1 {
                                warn!(error = %e, errors = accept_errors, "cannot accept client connections");
                            }
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                            continue;
                        }
                    },
                };
                send_without_delay(&stream);
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    refuse(&stream);
                    shed.refused(&limits);
                    continue;
                };
                accepting.spawn(stream, addr, slot);
            }
        }
        // Handshakes happen in the TLS listener's own loop, each with its deadline; what comes
        // out is a connection ready for HTTP.
        ClientListener::Tls(mut listener) => loop {
            let (stream, addr) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.next() => match accepted {
                    Some(accepted) => accepted,
                    None => break,
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Over the cap: closed (an answer would need a write through TLS that a stalled
                // client could hold up).
                drop(stream);
                shed.refused(&limits);
                continue;
            };
            accepting.spawn(stream, addr, slot);
        },
    }
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait()).await.is_err() {
        warn!(connections = connections.len(), "HTTP requests still in progress at shutdown");
    }
    Ok(())
}

/// Turns off Nagle's algorithm on an accepted connection. Frames here are small and each one
/// matters now: with it on, a frame written while the one before is still unacknowledged
/// waits for the client's ACK, which a client delays (40 ms on Linux, 200 ms elsewhere) or
/// sends only with its next frame; a `sent` answer or a receipt came one send later, 20 ms
/// at a client sending every 20 ms (docs/benchmarks.md).
pub(crate) fn send_without_delay(stream: &tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "cannot turn off Nagle's algorithm on a client connection");
    }
}

/// What every accepted connection is served with.
struct Accepting {
    app: Router,
    limits: HttpLimits,
    shed: Arc<Shed>,
    shutdown: CancellationToken,
    connections: TaskTracker,
}

impl Accepting {
    /// Serves one accepted connection (plain or TLS) on a task of its own, which holds the
    /// connection's slot until it ends.
    fn spawn<I>(&self, io: I, addr: SocketAddr, slot: tokio::sync::OwnedSemaphorePermit)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (app, shed, shutdown) = (self.app.clone(), self.shed.clone(), self.shutdown.clone());
        let limits = self.limits;
        self.connections.spawn(async move {
            serve_connection(io, addr, app, limits, shed, shutdown).await;
            drop(slot);
        });
    }
}

/// Answers a connection over the cap with `503` and closes it, without waiting on the client:
/// the answer fits in an empty socket buffer, and if it does not go out, the close says enough.
fn refuse(stream: &tokio::net::TcpStream) {
    let body = r#"{"error":{"code":"unavailable","message":"the node holds as many HTTP connections as it may; retry later"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// Serves one connection: requests (each body read within the body timeout) until it closes,
/// stalls, is upgraded, or the node shuts down.
async fn serve_connection<I>(
    io: I,
    addr: SocketAddr,
    app: Router,
    limits: HttpLimits,
    shed: Arc<Shed>,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let body_shed = shed.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let (mut app, shed) = (app.clone(), body_shed.clone());
        async move {
            let request = match buffered(request, addr, limits.body_timeout).await {
                Ok(request) => request,
                Err(Refusal::Slow(response)) => {
                    shed.stalled(&limits);
                    return Ok::<_, Infallible>(response);
                }
                Err(Refusal::Other(response)) => return Ok(response),
            };
            app.call(request).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            shed.stalled(&limits);
        } else {
            debug!(error = %e, "HTTP connection ended with an error");
        }
    }
}

/// Why a request is answered before it reaches the API.
enum Refusal {
    /// Its body did not arrive in time.
    Slow(axum::response::Response),
    /// Its body is too large or unreadable.
    Other(axum::response::Response),
}

/// The request with its body read whole (bodies here are JSON of at most
/// [`MAX_BODY_BYTES`]) and the client's address attached; or the answer when the body is too
/// slow (`408`, and the connection closes) or too large (`413`).
async fn buffered(
    request: hyper::Request<Incoming>,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<axum::extract::Request, Refusal> {
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(ConnectInfo(addr));
    let read = Limited::new(body, MAX_BODY_BYTES).collect();
    let bytes = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(Refusal::Other(
                ApiError::PayloadTooLarge(format!("request body is larger than {MAX_BODY_BYTES} bytes"))
                    .into_response(),
            ));
        }
        Ok(Err(e)) => {
            // The client went away or broke the framing; nobody reads an answer.
            debug!(error = %e, "request body unreadable");
            return Err(Refusal::Other(
                ApiError::InvalidJson("the request body could not be read".into()).into_response(),
            ));
        }
        Err(_) => {
            let mut response = ApiError::BodyTimeout(timeout).into_response();
            response.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
            return Err(Refusal::Slow(response));
        }
    };
    Ok(axum::extract::Request::from_parts(parts, Body::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_accepted_connection_sends_small_frames_at_once() -> std::io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let _client = tokio::net::TcpStream::connect(listener.local_addr()?).await?;
        let (accepted, _) = listener.accept().await?;
        assert!(!accepted.nodelay()?, "a new connection has Nagle's algorithm on");
        send_without_delay(&accepted);
        assert!(accepted.nodelay()?, "and it is off once accepted here");
        Ok(())
    }
}
