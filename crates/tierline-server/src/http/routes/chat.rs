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
    caller: Option<Extension<Caller>>,
    ApiJson(request): ApiJson<CreateConversation>,
) -> Result<(StatusCode, Json<ChatStarted>), ApiError> {
    let (customer, account) = super::conversations::checked_new(request)?;
    if let Some(Extension(caller)) = &caller {
        super::conversations::may_create(caller, &account)?;
    }
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
    opens(&state, &caller, &id).await?;
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
    opens(&state, &caller, &id).await?;
    Ok(Json(state.support().rate(&id, rating.csat).await?))
}

/// Whether `caller` may open conversation `id`: a customer token opens its own conversation
/// only, a key kept to some accounts only theirs; any other reads as absent (404), so a key
/// learns nothing of another account's conversations.
pub async fn opens(state: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let absent = || ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no conversation with id `{id}`"));
    if !caller.may_open(id) {
        return Err(absent());
    }
    let Some(key) = caller.restricted_key() else { return Ok(()) };
    match state.support().store().conversation(id).await? {
        Some(row) if key.may_open_account(row.account.id.as_deref()) => Ok(()),
        _ => Err(absent()),
    }
}
