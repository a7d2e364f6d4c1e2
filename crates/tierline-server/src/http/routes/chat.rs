//! The customer's own routes, for the chat widget: start a conversation (a token that opens it
//! and nothing else), ask for a person at any moment, rate the conversation once resolved.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use tierline_support::conversation::{ChatStarted, Turn};
use tierline_support::store::ConversationRow;

use crate::http::api::*;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{ApiJson, ApiPath};
use crate::http::state::AppState;

/// Starts a conversation from a customer's browser; the token opens this conversation only.
#[utoipa::path(
    post,
    path = "/v1/chat/conversations",
    tag = "chat",
    request_body = CreateConversation,
    responses(
        (status = 201, body = ChatStarted),
        (status = 403, description = "public chat is off: create conversations with a helpdesk key", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
)]
pub async fn start(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateConversation>,
) -> Result<(StatusCode, Json<ChatStarted>), ApiError> {
    let (customer, account) = super::conversations::checked_new(request)?;
    Ok((StatusCode::CREATED, Json(state.support().start_chat(customer, &account).await?)))
}

/// "Talk to a person": hands the conversation to a person now. Works while the models load.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/escalate",
    tag = "chat",
    params(("id" = String, Path)),
    responses((status = 200, body = Turn), (status = 404, body = ErrorBody)),
)]
pub async fn escalate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Turn>, ApiError> {
    allowed(&caller, &id)?;
    Ok(Json(state.support().escalate(&id).await?))
}

/// The customer's rating (1-5) of a resolved conversation.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/csat",
    tag = "chat",
    params(("id" = String, Path)),
    request_body = Rating,
    responses(
        (status = 200, body = ConversationRow),
        (status = 404, body = ErrorBody),
        (status = 409, description = "not resolved yet", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
)]
pub async fn rate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(rating): ApiJson<Rating>,
) -> Result<Json<ConversationRow>, ApiError> {
    allowed(&caller, &id)?;
    Ok(Json(state.support().rate(&id, rating.csat).await?))
}

/// A customer token opens its own conversation only; any other id reads as absent.
pub fn allowed(caller: &Caller, id: &str) -> Result<(), ApiError> {
    if caller.may_open(id) {
        return Ok(());
    }
    Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no conversation with id `{id}`")))
}
