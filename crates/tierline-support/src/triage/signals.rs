//! The signals that call for a person, each a score with the evidence behind it: the `signals`
//! head's reading of the message (its strongest segment for a long one), raised by a phrase said
//! and not negated; systems named across the conversation; the account's context.

use serde::{Deserialize, Serialize};
use tierline_infer::classify::TextClassification;

use super::phrases::{affirmed, matches, normalise};
use super::policy::{Policy, SignalKind, TextRule, ALONE_MAX_WORDS};
use super::reading::Reading;
use super::AccountStanding;

/// The head whose labels are the signals read from the text.
pub const SIGNALS_HEAD: &str = "signals";

/// Account context a caller may send with a ticket or conversation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountContext {
    pub id: Option<String>,
    pub name: Option<String>,
    pub plan: Option<String>,
    #[serde(default)]
    pub vip: bool,
    #[serde(default)]
    pub churn_risk: bool,
    /// Yearly contract value, in the account's currency.
    pub contract_value: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Signal {
    pub kind: SignalKind,
    pub score: f32,
    pub fired: bool,
    /// The evidence, in plain words.
    pub evidence: String,
    /// The sentence or segment that scored highest, when the text did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentence: Option<String>,
}

/// P(negative) or the frustration score, whichever is larger (stored with each message for
/// account health).
pub fn negativity(classification: &TextClassification) -> f32 {
    classification.probability("sentiment", "negative").max(classification.probability("frustration", "frustrated"))
}

/// What the conversation adds to one message.
#[derive(Debug, Clone, Copy, Default)]
pub struct History<'a> {
    /// Every earlier customer message, joined (systems named across turns).
    pub earlier_text: &'a str,
    /// The first message's negativity, to notice a shift.
    pub earliest_negativity: Option<f32>,
}

/// Scores every signal for the newest customer message.
pub fn score(
    policy: &Policy,
    reading: &Reading,
    history: History<'_>,
    account: &AccountContext,
    standing: Option<&AccountStanding>,
) -> Vec<Signal> {
    let text = normalise(&reading.prepared.text);
    let mut signals: Vec<Signal> = SignalKind::FROM_TEXT
        .iter()
        .filter_map(|&kind| Some(text_signal(policy, kind, policy.signals.text_rule(kind)?, reading, &text)))
        .collect();
    if let Some(complex) = signals.iter_mut().find(|s| s.kind == SignalKind::Complex) {
        add_systems(policy, complex, &format!("{}\n{}", history.earlier_text, reading.prepared.text));
    }
    if let (Some(sentiment), Some(first)) =
        (signals.iter_mut().find(|s| s.kind == SignalKind::NegativeSentiment), history.earliest_negativity)
    {
        let now = negativity(&reading.whole);
        if sentiment.fired && first < 0.5 && now >= 0.5 {
            sentiment.evidence.push_str(&format!("; turned negative (from {first:.2} at the start)"));
        }
    }
    signals.push(high_value(policy, account, standing));
    signals
}

/// Messages this short ("We're on Team.", "ok") give a model too little to read: its score is
/// damped in proportion, and phrases (and `alone` words) decide.
const SHORT_WORDS: usize = 4;

fn text_signal(policy: &Policy, kind: SignalKind, rule: TextRule<'_>, reading: &Reading, text: &str) -> Signal {
    let mut model = reading.strongest(SIGNALS_HEAD, kind.as_str());
    let words = text.split_whitespace().count();
    if words < SHORT_WORDS {
        model.score *= words as f32 / SHORT_WORDS as f32;
    }
    let mut said = affirmed(&reading.prepared.text, rule.phrases, &policy.negation.words, policy.negation.window);
    if text.split_whitespace().count() <= ALONE_MAX_WORDS {
        said.extend(matches(text, rule.alone));
    }
    let phrase = if said.is_empty() { 0.0 } else { rule.phrase_score };
    let score = model.score.max(phrase);
    let mut evidence = Vec::new();
    let quoted = quote(model.text, 140);
    if model.score >= 0.05 {
        let place = if model.in_segment { format!(" in \"{quoted}\"") } else { String::new() };
        evidence.push(format!("read {:.2}{place}", model.score));
    }
    if !said.is_empty() {
        evidence.push(format!("said \"{}\"", said.join("\", \"")));
    }
    let evidence = if evidence.is_empty() { "nothing in the message".to_string() } else { evidence.join("; ") };
    let sentence = (model.score >= rule.action.threshold).then(|| quoted.clone());
    Signal { kind, score, fired: score >= rule.action.threshold, evidence, sentence }
}

/// Systems named across the conversation raise the complex signal on their own at
/// `systems_for_full_score` distinct names.
fn add_systems(policy: &Policy, signal: &mut Signal, conversation_text: &str) {
    let rule = &policy.signals.complex;
    let found = matches(&normalise(conversation_text), &rule.systems);
    // "azure" inside "azure ad", "api" inside "rest api": count the longer name once.
    let systems: Vec<&str> = found.iter().copied().filter(|s| !found.iter().any(|o| o != s && o.contains(s))).collect();
    if systems.is_empty() {
        return;
    }
    signal.evidence.push_str(&format!("; {} systems named: {}", systems.len(), systems.join(", ")));
    if systems.len() >= rule.systems_for_full_score {
        signal.score = signal.score.max(rule.phrase_score);
        signal.fired = signal.score >= rule.action.threshold;
    }
}

fn high_value(policy: &Policy, account: &AccountContext, standing: Option<&AccountStanding>) -> Signal {
    let rules = &policy.accounts;
    let mut reasons = Vec::new();
    if let Some(plan) =
        account.plan.as_deref().filter(|p| rules.high_value_plans.iter().any(|h| h.eq_ignore_ascii_case(p)))
    {
        reasons.push(format!("{plan} plan"));
    }
    if account.vip {
        reasons.push("VIP account".into());
    }
    if account.churn_risk && rules.churn_risk_is_high_value {
        reasons.push("flagged as a churn risk".into());
    }
    if let Some(value) = account.contract_value.filter(|v| *v >= rules.contract_value_at_least) {
        reasons.push(format!("contract value {value:.0}"));
    }
    if let Some(standing) = standing.filter(|s| s.at_risk && rules.at_risk_is_high_value) {
        let why = standing.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default();
        reasons.push(format!("account at risk (health {:.0}/100{why})", standing.score));
    }
    let score = if reasons.is_empty() { 0.0 } else { 1.0 };
    Signal {
        kind: SignalKind::HighValue,
        score,
        fired: score >= policy.signals.high_value.threshold,
        evidence: if reasons.is_empty() { "no high-stakes account markers".into() } else { reasons.join(", ") },
        sentence: None,
    }
}

/// `text` on one line, at most `max` characters.
fn quote(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        return line;
    }
    line.chars().take(max.saturating_sub(3)).collect::<String>() + "..."
}
