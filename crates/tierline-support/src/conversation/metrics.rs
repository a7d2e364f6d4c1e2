//! Support metrics from stored conversations, per queue and overall, for a time window: how much
//! escalates, how much the AI resolves, how fast a person answers, how often escalation was
//! avoidable, and what customers thought.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use futures_util::future::BoxFuture;

use crate::store::{ConversationRow, CreatedPage, Store, StoreResult};

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

/// Most conversations one report reads: the newest of its window. A longer window is reported as
/// truncated, starting at the oldest conversation read, so `window=all` costs the same on a
/// database of any age.
pub const REPORT_CONVERSATIONS_MAX: usize = 100_000;

/// Conversations read per query while a report walks its window.
const REPORT_PAGE: usize = 1_000;

/// The newest conversations of `[from, to)`, page by page, each reduced by `keep` as it is read
/// (so only what a report needs stays in memory), up to `max`. Also says whether the window held
/// more.
pub(crate) async fn read_newest<'a, Row, Kept>(
    (from, to): (i64, i64),
    max: usize,
    fetch: impl Fn(CreatedPage) -> BoxFuture<'a, StoreResult<Vec<Row>>>,
    key: impl Fn(&Row) -> (i64, String),
    mut keep: impl FnMut(Row) -> Kept,
) -> StoreResult<(Vec<Kept>, bool)> {
    let mut kept = Vec::new();
    let mut page = Some(CreatedPage { from, to, after: None, limit: REPORT_PAGE });
    while let Some(current) = page {
        let room = max - kept.len();
        if room == 0 {
            // Full: the window holds more when one more row exists past the last kept.
            let probe = CreatedPage { limit: 1, ..current };
            return Ok((kept, !fetch(probe).await?.is_empty()));
        }
        let current = CreatedPage { limit: current.limit.min(room), ..current };
        let rows = fetch(current.clone()).await?;
        page = current.next(&rows, &key);
        kept.extend(rows.into_iter().map(&mut keep));
    }
    Ok((kept, false))
}

/// Reads the conversations of `window` and computes the report off the async workers.
pub async fn load_report(store: &dyn Store, window: Window) -> StoreResult<SupportReport> {
    let (from, to) = window.range();
    let (tallies, truncated) = read_newest(
        (from, to),
        REPORT_CONVERSATIONS_MAX,
        |page| Box::pin(async move { store.conversations_created(&page).await }),
        |row| (row.created_at, row.id.clone()),
        |row| Tally::of(&row),
    )
    .await?;
    let (tallies, from) = match tallies.last().map(|oldest| oldest.created_at) {
        // Others created in the oldest millisecond read may be unread: start just after it.
        Some(oldest) if truncated => (tallies.into_iter().filter(|t| t.created_at > oldest).collect(), oldest + 1),
        _ => (tallies, from),
    };
    let computed = tokio::task::spawn_blocking(move || report(&tallies, window, from, to, truncated))
        .await
        .map_err(|err| anyhow::anyhow!("support metrics task failed: {err}"))?;
    Ok(computed)
}

/// What the metrics read of one conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    pub created_at: i64,
    pub queue: Option<String>,
    pub escalated_at: Option<i64>,
    pub first_human_reply_at: Option<i64>,
    pub resolved: bool,
    pub resolved_by_ai: bool,
    pub resolved_by_human: bool,
    pub reopened: bool,
    pub needed_information_ai_lacked: Option<bool>,
    pub csat: Option<u8>,
}

impl Tally {
    pub fn of(row: &ConversationRow) -> Self {
        Self {
            created_at: row.created_at,
            queue: row.queue.clone(),
            escalated_at: row.escalated_at,
            first_human_reply_at: row.first_human_reply_at,
            resolved: row.resolved_by.is_some(),
            resolved_by_ai: row.resolved_by_ai(),
            resolved_by_human: row.resolved_by_human(),
            reopened: row.reopened_count > 0,
            needed_information_ai_lacked: row.outcome.needed_information_ai_lacked,
            csat: row.csat,
        }
    }
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
    /// Start of the window (ms since the epoch; 0 for `all`), or of the oldest conversation read
    /// when the window held more than the report reads.
    pub from: i64,
    pub to: i64,
    /// The window held more than `REPORT_CONVERSATIONS_MAX` (100,000) conversations: the report
    /// covers the newest of them, from `from`.
    pub truncated: bool,
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

pub fn compute(rows: &[&Tally]) -> QueueMetrics {
    let escalated: Vec<&Tally> = rows.iter().copied().filter(|r| r.escalated_at.is_some()).collect();
    let resolved: Vec<&Tally> = rows.iter().copied().filter(|r| r.resolved).collect();
    let ai_resolved = resolved.iter().filter(|r| r.resolved_by_ai).count();
    let reopened = resolved.iter().filter(|r| r.reopened).count();
    let human_resolved_escalations: Vec<&Tally> = escalated.iter().copied().filter(|r| r.resolved_by_human).collect();
    let answered: Vec<bool> =
        human_resolved_escalations.iter().filter_map(|r| r.needed_information_ai_lacked).collect();
    let avoidable = answered.iter().filter(|needed| !**needed).count();
    let mut waits: Vec<f64> = escalated
        .iter()
        .filter_map(|r| Some((r.first_human_reply_at? - r.escalated_at?).max(0) as f64 / 1000.0))
        .collect();
    waits.sort_by(f64::total_cmp);
    let first_contact = human_resolved_escalations.iter().filter(|r| !r.reopened).count();
    let csat_ai: Vec<f64> =
        resolved.iter().filter(|r| r.resolved_by_ai).filter_map(|r| r.csat.map(f64::from)).collect();
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

pub fn report(rows: &[Tally], window: Window, from: i64, to: i64, truncated: bool) -> SupportReport {
    let all: Vec<&Tally> = rows.iter().collect();
    let mut grouped: BTreeMap<&str, Vec<&Tally>> = BTreeMap::new();
    for row in rows {
        grouped.entry(row.queue.as_deref().unwrap_or("unrouted")).or_default().push(row);
    }
    SupportReport {
        window,
        from,
        to,
        truncated,
        overall: compute(&all),
        by_queue: grouped.iter().map(|(queue, rows)| (queue.to_string(), compute(rows))).collect(),
        series: series(&all, from, to),
    }
}

/// `[from, to)` in `SERIES_BUCKETS` buckets (from the first conversation when the window is
/// everything).
fn series(rows: &[&Tally], from: i64, to: i64) -> Vec<SeriesPoint> {
    let start = if from == 0 { rows.iter().map(|r| r.created_at).min().unwrap_or(to) } else { from };
    let width = ((to - start) / SERIES_BUCKETS).max(1);
    (0..SERIES_BUCKETS)
        .map(|i| {
            let (bucket_from, bucket_to) =
                (start + i * width, if i + 1 == SERIES_BUCKETS { to } else { start + (i + 1) * width });
            let bucket: Vec<&Tally> =
                rows.iter().copied().filter(|r| r.created_at >= bucket_from && r.created_at < bucket_to).collect();
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

    /// A window of `count` conversations one millisecond apart, read the way a store pages it.
    async fn read(count: i64, max: usize) -> (Vec<i64>, bool) {
        let rows: Vec<(i64, String)> = (0..count).map(|at| (at, format!("c{at}"))).collect();
        let rows = &rows;
        read_newest(
            (0, count),
            max,
            |page: CreatedPage| {
                Box::pin(async move {
                    let (to, tie_at, tie_id) = page.bounds();
                    let mut newest: Vec<(i64, String)> = rows
                        .iter()
                        .filter(|(at, id)| *at >= page.from && *at < to && !(*at == tie_at && id.as_str() >= tie_id))
                        .cloned()
                        .collect();
                    newest.reverse();
                    newest.truncate(page.limit);
                    Ok(newest)
                })
            },
            |row| row.clone(),
            |row| row.0,
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_report_reads_the_newest_conversations_up_to_its_bound() {
        assert_eq!(read(3, 5).await, (vec![2, 1, 0], false));
        assert_eq!(read(5, 5).await, (vec![4, 3, 2, 1, 0], false), "exactly full is not truncated");
        assert_eq!(read(7, 5).await, (vec![6, 5, 4, 3, 2], true));
        let (kept, truncated) = read(2_500, 10_000).await;
        assert_eq!((kept.len(), kept[0], kept[2_499], truncated), (2_500, 2_499, 0, false), "three pages");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&values, 0.5), Some(5.0));
        assert_eq!(percentile(&values, 0.9), Some(9.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
