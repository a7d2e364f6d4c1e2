//! Every error leaves as JSON: `{"error": {"code", "message", "field"?}}`, with `Retry-After`
//! on 429/503 when the caller should come back.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tierline_infer::EngineError;
use tierline_support::conversation::SupportError;
use tierline_support::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after_secs: Option<u64>,
}

/// The body of every error response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_field`, `overloaded`, `not_found`.
    pub code: String,
    /// What is wrong, in words.
    pub message: String,
    /// The offending field, e.g. `texts[3]`, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, retry_after_secs: None }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).with_field(field)
    }

    pub fn too_large(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message).with_field(field)
    }

    pub fn not_ready(message: impl Into<String>) -> Self {
        Self { retry_after_secs: Some(5), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message) }
    }

    /// Every live-event stream is taken.
    pub fn overloaded_streams() -> Self {
        Self {
            retry_after_secs: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                "too many event streams are open; retry later",
            )
        }
    }

    /// Renames the field an error names (`texts[2]` -> `input[2]`) for a route whose request
    /// calls it differently.
    pub fn renamed(from: &'static str, to: &'static str) -> impl Fn(Self) -> Self {
        move |mut err| {
            if let Some(field) = err.field.take() {
                err.field = Some(field.strip_prefix(from).map_or(field.clone(), |rest| format!("{to}{rest}")));
                err.message = err.message.replace(&format!("`{from}`"), &format!("`{to}`"));
            }
            err
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

/// The request deadline passed before the work finished.
#[derive(Debug, Clone, Copy)]
pub struct DeadlinePassed(pub std::time::Duration);

impl From<DeadlinePassed> for ApiError {
    fn from(DeadlinePassed(timeout): DeadlinePassed) -> Self {
        Self {
            retry_after_secs: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("no result within {} ms", timeout.as_millis()),
            )
        }
    }
}

/// Runs `work` under the request deadline; past it the caller gets 503 + Retry-After (the work
/// future is dropped, so queued texts are cancelled before inference).
pub async fn within_deadline<T, E: Into<ApiError>>(
    timeout: std::time::Duration,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ApiError> {
    deadline(timeout, work).await?.map_err(Into::into)
}

/// `work`'s own result, or `DeadlinePassed`: for callers that say more about a timeout.
pub async fn deadline<T>(
    timeout: std::time::Duration,
    work: impl std::future::Future<Output = T>,
) -> Result<T, DeadlinePassed> {
    tokio::time::timeout(timeout, work).await.map_err(|_| DeadlinePassed(timeout))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message, field: self.field } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Overloaded { retry_after_secs, .. } => Self {
                retry_after_secs: Some(retry_after_secs),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", err.to_string())
            },
            EngineError::Tokenize { index, .. } => Self::invalid(format!("texts[{index}]"), err.to_string()),
            EngineError::Stopped => Self {
                retry_after_secs: Some(5),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "stopped", err.to_string())
            },
            EngineError::Inference(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "inference_failed", err.to_string())
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match &rejection {
            JsonRejection::JsonDataError(_) => "invalid_body",
            JsonRejection::JsonSyntaxError(_) => "malformed_json",
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            _ => "bad_request",
        };
        Self::new(status, code, rejection.body_text())
    }
}

impl ApiError {
    /// A knowledge-base failure: engine errors keep their kind (429/503), the rest are internal.
    pub fn from_kb(err: anyhow::Error) -> Self {
        match err.downcast::<EngineError>() {
            Ok(engine) => engine.into(),
            Err(other) => {
                tracing::error!(error = format!("{other:#}"), "knowledge-base operation failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "search_failed", format!("{other:#}"))
            }
        }
    }
}

impl From<SupportError> for ApiError {
    fn from(err: SupportError) -> Self {
        match err {
            SupportError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", err.to_string()),
            SupportError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", err.to_string()),
            SupportError::Invalid { field, message } => Self::invalid(field, message),
            SupportError::Engine(engine) => engine.into(),
            SupportError::Store(store) => store.into(),
            SupportError::Internal(_) => {
                tracing::error!(error = %err, "request failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", err.to_string())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %err, "database unavailable");
                Self {
                    retry_after_secs: Some(2),
                    ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", err.to_string())
                }
            }
            StoreError::Corrupt { .. } | StoreError::Other(_) => {
                tracing::error!(error = %err, "database operation failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", err.to_string())
            }
        }
    }
}
