//! The six escalation signals, each a score with the evidence behind it, from one message's
//! classification, the conversation so far and the account context.

use serde::{Deserialize, Serialize};

use super::policy::{Policy, SignalKind, TopicSignalRule};
use super::AccountStanding;
use tierline_infer::classify::TextClassification;

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
}

/// Lower-cased words separated by single spaces, padded: `" charged twice "` matches whole words.
pub fn normalise(text: &str) -> String {
    let mut out = String::from(" ");
    for c in text.chars().flat_map(char::to_lowercase) {
        // Typographic apostrophes (phones type them) count as plain ones: "didn’t" = "didn't".
        let c = if matches!(c, '’' | '‘' | 'ʼ') { '\'' } else { c };
        if c.is_alphanumeric() || c == '\'' {
            out.push(c);
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    if !out.ends_with(' ') {
        out.push(' ');
    }
    out
}

/// The phrases of `phrases` found in `normalised` text, whole words only.
pub fn matches<'a>(normalised: &str, phrases: &'a [String]) -> Vec<&'a str> {
    phrases.iter().filter(|p| normalised.contains(&format!(" {} ", p.to_lowercase()))).map(String::as_str).collect()
}

/// P(negative) or the frustration score, whichever is larger.
pub fn negativity(classification: &TextClassification) -> f32 {
    classification.probability("sentiment", "negative").max(classification.probability("frustration", "frustrated"))
}

/// Scores every signal for the newest customer message. `conversation_text` is every customer
/// message so far (for multi-system issues spread over turns); `earliest_negativity` is the
/// first message's, to notice a shift.
pub fn score(
    policy: &Policy,
    message: &str,
    classification: &TextClassification,
    conversation_text: &str,
    earliest_negativity: Option<f32>,
    account: &AccountContext,
    standing: Option<&AccountStanding>,
) -> Vec<Signal> {
    let text = normalise(message);
    let negative = negativity(classification);
    let rules = &policy.signals;
    let mut signals = Vec::with_capacity(6);

    let sentiment = &rules.negative_sentiment;
    let mut evidence = format!(
        "sentiment negative {:.2}, frustration {:.2}",
        classification.probability("sentiment", "negative"),
        classification.probability("frustration", "frustrated")
    );
    if let Some(first) = earliest_negativity {
        if first < sentiment.shift_threshold && negative >= sentiment.shift_threshold {
            evidence.push_str(&format!("; shifted from {first:.2} at the start of the conversation"));
        }
    }
    signals.push(Signal {
        kind: SignalKind::NegativeSentiment,
        score: negative,
        fired: negative >= sentiment.action.threshold,
        evidence,
    });

    for (kind, rule) in [
        (SignalKind::Billing, &rules.billing),
        (SignalKind::Security, &rules.security),
        (SignalKind::Legal, &rules.legal),
    ] {
        signals.push(topic_signal(kind, rule, &text, classification, negative));
    }

    let all_text = normalise(conversation_text);
    let found = matches(&all_text, &rules.complex.systems);
    // "azure" inside "azure ad", "api" inside "rest api": count the longer name once.
    let systems: Vec<&str> = found.iter().copied().filter(|s| !found.iter().any(|o| o != s && o.contains(s))).collect();
    let score = (systems.len() as f32 / rules.complex.systems_for_full_score as f32).min(1.0);
    signals.push(Signal {
        kind: SignalKind::Complex,
        score,
        fired: score >= rules.complex.action.threshold,
        evidence: if systems.is_empty() {
            "no systems named".into()
        } else {
            format!("{} systems named: {}", systems.len(), systems.join(", "))
        },
    });

    let rules_accounts = &policy.accounts;
    let mut reasons = Vec::new();
    if let Some(plan) =
        account.plan.as_deref().filter(|p| rules_accounts.high_value_plans.iter().any(|h| h.eq_ignore_ascii_case(p)))
    {
        reasons.push(format!("{plan} plan"));
    }
    if account.vip {
        reasons.push("VIP account".into());
    }
    if account.churn_risk && rules_accounts.churn_risk_is_high_value {
        reasons.push("flagged as a churn risk".into());
    }
    if let Some(value) = account.contract_value.filter(|v| *v >= rules_accounts.contract_value_at_least) {
        reasons.push(format!("contract value {value:.0}"));
    }
    if let Some(standing) = standing.filter(|s| s.at_risk && rules_accounts.at_risk_is_high_value) {
        let why = standing.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default();
        reasons.push(format!("account at risk (health {:.0}/100{why})", standing.score));
    }
    let score = if reasons.is_empty() { 0.0 } else { 1.0 };
    signals.push(Signal {
        kind: SignalKind::HighValue,
        score,
        fired: score >= rules.high_value.action.threshold,
        evidence: if reasons.is_empty() { "no high-stakes account markers".into() } else { reasons.join(", ") },
    });
    signals
}

fn topic_signal(
    kind: SignalKind,
    rule: &TopicSignalRule,
    text: &str,
    classification: &TextClassification,
    negative: f32,
) -> Signal {
    let topic: f32 = rule.topics.iter().map(|t| classification.probability("topic", t)).sum::<f32>().min(1.0);
    let model = if rule.weigh_by_negativity { topic * negative } else { topic };
    let phrases = matches(text, &rule.keywords);
    let keyword = if phrases.is_empty() { 0.0 } else { rule.keyword_score };
    let score = model.max(keyword);
    let mut evidence = format!("topic {} {:.2}", rule.topics.join("+"), topic);
    if rule.weigh_by_negativity {
        evidence.push_str(&format!(" x negativity {negative:.2}"));
    }
    if !phrases.is_empty() {
        evidence.push_str(&format!("; said \"{}\"", phrases.join("\", \"")));
    }
    Signal { kind, score, fired: score >= rule.action.threshold, evidence }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_match_whole_words_only() {
        assert_eq!(normalise("It wasn’t me"), " it wasn't me ");
        let text = normalise("I was CHARGED twice!! Not me; the apiary isn't an API.");
        assert_eq!(text, " i was charged twice not me the apiary isn't an api ");
        let phrases: Vec<String> = ["charged twice", "not me", "api", "pi", "me the"].map(String::from).to_vec();
        assert_eq!(matches(&text, &phrases), ["charged twice", "not me", "api", "me the"]);
    }
}
