//! Every request and response type of the HTTP API, in one place: what a helpdesk sends and
//! gets back. Domain types that appear inside responses come from `tierline-support` and
//! `tierline-infer`; these wrap them for the wire.

use serde::{Deserialize, Serialize};
use tierline_infer::classify::{ModelVersions, TextClassification};
use tierline_support::conversation::metrics::Window;
use tierline_support::conversation::{ResolvedBy, Ticket, TicketTriage, Waiting};
use tierline_support::insights::anomaly::Alert;
use tierline_support::insights::health::AccountHealth;
use tierline_support::kb::{Article, Audience, Citation, Mode};
use tierline_support::store::{FeedbackRow, FeedbackStatus};
use tierline_support::triage::AccountContext;

/// JSON Schema's `integer` counts `3.0` as the integer 3, and so do some clients: whole-number
/// fields take it (and refuse `3.5`, negatives and out-of-range values).
mod whole {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};

    pub fn number<'de, D: Deserializer<'de>, T: TryFrom<u64>>(deserializer: D) -> Result<T, D::Error> {
        from_number(serde_json::Number::deserialize(deserializer)?)
    }

    pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<u64>>(deserializer: D) -> Result<Option<T>, D::Error> {
        Option::<serde_json::Number>::deserialize(deserializer)?.map(from_number).transpose()
    }

    fn from_number<E: Error, T: TryFrom<u64>>(number: serde_json::Number) -> Result<T, E> {
        let whole = number.as_u64().or_else(|| {
            number.as_f64().filter(|f| f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(f)).map(|f| f as u64)
        });
        let whole = whole.ok_or_else(|| E::custom(format!("expected a non-negative whole number, not {number}")))?;
        T::try_from(whole).map_err(|_| E::custom(format!("{whole} is out of range")))
    }
}

/// Items per page when a list route is not told.
fn default_limit() -> usize {
    50
}

// classify

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    /// Raw texts: the heads' scores only.
    #[serde(default)]
    pub texts: Option<Vec<String>>,
    /// Tickets: full triage (signals, tier, queue, reasons, answer or draft).
    #[serde(default)]
    pub tickets: Option<Vec<Ticket>>,
    /// How many ranked labels single-label heads return (1-20, default 3).
    #[serde(default = "default_top_k", deserialize_with = "whole::number")]
    pub top_k: usize,
}

fn default_top_k() -> usize {
    3
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClassifyResponse {
    pub results: Vec<ClassifiedText>,
    pub models: ModelVersions,
}

/// One text's scores, with its language.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClassifiedText {
    #[serde(flatten)]
    pub classification: TextClassification,
    /// ISO 639-1, detected from the text (the policy's first language when it is too short to tell).
    pub language: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TriageResponse {
    pub results: Vec<TicketTriage>,
    pub models: ModelVersions,
}

// conversations

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    /// Free-form customer details shown to agents (name, email, ...).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub customer: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub account: AccountContext,
}

/// A customer's rating of a resolved conversation.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rating {
    /// 1 (bad) to 5 (great).
    #[schema(minimum = 1, maximum = 5)]
    #[serde(deserialize_with = "whole::number")]
    pub csat: u8,
}

/// Every queue with its waiting count.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueuesResponse {
    pub queues: Vec<tierline_support::conversation::QueueSummary>,
}

/// What the resolve form offers: the policy's queues and the topic head's labels.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PolicyQueues {
    pub queues: Vec<String>,
    pub topics: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerMessage {
    pub text: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentMessage {
    pub agent: String,
    pub text: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolve {
    pub resolved_by: ResolvedBy,
    pub agent: Option<String>,
    /// Customer satisfaction, 1-5.
    #[serde(default, deserialize_with = "whole::optional")]
    pub csat: Option<u8>,
    /// `false`: the person needed nothing the AI lacked (an avoidable escalation).
    pub needed_information_ai_lacked: Option<bool>,
    /// The right topic, when the AI's was wrong.
    pub corrected_topic: Option<String>,
    /// The right queue, when the AI's was wrong (one of the policy's queues).
    pub corrected_queue: Option<String>,
    /// The agent's answer, approved for the knowledge base.
    pub approved_answer: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct QueueParams {
    #[serde(default = "default_limit")]
    pub limit: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueueResponse {
    pub queue: String,
    pub waiting: Vec<Waiting>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Reloaded {
    pub reloaded: bool,
    pub queues: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MetricsParams {
    /// `day`, `week` (default) or `all`.
    #[serde(default = "default_window")]
    pub window: Window,
}

fn default_window() -> Window {
    Window::Week
}

// embed

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    pub texts: Vec<String>,
    /// `float` (default): arrays of numbers; `base64`: each embedding as the base64 of its
    /// little-endian f32 bytes (about a quarter of the JSON, parsed much faster).
    #[serde(default)]
    pub encoding_format: EncodingFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    #[default]
    Float,
    Base64,
}

/// An embedding as numbers, or as base64 of little-endian f32 (`encoding_format`).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EmbeddingValue {
    Float(Vec<f32>),
    Base64(String),
}

impl EmbeddingValue {
    pub fn encode(embedding: Vec<f32>, format: EncodingFormat) -> Self {
        match format {
            EncodingFormat::Float => Self::Float(embedding),
            EncodingFormat::Base64 => {
                use base64::Engine as _;
                let bytes: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
                Self::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }
}

/// `POST /v1/embeddings`, as OpenAI's embeddings API takes it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAiEmbeddingsRequest {
    /// One text or a list of texts (token arrays are not accepted).
    pub input: OpenAiInput,
    /// Accepted for compatibility; must name the served encoder (or be omitted).
    pub model: Option<String>,
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    /// Must equal the encoder's width when given (no truncated embeddings).
    #[serde(default, deserialize_with = "whole::optional")]
    pub dimensions: Option<usize>,
    /// Accepted and ignored (OpenAI's end-user id).
    pub user: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum OpenAiInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenAiEmbeddingsResponse {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<OpenAiEmbedding>,
    pub model: String,
    pub usage: OpenAiUsage,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenAiEmbedding {
    /// Always `embedding`.
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingValue,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenAiUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbedResponse {
    pub model: String,
    pub revision: String,
    pub dimensions: usize,
    pub data: Vec<EmbeddingItem>,
    pub usage: Usage,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbeddingItem {
    pub index: usize,
    pub embedding: EmbeddingValue,
    pub tokens: usize,
    /// The text was longer than the model's limit and only its beginning was encoded.
    pub truncated: bool,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub tokens: usize,
}

// insights

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertParams {
    /// Only alerts still active.
    #[serde(default)]
    pub active: bool,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertsResponse {
    /// Newest first: count, baseline, accounts, example tickets, characteristic terms.
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AtRiskParams {
    /// Every assessed account, not only those at risk.
    #[serde(default)]
    pub all: bool,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AtRiskResponse {
    /// Worst first: score out of 100, the reasons, the figures behind them.
    pub accounts: Vec<AccountHealth>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FeedbackParams {
    /// The head the examples are for (`topic`).
    pub head: Option<String>,
    /// `pending`, `accepted` or `rejected`; all when absent.
    pub status: Option<FeedbackStatus>,
    /// Only examples with a greater id (paging).
    #[serde(default)]
    pub after: i64,
    /// Page size: 1-500, default 50 (the list); 1-100,000, default 100,000 (the export).
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeedbackResponse {
    pub examples: Vec<FeedbackRow>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Review {
    pub status: FeedbackStatus,
    /// A corrected label, when the stored one is wrong.
    pub label: Option<String>,
}

// kb

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    pub q: String,
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// `public` (default), `internal` or `all`.
    #[serde(default)]
    pub audience: Option<String>,
    pub product: Option<String>,
    pub tag: Option<String>,
}

fn default_k() -> usize {
    5
}

fn default_mode() -> Mode {
    Mode::Hybrid
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    pub query: String,
    pub mode: Mode,
    pub hits: Vec<Citation>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerRequest {
    pub question: String,
    /// The customer's earlier messages in the conversation, oldest first (at most 20).
    #[serde(default)]
    pub context: Vec<String>,
}

// kb_articles

/// An article as sent by a client; `id` is optional on create (derived from the title).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArticleInput {
    pub id: Option<String>,
    pub title: String,
    pub body: String,
    pub url: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub product: Option<String>,
    #[serde(default)]
    pub audience: Audience,
    pub updated: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ArticleSummary {
    pub id: String,
    pub title: String,
    pub audience: Audience,
    pub url: Option<String>,
    pub updated: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ArticleList {
    pub articles: Vec<ArticleSummary>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ArticleResponse {
    #[serde(flatten)]
    pub article: Article,
    /// How many passages the article was split into for retrieval.
    pub passages: usize,
}
