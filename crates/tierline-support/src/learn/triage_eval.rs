//! Triage measured as a support lead measures it, on labeled tickets and conversations in the
//! format of `../shared/data/triage/GUIDE.md`: tier and queue accuracy, the tier confusion,
//! precision and recall per signal, accuracy per style and language, every dangerous miss (a
//! ticket that needs a person decided `auto`), and whether each conversation reaches a person
//! at the right turn. The tickets run through the real service, models and knowledge base.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::conversation::{Models, Support, Ticket};
use crate::triage::{AccountContext, SignalKind, Tier};

/// One labeled ticket (GUIDE.md).
#[derive(Debug, Clone, Deserialize)]
pub struct LabeledTicket {
    pub id: String,
    pub text: String,
    #[serde(default)]
    pub subject: Option<String>,
    pub tier: Tier,
    pub queue: String,
    #[serde(default)]
    pub alt: Vec<Tier>,
    #[serde(default)]
    pub account: AccountContext,
    #[serde(default)]
    pub signals: Vec<String>,
    #[serde(default)]
    pub style: Option<String>,
    #[serde(default)]
    pub lang: Option<String>,
}

/// One labeled conversation scenario (GUIDE.md).
#[derive(Debug, Clone, Deserialize)]
pub struct LabeledConversation {
    pub id: String,
    #[serde(default)]
    pub account: AccountContext,
    pub turns: Vec<String>,
    /// 1-based turn at which a person must take over, or none.
    pub handoff_at: Option<usize>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Reads a JSONL file of `T`, naming the line of any bad row.
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), number + 1)))
        .collect()
}

/// What tierline decided for one labeled ticket.
#[derive(Debug, Clone, Serialize)]
pub struct TicketOutcome {
    pub id: String,
    pub expected_tier: Tier,
    pub accepted_tiers: Vec<Tier>,
    pub tier: Tier,
    pub expected_queue: String,
    pub queue: String,
    pub expected_signals: Vec<String>,
    pub signals: Vec<String>,
    /// Every signal's score, fired or not (for threshold calibration).
    pub scores: BTreeMap<String, f32>,
    pub style: String,
    pub lang: String,
    /// The decision's reasons, in words.
    pub reasons: Vec<String>,
    pub text: String,
}

impl TicketOutcome {
    pub fn tier_right(&self) -> bool {
        self.tier == self.expected_tier || self.accepted_tiers.contains(&self.tier)
    }

    /// A ticket that needs a person (labeled `human`) answered by the AI alone.
    pub fn dangerous(&self) -> bool {
        self.expected_tier == Tier::Human && self.tier == Tier::Auto
    }

    /// A ticket that goes to a person, by its label.
    pub fn to_person(&self) -> bool {
        self.expected_tier != Tier::Auto
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Rate {
    pub right: usize,
    pub total: usize,
}

impl Rate {
    fn add(&mut self, right: bool) {
        self.right += usize::from(right);
        self.total += 1;
    }

    pub fn value(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.right as f64 / self.total as f64
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SignalScore {
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
}

impl SignalScore {
    pub fn precision(&self) -> f64 {
        ratio(self.true_positives, self.true_positives + self.false_positives)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.true_positives, self.true_positives + self.false_negatives)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Figures over one set of tickets.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TriageFigures {
    pub tickets: usize,
    pub tier: Rate,
    /// Queue right among tickets labeled to go to a person.
    pub queue_to_person: Rate,
    pub dangerous_misses: usize,
    /// `confusion[expected][decided]`.
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
    pub signals: BTreeMap<String, SignalScore>,
    pub tier_by_style: BTreeMap<String, Rate>,
    pub tier_by_language: BTreeMap<String, Rate>,
}

impl TriageFigures {
    pub fn of<'a>(outcomes: impl IntoIterator<Item = &'a TicketOutcome>) -> Self {
        let mut figures = TriageFigures::default();
        for outcome in outcomes {
            figures.tickets += 1;
            figures.tier.add(outcome.tier_right());
            if outcome.to_person() {
                figures.queue_to_person.add(outcome.queue == outcome.expected_queue);
            }
            figures.dangerous_misses += usize::from(outcome.dangerous());
            *figures
                .confusion
                .entry(outcome.expected_tier.as_str().into())
                .or_default()
                .entry(outcome.tier.as_str().into())
                .or_default() += 1;
            for kind in SignalKind::ALL {
                let name = kind.as_str();
                let (expected, got) =
                    (outcome.expected_signals.iter().any(|s| s == name), outcome.signals.iter().any(|s| s == name));
                let score = figures.signals.entry(name.into()).or_default();
                match (expected, got) {
                    (true, true) => score.true_positives += 1,
                    (false, true) => score.false_positives += 1,
                    (true, false) => score.false_negatives += 1,
                    (false, false) => {}
                }
            }
            figures.tier_by_style.entry(outcome.style.clone()).or_default().add(outcome.tier_right());
            figures.tier_by_language.entry(outcome.lang.clone()).or_default().add(outcome.tier_right());
        }
        figures
    }
}

/// Runs every ticket through stateless triage (the same path as `POST /v1/classify` with
/// tickets) and compares with its labels.
pub async fn triage_tickets(
    support: &Support,
    models: Models<'_>,
    tickets: &[LabeledTicket],
) -> anyhow::Result<Vec<TicketOutcome>> {
    let mut outcomes = Vec::with_capacity(tickets.len());
    for labeled in tickets {
        let ticket =
            Ticket { subject: labeled.subject.clone(), body: labeled.text.clone(), account: labeled.account.clone() };
        let triaged = support.triage_tickets(models, std::slice::from_ref(&ticket)).await?;
        let decision = &triaged.first().context("triage returned nothing")?.decision;
        outcomes.push(TicketOutcome {
            id: labeled.id.clone(),
            expected_tier: labeled.tier,
            accepted_tiers: labeled.alt.clone(),
            tier: decision.tier,
            expected_queue: labeled.queue.clone(),
            queue: decision.queue.clone(),
            expected_signals: labeled.signals.clone(),
            signals: decision.signals.iter().filter(|s| s.fired).map(|s| s.kind.as_str().to_string()).collect(),
            scores: decision.signals.iter().map(|s| (s.kind.as_str().to_string(), s.score)).collect(),
            style: labeled.style.clone().unwrap_or_else(|| "unknown".into()),
            lang: labeled.lang.clone().unwrap_or_else(|| "unknown".into()),
            reasons: decision.reasons.iter().map(|r| r.message.clone()).collect(),
            text: labeled.text.clone(),
        });
    }
    Ok(outcomes)
}

/// Where one replayed conversation reached a person.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationOutcome {
    pub id: String,
    pub expected: Option<usize>,
    pub handoff_at: Option<usize>,
    /// Why the handoff happened (its decision's reasons), or why the last turn stayed with the AI.
    pub reasons: Vec<String>,
    pub turns: Vec<String>,
}

impl ConversationOutcome {
    pub fn right(&self) -> bool {
        self.expected == self.handoff_at
    }
}

/// Replays every scenario through the real conversation service, turn by turn, and notes the
/// turn at which the conversation first went to a person.
pub async fn replay_conversations(
    support: &Support,
    models: Models<'_>,
    scenarios: &[LabeledConversation],
) -> anyhow::Result<Vec<ConversationOutcome>> {
    let mut outcomes = Vec::with_capacity(scenarios.len());
    for scenario in scenarios {
        let conversation = support.create(serde_json::json!({}), &scenario.account).await?;
        let mut handoff_at = None;
        let mut reasons = Vec::new();
        for (index, text) in scenario.turns.iter().enumerate() {
            let turn = support.customer_message(models, &conversation.id, text.clone()).await?;
            reasons = turn.decision.reasons.iter().map(|r| r.message.clone()).collect();
            if turn.handoff {
                handoff_at = Some(index + 1);
                break;
            }
        }
        outcomes.push(ConversationOutcome {
            id: scenario.id.clone(),
            expected: scenario.handoff_at,
            handoff_at,
            reasons,
            turns: scenario.turns.clone(),
        });
    }
    Ok(outcomes)
}

/// Splits outcomes into the held-out ids and the rest.
pub fn split_by_ids<'a, T>(
    outcomes: &'a [T],
    held_out: &BTreeSet<String>,
    id: impl Fn(&T) -> &str,
) -> (Vec<&'a T>, Vec<&'a T>) {
    outcomes.iter().partition(|o| held_out.contains(id(o)))
}

/// A threshold for one signal fitted on labeled tickets.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdFit {
    pub signal: String,
    pub current: f32,
    pub current_f1: f64,
    pub suggested: f32,
    pub suggested_f1: f64,
    /// Tickets labeled with the signal that the suggested threshold misses.
    pub missed: usize,
}

/// Per signal read from the text, the threshold in [0.3, 0.95] with the best F2 (recall weighs
/// double: a missed signal is a customer who needed a person) on `outcomes`.
pub fn fit_thresholds(policy: &crate::triage::Policy, outcomes: &[&TicketOutcome]) -> Vec<ThresholdFit> {
    let mut fits = Vec::new();
    for kind in SignalKind::FROM_TEXT {
        let name = kind.as_str();
        let current = policy.signals.action(kind).threshold;
        let at = |threshold: f32| {
            let mut score = SignalScore::default();
            for outcome in outcomes {
                let expected = outcome.expected_signals.iter().any(|s| s == name);
                let fired = outcome.scores.get(name).is_some_and(|s| *s >= threshold);
                match (expected, fired) {
                    (true, true) => score.true_positives += 1,
                    (false, true) => score.false_positives += 1,
                    (true, false) => score.false_negatives += 1,
                    (false, false) => {}
                }
            }
            let (p, r) = (score.precision(), score.recall());
            let f2 = if p + r == 0.0 { 0.0 } else { 5.0 * p * r / (4.0 * p + r) };
            (f2, score.false_negatives)
        };
        let (current_f1, _) = at(current);
        let (suggested, (suggested_f1, missed)) = (6..=19).map(|i| i as f32 / 20.0).map(|t| (t, at(t))).fold(
            (current, (current_f1, usize::MAX)),
            |best, candidate| {
                if candidate.1 .0 > best.1 .0 + 1e-9 {
                    candidate
                } else {
                    best
                }
            },
        );
        let missed = if missed == usize::MAX { at(current).1 } else { missed };
        fits.push(ThresholdFit { signal: name.into(), current, current_f1, suggested, suggested_f1, missed });
    }
    fits
}
