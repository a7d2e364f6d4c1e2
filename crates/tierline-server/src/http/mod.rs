//! HTTP transport (axum): routes, limits, JSON errors, metrics. Knows nothing of candle.

pub mod api;
pub mod auth;
pub mod error;
pub mod extract;
pub mod layers;
pub mod openapi;
pub mod routes;
pub mod state;

use std::future::Future;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use tierline_support::access::Scope;

use auth::{guarded, guarded_every_account_or_customer, guarded_or_customer, guarded_per_account};
use axum::Router;
use tokio::net::TcpListener;

pub use state::AppState;

pub fn router(state: AppState) -> Router {
    use tierline_support::access::Scope::{Admin, Agent, Helpdesk};
    let body_limit = state.limits().max_body_bytes;
    let s = &state;
    // Scopes: helpdesk integrations run customer conversations and stateless triage; agents work
    // the queues; admins edit knowledge and policy (admin holds every scope). A key kept to some
    // accounts calls only the `per_account` routes (and the customer ones), which keep it there.
    let helpdesk: &'static [Scope] = &[Helpdesk];
    let agent: &'static [Scope] = &[Agent];
    let either: &'static [Scope] = &[Helpdesk, Agent];
    let admin: &'static [Scope] = &[Admin];
    // Customers' browsers may start a chat without a key unless the operator turned that off.
    let chat_start = match state.public_chat() {
        true => post(routes::chat::start),
        false => guarded_per_account(s, helpdesk, post(routes::chat::start)),
    };
    Router::new()
        // Public: probes, metrics, the API document.
        .route("/health", get(routes::health::health))
        .route("/ready", get(routes::health::ready))
        .route(
            "/metrics",
            if state.limits().metrics_require_key {
                guarded(s, agent, get(routes::health::metrics))
            } else {
                get(routes::health::metrics)
            },
        )
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs))
        // The screens: public pages; every call they make carries a key or a conversation token.
        .route("/chat", get(routes::pages::chat))
        .route("/console", get(routes::pages::console))
        .route("/dashboard", get(routes::pages::dashboard))
        .route("/widget.js", get(routes::pages::widget))
        .route("/assets/{name}", get(routes::pages::asset))
        .route("/v1/embed", guarded_per_account(s, either, post(routes::embed::embed)))
        .route("/v1/embeddings", guarded_per_account(s, either, post(routes::embed::openai_embeddings)))
        .route("/v1/classify", guarded_per_account(s, either, post(routes::classify::classify)))
        .route("/v1/models", guarded_per_account(s, either, get(routes::models::models)))
        .route("/v1/answer", guarded_per_account(s, either, post(routes::kb::answer)))
        // Search and article reads can return internal articles: agents only.
        .route("/v1/kb/search", guarded_per_account(s, agent, get(routes::kb::search)))
        .route(
            "/v1/kb/articles",
            guarded_per_account(s, agent, get(routes::kb_articles::list)).merge(guarded(
                s,
                admin,
                post(routes::kb_articles::create),
            )),
        )
        .route(
            "/v1/kb/articles/{id}",
            guarded_per_account(s, agent, get(routes::kb_articles::get)).merge(guarded(
                s,
                admin,
                put(routes::kb_articles::put).delete(routes::kb_articles::delete),
            )),
        )
        .route("/v1/conversations", guarded_per_account(s, helpdesk, post(routes::conversations::create)))
        // A customer's browser holds a token for its own conversation (the chat widget).
        .route("/v1/conversations/{id}", guarded_or_customer(s, either, get(routes::conversations::get)))
        .route(
            "/v1/conversations/{id}/messages",
            guarded_or_customer(s, helpdesk, post(routes::conversations::customer_message)),
        )
        .route("/v1/conversations/{id}/escalate", guarded_or_customer(s, either, post(routes::chat::escalate)))
        .route("/v1/conversations/{id}/csat", guarded_or_customer(s, either, post(routes::chat::rate)))
        // Keys see every conversation's events: keys kept to some accounts cannot stream.
        .route("/v1/events", guarded_every_account_or_customer(s, either, get(routes::events::events)))
        .route("/v1/chat/conversations", chat_start)
        .route(
            "/v1/conversations/{id}/agent-messages",
            guarded_per_account(s, agent, post(routes::conversations::agent_message)),
        )
        .route("/v1/conversations/{id}/resolve", guarded_per_account(s, either, post(routes::conversations::resolve)))
        .route("/v1/conversations/{id}/handoff", guarded_per_account(s, either, get(routes::conversations::handoff)))
        .route("/v1/queues", guarded(s, agent, get(routes::conversations::queues)))
        .route("/v1/queues/{queue}", guarded(s, agent, get(routes::conversations::queue)))
        .route("/v1/policy/queues", guarded(s, agent, get(routes::conversations::policy_queues)))
        .route("/v1/metrics/support", guarded(s, agent, get(routes::conversations::support_metrics)))
        .route("/v1/calibration", guarded(s, agent, get(routes::conversations::calibration)))
        .route("/v1/alerts", guarded(s, agent, get(routes::insights::alerts)))
        .route("/v1/accounts/at-risk", guarded(s, agent, get(routes::insights::at_risk)))
        .route("/v1/feedback", guarded(s, agent, get(routes::insights::feedback)))
        .route("/v1/feedback/export", guarded(s, agent, get(routes::insights::export)))
        .route("/v1/feedback/{id}", guarded(s, agent, post(routes::insights::review)))
        .route("/v1/customers/{id}", guarded(s, admin, axum::routing::delete(routes::customers::erase)))
        .route("/v1/admin/audit", guarded(s, admin, get(routes::customers::audit_log)))
        .route("/v1/admin/policy/reload", guarded(s, admin, post(routes::conversations::reload_policy)))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
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
    let app = layers::wrap(router(state));
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
