//! What happens in conversations, as events for live screens (`GET /v1/events`): a bounded
//! broadcast, so a slow subscriber loses old events (and says so) rather than growing memory.
//! With a shared store the events also travel to the other nodes (`NOTIFY`), so a screen
//! connected to one node sees what happened on another.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::store::{Notification, Store, EVENTS_CHANNEL};

use crate::store::Role;
use crate::triage::ReasonCode;

/// Events a subscriber that falls this far behind misses.
const CAPACITY: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Event {
    /// A new message in a conversation.
    Message {
        conversation_id: String,
        role: Role,
        text: String,
        at: i64,
    },
    /// A conversation went to a person.
    Handoff {
        conversation_id: String,
        queue: String,
        reason: ReasonCode,
        at: i64,
    },
    /// A person replied.
    AgentReply {
        conversation_id: String,
        agent: String,
        text: String,
        at: i64,
    },
    Resolved {
        conversation_id: String,
        at: i64,
    },
    /// A spike of similar tickets (agents only).
    Alert {
        id: String,
        summary: String,
        count: usize,
    },
}

impl Event {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Message { .. } => "message",
            Event::Handoff { .. } => "handoff",
            Event::AgentReply { .. } => "agent_reply",
            Event::Resolved { .. } => "resolved",
            Event::Alert { .. } => "alert",
        }
    }

    /// The conversation it is about; `None` for events about no single conversation.
    pub fn conversation_id(&self) -> Option<&str> {
        match self {
            Event::Message { conversation_id, .. }
            | Event::Handoff { conversation_id, .. }
            | Event::AgentReply { conversation_id, .. }
            | Event::Resolved { conversation_id, .. } => Some(conversation_id),
            Event::Alert { .. } => None,
        }
    }
}

impl Event {
    /// The event's fields, as the SSE `data:` line carries them.
    pub fn data(&self) -> serde_json::Value {
        serde_json::to_value(self)
            .ok()
            .and_then(|mut v| v.get_mut("data").map(serde_json::Value::take))
            .unwrap_or_default()
    }

    /// Long texts cut for a notification (PostgreSQL takes at most 8000 bytes); screens that
    /// need the whole text read the conversation.
    fn trimmed(mut self) -> Self {
        if let Event::Message { text, .. } | Event::AgentReply { text, .. } = &mut self {
            if text.len() > RELAYED_TEXT {
                let cut = (0..=RELAYED_TEXT).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
                text.truncate(cut);
                text.push('…');
            }
        }
        self
    }
}

/// Longest message text relayed to other nodes, in bytes.
const RELAYED_TEXT: usize = 3000;

/// An event as it travels between nodes.
#[derive(Serialize, Deserialize)]
struct Relayed {
    node: String,
    event: Event,
}

#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Event>,
    /// This node's id, so its own relayed events are not delivered twice.
    node: Arc<str>,
    /// The shared store events are relayed through (several nodes).
    relay: Arc<OnceLock<Arc<dyn Store>>>,
}

impl Default for Events {
    fn default() -> Self {
        let node = crate::clock::new_id("node");
        Self { sender: broadcast::channel(CAPACITY).0, node: node.into(), relay: Arc::new(OnceLock::new()) }
    }
}

impl Events {
    /// Sends to every subscriber now listening on this node (none listening is fine), and to
    /// the other nodes when the store is shared.
    pub fn publish(&self, event: Event) {
        if let Some(store) = self.relay.get().cloned() {
            let relayed = Relayed { node: self.node.to_string(), event: event.clone().trimmed() };
            if let Ok(payload) = serde_json::to_string(&relayed) {
                tokio::spawn(async move {
                    if let Err(err) = store.notify(EVENTS_CHANNEL, &payload).await {
                        tracing::warn!(%err, "event not relayed to the other nodes");
                    }
                });
            }
        }
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    /// Relays events through `store` when other nodes share it, and delivers theirs here.
    pub fn relay_through(&self, store: Arc<dyn Store>) -> Option<tokio::task::JoinHandle<()>> {
        if !store.shared() {
            return None;
        }
        let mut notifications = store.listen(&[EVENTS_CHANNEL])?;
        let _ = self.relay.set(store);
        let events = self.clone();
        Some(tokio::spawn(async move {
            while let Some(Notification { payload, .. }) = notifications.recv().await {
                match serde_json::from_str::<Relayed>(&payload) {
                    Ok(relayed) if *relayed.node != *events.node => {
                        let _ = events.sender.send(relayed.event);
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%err, "a relayed event does not parse"),
                }
            }
        }))
    }
}
