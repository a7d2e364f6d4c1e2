//! `GET /v1/kb/search` (agents, debugging) and `POST /v1/answer` (Tier-1 answers for customers).

use crate::http::api::*;
use axum::extract::State;
use axum::Json;

use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::state::AppState;
use tierline_support::kb::{Answer, Audience, Filter};

/// Most earlier messages an answer request may carry.
pub const MAX_CONTEXT_MESSAGES: usize = 20;
/// Most hits one search returns.
pub const MAX_SEARCH_HITS: usize = 50;

pub(super) fn kb(state: &AppState) -> Result<&std::sync::Arc<tierline_support::kb::KnowledgeBase>, ApiError> {
    state
        .kb()
        .ok_or_else(|| ApiError::not_ready("the knowledge base is still loading (or disabled: kb.source is empty)"))
}

/// Hybrid (BM25 + dense) knowledge-base search with highlighted snippets, for agents and debugging.
#[utoipa::path(
    get,
    path = "/v1/kb/search",
    tag = "knowledge base",
    params(SearchParams),
    responses(
        (status = 200, body = SearchResponse),
        (status = 422, description = "invalid field", body = ErrorBody),
        (status = 429, description = "overloaded", body = ErrorBody),
        (status = 503, description = "models loading or timed out", body = ErrorBody),
    ),
)]
pub async fn search(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<Json<SearchResponse>, ApiError> {
    super::check_text(&state, "q", &params.q)?;
    if !(1..=MAX_SEARCH_HITS).contains(&params.k) {
        return Err(ApiError::invalid("k", "`k` must be between 1 and 50"));
    }
    let audience = match params.audience.as_deref() {
        None | Some("public") => Some(Audience::Public),
        Some("internal") => Some(Audience::Internal),
        Some("all") => None,
        Some(other) => {
            return Err(ApiError::invalid("audience", format!("unknown audience `{other}` (public, internal or all)")))
        }
    };
    let filter = Filter { audience, product: params.product, tag: params.tag };
    let hits = kb(&state)?.search(&params.q, params.mode, params.k, &filter).await.map_err(ApiError::from_kb)?;
    Ok(Json(SearchResponse { query: params.q, mode: params.mode, hits }))
}

/// A Tier-1 answer from public articles with citations and a calibrated confidence, or `answered: false` with the reason.
#[utoipa::path(
    post,
    path = "/v1/answer",
    tag = "knowledge base",
    request_body = AnswerRequest,
    responses(
        (status = 200, body = Answer),
        (status = 422, description = "invalid field", body = ErrorBody),
        (status = 429, description = "overloaded", body = ErrorBody),
        (status = 503, description = "models loading or timed out", body = ErrorBody),
    ),
)]
pub async fn answer(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<AnswerRequest>,
) -> Result<Json<Answer>, ApiError> {
    super::check_text(&state, "question", &request.question)?;
    if request.context.len() > MAX_CONTEXT_MESSAGES {
        return Err(ApiError::too_large("context", "`context` holds at most 20 messages"));
    }
    let limit = state.limits().max_text_chars;
    if let Some(i) = request.context.iter().position(|m| tierline_support::text::char_len(m) > limit) {
        return Err(ApiError::too_large(format!("context[{i}]"), "message is too long"));
    }
    let answer = kb(&state)?.answer_in_context(&request.question, &request.context).await.map_err(ApiError::from_kb)?;
    Ok(Json(answer))
}
