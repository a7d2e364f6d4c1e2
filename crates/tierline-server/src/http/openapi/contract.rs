//! What the annotations cannot say, added to the generated document so that it states exactly
//! what the server enforces: the configured limits and the text rules as JSON-schema constraints,
//! the statuses every kind of route can answer (malformed JSON 400, wrong media type 415, body
//! over the limit 413, database outage 503...), and the security scheme only while keys are
//! enforced. `tierline`'s fuzz command (`tests/fuzz/run.sh`) drives the live server from it.

use serde_json::{json, Map, Value};
use utoipa::OpenApi;

use super::ApiDoc;
use crate::http::auth::keys_enforced;
use crate::http::error::ApiError;
use crate::http::routes::{conversations, customers, insights, kb};
use crate::http::state::AppState;

/// The routes callable without any key (the probes, and starting a chat when public chat is on).
const PUBLIC: &[&str] = &["/health", "/ready"];

/// The routes that also take a customer's conversation token.
const CUSTOMER_ROUTES: &[&str] = &[
    "/v1/conversations/{id}",
    "/v1/conversations/{id}/messages",
    "/v1/conversations/{id}/escalate",
    "/v1/conversations/{id}/csat",
    "/v1/events",
];

/// "Holds something that is not whitespace": `text::is_blank` is its negation. Spelled out
/// rather than `\S`, whose meaning differs between regex engines (and between a fuzzer's
/// generator and its validator).
const NOT_BLANK: &str =
    "[^\\t\\n\\x0b\\x0c\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// An article id: 1-128 letters, digits, `-`, `_` or `.`, not starting with `.`
/// (`Article::validate`). The length is in the pattern, not `maxLength`: schemathesis' coverage
/// phase pairs a path parameter's `maxLength` boundary with a placeholder body.
const ARTICLE_ID: &str = "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$";

/// The facts of this server the document depends on.
pub struct Contract {
    pub keys_enforced: bool,
    pub public_chat: bool,
    pub metrics_require_key: bool,
    pub max_texts: usize,
    pub max_text_chars: usize,
    pub max_article_chars: usize,
    pub queues: Vec<String>,
    /// The served encoder's id and width, once loaded (`/v1/embeddings` checks both).
    pub encoder: Option<(String, usize)>,
}

impl Contract {
    pub async fn of(state: &AppState) -> Result<Self, ApiError> {
        let limits = state.limits();
        Ok(Self {
            keys_enforced: keys_enforced(state).await?,
            public_chat: state.public_chat(),
            metrics_require_key: limits.metrics_require_key,
            max_texts: limits.max_texts_per_request,
            max_text_chars: limits.max_text_chars,
            max_article_chars: limits.max_article_chars,
            queues: state.support().policy().queues.clone(),
            encoder: state.engine().map(|e| (e.info().id.clone(), e.info().dimensions)),
        })
    }

    pub fn document(&self) -> Value {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises");
        self.constrain(&mut doc);
        self.complete_operations(&mut doc);
        doc
    }

    fn is_public(&self, path: &str) -> bool {
        PUBLIC.contains(&path)
            || (path == "/metrics" && !self.metrics_require_key)
            || (path == "/v1/chat/conversations" && self.public_chat)
    }

    /// Limits and text rules on the request schemas, as the handlers check them.
    fn constrain(&self, doc: &mut Value) {
        let text = json!({ "type": "string", "minLength": 1, "maxLength": self.max_text_chars, "pattern": NOT_BLANK });
        let texts = json!({ "type": "array", "minItems": 1, "maxItems": self.max_texts, "items": text });
        let name = |max: usize| json!({ "minLength": 1, "maxLength": max, "pattern": NOT_BLANK });
        let schemas = "/components/schemas";
        let mut patch = |pointer: &str, constraints: Value| merge(doc, &format!("{schemas}/{pointer}"), constraints);

        patch("EmbedRequest/properties/texts", texts.clone());
        patch("OpenAiInput", json!({ "oneOf": [text.clone(), texts.clone()] }));
        if let Some((id, dimensions)) = &self.encoder {
            let short = id.rsplit('/').next().unwrap_or(id);
            patch("OpenAiEmbeddingsRequest/properties/model", json!({ "enum": [id, short, null] }));
            patch("OpenAiEmbeddingsRequest/properties/dimensions", json!({ "enum": [dimensions, null] }));
        }
        patch("ClassifyRequest/properties/texts", texts.clone());
        patch("ClassifyRequest/properties/tickets", json!({ "minItems": 1, "maxItems": self.max_texts }));
        patch("ClassifyRequest/properties/top_k", json!({ "minimum": 1, "maximum": 20 }));
        // Exactly one of `texts` (scores only) and `tickets` (full triage).
        patch(
            "ClassifyRequest",
            json!({ "oneOf": [
                { "required": ["texts"], "properties": { "texts": { "type": "array" }, "tickets": { "type": "null" } } },
                { "required": ["tickets"], "properties": { "tickets": { "type": "array" }, "texts": { "type": "null" } } },
            ] }),
        );
        patch("Ticket/properties/body", text.clone());
        patch("Ticket/properties/subject", json!({ "maxLength": self.max_text_chars }));
        patch("AccountContext/properties/contract_value", json!({ "minimum": 0 }));
        patch("CustomerMessage/properties/text", text.clone());
        patch("AgentMessage/properties/text", text.clone());
        patch("AgentMessage/properties/agent", name(conversations::MAX_AGENT_CHARS));
        patch("Resolve/properties/agent", name(conversations::MAX_AGENT_CHARS));
        patch("Resolve/properties/csat", json!({ "minimum": 1, "maximum": 5 }));
        patch("Resolve/properties/approved_answer", name(self.max_article_chars));
        let mut queues: Vec<Value> = self.queues.iter().map(|q| json!(q)).collect();
        queues.push(Value::Null);
        patch("Resolve/properties/corrected_queue", json!({ "enum": queues }));
        patch("Resolve/properties/corrected_topic", name(tierline_support::conversation::MAX_TOPIC_CHARS));
        patch("Review/properties/label", name(insights::MAX_LABEL_CHARS));
        patch("AnswerRequest/properties/question", text.clone());
        patch(
            "AnswerRequest/properties/context",
            json!({ "maxItems": kb::MAX_CONTEXT_MESSAGES, "items": { "type": "string", "maxLength": self.max_text_chars } }),
        );
        patch("ArticleInput/properties/title", json!({ "pattern": NOT_BLANK }));
        patch("ArticleInput/properties/body", json!({ "maxLength": self.max_article_chars, "pattern": NOT_BLANK }));
        patch("ArticleInput/properties/id", json!({ "pattern": ARTICLE_ID }));
        // A replacement takes its id from the path (one equal to the path's is tolerated).
        if let Some(mut replacement) = doc.pointer("/components/schemas/ArticleInput").cloned() {
            if let Some(properties) = replacement.get_mut("properties").and_then(Value::as_object_mut) {
                properties.remove("id");
            }
            replacement["description"] = json!("An article replacing the one at the path's id.");
            doc["components"]["schemas"]["ArticleReplacement"] = replacement;
            merge(
                doc,
                "/paths/~1v1~1kb~1articles~1{id}/put/requestBody/content/application~1json",
                json!({ "schema": { "$ref": "#/components/schemas/ArticleReplacement" } }),
            );
        }

        // Scores for `texts`, full triage for `tickets`.
        merge(
            doc,
            "/paths/~1v1~1classify/post/responses/200/content/application~1json",
            json!({ "schema": { "oneOf": [
                { "$ref": "#/components/schemas/ClassifyResponse" },
                { "$ref": "#/components/schemas/TriageResponse" },
            ] } }),
        );

        let limit = json!({ "minimum": 1, "maximum": 500 });
        let paths = "/paths";
        let mut param = |path: &str, method: &str, name: &str, constraints: Value| {
            let pointer = format!("{paths}/{}/{method}/parameters", escape_pointer(path));
            let Some(Value::Array(params)) = doc.pointer_mut(&pointer) else {
                debug_assert!(false, "no parameters at {pointer}");
                return;
            };
            let found = params.iter_mut().find(|p| p["name"] == name);
            debug_assert!(found.is_some(), "no parameter `{name}` at {pointer}");
            if let Some(param) = found {
                merge(param, "/schema", constraints);
            }
        };
        for (path, method) in [
            ("/v1/queues/{queue}", "get"),
            ("/v1/alerts", "get"),
            ("/v1/accounts/at-risk", "get"),
            ("/v1/feedback", "get"),
            ("/v1/admin/audit", "get"),
        ] {
            param(path, method, "limit", limit.clone());
        }
        param("/v1/feedback/export", "get", "limit", json!({ "minimum": 1, "maximum": insights::MAX_EXPORT }));
        let any_i64 = json!({ "minimum": i64::MIN, "maximum": i64::MAX });
        param("/v1/feedback/export", "get", "after", any_i64.clone());
        param("/v1/feedback", "get", "after", any_i64.clone());
        param("/v1/feedback/{id}", "post", "id", any_i64);
        param("/v1/kb/search", "get", "q", text.clone());
        param("/v1/kb/search", "get", "k", json!({ "minimum": 1, "maximum": kb::MAX_SEARCH_HITS }));
        param("/v1/kb/search", "get", "audience", json!({ "enum": ["public", "internal", "all", null] }));
        param("/v1/customers/{id}", "delete", "id", name(customers::MAX_CUSTOMER_ID_CHARS));
        param("/v1/kb/articles/{id}", "put", "id", json!({ "pattern": ARTICLE_ID }));
    }

    /// The statuses each operation can answer beyond its own, and its security.
    fn complete_operations(&self, doc: &mut Value) {
        if !self.keys_enforced {
            if let Some(root) = doc.as_object_mut() {
                root.remove("security");
            }
        }
        let Some(Value::Object(paths)) = doc.get_mut("paths") else { return };
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else { continue };
            for (_, operation) in item.iter_mut() {
                let Some(operation) = operation.as_object_mut() else { continue };
                self.complete(path, operation);
            }
        }
    }

    fn complete(&self, path: &str, operation: &mut Map<String, Value>) {
        let params = operation.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
        let has = |place: &str| params.iter().any(|p| p["in"] == place);
        let mut statuses: Vec<(&str, &str)> = Vec::new();
        if operation.contains_key("requestBody") {
            statuses.extend([
                ("400", "the body is not valid JSON"),
                ("413", "the body is over `server.max_body_bytes`, or a list or text over its limit"),
                ("415", "the body is not sent as `application/json`"),
                ("422", "a field is missing, unknown or invalid (`field` names it)"),
            ]);
        }
        if has("query") {
            statuses.extend([
                ("400", "the query string cannot be read"),
                ("413", "a parameter is longer than its limit"),
                ("422", "a parameter is out of range"),
            ]);
        }
        if has("path") {
            statuses.extend([("400", "a path segment cannot be read"), ("404", "no such resource")]);
        }
        if path.starts_with("/v1/") {
            statuses.extend([
                ("500", "an internal error (logged with the `x-request-id`)"),
                ("503", "the database is unavailable, or the models are still loading"),
            ]);
        }
        let secured = self.keys_enforced && !self.is_public(path);
        if secured || CUSTOMER_ROUTES.contains(&path) {
            statuses.push(("401", "no valid API key (or conversation token) was sent"));
        }
        if secured {
            statuses.push(("403", "the key's scopes do not cover this route"));
        }
        let responses = operation.entry("responses").or_insert_with(|| json!({}));
        for (status, description) in statuses {
            if let Some(responses) = responses.as_object_mut() {
                responses.entry(status).or_insert_with(|| error_response(description));
            }
        }
        if self.keys_enforced && self.is_public(path) {
            operation.insert("security".into(), json!([]));
        }
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } },
    })
}

/// Merges `constraints` into the object at `pointer` (one level: its keys replace the same keys).
fn merge(doc: &mut Value, pointer: &str, constraints: Value) {
    let Some(Value::Object(target)) = doc.pointer_mut(pointer) else {
        debug_assert!(false, "the OpenAPI document has no object at {pointer}");
        tracing::warn!(pointer, "openapi constraint not applied: no such schema");
        return;
    };
    let Value::Object(constraints) = constraints else { return };
    for (key, value) in constraints {
        target.insert(key, value);
    }
}

/// A path as one JSON-pointer segment (`/` is `~1`, `~` is `~0`).
fn escape_pointer(path: &str) -> String {
    path.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract(keys_enforced: bool) -> Contract {
        Contract {
            keys_enforced,
            public_chat: true,
            metrics_require_key: false,
            max_texts: 256,
            max_text_chars: 32768,
            max_article_chars: 262144,
            queues: vec!["billing".into(), "technical".into()],
            encoder: Some(("sentence-transformers/all-MiniLM-L6-v2".into(), 384)),
        }
    }

    /// Every constraint finds its schema (a renamed type or field fails here, in debug builds).
    #[test]
    fn every_constraint_applies_and_security_follows_the_keys() {
        let open = contract(false).document();
        assert!(open.get("security").is_none(), "no security while keys are not enforced");
        let closed = contract(true).document();
        assert_eq!(closed["security"], json!([{ "api_key": [] }]));
        assert_eq!(closed["paths"]["/health"]["get"]["security"], json!([]));
        assert!(closed["paths"]["/v1/embed"]["post"]["responses"]["401"].is_object());
        assert_eq!(closed["components"]["schemas"]["EmbedRequest"]["properties"]["texts"]["maxItems"], json!(256));
        let queues = &closed["components"]["schemas"]["Resolve"]["properties"]["corrected_queue"]["enum"];
        assert_eq!(queues, &json!(["billing", "technical", null]));
    }

    /// The document's "not blank" pattern and the handlers' rule agree on every character.
    #[test]
    fn not_blank_pattern_matches_the_blank_rule() {
        let pattern = regex::Regex::new(NOT_BLANK).unwrap();
        for c in (0u32..0x3100).filter_map(char::from_u32) {
            let text = c.to_string();
            assert_eq!(pattern.is_match(&text), !tierline_support::text::is_blank(&text), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn every_route_is_documented() {
        let doc = contract(true).document();
        for path in ["/v1/models", "/v1/chat/conversations", "/v1/events", "/v1/queues", "/metrics", "/ready"] {
            assert!(doc["paths"][path].is_object(), "{path} is missing from the document");
        }
    }
}
