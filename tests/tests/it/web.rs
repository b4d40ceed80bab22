//! The node serves the web client at `/` from its binary, under a strict Content-Security-Policy,
//! and the page's own origin may open the WebSocket.

use anyhow::Result;
use futures_util::StreamExt;
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::harness::{PATIENCE, TestNode, http};

#[tokio::test]
async fn the_web_client_is_served_with_a_strict_content_security_policy() -> Result<()> {
    let node = TestNode::start().await?;
    let client = http();
    for (path, content_type) in [("/", "text/html"), ("/app.js", "text/javascript"), ("/app.css", "text/css")] {
        let response = client.get(node.url(path)).send().await?;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(header("content-type").starts_with(content_type), "{path}: {}", header("content-type"));
        let csp = header("content-security-policy");
        for directive in ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
            assert!(csp.contains(directive), "{path}: CSP {csp:?} lacks {directive}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert!(!response.bytes().await?.is_empty(), "{path} has a body");
    }
    let page = client.get(node.url("/")).send().await?.text().await?;
    assert!(page.contains(r#"src="/app.js""#), "the page loads the embedded script");
    Ok(())
}

#[tokio::test]
async fn the_pages_own_origin_may_open_the_websocket() -> Result<()> {
    let node = TestNode::start().await?;
    let alice = node.user("alice").await?;
    // A browser on the page the node served sends that page's origin.
    let origin = node.url("");
    let ws_url = format!("{}?token={}", node.url("/api/v1/ws").replacen("http", "ws", 1), alice.token());
    let mut request = ws_url.into_client_request()?;
    request.headers_mut().insert("origin", HeaderValue::from_str(&origin)?);
    let (mut socket, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request)).await??;
    // Accepted: the node sends `synced` once nothing is pending.
    let first = tokio::time::timeout(PATIENCE, socket.next()).await?.ok_or_else(|| anyhow::anyhow!("closed"))??;
    assert!(first.to_text()?.contains("synced"), "{first:?}");
    Ok(())
}
