//! Erasure of one customer's data (admin).

use axum::extract::State;
use axum::{Extension, Json};
use tierline_support::conversation::erasure::ErasureReceipt;
use tierline_support::store::{AuditAction, AuditEntry};

use crate::http::auth::{audit, Caller};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{ApiPath, ApiQuery};
use crate::http::state::AppState;

/// Longest customer id or e-mail (an e-mail address is at most 320 characters).
pub const MAX_CUSTOMER_ID_CHARS: usize = 320;

/// Erases every conversation of this customer (matched by the `id` or `email` given in
/// `customer` when the conversation was opened): messages, feedback, the examples spike alerts
/// quote and the internal articles made from approved answers to them. Answers a receipt with what was removed; erasing an unknown customer removes
/// nothing and says so.
#[utoipa::path(
    delete,
    path = "/v1/customers/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "the customer's id or e-mail")),
    responses(
        (status = 200, body = ErasureReceipt),
        (status = 422, body = ErrorBody),
    ),
)]
pub async fn erase(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ErasureReceipt>, ApiError> {
    super::check_name("id", &id, MAX_CUSTOMER_ID_CHARS)?;
    let receipt = state.support().erase_customer(state.kb(), &id).await?;
    let detail = serde_json::json!({
        "conversations": receipt.conversations,
        "messages": receipt.messages,
        "articles": receipt.articles,
    });
    // The log must not keep what was erased: it names the customer by a hash an auditor can
    // check against a claimed id, never by the id itself.
    let target = format!("sha256:{}", tierline_support::access::hash(&id.to_lowercase()));
    audit(&state, &caller, AuditAction::CustomerErased, &target, detail).await;
    Ok(Json(receipt))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// 1-500, newest first.
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    100
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AuditLog {
    pub entries: Vec<AuditEntry>,
}

/// The audit log of admin actions (keys, policy reloads, article edits, erasures), newest first.
#[utoipa::path(
    get,
    path = "/v1/admin/audit",
    tag = "admin",
    params(AuditParams),
    responses(
        (status = 200, body = AuditLog),
        (status = 422, body = ErrorBody),
    ),
)]
pub async fn audit_log(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditLog>, ApiError> {
    super::check_limit(params.limit)?;
    Ok(Json(AuditLog { entries: state.support().store().audit_log(params.limit).await? }))
}
