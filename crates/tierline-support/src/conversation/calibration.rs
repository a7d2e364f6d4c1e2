//! Threshold calibration: replays the stored first-message decisions and the recorded outcomes
//! under alternative thresholds, per signal, and shows how the escalation rate, the avoidable
//! escalations and the missed escalations would change. It only suggests: a support lead applies
//! a change by editing the policy file.

use serde::Serialize;

use super::metrics::{read_newest, Window, REPORT_CONVERSATIONS_MAX};
use crate::store::{ConversationRow, Store, StoreResult, StoredDecision};
use crate::triage::{Policy, ReasonCode, SignalKind, Tier};

/// What the outcome says about escalating this conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// A person was needed: resolved by a person who needed information the AI lacked, or the
    /// AI's handling came back (reopened, unhappy CSAT <= 2, escalated later).
    NeededHuman,
    /// The AI would have done: a person resolved it without anything the AI lacked, or the AI
    /// resolved it and the customer was happy (CSAT >= 4).
    Avoidable,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ThresholdRow {
    pub threshold: f32,
    pub escalation_rate: f64,
    /// Escalations the outcomes call avoidable.
    pub avoidable_escalations: usize,
    /// Conversations the outcomes say needed a person but that would not have escalated.
    pub missed_escalations: usize,
    pub current: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SignalCalibration {
    pub signal: SignalKind,
    pub current_threshold: f32,
    pub rows: Vec<ThresholdRow>,
    /// The threshold with the fewest avoidable + missed escalations, when it beats the current one.
    pub suggested_threshold: Option<f32>,
    pub suggestion: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CalibrationReport {
    /// The window held more than `REPORT_CONVERSATIONS_MAX` conversations: only the newest were
    /// replayed.
    pub truncated: bool,
    /// Conversations with a stored first decision.
    pub conversations: usize,
    /// Of those, conversations whose outcome tells whether a person was needed.
    pub with_verdict: usize,
    pub signals: Vec<SignalCalibration>,
}

struct Replay {
    /// Signal scores of the first customer message.
    scores: Vec<(SignalKind, f32)>,
    /// Escalated at the first message for a reason other than the signals (asked for a person,
    /// no confident answer...).
    other_reason: bool,
    verdict: Option<Verdict>,
}

fn verdict(conversation: &ConversationRow, escalated_first: bool) -> Option<Verdict> {
    let needed = conversation.outcome.needed_information_ai_lacked;
    let by_human = conversation.resolved_by_human();
    if by_human && escalated_first {
        return needed.map(|needed| if needed { Verdict::NeededHuman } else { Verdict::Avoidable });
    }
    if !escalated_first {
        // A later escalation counts when the AI failed (repeat, exchange limit, a signal...), not
        // when only the clock ran out or an agent stepped in unasked.
        let failed_later = conversation.escalated_at.is_some()
            && !matches!(conversation.escalation_reason, Some(ReasonCode::TimeLimit | ReasonCode::AgentTookOver));
        if conversation.reopened_count > 0 || failed_later || conversation.csat.is_some_and(|c| c <= 2) {
            return Some(Verdict::NeededHuman);
        }
        if conversation.resolved_by_ai() && conversation.csat.is_some_and(|c| c >= 4) {
            return Some(Verdict::Avoidable);
        }
    }
    None
}

fn replay(conversation: &ConversationRow, first: Option<&StoredDecision>) -> Option<Replay> {
    let decision = &first?.decision;
    let scores: Vec<(SignalKind, f32)> = decision.signals.iter().map(|s| (s.kind, s.score)).collect();
    let escalated = decision.tier != Tier::Auto;
    let other_reason = escalated && decision.reasons.iter().any(|r| !r.code.is_signal());
    Some(Replay { scores, other_reason, verdict: verdict(conversation, escalated) })
}

fn current_threshold(policy: &Policy, kind: SignalKind) -> f32 {
    policy.signals.action(kind).threshold
}

/// Reads the first decisions of the conversations of `window` (the newest
/// `REPORT_CONVERSATIONS_MAX`) and calibrates off the async workers.
pub async fn load_and_calibrate(store: &dyn Store, policy: &Policy, window: Window) -> StoreResult<CalibrationReport> {
    let (from, to) = window.range();
    let (replays, truncated) = read_newest(
        (from, to),
        REPORT_CONVERSATIONS_MAX,
        |page| Box::pin(async move { store.first_decisions(&page).await }),
        |(row, _)| (row.created_at, row.id.clone()),
        |(row, first)| replay(&row, first.as_ref()),
    )
    .await?;
    let replays: Vec<Replay> = replays.into_iter().flatten().collect();
    let policy = policy.clone();
    let report = tokio::task::spawn_blocking(move || calibrate(&policy, &replays, truncated))
        .await
        .map_err(|err| anyhow::anyhow!("calibration task failed: {err}"))?;
    Ok(report)
}

fn calibrate(policy: &Policy, replays: &[Replay], truncated: bool) -> CalibrationReport {
    let thresholds: Vec<f32> = (6..=19).map(|i| i as f32 / 20.0).collect();
    let mut signals = Vec::new();
    for kind in SignalKind::ALL {
        let current = current_threshold(policy, kind);
        let escalates = |replay: &Replay, own: f32| {
            replay.other_reason
                || replay.scores.iter().any(|(k, score)| {
                    let threshold = if *k == kind { own } else { current_threshold(policy, *k) };
                    *score >= threshold
                })
        };
        let mut candidates: Vec<f32> = thresholds.clone();
        if !candidates.iter().any(|t| (t - current).abs() < 1e-6) {
            candidates.push(current);
            candidates.sort_by(f32::total_cmp);
        }
        let rows: Vec<ThresholdRow> = candidates
            .iter()
            .map(|&t| {
                let escalated = replays.iter().filter(|r| escalates(r, t)).count();
                ThresholdRow {
                    threshold: t,
                    escalation_rate: if replays.is_empty() { 0.0 } else { escalated as f64 / replays.len() as f64 },
                    avoidable_escalations: replays
                        .iter()
                        .filter(|r| r.verdict == Some(Verdict::Avoidable) && escalates(r, t))
                        .count(),
                    missed_escalations: replays
                        .iter()
                        .filter(|r| r.verdict == Some(Verdict::NeededHuman) && !escalates(r, t))
                        .count(),
                    current: (t - current).abs() < 1e-6,
                }
            })
            .collect();
        let errors = |row: &ThresholdRow| row.avoidable_escalations + row.missed_escalations;
        let current_row = rows.iter().find(|r| r.current).expect("the current threshold is a row");
        let best = rows.iter().min_by_key(|r| (errors(r), (r.threshold - current).abs().to_bits())).expect("rows");
        let (suggested_threshold, suggestion) = if errors(best) < errors(current_row) {
            (
                Some(best.threshold),
                format!(
                    "set signals.{}.threshold = {:.2}: {} fewer avoidable or missed escalations ({} -> {}), escalation rate {:.1}% -> {:.1}%",
                    kind.as_str(),
                    best.threshold,
                    errors(current_row) - errors(best),
                    errors(current_row),
                    errors(best),
                    current_row.escalation_rate * 100.0,
                    best.escalation_rate * 100.0
                ),
            )
        } else {
            (None, format!("keep {:.2}: no threshold does better on the recorded outcomes", current))
        };
        signals.push(SignalCalibration {
            signal: kind,
            current_threshold: current,
            rows,
            suggested_threshold,
            suggestion,
        });
    }
    CalibrationReport {
        truncated,
        conversations: replays.len(),
        with_verdict: replays.iter().filter(|r| r.verdict.is_some()).count(),
        signals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Status;
    use crate::triage::{Decision, Reason, Signal};

    fn conversation(id: &str, resolved_by: Option<&str>, needed: Option<bool>, csat: Option<u8>) -> ConversationRow {
        ConversationRow {
            id: id.into(),
            created_at: 0,
            updated_at: 0,
            status: Status::Resolved,
            customer: serde_json::json!({}),
            account: Default::default(),
            queue: None,
            tier: None,
            ai_exchanges: 0,
            escalated_at: None,
            escalation_reason: None,
            first_human_reply_at: None,
            resolved_at: Some(1),
            resolved_by: resolved_by.map(String::from),
            csat,
            outcome: crate::store::ResolutionOutcome { needed_information_ai_lacked: needed, ..Default::default() },
            reopened_count: 0,
        }
    }

    fn first_message(billing: f32, tier: Tier) -> Option<StoredDecision> {
        let code = if tier == Tier::Auto { ReasonCode::KbAnswer } else { ReasonCode::Billing };
        let decision = Decision {
            tier,
            queue: "billing".into(),
            confidence: 1.0,
            reasons: vec![Reason::new(code, "", None)],
            signals: vec![Signal {
                kind: SignalKind::Billing,
                score: billing,
                fired: tier != Tier::Auto,
                evidence: String::new(),
                sentence: None,
            }],
            language: None,
            kind: None,
        };
        Some(StoredDecision { decision, negativity: 0.0, sentiment: None, topic: None })
    }

    #[test]
    fn suggests_raising_a_threshold_that_escalates_what_the_ai_could_handle() {
        let policy = Policy::parse(include_str!("../../../../models/policy.toml")).unwrap();
        let mut data = Vec::new();
        // Billing scores 0.82-0.88 escalated, and the agents needed nothing the AI lacked.
        for i in 0..6 {
            data.push((
                conversation(&format!("a{i}"), Some("human"), Some(false), None),
                first_message(0.82 + i as f32 * 0.01, Tier::Assist),
            ));
        }
        // Real disputes score 0.95 and needed a person.
        for i in 0..4 {
            data.push((
                conversation(&format!("d{i}"), Some("human"), Some(true), None),
                first_message(0.95, Tier::Assist),
            ));
        }
        // Low scores handled by the AI, happy customers.
        for i in 0..5 {
            data.push((conversation(&format!("h{i}"), Some("ai"), None, Some(5)), first_message(0.2, Tier::Auto)));
        }
        let replays: Vec<Replay> = data.iter().filter_map(|(c, first)| replay(c, first.as_ref())).collect();
        let report = calibrate(&policy, &replays, false);
        assert_eq!((report.conversations, report.with_verdict), (15, 15));
        let billing = report.signals.iter().find(|s| s.signal == SignalKind::Billing).unwrap();
        let current = billing.rows.iter().find(|r| r.current).unwrap();
        assert_eq!((current.avoidable_escalations, current.missed_escalations), (6, 0));
        assert_eq!(billing.suggested_threshold, Some(0.9));
        assert!(billing.suggestion.contains("signals.billing.threshold = 0.90"), "{}", billing.suggestion);
        // Nothing to gain elsewhere: no suggestion.
        let legal = report.signals.iter().find(|s| s.signal == SignalKind::Legal).unwrap();
        assert_eq!(legal.suggested_threshold, None);
    }
}
