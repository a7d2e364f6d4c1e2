//! Triage: what the models read in a message (`reading`: the customer's own words, segments of a
//! long e-mail, the language), the signals that call for a person (`signals`), and the knowledge
//! base's answer -> a decision (tier, queue, confidence) with its reasons in plain words. Pure
//! functions over a `Policy` (`policy`, the TOML file) but for the one encoder pass of `Reading`.

pub mod errors;
pub mod language;
pub mod phrases;
pub mod policy;
pub mod reading;
pub mod segments;
pub mod signals;

use serde::{Deserialize, Serialize};

pub use policy::{Policy, QueueChoice, SignalKind, Tier};
pub use reading::Reading;
pub use signals::{AccountContext, Signal};

use crate::kb::Answer;

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
    Complaint,
    Cancellation,
    /// Written in a language the help center does not serve.
    Language,
    /// The customer thanked or confirmed the problem is solved.
    CustomerConfirmed,
    /// The customer only greeted: the AI said hello and asked what it can help with.
    Greeted,
    /// The request needs a person's look (account-specific, a bug, a feature request...).
    NeedsReview,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 23] = [
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
        ReasonCode::Complaint,
        ReasonCode::Cancellation,
        ReasonCode::Language,
        ReasonCode::CustomerConfirmed,
        ReasonCode::Greeted,
        ReasonCode::NeedsReview,
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
            ReasonCode::Complaint => "complaint",
            ReasonCode::Cancellation => "cancellation",
            ReasonCode::Language => "language",
            ReasonCode::CustomerConfirmed => "customer_confirmed",
            ReasonCode::Greeted => "greeted",
            ReasonCode::NeedsReview => "needs_review",
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
            SignalKind::HumanRequest => ReasonCode::HumanRequested,
            SignalKind::Complaint => ReasonCode::Complaint,
            SignalKind::Cancellation => ReasonCode::Cancellation,
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
    /// The message's language (ISO 639-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// What the message asks for apart from any signal (the `kind` head): `how_to`,
    /// `account_specific`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// The head that names a request's kind, and the one that names its queue.
pub const KIND_HEAD: &str = "kind";
pub const QUEUE_HEAD: &str = "queue";
/// The kind of a message that only thanks or confirms.
pub const THANKS_KIND: &str = "thanks";
/// The kind that marks a ticket that is a signal and nothing else: when no signal fired, it says
/// nothing about what is asked, so the kind is read among the others.
pub const INCIDENT_KIND: &str = "incident";
/// The kind of a message that asks for nothing support can do (small talk, spam).
pub const OTHER_KIND: &str = "other";

/// What the message asks for apart from any signal.
pub fn request_kind(reading: &Reading) -> Option<(String, f32)> {
    reading.label_among(KIND_HEAD, |label| label != INCIDENT_KIND)
}

/// The queue of the issue itself: the `queue` head when served, else the topic's queue.
pub fn issue_queue(policy: &Policy, reading: &Reading) -> String {
    if let Some((queue, _)) = reading.label(QUEUE_HEAD).filter(|(q, _)| policy.queues.contains(q)) {
        return queue;
    }
    topic_queue(policy, reading)
}

/// The queue a signal sending to "the issue's queue" picks: the `queue` head when it is sure of
/// one, else `default_queue`.
fn sure_issue_queue(policy: &Policy, reading: &Reading) -> String {
    match reading.label(QUEUE_HEAD).filter(|(q, _)| policy.queues.contains(q)) {
        Some((queue, score)) if score >= policy.min_issue_queue_confidence => queue,
        Some(_) => policy.default_queue.clone(),
        None => topic_queue(policy, reading),
    }
}

/// The topic head's queue (`topic_queues`), else `default_queue`.
fn topic_queue(policy: &Policy, reading: &Reading) -> String {
    reading
        .whole
        .label("topic")
        .and_then(|(topic, _)| policy.topic_queues.get(topic).cloned())
        .unwrap_or_else(|| policy.default_queue.clone())
}

/// Whether a message only thanks or confirms (and asks nothing new): the `kind` head says so,
/// or it says the problem is solved in words and nothing says the answer failed.
pub fn is_thanks(policy: &Policy, reading: &Reading) -> bool {
    let text = &reading.prepared.text;
    if text.contains('?') {
        return false;
    }
    let by_model = request_kind(reading)
        .is_some_and(|(kind, score)| kind == THANKS_KIND && score >= policy.conversation.thanks_threshold);
    let words = phrases::normalise(text);
    let rules = &policy.conversation;
    let said =
        !phrases::affirmed(text, &rules.resolved_phrases, &policy.negation.words, policy.negation.window).is_empty();
    // Any negation reads as a failure here ("It isn't working, thanks": the thanks in its own
    // clause is not negated, but the message confirms nothing), except a polite idiom's ("No
    // problem, thanks").
    let mut rest = words.clone();
    for idiom in POLITE_NEGATIONS {
        rest = rest.replace(&format!(" {idiom} "), " ");
    }
    let failed = !phrases::matches(&words, &rules.unresolved_phrases).is_empty()
        || !phrases::matches(&rest, &policy.negation.words).is_empty();
    by_model || (said && !failed)
}

/// Courtesies that hold a negation and deny nothing.
const POLITE_NEGATIONS: &[&str] = &[
    "no problem",
    "no worries",
    "no more questions",
    "kein problem",
    "sin problema",
    "pas de souci",
    "pas de problème",
    "sem problema",
    "nessun problema",
    "geen probleem",
];

/// Whether a message only greets ("hi there", "good afternoon", "Hi! A few setup questions if
/// that's ok"): answered with a hello that invites the question, never handed off. A longer
/// message counts only when it asks nothing and the `kind` head reads no request in it.
pub fn is_greeting(reading: &Reading) -> bool {
    let words: Vec<String> = phrases::normalise(&reading.prepared.text).split_whitespace().map(String::from).collect();
    let Some(first) = words.first() else { return false };
    let second = words.get(1).map_or("", String::as_str);
    let greets = segments::is_greeting_word(first)
        || PARTS_OF_DAY.contains(&first.as_str())
        || (first == "good" && (PARTS_OF_DAY.contains(&second) || second == "day"));
    if !greets {
        return false;
    }
    words.len() <= 3
        || (!reading.prepared.text.contains('?') && request_kind(reading).is_some_and(|(kind, _)| kind == OTHER_KIND))
}

/// "Morning!", "good evening" (and "good day"; "day" alone opens other sentences).
const PARTS_OF_DAY: &[&str] = &["morning", "afternoon", "evening"];

/// Where a message is decided: a ticket in a queue, or a turn of a live chat (where the AI may
/// attempt `conversation.attempt_kinds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Ticket,
    /// `follow_up`: a later message of the chat. Read alone, a follow-up ("what about members,
    /// can they?", "we're on the free plan, is that a problem?") rarely shows its kind, so the
    /// kind head gates it only for `conversation.follow_up_review_kinds` (account-specific
    /// requests): otherwise the answer read with the conversation decides, and the exchange
    /// limit and "talk to a person" guard the rest.
    Chat {
        follow_up: bool,
    },
}

/// Decides for one customer message. `escalations` are reasons that send it to a person
/// whatever else holds (a repeated question, the exchange limit); `answer` is the knowledge
/// base's answer (None when it was not consulted).
pub fn decide(
    policy: &Policy,
    reading: &Reading,
    channel: Channel,
    signals: Vec<Signal>,
    escalations: Vec<Reason>,
    answer: Option<&Answer>,
) -> Decision {
    let issue = issue_queue(policy, reading);
    let kind = request_kind(reading);
    let mut reasons = Vec::new();
    let mut tier = Tier::Auto;
    let mut queue: Option<String> = None;
    let mut confidence: f32 = 0.0;
    // Signals in priority order (security first): the first fired one names the queue.
    for signal_kind in SignalKind::ALL {
        let Some(signal) = signals.iter().find(|s| s.kind == signal_kind && s.fired) else { continue };
        let action = policy.signals.action(signal_kind);
        let signal_queue = match &action.queue {
            QueueChoice::Named(named) => named.clone(),
            QueueChoice::OfIssue => sure_issue_queue(policy, reading),
        };
        if queue.is_none() || action.tier > tier {
            queue = Some(signal_queue);
        }
        tier = tier.max(action.tier);
        confidence = confidence.max(signal.score);
        reasons.push(Reason::new(
            signal_kind.into(),
            format!("{} ({}) -> {}", signal_kind.describe(), signal.evidence, action.tier.as_str()),
            Some(signal.score),
        ));
    }
    if !escalations.is_empty() {
        tier = Tier::Human;
        confidence = confidence.max(0.9);
        reasons.splice(0..0, escalations);
    }
    if !policy.serves(&reading.language) {
        if tier < Tier::Assist {
            tier = Tier::Assist;
            confidence = confidence.max(0.9);
        }
        if queue.is_none() {
            queue = policy.language_queues.get(&reading.language).cloned();
        }
        reasons.push(Reason::new(
            ReasonCode::Language,
            format!(
                "written in `{}`; the help center serves {}: a person reviews the reply",
                reading.language,
                policy.languages.join(", ")
            ),
            None,
        ));
    }
    if tier == Tier::Auto {
        let (tier_now, reason, score) = self_service(policy, reading, channel, kind.as_ref(), answer);
        tier = tier_now;
        confidence = score;
        reasons.extend(reason);
    }
    Decision {
        tier,
        queue: queue.unwrap_or(issue),
        confidence,
        reasons,
        signals,
        language: Some(reading.language.clone()),
        kind: kind.map(|(label, _)| label),
    }
}

/// No signal: the AI answers alone only a self-service question the knowledge base answers
/// confidently (or a thank-you); everything else gets a person's review.
fn self_service(
    policy: &Policy,
    reading: &Reading,
    channel: Channel,
    kind: Option<&(String, f32)>,
    answer: Option<&Answer>,
) -> (Tier, Vec<Reason>, f32) {
    if let Some((label, score)) = kind.filter(|(label, _)| label == THANKS_KIND).filter(|_| is_thanks(policy, reading))
    {
        let reason = Reason::new(
            ReasonCode::CustomerConfirmed,
            format!("the customer thanked or confirmed ({label} {score:.2})"),
            Some(*score),
        );
        return (Tier::Auto, vec![reason], *score);
    }
    let gated = |label: &String| {
        channel != Channel::Chat { follow_up: true } || policy.conversation.follow_up_review_kinds.contains(label)
    };
    let confident_answer =
        answer.filter(|answer| answer.answered && answer.confidence >= policy.conversation.min_answer_confidence);
    // A client-side error the cited passage names: the help center's fix, whatever the kind.
    let documented_error = kind
        .filter(|(label, _)| policy.documented_error_kinds.contains(label))
        .and(confident_answer)
        .and_then(|answer| errors::documented_in(&errors::client_error_codes(&reading.prepared.text), answer));
    if let Some((label, score)) = kind.filter(|(label, _)| gated(label)) {
        let attempted =
            channel == Channel::Chat { follow_up: false } && policy.conversation.attempt_kinds.contains(label);
        let self_serve = policy.self_service_kinds.contains(label) || attempted || documented_error.is_some();
        if !self_serve || *score < policy.min_kind_confidence {
            let why = if self_serve {
                format!("unsure what is asked ({label} {score:.2})")
            } else {
                format!("{} ({score:.2})", label.replace('_', " "))
            };
            let reason =
                Reason::new(ReasonCode::NeedsReview, format!("a person reviews the draft: {why}"), Some(*score));
            return (Tier::Assist, vec![reason], *score);
        }
    }
    match answer {
        Some(answer) if confident_answer.is_some() => {
            let article = answer.citations.first().map_or("?", |c| c.article_id.as_str());
            let confidence = answer.confidence;
            let text = match documented_error {
                Some(code) => {
                    format!("the knowledge base documents this error ({code}; article {article}, confidence {confidence:.2})")
                }
                None => format!("the knowledge base answers this (article {article}, confidence {confidence:.2})"),
            };
            (Tier::Auto, vec![Reason::new(ReasonCode::KbAnswer, text, Some(confidence))], confidence)
        }
        Some(answer) => {
            let why = answer.reason.as_deref().unwrap_or("low_confidence").replace('_', " ");
            let mut reasons = vec![Reason::new(
                ReasonCode::NoKbAnswer,
                format!("no confident knowledge-base answer ({why}, confidence {:.2})", answer.confidence),
                Some(answer.confidence),
            )];
            if let Some(other) = reading.whole.out_of_scope.filter(|p| *p >= 0.5) {
                reasons.push(Reason::new(
                    ReasonCode::OutOfScope,
                    format!("probably not a support request (P(other) {other:.2})"),
                    Some(other),
                ));
            }
            (Tier::Assist, reasons, 1.0 - answer.confidence)
        }
        None => (Tier::Assist, vec![Reason::new(ReasonCode::NoKb, "no knowledge base is configured", None)], 0.0),
    }
}
