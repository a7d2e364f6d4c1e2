//! Durable storage behind one trait. Every SQL statement tierline runs lives in an implementation
//! of `Store`; nothing else opens the database. SQLite (one file, WAL, `synchronous = FULL`) is the
//! embedded default. Every method is async and never blocks the caller's runtime workers: the
//! SQLite store runs its statements on blocking threads.
//!
//! A write that returns `Ok` is committed: a message acknowledged to a client survives `kill -9`.

pub mod postgres;
mod rows;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use postgres::PgStore;
pub use rows::*;
pub use sqlite::SqliteStore;

use crate::insights::anomaly::Alert;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached now; the caller may retry later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// A stored row does not read back as its type.
    #[error("corrupt {table} row `{id}`: {reason}")]
    Corrupt { table: &'static str, id: String, reason: String },
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Held while one conversation's turn runs: turns of one conversation are serialised (across
/// nodes, for a shared database); dropping it lets the next turn in.
pub struct ConversationLock {
    _held: Box<dyn Send + Sync>,
}

impl ConversationLock {
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self { _held: Box::new(held) }
    }
}

/// Held while this node leads a job one node at a time must run (spike detection): dropping it
/// lets another node take over.
pub struct Leadership {
    held: Box<dyn Held>,
}

/// Whether a leadership is still held (a lost database session loses it).
#[async_trait]
pub trait Held: Send + Sync {
    async fn still_held(&self) -> bool;
}

impl Leadership {
    pub fn new(held: impl Held + 'static) -> Self {
        Self { held: Box::new(held) }
    }

    pub async fn still_held(&self) -> bool {
        self.held.still_held().await
    }
}

/// Leadership of a store only one node uses: always held.
pub struct Alone;

#[async_trait]
impl Held for Alone {
    async fn still_held(&self) -> bool {
        true
    }
}

/// A message from another node (PostgreSQL `NOTIFY`).
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub channel: String,
    pub payload: String,
}

/// Notification channels.
pub const EVENTS_CHANNEL: &str = "tierline_events";
pub const KB_CHANNEL: &str = "tierline_kb";

/// The columns a `ConversationRow` is read from, in the order both backends parse them.
pub(crate) const CONVERSATION_COLUMNS: &str = "id, created_at, updated_at, status, customer, account, queue, tier, \
     ai_exchanges, escalated_at, escalation_reason, first_human_reply_at, resolved_at, resolved_by, csat, outcome, \
     reopened_count";

/// `CONVERSATION_COLUMNS` qualified by a table alias, for joins.
pub(crate) fn conversation_columns(alias: &str) -> String {
    CONVERSATION_COLUMNS.split(", ").map(|column| format!("{alias}.{}", column.trim())).collect::<Vec<_>>().join(", ")
}

/// The database tierline keeps its state in.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name for logs and `/ready` (`sqlite`, `postgres`).
    fn kind(&self) -> &'static str;

    /// Whether the database answers now (for readiness probes).
    async fn ping(&self) -> StoreResult<()>;

    // Conversations and their messages.

    /// Creates a conversation; `token_hash` (SHA-256 of a customer token) lets a customer's own
    /// browser open it and nothing else.
    async fn create_conversation(
        &self,
        id: &str,
        customer: &serde_json::Value,
        account: &crate::triage::AccountContext,
        token_hash: Option<&str>,
    ) -> StoreResult<ConversationRow>;

    /// The conversation a customer token opens.
    async fn conversation_by_token(&self, token_hash: &str) -> StoreResult<Option<String>>;

    /// Per queue: how many conversations wait for a person, and since when the oldest waits.
    async fn waiting_counts(&self) -> StoreResult<Vec<WaitingCount>>;

    async fn conversation(&self, id: &str) -> StoreResult<Option<ConversationRow>>;

    /// The conversation's messages, oldest first.
    async fn messages(&self, conversation: &str) -> StoreResult<Vec<MessageRow>>;

    /// Appends `messages` and applies `change` in one transaction: both or neither survive a
    /// crash. `false` when `change.only_if_status` did not hold (nothing written).
    async fn record(&self, conversation: &str, messages: Vec<NewMessage>, change: Change) -> StoreResult<bool>;

    /// Waits until no other turn of this conversation runs, here or on another node.
    async fn lock_conversation(&self, conversation: &str) -> StoreResult<ConversationLock>;

    /// Conversations waiting for a person in `queue`, oldest escalation first.
    async fn waiting(&self, queue: &str, limit: usize) -> StoreResult<Vec<ConversationRow>>;

    /// Ids of conversations still with the AI that started before `started_before` (ms).
    async fn overdue(&self, started_before: i64, limit: usize) -> StoreResult<Vec<String>>;

    /// One page of the conversations created in a window, newest first.
    async fn conversations_created(&self, page: &CreatedPage) -> StoreResult<Vec<ConversationRow>>;

    /// The same page, each conversation with the decision stored on its first customer message
    /// (one query, whatever the page size).
    async fn first_decisions(&self, page: &CreatedPage) -> StoreResult<Vec<(ConversationRow, Option<StoredDecision>)>>;

    /// Conversations of identified accounts created since `since` (ms), optionally of one
    /// account, with the negativity of each customer message.
    async fn account_conversations(&self, since: i64, account: Option<&str>) -> StoreResult<Vec<AccountConversation>>;

    /// First customer messages (tickets) of conversations, created at or after `since` (ms) and
    /// with a message id above `after_message`, oldest first, at most `limit`.
    async fn tickets(&self, since: i64, after_message: i64, limit: usize) -> StoreResult<Vec<StoredTicket>>;

    // Labeled examples learned from resolutions.

    /// Feedback examples matching `filter`, oldest first.
    async fn feedback(&self, filter: &FeedbackFilter) -> StoreResult<Vec<FeedbackRow>>;

    /// Records a review (and optionally a relabel). `false` when there is no such example.
    async fn review_feedback(&self, id: i64, status: FeedbackStatus, label: Option<&str>) -> StoreResult<bool>;

    // Anomaly alerts.

    /// Stores an alert (inserted or replaced by id).
    async fn save_alert(&self, alert: &Alert) -> StoreResult<()>;

    /// Marks every stored alert inactive (the detector that raised them is gone).
    async fn close_active_alerts(&self) -> StoreResult<usize>;

    /// Stored alerts, newest first.
    async fn alerts(&self, active_only: bool, limit: usize) -> StoreResult<Vec<Alert>>;

    // Shared documents (the knowledge base's edits), versioned.

    /// A document and its version.
    async fn document(&self, name: &str) -> StoreResult<Option<(i64, String)>>;

    /// Replaces a document; returns its new version.
    async fn save_document(&self, name: &str, body: &str) -> StoreResult<i64>;

    // Several nodes.

    /// Whether other nodes may share this store (then notifications reach them).
    fn shared(&self) -> bool;

    /// Becomes the one node that runs `role`, if no other node does now.
    async fn try_lead(&self, role: &str) -> StoreResult<Option<Leadership>>;

    /// Tells every node listening on `channel` (nothing for a store one node uses).
    async fn notify(&self, channel: &str, payload: &str) -> StoreResult<()>;

    /// What other nodes notify on `channels`, reconnecting as needed; `None` for a store one
    /// node uses.
    fn listen(&self, channels: &[&'static str]) -> Option<tokio::sync::mpsc::Receiver<Notification>>;

    // API keys (only hashes are stored).

    /// `accounts`: the accounts whose conversations the key may open (empty: every account).
    async fn insert_key(
        &self,
        id: &str,
        hash: &str,
        name: &str,
        scopes: &[String],
        accounts: &[String],
    ) -> StoreResult<()>;

    /// The live (not revoked) key with this hash.
    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyRow>>;

    async fn keys(&self) -> StoreResult<Vec<ApiKeyRow>>;

    /// Conversations whose customer details carry this id or e-mail.
    async fn customer_conversations(&self, customer: &str) -> StoreResult<Vec<String>>;

    /// The oldest conversations created before `before` (ms), at most `limit`.
    async fn conversations_before(&self, before: i64, limit: usize) -> StoreResult<Vec<String>>;

    /// Deletes these conversations with their messages and feedback, in one transaction.
    async fn erase_conversations(&self, ids: &[String]) -> StoreResult<Erased>;

    /// Appends to the audit log.
    async fn audit(
        &self,
        actor: &str,
        action: AuditAction,
        target: &str,
        detail: &serde_json::Value,
    ) -> StoreResult<()>;

    /// The newest audit entries first, at most `limit`.
    async fn audit_log(&self, limit: usize) -> StoreResult<Vec<AuditEntry>>;

    /// Keys ever created, revoked ones included: once a team has made a key, revoking them all
    /// must not open the server again.
    async fn key_count(&self) -> StoreResult<usize>;

    /// `false` when there is no live key with this id.
    async fn revoke_key(&self, id: &str) -> StoreResult<bool>;
}

/// The store the configuration names: a `postgres://` URL connects to PostgreSQL (pooled,
/// migrated); a path opens (or creates) a SQLite file.
pub async fn open(database: &std::path::Path, pool_size: usize) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(url) = database.to_str().filter(|d| d.starts_with("postgres://") || d.starts_with("postgresql://")) {
        return Ok(Arc::new(PgStore::connect(url, pool_size).await?));
    }
    let path = database.to_path_buf();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path)).await??;
    Ok(Arc::new(store))
}
