//! What happens in conversations, as events for live screens (`GET /v1/events`): a bounded
//! broadcast, so a slow subscriber loses old events (and says so) rather than growing memory.

use serde::Serialize;
use tokio::sync::broadcast;

use crate::store::Role;
use crate::triage::ReasonCode;

/// Events a subscriber that falls this far behind misses.
const CAPACITY: usize = 1024;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
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

#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self { sender: broadcast::channel(CAPACITY).0 }
    }
}

impl Events {
    /// Sends to every subscriber now listening (none listening is fine).
    pub fn publish(&self, event: Event) {
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}
