//! Erasure of one customer's data (admin).

use axum::extract::State;
use axum::Json;
use tierline_support::conversation::erasure::ErasureReceipt;

use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::ApiPath;
use crate::http::state::AppState;

/// Erases every conversation of this customer (matched by the `id` or `email` given in
/// `customer` when the conversation was opened): messages, feedback and the examples spike
/// alerts quote. Answers a receipt with what was removed; erasing an unknown customer removes
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
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ErasureReceipt>, ApiError> {
    if id.trim().is_empty() || id.len() > 320 {
        return Err(ApiError::invalid("id", "the customer id or e-mail must be 1-320 characters"));
    }
    Ok(Json(state.support().erase_customer(&id).await?))
}
