//! HTTP transport (axum): routes, limits, JSON errors, metrics. Knows nothing of candle.

pub mod auth;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod routes;
pub mod state;

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;

pub use state::AppState;

pub fn router(state: AppState) -> Router {
    let body_limit = state.limits().max_body_bytes;
    Router::new()
        .route("/health", get(routes::health::health))
        .route("/ready", get(routes::health::ready))
        .route("/metrics", get(routes::health::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs))
        .route("/v1/embed", post(routes::embed::embed))
        .route("/v1/classify", post(routes::classify::classify))
        .route("/v1/models", get(routes::models::models))
        .route("/v1/kb/search", get(routes::kb::search))
        .route("/v1/kb/articles", get(routes::kb_articles::list).post(routes::kb_articles::create))
        .route(
            "/v1/kb/articles/{id}",
            get(routes::kb_articles::get).put(routes::kb_articles::put).delete(routes::kb_articles::delete),
        )
        .route("/v1/answer", post(routes::kb::answer))
        .route("/v1/conversations", post(routes::conversations::create))
        .route("/v1/conversations/{id}", get(routes::conversations::get))
        .route("/v1/conversations/{id}/messages", post(routes::conversations::customer_message))
        .route("/v1/conversations/{id}/agent-messages", post(routes::conversations::agent_message))
        .route("/v1/conversations/{id}/resolve", post(routes::conversations::resolve))
        .route("/v1/conversations/{id}/handoff", get(routes::conversations::handoff))
        .route("/v1/queues/{queue}", get(routes::conversations::queue))
        .route("/v1/metrics/support", get(routes::conversations::support_metrics))
        .route("/v1/calibration", get(routes::conversations::calibration))
        .route("/v1/admin/policy/reload", post(routes::conversations::reload_policy))
        .route("/v1/alerts", get(routes::insights::alerts))
        .route("/v1/accounts/at-risk", get(routes::insights::at_risk))
        .route("/v1/feedback", get(routes::insights::feedback))
        .route("/v1/feedback/export", get(routes::insights::export))
        .route("/v1/feedback/{id}", post(routes::insights::review))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), auth::require_key))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), record_latency))
        .with_state(state)
}

async fn not_found() -> error::ApiError {
    error::ApiError::new(axum::http::StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> error::ApiError {
    error::ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

async fn record_latency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .http_seconds()
        .with_label_values(&[route.as_str(), response.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = router(state);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: finishing in-flight requests");
        let _ = stop_tx.send(true);
    });
    let mut stop_rx = stop_rx;
    tokio::select! {
        result = server => result.map_err(Into::into),
        _ = async {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("in-flight requests did not finish within the grace period");
            Ok(())
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
