//! `GET /v1/models`: the encoder and every head with its card.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::http::error::ApiError;
use crate::http::state::AppState;

/// The served encoder (id, revision, dimensions, precision, device) and every head's card
/// (labels, training data, held-out figures), with the promoted checkpoints.
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "models",
    responses(
        (status = 200, description = "`encoder`, `heads`, `checkpoints`", body = Object),
        (status = 503, description = "the models are still loading", body = crate::http::error::ErrorBody),
    ),
)]
pub async fn models(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let classifier = state.classifier().ok_or_else(|| ApiError::not_ready("the models are still loading"))?;
    Ok(Json(json!({
        "encoder": classifier.engine().info(),
        "heads": classifier.cards(),
        "checkpoints": classifier.versions().checkpoints,
    })))
}
