//! The triage policy: every threshold, keyword list, queue and account rule in one TOML file
//! (`models/policy.toml`), validated at load so a typo fails with the key named, and reloadable
//! while serving.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Who answers: the AI alone, the AI drafting for a human, or a human at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Tier 1 / Tier 0: the AI answers from the knowledge base.
    Auto,
    /// Tier 2 / Tier 1: the AI drafts, a human reviews and sends.
    Assist,
    /// Tier 3 / Tier 2: immediate handoff, no AI reply.
    Human,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Auto, Tier::Assist, Tier::Human];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|tier| tier.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Auto => "auto",
            Tier::Assist => "assist",
            Tier::Human => "human",
        }
    }
}

/// The six escalation signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    NegativeSentiment,
    Billing,
    Security,
    Legal,
    Complex,
    HighValue,
}

impl SignalKind {
    pub const ALL: [SignalKind; 6] = [
        SignalKind::Security,
        SignalKind::Legal,
        SignalKind::Billing,
        SignalKind::Complex,
        SignalKind::NegativeSentiment,
        SignalKind::HighValue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::NegativeSentiment => "negative_sentiment",
            SignalKind::Billing => "billing",
            SignalKind::Security => "security",
            SignalKind::Legal => "legal",
            SignalKind::Complex => "complex",
            SignalKind::HighValue => "high_value",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub queues: Vec<String>,
    /// Queue of a conversation no signal claims, by topic label; unlisted topics go to `default_queue`.
    pub topic_queues: BTreeMap<String, String>,
    pub default_queue: String,
    pub conversation: ConversationRules,
    pub human_request: HumanRequestRule,
    pub signals: SignalRules,
    pub accounts: AccountRules,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationRules {
    /// AI answers without resolution before the next customer message escalates.
    pub max_ai_exchanges: u32,
    /// Cosine between two customer messages above which the second repeats the first.
    pub repeat_similarity: f32,
    /// A conversation still with the AI after this long is handed to a human.
    pub time_limit_secs: u64,
    /// How often the sweeper looks for conversations past the time limit.
    pub sweep_interval_secs: u64,
    /// Below this knowledge-base confidence the AI does not answer (it escalates instead).
    pub min_answer_confidence: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HumanRequestRule {
    /// Phrases that ask for a person (matched on word boundaries, case-insensitive).
    pub phrases: Vec<String>,
    /// The topic head's `human_request` probability that counts as asking for a person.
    pub topic_threshold: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRules {
    pub negative_sentiment: SentimentRule,
    pub billing: TopicSignalRule,
    pub security: TopicSignalRule,
    pub legal: TopicSignalRule,
    pub complex: ComplexRule,
    pub high_value: HighValueRule,
}

/// Signal fires at `threshold`; the tier and queue it asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub threshold: f32,
    pub tier: Tier,
    pub queue: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentimentRule {
    #[serde(flatten)]
    pub action: Action,
    /// At or above this score the conversation goes to a human rather than `tier`.
    pub human_at: f32,
    /// A drop from non-negative to at least this score during a conversation is a shift.
    pub shift_threshold: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSignalRule {
    #[serde(flatten)]
    pub action: Action,
    /// Topic labels whose summed probability is the model's score for this signal.
    pub topics: Vec<String>,
    /// Phrases that raise the score to `keyword_score` (a model can miss a rare phrasing).
    pub keywords: Vec<String>,
    pub keyword_score: f32,
    /// The topic part counts multiplied by how negative the message is (billing: a dispute,
    /// not a how-to question about invoices).
    #[serde(default)]
    pub weigh_by_negativity: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplexRule {
    #[serde(flatten)]
    pub action: Action,
    /// Names of systems, integrations and components customers mention.
    pub systems: Vec<String>,
    /// Number of distinct systems in one conversation that makes the score 1.0.
    pub systems_for_full_score: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HighValueRule {
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountRules {
    /// Plans treated as high-stakes (`account.plan`).
    pub high_value_plans: Vec<String>,
    /// Yearly contract value at or above which an account is high-stakes (`account.contract_value`).
    pub contract_value_at_least: f64,
    /// Whether `account.churn_risk: true` makes an account high-stakes.
    pub churn_risk_is_high_value: bool,
    /// Whether an account whose health score says it is at risk is high-stakes.
    #[serde(default = "enabled")]
    pub at_risk_is_high_value: bool,
    /// How account health is scored (`[accounts.health]`).
    #[serde(default)]
    pub health: HealthRules,
}

/// How health is scored (the `[accounts]` section of the policy).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthRules {
    /// Days of history read for each account.
    pub lookback_days: u32,
    /// The recent part of that history, compared with the rest.
    pub recent_days: u32,
    /// Accounts scoring below this are at risk.
    pub at_risk_below: f32,
    /// Fewest recent conversations before an account can be called at risk (one bad day is not a trend).
    pub min_recent_conversations: usize,
}

impl Default for HealthRules {
    fn default() -> Self {
        Self { lookback_days: 30, recent_days: 7, at_risk_below: 60.0, min_recent_conversations: 2 }
    }
}

impl HealthRules {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.recent_days == 0 || self.recent_days >= self.lookback_days {
            anyhow::bail!(
                "`accounts.recent_days` must be at least 1 and less than `accounts.lookback_days` ({}), not {}",
                self.lookback_days,
                self.recent_days
            );
        }
        if !(0.0..=100.0).contains(&self.at_risk_below) {
            anyhow::bail!("`accounts.at_risk_below` must be between 0 and 100, not {}", self.at_risk_below);
        }
        Ok(())
    }
}

fn enabled() -> bool {
    true
}

impl Policy {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read policy file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid policy file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let policy: Policy = toml::from_str(text)?;
        policy.validate()?;
        Ok(policy)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let known = |queue: &str| self.queues.iter().any(|q| q == queue);
        let mut queue_refs: Vec<(String, &str)> = vec![("default_queue".into(), self.default_queue.as_str())];
        for (topic, queue) in &self.topic_queues {
            queue_refs.push((format!("topic_queues.{topic}"), queue));
        }
        let s = &self.signals;
        let actions = [
            ("negative_sentiment", &s.negative_sentiment.action),
            ("billing", &s.billing.action),
            ("security", &s.security.action),
            ("legal", &s.legal.action),
            ("complex", &s.complex.action),
            ("high_value", &s.high_value.action),
        ];
        for (name, action) in actions {
            queue_refs.push((format!("signals.{name}.queue"), action.queue.as_str()));
            probability(&format!("signals.{name}.threshold"), action.threshold)?;
        }
        for (key, queue) in queue_refs {
            if !known(queue) {
                bail!("`{key}`: unknown queue `{queue}` (queues: {})", self.queues.join(", "));
            }
        }
        probability("signals.negative_sentiment.human_at", s.negative_sentiment.human_at)?;
        probability("signals.negative_sentiment.shift_threshold", s.negative_sentiment.shift_threshold)?;
        probability("human_request.topic_threshold", self.human_request.topic_threshold)?;
        probability("conversation.repeat_similarity", self.conversation.repeat_similarity)?;
        probability("conversation.min_answer_confidence", self.conversation.min_answer_confidence)?;
        for (name, rule) in [("billing", &s.billing), ("security", &s.security), ("legal", &s.legal)] {
            probability(&format!("signals.{name}.keyword_score"), rule.keyword_score)?;
        }
        self.accounts.health.validate()?;
        if s.complex.systems_for_full_score == 0 {
            bail!("`signals.complex.systems_for_full_score` must be greater than 0");
        }
        if self.conversation.sweep_interval_secs == 0 || self.conversation.time_limit_secs == 0 {
            bail!("`conversation.time_limit_secs` and `conversation.sweep_interval_secs` must be greater than 0");
        }
        Ok(())
    }
}

fn probability(key: &str, value: f32) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&value) {
        bail!("`{key}` must be between 0 and 1, not {value}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../../../models/policy.toml");

    #[test]
    fn the_shipped_policy_is_valid() {
        let policy = Policy::parse(SHIPPED).unwrap();
        assert_eq!(policy.conversation.max_ai_exchanges, 2);
        assert_eq!(policy.signals.security.action.tier, Tier::Human);
    }

    #[test]
    fn mistakes_are_named() {
        let unknown_queue = SHIPPED.replacen("queue = \"security\"", "queue = \"securty\"", 1);
        let err = format!("{:#}", Policy::parse(&unknown_queue).unwrap_err());
        assert!(err.contains("unknown queue `securty`"), "{err}");
        let typo = SHIPPED.replacen("max_ai_exchanges", "max_ai_exchange", 1);
        let err = format!("{:#}", Policy::parse(&typo).unwrap_err());
        assert!(err.contains("max_ai_exchange"), "{err}");
        let out_of_range = SHIPPED.replacen("repeat_similarity = 0.", "repeat_similarity = 1", 1);
        let err = format!("{:#}", Policy::parse(&out_of_range).unwrap_err());
        assert!(err.contains("conversation.repeat_similarity"), "{err}");
    }
}
