//! The three screens and the widget script, embedded in the binary: no CDN, no Node at run
//! time, works air-gapped.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;

/// Every asset, by the name it is served under.
const ASSETS: &[(&str, &str, &str)] = &[
    ("common.css", "text/css; charset=utf-8", include_str!("../../../assets/common.css")),
    ("common.js", "text/javascript; charset=utf-8", include_str!("../../../assets/common.js")),
    ("chat.js", "text/javascript; charset=utf-8", include_str!("../../../assets/chat.js")),
    ("console.js", "text/javascript; charset=utf-8", include_str!("../../../assets/console.js")),
    ("dashboard.js", "text/javascript; charset=utf-8", include_str!("../../../assets/dashboard.js")),
    ("widget.js", "text/javascript; charset=utf-8", include_str!("../../../assets/widget.js")),
];

const CHAT: &str = include_str!("../../../assets/chat.html");
const CONSOLE: &str = include_str!("../../../assets/console.html");
const DASHBOARD: &str = include_str!("../../../assets/dashboard.html");

/// Scripts and styles come from this server only; the chat may be framed by any site (the
/// widget), the agent screens by none.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'";

fn page(html: &'static str, frame_ancestors: &str) -> Response {
    let policy = format!("{CSP}; frame-ancestors {frame_ancestors}");
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if let Ok(value) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// The customer chat (also what the widget frames).
pub async fn chat() -> Response {
    page(CHAT, "*")
}

/// The agent console.
pub async fn console() -> Response {
    page(CONSOLE, "'none'")
}

/// The support lead's dashboard.
pub async fn dashboard() -> Response {
    page(DASHBOARD, "'none'")
}

/// `/widget.js`: the one-line embed.
pub async fn widget() -> Response {
    asset(Path("widget.js".to_string())).await
}

/// `/assets/{name}`.
pub async fn asset(Path(name): Path<String>) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(file, _, _)| *file == name) else {
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no asset `{name}`")).into_response();
    };
    let mut response = ([(header::CONTENT_TYPE, *content_type)], *body).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}
