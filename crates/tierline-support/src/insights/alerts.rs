//! Alerting around the anomaly detector. The detector reads the stored tickets (each
//! conversation's first customer message) in the order they were committed, so it sees every
//! ticket once whichever path stored it. Alert changes are stored (so `GET /v1/alerts` survives
//! restarts), logged, and POSTed to an optional webhook with retries. After a restart the
//! detector is rebuilt from the stored tickets of its horizon.

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tierline_infer::sync::MutexExt;

use super::anomaly::{Alert, AlertChange, AnomalyConfig, Detector, TicketEvent};
use crate::clock::now_ms;
use crate::conversation::{Event, Events};
use crate::store::{Store, StoreResult, StoredTicket};

/// Alerts waiting for the webhook beyond this are dropped (and logged): a dead receiver must not
/// grow memory.
const WEBHOOK_QUEUE: usize = 256;

/// Tickets read from the store per round trip while catching up.
const TICKETS_PER_READ: usize = 500;

pub struct Alerting {
    store: Arc<dyn Store>,
    /// The detector and the id of the last ticket it saw. An async lock: one catch-up at a time,
    /// so tickets are observed once, in commit order.
    state: tokio::sync::Mutex<Watch>,
    webhook: Option<SyncSender<Alert>>,
    enabled: bool,
    events: Events,
}

struct Watch {
    detector: Arc<Mutex<Detector>>,
    last_ticket: i64,
}

impl Alerting {
    /// `webhook_url` empty: no webhook.
    pub fn new(store: Arc<dyn Store>, config: AnomalyConfig, webhook_url: &str, attempts: u32, events: Events) -> Self {
        let webhook = (!webhook_url.is_empty()).then(|| spawn_webhook(webhook_url.to_string(), attempts));
        let enabled = config.enabled;
        let watch = Watch { detector: Arc::new(Mutex::new(Detector::new(config))), last_ticket: 0 };
        Self { store, state: tokio::sync::Mutex::new(watch), webhook, enabled, events }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Rebuilds the detector from the stored tickets of its horizon. Alerts stored as active by
    /// the previous run are closed first; a spike still under way is raised (and stored) again
    /// by the replay, without calling the webhook a second time.
    pub async fn replay(&self) -> StoreResult<usize> {
        if !self.enabled {
            return Ok(0);
        }
        let mut watch = self.state.lock().await;
        let config = watch.detector.lock_unpoisoned().config().clone();
        let horizon = (config.window_secs + config.baseline_secs) as i64 * 1000;
        self.store.close_active_alerts().await?;
        let since = now_ms() - horizon;
        let mut seen = 0;
        loop {
            let tickets = self.store.tickets(since, watch.last_ticket, TICKETS_PER_READ).await?;
            let Some(last) = tickets.last() else { break };
            watch.last_ticket = last.message_id;
            seen += tickets.len();
            for change in observe_all(&watch.detector, tickets).await? {
                self.store.save_alert(change.alert()).await?;
            }
        }
        self.tick_locked(&watch, false).await?;
        Ok(seen)
    }

    /// Observes every ticket stored since the last look; a raised, updated or cleared alert is
    /// stored, and a raised one is logged and sent to the webhook. Returns how many were seen.
    pub async fn catch_up(&self) -> StoreResult<usize> {
        if !self.enabled {
            return Ok(0);
        }
        let mut watch = self.state.lock().await;
        let config = watch.detector.lock_unpoisoned().config().clone();
        let since = now_ms() - (config.window_secs + config.baseline_secs) as i64 * 1000;
        let mut seen = 0;
        loop {
            let tickets = self.store.tickets(since, watch.last_ticket, TICKETS_PER_READ).await?;
            let Some(last) = tickets.last() else { break };
            watch.last_ticket = last.message_id;
            seen += tickets.len();
            // Stored in the detector's order, under the watch lock.
            for change in observe_all(&watch.detector, tickets).await? {
                self.store.save_alert(change.alert()).await?;
                if let AlertChange::Raised(alert) = change {
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
        Ok(seen)
    }

    /// Advances the detector's clock to now, clearing alerts whose spike has ended even when no
    /// ticket arrives.
    pub async fn tick(&self) -> StoreResult<()> {
        if !self.enabled {
            return Ok(());
        }
        let watch = self.state.lock().await;
        self.tick_locked(&watch, true).await
    }

    async fn tick_locked(&self, watch: &Watch, log: bool) -> StoreResult<()> {
        let changes = watch.detector.lock_unpoisoned().tick(now_ms());
        for change in changes {
            self.store.save_alert(change.alert()).await?;
            if let (true, AlertChange::Cleared(alert)) = (log, &change) {
                tracing::info!(alert = %alert.id, count = alert.count, "anomaly alert cleared");
            }
        }
        Ok(())
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
