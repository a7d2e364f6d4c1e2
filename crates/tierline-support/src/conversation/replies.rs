//! Every sentence tierline says to a customer or writes for an agent. The AI always says it is an
//! AI, and a handoff always says who is coming and that nothing needs repeating.

use crate::kb::Answer;
use crate::triage::{Decision, ReasonCode};

/// A queue's name as customers read it: `account_management` -> "account management".
fn team(queue: &str) -> String {
    queue.replace('_', " ")
}

/// A knowledge-base answer with its source, and the way to a person.
pub fn answer(answer: &Answer) -> String {
    let mut text = answer.answer.clone().unwrap_or_default();
    if let Some(citation) = answer.citations.first() {
        text.push_str(&format!("\n\nSource: {}", citation.title));
        if let Some(url) = &citation.url {
            text.push_str(&format!(" ({url})"));
        }
    }
    text.push_str("\n\nI'm an AI assistant. If this doesn't solve it, tell me, or ask for a person at any time.");
    text
}

/// The handoff: who is coming, and that they can read everything so far.
pub fn handoff(decision: &Decision) -> String {
    let team = team(&decision.queue);
    let opening = if decision.reasons.iter().any(|r| r.code == ReasonCode::HumanRequested) {
        "Of course. I'm an AI assistant, and I'm connecting you with a person now"
    } else {
        "I'm an AI assistant, and this needs a person, so I'm handing it over now"
    };
    format!(
        "{opening}: someone from our {team} team will reply here. They can see this whole conversation, \
         so you won't need to repeat anything."
    )
}

/// A thank-you or a confirmation that the problem is solved.
pub fn thanks() -> String {
    "Glad that helped! I'm an AI assistant; if anything else comes up, just write here, or ask for a person at any time."
        .to_string()
}

/// A greeting.
pub fn hello() -> String {
    "Hi! I'm an AI assistant for the support team. What can I help you with? You can ask for a person at any time."
        .to_string()
}

/// A resolved conversation the customer came back to.
pub fn reopened(decision: &Decision) -> String {
    format!(
        "I'm an AI assistant. I've reopened your conversation and passed it to our {} team; they can see everything so far.",
        team(&decision.queue)
    )
}

/// A draft for a person to review: acknowledgement, the closest article if any, the next step.
pub fn draft(decision: &Decision, answer: Option<&Answer>) -> String {
    let mut draft = String::from("Hi, thanks for getting in touch, and sorry for the trouble. ");
    let citation = answer.filter(|a| a.confidence >= 0.3).and_then(|a| a.citations.first());
    if let Some(citation) = citation {
        draft.push_str(&format!("This article covers part of it: \"{}\"", citation.title));
        if let Some(url) = &citation.url {
            draft.push_str(&format!(" ({url})"));
        }
        draft.push_str(". ");
    }
    draft.push_str(&format!(
        "I've passed the details to our {} team, who will look into your account and follow up here.",
        team(&decision.queue)
    ));
    draft
}

/// The transcript note the sweeper writes when the time limit hands a conversation over.
pub fn time_limit_note(limit_secs: u64) -> String {
    format!("Handed to a person: the conversation was open with the AI for more than {} minutes.", limit_secs / 60)
}
