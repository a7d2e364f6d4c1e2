//! What the traffic says: anomaly alerts, accounts at risk, and the labeled examples learned from
//! resolutions (list, review, export for training).

use crate::http::api::*;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::check_limit;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::state::AppState;
use tierline_support::store::{FeedbackFilter, FeedbackStatus};

/// Spikes of similar tickets across accounts (a likely bug or outage), newest first.
#[utoipa::path(
    get,
    path = "/v1/alerts",
    tag = "insights",
    params(AlertParams),
    responses(
        (status = 200, body = AlertsResponse),
        (status = 422, body = ErrorBody),
    ),
)]
pub async fn alerts(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<AlertParams>,
) -> Result<Json<AlertsResponse>, ApiError> {
    check_limit(params.limit)?;
    Ok(Json(AlertsResponse { alerts: state.support().alerts(params.active, params.limit).await? }))
}

/// Accounts that need proactive outreach: health scored from sentiment trend, ticket frequency,
/// escalations and repeated contacts.
#[utoipa::path(
    get,
    path = "/v1/accounts/at-risk",
    tag = "insights",
    params(AtRiskParams),
    responses(
        (status = 200, body = AtRiskResponse),
        (status = 422, body = ErrorBody),
    ),
)]
pub async fn at_risk(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<AtRiskParams>,
) -> Result<Json<AtRiskResponse>, ApiError> {
    check_limit(params.limit)?;
    let mut accounts = state.support().account_health().await?;
    accounts.retain(|a| params.all || a.at_risk);
    accounts.truncate(params.limit);
    Ok(Json(AtRiskResponse { accounts }))
}

impl FeedbackParams {
    fn filter(&self, limit: usize) -> FeedbackFilter {
        FeedbackFilter {
            head: self.head.clone(),
            statuses: self.status.into_iter().collect(),
            after_id: self.after,
            limit,
        }
    }
}

/// Labeled examples learned from resolutions (corrected topics, confirmed ones), oldest first.
#[utoipa::path(
    get,
    path = "/v1/feedback",
    tag = "learning",
    params(FeedbackParams),
    responses(
        (status = 200, body = FeedbackResponse),
        (status = 422, body = ErrorBody),
    ),
)]
pub async fn feedback(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<FeedbackParams>,
) -> Result<Json<FeedbackResponse>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    check_limit(limit)?;
    Ok(Json(FeedbackResponse { examples: state.support().feedback(params.filter(limit)).await? }))
}

/// Most examples one export returns; page on with `after` (the last id received).
pub const MAX_EXPORT: usize = 100_000;

/// The examples as JSONL (`{"text", "label", ...}` per line), for `tierline train --file`:
/// at most `limit` (default and most 100,000) per request, oldest first; page on with `after`.
#[utoipa::path(
    get,
    path = "/v1/feedback/export",
    tag = "learning",
    params(FeedbackParams),
    responses(
        (status = 200, content_type = "application/x-ndjson", body = String),
    ),
)]
pub async fn export(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<FeedbackParams>,
) -> Result<Response, ApiError> {
    // The list's page size is for screens; an export takes a training set whole by default.
    let limit = params.limit.unwrap_or(MAX_EXPORT);
    if !(1..=MAX_EXPORT).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("`limit` must be between 1 and {MAX_EXPORT}")));
    }
    let mut filter = params.filter(limit);
    if filter.statuses.is_empty() {
        filter.statuses = vec![FeedbackStatus::Pending, FeedbackStatus::Accepted];
    }
    let body = state.support().export_feedback(filter).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

/// Longest label a reviewer may give an example.
pub const MAX_LABEL_CHARS: usize = 64;

/// Accepts or rejects an example (rejected ones are never trained on), optionally relabelling it.
#[utoipa::path(
    post,
    path = "/v1/feedback/{id}",
    tag = "learning",
    params(("id" = i64, Path)),
    request_body = Review,
    responses(
        (status = 204),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
)]
pub async fn review(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(review): ApiJson<Review>,
) -> Result<StatusCode, ApiError> {
    if let Some(label) = &review.label {
        super::check_name("label", label, MAX_LABEL_CHARS)?;
    }
    let label = review.label.map(|l| l.trim().to_string());
    state.support().review_feedback(id, review.status, label).await?;
    Ok(StatusCode::NO_CONTENT)
}
