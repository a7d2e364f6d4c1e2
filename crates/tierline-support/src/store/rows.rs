//! What is stored, as types: every column that holds JSON has a Rust type that reads it back, and
//! a row that does not parse is reported as corrupt, never skipped.

use serde::{Deserialize, Serialize};

use crate::kb::Citation;
use crate::triage::{AccountContext, Decision, ReasonCode, Tier};

/// Where a conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The AI is handling it.
    Ai,
    /// Handed off; waiting in its queue for a person.
    Waiting,
    /// A person has replied.
    Human,
    Resolved,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::Ai, Status::Waiting, Status::Human, Status::Resolved];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ai => "ai",
            Status::Waiting => "waiting",
            Status::Human => "human",
            Status::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// A person owns the conversation (waiting for one, or talking to one).
    pub fn with_person(self) -> bool {
        matches!(self, Status::Waiting | Status::Human)
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Ai,
    Agent,
    /// tierline itself (a time-limit handoff note).
    System,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Customer, Role::Ai, Role::Agent, Role::System];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Ai => "ai",
            Role::Agent => "agent",
            Role::System => "system",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversationRow {
    pub id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub status: Status,
    /// Free-form customer details, kept as the caller sent them (name, email...).
    #[schema(value_type = Object)]
    pub customer: serde_json::Value,
    pub account: AccountContext,
    pub queue: Option<String>,
    pub tier: Option<Tier>,
    pub ai_exchanges: u32,
    pub escalated_at: Option<i64>,
    pub escalation_reason: Option<ReasonCode>,
    pub first_human_reply_at: Option<i64>,
    pub resolved_at: Option<i64>,
    /// `ai`, `human`, or `human:<agent>`.
    pub resolved_by: Option<String>,
    pub csat: Option<u8>,
    /// What the resolver recorded; empty until the conversation is resolved.
    pub outcome: ResolutionOutcome,
    /// How many times a customer wrote again after a resolution.
    pub reopened_count: u32,
}

impl ConversationRow {
    pub fn resolved_by_human(&self) -> bool {
        self.resolved_by.as_deref().is_some_and(|by| by == "human" || by.starts_with("human:"))
    }

    pub fn resolved_by_ai(&self) -> bool {
        self.resolved_by.as_deref() == Some("ai")
    }
}

/// What the resolver records about how a conversation ended (all optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolutionOutcome {
    /// `false`: the person needed nothing the AI lacked, so the escalation was avoidable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed_information_ai_lacked: Option<bool>,
    /// The right topic when the AI's was wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrected_topic: Option<String>,
    /// The right queue when the AI's was wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrected_queue: Option<String>,
    /// The agent's answer, approved for the knowledge base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_answer: Option<String>,
}

/// What tierline keeps beside a customer message: the decision and the model readings behind it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct StoredDecision {
    #[serde(flatten)]
    pub decision: Decision,
    /// The larger of P(negative) and the frustration score.
    pub negativity: f32,
    #[serde(default)]
    pub sentiment: Option<String>,
    #[serde(default)]
    pub topic: Option<String>,
}

/// What an AI reply carried.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AiReply {
    #[serde(default)]
    pub citations: Vec<Citation>,
    /// The reply handed the conversation to a person.
    pub handoff: bool,
}

/// Why tierline wrote a system note.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SystemNote {
    pub reason: ReasonCode,
}

/// The typed content of a message's `decision` column; which one depends on the role.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(untagged)]
pub enum MessageDetail {
    Customer(Box<StoredDecision>),
    Ai(AiReply),
    System(SystemNote),
}

impl MessageDetail {
    /// Reads a stored detail back by the message's role (agents' messages carry none).
    pub fn parse(role: Role, json: &str) -> Result<Self, String> {
        let parsed = match role {
            Role::Customer => serde_json::from_str(json).map(|d| MessageDetail::Customer(Box::new(d))),
            Role::Ai => serde_json::from_str(json).map(MessageDetail::Ai),
            Role::System => serde_json::from_str(json).map(MessageDetail::System),
            Role::Agent => return Err("agent messages carry no detail".into()),
        };
        parsed.map_err(|err| format!("{} detail does not parse: {err}", role.as_str()))
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageRow {
    pub id: i64,
    pub role: Role,
    pub author: Option<String>,
    pub text: String,
    pub created_at: i64,
    /// The decision made on a customer message, the citations of an AI answer, or why tierline
    /// wrote a system note.
    #[serde(rename = "decision")]
    pub detail: Option<MessageDetail>,
    #[serde(skip)]
    pub embedding: Option<Vec<f32>>,
}

impl MessageRow {
    /// The stored decision of a customer message.
    pub fn decision(&self) -> Option<&StoredDecision> {
        match &self.detail {
            Some(MessageDetail::Customer(decision)) => Some(decision),
            _ => None,
        }
    }

    /// What an AI reply carried.
    pub fn ai_reply(&self) -> Option<&AiReply> {
        match &self.detail {
            Some(MessageDetail::Ai(reply)) => Some(reply),
            _ => None,
        }
    }

    /// Whether the decision on this customer message gave `code` as a reason.
    pub fn has_reason(&self, code: ReasonCode) -> bool {
        self.decision().is_some_and(|d| d.decision.reasons.iter().any(|r| r.code == code))
    }
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub role: Role,
    pub author: Option<String>,
    pub text: String,
    pub detail: Option<MessageDetail>,
    pub embedding: Option<Vec<f32>>,
}

impl NewMessage {
    pub fn customer(text: String, decision: StoredDecision, embedding: Vec<f32>) -> Self {
        let detail = Some(MessageDetail::Customer(Box::new(decision)));
        Self { role: Role::Customer, author: None, text, detail, embedding: Some(embedding) }
    }

    pub fn ai(text: String, reply: AiReply) -> Self {
        Self { role: Role::Ai, author: None, text, detail: Some(MessageDetail::Ai(reply)), embedding: None }
    }

    pub fn agent(author: String, text: String) -> Self {
        Self { role: Role::Agent, author: Some(author), text, detail: None, embedding: None }
    }

    pub fn system(text: String, reason: ReasonCode) -> Self {
        let detail = Some(MessageDetail::System(SystemNote { reason }));
        Self { role: Role::System, author: None, text, detail, embedding: None }
    }
}

/// One page of the conversations created in `[from, to)` (ms), newest first: reports read a
/// window page by page, so neither a long window nor a busy one is held in memory at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedPage {
    pub from: i64,
    pub to: i64,
    /// The last conversation of the previous page (creation time and id); the page starts after it.
    pub after: Option<(i64, String)>,
    pub limit: usize,
}

impl CreatedPage {
    /// The exclusive upper bound on `created_at` and the id a row created exactly at the cursor's
    /// time must sort below, so the query stays a range scan on `created_at`.
    pub fn bounds(&self) -> (i64, i64, &str) {
        match &self.after {
            None => (self.to, i64::MIN, ""),
            Some((created_at, id)) => ((*created_at + 1).min(self.to), *created_at, id.as_str()),
        }
    }

    /// The page after this one, or `None` when `rows` (this page's result) was the last.
    pub fn next<T>(&self, rows: &[T], key: impl Fn(&T) -> (i64, String)) -> Option<CreatedPage> {
        if rows.len() < self.limit {
            return None;
        }
        Some(CreatedPage { after: rows.last().map(key), ..self.clone() })
    }
}

/// How many conversations wait in one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitingCount {
    pub queue: String,
    pub waiting: usize,
    /// When the oldest of them was escalated (ms).
    pub oldest_escalated_at: i64,
}

/// Changes to a conversation made together with new messages, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub status: Option<Status>,
    pub tier: Option<Tier>,
    pub queue: Option<String>,
    pub add_ai_exchange: bool,
    /// Restart the count of AI answers to one issue (the customer moved on to a new question).
    pub reset_ai_exchanges: bool,
    /// Escalation: time and reason (kept from the first escalation).
    pub escalated: Option<ReasonCode>,
    pub first_human_reply: bool,
    /// Who resolved it (`ai`, `human`, `human:<agent>`) and the CSAT.
    pub resolved: Option<(String, Option<u8>)>,
    /// A CSAT given after the resolution (the customer's own rating).
    pub csat: Option<u8>,
    pub outcome: Option<ResolutionOutcome>,
    /// A customer wrote after a resolution: count it and clear the resolution time.
    pub reopened: bool,
    /// With `escalated`: restart the escalation clock (a reopened conversation waits anew).
    pub restart_escalation: bool,
    /// Labeled examples learned from this change (a resolution).
    pub feedback: Vec<NewFeedback>,
    /// Apply the change only while the conversation has this status; otherwise nothing is
    /// written and `record` returns `false` (a sweeper on another node got there first).
    pub only_if_status: Option<Status>,
}

/// How a labeled example was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackKind {
    /// A person fixed the label.
    Corrected,
    /// A person resolved the conversation under the predicted label.
    Confirmed,
    /// The customer accepted the AI's answer.
    AiResolved,
}

impl FeedbackKind {
    pub const ALL: [FeedbackKind; 3] = [FeedbackKind::Corrected, FeedbackKind::Confirmed, FeedbackKind::AiResolved];

    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::Corrected => "corrected",
            FeedbackKind::Confirmed => "confirmed",
            FeedbackKind::AiResolved => "ai_resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// A labeled example learned from a resolution.
#[derive(Debug, Clone)]
pub struct NewFeedback {
    pub head: String,
    pub text: String,
    pub label: String,
    pub predicted: Option<String>,
    pub kind: FeedbackKind,
}

/// Review state of a feedback example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackStatus {
    /// Not reviewed yet.
    Pending,
    Accepted,
    /// Never used for training.
    Rejected,
}

impl FeedbackStatus {
    pub const ALL: [FeedbackStatus; 3] = [FeedbackStatus::Pending, FeedbackStatus::Accepted, FeedbackStatus::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackStatus::Pending => "pending",
            FeedbackStatus::Accepted => "accepted",
            FeedbackStatus::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FeedbackRow {
    pub id: i64,
    pub created_at: i64,
    pub conversation_id: Option<String>,
    pub head: String,
    pub text: String,
    pub label: String,
    pub predicted: Option<String>,
    pub kind: FeedbackKind,
    pub status: FeedbackStatus,
    pub reviewed_at: Option<i64>,
}

/// Which feedback examples to read.
#[derive(Debug, Clone, Default)]
pub struct FeedbackFilter {
    pub head: Option<String>,
    /// Empty: every status.
    pub statuses: Vec<FeedbackStatus>,
    /// Only ids greater than this (paging).
    pub after_id: i64,
    /// 0: no limit.
    pub limit: usize,
}

/// A conversation's account and customer-message history, for account health.
#[derive(Debug, Clone)]
pub struct AccountConversation {
    pub account_id: String,
    pub conversation: ConversationRow,
    /// `(created_at, negativity)` of each customer message, oldest first.
    pub customer_messages: Vec<(i64, Option<f32>)>,
}

/// A conversation's first customer message, as stored.
#[derive(Debug, Clone)]
pub struct StoredTicket {
    /// The message's id: tickets are read in this order, and a reader resumes after the last.
    pub message_id: i64,
    pub conversation_id: String,
    pub account_id: Option<String>,
    pub text: String,
    pub created_at: i64,
    pub embedding: Vec<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// The accounts (`account.id`) whose conversations this key may open; empty: every account.
    pub accounts: Vec<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl ApiKeyRow {
    /// Whether the key is kept to some accounts' conversations.
    pub fn is_restricted(&self) -> bool {
        !self.accounts.is_empty()
    }

    /// Whether the key may open a conversation of `account` (a restricted key never opens one
    /// without an account).
    pub fn may_open_account(&self, account: Option<&str>) -> bool {
        !self.is_restricted() || account.is_some_and(|a| self.accounts.iter().any(|allowed| allowed == a))
    }
}

/// A key's account list as stored: a JSON array of strings (ids may hold any character).
pub fn accounts_to_text(accounts: &[String]) -> String {
    serde_json::to_string(accounts).expect("a list of strings serialises")
}

/// The stored account list back; an unreadable one is corrupt (never read as "every account").
pub fn accounts_from_text(key_id: &str, text: &str) -> super::StoreResult<Vec<String>> {
    serde_json::from_str(text).map_err(|err| super::StoreError::Corrupt {
        table: "api_keys",
        id: key_id.to_string(),
        reason: format!("accounts do not parse: {err}"),
    })
}

/// What an erasure removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Erased {
    pub conversations: usize,
    pub messages: usize,
    pub feedback: usize,
}

/// An admin action, as the audit log keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    KeyCreated,
    KeyRevoked,
    PolicyReloaded,
    ArticleCreated,
    ArticleReplaced,
    ArticleRemoved,
    HeadPromoted,
    HeadRolledBack,
    CustomerErased,
}

impl AuditAction {
    pub const ALL: [AuditAction; 9] = [
        AuditAction::KeyCreated,
        AuditAction::KeyRevoked,
        AuditAction::PolicyReloaded,
        AuditAction::ArticleCreated,
        AuditAction::ArticleReplaced,
        AuditAction::ArticleRemoved,
        AuditAction::HeadPromoted,
        AuditAction::HeadRolledBack,
        AuditAction::CustomerErased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::KeyCreated => "key_created",
            AuditAction::KeyRevoked => "key_revoked",
            AuditAction::PolicyReloaded => "policy_reloaded",
            AuditAction::ArticleCreated => "article_created",
            AuditAction::ArticleReplaced => "article_replaced",
            AuditAction::ArticleRemoved => "article_removed",
            AuditAction::HeadPromoted => "head_promoted",
            AuditAction::HeadRolledBack => "head_rolled_back",
            AuditAction::CustomerErased => "customer_erased",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    /// The key id that acted, `cli` for the command line, `open` without keys.
    pub actor: String,
    pub action: AuditAction,
    /// What was acted on: a key id, an article id, a customer, a head.
    pub target: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// The negativity recorded with a customer message's stored decision (`None` without one), for
/// account health; a decision that does not parse is reported as corrupt.
pub fn stored_negativity(message_id: i64, detail: Option<&str>) -> Result<Option<f32>, super::StoreError> {
    detail.map(|json| stored_decision(message_id, json).map(|decision| decision.negativity)).transpose()
}

/// A customer message's stored decision, or why it is corrupt.
pub fn stored_decision(message_id: i64, json: &str) -> Result<StoredDecision, super::StoreError> {
    let corrupt = |reason: String| super::StoreError::Corrupt { table: "messages", id: message_id.to_string(), reason };
    match MessageDetail::parse(Role::Customer, json) {
        Ok(MessageDetail::Customer(decision)) => Ok(*decision),
        Ok(_) => Err(corrupt("a customer message carries another role's detail".into())),
        Err(reason) => Err(corrupt(reason)),
    }
}
