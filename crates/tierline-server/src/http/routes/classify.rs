//! `POST /v1/classify`: sentiment, frustration, topic and out-of-scope score for a batch of texts.

use crate::http::api::*;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::embed::validate_texts;
use crate::http::error::{within_deadline, ApiError, ErrorBody};
use crate::http::extract::ApiJson;
use crate::http::state::AppState;
use tierline_support::conversation::Ticket;
use tierline_support::triage::language;

/// Stateless triage: `texts` get the heads' scores; `tickets` get signals, tier, queue, reasons, and an answer (auto) or a draft (assist).
#[utoipa::path(
    post,
    path = "/v1/classify",
    tag = "triage",
    request_body = ClassifyRequest,
    responses(
        (status = 200, description = "`texts`: ClassifyResponse; `tickets`: TriageResponse", body = TriageResponse),
        (status = 422, description = "invalid field", body = ErrorBody),
        (status = 429, description = "overloaded", body = ErrorBody),
        (status = 503, description = "models loading or timed out", body = ErrorBody),
    ),
)]
pub async fn classify(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ClassifyRequest>,
) -> Result<Response, ApiError> {
    let limits = state.limits();
    if !(1..=20).contains(&request.top_k) {
        return Err(ApiError::invalid("top_k", "`top_k` must be between 1 and 20"));
    }
    let models = state.models().ok_or_else(|| ApiError::not_ready("the models are still loading"))?;
    let timeout = state.request_timeout();
    match (request.texts, request.tickets) {
        (Some(texts), None) => {
            validate_texts(&texts, limits.max_texts_per_request, limits.max_text_chars)?;
            let fallback = state.support().policy().first_language().to_string();
            let languages: Vec<String> = texts.iter().map(|t| language::detect(t, &fallback)).collect();
            let results = within_deadline(timeout, models.classifier.classify(texts, request.top_k)).await?;
            let results = results
                .into_iter()
                .zip(languages)
                .map(|(classification, language)| ClassifiedText { classification, language })
                .collect();
            Ok(Json(ClassifyResponse { results, models: models.classifier.versions() }).into_response())
        }
        (None, Some(tickets)) => {
            check_tickets(&tickets, limits.max_texts_per_request, limits.max_text_chars)?;
            let results = within_deadline(timeout, state.support().triage_tickets(models, &tickets)).await?;
            Ok(Json(TriageResponse { results, models: models.classifier.versions() }).into_response())
        }
        _ => Err(ApiError::invalid("texts", "send exactly one of `texts` (scores only) or `tickets` (full triage)")),
    }
}

/// Each ticket's body must say something, and body and subject stay within the text limit.
fn check_tickets(tickets: &[Ticket], max_tickets: usize, max_chars: usize) -> Result<(), ApiError> {
    let bodies: Vec<&str> = tickets.iter().map(|t| t.body.as_str()).collect();
    validate_texts(&bodies, max_tickets, max_chars).map_err(ApiError::renamed("texts", "tickets")).map_err(
        |mut err| {
            // `tickets[3]` -> `tickets[3].body`: the body is what was checked.
            if let Some(field) = err.field.as_mut().filter(|f| f.ends_with(']')) {
                field.push_str(".body");
            }
            err
        },
    )?;
    for (index, ticket) in tickets.iter().enumerate() {
        let subject = ticket.subject.as_deref().unwrap_or_default();
        if tierline_support::text::char_len(subject) > max_chars {
            return Err(ApiError::too_large(
                format!("tickets[{index}].subject"),
                format!("subject is longer than {max_chars} characters"),
            ));
        }
        super::conversations::check_account(&ticket.account)
            .map_err(|err| ApiError { field: err.field.map(|f| format!("tickets[{index}].{f}")), ..err })?;
    }
    Ok(())
}
