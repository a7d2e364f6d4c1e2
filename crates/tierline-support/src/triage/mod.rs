//! Triage: one message's classification, the escalation signals and the knowledge base's answer
//! -> a decision (tier, queue, confidence) with its reasons in plain words. Pure functions over a
//! `Policy`; the conversation service and `POST /v1/classify` call them.

pub mod policy;
pub mod signals;

use serde::{Deserialize, Serialize};

pub use policy::{Policy, SignalKind, Tier};
pub use signals::{AccountContext, Signal};

use crate::kb::Answer;
use tierline_infer::classify::TextClassification;

/// One reason behind a decision: a stable code for tooling, a sentence for people, the score.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Reason {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

impl Reason {
    pub fn new(code: &str, message: impl Into<String>, score: Option<f32>) -> Self {
        Self { code: code.to_string(), message: message.into(), score }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Decision {
    pub tier: Tier,
    pub queue: String,
    /// How sure tierline is of this decision: the answer's confidence for `auto`, the strongest
    /// signal's score for an escalation.
    pub confidence: f32,
    pub reasons: Vec<Reason>,
    pub signals: Vec<Signal>,
}

/// The phrases or topic score that show the customer asked for a person, if they did.
pub fn human_request(policy: &Policy, message: &str, classification: &TextClassification) -> Option<Reason> {
    let text = signals::normalise(message);
    let phrases = signals::matches(&text, &policy.human_request.phrases);
    let topic = classification.probability("topic", "human_request");
    if let Some(phrase) = phrases.first() {
        return Some(Reason::new(
            "human_requested",
            format!("the customer asked for a person (\"{phrase}\")"),
            Some(1.0),
        ));
    }
    (topic >= policy.human_request.topic_threshold).then(|| {
        Reason::new(
            "human_requested",
            format!("the customer asked for a person (topic human_request {topic:.2})"),
            Some(topic),
        )
    })
}

/// The queue for a topic label when no signal names one.
pub fn topic_queue(policy: &Policy, classification: &TextClassification) -> String {
    classification
        .label("topic")
        .and_then(|(topic, _)| policy.topic_queues.get(topic).cloned())
        .unwrap_or_else(|| policy.default_queue.clone())
}

/// The tier and queue a fired signal asks for.
fn action<'a>(policy: &'a Policy, signal: &Signal) -> (Tier, &'a str) {
    let s = &policy.signals;
    let action = match signal.kind {
        SignalKind::NegativeSentiment => {
            if signal.score >= s.negative_sentiment.human_at {
                return (Tier::Human, &s.negative_sentiment.action.queue);
            }
            &s.negative_sentiment.action
        }
        SignalKind::Billing => &s.billing.action,
        SignalKind::Security => &s.security.action,
        SignalKind::Legal => &s.legal.action,
        SignalKind::Complex => &s.complex.action,
        SignalKind::HighValue => &s.high_value.action,
    };
    (action.tier, &action.queue)
}

/// Decides for one customer message. `escalations` are reasons that send it to a person
/// whatever else holds (the customer asked for one, repeated the question, reached the exchange
/// limit); `answer` is the knowledge base's answer (None when it was not consulted).
pub fn decide(
    policy: &Policy,
    classification: &TextClassification,
    signals: Vec<Signal>,
    escalations: Vec<Reason>,
    answer: Option<&Answer>,
) -> Decision {
    let mut reasons = Vec::new();
    let mut tier = Tier::Auto;
    let mut queue: Option<String> = None;
    let mut confidence: f32 = 0.0;
    // Signals in priority order (security first): the first fired one names the queue.
    for kind in SignalKind::ALL {
        let Some(signal) = signals.iter().find(|s| s.kind == kind && s.fired) else { continue };
        let (signal_tier, signal_queue) = action(policy, signal);
        if queue.is_none() || signal_tier > tier {
            queue = Some(signal_queue.to_string());
        }
        tier = tier.max(signal_tier);
        confidence = confidence.max(signal.score);
        reasons.push(Reason::new(
            kind.as_str(),
            format!("{} signal ({}) -> {}", kind.as_str().replace('_', " "), signal.evidence, signal_tier.as_str()),
            Some(signal.score),
        ));
    }
    if !escalations.is_empty() {
        tier = Tier::Human;
        confidence = confidence.max(0.9);
        reasons.splice(0..0, escalations);
    }
    if tier == Tier::Auto {
        match answer {
            Some(answer) if answer.answered && answer.confidence >= policy.conversation.min_answer_confidence => {
                let article = answer.citations.first().map_or("?", |c| c.article_id.as_str());
                reasons.push(Reason::new(
                    "kb_answer",
                    format!("the knowledge base answers this (article {article}, confidence {:.2})", answer.confidence),
                    Some(answer.confidence),
                ));
                confidence = answer.confidence;
            }
            Some(answer) => {
                tier = Tier::Assist;
                let why = answer.reason.as_deref().unwrap_or("low_confidence").replace('_', " ");
                reasons.push(Reason::new(
                    "no_kb_answer",
                    format!("no confident knowledge-base answer ({why}, confidence {:.2})", answer.confidence),
                    Some(answer.confidence),
                ));
                confidence = 1.0 - answer.confidence;
                if let Some(other) = classification.out_of_scope.filter(|p| *p >= 0.5) {
                    reasons.push(Reason::new(
                        "out_of_scope",
                        format!("probably not a support request (P(other) {other:.2})"),
                        Some(other),
                    ));
                }
            }
            None => {
                tier = Tier::Assist;
                reasons.push(Reason::new("no_kb", "no knowledge base is configured", None));
            }
        }
    }
    let queue = queue.unwrap_or_else(|| topic_queue(policy, classification));
    Decision { tier, queue, confidence, reasons, signals }
}
