//! Alerting around the anomaly detector: every new ticket goes through it, alert changes are
//! stored (so `GET /v1/alerts` survives restarts), logged, and POSTed to an optional webhook with
//! retries. After a restart the detector is rebuilt from the stored tickets of its horizon.

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::Duration;
use tierline_infer::sync::MutexExt;

use super::anomaly::{Alert, AlertChange, AnomalyConfig, Detector, TicketEvent};
use crate::storage::Store;

/// Alerts waiting for the webhook beyond this are dropped (and logged): a dead receiver must not
/// grow memory.
const WEBHOOK_QUEUE: usize = 256;

pub struct Alerting {
    detector: Mutex<Detector>,
    webhook: Option<SyncSender<Alert>>,
}

/// A ticket to observe (the first customer message of a conversation, or a triaged ticket).
pub struct Ticket<'a> {
    pub id: &'a str,
    pub account: Option<&'a str>,
    pub text: &'a str,
    pub embedding: &'a [f32],
    pub at_ms: i64,
}

impl Alerting {
    /// `webhook_url` empty: no webhook.
    pub fn new(config: AnomalyConfig, webhook_url: &str, attempts: u32) -> Self {
        let webhook = (!webhook_url.is_empty()).then(|| spawn_webhook(webhook_url.to_string(), attempts));
        Self { detector: Mutex::new(Detector::new(config)), webhook }
    }

    pub fn enabled(&self) -> bool {
        self.detector().config().enabled
    }

    fn detector(&self) -> std::sync::MutexGuard<'_, Detector> {
        self.detector.lock_unpoisoned()
    }

    /// Rebuilds the detector from the stored tickets of its horizon. Alerts stored as active by
    /// the previous run are closed first; a spike still under way is raised (and stored) again
    /// by the replay, without calling the webhook a second time. Blocking.
    pub fn replay(&self, store: &Store) -> anyhow::Result<usize> {
        if !self.enabled() {
            return Ok(0);
        }
        let mut detector = self.detector();
        let config = detector.config().clone();
        let horizon = (config.window_secs + config.baseline_secs) as i64 * 1000;
        let tickets = store.tickets_since(crate::storage::now_ms() - horizon)?;
        store.close_active_alerts()?;
        for ticket in &tickets {
            let (_, change) = detector.observe(&TicketEvent {
                at_ms: ticket.created_at,
                ticket_id: &ticket.conversation_id,
                account: ticket.account_id.as_deref(),
                text: &ticket.text,
                embedding: &ticket.embedding,
            });
            if let Some(change) = change {
                save(store, &change)?;
            }
        }
        for change in detector.tick(crate::storage::now_ms()) {
            save(store, &change)?;
        }
        Ok(tickets.len())
    }

    /// Observes one ticket; a raised, updated or cleared alert is stored, and a raised one is
    /// logged and sent to the webhook. Blocking (a database write when an alert changes).
    pub fn observe(&self, store: &Store, ticket: &Ticket<'_>) -> anyhow::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        // The write happens under the detector's lock, so stored alerts change in the detector's order.
        let mut detector = self.detector();
        let (_, change) = detector.observe(&TicketEvent {
            at_ms: ticket.at_ms,
            ticket_id: ticket.id,
            account: ticket.account,
            text: ticket.text,
            embedding: ticket.embedding,
        });
        let Some(change) = change else { return Ok(()) };
        save(store, &change)?;
        drop(detector);
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
            self.send(alert);
        }
        Ok(())
    }

    /// Advances the detector's clock to now, clearing alerts whose spike has ended even when no
    /// ticket arrives. Blocking.
    pub fn tick(&self, store: &Store) -> anyhow::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        let mut detector = self.detector();
        for change in detector.tick(crate::storage::now_ms()) {
            save(store, &change)?;
            if let AlertChange::Cleared(alert) = change {
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

fn save(store: &Store, change: &AlertChange) -> anyhow::Result<()> {
    let (AlertChange::Raised(alert) | AlertChange::Updated(alert) | AlertChange::Cleared(alert)) = change;
    store.save_alert(&alert.id, alert.raised_at, alert.updated_at, alert.active, &serde_json::to_value(alert)?)
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
