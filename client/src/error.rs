//! What can go wrong talking to a node.

use kith_proto::ErrorCode;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node answered with an error.
    #[error("{status} {code:?}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code from the body.
        code: ErrorCode,
        /// The node's explanation.
        message: String,
    },
    /// The node could not be reached or the connection broke.
    #[error("cannot reach the server: {0}")]
    Transport(String),
    /// The node answered with something that is not the documented JSON.
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    /// The base URL is not usable.
    #[error("invalid server URL {url:?}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The node did not answer in time; says what was awaited and for how long. A send that
    /// timed out may still have been stored: send it again with the same `clientMessageId`.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// The TLS handshake with an `https://` node failed (most often: its certificate is not
    /// signed by an authority this client trusts), or the trusted authorities cannot be read.
    #[error("TLS: {0}")]
    Tls(String),
    /// The WebSocket closed.
    #[error("connection closed by the server ({code}: {reason})")]
    Closed {
        /// The close code (1005 when none was given).
        code: u16,
        /// The close reason.
        reason: String,
    },
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_decode() {
            Self::Decode(e.to_string())
        } else if e.is_timeout() {
            let request = e.url().map_or_else(|| "a request".to_owned(), |url| url.path().to_owned());
            Self::TimedOut(format!("no answer to {request} within the client's deadline"))
        } else if let Some(refusal) = crate::tls::refusal(&e) {
            Self::Tls(refusal)
        } else {
            Self::Transport(transport_reason(&e))
        }
    }
}

/// Says why a connection failed in the words of its root cause ("connection refused"), not
/// the outermost wrapper's ("error sending request for url …").
fn transport_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return io_reason(io);
        }
        source = current.source();
    }
    // No I/O error underneath: the deepest message is the most specific.
    let mut deepest = e;
    while let Some(next) = deepest.source() {
        deepest = next;
    }
    deepest.to_string()
}

fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::ConnectionReset => "connection reset".into(),
        K::ConnectionAborted => "connection aborted".into(),
        K::TimedOut => "timed out".into(),
        K::NotConnected | K::BrokenPipe | K::UnexpectedEof => "connection closed".into(),
        _ => e.to_string(),
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        use tokio_tungstenite::tungstenite::Error as E;
        match e {
            E::Http(response) => {
                let status = response.status().as_u16();
                let body = response.body().as_deref().unwrap_or_default();
                match serde_json::from_slice::<kith_proto::ErrorBody>(body) {
                    Ok(body) => Self::Api { status, code: body.error.code, message: body.error.message },
                    Err(_) => {
                        Self::Api { status, code: ErrorCode::Unknown, message: String::from_utf8_lossy(body).into() }
                    }
                }
            }
            E::Io(e) => match crate::tls::refusal(&e) {
                Some(refusal) => Self::Tls(refusal),
                None => Self::Transport(io_reason(&e)),
            },
            other => match crate::tls::refusal(&other) {
                Some(refusal) => Self::Tls(refusal),
                None => Self::Transport(other.to_string()),
            },
        }
    }
}
