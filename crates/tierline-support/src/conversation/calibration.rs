//! Threshold calibration: replays the stored first-message decisions and the recorded outcomes
//! under alternative thresholds, per signal, and shows how the escalation rate, the avoidable
//! escalations and the missed escalations would change. It only suggests: a support lead applies
//! a change by editing the policy file.

use serde::Serialize;

use super::metrics::Window;
use crate::storage::{ConversationRow, MessageRow, Store};
use crate::triage::{Policy, SignalKind};

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
    let needed = conversation.outcome.get("needed_information_ai_lacked").and_then(|v| v.as_bool());
    let by_human = conversation.resolved_by.as_deref().is_some_and(|b| b.starts_with("human"));
    if by_human && escalated_first {
        return needed.map(|needed| if needed { Verdict::NeededHuman } else { Verdict::Avoidable });
    }
    if !escalated_first {
        // A later escalation counts when the AI failed (repeat, exchange limit, a signal...), not
        // when only the clock ran out or an agent stepped in unasked.
        let failed_later = conversation.escalated_at.is_some()
            && !matches!(conversation.escalation_reason.as_deref(), Some("time_limit" | "agent_took_over"));
        if conversation.reopened_count > 0 || failed_later || conversation.csat.is_some_and(|c| c <= 2) {
            return Some(Verdict::NeededHuman);
        }
        if conversation.resolved_by.as_deref() == Some("ai") && conversation.csat.is_some_and(|c| c >= 4) {
            return Some(Verdict::Avoidable);
        }
    }
    None
}

fn replay(conversation: &ConversationRow, messages: &[MessageRow]) -> Option<Replay> {
    let first = messages.iter().find(|m| m.role == "customer")?;
    let decision = first.decision.as_ref()?;
    let scores: Vec<(SignalKind, f32)> = decision
        .get("signals")?
        .as_array()?
        .iter()
        .filter_map(|s| {
            let kind: SignalKind = serde_json::from_value(s.get("kind")?.clone()).ok()?;
            Some((kind, s.get("score")?.as_f64()? as f32))
        })
        .collect();
    let tier = decision.get("tier").and_then(|t| t.as_str()).unwrap_or("auto");
    let signal_codes: Vec<&str> = SignalKind::ALL.iter().map(|k| k.as_str()).collect();
    let other_reason = tier != "auto"
        && decision.get("reasons").and_then(|r| r.as_array()).is_some_and(|reasons| {
            reasons.iter().any(|r| r.get("code").and_then(|c| c.as_str()).is_some_and(|c| !signal_codes.contains(&c)))
        });
    Some(Replay { scores, other_reason, verdict: verdict(conversation, tier != "auto") })
}

fn current_threshold(policy: &Policy, kind: SignalKind) -> f32 {
    let s = &policy.signals;
    match kind {
        SignalKind::NegativeSentiment => s.negative_sentiment.action.threshold,
        SignalKind::Billing => s.billing.action.threshold,
        SignalKind::Security => s.security.action.threshold,
        SignalKind::Legal => s.legal.action.threshold,
        SignalKind::Complex => s.complex.action.threshold,
        SignalKind::HighValue => s.high_value.action.threshold,
    }
}

/// Reads the conversations of `window` with their messages and calibrates (blocking).
pub fn load_and_calibrate(store: &Store, policy: &Policy, window: Window) -> anyhow::Result<CalibrationReport> {
    let (from, to) = window.range();
    let conversations = store
        .conversations_created(from, to)?
        .into_iter()
        .map(|row| {
            let messages = store.messages(&row.id)?;
            Ok((row, messages))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(calibrate(policy, &conversations))
}

pub fn calibrate(policy: &Policy, conversations: &[(ConversationRow, Vec<MessageRow>)]) -> CalibrationReport {
    let replays: Vec<Replay> = conversations.iter().filter_map(|(c, m)| replay(c, m)).collect();
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
        conversations: replays.len(),
        with_verdict: replays.iter().filter(|r| r.verdict.is_some()).count(),
        signals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Status;

    fn conversation(id: &str, resolved_by: Option<&str>, needed: Option<bool>, csat: Option<u8>) -> ConversationRow {
        ConversationRow {
            id: id.into(),
            created_at: 0,
            updated_at: 0,
            status: Status::Resolved,
            customer: serde_json::json!({}),
            account: serde_json::json!({}),
            queue: None,
            tier: None,
            ai_exchanges: 0,
            escalated_at: None,
            escalation_reason: None,
            first_human_reply_at: None,
            resolved_at: Some(1),
            resolved_by: resolved_by.map(String::from),
            csat,
            outcome: needed
                .map_or(serde_json::Value::Null, |n| serde_json::json!({ "needed_information_ai_lacked": n })),
            reopened_count: 0,
        }
    }

    fn first_message(billing: f32, tier: &str) -> Vec<MessageRow> {
        let reasons = if tier == "auto" {
            serde_json::json!([{"code": "kb_answer"}])
        } else {
            serde_json::json!([{"code": "billing"}])
        };
        vec![MessageRow {
            id: 1,
            role: "customer".into(),
            author: None,
            text: "x".into(),
            created_at: 0,
            decision: Some(serde_json::json!({
                "tier": tier,
                "reasons": reasons,
                "signals": [{"kind": "billing", "score": billing, "fired": tier != "auto"}],
            })),
            embedding: None,
        }]
    }

    #[test]
    fn suggests_raising_a_threshold_that_escalates_what_the_ai_could_handle() {
        let policy = Policy::parse(include_str!("../../../../models/policy.toml")).unwrap();
        let mut data = Vec::new();
        // Billing scores 0.82-0.88 escalated, and the agents needed nothing the AI lacked.
        for i in 0..6 {
            data.push((
                conversation(&format!("a{i}"), Some("human"), Some(false), None),
                first_message(0.82 + i as f32 * 0.01, "assist"),
            ));
        }
        // Real disputes score 0.95 and needed a person.
        for i in 0..4 {
            data.push((conversation(&format!("d{i}"), Some("human"), Some(true), None), first_message(0.95, "assist")));
        }
        // Low scores handled by the AI, happy customers.
        for i in 0..5 {
            data.push((conversation(&format!("h{i}"), Some("ai"), None, Some(5)), first_message(0.2, "auto")));
        }
        let report = calibrate(&policy, &data);
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
