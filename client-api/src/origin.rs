//! Which web pages may open a WebSocket to this node.
//!
//! Browsers send an `Origin` header with every WebSocket handshake and let any page open one
//! to any host; only the server can refuse a page it does not trust. Tokens are never cookies
//! here, so a foreign page cannot borrow a session today, but the browser client is coming:
//! the node accepts handshakes from its own origin and the ones its operator names
//! (`--allowed-origin`), and from clients that send no `Origin` at all (apps, the CLI, bots).

use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};

use crate::error::ApiError;

/// The origins allowed besides the node's own, as `scheme://host[:port]`, compared without
/// regard to case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    /// Origins given by the operator. A trailing `/` is ignored.
    ///
    /// # Errors
    /// A message naming an entry that is not `http://…` or `https://…` with a host and nothing
    /// after it (an origin has no path).
    pub fn new(origins: impl IntoIterator<Item = String>) -> Result<Self, String> {
        origins
            .into_iter()
            .map(|origin| {
                let trimmed = origin.trim_end_matches('/').to_ascii_lowercase();
                match authority(&trimmed) {
                    Some(host) if !host.is_empty() && !host.contains('/') => Ok(trimmed),
                    _ => Err(format!("--allowed-origin {origin:?}: must be http://host[:port] or https://host[:port]")),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Checks a handshake's `Origin`: absent, the node's own (its host and port are those of
    /// the `Host` header the browser sent), or one of the allowed ones.
    ///
    /// # Errors
    /// [`ApiError::OriginNotAllowed`] for any other origin, `null` included.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(origin) = headers.get(ORIGIN) else {
            return Ok(());
        };
        let refused =
            || ApiError::OriginNotAllowed(String::from_utf8_lossy(origin.as_bytes()).chars().take(100).collect());
        let origin = origin.to_str().map_err(|_| refused())?.trim_end_matches('/').to_ascii_lowercase();
        let host = headers.get(HOST).and_then(|h| h.to_str().ok()).map(str::to_ascii_lowercase);
        let own = authority(&origin).is_some_and(|authority| Some(authority) == host.as_deref());
        if own || self.0.contains(&origin) { Ok(()) } else { Err(refused()) }
    }
}

/// The `host[:port]` of an `http://` or `https://` origin.
fn authority(origin: &str) -> Option<&str> {
    origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    #[test]
    fn no_origin_the_own_origin_and_configured_ones_pass_and_nothing_else() {
        let allowed = AllowedOrigins::new(["https://Chat.Example/".to_owned()]).unwrap();
        let host = "node.example:8443";
        assert!(allowed.check(&headers(None, host)).is_ok(), "no Origin: not a browser");
        assert!(allowed.check(&headers(Some("https://node.example:8443"), host)).is_ok(), "its own");
        assert!(allowed.check(&headers(Some("https://chat.example"), host)).is_ok(), "configured");
        for other in ["https://evil.example", "null", "https://node.example", "https://chat.example.evil", "file://"] {
            let refused = allowed.check(&headers(Some(other), host));
            assert!(matches!(refused, Err(ApiError::OriginNotAllowed(_))), "{other}: {refused:?}");
        }
    }

    #[test]
    fn a_configured_origin_must_be_an_origin() {
        for bad in ["chat.example", "https://", "https://chat.example/app", "ftp://chat.example"] {
            assert!(AllowedOrigins::new([bad.to_owned()]).is_err(), "{bad}");
        }
    }
}
