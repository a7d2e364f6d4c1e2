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

/// Why a decision was made, as a stable code for tooling (`reasons[].code`, the conversation's
/// `escalation_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    // The six signals.
    NegativeSentiment,
    Billing,
    Security,
    Legal,
    Complex,
    HighValue,
    /// The customer asked for a person.
    HumanRequested,
    /// The customer asked the same question again.
    RepeatedQuestion,
    /// The AI answered `max_ai_exchanges` times without resolving the issue.
    ExchangeLimit,
    /// The conversation was open with the AI past the time limit.
    TimeLimit,
    /// The customer wrote again after a resolution.
    Reopened,
    /// A person owns the conversation.
    WithHuman,
    /// An agent replied without an AI handoff.
    AgentTookOver,
    /// The knowledge base answers confidently.
    KbAnswer,
    /// No confident knowledge-base answer.
    NoKbAnswer,
    /// No knowledge base is configured.
    NoKb,
    /// Probably not a support request at all.
    OutOfScope,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 17] = [
        ReasonCode::NegativeSentiment,
        ReasonCode::Billing,
        ReasonCode::Security,
        ReasonCode::Legal,
        ReasonCode::Complex,
        ReasonCode::HighValue,
        ReasonCode::HumanRequested,
        ReasonCode::RepeatedQuestion,
        ReasonCode::ExchangeLimit,
        ReasonCode::TimeLimit,
        ReasonCode::Reopened,
        ReasonCode::WithHuman,
        ReasonCode::AgentTookOver,
        ReasonCode::KbAnswer,
        ReasonCode::NoKbAnswer,
        ReasonCode::NoKb,
        ReasonCode::OutOfScope,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::NegativeSentiment => "negative_sentiment",
            ReasonCode::Billing => "billing",
            ReasonCode::Security => "security",
            ReasonCode::Legal => "legal",
            ReasonCode::Complex => "complex",
            ReasonCode::HighValue => "high_value",
            ReasonCode::HumanRequested => "human_requested",
            ReasonCode::RepeatedQuestion => "repeated_question",
            ReasonCode::ExchangeLimit => "exchange_limit",
            ReasonCode::TimeLimit => "time_limit",
            ReasonCode::Reopened => "reopened",
            ReasonCode::WithHuman => "with_human",
            ReasonCode::AgentTookOver => "agent_took_over",
            ReasonCode::KbAnswer => "kb_answer",
            ReasonCode::NoKbAnswer => "no_kb_answer",
            ReasonCode::NoKb => "no_kb",
            ReasonCode::OutOfScope => "out_of_scope",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == text)
    }

    /// Whether this is one of the six signals.
    pub fn is_signal(self) -> bool {
        SignalKind::ALL.iter().any(|kind| ReasonCode::from(*kind) == self)
    }
}

impl From<SignalKind> for ReasonCode {
    fn from(kind: SignalKind) -> Self {
        match kind {
            SignalKind::NegativeSentiment => ReasonCode::NegativeSentiment,
            SignalKind::Billing => ReasonCode::Billing,
            SignalKind::Security => ReasonCode::Security,
            SignalKind::Legal => ReasonCode::Legal,
            SignalKind::Complex => ReasonCode::Complex,
            SignalKind::HighValue => ReasonCode::HighValue,
        }
    }
}

/// One reason behind a decision: a stable code for tooling, a sentence for people, the score.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Reason {
    pub code: ReasonCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

impl Reason {
    pub fn new(code: ReasonCode, message: impl Into<String>, score: Option<f32>) -> Self {
        Self { code, message: message.into(), score }
    }
}

/// An account's standing as triage reads it: computed from its history by `insights::health`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountStanding {
    pub at_risk: bool,
    /// Out of 100.
    pub score: f32,
    /// The largest problem, in words.
    pub reason: Option<String>,
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
            ReasonCode::HumanRequested,
            format!("the customer asked for a person (\"{phrase}\")"),
            Some(1.0),
        ));
    }
    (topic >= policy.human_request.topic_threshold).then(|| {
        Reason::new(
            ReasonCode::HumanRequested,
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
            kind.into(),
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
                    ReasonCode::KbAnswer,
                    format!("the knowledge base answers this (article {article}, confidence {:.2})", answer.confidence),
                    Some(answer.confidence),
                ));
                confidence = answer.confidence;
            }
            Some(answer) => {
                tier = Tier::Assist;
                let why = answer.reason.as_deref().unwrap_or("low_confidence").replace('_', " ");
                reasons.push(Reason::new(
                    ReasonCode::NoKbAnswer,
                    format!("no confident knowledge-base answer ({why}, confidence {:.2})", answer.confidence),
                    Some(answer.confidence),
                ));
                confidence = 1.0 - answer.confidence;
                if let Some(other) = classification.out_of_scope.filter(|p| *p >= 0.5) {
                    reasons.push(Reason::new(
                        ReasonCode::OutOfScope,
                        format!("probably not a support request (P(other) {other:.2})"),
                        Some(other),
                    ));
                }
            }
            None => {
                tier = Tier::Assist;
                reasons.push(Reason::new(ReasonCode::NoKb, "no knowledge base is configured", None));
            }
        }
    }
    let queue = queue.unwrap_or_else(|| topic_queue(policy, classification));
    Decision { tier, queue, confidence, reasons, signals }
}
