//! Online anomaly detection over support tickets. Ticket embeddings are clustered leader–follower;
//! each cluster counts its tickets per time bucket, and a cluster whose count in the recent window
//! rises well above its own baseline across several accounts (a likely bug or outage) raises an
//! alert with examples and characteristic terms. Pure and synchronous: the caller feeds tickets in
//! roughly time order and persists or broadcasts the changes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use tierline_infer::kernels::dot;

use anyhow::bail;
use serde::{Deserialize, Serialize};
use tracing::debug;

/// Recent tickets kept per cluster, for examples and terms.
/// An active alert clears when its window count falls below this share of the firing threshold.
const CLEAR_FRACTION: f32 = 0.5;
const RECENT_TICKETS: usize = 50;
/// Distinct terms with a global document frequency; new terms past this are not counted.
const MAX_VOCABULARY: usize = 50_000;
/// Alerts kept in history, active and cleared.
const MAX_ALERTS: usize = 200;
/// Stored ticket texts are cut to this many characters to bound memory.
const MAX_TEXT_CHARS: usize = 500;
/// Distinct accounts remembered per cluster and bucket; a flood past this adds no evidence.
const MAX_ACCOUNTS_PER_BUCKET: usize = 1_000;
/// Longer tokens are ids, hashes or pasted blobs rather than words.
const MAX_TERM_CHARS: usize = 40;
/// Below this many recent tickets a term seen once may characterise a cluster.
const TINY_CLUSTER: usize = 4;
/// Terms named in an alert's one-line summary.
const SUMMARY_TERMS: usize = 3;

/// Words that say nothing about what broke, support boilerplate included.
const STOPWORDS: &str =
    "about after again all also and any anyone are been best but can cannot cant could dear did does \
    doesn don for from get got had has have hello help her here hey his hope how into its just know let \
    like more need not now our out please regards she should since some still team thank thanks that the \
    their them then there they this today too very want was were what when where which while who why \
    will with would yesterday you your";

/// Tuning, read from the `[anomaly]` section of config.toml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalyConfig {
    pub enabled: bool,
    /// Cosine similarity to a cluster's centroid needed to join it.
    pub similarity: f32,
    pub bucket_secs: u64,
    /// The window a spike is counted in.
    pub window_secs: u64,
    /// History before the window that gives the baseline.
    pub baseline_secs: u64,
    /// No alerts until the detector has seen this much time (warm-up).
    pub min_history_secs: u64,
    /// Tickets in the window before anything fires.
    pub min_count: usize,
    /// The window count must be at least `ratio * max(baseline, min_baseline)`.
    pub ratio: f32,
    /// Floor of the per-window baseline, so a cluster new to the detector is not infinitely surprising.
    pub min_baseline: f32,
    /// And at least `baseline + z_score * sqrt(max(baseline, min_baseline))`.
    pub z_score: f32,
    /// Distinct accounts in the window; one noisy customer is not an outage.
    pub min_accounts: usize,
    /// Beyond this the least recently seen cluster without an active alert is dropped.
    pub max_clusters: usize,
    /// Example tickets per alert.
    pub examples: usize,
    /// Characteristic terms per alert.
    pub terms: usize,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            similarity: 0.6,
            bucket_secs: 300,
            window_secs: 3600,
            baseline_secs: 86_400,
            min_history_secs: 3600,
            min_count: 15,
            ratio: 4.0,
            min_baseline: 1.0,
            z_score: 4.0,
            min_accounts: 3,
            max_clusters: 2000,
            examples: 5,
            terms: 8,
        }
    }
}

impl AnomalyConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        let Self { similarity, bucket_secs, window_secs, baseline_secs, ratio, min_baseline, z_score, .. } = *self;
        if similarity.is_nan() || similarity <= 0.0 || similarity > 1.0 {
            bail!("anomaly.similarity must be in (0, 1], got {similarity}");
        }
        if bucket_secs == 0 {
            bail!("anomaly.bucket_secs must be greater than 0");
        }
        if window_secs < bucket_secs || !window_secs.is_multiple_of(bucket_secs) {
            bail!("anomaly.window_secs must be a positive multiple of bucket_secs ({bucket_secs}), got {window_secs}");
        }
        if !baseline_secs.is_multiple_of(bucket_secs) {
            bail!("anomaly.baseline_secs must be a multiple of bucket_secs ({bucket_secs}), got {baseline_secs}");
        }
        if !ratio.is_finite() || ratio < 1.0 {
            bail!("anomaly.ratio must be at least 1, got {ratio}");
        }
        if !min_baseline.is_finite() || min_baseline < 0.0 {
            bail!("anomaly.min_baseline must be at least 0, got {min_baseline}");
        }
        if !z_score.is_finite() || z_score < 0.0 {
            bail!("anomaly.z_score must be at least 0, got {z_score}");
        }
        if self.min_count == 0 {
            bail!("anomaly.min_count must be at least 1");
        }
        if self.max_clusters == 0 {
            bail!("anomaly.max_clusters must be at least 1");
        }
        Ok(())
    }
}

/// One ticket as the detector sees it.
#[derive(Debug, Clone, Copy)]
pub struct TicketEvent<'a> {
    /// Unix ms.
    pub at_ms: i64,
    /// E.g. a conversation id.
    pub ticket_id: &'a str,
    pub account: Option<&'a str>,
    pub text: &'a str,
    /// Unit length; normalised again here anyway.
    pub embedding: &'a [f32],
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AlertExample {
    pub ticket_id: String,
    pub account: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Alert {
    /// `alert_<cluster id>_<raised_at>`.
    pub id: String,
    pub cluster: u64,
    /// Unix ms.
    pub raised_at: i64,
    /// Unix ms, the last time the alert's figures changed.
    pub updated_at: i64,
    /// False once the window count falls back below the firing threshold.
    pub active: bool,
    /// Tickets of this cluster in the window, latest.
    pub count: usize,
    pub peak_count: usize,
    /// Expected tickets per window from the baseline period, before the floor.
    pub baseline: f32,
    pub window_secs: u64,
    /// Distinct accounts in the window, sorted; refreshed at most once per bucket, and kept as they
    /// were once the alert clears.
    pub accounts: Vec<String>,
    /// Most recent first.
    pub examples: Vec<AlertExample>,
    /// Best first.
    pub terms: Vec<String>,
    /// One plain-English line.
    pub summary: String,
}

/// What one observation changed.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertChange {
    Raised(Alert),
    Updated(Alert),
    Cleared(Alert),
}

impl AlertChange {
    pub fn alert(&self) -> &Alert {
        let (AlertChange::Raised(alert) | AlertChange::Updated(alert) | AlertChange::Cleared(alert)) = self;
        alert
    }
}

#[derive(Debug)]
struct RecentTicket {
    ticket_id: String,
    account: Option<String>,
    text: String,
    at_ms: i64,
}

#[derive(Debug, Default)]
struct Bucket {
    tickets: usize,
    accounts: BTreeSet<String>,
}

#[derive(Debug)]
struct Cluster {
    id: u64,
    /// Sum of member embeddings in f64, so thousands of members do not drift the direction.
    sum: Vec<f64>,
    /// `sum` normalised, the vector candidates are compared with.
    centroid: Vec<f32>,
    last_seen_ms: i64,
    /// Bucket index -> tickets and accounts, only within the window + baseline horizon.
    buckets: BTreeMap<i64, Bucket>,
    recent: VecDeque<RecentTicket>,
    /// The bucket of the last Raised or Updated for this cluster's alert.
    emitted_bucket: Option<i64>,
}

impl Cluster {
    fn new(id: u64, dims: usize, at_ms: i64) -> Self {
        Self {
            id,
            sum: vec![0.0; dims],
            centroid: vec![0.0; dims],
            last_seen_ms: at_ms,
            buckets: BTreeMap::new(),
            recent: VecDeque::new(),
            emitted_bucket: None,
        }
    }

    fn record(&mut self, event: &TicketEvent<'_>, unit: &[f32], bucket: i64, horizon_start: i64) {
        for (sum, value) in self.sum.iter_mut().zip(unit) {
            *sum += f64::from(*value);
        }
        let norm = self.sum.iter().map(|x| x * x).sum::<f64>().sqrt();
        // Opposite members can cancel out; keep the old direction rather than divide by zero.
        if norm > f64::EPSILON {
            for (centroid, sum) in self.centroid.iter_mut().zip(&self.sum) {
                *centroid = (sum / norm) as f32;
            }
        }
        self.last_seen_ms = self.last_seen_ms.max(event.at_ms);

        let account = event.account.filter(|account| !account.is_empty());
        let slot = self.buckets.entry(bucket).or_default();
        slot.tickets += 1;
        if let Some(account) =
            account.filter(|account| slot.accounts.len() < MAX_ACCOUNTS_PER_BUCKET && !slot.accounts.contains(*account))
        {
            slot.accounts.insert(account.to_string());
        }
        // Also drops a late event that fell before the horizon right away.
        self.buckets = self.buckets.split_off(&horizon_start);

        self.recent.push_back(RecentTicket {
            ticket_id: event.ticket_id.to_string(),
            account: account.map(str::to_string),
            text: event.text.chars().take(MAX_TEXT_CHARS).collect(),
            at_ms: event.at_ms,
        });
        if self.recent.len() > RECENT_TICKETS {
            self.recent.pop_front();
        }
    }

    /// Distinct accounts from `bucket` on, sorted.
    fn accounts_since(&self, bucket: i64) -> Vec<String> {
        let accounts: BTreeSet<&str> =
            self.buckets.range(bucket..).flat_map(|(_, slot)| slot.accounts.iter().map(String::as_str)).collect();
        accounts.into_iter().map(str::to_string).collect()
    }

    fn examples(&self, since_ms: i64, limit: usize) -> Vec<AlertExample> {
        let mut recent: Vec<&RecentTicket> =
            self.recent.iter().rev().filter(|ticket| ticket.at_ms >= since_ms).collect();
        // Stable: among equal times the later arrival stays first.
        recent.sort_by_key(|ticket| Reverse(ticket.at_ms));
        recent
            .into_iter()
            .take(limit)
            .map(|ticket| AlertExample {
                ticket_id: ticket.ticket_id.clone(),
                account: ticket.account.clone(),
                text: ticket.text.clone(),
            })
            .collect()
    }
}

/// A cluster's figures for the current window.
struct WindowStats {
    count: usize,
    baseline: f32,
    start_bucket: i64,
    start_ms: i64,
}

/// The online detector. Not thread-safe by itself; the caller owns it behind a lock or a task.
#[derive(Debug)]
pub struct Detector {
    config: AnomalyConfig,
    bucket_ms: i64,
    window_buckets: i64,
    baseline_buckets: i64,
    /// Fixed by the first valid embedding.
    dims: Option<usize>,
    clusters: Vec<Cluster>,
    next_cluster_id: u64,
    /// The earliest event time seen.
    first_ms: Option<i64>,
    /// The latest event time seen; the detector's clock.
    now_ms: i64,
    global_docs: u64,
    global_df: HashMap<String, u64>,
    /// Oldest first.
    alerts: Vec<Alert>,
}

impl Detector {
    pub fn new(config: AnomalyConfig) -> Self {
        // Clamped so an unvalidated config cannot divide by zero.
        let bucket_secs = config.bucket_secs.max(1);
        Self {
            bucket_ms: secs_to_ms(bucket_secs),
            window_buckets: i64::try_from(config.window_secs / bucket_secs).unwrap_or(i64::MAX).max(1),
            baseline_buckets: i64::try_from(config.baseline_secs / bucket_secs).unwrap_or(i64::MAX),
            config,
            dims: None,
            clusters: Vec::new(),
            next_cluster_id: 1,
            first_ms: None,
            now_ms: i64::MIN,
            global_docs: 0,
            global_df: HashMap::new(),
            alerts: Vec::new(),
        }
    }

    pub fn config(&self) -> &AnomalyConfig {
        &self.config
    }

    /// Adds one ticket; returns the cluster id it joined and any alert change it caused. Cluster 0
    /// means the ticket was ignored (detector disabled, or a zero, non-finite or wrong-length
    /// embedding). At most one change comes back: a change for the joined cluster wins, and a
    /// quiet alert elsewhere is then cleared on a later call.
    pub fn observe(&mut self, event: &TicketEvent<'_>) -> (u64, Option<AlertChange>) {
        if !self.config.enabled {
            return (0, None);
        }
        if self.dims.is_some_and(|dims| dims != event.embedding.len()) {
            debug!(
                ticket = event.ticket_id,
                len = event.embedding.len(),
                "ignoring a ticket with a mismatched embedding length"
            );
            return (0, None);
        }
        let Some(unit) = unit_vector(event.embedding) else {
            debug!(ticket = event.ticket_id, "ignoring a ticket with a zero or non-finite embedding");
            return (0, None);
        };
        self.dims = Some(unit.len());
        self.now_ms = self.now_ms.max(event.at_ms);
        self.first_ms = Some(self.first_ms.map_or(event.at_ms, |first| first.min(event.at_ms)));
        self.count_document(distinct_terms(event.text));

        let index = self.assign(&unit, event.at_ms);
        let horizon_start = self.window_start_bucket().saturating_sub(self.baseline_buckets);
        let bucket = event.at_ms.div_euclid(self.bucket_ms);
        self.clusters[index].record(event, &unit, bucket, horizon_start);
        let cluster_id = self.clusters[index].id;
        let change = self.evaluate(index).or_else(|| self.clear_quiet_alert(cluster_id));
        (cluster_id, change)
    }

    /// Alerts raised so far, active and cleared, newest first.
    pub fn alerts(&self) -> Vec<Alert> {
        self.alerts.iter().rev().cloned().collect()
    }

    pub fn cluster_count(&self) -> usize {
        self.clusters.len()
    }

    /// Forgets the text of these tickets (an erased customer's conversations): their recent
    /// entries and their examples in alerts. Counts and centroids keep them, as numbers. Returns
    /// how many entries went.
    pub fn forget(&mut self, ticket_ids: &HashSet<&str>) -> usize {
        let mut removed = 0;
        for cluster in &mut self.clusters {
            let before = cluster.recent.len();
            cluster.recent.retain(|ticket| !ticket_ids.contains(ticket.ticket_id.as_str()));
            removed += before - cluster.recent.len();
        }
        for alert in &mut self.alerts {
            let before = alert.examples.len();
            alert.examples.retain(|example| !ticket_ids.contains(example.ticket_id.as_str()));
            removed += before - alert.examples.len();
        }
        removed
    }

    fn count_document(&mut self, terms: BTreeSet<String>) {
        self.global_docs += 1;
        for term in terms {
            if let Some(df) = self.global_df.get_mut(&term) {
                *df += 1;
            } else if self.global_df.len() < MAX_VOCABULARY {
                self.global_df.insert(term, 1);
            }
        }
    }

    /// The index of the cluster the embedding joins, creating one (and evicting) when none is close.
    fn assign(&mut self, unit: &[f32], at_ms: i64) -> usize {
        let best = self
            .clusters
            .iter()
            .enumerate()
            .map(|(index, cluster)| (index, dot(&cluster.centroid, unit)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((index, _)) = best.filter(|(_, similarity)| *similarity >= self.config.similarity) {
            return index;
        }
        self.evict_least_recent();
        let id = self.next_cluster_id;
        self.next_cluster_id += 1;
        self.clusters.push(Cluster::new(id, unit.len(), at_ms));
        self.clusters.len() - 1
    }

    /// Makes room for one more cluster. When every cluster has an active alert it grows past the
    /// cap instead, since losing an active alert's cluster would lose the alert.
    fn evict_least_recent(&mut self) {
        if self.clusters.len() < self.config.max_clusters.max(1) {
            return;
        }
        let active: BTreeSet<u64> =
            self.alerts.iter().filter(|alert| alert.active).map(|alert| alert.cluster).collect();
        let victim = self
            .clusters
            .iter()
            .enumerate()
            .filter(|(_, cluster)| !active.contains(&cluster.id))
            .min_by_key(|(_, cluster)| cluster.last_seen_ms)
            .map(|(index, _)| index);
        let Some(index) = victim else {
            return;
        };
        let evicted = self.clusters.swap_remove(index);
        debug!(cluster = evicted.id, "evicted the least recently seen cluster");
    }

    fn now_bucket(&self) -> i64 {
        self.now_ms.div_euclid(self.bucket_ms)
    }

    fn window_start_bucket(&self) -> i64 {
        self.now_bucket().saturating_sub(self.window_buckets - 1)
    }

    fn window_stats(&self, cluster: &Cluster) -> WindowStats {
        let window_start = self.window_start_bucket();
        let baseline_start = window_start.saturating_sub(self.baseline_buckets);
        let count: usize = cluster.buckets.range(window_start..).map(|(_, bucket)| bucket.tickets).sum();
        let baseline_tickets: usize =
            cluster.buckets.range(baseline_start..window_start).map(|(_, bucket)| bucket.tickets).sum();
        // Only the observed part of the baseline period counts, so a young detector's baseline is
        // not diluted by history it never saw.
        let first_bucket = self.first_ms.map_or(window_start, |first| first.div_euclid(self.bucket_ms));
        let observed_buckets = window_start.saturating_sub(baseline_start.max(first_bucket));
        let baseline = if observed_buckets > 0 {
            baseline_tickets as f32 * self.window_buckets as f32 / observed_buckets as f32
        } else {
            0.0
        };
        WindowStats {
            count,
            baseline,
            start_bucket: window_start,
            start_ms: window_start.saturating_mul(self.bucket_ms),
        }
    }

    /// The window count at or above which a cluster is spiking.
    fn count_threshold(&self, baseline: f32) -> f32 {
        let floored = baseline.max(self.config.min_baseline);
        (self.config.min_count as f32)
            .max(self.config.ratio * floored)
            .max(baseline + self.config.z_score * floored.sqrt())
    }

    fn warmed_up(&self) -> bool {
        self.first_ms.is_some_and(|first| self.now_ms.saturating_sub(first) >= secs_to_ms(self.config.min_history_secs))
    }

    fn active_alert_position(&self, cluster: u64) -> Option<usize> {
        self.alerts.iter().position(|alert| alert.active && alert.cluster == cluster)
    }

    fn evaluate(&mut self, index: usize) -> Option<AlertChange> {
        let stats = self.window_stats(&self.clusters[index]);
        let above = stats.count as f32 >= self.count_threshold(stats.baseline);
        match self.active_alert_position(self.clusters[index].id) {
            // Clearing looks at the count alone: fewer accounts mid-spike does not end it.
            Some(position) if self.quiet(&stats) => Some(self.clear(position, stats.count)),
            Some(position) => self.refresh(index, position, stats),
            None if above && self.warmed_up() => self.raise(index, stats),
            None => None,
        }
    }

    /// Well below the firing threshold: a count hovering around it does not raise and clear
    /// (and call the webhook) over and over.
    fn quiet(&self, stats: &WindowStats) -> bool {
        (stats.count as f32) < self.count_threshold(stats.baseline) * CLEAR_FRACTION
    }

    /// Moves the clock to `now_ms` without a ticket and clears every alert whose window went
    /// quiet: an outage that stops generating tickets still ends.
    pub fn tick(&mut self, now_ms: i64) -> Vec<AlertChange> {
        self.now_ms = self.now_ms.max(now_ms);
        std::iter::from_fn(|| self.clear_quiet_alert(0)).collect()
    }

    fn raise(&mut self, index: usize, stats: WindowStats) -> Option<AlertChange> {
        let cluster = &self.clusters[index];
        let accounts = cluster.accounts_since(stats.start_bucket);
        if accounts.len() < self.config.min_accounts {
            return None;
        }
        let terms = self.characteristic_terms(cluster);
        let alert = Alert {
            id: format!("alert_{}_{}", cluster.id, self.now_ms),
            cluster: cluster.id,
            raised_at: self.now_ms,
            updated_at: self.now_ms,
            active: true,
            count: stats.count,
            peak_count: stats.count,
            baseline: stats.baseline,
            window_secs: self.config.window_secs,
            summary: summary(stats.count, accounts.len(), stats.baseline, self.config.window_secs, &terms),
            accounts,
            examples: cluster.examples(stats.start_ms, self.config.examples),
            terms,
        };
        debug!(cluster = alert.cluster, count = alert.count, baseline = alert.baseline, "raised an anomaly alert");
        self.clusters[index].emitted_bucket = Some(self.now_bucket());
        self.push_alert(alert.clone());
        Some(AlertChange::Raised(alert))
    }

    /// Count and peak follow every ticket. Accounts, examples and terms are recomputed, and
    /// Updated returned, at most once per bucket, so a busy spike neither floods the caller nor
    /// pays for a full recount on every ticket.
    fn refresh(&mut self, index: usize, position: usize, stats: WindowStats) -> Option<AlertChange> {
        let now_bucket = self.now_bucket();
        let cluster = &self.clusters[index];
        let details = (cluster.emitted_bucket != Some(now_bucket)).then(|| {
            let accounts = cluster.accounts_since(stats.start_bucket);
            (accounts, cluster.examples(stats.start_ms, self.config.examples), self.characteristic_terms(cluster))
        });
        let emit = details.is_some();

        let alert = &mut self.alerts[position];
        if emit || alert.count != stats.count {
            alert.updated_at = self.now_ms;
        }
        alert.count = stats.count;
        alert.peak_count = alert.peak_count.max(stats.count);
        alert.baseline = stats.baseline;
        if let Some((accounts, examples, terms)) = details {
            alert.accounts = accounts;
            alert.examples = examples;
            alert.terms = terms;
        }
        alert.summary =
            summary(alert.count, alert.accounts.len(), alert.baseline, self.config.window_secs, &alert.terms);
        if !emit {
            return None;
        }
        let alert = alert.clone();
        self.clusters[index].emitted_bucket = Some(now_bucket);
        Some(AlertChange::Updated(alert))
    }

    /// Marks an alert inactive. Its accounts, examples, terms and summary stay as the record of
    /// the spike; only the count moves to the latest.
    fn clear(&mut self, position: usize, count: usize) -> AlertChange {
        let alert = &mut self.alerts[position];
        alert.active = false;
        alert.count = count;
        alert.updated_at = self.now_ms;
        debug!(cluster = alert.cluster, count, "cleared an anomaly alert");
        AlertChange::Cleared(alert.clone())
    }

    /// Clears the first active alert, other than the joined cluster's, whose window has gone quiet
    /// as time moved on. Active alerts are few, so the scan is cheap.
    fn clear_quiet_alert(&mut self, joined: u64) -> Option<AlertChange> {
        let quiet = self.alerts.iter().enumerate().find_map(|(position, alert)| {
            if !alert.active || alert.cluster == joined {
                return None;
            }
            let cluster = self.clusters.iter().find(|cluster| cluster.id == alert.cluster)?;
            let stats = self.window_stats(cluster);
            self.quiet(&stats).then_some((position, stats.count))
        });
        let (position, count) = quiet?;
        Some(self.clear(position, count))
    }

    fn push_alert(&mut self, alert: Alert) {
        self.alerts.push(alert);
        if self.alerts.len() <= MAX_ALERTS {
            return;
        }
        // The oldest cleared alert goes first; an active one only when every kept alert is active.
        let oldest = self.alerts.iter().position(|alert| !alert.active).unwrap_or(0);
        self.alerts.remove(oldest);
    }

    /// Terms frequent in the cluster's recent tickets and rare overall, best first.
    fn characteristic_terms(&self, cluster: &Cluster) -> Vec<String> {
        let docs = cluster.recent.len();
        if docs == 0 || self.config.terms == 0 {
            return Vec::new();
        }
        let mut cluster_df: HashMap<String, usize> = HashMap::new();
        for ticket in &cluster.recent {
            for term in distinct_terms(&ticket.text) {
                *cluster_df.entry(term).or_default() += 1;
            }
        }
        let min_df = if docs < TINY_CLUSTER { 1 } else { 2 };
        let total = self.global_docs as f64;
        let mut scored: Vec<(String, f64)> = cluster_df
            .into_iter()
            .filter(|(_, df)| *df >= min_df)
            .map(|(term, df)| {
                let global = self.global_df.get(&term).copied().unwrap_or(0) as f64;
                let score = df as f64 / docs as f64 * ((1.0 + total) / (1.0 + global)).ln();
                (term, score)
            })
            .filter(|(_, score)| *score > 0.0)
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        scored.into_iter().take(self.config.terms).map(|(term, _)| term).collect()
    }
}

fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// The embedding scaled to unit length, or None when it is empty, zero or not finite.
fn unit_vector(embedding: &[f32]) -> Option<Vec<f32>> {
    let norm = embedding.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm <= f32::EPSILON {
        return None;
    }
    Some(embedding.iter().map(|x| x / norm).collect())
}

/// Lowercase alphanumeric words of 3+ characters, not all digits, not stopwords.
fn distinct_terms(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| (3..=MAX_TERM_CHARS).contains(&word.chars().count()) && !word.chars().all(char::is_numeric))
        .map(str::to_lowercase)
        .filter(|word| !STOPWORDS.split_whitespace().any(|stopword| stopword == word.as_str()))
        .collect()
}

fn summary(count: usize, accounts: usize, baseline: f32, window_secs: u64, terms: &[String]) -> String {
    let window =
        if window_secs.is_multiple_of(60) { format!("{} min", window_secs / 60) } else { format!("{window_secs} s") };
    let noun = if accounts == 1 { "account" } else { "accounts" };
    let mut line =
        format!("{count} similar tickets in the last {window} from {accounts} {noun} (baseline {baseline:.1})");
    if !terms.is_empty() {
        line.push_str(": ");
        line.push_str(&terms[..terms.len().min(SUMMARY_TERMS)].join(", "));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIMS: usize = 32;
    const START_MS: i64 = 1_700_000_000_000;
    const HOUR_MS: f64 = 3_600_000.0;

    /// xorshift64: deterministic and dependency-free.
    struct Rng(u64);

    impl Rng {
        fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn uniform(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let u = 1.0 - self.uniform();
            let v = self.uniform();
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }
    }

    struct Ticket {
        at_ms: i64,
        id: String,
        account: Option<String>,
        text: String,
        embedding: Vec<f32>,
        spike: bool,
    }

    struct Outcome {
        spike_clusters: BTreeSet<u64>,
        changes: Vec<AlertChange>,
    }

    /// Orthogonal (Gram–Schmidt) so the tests do not hinge on two random topics overlapping.
    fn topic_centres(rng: &mut Rng, n: usize) -> Vec<Vec<f32>> {
        assert!(n <= DIMS);
        let mut centres: Vec<Vec<f64>> = Vec::new();
        while centres.len() < n {
            let mut v: Vec<f64> = (0..DIMS).map(|_| rng.normal()).collect();
            for centre in &centres {
                let projection: f64 = v.iter().zip(centre).map(|(a, b)| a * b).sum();
                for (x, c) in v.iter_mut().zip(centre) {
                    *x -= projection * c;
                }
            }
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 1e-6 {
                centres.push(v.iter().map(|x| x / norm).collect());
            }
        }
        centres.into_iter().map(|centre| centre.into_iter().map(|x| x as f32).collect()).collect()
    }

    /// Noise of 0.07 per dimension puts a member at a cosine of about 0.93 to its topic.
    fn member(rng: &mut Rng, centre: &[f32]) -> Vec<f32> {
        let v: Vec<f32> = centre.iter().map(|x| x + 0.07 * rng.normal() as f32).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / norm).collect()
    }

    fn ticket(hours: f64, embedding: Vec<f32>, account: String, text: String, spike: bool) -> Ticket {
        let at_ms = START_MS + (hours * HOUR_MS) as i64;
        Ticket { at_ms, id: format!("t{at_ms}"), account: Some(account), text, embedding, spike }
    }

    /// Each topic at a steady 1–4 tickets an hour with exponential gaps, from 200 accounts.
    fn normal_traffic(rng: &mut Rng, centres: &[Vec<f32>], from_hours: f64, to_hours: f64) -> Vec<Ticket> {
        let mut tickets = Vec::new();
        for (topic, centre) in centres.iter().enumerate() {
            let per_hour = 1.0 + (topic % 4) as f64;
            let mut hours = from_hours;
            loop {
                hours += -(1.0 - rng.uniform()).ln() / per_hour;
                if hours >= to_hours {
                    break;
                }
                let text = match rng.below(3) {
                    0 => format!("hello, widget{topic} settings for gizmo{topic} do not save, please help"),
                    1 => format!("thanks for the help, widget{topic} still shows the wrong gizmo{topic} value"),
                    _ => format!("question about widget{topic} and the account page"),
                };
                let account = format!("acct{}", rng.below(200));
                let embedding = member(rng, centre);
                tickets.push(ticket(hours, embedding, account, text, false));
            }
        }
        tickets
    }

    /// `count` tickets of one topic spread over 30 minutes from `accounts` accounts.
    fn spike(rng: &mut Rng, centre: &[f32], from_hours: f64, count: usize, accounts: usize) -> Vec<Ticket> {
        (0..count)
            .map(|k| {
                let hours = from_hours + 0.5 * rng.uniform();
                let text = match k % 4 {
                    0 => "CSV export fails with error 500 when I click export".to_string(),
                    1 => format!("export to csv fails again with error 500, report {k}"),
                    2 => "the export button gives error 500 and no csv file arrives".to_string(),
                    _ => "our nightly csv export fails every time with error 500".to_string(),
                };
                ticket(hours, member(rng, centre), format!("spike{}", k % accounts), text, true)
            })
            .collect()
    }

    fn feed(detector: &mut Detector, mut tickets: Vec<Ticket>) -> Outcome {
        tickets.sort_by_key(|ticket| ticket.at_ms);
        let mut outcome = Outcome { spike_clusters: BTreeSet::new(), changes: Vec::new() };
        for ticket in &tickets {
            let event = TicketEvent {
                at_ms: ticket.at_ms,
                ticket_id: &ticket.id,
                account: ticket.account.as_deref(),
                text: &ticket.text,
                embedding: &ticket.embedding,
            };
            let (cluster, change) = detector.observe(&event);
            if ticket.spike {
                outcome.spike_clusters.insert(cluster);
            }
            outcome.changes.extend(change);
        }
        outcome
    }

    fn raised(outcome: &Outcome) -> Vec<&Alert> {
        outcome
            .changes
            .iter()
            .filter_map(|change| match change {
                AlertChange::Raised(alert) => Some(alert),
                _ => None,
            })
            .collect()
    }

    /// Normal traffic of 20 topics for `hours`, plus 300 tickets of a 21st topic over 30 minutes.
    fn scenario(seed: u64, config: AnomalyConfig, hours: f64, spike_at: f64, accounts: usize) -> (Detector, Outcome) {
        let mut rng = Rng(seed);
        let centres = topic_centres(&mut rng, 21);
        let mut tickets = normal_traffic(&mut rng, &centres[..20], 0.0, hours);
        tickets.extend(spike(&mut rng, &centres[20], spike_at, 300, accounts));
        let mut detector = Detector::new(config);
        let outcome = feed(&mut detector, tickets);
        (detector, outcome)
    }

    #[test]
    fn normal_traffic_stays_quiet() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let centres = topic_centres(&mut rng, 20);
        let mut detector = Detector::new(AnomalyConfig::default());
        let outcome = feed(&mut detector, normal_traffic(&mut rng, &centres, 0.0, 48.0));
        let alerts = raised(&outcome);
        assert!(alerts.is_empty(), "unexpected alerts: {:?}", alerts.iter().map(|a| &a.summary).collect::<Vec<_>>());
        let clusters = detector.cluster_count();
        assert!((20..=60).contains(&clusters), "{clusters} clusters for 20 topics");
    }

    #[test]
    fn spike_raises_an_alert_for_its_cluster() {
        let config = AnomalyConfig::default();
        let (detector, outcome) = scenario(0x2545_f491_4f6c_dd1d, config.clone(), 31.0, 30.0, 25);

        let alerts = raised(&outcome);
        assert!(!alerts.is_empty(), "the spike raised no alert");
        for alert in &alerts {
            assert!(outcome.spike_clusters.contains(&alert.cluster), "alert for a normal topic: {}", alert.summary);
        }
        let alert = alerts[0];
        assert!(alert.active);
        assert!(alert.count >= config.min_count);
        assert!(alert.accounts.len() >= config.min_accounts);
        assert!(!alert.examples.is_empty() && alert.examples.len() <= config.examples);
        assert!(alert.examples.iter().all(|example| example.text.contains("export")), "{:?}", alert.examples);
        assert!(alert.terms.iter().any(|term| term == "export" || term == "csv"), "terms {:?}", alert.terms);
        assert!(alert.summary.contains("similar tickets in the last 60 min"), "{}", alert.summary);

        let latest = &detector.alerts()[0];
        assert!(outcome.spike_clusters.contains(&latest.cluster));
        assert!(latest.peak_count >= alert.count);

        // An erasure forgets the quoted tickets; the next examples come from the rest.
        let mut detector = detector;
        let erased: HashSet<&str> = latest.examples.iter().map(|example| example.ticket_id.as_str()).collect();
        assert!(detector.forget(&erased) >= erased.len());
        assert!(detector.alerts().iter().flat_map(|a| &a.examples).all(|e| !erased.contains(e.ticket_id.as_str())));
        let cluster = detector.clusters.iter().find(|c| c.id == latest.cluster).unwrap();
        let examples = cluster.examples(i64::MIN, config.examples);
        assert!(!examples.is_empty() && examples.iter().all(|e| !erased.contains(e.ticket_id.as_str())));
    }

    #[test]
    fn spike_from_one_account_stays_quiet() {
        let (_, outcome) = scenario(0xdead_beef_cafe_f00d, AnomalyConfig::default(), 4.0, 2.0, 1);
        assert!(raised(&outcome).is_empty());
    }

    #[test]
    fn warm_up_holds_alerts_back() {
        for (min_history_secs, fires) in [(3600, false), (0, true)] {
            let mut rng = Rng(0x1234_5678_9abc_def1);
            let centres = topic_centres(&mut rng, 1);
            let config = AnomalyConfig { min_history_secs, ..AnomalyConfig::default() };
            let outcome = feed(&mut Detector::new(config), spike(&mut rng, &centres[0], 0.0, 300, 25));
            assert_eq!(!raised(&outcome).is_empty(), fires, "min_history_secs = {min_history_secs}");
        }
    }

    #[test]
    fn alert_clears_once_the_spike_is_over() {
        let config = AnomalyConfig { min_history_secs: 0, ..AnomalyConfig::default() };
        let (detector, outcome) = scenario(0x0bad_c0de_1357_9bdf, config, 4.0, 0.0, 25);

        assert!(!raised(&outcome).is_empty());
        let spike_cleared = |change: &AlertChange| match change {
            AlertChange::Cleared(alert) => !alert.active && outcome.spike_clusters.contains(&alert.cluster),
            _ => false,
        };
        let cleared = outcome.changes.iter().any(spike_cleared);
        assert!(cleared, "the spike's alert never cleared");
        let alerts = detector.alerts();
        assert!(!alerts.is_empty() && alerts.iter().all(|alert| !alert.active));
    }

    #[test]
    fn an_alert_clears_on_a_clock_tick_when_no_ticket_follows() {
        let mut rng = Rng(0x7e57_7e57_0001);
        let centres = topic_centres(&mut rng, 1);
        let config = AnomalyConfig { min_history_secs: 0, ..AnomalyConfig::default() };
        let mut detector = Detector::new(config);
        let outcome = feed(&mut detector, spike(&mut rng, &centres[0], 0.0, 100, 25));
        assert!(!raised(&outcome).is_empty());
        let hours = |h: f64| START_MS + (h * 3_600_000.0) as i64;
        assert!(detector.tick(hours(0.6)).is_empty(), "the spike is still in the window");
        let cleared = detector.tick(hours(3.0));
        assert!(matches!(cleared.as_slice(), [AlertChange::Cleared(alert)] if !alert.active), "{cleared:?}");
        assert!(detector.alerts().iter().all(|alert| !alert.active));
    }

    #[test]
    fn bad_embeddings_are_ignored() {
        let mut detector = Detector::new(AnomalyConfig::default());
        let mut observe = |embedding: &[f32]| {
            detector.observe(&TicketEvent {
                at_ms: START_MS,
                ticket_id: "t1",
                account: Some("acme"),
                text: "login page broken",
                embedding,
            })
        };
        assert_eq!(observe(&[]), (0, None));
        assert_eq!(observe(&[0.0; 4]), (0, None));
        assert_eq!(observe(&[1.0, 0.0, 0.0, 0.0]).0, 1);
        assert_eq!(observe(&[1.0, 0.0, 0.0]), (0, None));
        assert_eq!(observe(&[0.0; 4]), (0, None));
        assert_eq!(observe(&[f32::NAN, 1.0, 0.0, 0.0]), (0, None));
        assert_eq!(observe(&[0.0, 2.0, 0.0, 0.0]).0, 2);
        assert_eq!(detector.cluster_count(), 2);
    }

    #[test]
    fn evicts_the_least_recently_seen_cluster() {
        let mut detector = Detector::new(AnomalyConfig { max_clusters: 2, ..AnomalyConfig::default() });
        let mut observe_axis = |at_ms: i64, axis: usize| {
            let mut embedding = [0.0; 4];
            embedding[axis] = 1.0;
            detector.observe(&TicketEvent { at_ms, ticket_id: "t", account: None, text: "", embedding: &embedding }).0
        };
        assert_eq!([observe_axis(1, 0), observe_axis(2, 1), observe_axis(3, 0)], [1, 2, 1]);
        // Cluster 2 was seen least recently, so it makes room for cluster 3, and cluster 1 survives.
        assert_eq!([observe_axis(4, 2), observe_axis(5, 0), observe_axis(6, 1)], [3, 1, 4]);
        assert_eq!(detector.cluster_count(), 2);
    }

    #[test]
    fn validate_names_the_bad_key() {
        assert!(AnomalyConfig::default().validate().is_ok());
        let bad = AnomalyConfig { similarity: 1.5, ..AnomalyConfig::default() };
        let error = bad.validate().expect_err("similarity 1.5").to_string();
        assert_eq!(error, "anomaly.similarity must be in (0, 1], got 1.5");
        let cases = [
            (AnomalyConfig { bucket_secs: 0, ..AnomalyConfig::default() }, "anomaly.bucket_secs"),
            (AnomalyConfig { window_secs: 1000, ..AnomalyConfig::default() }, "anomaly.window_secs"),
            (AnomalyConfig { baseline_secs: 1000, ..AnomalyConfig::default() }, "anomaly.baseline_secs"),
            (AnomalyConfig { ratio: 0.5, ..AnomalyConfig::default() }, "anomaly.ratio"),
            (AnomalyConfig { min_count: 0, ..AnomalyConfig::default() }, "anomaly.min_count"),
            (AnomalyConfig { max_clusters: 0, ..AnomalyConfig::default() }, "anomaly.max_clusters"),
        ];
        for (config, key) in cases {
            let error = config.validate().expect_err(key).to_string();
            assert!(error.starts_with(key), "{error}");
        }
        let parsed: AnomalyConfig = serde_json::from_str(r#"{"min_count": 20}"#).expect("partial section");
        assert_eq!(parsed, AnomalyConfig { min_count: 20, ..AnomalyConfig::default() });
        assert!(serde_json::from_str::<AnomalyConfig>(r#"{"minimum": 1}"#).is_err());
    }
}
