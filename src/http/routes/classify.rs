//! `POST /v1/classify`: sentiment, frustration, topic and out-of-scope score for a batch of texts.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::embed::validate_texts;
use crate::classify::{ModelVersions, TextClassification};
use crate::http::error::{within_deadline, ApiError};
use crate::http::extract::ApiJson;
use crate::http::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRequest {
    pub texts: Vec<String>,
    /// How many ranked labels single-label heads return (1-20, default 3).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

fn default_top_k() -> usize {
    3
}

#[derive(Debug, Serialize)]
pub struct ClassifyResponse {
    pub results: Vec<TextClassification>,
    pub models: ModelVersions,
}

pub async fn classify(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ClassifyRequest>,
) -> Result<Json<ClassifyResponse>, ApiError> {
    let limits = state.limits();
    validate_texts(&request.texts, limits.max_texts_per_request, limits.max_text_bytes)?;
    if !(1..=20).contains(&request.top_k) {
        return Err(ApiError::invalid("top_k", "`top_k` must be between 1 and 20"));
    }
    let classifier = state.classifier().ok_or_else(|| ApiError::not_ready("the models are still loading"))?;
    let timeout = Duration::from_millis(limits.request_timeout_ms);
    let results = within_deadline(timeout, classifier.classify(request.texts, request.top_k)).await?;
    Ok(Json(ClassifyResponse { results, models: classifier.versions() }))
}
