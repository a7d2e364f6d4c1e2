//! API keys on the routes that need them: 401 without a valid key, 403 when the key's scopes do
//! not cover the route. Each route names its scopes where the router declares it (`guarded`),
//! so the table cannot drift from the routes. Keys are looked up by hash; they are never logged.

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;

use super::error::ApiError;
use super::state::AppState;
use tierline_support::access::{self, Scope};
use tierline_support::settings::AuthMode;
use tierline_support::store::ApiKeyRow;

/// Who is calling, as the auth layer established it (a request extension of every guarded route).
#[derive(Debug, Clone)]
pub enum Caller {
    /// Keys are not enforced (`support.auth = "off"`, or `auto` before the first key).
    Open,
    Key(ApiKeyRow),
    /// A customer's browser, with the token of its one conversation.
    Customer {
        conversation_id: String,
    },
}

impl Caller {
    /// Who acted, as the audit log records it.
    pub fn actor(&self) -> String {
        match self {
            Caller::Open => "open".to_string(),
            Caller::Key(key) => key.id.clone(),
            Caller::Customer { conversation_id } => format!("customer:{conversation_id}"),
        }
    }

    /// Whether the caller may write knowledge or training data (approved answers become
    /// internal articles, corrections train the heads): people's keys (agent, admin), not
    /// helpdesk integrations.
    pub fn may_teach(&self) -> bool {
        match self {
            Caller::Open => true,
            Caller::Key(key) => access::allows(key, &[Scope::Agent]),
            Caller::Customer { .. } => false,
        }
    }

    /// Whether the caller may open conversation `id`.
    pub fn may_open(&self, id: &str) -> bool {
        match self {
            Caller::Customer { conversation_id } => conversation_id == id,
            Caller::Open | Caller::Key(_) => true,
        }
    }

    /// Whether the caller may open a conversation of `account` (keys kept to some accounts).
    pub fn may_open_account(&self, account: Option<&str>) -> bool {
        match self {
            Caller::Key(key) => key.may_open_account(account),
            Caller::Open | Caller::Customer { .. } => true,
        }
    }

    /// A key kept to some accounts' conversations.
    pub fn restricted_key(&self) -> Option<&ApiKeyRow> {
        match self {
            Caller::Key(key) if key.is_restricted() => Some(key),
            _ => None,
        }
    }

    /// Whether the caller sees agents' events (alerts, every queue).
    pub fn is_staff(&self) -> bool {
        match self {
            Caller::Open => true,
            Caller::Key(key) => access::allows(key, &[Scope::Agent]),
            Caller::Customer { .. } => false,
        }
    }
}

/// Who may call a guarded route besides keys holding its scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reach {
    /// `true`: the handler keeps a key to its accounts, or reads nothing stored per account;
    /// `false`: the route spans every account (queues, metrics...), so keys kept to some
    /// accounts get 403.
    per_account: bool,
    /// A customer's conversation token opens it too.
    customers: bool,
}

/// `route`, callable only with a key holding one of `scopes` (admin holds every scope) and not
/// kept to some accounts: the route spans every account.
pub fn guarded(state: &AppState, scopes: &'static [Scope], route: MethodRouter<AppState>) -> MethodRouter<AppState> {
    layered(state, scopes, Reach { per_account: false, customers: false }, route)
}

/// As `guarded`, also for keys kept to some accounts: the handler keeps them to those
/// accounts' conversations (or the route reads nothing stored per account).
pub fn guarded_per_account(
    state: &AppState,
    scopes: &'static [Scope],
    route: MethodRouter<AppState>,
) -> MethodRouter<AppState> {
    layered(state, scopes, Reach { per_account: true, customers: false }, route)
}

/// As `guarded_per_account`, and also callable with a customer's conversation token (`ct_...`):
/// the handler sees `Caller::Customer` and must keep it to that conversation.
pub fn guarded_or_customer(
    state: &AppState,
    scopes: &'static [Scope],
    route: MethodRouter<AppState>,
) -> MethodRouter<AppState> {
    layered(state, scopes, Reach { per_account: true, customers: true }, route)
}

/// As `guarded` (keys kept to some accounts get 403), and also callable with a customer's
/// conversation token: for a route whose key callers see every account (the event stream).
pub fn guarded_every_account_or_customer(
    state: &AppState,
    scopes: &'static [Scope],
    route: MethodRouter<AppState>,
) -> MethodRouter<AppState> {
    layered(state, scopes, Reach { per_account: false, customers: true }, route)
}

fn layered(
    state: &AppState,
    scopes: &'static [Scope],
    reach: Reach,
    route: MethodRouter<AppState>,
) -> MethodRouter<AppState> {
    route.route_layer(middleware::from_fn_with_state(state.clone(), move |state, request, next| {
        require_key(state, scopes, reach, request, next)
    }))
}

/// Whether guarded routes need a key right now: always with `support.auth = "required"`, never
/// with `off`, and with `auto` once the first key exists. The OpenAPI document follows it.
pub async fn keys_enforced(state: &AppState) -> Result<bool, ApiError> {
    match state.auth() {
        AuthMode::Off => Ok(false),
        AuthMode::Required => Ok(true),
        AuthMode::Auto => Ok(state.support().store().key_count().await? > 0),
    }
}

/// The prefix of customer conversation tokens.
const CUSTOMER_TOKEN: &str = "ct_";

fn presented_key(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(str::trim).filter(|k| !k.is_empty())
}

async fn require_key(
    State(state): State<AppState>,
    accepted: &'static [Scope],
    reach: Reach,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(token) = presented_key(&request).filter(|k| reach.customers && k.starts_with(CUSTOMER_TOKEN)) {
        return match state.support().conversation_for_token(token).await {
            Ok(Some(conversation_id)) => {
                request.extensions_mut().insert(Caller::Customer { conversation_id });
                next.run(request).await
            }
            Ok(None) => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the conversation token is not valid")
                .into_response(),
            Err(err) => ApiError::from(err).into_response(),
        };
    }
    let enforced = match keys_enforced(&state).await {
        Ok(enforced) => enforced,
        Err(err) => return err.into_response(),
    };
    if !enforced {
        request.extensions_mut().insert(Caller::Open);
        return next.run(request).await;
    }
    let store = state.support().store();
    let key = match presented_key(&request) {
        Some(presented) => match access::verify(store.as_ref(), presented).await {
            Ok(key) => key,
            Err(err) => return ApiError::from(err).into_response(),
        },
        None => None,
    };
    let Some(key) = key else {
        let message = if presented_key(&request).is_some() {
            "the API key is not valid (unknown or revoked)"
        } else {
            "an API key is required: send `Authorization: Bearer <key>` (create one with `tierline keys create`)"
        };
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    };
    if let Some(message) = refusal(&request, &key, accepted, reach) {
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response();
    }
    request.extensions_mut().insert(Caller::Key(key));
    next.run(request).await
}

/// Why a valid `key` may not call this route (its scopes, or the accounts it is kept to).
fn refusal(request: &Request, key: &ApiKeyRow, accepted: &[Scope], reach: Reach) -> Option<String> {
    let route = || {
        let path = request.extensions().get::<MatchedPath>().map_or("", |p| p.as_str());
        format!("{} {path}", request.method())
    };
    if !access::allows(key, accepted) {
        let needed: Vec<&str> = accepted.iter().map(|s| s.as_str()).collect();
        Some(format!(
            "key `{}` has scopes [{}]; {} needs one of [{}]",
            key.id,
            key.scopes.join(", "),
            route(),
            needed.join(", ")
        ))
    } else if key.is_restricted() && !reach.per_account {
        Some(format!(
            "key `{}` is kept to the accounts [{}]; {} spans every account",
            key.id,
            key.accounts.join(", "),
            route()
        ))
    } else {
        None
    }
}

/// Records an admin action; a failed write is logged, not returned (the action itself is done).
pub async fn audit(
    state: &AppState,
    caller: &Caller,
    action: tierline_support::store::AuditAction,
    target: &str,
    detail: serde_json::Value,
) {
    let store = state.support().store();
    if let Err(err) = store.audit(&caller.actor(), action, target, &detail).await {
        tracing::warn!(error = %err, action = action.as_str(), target, "audit entry not written");
    }
}
