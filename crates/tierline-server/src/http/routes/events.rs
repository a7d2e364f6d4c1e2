//! `GET /v1/events`: Server-Sent Events for live screens. A customer's stream carries only its
//! own conversation; an agent's, every conversation and the alerts; a helpdesk key's, every
//! conversation. Streams are bounded in number; a subscriber that falls behind is told to
//! refresh rather than buffered without end.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::Extension;
use futures_util::stream::{self, Stream};
use tierline_support::conversation::Event;
use tokio::sync::broadcast::error::RecvError;

use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::state::AppState;

/// Live events, as `text/event-stream`: `message`, `handoff`, `agent_reply`, `resolved`, `alert`
/// (agents), `lagged` (some were missed: refresh), and a `ping` every 15 s.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "chat",
    responses(
        (status = 200, description = "text/event-stream of events", content_type = "text/event-stream", body = String),
        (status = 401, body = ErrorBody),
        (status = 503, description = "too many open streams", body = ErrorBody),
    ),
)]
pub async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let slot = state.stream_slot().ok_or_else(ApiError::overloaded_streams)?;
    let receiver = state.support().events().subscribe();
    let stream = stream::unfold((receiver, caller, slot), |(mut receiver, caller, slot)| async move {
        loop {
            match receiver.recv().await {
                Ok(event) if visible(&caller, &event) => {
                    let data = event.data().to_string();
                    return Some((Ok(SseEvent::default().event(event.name()).data(data)), (receiver, caller, slot)));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(missed)) => {
                    let event = SseEvent::default().event("lagged").data(format!("{{\"missed\":{missed}}}"));
                    return Some((Ok(event), (receiver, caller, slot)));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let ping = SseEvent::default().event("ping").data("{}");
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).event(ping)))
}

/// What a caller may see.
fn visible(caller: &Caller, event: &Event) -> bool {
    match (caller, event.conversation_id()) {
        (Caller::Customer { conversation_id }, Some(id)) => conversation_id == id,
        (Caller::Customer { .. }, None) => false,
        (caller, None) => caller.is_staff(),
        (_, Some(_)) => true,
    }
}
