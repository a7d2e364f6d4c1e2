//! Conversations: the AI side of a support chat with escalation discipline. Each customer message
//! is classified (one encoder pass: embedding + heads), checked for an explicit request for a
//! person, a repeated question, the exchange limit and the six signals, and then either answered
//! from the knowledge base (the reply says it is an AI) or handed to a queue with the whole
//! context. Everything is stored before the caller gets an answer.

pub mod calibration;
pub mod handoff;
pub mod metrics;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tierline_infer::sync::RwLockExt;

use serde::{Deserialize, Serialize};

use crate::insights;
use crate::insights::alerts::Alerting;
use crate::insights::anomaly::Alert;
use crate::insights::health::{self, AccountHealth};
use crate::kb::{Article, Audience, Citation, KnowledgeBase};
use crate::storage::{self, Change, ConversationRow, MessageRow, NewFeedback, NewMessage, Status, Store};
use crate::triage::{self, signals, AccountContext, Decision, Policy, Reason, Tier};
use tierline_infer::classify::{Classifier, TextClassification};
use tierline_infer::EngineError;

/// What the service needs from the models: the classifier and, when configured, the KB.
#[derive(Clone, Copy)]
pub struct Models<'a> {
    pub classifier: &'a Classifier,
    pub kb: Option<&'a KnowledgeBase>,
}

#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    /// What was not found, in words.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
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
    pub citations: Vec<Citation>,
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
    pub tier: Option<String>,
    pub reason: Option<String>,
    pub escalated_at: i64,
    pub wait_secs: f64,
    pub account: serde_json::Value,
    pub last_customer_message: Option<String>,
}

/// What the resolver records about an outcome (all optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Outcome {
    /// `false`: the person needed nothing the AI lacked, so the escalation was avoidable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needed_information_ai_lacked: Option<bool>,
    /// The right topic when the AI's was wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrected_topic: Option<String>,
    /// The right queue when the AI's was wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrected_queue: Option<String>,
    /// The agent's answer, approved for the knowledge base.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_answer: Option<String>,
}

/// Who closed a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResolvedBy {
    Ai,
    Human,
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
    /// For `assist`: a draft reply for a person to review.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
}

/// Serialises the turns of one conversation (stripes of locks, not one per id).
struct TurnLocks(Vec<tokio::sync::Mutex<()>>);

impl TurnLocks {
    fn for_id(&self, id: &str) -> &tokio::sync::Mutex<()> {
        let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        &self.0[(hash % self.0.len() as u64) as usize]
    }
}

pub struct Support {
    store: Arc<Store>,
    alerting: Arc<Alerting>,
    policy: RwLock<Arc<Policy>>,
    policy_path: PathBuf,
    locks: TurnLocks,
}

impl Support {
    pub fn new(store: Arc<Store>, policy_path: PathBuf, alerting: Alerting) -> anyhow::Result<Self> {
        let policy = Policy::load(&policy_path)?;
        Ok(Self {
            store,
            alerting: Arc::new(alerting),
            policy: RwLock::new(Arc::new(policy)),
            policy_path,
            locks: TurnLocks((0..1024).map(|_| tokio::sync::Mutex::new(())).collect()),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.read_unpoisoned().clone()
    }

    /// Re-reads the policy file; on error the current policy stays in force.
    pub fn reload_policy(&self) -> anyhow::Result<Arc<Policy>> {
        let policy = Arc::new(Policy::load(&self.policy_path)?);
        *self.policy.write_unpoisoned() = policy.clone();
        tracing::info!(path = %self.policy_path.display(), "policy reloaded");
        Ok(policy)
    }

    /// Runs a blocking storage call off the async workers.
    async fn db<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, SupportError> {
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || work(&store)).await.map_err(anyhow::Error::from)?;
        Ok(result?)
    }

    pub async fn create(
        &self,
        customer: serde_json::Value,
        account: &AccountContext,
    ) -> Result<ConversationRow, SupportError> {
        let id = new_id("conv");
        let account = serde_json::to_value(account).map_err(anyhow::Error::from)?;
        self.db(move |store| store.create_conversation(&id, &customer, &account)).await
    }

    pub async fn view(&self, id: &str) -> Result<ConversationView, SupportError> {
        let (conversation, messages) = self.load(id).await?;
        Ok(ConversationView { conversation, messages })
    }

    async fn load(&self, id: &str) -> Result<(ConversationRow, Vec<MessageRow>), SupportError> {
        let key = id.to_string();
        let found = self
            .db(move |store| {
                let Some(conversation) = store.conversation(&key)? else { return Ok(None) };
                Ok(Some((conversation, store.messages(&key)?)))
            })
            .await?;
        found.ok_or_else(|| SupportError::NotFound(format!("no conversation with id `{id}`")))
    }

    /// One customer message: the AI answers it or hands the conversation off.
    pub async fn customer_message(&self, models: Models<'_>, id: &str, text: String) -> Result<Turn, SupportError> {
        let _turn = self.locks.for_id(id).lock().await;
        let (conversation, history) = self.load(id).await?;
        let policy = self.policy();

        let (classification, embedding) = models
            .classifier
            .classify_with_embeddings(vec![text.clone()], 20)
            .await?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("the classifier returned no result"))?;

        if conversation.status == Status::Resolved {
            // The issue came back: reopen and put it in front of a person (counted as a reopening).
            let decision = person_owns(
                &conversation,
                &policy,
                Reason::new("reopened", "the customer wrote again after the conversation was resolved", None),
            );
            let reply = Reply {
                text: format!(
                    "I'm an AI assistant. I've reopened your conversation and passed it to our {} team; they can see everything so far.",
                    decision.queue.replace('_', " ")
                ),
                ai_generated: true,
                citations: Vec::new(),
            };
            let customer = customer_record(text, &decision, &classification, embedding);
            let ai = NewMessage { role: "ai", author: None, text: reply.text.clone(), decision: None, embedding: None };
            let change = Change {
                status: Some(Status::Waiting),
                tier: Some(Tier::Human.as_str().into()),
                queue: Some(decision.queue.clone()),
                reopened: true,
                escalated: Some("reopened".into()),
                restart_escalation: true,
                ..Default::default()
            };
            let key = id.to_string();
            self.db(move |store| store.record(&key, &[customer, ai], &change)).await?;
            return Ok(Turn {
                conversation_id: id.to_string(),
                status: Status::Waiting,
                handoff: true,
                reply: Some(reply),
                decision,
            });
        }

        if matches!(conversation.status, Status::Waiting | Status::Human) {
            // A person owns the conversation: store the message for them, no AI reply.
            let decision = person_owns(
                &conversation,
                &policy,
                Reason::new("with_human", "a person is handling this conversation", None),
            );
            let message = customer_record(text, &decision, &classification, embedding);
            let key = id.to_string();
            self.db(move |store| store.record(&key, &[message], &Change::default())).await?;
            return Ok(Turn {
                conversation_id: id.to_string(),
                status: conversation.status,
                handoff: false,
                reply: None,
                decision,
            });
        }

        let account: AccountContext = serde_json::from_value(conversation.account.clone()).unwrap_or_default();
        let health = self.account_health_for(&policy, &account).await;
        let earlier: Vec<&MessageRow> = history.iter().filter(|m| m.role == "customer").collect();
        let conversation_text: String =
            earlier.iter().map(|m| m.text.as_str()).chain([text.as_str()]).collect::<Vec<_>>().join("\n");
        let earliest_negativity = earlier
            .first()
            .and_then(|m| m.decision.as_ref())
            .and_then(|d| d.get("negativity"))
            .and_then(|v| v.as_f64())
            .map(|v| v as f32);
        let signals = signals::score(
            &policy,
            &text,
            &classification,
            &conversation_text,
            earliest_negativity,
            &account,
            health.as_ref(),
        );
        let human = triage::human_request(&policy, &text, &classification);

        // Conversation rules that escalate whatever the message says.
        let mut forced: Vec<Reason> = human.into_iter().collect();
        let repeat = earlier
            .iter()
            .filter_map(|m| m.embedding.as_ref().map(|e| (m, tierline_infer::kernels::dot(e, &embedding))))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((message, similarity)) = repeat.filter(|(_, s)| *s >= policy.conversation.repeat_similarity) {
            let quoted: String = message.text.chars().take(80).collect();
            forced.push(Reason::new(
                "repeated_question",
                format!("the customer repeated an earlier question (\"{quoted}\", similarity {similarity:.2})"),
                Some(similarity),
            ));
        }
        if conversation.ai_exchanges >= policy.conversation.max_ai_exchanges {
            forced.push(Reason::new(
                "exchange_limit",
                format!("{} AI answers did not resolve the issue", conversation.ai_exchanges),
                Some(conversation.ai_exchanges as f32),
            ));
        }

        let escalating = !forced.is_empty() || signals.iter().any(|s| s.fired);
        let answer = match models.kb {
            Some(kb) if !escalating => {
                let context: Vec<String> = earlier.iter().map(|m| m.text.clone()).collect();
                Some(kb.answer_in_context(&text, &context).await.map_err(SupportError::from_kb)?)
            }
            _ => None,
        };
        let decision = triage::decide(&policy, &classification, signals, forced, answer.as_ref());
        let handoff = decision.tier != Tier::Auto;
        let reply = if handoff {
            Reply { text: handoff_reply(&decision), ai_generated: true, citations: Vec::new() }
        } else {
            let answer = answer.as_ref().expect("auto needs an answer");
            Reply { text: answer_reply(answer), ai_generated: true, citations: answer.citations.clone() }
        };
        let customer = customer_record(text, &decision, &classification, embedding);
        let ai = NewMessage {
            role: "ai",
            author: None,
            text: reply.text.clone(),
            decision: Some(serde_json::json!({ "citations": reply.citations, "handoff": handoff })),
            embedding: None,
        };
        let status = if handoff { Status::Waiting } else { Status::Ai };
        let change = Change {
            status: Some(status),
            tier: Some(decision.tier.as_str().to_string()),
            queue: Some(decision.queue.clone()),
            add_ai_exchange: !handoff,
            escalated: handoff.then(|| decision.reasons.first().map_or("escalated".into(), |r| r.code.clone())),
            ..Default::default()
        };
        let key = id.to_string();
        // The first message is the ticket: it also feeds spike detection.
        let ticket =
            earlier.is_empty().then(|| (account.id.clone(), customer.text.clone(), customer.embedding.clone()));
        let alerting = self.alerting.clone();
        self.db(move |store| {
            store.record(&key, &[customer, ai], &change)?;
            if let Some((account, text, Some(embedding))) = ticket {
                let ticket = insights::alerts::Ticket {
                    id: &key,
                    account: account.as_deref(),
                    text: &text,
                    embedding: &embedding,
                    at_ms: storage::now_ms(),
                };
                if let Err(err) = alerting.observe(store, &ticket) {
                    tracing::warn!(conversation = %key, error = format!("{err:#}"), "anomaly detection skipped this ticket");
                }
            }
            Ok(())
        })
        .await?;
        if handoff {
            tracing::info!(conversation = id, tier = decision.tier.as_str(), queue = %decision.queue, "handed off");
        }
        Ok(Turn { conversation_id: id.to_string(), status, handoff, reply: Some(reply), decision })
    }

    /// Stateless triage of tickets: one encoder pass for the batch, then signals, tier and queue
    /// per ticket; `auto` tickets carry the answer, `assist` tickets a draft.
    pub async fn triage_tickets(
        &self,
        models: Models<'_>,
        tickets: &[Ticket],
    ) -> Result<Vec<TicketTriage>, SupportError> {
        let policy = self.policy();
        let texts: Vec<String> = tickets.iter().map(Ticket::text).collect();
        let classified = models.classifier.classify_with_embeddings(texts.clone(), 20).await?;
        let mut results = Vec::with_capacity(tickets.len());
        for ((ticket, text), (classification, _)) in tickets.iter().zip(&texts).zip(classified) {
            let health = self.account_health_for(&policy, &ticket.account).await;
            let signals = signals::score(&policy, text, &classification, text, None, &ticket.account, health.as_ref());
            let human: Vec<Reason> = triage::human_request(&policy, text, &classification).into_iter().collect();
            let answer = match models.kb {
                Some(kb) => Some(kb.answer_in_context(text, &[]).await.map_err(SupportError::from_kb)?),
                None => None,
            };
            let decision = triage::decide(&policy, &classification, signals, human, answer.as_ref());
            let (answer, draft) = match decision.tier {
                Tier::Auto => (answer, None),
                Tier::Assist => (None, Some(draft_reply(&decision, answer.as_ref()))),
                Tier::Human => (None, None),
            };
            results.push(TicketTriage { classification, decision, answer, draft });
        }
        Ok(results)
    }

    /// A person replies: the conversation is theirs from now on.
    pub async fn agent_message(&self, id: &str, agent: String, text: String) -> Result<ConversationRow, SupportError> {
        let _turn = self.locks.for_id(id).lock().await;
        let (conversation, _) = self.load(id).await?;
        if conversation.status == Status::Resolved {
            return Err(SupportError::Conflict(format!("conversation `{id}` is resolved")));
        }
        let message = NewMessage { role: "agent", author: Some(agent), text, decision: None, embedding: None };
        let change = Change {
            status: Some(Status::Human),
            // An agent stepping in without an AI handoff is an escalation too.
            escalated: Some("agent_took_over".into()),
            first_human_reply: true,
            ..Default::default()
        };
        let key = id.to_string();
        self.db(move |store| {
            store.record(&key, &[message], &change)?;
            store.conversation(&key)?.ok_or_else(|| anyhow::anyhow!("conversation vanished"))
        })
        .await
    }

    pub async fn resolve(
        &self,
        id: &str,
        by: ResolvedBy,
        agent: Option<String>,
        csat: Option<u8>,
        outcome: Outcome,
    ) -> Result<(ConversationRow, Option<Article>), SupportError> {
        let _turn = self.locks.for_id(id).lock().await;
        let (conversation, messages) = self.load(id).await?;
        if conversation.status == Status::Resolved {
            return Err(SupportError::Conflict(format!("conversation `{id}` is already resolved")));
        }
        if by == ResolvedBy::Ai && matches!(conversation.status, Status::Waiting | Status::Human) {
            return Err(SupportError::Conflict(format!(
                "conversation `{id}` is with a person ({}); resolve it as `human`",
                conversation.status.as_str()
            )));
        }
        let who = match (by, agent) {
            (ResolvedBy::Ai, _) => "ai".to_string(),
            (ResolvedBy::Human, Some(agent)) => format!("human:{agent}"),
            (ResolvedBy::Human, None) => "human".to_string(),
        };
        let feedback = topic_feedback(&messages, by, &outcome).into_iter().collect();
        let article = outcome.approved_answer.as_deref().and_then(|answer| approved_article(id, &messages, answer));
        let outcome = serde_json::to_value(&outcome).map_err(anyhow::Error::from)?;
        let change = Change {
            status: Some(Status::Resolved),
            resolved: Some((who, csat)),
            outcome: Some(outcome),
            feedback,
            ..Default::default()
        };
        let key = id.to_string();
        let row = self
            .db(move |store| {
                store.record(&key, &[], &change)?;
                store.conversation(&key)?.ok_or_else(|| anyhow::anyhow!("conversation vanished"))
            })
            .await?;
        Ok((row, article))
    }

    /// Handoffs waiting in `queue`, oldest first.
    pub async fn queue(&self, queue: &str, limit: usize) -> Result<Vec<Waiting>, SupportError> {
        let name = queue.to_string();
        let rows = self
            .db(move |store| {
                let rows = store.waiting(&name, limit)?;
                rows.into_iter()
                    .map(|row| {
                        let last = store.messages(&row.id)?.into_iter().rev().find(|m| m.role == "customer");
                        Ok((row, last.map(|m| m.text)))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()
            })
            .await?;
        let now = storage::now_ms();
        Ok(rows
            .into_iter()
            .map(|(row, last)| {
                let escalated_at = row.escalated_at.unwrap_or(row.updated_at);
                Waiting {
                    conversation_id: row.id,
                    tier: row.tier,
                    reason: row.escalation_reason,
                    escalated_at,
                    wait_secs: (now - escalated_at).max(0) as f64 / 1000.0,
                    account: row.account,
                    last_customer_message: last,
                }
            })
            .collect())
    }

    pub async fn handoff(&self, id: &str) -> Result<handoff::Packet, SupportError> {
        let (conversation, messages) = self.load(id).await?;
        Ok(handoff::packet(&conversation, &messages))
    }

    /// Support metrics over the conversations opened in `window` (up to now), computed off the
    /// async workers.
    pub async fn support_report(&self, window: metrics::Window) -> Result<metrics::SupportReport, SupportError> {
        self.db(move |store| metrics::load_report(store, window)).await
    }

    /// Replays stored decisions and outcomes under alternative thresholds (see `calibration`).
    pub async fn calibration(&self, window: metrics::Window) -> Result<calibration::CalibrationReport, SupportError> {
        let policy = self.policy();
        self.db(move |store| calibration::load_and_calibrate(store, &policy, window)).await
    }

    /// Rebuilds spike detection from the stored tickets of its horizon (after a restart).
    pub async fn replay_tickets(&self) -> Result<usize, SupportError> {
        let alerting = self.alerting.clone();
        self.db(move |store| alerting.replay(store)).await
    }

    /// Stored anomaly alerts, newest first.
    pub async fn alerts(&self, active_only: bool, limit: usize) -> Result<Vec<Alert>, SupportError> {
        let stored = self.db(move |store| store.alerts(active_only, limit)).await?;
        Ok(stored.into_iter().filter_map(|body| serde_json::from_value(body).ok()).collect())
    }

    /// Labeled examples learned from resolutions.
    pub async fn feedback(&self, filter: storage::FeedbackFilter) -> Result<Vec<storage::FeedbackRow>, SupportError> {
        self.db(move |store| store.feedback(&filter)).await
    }

    /// The examples as JSONL, serialised off the async workers.
    pub async fn export_feedback(&self, filter: storage::FeedbackFilter) -> Result<String, SupportError> {
        self.db(move |store| store.feedback_jsonl(&filter)).await
    }

    /// Accepts or rejects a feedback example, optionally relabelling it.
    pub async fn review_feedback(
        &self,
        id: i64,
        status: storage::FeedbackStatus,
        label: Option<String>,
    ) -> Result<(), SupportError> {
        let found = self.db(move |store| store.review_feedback(id, status, label.as_deref())).await?;
        if !found {
            return Err(SupportError::NotFound(format!("no feedback example with id {id}")));
        }
        Ok(())
    }

    /// Health of every account seen in the last `accounts.health.lookback_days`, worst first.
    pub async fn account_health(&self) -> Result<Vec<AccountHealth>, SupportError> {
        let rules = self.policy().accounts.health.clone();
        let mut health = self.db(move |store| health::load(store, &rules, None)).await?;
        health.sort_by(|a, b| a.score.total_cmp(&b.score).then_with(|| a.account.cmp(&b.account)));
        Ok(health)
    }

    /// This account's health when the policy treats at-risk accounts as high-stakes. A failure
    /// to read it is logged and triage goes on without it.
    async fn account_health_for(&self, policy: &Policy, account: &AccountContext) -> Option<AccountHealth> {
        let id = account.id.clone().filter(|_| policy.accounts.at_risk_is_high_value)?;
        let rules = policy.accounts.health.clone();
        let assessed = self.db(move |store| Ok(health::load(store, &rules, Some(&id))?.pop())).await;
        match assessed {
            Ok(health) => health,
            Err(err) => {
                tracing::warn!(%err, "account health not read; triage goes on without it");
                None
            }
        }
    }

    /// Hands every conversation still with the AI past the time limit to a person, and lets spike
    /// detection see the time pass. Returns how many conversations were handed over.
    pub async fn sweep(&self) -> Result<usize, SupportError> {
        let alerting = self.alerting.clone();
        if let Err(err) = self.db(move |store| alerting.tick(store)).await {
            tracing::warn!(error = %err, "anomaly alerts not advanced");
        }
        let policy = self.policy();
        let limit = policy.conversation.time_limit_secs;
        let before = storage::now_ms() - (limit as i64) * 1000;
        let overdue = self.db(move |store| store.overdue(before)).await?;
        for id in &overdue {
            let _turn = self.locks.for_id(id).lock().await;
            let Ok((conversation, _)) = self.load(id).await else { continue };
            if conversation.status != Status::Ai {
                continue;
            }
            let queue = conversation.queue.clone().unwrap_or_else(|| policy.default_queue.clone());
            let note = NewMessage {
                role: "system",
                author: None,
                text: format!(
                    "Handed to a person: the conversation was open with the AI for more than {} minutes.",
                    limit / 60
                ),
                decision: Some(serde_json::json!({ "reason": "time_limit" })),
                embedding: None,
            };
            let change = Change {
                status: Some(Status::Waiting),
                tier: Some(Tier::Human.as_str().into()),
                queue: Some(queue.clone()),
                escalated: Some("time_limit".into()),
                ..Default::default()
            };
            let key = id.clone();
            // One failure must not stop the sweep of the others.
            if let Err(err) = self.db(move |store| store.record(&key, &[note], &change)).await {
                tracing::warn!(conversation = %id, %err, "time-limit handoff not stored");
                continue;
            }
            tracing::info!(conversation = %id, %queue, "handed off: time limit");
        }
        Ok(overdue.len())
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

/// The decision when a person owns the conversation (no triage needed): human, its queue.
fn person_owns(conversation: &ConversationRow, policy: &Policy, reason: Reason) -> Decision {
    Decision {
        tier: Tier::Human,
        queue: conversation.queue.clone().unwrap_or_else(|| policy.default_queue.clone()),
        confidence: 1.0,
        reasons: vec![reason],
        signals: Vec::new(),
    }
}

/// The labeled example a resolution teaches: the conversation's first customer message (the
/// ticket) under the corrected topic, or under the predicted one that the resolution confirmed.
fn topic_feedback(messages: &[MessageRow], by: ResolvedBy, outcome: &Outcome) -> Option<NewFeedback> {
    let ticket = messages.iter().find(|m| m.role == "customer")?;
    let predicted = ticket.decision.as_ref().and_then(|d| d.get("topic")).and_then(|t| t.as_str()).map(String::from);
    let (label, kind) = match (&outcome.corrected_topic, by) {
        (Some(corrected), _) => (corrected.clone(), "corrected"),
        (None, ResolvedBy::Human) => (predicted.clone()?, "confirmed"),
        (None, ResolvedBy::Ai) => (predicted.clone()?, "ai_resolved"),
    };
    Some(NewFeedback { head: "topic".into(), text: ticket.text.clone(), label, predicted, kind })
}

/// An agent's approved answer as an internal knowledge-base article (agents see it at once; a
/// person publishes it to customers by setting `audience` to `public`). Titled by the ticket.
fn approved_article(conversation_id: &str, messages: &[MessageRow], answer: &str) -> Option<Article> {
    let ticket = messages.iter().find(|m| m.role == "customer")?;
    let mut title: String = ticket.text.split_whitespace().collect::<Vec<_>>().join(" ");
    if title.chars().count() > 120 {
        title = title.chars().take(117).collect::<String>() + "...";
    }
    let topic = ticket.decision.as_ref().and_then(|d| d.get("topic")).and_then(|t| t.as_str());
    Some(Article {
        id: format!("approved-{}", conversation_id.trim_start_matches("conv_")),
        title,
        url: None,
        tags: std::iter::once("approved-answer").chain(topic).map(String::from).collect(),
        product: None,
        audience: Audience::Internal,
        updated: None,
        body: answer.to_string(),
    })
}

fn customer_record(
    text: String,
    decision: &Decision,
    classification: &TextClassification,
    embedding: Vec<f32>,
) -> NewMessage {
    let mut stored = serde_json::to_value(decision).unwrap_or_default();
    stored["negativity"] = serde_json::json!(signals::negativity(classification));
    stored["sentiment"] = serde_json::json!(classification.label("sentiment").map(|(l, _)| l));
    stored["topic"] = serde_json::json!(classification.label("topic").map(|(l, _)| l));
    NewMessage { role: "customer", author: None, text, decision: Some(stored), embedding: Some(embedding) }
}

/// A draft for a person to review: acknowledgement, the closest article if any, the next step.
fn draft_reply(decision: &Decision, answer: Option<&crate::kb::Answer>) -> String {
    let mut draft = String::from("Hi, thanks for getting in touch, and sorry for the trouble. ");
    match answer.and_then(|a| a.citations.first()) {
        Some(citation) if answer.is_some_and(|a| a.confidence >= 0.3) => {
            draft.push_str(&format!("This article covers part of it: \"{}\"", citation.title));
            if let Some(url) = &citation.url {
                draft.push_str(&format!(" ({url})"));
            }
            draft.push_str(". ");
        }
        _ => {}
    }
    draft.push_str(&format!(
        "I've passed the details to our {} team, who will look into your account and follow up here.",
        decision.queue.replace('_', " ")
    ));
    draft
}

fn answer_reply(answer: &crate::kb::Answer) -> String {
    let mut text = answer.answer.clone().unwrap_or_default();
    if let Some(citation) = answer.citations.first() {
        text.push_str(&format!("\n\nSource: {}", citation.title));
        if let Some(url) = &citation.url {
            text.push_str(&format!(" ({url})"));
        }
    }
    text.push_str("\n\nI'm an AI assistant. If this doesn't solve it, tell me, or ask for a person at any time.");
    text
}

fn handoff_reply(decision: &Decision) -> String {
    let team = decision.queue.replace('_', " ");
    let opening = if decision.reasons.iter().any(|r| r.code == "human_requested") {
        "Of course. I'm an AI assistant, and I'm connecting you with a person now".to_string()
    } else {
        "I'm an AI assistant, and this needs a person, so I'm handing it over now".to_string()
    };
    format!(
        "{opening}: someone from our {team} team will reply here. They can see this whole conversation, so you won't need to repeat anything."
    )
}

/// A random id with a readable prefix: `conv_3f9a...` (128 bits).
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system provides randomness");
    format!("{prefix}_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}
