//! The browser client (`web/`), served at `/` from bytes embedded in the binary at build time,
//! so a node needs no Node.js and no files next to it. `web/dist` is the committed output of
//! `npm run build` in `web/`; CI rebuilds it and fails if the embedded copy differs.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// What the page may load: only its own scripts and styles, and connections (REST and the
/// WebSocket) to the node that served it. No inline script, no eval, no framing.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const INDEX_HTML: &[u8] = include_bytes!("../../../web/dist/index.html");
const APP_JS: &[u8] = include_bytes!("../../../web/dist/app.js");
const APP_CSS: &[u8] = include_bytes!("../../../web/dist/app.css");

fn asset(body: &'static [u8], content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // The names carry no content hash: revalidate every time (the files are small).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /`: the page.
#[utoipa::path(get, path = "/", tag = "web", responses((status = 200, description = "The web client's page", content_type = "text/html")))]
pub(crate) async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

/// `GET /app.js`: the whole client, end-to-end encryption included.
#[utoipa::path(get, path = "/app.js", tag = "web", responses((status = 200, description = "The web client's script", content_type = "text/javascript")))]
pub(crate) async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

/// `GET /app.css`.
#[utoipa::path(get, path = "/app.css", tag = "web", responses((status = 200, description = "The web client's style sheet", content_type = "text/css")))]
pub(crate) async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_the_embedded_files_and_no_inline_script() {
        let html = std::str::from_utf8(INDEX_HTML).expect("utf-8");
        assert!(html.contains(r#"src="/app.js""#), "the page loads /app.js");
        assert!(html.contains(r#"href="/app.css""#), "the page loads /app.css");
        // CSP forbids inline scripts: every <script> must have a src.
        assert_eq!(html.matches("<script").count(), html.matches("<script type=\"module\" crossorigin src=").count());
        assert!(!APP_JS.is_empty() && !APP_CSS.is_empty());
    }
}
