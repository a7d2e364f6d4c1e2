//! The OpenAPI document, generated from the handlers' annotations and the types' derives, then
//! completed with what this server enforces (`contract`): the limits of its configuration, the
//! statuses every route can answer, and whether keys are required right now
//! (`GET /openapi.json`). Also a self-contained docs page (`GET /docs`: no CDN, works offline).

mod contract;

use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

pub use contract::Contract;

use super::error::ApiError;
use super::state::AppState;
use super::{api, routes};

#[derive(OpenApi)]
#[openapi(
    info(title = "tierline", description = "Self-hosted AI customer-support automation: triage, Tier-1 answers, conversations with escalation."),
    paths(
        routes::health::health,
        routes::health::ready,
        routes::health::metrics,
        routes::models::models,
        routes::embed::embed,
        routes::embed::openai_embeddings,
        routes::customers::erase,
        routes::customers::audit_log,
        routes::classify::classify,
        routes::kb::search,
        routes::kb::answer,
        routes::kb_articles::list,
        routes::kb_articles::get,
        routes::kb_articles::create,
        routes::kb_articles::put,
        routes::kb_articles::delete,
        routes::conversations::create,
        routes::conversations::customer_message,
        routes::conversations::agent_message,
        routes::conversations::resolve,
        routes::conversations::get,
        routes::conversations::handoff,
        routes::conversations::queue,
        routes::conversations::queues,
        routes::conversations::policy_queues,
        routes::chat::start,
        routes::chat::escalate,
        routes::chat::rate,
        routes::events::events,
        routes::conversations::reload_policy,
        routes::conversations::support_metrics,
        routes::conversations::calibration,
        routes::insights::alerts,
        routes::insights::at_risk,
        routes::insights::feedback,
        routes::insights::export,
        routes::insights::review,
    ),
    components(schemas(api::ClassifyResponse)),
    modifiers(&BearerKeys),
    security(("api_key" = []))
)]
pub struct ApiDoc;

struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from `tierline keys create --scope helpdesk|agent|admin`. The \
                         customer routes (a conversation, its messages, escalate, csat, events) \
                         also take the conversation token (`ct_...`) that starting a chat returns.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as this server enforces it now (keys required or not, its configured limits).
pub async fn openapi_json(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let contract = Contract::of(&state).await?;
    Ok(Json(contract.document()))
}

/// A plain HTML index of the API built from the same document.
pub async fn docs() -> Html<String> {
    let doc = ApiDoc::openapi();
    let mut rows = String::new();
    for (path, item) in &doc.paths.paths {
        let operations = [("GET", &item.get), ("POST", &item.post), ("PUT", &item.put), ("DELETE", &item.delete)];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            let summary = operation.summary.clone().or_else(|| operation.description.clone()).unwrap_or_default();
            let tag = operation.tags.as_ref().and_then(|t| t.first()).cloned().unwrap_or_default();
            rows.push_str(&format!(
                "<tr><td>{}</td><td><code>{method}</code></td><td><code>{}</code></td><td>{}</td></tr>\n",
                escape(&tag),
                escape(path),
                escape(&summary)
            ));
        }
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>tierline API</title>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:70em}}td{{padding:.3em .8em;border-bottom:1px solid #ddd;vertical-align:top}}</style>\
         </head><body><h1>tierline API</h1><p>The full OpenAPI 3.1 document: <a href=\"/openapi.json\">/openapi.json</a> \
         (load it into any OpenAPI viewer or client generator). Send <code>Authorization: Bearer &lt;key&gt;</code> once keys exist.</p>\
         <table><tr><th>area</th><th>method</th><th>path</th><th>what it does</th></tr>\n{rows}</table></body></html>"
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
