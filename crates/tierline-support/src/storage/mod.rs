//! Durable storage: every SQL statement tierline runs lives here. SQLite by default (one file,
//! WAL, `synchronous = FULL`: a write acknowledged to a client survives `kill -9` and power loss),
//! with versioned migrations. A PostgreSQL backend for multi-node deployments would implement the
//! same methods.
//!
//! Calls block (a commit waits for fsync): async callers run them on blocking threads.

use std::path::Path;
use std::sync::Mutex;
use tierline_infer::sync::MutexExt;

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

/// Schema versions, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: conversations, messages, API keys.
    "CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        customer TEXT NOT NULL,
        account TEXT NOT NULL,
        queue TEXT,
        tier TEXT,
        ai_exchanges INTEGER NOT NULL DEFAULT 0,
        escalated_at INTEGER,
        escalation_reason TEXT,
        first_human_reply_at INTEGER,
        resolved_at INTEGER,
        resolved_by TEXT,
        csat INTEGER
    );
    CREATE INDEX conversations_waiting ON conversations(status, queue, escalated_at);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES conversations(id),
        role TEXT NOT NULL,
        author TEXT,
        text TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        decision TEXT,
        embedding BLOB
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );",
    // 2: outcomes recorded at resolution, and reopenings.
    "ALTER TABLE conversations ADD COLUMN outcome TEXT;
    ALTER TABLE conversations ADD COLUMN reopened_count INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX conversations_created ON conversations(created_at);",
    // 3: labeled examples from resolutions, anomaly alerts, conversations by account.
    "CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at INTEGER NOT NULL,
        conversation_id TEXT REFERENCES conversations(id),
        head TEXT NOT NULL,
        text TEXT NOT NULL,
        label TEXT NOT NULL,
        predicted TEXT,
        kind TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        reviewed_at INTEGER
    );
    CREATE INDEX feedback_by_head ON feedback(head, status, id);
    CREATE TABLE alerts (
        id TEXT PRIMARY KEY,
        raised_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        active INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    ALTER TABLE conversations ADD COLUMN account_id TEXT GENERATED ALWAYS AS (json_extract(account, '$.id')) VIRTUAL;
    CREATE INDEX conversations_by_account ON conversations(account_id, created_at);",
];

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
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ai => "ai",
            Status::Waiting => "waiting",
            Status::Human => "human",
            Status::Resolved => "resolved",
        }
    }

    fn parse(text: &str) -> rusqlite::Result<Self> {
        Ok(match text {
            "ai" => Status::Ai,
            "waiting" => Status::Waiting,
            "human" => Status::Human,
            "resolved" => Status::Resolved,
            other => return Err(rusqlite::Error::InvalidColumnType(0, other.to_string(), rusqlite::types::Type::Text)),
        })
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversationRow {
    pub id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub status: Status,
    /// JSON objects, kept as the caller sent them.
    pub customer: serde_json::Value,
    pub account: serde_json::Value,
    pub queue: Option<String>,
    pub tier: Option<String>,
    pub ai_exchanges: u32,
    pub escalated_at: Option<i64>,
    pub escalation_reason: Option<String>,
    pub first_human_reply_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
    pub csat: Option<u8>,
    /// What the resolver recorded (JSON): whether the human needed information the AI lacked,
    /// corrected topic/queue, an answer approved for the knowledge base.
    pub outcome: serde_json::Value,
    /// How many times a customer wrote again after a resolution.
    pub reopened_count: u32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageRow {
    pub id: i64,
    pub role: String,
    pub author: Option<String>,
    pub text: String,
    pub created_at: i64,
    /// The decision (JSON) made on a customer message, or the answer given by the AI.
    pub decision: Option<serde_json::Value>,
    #[serde(skip)]
    pub embedding: Option<Vec<f32>>,
}

/// A message to append.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub role: &'static str,
    pub author: Option<String>,
    pub text: String,
    pub decision: Option<serde_json::Value>,
    pub embedding: Option<Vec<f32>>,
}

/// Changes to a conversation made together with new messages, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub status: Option<Status>,
    pub tier: Option<String>,
    pub queue: Option<String>,
    pub add_ai_exchange: bool,
    /// Escalation: time and reason (kept from the first escalation).
    pub escalated: Option<String>,
    pub first_human_reply: bool,
    pub resolved: Option<(String, Option<u8>)>,
    pub outcome: Option<serde_json::Value>,
    /// A customer wrote after a resolution: count it and clear the resolution time.
    pub reopened: bool,
    /// With `escalated`: restart the escalation clock (a reopened conversation waits anew).
    pub restart_escalation: bool,
    /// Labeled examples learned from this change (a resolution).
    pub feedback: Vec<NewFeedback>,
}

/// A labeled example learned from a resolution.
#[derive(Debug, Clone)]
pub struct NewFeedback {
    pub head: String,
    pub text: String,
    pub label: String,
    pub predicted: Option<String>,
    /// `corrected` (a person fixed the label), `confirmed` (a person resolved it under the
    /// predicted label) or `ai_resolved` (the customer accepted the AI's answer).
    pub kind: &'static str,
}

/// Review state of a feedback example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackStatus {
    /// Not reviewed yet; used for training unless a review is required.
    Pending,
    Accepted,
    /// Never used for training.
    Rejected,
}

impl FeedbackStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackStatus::Pending => "pending",
            FeedbackStatus::Accepted => "accepted",
            FeedbackStatus::Rejected => "rejected",
        }
    }

    fn parse(text: &str) -> rusqlite::Result<Self> {
        Ok(match text {
            "pending" => FeedbackStatus::Pending,
            "accepted" => FeedbackStatus::Accepted,
            "rejected" => FeedbackStatus::Rejected,
            other => return Err(rusqlite::Error::InvalidColumnType(0, other.to_string(), rusqlite::types::Type::Text)),
        })
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
    pub kind: String,
    pub status: FeedbackStatus,
    pub reviewed_at: Option<i64>,
}

/// Which feedback examples to read.
#[derive(Debug, Clone, Default)]
pub struct FeedbackFilter {
    pub head: Option<String>,
    pub statuses: Vec<FeedbackStatus>,
    /// Only ids greater than this (paging).
    pub after_id: i64,
    pub limit: usize,
}

/// A conversation's account and customer-message history, for account health.
#[derive(Debug, Clone)]
pub struct AccountConversation {
    pub account_id: String,
    pub conversation: ConversationRow,
    /// `(created_at, decision)` of each customer message, oldest first.
    pub customer_messages: Vec<(i64, Option<serde_json::Value>)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

pub struct Store {
    connection: Mutex<Connection>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let connection = Connection::open(path).with_context(|| format!("cannot open database {}", path.display()))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = Self { connection: Mutex::new(connection) };
        store.migrate().with_context(|| format!("cannot migrate database {}", path.display()))?;
        Ok(store)
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection.lock_unpoisoned()
    }

    fn migrate(&self) -> anyhow::Result<()> {
        let mut db = self.db();
        let version: i64 = db.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let version = usize::try_from(version).unwrap_or(0);
        anyhow::ensure!(
            version <= MIGRATIONS.len(),
            "the database is at schema version {version}, newer than this tierline ({})",
            MIGRATIONS.len()
        );
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = db.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (index + 1) as i64)?;
            tx.commit()?;
            tracing::info!(version = index + 1, "database migrated");
        }
        Ok(())
    }

    pub fn create_conversation(
        &self,
        id: &str,
        customer: &serde_json::Value,
        account: &serde_json::Value,
    ) -> anyhow::Result<ConversationRow> {
        let now = now_ms();
        self.db().execute(
            "INSERT INTO conversations (id, created_at, updated_at, status, customer, account) VALUES (?1, ?2, ?2, 'ai', ?3, ?4)",
            params![id, now, customer.to_string(), account.to_string()],
        )?;
        self.conversation(id)?.context("the conversation just stored is missing")
    }

    pub fn conversation(&self, id: &str) -> anyhow::Result<Option<ConversationRow>> {
        let db = self.db();
        Ok(db
            .query_row(
                &format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?1"),
                [id],
                conversation_row,
            )
            .optional()?)
    }

    pub fn messages(&self, conversation: &str) -> anyhow::Result<Vec<MessageRow>> {
        let db = self.db();
        let mut statement = db.prepare_cached(
            "SELECT id, role, author, text, created_at, decision, embedding FROM messages WHERE conversation_id = ?1 ORDER BY id",
        )?;
        let rows = statement.query_map([conversation], |row| {
            let decision: Option<String> = row.get(5)?;
            let embedding: Option<Vec<u8>> = row.get(6)?;
            Ok(MessageRow {
                id: row.get(0)?,
                role: row.get(1)?,
                author: row.get(2)?,
                text: row.get(3)?,
                created_at: row.get(4)?,
                decision: decision.and_then(|d| serde_json::from_str(&d).ok()),
                embedding: embedding.map(|bytes| decode_embedding(&bytes)),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Appends `messages` and applies `change` in one transaction: both or neither survive a crash.
    pub fn record(&self, conversation: &str, messages: &[NewMessage], change: &Change) -> anyhow::Result<()> {
        let now = now_ms();
        let mut db = self.db();
        let tx = db.transaction()?;
        for message in messages {
            let embedding: Option<Vec<u8>> =
                message.embedding.as_ref().map(|e| e.iter().flat_map(|v| v.to_le_bytes()).collect());
            tx.execute(
                "INSERT INTO messages (conversation_id, role, author, text, created_at, decision, embedding) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    conversation,
                    message.role,
                    message.author,
                    message.text,
                    now,
                    message.decision.as_ref().map(|d| d.to_string()),
                    embedding
                ],
            )?;
        }
        tx.execute("UPDATE conversations SET updated_at = ?2 WHERE id = ?1", params![conversation, now])?;
        if let Some(status) = change.status {
            tx.execute("UPDATE conversations SET status = ?2 WHERE id = ?1", params![conversation, status.as_str()])?;
        }
        if let Some(tier) = &change.tier {
            tx.execute("UPDATE conversations SET tier = ?2 WHERE id = ?1", params![conversation, tier])?;
        }
        if let Some(queue) = &change.queue {
            tx.execute("UPDATE conversations SET queue = ?2 WHERE id = ?1", params![conversation, queue])?;
        }
        if change.add_ai_exchange {
            tx.execute("UPDATE conversations SET ai_exchanges = ai_exchanges + 1 WHERE id = ?1", [conversation])?;
        }
        if let (Some(reason), true) = (&change.escalated, change.restart_escalation) {
            tx.execute(
                "UPDATE conversations SET escalated_at = ?2, escalation_reason = ?3 WHERE id = ?1",
                params![conversation, now, reason],
            )?;
        } else if let Some(reason) = &change.escalated {
            tx.execute(
                "UPDATE conversations SET escalated_at = COALESCE(escalated_at, ?2), escalation_reason = COALESCE(escalation_reason, ?3) WHERE id = ?1",
                params![conversation, now, reason],
            )?;
        }
        if change.first_human_reply {
            tx.execute(
                "UPDATE conversations SET first_human_reply_at = COALESCE(first_human_reply_at, ?2) WHERE id = ?1",
                params![conversation, now],
            )?;
        }
        if let Some((by, csat)) = &change.resolved {
            tx.execute(
                "UPDATE conversations SET resolved_at = ?2, resolved_by = ?3, csat = ?4 WHERE id = ?1",
                params![conversation, now, by, csat],
            )?;
        }
        if let Some(outcome) = &change.outcome {
            tx.execute(
                "UPDATE conversations SET outcome = ?2 WHERE id = ?1",
                params![conversation, outcome.to_string()],
            )?;
        }
        if change.reopened {
            tx.execute(
                "UPDATE conversations SET reopened_count = reopened_count + 1, resolved_at = NULL WHERE id = ?1",
                [conversation],
            )?;
        }
        for example in &change.feedback {
            tx.execute(
                "INSERT INTO feedback (created_at, conversation_id, head, text, label, predicted, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![now, conversation, example.head, example.text, example.label, example.predicted, example.kind],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Feedback examples matching `filter`, oldest first.
    pub fn feedback(&self, filter: &FeedbackFilter) -> anyhow::Result<Vec<FeedbackRow>> {
        let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
        let db = self.db();
        let mut statement = db.prepare_cached(
            "SELECT id, created_at, conversation_id, head, text, label, predicted, kind, status, reviewed_at FROM feedback
             WHERE id > ?1 AND (?2 IS NULL OR head = ?2) AND (?3 = '' OR instr(?3, ',' || status || ',') > 0)
             ORDER BY id LIMIT ?4",
        )?;
        let status_list = if statuses.is_empty() { String::new() } else { format!(",{},", statuses.join(",")) };
        let limit = if filter.limit == 0 { i64::MAX } else { filter.limit as i64 };
        let rows = statement.query_map(params![filter.after_id, filter.head, status_list, limit], |row| {
            let status: String = row.get(8)?;
            Ok(FeedbackRow {
                id: row.get(0)?,
                created_at: row.get(1)?,
                conversation_id: row.get(2)?,
                head: row.get(3)?,
                text: row.get(4)?,
                label: row.get(5)?,
                predicted: row.get(6)?,
                kind: row.get(7)?,
                status: FeedbackStatus::parse(&status)?,
                reviewed_at: row.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The examples matching `filter` as JSONL, one `FeedbackRow` per line (for training files).
    pub fn feedback_jsonl(&self, filter: &FeedbackFilter) -> anyhow::Result<String> {
        let mut text = String::new();
        for row in self.feedback(filter)? {
            text.push_str(&serde_json::to_string(&row)?);
            text.push('\n');
        }
        Ok(text)
    }

    /// Records a review (and optionally a relabel). `false` when there is no such example.
    pub fn review_feedback(&self, id: i64, status: FeedbackStatus, label: Option<&str>) -> anyhow::Result<bool> {
        let changed = self.db().execute(
            "UPDATE feedback SET status = ?2, label = COALESCE(?3, label), reviewed_at = ?4 WHERE id = ?1",
            params![id, status.as_str(), label, now_ms()],
        )?;
        Ok(changed > 0)
    }

    /// Conversations of identified accounts created since `since` (ms), optionally of one account,
    /// with their customer messages' decisions (no embeddings). Two queries whatever the count.
    pub fn account_conversations(&self, since: i64, account: Option<&str>) -> anyhow::Result<Vec<AccountConversation>> {
        // Separate statements, so the one-account case uses the (account_id, created_at) index.
        let (filter, key) = match account {
            Some(id) => ("c.account_id = ?2", id),
            None => ("c.account_id IS NOT NULL AND ?2 = ''", ""),
        };
        let db = self.db();
        let mut statement =
            db.prepare_cached(&format!(
            "SELECT {}, c.account_id FROM conversations c WHERE {filter} AND c.created_at >= ?1 ORDER BY c.created_at",
            CONVERSATION_COLUMNS.split(", ").map(|column| format!("c.{}", column.trim())).collect::<Vec<_>>().join(", ")
        ))?;
        let rows = statement.query_map(params![since, key], |row| {
            let account_id: String = row.get(17)?;
            Ok(AccountConversation { account_id, conversation: conversation_row(row)?, customer_messages: Vec::new() })
        })?;
        let mut conversations: Vec<AccountConversation> = rows.collect::<Result<_, _>>()?;
        let position: std::collections::HashMap<String, usize> =
            conversations.iter().enumerate().map(|(i, c)| (c.conversation.id.clone(), i)).collect();
        let mut messages = db.prepare_cached(&format!(
            "SELECT m.conversation_id, m.created_at, m.decision FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE {filter} AND c.created_at >= ?1 AND m.role = 'customer' ORDER BY m.id"
        ))?;
        let rows = messages.query_map(params![since, key], |row| {
            let decision: Option<String> = row.get(2)?;
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, decision))
        })?;
        for row in rows {
            let (conversation, created_at, decision) = row?;
            if let Some(&index) = position.get(&conversation) {
                let decision = decision.and_then(|d| serde_json::from_str(&d).ok());
                conversations[index].customer_messages.push((created_at, decision));
            }
        }
        Ok(conversations)
    }

    /// First customer message of each conversation created since `since` (ms), oldest first:
    /// `(conversation id, account id, text, created_at, embedding)`. Replays tickets into the
    /// anomaly detector after a restart.
    pub fn tickets_since(&self, since: i64) -> anyhow::Result<Vec<StoredTicket>> {
        let db = self.db();
        let mut statement = db.prepare_cached(
            "SELECT c.id, c.account_id, m.text, m.created_at, m.embedding FROM conversations c
             JOIN messages m ON m.id = (SELECT MIN(id) FROM messages WHERE conversation_id = c.id AND role = 'customer')
             WHERE c.created_at >= ?1 ORDER BY m.created_at",
        )?;
        let rows = statement.query_map([since], |row| {
            let embedding: Option<Vec<u8>> = row.get(4)?;
            Ok(StoredTicket {
                conversation_id: row.get(0)?,
                account_id: row.get(1)?,
                text: row.get(2)?,
                created_at: row.get(3)?,
                embedding: embedding.map(|bytes| decode_embedding(&bytes)).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stores an alert (inserted or replaced by id).
    pub fn save_alert(
        &self,
        id: &str,
        raised_at: i64,
        updated_at: i64,
        active: bool,
        body: &serde_json::Value,
    ) -> anyhow::Result<()> {
        self.db().execute(
            "INSERT INTO alerts (id, raised_at, updated_at, active, body) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at, active = excluded.active, body = excluded.body",
            params![id, raised_at, updated_at, active, body.to_string()],
        )?;
        Ok(())
    }

    /// Marks every stored alert inactive (the detector that raised them is gone).
    pub fn close_active_alerts(&self) -> anyhow::Result<usize> {
        Ok(self.db().execute(
            "UPDATE alerts SET active = 0, body = json_set(body, '$.active', json('false')) WHERE active = 1",
            [],
        )?)
    }

    /// Stored alerts, newest first.
    pub fn alerts(&self, active_only: bool, limit: usize) -> anyhow::Result<Vec<serde_json::Value>> {
        let db = self.db();
        let mut statement = db.prepare_cached(
            "SELECT body FROM alerts WHERE (?1 = 0 OR active = 1) ORDER BY raised_at DESC, id LIMIT ?2",
        )?;
        let rows = statement.query_map(params![active_only, limit as i64], |row| row.get::<_, String>(0))?;
        rows.map(|body| Ok(serde_json::from_str(&body?)?)).collect()
    }

    /// Conversations created in `[from, to)` (ms), oldest first.
    pub fn conversations_created(&self, from: i64, to: i64) -> anyhow::Result<Vec<ConversationRow>> {
        let db = self.db();
        let mut statement = db.prepare_cached(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE created_at >= ?1 AND created_at < ?2 ORDER BY created_at"
        ))?;
        let rows = statement.query_map(params![from, to], conversation_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Conversations waiting for a person in `queue`, oldest escalation first.
    pub fn waiting(&self, queue: &str, limit: usize) -> anyhow::Result<Vec<ConversationRow>> {
        let db = self.db();
        let mut statement = db.prepare_cached(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE status = 'waiting' AND queue = ?1 ORDER BY escalated_at, id LIMIT ?2"
        ))?;
        let rows = statement.query_map(params![queue, limit as i64], conversation_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Ids of conversations still with the AI that started before `started_before` (ms).
    pub fn overdue(&self, started_before: i64) -> anyhow::Result<Vec<String>> {
        let db = self.db();
        let mut statement = db.prepare_cached(
            "SELECT id FROM conversations WHERE status = 'ai' AND created_at < ?1 ORDER BY created_at",
        )?;
        let rows = statement.query_map([started_before], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn insert_key(&self, id: &str, hash: &str, name: &str, scopes: &[String]) -> anyhow::Result<()> {
        self.db().execute(
            "INSERT INTO api_keys (id, hash, name, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, hash, name, scopes.join(","), now_ms()],
        )?;
        Ok(())
    }

    /// The live (not revoked) key with this hash.
    pub fn key_by_hash(&self, hash: &str) -> anyhow::Result<Option<ApiKeyRow>> {
        let db = self.db();
        Ok(db
            .query_row(
                "SELECT id, name, scopes, created_at, revoked_at FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL",
                [hash],
                key_row,
            )
            .optional()?)
    }

    pub fn keys(&self) -> anyhow::Result<Vec<ApiKeyRow>> {
        let db = self.db();
        let mut statement =
            db.prepare_cached("SELECT id, name, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at")?;
        let rows = statement.query_map([], key_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn live_key_count(&self) -> anyhow::Result<usize> {
        let count: i64 =
            self.db().query_row("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL", [], |row| row.get(0))?;
        Ok(count as usize)
    }

    /// `false` when there is no live key with this id.
    pub fn revoke_key(&self, id: &str) -> anyhow::Result<bool> {
        let changed = self.db().execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, now_ms()],
        )?;
        Ok(changed > 0)
    }
}

/// A conversation's first customer message, as stored.
#[derive(Debug, Clone)]
pub struct StoredTicket {
    pub conversation_id: String,
    pub account_id: Option<String>,
    pub text: String,
    pub created_at: i64,
    pub embedding: Vec<f32>,
}

fn decode_embedding(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

const CONVERSATION_COLUMNS: &str = "id, created_at, updated_at, status, customer, account, queue, tier, ai_exchanges, \
     escalated_at, escalation_reason, first_human_reply_at, resolved_at, resolved_by, csat, outcome, reopened_count";

fn conversation_row(row: &Row<'_>) -> rusqlite::Result<ConversationRow> {
    let status: String = row.get(3)?;
    let customer: String = row.get(4)?;
    let account: String = row.get(5)?;
    Ok(ConversationRow {
        id: row.get(0)?,
        created_at: row.get(1)?,
        updated_at: row.get(2)?,
        status: Status::parse(&status)?,
        customer: serde_json::from_str(&customer).unwrap_or(serde_json::Value::Null),
        account: serde_json::from_str(&account).unwrap_or(serde_json::Value::Null),
        queue: row.get(6)?,
        tier: row.get(7)?,
        ai_exchanges: row.get(8)?,
        escalated_at: row.get(9)?,
        escalation_reason: row.get(10)?,
        first_human_reply_at: row.get(11)?,
        resolved_at: row.get(12)?,
        resolved_by: row.get(13)?,
        csat: row.get(14)?,
        outcome: row
            .get::<_, Option<String>>(15)?
            .and_then(|o| serde_json::from_str(&o).ok())
            .unwrap_or(serde_json::Value::Null),
        reopened_count: row.get(16)?,
    })
}

fn key_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyRow> {
    let scopes: String = row.get(2)?;
    Ok(ApiKeyRow {
        id: row.get(0)?,
        name: row.get(1)?,
        scopes: scopes.split(',').filter(|s| !s.is_empty()).map(String::from).collect(),
        created_at: row.get(3)?,
        revoked_at: row.get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversations_and_messages_round_trip_and_reopen_at_the_same_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tierline.db");
        let store = Store::open(&path).unwrap();
        let account = serde_json::json!({"id": "acme", "plan": "enterprise"});
        store.create_conversation("c1", &serde_json::json!({"name": "Ada"}), &account).unwrap();
        let message = NewMessage {
            role: "customer",
            author: None,
            text: "I was charged twice".into(),
            decision: None,
            embedding: Some(vec![0.5, -1.0]),
        };
        let change = Change {
            status: Some(Status::Waiting),
            queue: Some("billing".into()),
            escalated: Some("billing".into()),
            ..Default::default()
        };
        store.record("c1", &[message], &change).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        let conversation = store.conversation("c1").unwrap().unwrap();
        assert_eq!((conversation.status, conversation.queue.as_deref()), (Status::Waiting, Some("billing")));
        assert_eq!(conversation.account, account);
        let messages = store.messages("c1").unwrap();
        assert_eq!(messages[0].embedding.as_deref(), Some(&[0.5, -1.0][..]));
        assert_eq!(store.waiting("billing", 10).unwrap().len(), 1);
        assert!(store.conversation("nope").unwrap().is_none());
        // A message for a conversation that does not exist is refused whole.
        let orphan = NewMessage { role: "customer", author: None, text: "x".into(), decision: None, embedding: None };
        assert!(store.record("nope", &[orphan], &Change::default()).is_err());
    }
}
