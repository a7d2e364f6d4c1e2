//! The embedded store: one SQLite file in WAL mode with `synchronous = FULL` (a commit waits for
//! fsync), foreign keys on. One writer connection and a few reader connections, so reads never
//! queue behind an fsync'd write. Statements run on blocking threads.

mod alerts;
mod conversations;
mod erasure;
mod feedback;
mod keys;
mod schema;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension};
use tierline_infer::sync::MutexExt;

use super::*;
use crate::insights::anomaly::Alert;
use crate::triage::AccountContext;

/// Reader connections; WAL lets them read while the writer commits.
const READERS: usize = 4;

/// Stripes of in-process turn locks (one process owns a SQLite file), not one lock per id.
const TURN_LOCK_STRIPES: usize = 1024;

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    turn_locks: Vec<Arc<tokio::sync::Mutex<()>>>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        StoreError::Other(err.into())
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date. Blocking.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let writer = connect(path)?;
        migrate(&writer).with_context(|| format!("cannot migrate database {}", path.display()))?;
        let readers = (0..READERS).map(|_| connect(path).map(Mutex::new)).collect::<anyhow::Result<Vec<_>>>()?;
        let turn_locks = (0..TURN_LOCK_STRIPES).map(|_| Arc::new(tokio::sync::Mutex::new(()))).collect();
        Ok(Self {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                turn_locks,
            }),
        })
    }

    /// Runs `work` on a reader connection, off the async workers.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        run_blocking(move || work(&inner.reader())).await
    }

    /// Runs `work` on the writer connection, off the async workers.
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        run_blocking(move || work(&mut inner.writer.lock_unpoisoned())).await
    }
}

impl Inner {
    /// A free reader if there is one, else the next in turn.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        for reader in &self.readers {
            if let Ok(guard) = reader.try_lock() {
                return guard;
            }
        }
        let next = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[next].lock_unpoisoned()
    }
}

async fn run_blocking<T: Send + 'static>(work: impl FnOnce() -> StoreResult<T> + Send + 'static) -> StoreResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| StoreError::Other(anyhow::anyhow!("database task failed: {err}")))?
}

fn connect(path: &Path) -> anyhow::Result<Connection> {
    let connection = Connection::open(path).with_context(|| format!("cannot open database {}", path.display()))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    connection.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted rows (erasure, retention) are overwritten, not left in free pages.
    connection.pragma_update(None, "secure_delete", "ON")?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(connection)
}

fn migrate(db: &Connection) -> anyhow::Result<()> {
    let version: i64 = db.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let version = usize::try_from(version).unwrap_or(0);
    let latest = schema::MIGRATIONS.len();
    anyhow::ensure!(
        version <= latest,
        "the database is at schema version {version}, newer than this tierline ({latest})"
    );
    for (index, sql) in schema::MIGRATIONS.iter().enumerate().skip(version) {
        db.execute_batch("BEGIN IMMEDIATE")?;
        let applied = db.execute_batch(sql).and_then(|()| db.pragma_update(None, "user_version", (index + 1) as i64));
        match applied {
            Ok(()) => db.execute_batch("COMMIT")?,
            Err(err) => {
                let _ = db.execute_batch("ROLLBACK");
                return Err(err.into());
            }
        }
        tracing::info!(version = index + 1, "database migrated");
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|db| Ok(db.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    async fn create_conversation(
        &self,
        id: &str,
        customer: &serde_json::Value,
        account: &AccountContext,
        token_hash: Option<&str>,
    ) -> StoreResult<ConversationRow> {
        let (id, customer, account) = (id.to_string(), customer.to_string(), serde_json::to_string(account)?);
        let token_hash = token_hash.map(String::from);
        self.write(move |db| conversations::create(db, &id, &customer, &account, token_hash.as_deref())).await
    }

    async fn conversation_by_token(&self, token_hash: &str) -> StoreResult<Option<String>> {
        let hash = token_hash.to_string();
        self.read(move |db| conversations::by_token(db, &hash)).await
    }

    async fn waiting_counts(&self) -> StoreResult<Vec<WaitingCount>> {
        self.read(conversations::waiting_counts).await
    }

    async fn conversation(&self, id: &str) -> StoreResult<Option<ConversationRow>> {
        let id = id.to_string();
        self.read(move |db| conversations::get(db, &id)).await
    }

    async fn messages(&self, conversation: &str) -> StoreResult<Vec<MessageRow>> {
        let id = conversation.to_string();
        self.read(move |db| conversations::messages(db, &id, true)).await
    }

    async fn record(&self, conversation: &str, messages: Vec<NewMessage>, change: Change) -> StoreResult<bool> {
        let id = conversation.to_string();
        self.write(move |db| conversations::record(db, &id, &messages, &change)).await
    }

    async fn lock_conversation(&self, conversation: &str) -> StoreResult<ConversationLock> {
        let stripes = &self.inner.turn_locks;
        let stripe = stripes[(fnv1a(conversation) % stripes.len() as u64) as usize].clone();
        Ok(ConversationLock::new(stripe.lock_owned().await))
    }

    async fn waiting(&self, queue: &str, limit: usize) -> StoreResult<Vec<ConversationRow>> {
        let queue = queue.to_string();
        self.read(move |db| conversations::waiting(db, &queue, limit)).await
    }

    async fn overdue(&self, started_before: i64, limit: usize) -> StoreResult<Vec<String>> {
        self.read(move |db| conversations::overdue(db, started_before, limit)).await
    }

    async fn conversations_created(&self, page: &CreatedPage) -> StoreResult<Vec<ConversationRow>> {
        let page = page.clone();
        self.read(move |db| conversations::created(db, &page)).await
    }

    async fn first_decisions(&self, page: &CreatedPage) -> StoreResult<Vec<(ConversationRow, Option<StoredDecision>)>> {
        let page = page.clone();
        self.read(move |db| conversations::first_decisions(db, &page)).await
    }

    async fn account_conversations(&self, since: i64, account: Option<&str>) -> StoreResult<Vec<AccountConversation>> {
        let account = account.map(String::from);
        self.read(move |db| conversations::of_accounts(db, since, account.as_deref())).await
    }

    async fn tickets(&self, since: i64, after_message: i64, limit: usize) -> StoreResult<Vec<StoredTicket>> {
        self.read(move |db| conversations::tickets(db, since, after_message, limit)).await
    }

    async fn feedback(&self, filter: &FeedbackFilter) -> StoreResult<Vec<FeedbackRow>> {
        let filter = filter.clone();
        self.read(move |db| feedback::list(db, &filter)).await
    }

    async fn review_feedback(&self, id: i64, status: FeedbackStatus, label: Option<&str>) -> StoreResult<bool> {
        let label = label.map(String::from);
        self.write(move |db| feedback::review(db, id, status, label.as_deref())).await
    }

    async fn save_alert(&self, alert: &Alert) -> StoreResult<()> {
        let alert = alert.clone();
        self.write(move |db| alerts::save(db, &alert)).await
    }

    async fn close_active_alerts(&self) -> StoreResult<usize> {
        self.write(|db| alerts::close_active(db)).await
    }

    async fn alerts(&self, active_only: bool, limit: usize) -> StoreResult<Vec<Alert>> {
        self.read(move |db| alerts::list(db, active_only, limit)).await
    }

    async fn document(&self, name: &str) -> StoreResult<Option<(i64, String)>> {
        let name = name.to_string();
        self.read(move |db| {
            let row = db
                .prepare_cached("SELECT version, body FROM documents WHERE name = ?1")?
                .query_row([&name], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            Ok(row)
        })
        .await
    }

    async fn save_document(&self, name: &str, body: &str) -> StoreResult<i64> {
        let (name, body) = (name.to_string(), body.to_string());
        self.write(move |db| {
            Ok(db.query_row(
                "INSERT INTO documents (name, version, body) VALUES (?1, 1, ?2)
                 ON CONFLICT(name) DO UPDATE SET version = version + 1, body = excluded.body RETURNING version",
                rusqlite::params![name, body],
                |row| row.get(0),
            )?)
        })
        .await
    }

    fn shared(&self) -> bool {
        false
    }

    async fn try_lead(&self, _role: &str) -> StoreResult<Option<Leadership>> {
        // One process owns a SQLite file: it always leads.
        Ok(Some(Leadership::new(Alone)))
    }

    async fn notify(&self, _channel: &str, _payload: &str) -> StoreResult<()> {
        Ok(())
    }

    fn listen(&self, _channels: &[&'static str]) -> Option<tokio::sync::mpsc::Receiver<Notification>> {
        None
    }

    async fn insert_key(
        &self,
        id: &str,
        hash: &str,
        name: &str,
        scopes: &[String],
        accounts: &[String],
    ) -> StoreResult<()> {
        let (id, hash, name, scopes) = (id.to_string(), hash.to_string(), name.to_string(), scopes.join(","));
        let accounts = accounts_to_text(accounts);
        self.write(move |db| keys::insert(db, &id, &hash, &name, &scopes, &accounts)).await
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyRow>> {
        let hash = hash.to_string();
        self.read(move |db| keys::by_hash(db, &hash)).await
    }

    async fn keys(&self) -> StoreResult<Vec<ApiKeyRow>> {
        self.read(keys::list).await
    }

    async fn audit(
        &self,
        actor: &str,
        action: AuditAction,
        target: &str,
        detail: &serde_json::Value,
    ) -> StoreResult<()> {
        let (actor, target, detail) = (actor.to_string(), target.to_string(), detail.to_string());
        self.write(move |db| {
            db.execute(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![crate::clock::now_ms(), actor, action.as_str(), target, detail],
            )?;
            Ok(())
        })
        .await
    }

    async fn audit_log(&self, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.read(move |db| {
            let mut statement =
                db.prepare("SELECT id, at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?1")?;
            let rows = statement.query_map([limit as i64], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get::<_, String>(3)?,
                    row.get(4)?,
                    row.get::<_, String>(5)?,
                ))
            })?;
            let mut entries = Vec::new();
            for row in rows {
                let (id, at, actor, action, target, detail) = row?;
                entries.push(audit_entry(id, at, actor, &action, target, &detail)?);
            }
            Ok(entries)
        })
        .await
    }

    async fn customer_conversations(&self, customer: &str) -> StoreResult<Vec<String>> {
        let customer = customer.to_string();
        self.read(move |db| erasure::of_customer(db, &customer)).await
    }

    async fn conversations_before(&self, before: i64, limit: usize) -> StoreResult<Vec<String>> {
        self.read(move |db| erasure::created_before(db, before, limit)).await
    }

    async fn erase_conversations(&self, ids: &[String]) -> StoreResult<Erased> {
        let ids = ids.to_vec();
        self.write(move |db| erasure::erase(db, &ids)).await
    }

    async fn key_count(&self) -> StoreResult<usize> {
        self.read(keys::count).await
    }

    async fn revoke_key(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_string();
        self.write(move |db| keys::revoke(db, &id)).await
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(err: serde_json::Error) -> Self {
        StoreError::Other(err.into())
    }
}

/// FNV-1a: a stable hash for picking a lock stripe.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn audit_entry(id: i64, at: i64, actor: String, action: &str, target: String, detail: &str) -> StoreResult<AuditEntry> {
    let corrupt = |reason: String| StoreError::Corrupt { table: "audit", id: id.to_string(), reason };
    let action = AuditAction::parse(action).ok_or_else(|| corrupt(format!("unknown action `{action}`")))?;
    let detail = serde_json::from_str(detail).map_err(|err| corrupt(err.to_string()))?;
    Ok(AuditEntry { id, at, actor, action, target, detail })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triage::ReasonCode;

    fn customer(text: &str) -> NewMessage {
        NewMessage {
            role: Role::Customer,
            author: None,
            text: text.into(),
            detail: None,
            embedding: Some(vec![0.5, -1.0]),
        }
    }

    #[tokio::test]
    async fn conversations_and_messages_round_trip_and_reopen_at_the_same_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tierline.db");
        let store = SqliteStore::open(&path).unwrap();
        let account = AccountContext { id: Some("acme".into()), plan: Some("enterprise".into()), ..Default::default() };
        store.create_conversation("c1", &serde_json::json!({"name": "Ada"}), &account, None).await.unwrap();
        let change = Change {
            status: Some(Status::Waiting),
            queue: Some("billing".into()),
            escalated: Some(ReasonCode::Billing),
            ..Default::default()
        };
        assert!(store.record("c1", vec![customer("I was charged twice")], change).await.unwrap());
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        let conversation = store.conversation("c1").await.unwrap().unwrap();
        assert_eq!((conversation.status, conversation.queue.as_deref()), (Status::Waiting, Some("billing")));
        assert_eq!((conversation.account, conversation.escalation_reason), (account, Some(ReasonCode::Billing)));
        let messages = store.messages("c1").await.unwrap();
        assert_eq!(messages[0].embedding.as_deref(), Some(&[0.5, -1.0][..]));
        assert_eq!(store.waiting("billing", 10).await.unwrap().len(), 1);
        assert!(store.conversation("nope").await.unwrap().is_none());
        // The first customer message is the ticket; the second is not.
        store.record("c1", vec![customer("still waiting")], Change::default()).await.unwrap();
        let tickets = store.tickets(0, 0, 0).await.unwrap();
        assert_eq!(tickets.iter().map(|t| t.text.as_str()).collect::<Vec<_>>(), ["I was charged twice"]);
        // A message for a conversation that does not exist is refused whole.
        assert!(store.record("nope", vec![customer("x")], Change::default()).await.is_err());
    }

    #[tokio::test]
    async fn a_conditional_change_writes_nothing_when_the_status_moved_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        store.create_conversation("c1", &serde_json::json!({}), &AccountContext::default(), None).await.unwrap();
        let hand_over = || Change {
            status: Some(Status::Waiting),
            only_if_status: Some(Status::Ai),
            escalated: Some(ReasonCode::TimeLimit),
            ..Default::default()
        };
        let note = || vec![NewMessage::system("handed over".into(), ReasonCode::TimeLimit)];
        assert!(store.record("c1", note(), hand_over()).await.unwrap());
        assert!(!store.record("c1", note(), hand_over()).await.unwrap(), "the second sweeper finds it waiting");
        assert_eq!(store.messages("c1").await.unwrap().len(), 1, "exactly one handoff note");
    }

    #[tokio::test]
    async fn a_corrupt_row_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path).unwrap();
        store.create_conversation("c1", &serde_json::json!({}), &AccountContext::default(), None).await.unwrap();
        store.record("c1", vec![customer("hello")], Change::default()).await.unwrap();
        let raw = Connection::open(&path).unwrap();
        raw.execute("UPDATE messages SET decision = '{\"tier\": 7}'", []).unwrap();
        raw.execute("UPDATE conversations SET tier = 'platinum'", []).unwrap();
        let err = store.messages("c1").await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { table: "messages", .. }), "{err}");
        let err = store.conversation("c1").await.unwrap_err();
        assert!(err.to_string().contains("unknown tier `platinum`"), "{err}");
    }
}
