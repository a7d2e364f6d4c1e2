pub mod chat;
pub mod classify;
pub mod conversations;
pub mod customers;
pub mod embed;
pub mod events;
pub mod health;
pub mod insights;
pub mod kb;
pub mod kb_articles;
pub mod models;
pub mod pages;

use crate::http::error::ApiError;
use crate::http::state::AppState;

/// A page size (`limit`) must be 1-500.
pub(crate) fn check_limit(limit: usize) -> Result<(), ApiError> {
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "`limit` must be between 1 and 500"));
    }
    Ok(())
}

/// A text field must hold something and stay within `server.max_text_bytes`.
pub(crate) fn check_text(state: &AppState, field: &str, text: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::invalid(field, format!("`{field}` must not be empty")));
    }
    if text.len() > state.limits().max_text_bytes {
        return Err(ApiError::too_large(
            field,
            format!("`{field}` is longer than {} bytes", state.limits().max_text_bytes),
        ));
    }
    Ok(())
}
