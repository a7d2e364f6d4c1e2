//! Liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::http::state::AppState;

/// The process is up and serving HTTP.
pub async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// The model is loaded and the engine accepts work.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if let Some(classifier) = state.classifier() {
        return (
            StatusCode::OK,
            Json(json!({ "status": "ready", "encoder": classifier.engine().info(), "models": classifier.versions() })),
        );
    }
    match state.load_error() {
        Some(error) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "failed", "error": error }))),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "loading" }))),
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&state.registry().gather()) {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {err}")).into_response(),
    }
}
