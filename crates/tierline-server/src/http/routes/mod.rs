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
use tierline_support::text::{char_len, is_blank};

/// A page size (`limit`) must be 1-500.
pub(crate) fn check_limit(limit: usize) -> Result<(), ApiError> {
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "`limit` must be between 1 and 500"));
    }
    Ok(())
}

/// A text field must hold something and stay within `server.max_text_chars`.
pub(crate) fn check_text(state: &AppState, field: &str, text: &str) -> Result<(), ApiError> {
    if is_blank(text) {
        return Err(ApiError::invalid(field, format!("`{field}` must not be empty")));
    }
    let limit = state.limits().max_text_chars;
    if char_len(text) > limit {
        return Err(ApiError::too_large(field, format!("`{field}` is longer than {limit} characters")));
    }
    Ok(())
}

/// A short name (an agent, a label): 1 to `max` characters, not blank.
pub(crate) fn check_name(field: &'static str, value: &str, max: usize) -> Result<(), ApiError> {
    if is_blank(value) || char_len(value) > max {
        return Err(ApiError::invalid(field, format!("`{field}` must be 1-{max} characters")));
    }
    Ok(())
}
