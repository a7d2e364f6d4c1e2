//! Conversations: the AI side of a support chat with escalation discipline. A customer message
//! goes through `turn` (an explicit state machine: with the AI, with a person, or resolved and
//! coming back); `replies` holds every customer-facing sentence; `resolution` closes a
//! conversation, learns from it and turns an approved answer into an article. Everything is
//! stored before the caller gets an answer.

pub mod calibration;
pub mod erasure;
pub mod events;
pub mod handoff;
pub mod metrics;
mod replies;
mod resolution;
mod turn;

use crate::privacy::Redactor;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tierline_infer::classify::{Classifier, TextClassification};
use tierline_infer::sync::RwLockExt;
use tierline_infer::EngineError;

pub use events::{Event, Events};
pub use resolution::{Resolution, Resolved, ResolvedBy, MAX_TOPIC_CHARS};

use crate::clock::{new_id, now_ms};
use crate::insights::alerts::Alerting;
use crate::insights::anomaly::Alert;
use crate::insights::health::{self, AccountHealth};
use crate::kb::KnowledgeBase;
use crate::store::{
    Change, ConversationRow, FeedbackFilter, FeedbackRow, FeedbackStatus, MessageRow, NewMessage, Status, Store,
    StoreError,
};
use crate::triage::{AccountContext, AccountStanding, Decision, Policy, ReasonCode, Tier};

/// What the service needs from the models: the classifier and, when configured, the KB.
#[derive(Clone, Copy)]
pub struct Models<'a> {
    pub classifier: &'a Classifier,
    pub kb: Option<&'a Arc<KnowledgeBase>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    /// What was not found, in words.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A field the caller sent breaks a rule only the domain knows (an unknown queue...).
    #[error("{message}")]
    Invalid { field: &'static str, message: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

impl SupportError {
    /// A knowledge-base failure: engine errors keep their kind (429/503), the rest are internal.
    fn from_kb(err: anyhow::Error) -> Self {
        match err.downcast::<EngineError>() {
            Ok(engine) => SupportError::Engine(engine),
            Err(other) => SupportError::Internal(other),
        }
    }
}

/// The AI's reply to the customer (also stored in the transcript).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reply {
    pub text: String,
    pub ai_generated: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub citations: Vec<crate::kb::Citation>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Turn {
    pub conversation_id: String,
    pub status: Status,
    /// `true` when this message handed the conversation to a person.
    pub handoff: bool,
    pub reply: Option<Reply>,
    pub decision: Decision,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversationView {
    #[serde(flatten)]
    pub conversation: ConversationRow,
    pub messages: Vec<MessageRow>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Waiting {
    pub conversation_id: String,
    pub tier: Option<Tier>,
    pub reason: Option<ReasonCode>,
    pub escalated_at: i64,
    pub wait_secs: f64,
    pub account: AccountContext,
    pub last_customer_message: Option<String>,
}

/// A ticket for stateless triage.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ticket {
    #[serde(default)]
    pub subject: Option<String>,
    pub body: String,
    #[serde(default)]
    pub account: AccountContext,
}

impl Ticket {
    pub fn text(&self) -> String {
        match self.subject.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(subject) => format!("{subject}\n{}", self.body),
            None => self.body.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TicketTriage {
    #[serde(flatten)]
    pub classification: TextClassification,
    pub decision: Decision,
    /// For `auto`: the answer with its citations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<crate::kb::Answer>,
    /// For `assist` and `human`: a draft reply for the person who answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
}

/// How often a node checks (or takes) the lead of spike detection and reads other nodes' tickets.
const SPIKE_POLL: Duration = Duration::from_secs(2);

/// Conversations past the time limit handed over per sweep (the next sweep takes the rest).
const SWEEP_BATCH: usize = 500;

/// A queue as agents see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueSummary {
    pub queue: String,
    pub waiting: usize,
    pub oldest_wait_secs: f64,
    /// The policy's time-to-human target for this queue.
    pub target_secs: u64,
}

/// A conversation opened from a customer's browser, with the token that opens it (and only it).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChatStarted {
    pub conversation_id: String,
    /// `ct_...`: shown once; only its hash is stored.
    pub token: String,
}

pub struct Support {
    store: Arc<dyn Store>,
    alerting: Arc<Alerting>,
    policy: RwLock<Arc<Policy>>,
    policy_path: PathBuf,
    events: Events,
    redactor: Redactor,
    retention_days: u32,
}

impl Support {
    pub fn new(
        store: Arc<dyn Store>,
        policy_path: PathBuf,
        alerting: Alerting,
        events: Events,
    ) -> anyhow::Result<Self> {
        let policy = Policy::load(&policy_path)?;
        let (redactor, retention_days) = (Redactor::default(), 0);
        let policy = RwLock::new(Arc::new(policy));
        Ok(Self { store, alerting: Arc::new(alerting), policy, policy_path, events, redactor, retention_days })
    }

    /// What is redacted before storing, and how long conversations are kept.
    pub fn with_privacy(mut self, privacy: &crate::settings::PrivacyConfig) -> Self {
        self.redactor = Redactor::new(&privacy.redact);
        self.retention_days = privacy.retention_days;
        self
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// What happens in conversations, for live screens.
    pub fn events(&self) -> &Events {
        &self.events
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read_unpoisoned().clone()
    }

    /// Re-reads the policy file; on error the current policy stays in force. Blocking (file read).
    pub fn reload_policy(&self) -> anyhow::Result<Arc<Policy>> {
        let policy = Arc::new(Policy::load(&self.policy_path)?);
        *self.policy.write_unpoisoned() = policy.clone();
        tracing::info!(path = %self.policy_path.display(), "policy reloaded");
        Ok(policy)
    }

    pub async fn create(
        &self,
        customer: serde_json::Value,
        account: &AccountContext,
    ) -> Result<ConversationRow, SupportError> {
        Ok(self.store.create_conversation(&new_id("conv"), &customer, account, None).await?)
    }

    /// A conversation for a customer's browser, and its token.
    pub async fn start_chat(
        &self,
        customer: serde_json::Value,
        account: &AccountContext,
    ) -> Result<ChatStarted, SupportError> {
        let token = format!("ct_{}", crate::clock::random_hex(32)?);
        let hash = crate::access::hash(&token);
        let row = self.store.create_conversation(&new_id("conv"), &customer, account, Some(&hash)).await?;
        Ok(ChatStarted { conversation_id: row.id, token })
    }

    /// The conversation a customer token opens, if any.
    pub async fn conversation_for_token(&self, token: &str) -> Result<Option<String>, SupportError> {
        Ok(self.store.conversation_by_token(&crate::access::hash(token)).await?)
    }

    /// The customer pressed "talk to a person": hand over now, whatever the models say (this
    /// needs none of them). Asking again while a person owns it changes nothing.
    pub async fn escalate(&self, id: &str) -> Result<Turn, SupportError> {
        let _turn = self.store.lock_conversation(id).await?;
        let (conversation, _) = self.load(id).await?;
        let policy = self.policy();
        let queue = conversation.queue.clone().unwrap_or_else(|| policy.default_queue.clone());
        let reason = crate::triage::Reason::new(
            ReasonCode::HumanRequested,
            "the customer pressed \"Talk to a person\"",
            Some(1.0),
        );
        let decision = Decision {
            tier: Tier::Human,
            queue: queue.clone(),
            confidence: 1.0,
            reasons: vec![reason],
            signals: Vec::new(),
            language: None,
            kind: None,
        };
        let reply = Reply { text: replies::handoff(&decision), ai_generated: true, citations: Vec::new() };
        if conversation.status.with_person() {
            return Ok(Turn {
                conversation_id: id.to_string(),
                status: conversation.status,
                handoff: false,
                reply: Some(reply),
                decision,
            });
        }
        let reopened = conversation.status == Status::Resolved;
        let change = Change {
            status: Some(Status::Waiting),
            tier: Some(Tier::Human),
            queue: Some(queue.clone()),
            escalated: Some(ReasonCode::HumanRequested),
            reopened,
            restart_escalation: reopened,
            ..Default::default()
        };
        let note = NewMessage::system("The customer asked for a person.".into(), ReasonCode::HumanRequested);
        let ai = NewMessage::ai(reply.text.clone(), crate::store::AiReply { citations: Vec::new(), handoff: true });
        self.store.record(id, vec![note, ai], change).await?;
        self.events.publish(Event::Handoff {
            conversation_id: id.into(),
            queue,
            reason: ReasonCode::HumanRequested,
            at: now_ms(),
        });
        tracing::info!(conversation = id, "handed off: the customer pressed the button");
        Ok(Turn {
            conversation_id: id.to_string(),
            status: Status::Waiting,
            handoff: true,
            reply: Some(reply),
            decision,
        })
    }

    /// The customer's own rating of a resolved conversation (1-5), kept as its CSAT.
    pub async fn rate(&self, id: &str, csat: u8) -> Result<ConversationRow, SupportError> {
        if !(1..=5).contains(&csat) {
            return Err(SupportError::Invalid { field: "csat", message: "`csat` must be between 1 and 5".into() });
        }
        let _turn = self.store.lock_conversation(id).await?;
        let (conversation, _) = self.load(id).await?;
        if conversation.status != Status::Resolved {
            return Err(SupportError::Conflict(format!("conversation `{id}` is not resolved yet; rate it once it is")));
        }
        self.store.record(id, Vec::new(), Change { csat: Some(csat), ..Default::default() }).await?;
        Ok(self.load(id).await?.0)
    }

    /// Every queue of the policy, with how many wait and for how long.
    pub async fn queue_summaries(&self) -> Result<Vec<QueueSummary>, SupportError> {
        let policy = self.policy();
        let counts = self.store.waiting_counts().await?;
        let now = now_ms();
        Ok(policy
            .queues
            .iter()
            .map(|queue| {
                let count = counts.iter().find(|c| &c.queue == queue);
                QueueSummary {
                    queue: queue.clone(),
                    waiting: count.map_or(0, |c| c.waiting),
                    oldest_wait_secs: count.map_or(0.0, |c| (now - c.oldest_escalated_at).max(0) as f64 / 1000.0),
                    target_secs: policy.queue_target(queue),
                }
            })
            .collect())
    }

    pub async fn view(&self, id: &str) -> Result<ConversationView, SupportError> {
        let (conversation, messages) = self.load(id).await?;
        Ok(ConversationView { conversation, messages })
    }

    async fn load(&self, id: &str) -> Result<(ConversationRow, Vec<MessageRow>), SupportError> {
        let Some(conversation) = self.store.conversation(id).await? else {
            return Err(SupportError::NotFound(format!("no conversation with id `{id}`")));
        };
        let messages = self.store.messages(id).await?;
        Ok((conversation, messages))
    }

    /// A person replies: the conversation is theirs from now on.
    pub async fn agent_message(&self, id: &str, agent: String, text: String) -> Result<ConversationRow, SupportError> {
        let _turn = self.store.lock_conversation(id).await?;
        let (conversation, _) = self.load(id).await?;
        if conversation.status == Status::Resolved {
            return Err(SupportError::Conflict(format!("conversation `{id}` is resolved")));
        }
        let change = Change {
            status: Some(Status::Human),
            // An agent stepping in without an AI handoff is an escalation too.
            escalated: Some(ReasonCode::AgentTookOver),
            first_human_reply: true,
            ..Default::default()
        };
        let text = self.redactor.redact(&text).into_owned();
        self.store.record(id, vec![NewMessage::agent(agent.clone(), text.clone())], change).await?;
        self.events.publish(Event::AgentReply { conversation_id: id.into(), agent, text, at: now_ms() });
        Ok(self.load(id).await?.0)
    }

    /// Handoffs waiting in `queue`, oldest first.
    pub async fn queue(&self, queue: &str, limit: usize) -> Result<Vec<Waiting>, SupportError> {
        let policy = self.policy();
        if !policy.queues.iter().any(|q| q == queue) {
            return Err(SupportError::NotFound(format!("no queue `{queue}` (queues: {})", policy.queues.join(", "))));
        }
        let rows = self.store.waiting(queue, limit).await?;
        let now = now_ms();
        let mut waiting = Vec::with_capacity(rows.len());
        for row in rows {
            let messages = self.store.messages(&row.id).await?;
            let last = messages.into_iter().rev().find(|m| m.role == crate::store::Role::Customer);
            let escalated_at = row.escalated_at.unwrap_or(row.updated_at);
            waiting.push(Waiting {
                conversation_id: row.id,
                tier: row.tier,
                reason: row.escalation_reason,
                escalated_at,
                wait_secs: (now - escalated_at).max(0) as f64 / 1000.0,
                account: row.account,
                last_customer_message: last.map(|m| m.text),
            });
        }
        Ok(waiting)
    }

    pub async fn handoff(&self, id: &str) -> Result<handoff::Packet, SupportError> {
        let (conversation, messages) = self.load(id).await?;
        Ok(handoff::packet(&conversation, &messages))
    }

    /// Support metrics over the conversations opened in `window` (up to now).
    pub async fn support_report(&self, window: metrics::Window) -> Result<metrics::SupportReport, SupportError> {
        Ok(metrics::load_report(self.store.as_ref(), window).await?)
    }

    /// Replays stored decisions and outcomes under alternative thresholds (see `calibration`).
    pub async fn calibration(&self, window: metrics::Window) -> Result<calibration::CalibrationReport, SupportError> {
        Ok(calibration::load_and_calibrate(self.store.as_ref(), &self.policy(), window).await?)
    }

    /// Leads spike detection when no other node does (at once, then every `SPIKE_POLL`), and
    /// while leading reads every node's new tickets. On a store one node uses, this node leads
    /// from the start and also reads each ticket as its turn commits.
    pub fn spawn_spike_watch(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let support = self.clone();
        tokio::spawn(async move {
            loop {
                match support.alerting.lead().await {
                    Ok(true) => support.watch_for_spikes().await,
                    Ok(false) => {}
                    Err(err) => tracing::warn!(error = %err, "cannot take the lead of spike detection; retrying"),
                }
                tokio::time::sleep(SPIKE_POLL).await;
            }
        })
    }

    /// Stored anomaly alerts, newest first.
    pub async fn alerts(&self, active_only: bool, limit: usize) -> Result<Vec<Alert>, SupportError> {
        Ok(self.store.alerts(active_only, limit).await?)
    }

    /// Labeled examples learned from resolutions.
    pub async fn feedback(&self, filter: FeedbackFilter) -> Result<Vec<FeedbackRow>, SupportError> {
        Ok(self.store.feedback(&filter).await?)
    }

    /// The examples as JSONL, one `FeedbackRow` per line, serialised off the async workers.
    pub async fn export_feedback(&self, filter: FeedbackFilter) -> Result<String, SupportError> {
        let rows = self.store.feedback(&filter).await?;
        let text = tokio::task::spawn_blocking(move || crate::learn::feedback::to_jsonl(&rows))
            .await
            .map_err(anyhow::Error::from)??;
        Ok(text)
    }

    /// Accepts or rejects a feedback example, optionally relabelling it.
    pub async fn review_feedback(
        &self,
        id: i64,
        status: FeedbackStatus,
        label: Option<String>,
    ) -> Result<(), SupportError> {
        if !self.store.review_feedback(id, status, label.as_deref()).await? {
            return Err(SupportError::NotFound(format!("no feedback example with id {id}")));
        }
        Ok(())
    }

    /// Health of every account seen in the last `accounts.health.lookback_days`, worst first.
    pub async fn account_health(&self) -> Result<Vec<AccountHealth>, SupportError> {
        let rules = self.policy().accounts.health.clone();
        let mut health = health::load(self.store.as_ref(), &rules, None).await?;
        health.sort_by(|a, b| a.score.total_cmp(&b.score).then_with(|| a.account.cmp(&b.account)));
        Ok(health)
    }

    /// This account's standing when the policy treats at-risk accounts as high-stakes. A failure
    /// to read it is logged and triage goes on without it.
    async fn account_standing(&self, policy: &Policy, account: &AccountContext) -> Option<AccountStanding> {
        let id = account.id.as_deref().filter(|_| policy.accounts.at_risk_is_high_value)?;
        match health::load(self.store.as_ref(), &policy.accounts.health, Some(id)).await {
            Ok(mut health) => health.pop().map(|h| h.standing()),
            Err(err) => {
                tracing::warn!(%err, "account health not read; triage goes on without it");
                None
            }
        }
    }

    /// Lets spike detection see the tickets stored since its last look. A failure is logged:
    /// the tickets stay stored and the next look sees them.
    async fn watch_for_spikes(&self) {
        if let Err(err) = self.alerting.catch_up().await {
            tracing::warn!(error = %err, "anomaly detection fell behind; it catches up on the next ticket");
        }
    }

    /// Hands every conversation still with the AI past the time limit to a person, and lets spike
    /// detection see the time pass. Returns how many conversations were handed over.
    pub async fn sweep(&self) -> Result<usize, SupportError> {
        self.watch_for_spikes().await;
        if let Err(err) = self.alerting.tick().await {
            tracing::warn!(error = %err, "anomaly alerts not advanced");
        }
        if let Err(err) = self.apply_retention().await {
            tracing::warn!(error = %err, "retention sweep failed");
        }
        let policy = self.policy();
        let limit = policy.conversation.time_limit_secs;
        let before = now_ms() - (limit as i64) * 1000;
        let overdue = self.store.overdue(before, SWEEP_BATCH).await?;
        let mut handed = 0;
        for id in &overdue {
            // One failure must not stop the sweep of the others.
            match self.hand_over_overdue(id, &policy).await {
                Ok(true) => handed += 1,
                Ok(false) => {}
                Err(err) => tracing::warn!(conversation = %id, %err, "time-limit handoff not stored"),
            }
        }
        Ok(handed)
    }

    /// `false` when the conversation left the AI meanwhile (a turn or another sweeper got there).
    async fn hand_over_overdue(&self, id: &str, policy: &Policy) -> Result<bool, SupportError> {
        let _turn = self.store.lock_conversation(id).await?;
        let Some(conversation) = self.store.conversation(id).await? else { return Ok(false) };
        if conversation.status != Status::Ai {
            return Ok(false);
        }
        let queue = conversation.queue.clone().unwrap_or_else(|| policy.default_queue.clone());
        let note =
            NewMessage::system(replies::time_limit_note(policy.conversation.time_limit_secs), ReasonCode::TimeLimit);
        let change = Change {
            status: Some(Status::Waiting),
            tier: Some(Tier::Human),
            queue: Some(queue.clone()),
            escalated: Some(ReasonCode::TimeLimit),
            only_if_status: Some(Status::Ai),
            ..Default::default()
        };
        let handed = self.store.record(id, vec![note], change).await?;
        if handed {
            self.events.publish(Event::Handoff {
                conversation_id: id.into(),
                queue: queue.clone(),
                reason: ReasonCode::TimeLimit,
                at: now_ms(),
            });
            tracing::info!(conversation = %id, %queue, "handed off: time limit");
        }
        Ok(handed)
    }

    /// Runs `sweep` every `conversation.sweep_interval_secs` until the process ends.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let support = self.clone();
        tokio::spawn(async move {
            loop {
                let interval = Duration::from_secs(support.policy().conversation.sweep_interval_secs);
                tokio::time::sleep(interval).await;
                if let Err(err) = support.sweep().await {
                    tracing::warn!(%err, "time-limit sweep failed");
                }
            }
        })
    }
}
