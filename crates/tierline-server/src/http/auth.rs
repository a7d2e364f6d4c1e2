//! API-key check for every `/v1` route: 401 without a valid key, 403 when the key's scopes do not
//! cover the route. Keys are looked up by hash; they are never logged.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;
use tierline_support::access::{self, Scope};
use tierline_support::settings::AuthMode;

/// The scopes that may call `method route`; `None` for public routes.
fn accepted_scopes(method: &Method, route: &str) -> Option<&'static [Scope]> {
    use Scope::{Admin, Agent, Helpdesk};
    let scopes: &'static [Scope] = match (route, method.as_str()) {
        ("/health" | "/ready" | "/metrics" | "/openapi.json" | "/docs", _) => return None,
        // Search can return internal articles: agents only.
        ("/v1/kb/articles" | "/v1/kb/articles/{id}" | "/v1/kb/search", "GET") => &[Agent],
        ("/v1/kb/articles" | "/v1/kb/articles/{id}", _) => &[Admin],
        ("/v1/conversations" | "/v1/conversations/{id}/messages", _) => &[Helpdesk],
        (
            "/v1/conversations/{id}/agent-messages"
            | "/v1/queues/{queue}"
            | "/v1/metrics/support"
            | "/v1/calibration"
            | "/v1/alerts"
            | "/v1/accounts/at-risk"
            | "/v1/feedback"
            | "/v1/feedback/export"
            | "/v1/feedback/{id}",
            _,
        ) => &[Agent],
        ("/v1/conversations/{id}" | "/v1/conversations/{id}/resolve" | "/v1/conversations/{id}/handoff", _) => {
            &[Helpdesk, Agent]
        }
        (route, _) if route.starts_with("/v1/admin/") => &[Admin],
        _ => &[Helpdesk, Agent],
    };
    Some(scopes)
}

fn presented_key(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim).filter(|k| !k.is_empty())
}

pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let Some(accepted) = route.as_deref().and_then(|r| accepted_scopes(request.method(), r)) else {
        return next.run(request).await;
    };
    if state.auth() == AuthMode::Off {
        return next.run(request).await;
    }
    let store = state.support().store().clone();
    let presented = presented_key(&request).map(String::from);
    let mode = state.auth();
    let lookup =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(bool, Option<tierline_support::storage::ApiKeyRow>)> {
            let enforced = mode == AuthMode::Required || store.live_key_count()? > 0;
            let key = match (&presented, enforced) {
                (Some(presented), true) => access::verify(&store, presented)?,
                _ => None,
            };
            Ok((enforced, key))
        })
        .await;
    let (enforced, key) = match lookup {
        Ok(Ok(found)) => found,
        Ok(Err(err)) => {
            tracing::error!("api key lookup failed: {err:#}");
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "auth_failed", "cannot check the API key")
                .into_response();
        }
        Err(err) => {
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "auth_failed", format!("{err}")).into_response()
        }
    };
    if !enforced {
        return next.run(request).await;
    }
    let Some(key) = key else {
        let message = if presented_key(&request).is_some() {
            "the API key is not valid (unknown or revoked)"
        } else {
            "an API key is required: send `Authorization: Bearer <key>` (create one with `tierline keys create`)"
        };
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    };
    if !access::allows(&key, accepted) {
        let needed: Vec<&str> = accepted.iter().map(|s| s.as_str()).collect();
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "key `{}` has scopes [{}]; {} {} needs one of [{}]",
                key.id,
                key.scopes.join(", "),
                request.method(),
                route.unwrap_or_default(),
                needed.join(", ")
            ),
        )
        .into_response();
    }
    next.run(request).await
}
