//! Liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::http::state::AppState;

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Object)))]
pub async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// The model is loaded, the engine accepts work and the database answers: a load balancer
/// sends traffic here only then.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    responses(
        (status = 200, description = "ready: the encoder, the heads' versions and the store", body = Object),
        (status = 503, description = "loading, failed to load, or the database is unavailable (`status` says which)", body = Object),
    ),
)]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.support().store();
    if let Err(err) = store.ping().await {
        let body = json!({ "status": "database_unavailable", "store": store.kind(), "error": err.to_string() });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body));
    }
    if let Some(classifier) = state.classifier() {
        let body = json!({
            "status": "ready",
            "store": store.kind(),
            "encoder": classifier.engine().info(),
            "models": classifier.versions(),
        });
        return (StatusCode::OK, Json(body));
    }
    match state.load_error() {
        Some(error) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "failed", "error": error }))),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "loading" }))),
    }
}

/// Prometheus metrics: request latency by route and status, engine queue and batch figures,
/// support gauges (recomputed every `server.metrics_refresh_secs`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain", body = String),
        (status = 401, description = "`server.metrics_require_key` is set and no valid key was sent", body = crate::http::error::ErrorBody),
    ),
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&state.registry().gather()) {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode metrics: {err}")).into_response(),
    }
}

/// Recomputes the support gauges every `server.metrics_refresh_secs` (the first time at once).
pub fn spawn_support_gauges(state: AppState) -> tokio::task::JoinHandle<()> {
    let every = std::time::Duration::from_secs(state.limits().metrics_refresh_secs);
    tokio::spawn(async move {
        loop {
            match state.support().support_report(tierline_support::conversation::metrics::Window::Week).await {
                Ok(report) => set_support_gauges(&state, &report),
                Err(err) => tracing::warn!(%err, "support metrics not refreshed"),
            }
            tokio::time::sleep(every).await;
        }
    })
}

fn set_support_gauges(state: &AppState, report: &tierline_support::conversation::metrics::SupportReport) {
    let gauges = state.support_gauges();
    let queues = std::iter::once(("all", &report.overall)).chain(report.by_queue.iter().map(|(q, m)| (q.as_str(), m)));
    for (queue, m) in queues {
        let values = [
            ("conversations", Some(m.conversations as f64)),
            ("escalation_rate", m.escalation_rate),
            ("ai_resolution_rate", m.ai_resolution_rate),
            ("re_escalation_rate", m.re_escalation_rate),
            ("over_escalation_rate", m.over_escalation_rate),
            ("time_to_human_p50_seconds", m.time_to_human_p50_secs),
            ("time_to_human_p90_seconds", m.time_to_human_p90_secs),
            ("first_contact_resolution_after_escalation", m.first_contact_resolution_after_escalation),
            ("csat_ai_resolved", m.csat_ai_resolved),
            ("csat_escalated", m.csat_escalated),
        ];
        for (metric, value) in values {
            if let Some(value) = value {
                gauges.with_label_values(&[metric, queue]).set(value);
            }
        }
    }
}
