//! Support metrics from stored conversations, per queue and overall, for a time window: how much
//! escalates, how much the AI resolves, how fast a person answers, how often escalation was
//! avoidable, and what customers thought.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::store::{ConversationRow, Store, StoreResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Day,
    Week,
    /// Everything stored.
    All,
}

impl std::str::FromStr for Window {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "day" => Ok(Window::Day),
            "week" => Ok(Window::Week),
            "all" => Ok(Window::All),
            other => Err(format!("unknown window `{other}` (day, week, all)")),
        }
    }
}

impl Window {
    pub fn millis(self) -> Option<i64> {
        match self {
            Window::Day => Some(86_400_000),
            Window::Week => Some(7 * 86_400_000),
            Window::All => None,
        }
    }

    /// `[from, to)` in ms since the epoch, ending now.
    pub fn range(self) -> (i64, i64) {
        let to = now_ms() + 1;
        (self.millis().map_or(0, |w| to - w), to)
    }
}

/// Reads the conversations of `window` and computes the report off the async workers.
pub async fn load_report(store: &dyn Store, window: Window) -> StoreResult<SupportReport> {
    let (from, to) = window.range();
    let rows = store.conversations_created(from, to).await?;
    let computed = tokio::task::spawn_blocking(move || report(&rows, window, from, to))
        .await
        .map_err(|err| anyhow::anyhow!("support metrics task failed: {err}"))?;
    Ok(computed)
}

/// Rates are `null` when their denominator is zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct QueueMetrics {
    /// Conversations opened in the window.
    pub conversations: usize,
    /// Conversations that reached a person (any trigger).
    pub escalated: usize,
    /// escalated / conversations.
    pub escalation_rate: Option<f64>,
    /// Conversations resolved (now or before a reopening).
    pub resolved: usize,
    /// Resolved by the AI without a person.
    pub ai_resolved: usize,
    /// ai_resolved / conversations.
    pub ai_resolution_rate: Option<f64>,
    /// Resolved conversations the customer reopened / resolved conversations.
    pub re_escalation_rate: Option<f64>,
    /// Escalations a person resolved without needing information the AI lacked / escalations
    /// resolved by a person where the resolver answered that question.
    pub over_escalation_rate: Option<f64>,
    /// Seconds from the escalation to the first human reply (nearest rank).
    pub time_to_human_p50_secs: Option<f64>,
    pub time_to_human_p90_secs: Option<f64>,
    /// Escalations resolved by a person and never reopened / escalations resolved by a person.
    pub first_contact_resolution_after_escalation: Option<f64>,
    /// Mean CSAT (1-5) of AI-resolved conversations.
    pub csat_ai_resolved: Option<f64>,
    /// Mean CSAT (1-5) of escalated conversations.
    pub csat_escalated: Option<f64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SupportReport {
    pub window: Window,
    /// Start of the window (ms since the epoch; 0 for `all`).
    pub from: i64,
    pub to: i64,
    pub overall: QueueMetrics,
    /// By the conversation's queue (`unrouted` when it never had one).
    pub by_queue: BTreeMap<String, QueueMetrics>,
    /// The window in equal buckets, oldest first: how escalation and AI resolution move.
    pub series: Vec<SeriesPoint>,
}

/// One bucket of the window.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SeriesPoint {
    pub from: i64,
    pub to: i64,
    pub conversations: usize,
    pub escalation_rate: Option<f64>,
    pub ai_resolution_rate: Option<f64>,
}

/// Buckets in a series.
const SERIES_BUCKETS: i64 = 7;

fn ratio(numerator: usize, denominator: usize) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

pub fn compute(rows: &[ConversationRow]) -> QueueMetrics {
    let escalated: Vec<&ConversationRow> = rows.iter().filter(|r| r.escalated_at.is_some()).collect();
    let resolved: Vec<&ConversationRow> = rows.iter().filter(|r| r.resolved_by.is_some()).collect();
    let ai_resolved = resolved.iter().filter(|r| r.resolved_by_ai()).count();
    let reopened = resolved.iter().filter(|r| r.reopened_count > 0).count();
    let human_resolved_escalations: Vec<&&ConversationRow> =
        escalated.iter().filter(|r| r.resolved_by_human()).collect();
    let answered: Vec<bool> =
        human_resolved_escalations.iter().filter_map(|r| r.outcome.needed_information_ai_lacked).collect();
    let avoidable = answered.iter().filter(|needed| !**needed).count();
    let mut waits: Vec<f64> = escalated
        .iter()
        .filter_map(|r| Some((r.first_human_reply_at? - r.escalated_at?).max(0) as f64 / 1000.0))
        .collect();
    waits.sort_by(f64::total_cmp);
    let first_contact = human_resolved_escalations.iter().filter(|r| r.reopened_count == 0).count();
    let csat_ai: Vec<f64> =
        resolved.iter().filter(|r| r.resolved_by_ai()).filter_map(|r| r.csat.map(f64::from)).collect();
    let csat_escalated: Vec<f64> = escalated.iter().filter_map(|r| r.csat.map(f64::from)).collect();
    QueueMetrics {
        conversations: rows.len(),
        escalated: escalated.len(),
        escalation_rate: ratio(escalated.len(), rows.len()),
        resolved: resolved.len(),
        ai_resolved,
        ai_resolution_rate: ratio(ai_resolved, rows.len()),
        re_escalation_rate: ratio(reopened, resolved.len()),
        over_escalation_rate: ratio(avoidable, answered.len()),
        time_to_human_p50_secs: percentile(&waits, 0.5),
        time_to_human_p90_secs: percentile(&waits, 0.9),
        first_contact_resolution_after_escalation: ratio(first_contact, human_resolved_escalations.len()),
        csat_ai_resolved: mean(&csat_ai),
        csat_escalated: mean(&csat_escalated),
    }
}

pub fn report(rows: &[ConversationRow], window: Window, from: i64, to: i64) -> SupportReport {
    let mut grouped: BTreeMap<String, Vec<ConversationRow>> = BTreeMap::new();
    for row in rows {
        grouped.entry(row.queue.clone().unwrap_or_else(|| "unrouted".into())).or_default().push(row.clone());
    }
    SupportReport {
        window,
        from,
        to,
        overall: compute(rows),
        by_queue: grouped.iter().map(|(queue, rows)| (queue.clone(), compute(rows))).collect(),
        series: series(rows, from, to),
    }
}

/// `[from, to)` in `SERIES_BUCKETS` buckets (from the first conversation when the window is
/// everything).
fn series(rows: &[ConversationRow], from: i64, to: i64) -> Vec<SeriesPoint> {
    let start = if from == 0 { rows.iter().map(|r| r.created_at).min().unwrap_or(to) } else { from };
    let width = ((to - start) / SERIES_BUCKETS).max(1);
    (0..SERIES_BUCKETS)
        .map(|i| {
            let (bucket_from, bucket_to) =
                (start + i * width, if i + 1 == SERIES_BUCKETS { to } else { start + (i + 1) * width });
            let bucket: Vec<ConversationRow> =
                rows.iter().filter(|r| r.created_at >= bucket_from && r.created_at < bucket_to).cloned().collect();
            let metrics = compute(&bucket);
            SeriesPoint {
                from: bucket_from,
                to: bucket_to,
                conversations: metrics.conversations,
                escalation_rate: metrics.escalation_rate,
                ai_resolution_rate: metrics.ai_resolution_rate,
            }
        })
        .collect()
}

/// The report as a plain-text table (for `tierline report`).
pub fn table(report: &SupportReport) -> String {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
    let secs = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}s"));
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let mut out = format!(
        "{:<20} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}\n",
        "queue", "convs", "escal", "AI res", "re-esc", "over-esc", "tth p50", "tth p90", "FCR", "CSATai", "CSATesc"
    );
    let rows = std::iter::once(("(all)".to_string(), &report.overall))
        .chain(report.by_queue.iter().map(|(q, m)| (q.clone(), m)));
    for (queue, m) in rows {
        out.push_str(&format!(
            "{:<20} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6}\n",
            queue,
            m.conversations,
            pct(m.escalation_rate),
            pct(m.ai_resolution_rate),
            pct(m.re_escalation_rate),
            pct(m.over_escalation_rate),
            secs(m.time_to_human_p50_secs),
            secs(m.time_to_human_p90_secs),
            pct(m.first_contact_resolution_after_escalation),
            num(m.csat_ai_resolved),
            num(m.csat_escalated)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&values, 0.5), Some(5.0));
        assert_eq!(percentile(&values, 0.9), Some(9.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
