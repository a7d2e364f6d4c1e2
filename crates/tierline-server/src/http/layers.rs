//! Layers every request passes through: a request id (taken from a sane incoming
//! `x-request-id` or made here) on the response and on every log line of the request, and a
//! panic in a handler answered as a 500 JSON error instead of a dropped connection.

use std::any::Any;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

use super::error::ApiError;

pub const REQUEST_ID: &str = "x-request-id";

/// The id of the request being served (an extension handlers may read).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Wraps `router` in the layers: the request id outermost, so a caught panic is logged with it
/// and its 500 carries it too.
pub fn wrap<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(CatchPanicLayer::custom(panic_response)).layer(middleware::from_fn(request_id))
}

async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map_or_else(new_id, str::to_string);
    request.extensions_mut().insert(RequestId(id.clone()));
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path().to_string(), |p| p.as_str().to_string());
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), route = %route);
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let started =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    format!("req_{started:x}_{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    // Runs inside the request's span: the log line carries its request id.
    tracing::error!(panic = message, "handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the server hit a bug answering this request; it is logged with this request's x-request-id",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_handler_panic_is_a_500_json_with_the_request_id() {
        let app: Router = wrap(
            Router::new()
                .route(
                    "/boom",
                    get(|| async {
                        panic!("boom");
                        #[allow(unreachable_code)]
                        "never"
                    }),
                )
                .route("/ok", get(|| async { "ok" })),
        );
        let response = app.clone().oneshot(Request::get("/boom").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), 500);
        let id = response.headers().get(REQUEST_ID).expect("a request id").to_str().unwrap().to_string();
        assert!(id.starts_with("req_"), "{id}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "internal", "{body}");

        // The server keeps serving, and a caller's own id is kept.
        let request = Request::get("/ok").header(REQUEST_ID, "helpdesk-123").body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(
            (response.status().as_u16(), response.headers()[REQUEST_ID].to_str().unwrap()),
            (200, "helpdesk-123")
        );
        // ...but not one that could forge log lines.
        let request = Request::get("/ok").header(REQUEST_ID, "a b\"c").body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert!(response.headers()[REQUEST_ID].to_str().unwrap().starts_with("req_"));
    }
}
