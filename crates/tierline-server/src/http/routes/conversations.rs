//! Conversations over HTTP: create, customer messages (AI reply or handoff), agent messages,
//! resolve, read, the handoff packet, queues, and the policy reload.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use tierline_support::conversation::calibration::CalibrationReport;
use tierline_support::conversation::metrics::SupportReport;
use tierline_support::conversation::{handoff::Packet, ConversationView, Resolution, Resolved, SupportError, Turn};
use tierline_support::store::{ConversationRow, ResolutionOutcome};

use super::{check_limit, check_name, check_text};

/// Longest agent name (who replied, who resolved).
pub const MAX_AGENT_CHARS: usize = 200;
use crate::http::api::*;
use crate::http::auth::Caller;
use crate::http::error::{deadline, ApiError, ErrorBody};
use crate::http::extract::{ApiJson, ApiPath, ApiQuery};
use crate::http::state::AppState;
use tierline_support::triage::AccountContext;

/// Opens a conversation with optional customer details and account context.
#[utoipa::path(
    post,
    path = "/v1/conversations",
    tag = "conversations",
    request_body = CreateConversation,
    responses(
        (status = 201, body = ConversationRow),
        (status = 422, body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiJson(request): ApiJson<CreateConversation>,
) -> Result<(StatusCode, Json<ConversationRow>), ApiError> {
    let (customer, account) = checked_new(request)?;
    may_create(&caller, &account)?;
    let conversation = state.support().create(customer, &account).await?;
    Ok((StatusCode::CREATED, Json(conversation)))
}

/// The customer details and account of a new conversation, within their limits.
pub(super) fn checked_new(request: CreateConversation) -> Result<(serde_json::Value, AccountContext), ApiError> {
    let customer = serde_json::Value::Object(request.customer.unwrap_or_default());
    if customer.to_string().len() > 16 * 1024 {
        return Err(ApiError::too_large("customer", "`customer` is larger than 16 KiB"));
    }
    check_account(&request.account)?;
    Ok((customer, request.account))
}

/// A key kept to some accounts opens conversations for those accounts only.
pub(super) fn may_create(caller: &Caller, account: &AccountContext) -> Result<(), ApiError> {
    if caller.may_open_account(account.id.as_deref()) {
        return Ok(());
    }
    let kept = caller.restricted_key().map(|k| k.accounts.join(", ")).unwrap_or_default();
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("this key opens conversations for the accounts [{kept}] only: set `account.id` to one of them"),
    ))
}

/// An account's figures must make sense (a contract value is never negative).
pub(super) fn check_account(account: &AccountContext) -> Result<(), ApiError> {
    if let Some(value) = account.contract_value.filter(|v| !v.is_finite() || *v < 0.0) {
        return Err(ApiError::invalid("account.contract_value", format!("must be a non-negative number, not {value}")));
    }
    Ok(())
}

/// A customer message: the AI answers (saying it is an AI) or hands off to a queue, with the decision and its reasons.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/messages",
    tag = "conversations",
    params(("id" = String, Path)),
    request_body = CustomerMessage,
    responses(
        (status = 200, body = Turn),
        (status = 404, body = ErrorBody),
        (status = 409, description = "resolved", body = ErrorBody),
        (status = 422, description = "invalid field", body = ErrorBody),
        (status = 429, description = "overloaded", body = ErrorBody),
        (status = 503, description = "models loading or timed out", body = ErrorBody),
    ),
)]
pub async fn customer_message(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<CustomerMessage>,
) -> Result<Json<Turn>, ApiError> {
    super::chat::opens(&state, &caller, &id).await?;
    check_text(&state, "text", &request.text)?;
    if state.models().is_none() {
        return Err(ApiError::not_ready("the models are still loading"));
    }
    let timeout = state.request_timeout();
    // The turn runs in its own task: past the deadline the caller gets 503, but the turn still
    // completes whole (stored with its reply) instead of being cut between inference and storage.
    let task_state = state.clone();
    let turn = tokio::spawn(async move {
        let models = task_state.models().expect("checked above; models are never unloaded");
        task_state.support().customer_message(models, &id, request.text).await
    });
    let turn = deadline(timeout, turn).await.map_err(|passed| {
        let err = ApiError::from(passed);
        ApiError {
            message: format!("{}; the message may still be stored: GET the conversation before retrying", err.message),
            ..err
        }
    })?;
    let turn = turn.map_err(|err| SupportError::Internal(anyhow::anyhow!("turn task failed: {err}")))??;
    Ok(Json(turn))
}

/// A person replies; the conversation is theirs from then on.
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/agent-messages",
    tag = "conversations",
    params(("id" = String, Path)),
    request_body = AgentMessage,
    responses(
        (status = 200, body = ConversationRow),
        (status = 404, body = ErrorBody),
        (status = 409, description = "the conversation is resolved", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
)]
pub async fn agent_message(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<AgentMessage>,
) -> Result<Json<ConversationRow>, ApiError> {
    super::chat::opens(&state, &caller, &id).await?;
    check_text(&state, "text", &request.text)?;
    check_name("agent", &request.agent, MAX_AGENT_CHARS)?;
    Ok(Json(state.support().agent_message(&id, request.agent, request.text).await?))
}

/// Closes a conversation: resolved by the AI or a human, optional CSAT (1-5).
#[utoipa::path(
    post,
    path = "/v1/conversations/{id}/resolve",
    tag = "conversations",
    params(("id" = String, Path)),
    request_body = Resolve,
    responses(
        (status = 200, body = Resolved),
        (status = 403, body = ErrorBody, description = "a helpdesk key sent knowledge or training data"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
    ),
)]
pub async fn resolve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<Resolve>,
) -> Result<Json<Resolved>, ApiError> {
    super::chat::opens(&state, &caller, &id).await?;
    let teaches =
        request.approved_answer.is_some() || request.corrected_topic.is_some() || request.corrected_queue.is_some();
    if teaches && !caller.may_teach() {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "forbidden",
            "`approved_answer`, `corrected_topic` and `corrected_queue` write knowledge and training data: they need an agent key, not a helpdesk one",
        ));
    }
    if let Some(answer) = &request.approved_answer {
        check_name("approved_answer", answer, state.limits().max_article_chars)?;
    }
    if let Some(agent) = &request.agent {
        check_name("agent", agent, MAX_AGENT_CHARS)?;
    }
    let resolution = Resolution {
        by: request.resolved_by,
        agent: request.agent,
        csat: request.csat,
        outcome: ResolutionOutcome {
            needed_information_ai_lacked: request.needed_information_ai_lacked,
            corrected_topic: request.corrected_topic,
            corrected_queue: request.corrected_queue,
            approved_answer: request.approved_answer,
        },
    };
    Ok(Json(state.support().resolve(state.kb(), &id, resolution).await?))
}

/// The conversation with its transcript and the decision made on each customer message.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = ConversationView),
        (status = 404, body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConversationView>, ApiError> {
    super::chat::opens(&state, &caller, &id).await?;
    Ok(Json(state.support().view(&id).await?))
}

/// The handoff packet: transcript, summary, what the AI tried, signal timeline, account context, suggested reply.
#[utoipa::path(
    get,
    path = "/v1/conversations/{id}/handoff",
    tag = "conversations",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = Packet),
        (status = 404, body = ErrorBody),
    ),
)]
pub async fn handoff(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Packet>, ApiError> {
    super::chat::opens(&state, &caller, &id).await?;
    Ok(Json(state.support().handoff(&id).await?))
}

/// Handoffs waiting in a queue, oldest first, with their wait time.
#[utoipa::path(
    get,
    path = "/v1/queues/{queue}",
    tag = "conversations",
    params(("queue" = String, Path), QueueParams),
    responses(
        (status = 200, body = QueueResponse),
        (status = 404, body = ErrorBody),
    ),
)]
pub async fn queue(
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
    ApiQuery(params): ApiQuery<QueueParams>,
) -> Result<Json<QueueResponse>, ApiError> {
    check_limit(params.limit)?;
    let waiting = state.support().queue(&queue, params.limit).await?;
    Ok(Json(QueueResponse { queue, waiting }))
}

/// Re-reads the policy file; an invalid file is refused and the current policy stays.
#[utoipa::path(
    post,
    path = "/v1/admin/policy/reload",
    tag = "admin",
    responses(
        (status = 200, body = Reloaded),
        (status = 422, description = "invalid policy file; the old one stays", body = ErrorBody),
    ),
)]
pub async fn reload_policy(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Reloaded>, ApiError> {
    let support = state.support().clone();
    let policy = tokio::task::spawn_blocking(move || support.reload_policy())
        .await
        .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", err.to_string()))?
        .map_err(|err| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_policy", format!("{err:#}")))?;
    let detail = serde_json::json!({ "queues": policy.queues.len() });
    crate::http::auth::audit(&state, &caller, tierline_support::store::AuditAction::PolicyReloaded, "policy", detail)
        .await;
    Ok(Json(Reloaded { reloaded: true, queues: policy.queues.clone() }))
}

/// Support metrics per queue and overall for a window: escalation, AI resolution, re-escalation,
/// over-escalation, time to a human (p50/p90), first-contact resolution after escalation, CSAT.
#[utoipa::path(
    get,
    path = "/v1/metrics/support",
    tag = "learning",
    params(MetricsParams),
    responses(
        (status = 200, body = SupportReport),
    ),
)]
pub async fn support_metrics(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<MetricsParams>,
) -> Result<Json<SupportReport>, ApiError> {
    Ok(Json(state.support().support_report(params.window).await?))
}

/// Replays stored decisions and outcomes under alternative thresholds per signal: escalation rate,
/// avoidable and missed escalations, and a suggested threshold. Nothing changes by itself.
#[utoipa::path(
    get,
    path = "/v1/calibration",
    tag = "learning",
    params(MetricsParams),
    responses(
        (status = 200, body = CalibrationReport),
    ),
)]
pub async fn calibration(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<MetricsParams>,
) -> Result<Json<CalibrationReport>, ApiError> {
    Ok(Json(state.support().calibration(params.window).await?))
}

/// Every queue of the policy with how many wait, the oldest wait and its time-to-human target.
#[utoipa::path(get, path = "/v1/queues", tag = "conversations", responses((status = 200, body = QueuesResponse)))]
pub async fn queues(State(state): State<AppState>) -> Result<Json<QueuesResponse>, ApiError> {
    Ok(Json(QueuesResponse { queues: state.support().queue_summaries().await? }))
}

/// The policy's queues and the topic head's labels (for correcting a resolution).
#[utoipa::path(get, path = "/v1/policy/queues", tag = "conversations", responses((status = 200, body = PolicyQueues)))]
pub async fn policy_queues(State(state): State<AppState>) -> Json<PolicyQueues> {
    let queues = state.support().policy().queues.clone();
    let topics = state
        .classifier()
        .and_then(|c| c.cards().into_iter().find(|card| card.name == "topic"))
        .map(|card| card.labels)
        .unwrap_or_default();
    Json(PolicyQueues { queues, topics })
}
