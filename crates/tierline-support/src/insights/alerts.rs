//! Alerting around the anomaly detector. The detector reads the stored tickets (each
//! conversation's first customer message) in the order they were committed, so it sees every
//! ticket once whichever path stored it. Alert changes are stored (so `GET /v1/alerts` survives
//! restarts), logged, and POSTed to an optional webhook with retries. After a restart the
//! detector is rebuilt from the stored tickets of its horizon.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tierline_infer::sync::MutexExt;

use super::anomaly::{Alert, AlertChange, AnomalyConfig, Detector, TicketEvent};
use crate::clock::now_ms;
use crate::conversation::{Event, Events};
use crate::store::{Leadership, Store, StoreResult, StoredTicket};

/// Alerts waiting for the webhook beyond this are dropped (and logged): a dead receiver must not
/// grow memory.
const WEBHOOK_QUEUE: usize = 256;

/// Tickets read from the store per round trip while catching up.
const TICKETS_PER_READ: usize = 500;

pub struct Alerting {
    store: Arc<dyn Store>,
    /// The detector and what it has seen. An async lock: one catch-up at a time, so tickets are
    /// observed once, in order.
    state: tokio::sync::Mutex<Watch>,
    webhook: Option<SyncSender<Alert>>,
    config: AnomalyConfig,
    events: Events,
    /// Spike detection runs on one node at a time (one alert per spike, one webhook call).
    leadership: tokio::sync::Mutex<Option<Leadership>>,
    leading: AtomicBool,
}

struct Watch {
    detector: Arc<Mutex<Detector>>,
    /// Creation time of the newest ticket seen.
    newest: i64,
    /// Message ids of the tickets seen in the last `OVERLAP_MS` before `newest` (on a shared
    /// store, ids are not committed in order: a short overlap is read again and deduplicated).
    seen: HashMap<i64, i64>,
}

/// How far back each look reads again, for tickets committed late by another node.
const OVERLAP_MS: i64 = 10_000;

impl Watch {
    fn new(config: &AnomalyConfig) -> Self {
        Self { detector: Arc::new(Mutex::new(Detector::new(config.clone()))), newest: 0, seen: HashMap::new() }
    }
}

impl Alerting {
    /// `webhook_url` empty: no webhook.
    pub fn new(store: Arc<dyn Store>, config: AnomalyConfig, webhook_url: &str, attempts: u32, events: Events) -> Self {
        let webhook = (!webhook_url.is_empty()).then(|| spawn_webhook(webhook_url.to_string(), attempts));
        let watch = Watch::new(&config);
        Self {
            store,
            state: tokio::sync::Mutex::new(watch),
            webhook,
            config,
            events,
            leadership: tokio::sync::Mutex::new(None),
            leading: AtomicBool::new(false),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Whether this node runs spike detection now.
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Keeps or takes the lead of spike detection; on taking it, rebuilds the detector from the
    /// stored tickets. Returns whether this node leads.
    pub async fn lead(&self) -> StoreResult<bool> {
        if !self.enabled() {
            return Ok(false);
        }
        let mut leadership = self.leadership.lock().await;
        if let Some(held) = leadership.as_ref() {
            if held.still_held().await {
                return Ok(true);
            }
            tracing::warn!("lost the lead of spike detection");
            *leadership = None;
            self.leading.store(false, Ordering::SeqCst);
        }
        let Some(won) = self.store.try_lead("spikes").await? else { return Ok(false) };
        *leadership = Some(won);
        let tickets = self.replay().await?;
        self.leading.store(true, Ordering::SeqCst);
        tracing::info!(tickets, "leading spike detection (rebuilt from the stored tickets)");
        Ok(true)
    }

    /// Rebuilds the detector from the stored tickets of its horizon. Alerts stored as active by
    /// the previous leader are closed first; a spike still under way is raised (and stored)
    /// again by the replay, without calling the webhook a second time.
    async fn replay(&self) -> StoreResult<usize> {
        let mut watch = self.state.lock().await;
        *watch = Watch::new(&self.config);
        self.store.close_active_alerts().await?;
        let seen = self.read_new(&mut watch, false).await?;
        self.tick_locked(&watch, false).await?;
        Ok(seen)
    }

    /// Observes every ticket stored since the last look (this node leads spike detection); a
    /// raised, updated or cleared alert is stored, and a raised one is logged, sent to the
    /// webhook and to live screens. Returns how many were seen.
    pub async fn catch_up(&self) -> StoreResult<usize> {
        if !self.leading() {
            return Ok(0);
        }
        let mut watch = self.state.lock().await;
        self.read_new(&mut watch, true).await
    }

    async fn read_new(&self, watch: &mut Watch, announce: bool) -> StoreResult<usize> {
        let horizon = now_ms() - (self.config.window_secs + self.config.baseline_secs) as i64 * 1000;
        let since = horizon.max(watch.newest - OVERLAP_MS);
        let mut after = 0;
        let mut seen = 0;
        loop {
            let tickets = self.store.tickets(since, after, TICKETS_PER_READ).await?;
            let Some(last) = tickets.last() else { break };
            after = last.message_id;
            let fresh: Vec<StoredTicket> =
                tickets.into_iter().filter(|t| !watch.seen.contains_key(&t.message_id)).collect();
            for ticket in &fresh {
                watch.seen.insert(ticket.message_id, ticket.created_at);
                watch.newest = watch.newest.max(ticket.created_at);
            }
            seen += fresh.len();
            // Stored in the detector's order, under the watch lock.
            for change in observe_all(&watch.detector, fresh).await? {
                let change = self.without_erased(watch, change).await?;
                self.store.save_alert(change.alert()).await?;
                if let (true, AlertChange::Raised(alert)) = (announce, change) {
                    tracing::warn!(
                        alert = %alert.id,
                        count = alert.count,
                        baseline = alert.baseline,
                        accounts = alert.accounts.len(),
                        terms = %alert.terms.join(", "),
                        summary = %alert.summary,
                        "anomaly alert raised"
                    );
                    self.events.publish(Event::Alert {
                        id: alert.id.clone(),
                        summary: alert.summary.clone(),
                        count: alert.count,
                    });
                    self.send(alert);
                }
            }
        }
        let keep_from = watch.newest - OVERLAP_MS;
        watch.seen.retain(|_, created| *created >= keep_from);
        Ok(seen)
    }

    /// Advances the detector's clock to now, clearing alerts whose spike has ended even when no
    /// ticket arrives.
    pub async fn tick(&self) -> StoreResult<()> {
        if !self.leading() {
            return Ok(());
        }
        let watch = self.state.lock().await;
        self.tick_locked(&watch, true).await
    }

    async fn tick_locked(&self, watch: &Watch, log: bool) -> StoreResult<()> {
        let changes = watch.detector.lock_unpoisoned().tick(now_ms());
        for change in changes {
            let change = self.without_erased(watch, change).await?;
            self.store.save_alert(change.alert()).await?;
            if let (true, AlertChange::Cleared(alert)) = (log, &change) {
                tracing::info!(alert = %alert.id, count = alert.count, "anomaly alert cleared");
            }
        }
        Ok(())
    }

    /// Forgets the text of these conversations' tickets (an erasure on this node); how many
    /// entries went.
    pub async fn forget(&self, conversation_ids: &[String]) -> usize {
        let ids: HashSet<&str> = conversation_ids.iter().map(String::as_str).collect();
        let watch = self.state.lock().await;
        let removed = watch.detector.lock_unpoisoned().forget(&ids);
        removed
    }

    /// The change without examples whose conversation is gone (erased, perhaps through another
    /// node, since the detector read it), which the detector then forgets: an alert never writes
    /// erased text back.
    async fn without_erased(&self, watch: &Watch, mut change: AlertChange) -> StoreResult<AlertChange> {
        let (AlertChange::Raised(alert) | AlertChange::Updated(alert) | AlertChange::Cleared(alert)) = &mut change;
        let mut gone = Vec::new();
        for example in &alert.examples {
            if self.store.conversation(&example.ticket_id).await?.is_none() {
                gone.push(example.ticket_id.clone());
            }
        }
        if gone.is_empty() {
            return Ok(change);
        }
        alert.examples.retain(|example| !gone.contains(&example.ticket_id));
        let ids: HashSet<&str> = gone.iter().map(String::as_str).collect();
        watch.detector.lock_unpoisoned().forget(&ids);
        Ok(change)
    }

    fn send(&self, alert: Alert) {
        let Some(webhook) = &self.webhook else { return };
        match webhook.try_send(alert) {
            Ok(()) => {}
            Err(TrySendError::Full(alert)) => {
                tracing::warn!(alert = %alert.id, "webhook queue full; alert not sent (it is stored)")
            }
            Err(TrySendError::Disconnected(alert)) => {
                tracing::warn!(alert = %alert.id, "webhook sender stopped; alert not sent (it is stored)")
            }
        }
    }
}

/// Runs the detector over `tickets` on a blocking thread (clustering is CPU work).
async fn observe_all(detector: &Arc<Mutex<Detector>>, tickets: Vec<StoredTicket>) -> StoreResult<Vec<AlertChange>> {
    let detector = detector.clone();
    let changes = tokio::task::spawn_blocking(move || {
        let mut detector = detector.lock_unpoisoned();
        tickets
            .iter()
            .filter_map(|ticket| {
                let event = TicketEvent {
                    at_ms: ticket.created_at,
                    ticket_id: &ticket.conversation_id,
                    account: ticket.account_id.as_deref(),
                    text: &ticket.text,
                    embedding: &ticket.embedding,
                };
                detector.observe(&event).1
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|err| anyhow::anyhow!("anomaly detection task failed: {err}"))?;
    Ok(changes)
}

/// One thread POSTs alerts in order, retrying with exponential backoff.
fn spawn_webhook(url: String, attempts: u32) -> SyncSender<Alert> {
    let (sender, receiver) = mpsc::sync_channel::<Alert>(WEBHOOK_QUEUE);
    let spawned = std::thread::Builder::new().name("tierline-webhook".into()).spawn(move || {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().into();
        for alert in receiver {
            deliver(&agent, &url, &alert, attempts);
        }
    });
    if let Err(err) = spawned {
        tracing::error!(%err, "cannot start the webhook thread; alerts are stored and logged only");
    }
    sender
}

fn deliver(agent: &ureq::Agent, url: &str, alert: &Alert, attempts: u32) {
    let mut backoff = Duration::from_secs(1);
    for attempt in 1..=attempts {
        match agent.post(url).send_json(alert) {
            Ok(_) => {
                tracing::info!(alert = %alert.id, attempt, "alert sent to the webhook");
                return;
            }
            Err(err) if attempt < attempts => {
                tracing::warn!(alert = %alert.id, attempt, error = %err, backoff_secs = backoff.as_secs(), "webhook failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
            Err(err) => {
                tracing::error!(alert = %alert.id, attempts, %err, "webhook failed; giving up (the alert is stored)")
            }
        }
    }
}
