//! Learning from people: the labeled examples stored at resolutions become training data, a
//! candidate head is compared with the served one on held-out data, and it is promoted only if
//! it is not worse. The rules live here; `tierline train --from-feedback` runs them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::recipe::Example;
use crate::store::{FeedbackKind, FeedbackRow, FeedbackStatus};

/// Source name of feedback examples in splits and reports.
pub const FEEDBACK_SOURCE: &str = "feedback";

/// Share of feedback examples held out to judge the candidate (by a hash of the text, so an
/// example stays on its side across runs).
const HELD_OUT_PERCENT: u64 = 30;

#[derive(Debug, Default)]
pub struct FeedbackSet {
    pub train: Vec<Example>,
    pub held_out: Vec<Example>,
    /// Labels the head does not have, with how many examples carried them (not used).
    pub unknown_labels: BTreeMap<String, usize>,
}

/// Which stored examples a retraining learns from. Unreviewed confirmations repeat the head's own
/// prediction: learning from them would only entrench it. Corrections, and whatever a person
/// accepted, are the signal; rejected examples never count.
pub fn counts_for_training(row: &FeedbackRow, include_confirmed: bool) -> bool {
    match row.status {
        FeedbackStatus::Rejected => false,
        FeedbackStatus::Accepted => true,
        FeedbackStatus::Pending => include_confirmed || row.kind == FeedbackKind::Corrected,
    }
}

/// The rows as JSONL, one `FeedbackRow` per line (for training files and exports).
pub fn to_jsonl(rows: &[FeedbackRow]) -> anyhow::Result<String> {
    let mut text = String::new();
    for row in rows {
        text.push_str(&serde_json::to_string(row)?);
        text.push('\n');
    }
    Ok(text)
}

/// Turns stored rows into examples for a head with `labels`: one per distinct text (the newest
/// row wins, so a later correction overrides an earlier confirmation), split train/held-out.
pub fn examples(rows: &[FeedbackRow], labels: &[String]) -> FeedbackSet {
    let mut latest: BTreeMap<String, &FeedbackRow> = BTreeMap::new();
    for row in rows {
        let key = row.text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        match latest.get(&key) {
            Some(seen) if seen.id > row.id => {}
            _ => {
                latest.insert(key, row);
            }
        }
    }
    let mut set = FeedbackSet::default();
    for (key, row) in latest {
        let Some(label) = labels.iter().position(|l| *l == row.label) else {
            *set.unknown_labels.entry(row.label.clone()).or_default() += 1;
            continue;
        };
        let example = Example { text: row.text.clone(), labels: vec![label], source: FEEDBACK_SOURCE.into() };
        if stable_hash(&key) % 100 < HELD_OUT_PERCENT {
            set.held_out.push(example);
        } else {
            set.train.push(example);
        }
    }
    set
}

/// FNV-1a: stable across runs and platforms (std's hasher is not).
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// How a head scores on the two held-out sets.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Scores {
    /// Macro-F1 on the held-out split of the original data.
    pub base_macro_f1: f64,
    /// Accuracy on the held-out feedback examples (`None` when there are none).
    pub feedback_accuracy: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub promote: bool,
    pub reasons: Vec<String>,
}

/// The candidate is promoted when it is not worse: macro-F1 on the original held-out split may
/// drop by at most `tolerance`, and accuracy on held-out feedback must not drop at all.
pub fn verdict(current: &Scores, candidate: &Scores, tolerance: f64) -> Verdict {
    let mut reasons = Vec::new();
    let mut promote = true;
    let base_drop = current.base_macro_f1 - candidate.base_macro_f1;
    if base_drop > tolerance {
        promote = false;
        reasons.push(format!(
            "macro-F1 on the original held-out split falls from {:.4} to {:.4} (more than the {tolerance} allowed)",
            current.base_macro_f1, candidate.base_macro_f1
        ));
    } else {
        reasons.push(format!(
            "macro-F1 on the original held-out split {:.4} -> {:.4}",
            current.base_macro_f1, candidate.base_macro_f1
        ));
    }
    match (current.feedback_accuracy, candidate.feedback_accuracy) {
        (Some(before), Some(after)) if after < before => {
            promote = false;
            reasons.push(format!("accuracy on held-out feedback falls from {before:.4} to {after:.4}"));
        }
        (Some(before), Some(after)) => reasons.push(format!("accuracy on held-out feedback {before:.4} -> {after:.4}")),
        _ => reasons.push("no held-out feedback examples: judged on the original split only".into()),
    }
    Verdict { promote, reasons }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FeedbackStatus;

    fn row(id: i64, text: &str, label: &str) -> FeedbackRow {
        FeedbackRow {
            id,
            created_at: 0,
            conversation_id: None,
            head: "topic".into(),
            text: text.into(),
            label: label.into(),
            predicted: None,
            kind: FeedbackKind::Corrected,
            status: FeedbackStatus::Pending,
            reviewed_at: None,
        }
    }

    #[test]
    fn the_newest_label_of_a_text_wins_and_unknown_labels_are_counted() {
        let labels = vec!["billing".to_string(), "refund".to_string()];
        let rows = (0..40)
            .map(|i| row(i, &format!("ticket number {i}"), "billing"))
            .chain([row(100, "ticket  number 3", "refund"), row(101, "x", "astrology")])
            .collect::<Vec<_>>();
        let set = examples(&rows, &labels);
        assert_eq!(set.unknown_labels.get("astrology"), Some(&1));
        assert_eq!(set.train.len() + set.held_out.len(), 40);
        assert!(!set.held_out.is_empty() && set.held_out.len() < 20, "{}", set.held_out.len());
        let relabelled = set.train.iter().chain(&set.held_out).find(|e| e.text == "ticket  number 3").unwrap();
        assert_eq!(relabelled.labels, [1]);
    }

    #[test]
    fn a_candidate_worse_on_either_held_out_set_is_refused() {
        let current = Scores { base_macro_f1: 0.90, feedback_accuracy: Some(0.2) };
        let better = Scores { base_macro_f1: 0.895, feedback_accuracy: Some(0.9) };
        assert!(verdict(&current, &better, 0.01).promote);
        let forgets = Scores { base_macro_f1: 0.80, feedback_accuracy: Some(1.0) };
        assert!(!verdict(&current, &forgets, 0.01).promote);
        let unlearns = Scores { base_macro_f1: 0.91, feedback_accuracy: Some(0.1) };
        let refused = verdict(&current, &unlearns, 0.01);
        assert!(!refused.promote && refused.reasons.iter().any(|r| r.contains("held-out feedback")));
    }
}
