//! `POST /v1/embed`: embeddings for a batch of texts.

use crate::http::api::*;

use axum::extract::State;
use axum::Json;

use crate::http::error::{within_deadline, ApiError, ErrorBody};
use crate::http::extract::ApiJson;
use crate::http::state::AppState;

/// Embeddings of a batch of texts (the shared encoder, L2-normalised).
#[utoipa::path(
    post,
    path = "/v1/embed",
    tag = "models",
    request_body = EmbedRequest,
    responses(
        (status = 200, body = EmbedResponse),
        (status = 422, description = "invalid field", body = ErrorBody),
        (status = 429, description = "overloaded", body = ErrorBody),
        (status = 503, description = "models loading or timed out", body = ErrorBody),
    ),
)]
pub async fn embed(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<EmbedRequest>,
) -> Result<Json<EmbedResponse>, ApiError> {
    let limits = state.limits();
    validate_texts(&request.texts, limits.max_texts_per_request, limits.max_text_chars)?;
    let engine = state.engine().ok_or_else(|| ApiError::not_ready("the model is still loading"))?;
    let timeout = state.request_timeout();
    let format = request.encoding_format;
    let outputs = within_deadline(timeout, engine.embed(request.texts)).await?;
    let info = engine.info();
    let usage = Usage { tokens: outputs.iter().map(|o| o.tokens).sum() };
    let data = outputs
        .into_iter()
        .enumerate()
        .map(|(index, out)| EmbeddingItem {
            index,
            embedding: EmbeddingValue::encode(out.embedding, format),
            tokens: out.tokens,
            truncated: out.truncated,
        })
        .collect();
    Ok(Json(EmbedResponse {
        model: info.id.clone(),
        revision: info.revision.clone(),
        dimensions: info.dimensions,
        data,
        usage,
    }))
}

/// OpenAI-compatible embeddings: the same encoder as `/v1/embed`, in OpenAI's request and
/// response shapes, so existing OpenAI clients work by changing their base URL.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "models",
    request_body = OpenAiEmbeddingsRequest,
    responses(
        (status = 200, body = OpenAiEmbeddingsResponse),
        (status = 422, description = "invalid field (model, dimensions, input)", body = ErrorBody),
        (status = 429, description = "overloaded", body = ErrorBody),
        (status = 503, description = "models loading or timed out", body = ErrorBody),
    ),
)]
pub async fn openai_embeddings(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<OpenAiEmbeddingsRequest>,
) -> Result<Json<OpenAiEmbeddingsResponse>, ApiError> {
    let limits = state.limits();
    let texts = match request.input {
        OpenAiInput::One(text) => vec![text],
        OpenAiInput::Many(texts) => texts,
    };
    validate_texts(&texts, limits.max_texts_per_request, limits.max_text_chars)
        .map_err(ApiError::renamed("texts", "input"))?;
    let engine = state.engine().ok_or_else(|| ApiError::not_ready("the model is still loading"))?;
    let info = engine.info().clone();
    if let Some(model) = request.model.as_deref().filter(|m| *m != info.id && !info.id.ends_with(&format!("/{m}"))) {
        return Err(ApiError::invalid("model", format!("this server serves `{}`, not `{model}`", info.id)));
    }
    if let Some(dimensions) = request.dimensions.filter(|d| *d != info.dimensions) {
        return Err(ApiError::invalid(
            "dimensions",
            format!("the encoder's embeddings have {} dimensions, not {dimensions}", info.dimensions),
        ));
    }
    let timeout = state.request_timeout();
    let outputs = within_deadline(timeout, engine.embed(texts)).await?;
    let tokens = outputs.iter().map(|o| o.tokens).sum();
    let data = outputs
        .into_iter()
        .enumerate()
        .map(|(index, out)| OpenAiEmbedding {
            object: "embedding",
            index,
            embedding: EmbeddingValue::encode(out.embedding, request.encoding_format),
        })
        .collect();
    Ok(Json(OpenAiEmbeddingsResponse {
        object: "list",
        data,
        model: info.id,
        usage: OpenAiUsage { prompt_tokens: tokens, total_tokens: tokens },
    }))
}

/// Count, size and emptiness checks shared by every endpoint that takes texts.
pub fn validate_texts(texts: &[impl AsRef<str>], max_texts: usize, max_chars: usize) -> Result<(), ApiError> {
    if texts.is_empty() {
        return Err(ApiError::invalid("texts", "`texts` must hold at least one text"));
    }
    if texts.len() > max_texts {
        return Err(ApiError::too_large(
            "texts",
            format!("{} texts in one request; the limit is {max_texts}", texts.len()),
        ));
    }
    for (index, text) in texts.iter().map(AsRef::as_ref).enumerate() {
        if tierline_support::text::is_blank(text) {
            return Err(ApiError::invalid(format!("texts[{index}]"), "text is empty"));
        }
        let chars = tierline_support::text::char_len(text);
        if chars > max_chars {
            return Err(ApiError::too_large(
                format!("texts[{index}]"),
                format!("text is {chars} characters; the limit is {max_chars}"),
            ));
        }
    }
    Ok(())
}
