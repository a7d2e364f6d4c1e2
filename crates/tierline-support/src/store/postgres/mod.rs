//! The shared store: PostgreSQL through a connection pool (`tokio-postgres` + `deadpool`), for
//! several stateless tierline nodes. What must be global lives here: turns of one conversation
//! are serialised by a session advisory lock (released when its node dies), the sweeper's
//! handoffs are conditional on the status inside the transaction, one node at a time leads spike
//! detection, and `LISTEN/NOTIFY` carries events and knowledge-base edits to every node.
//!
//! A write that returns `Ok` is committed (PostgreSQL's default `synchronous_commit`).

mod conversations;
mod rest;
mod schema;

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::*;
use crate::insights::anomaly::Alert;
use crate::triage::AccountContext;

/// The advisory lock every node takes to migrate, so migrations run once.
const MIGRATION_LOCK: i64 = 0x7469_6572_6c69_6e01;
/// Advisory-lock space for conversations and leader roles (kept apart from other applications'
/// locks by this prefix mixed into the key).
const LOCK_SPACE: u64 = 0x7469_6572_0000_0000;

/// How long a turn waits for another node's turn of the same conversation before giving up.
const LOCK_TIMEOUT: &str = "20s";

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    url: String,
}

fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        // A SQL error is a bug or bad data; anything else (closed, I/O, timeout) means the
        // database cannot be reached now.
        match err.as_db_error() {
            Some(db) => StoreError::Other(anyhow::anyhow!("{}: {}", db.code().code(), db.message())),
            None => unavailable(err),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        unavailable(format!("no database connection: {err}"))
    }
}

impl PgStore {
    /// Connects a pool of `pool_size` connections and brings the schema up to date.
    pub async fn connect(url: &str, pool_size: usize) -> anyhow::Result<Self> {
        let config: tokio_postgres::Config = url.parse().map_err(|err| anyhow::anyhow!("`support.database`: {err}"))?;
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(2))
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()?;
        let store = Self { pool, url: url.to_string() };
        store.migrate().await.map_err(|err| anyhow::anyhow!("cannot migrate the PostgreSQL database: {err}"))?;
        Ok(store)
    }

    async fn client(&self) -> StoreResult<Object> {
        Ok(self.pool.get().await?)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .await?;
        let applied: i32 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", &[]).await?.get(0);
        let latest = schema::MIGRATIONS.len() as i32;
        if applied > latest {
            return Err(StoreError::Other(anyhow::anyhow!(
                "the database is at schema version {applied}, newer than this tierline ({latest})"
            )));
        }
        for (index, sql) in schema::MIGRATIONS.iter().enumerate().skip(applied as usize) {
            tx.batch_execute(sql).await?;
            let version = index as i32 + 1;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                &[&version, &crate::clock::now_ms()],
            )
            .await?;
            tracing::info!(version, "database migrated");
        }
        tx.commit().await?;
        Ok(())
    }
}

/// A stable advisory-lock key for `name` in tierline's space.
fn lock_key(kind: &str, name: &str) -> i64 {
    let hash = format!("{kind}:{name}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    ((hash & 0x0000_0000_ffff_ffff) | LOCK_SPACE) as i64
}

/// A session advisory lock on a pooled connection: released (and the connection returned) when
/// dropped; a connection that cannot unlock is closed, which releases the lock too.
struct SessionLock {
    client: Option<Object>,
    key: i64,
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        let key = self.key;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.execute("SELECT pg_advisory_unlock($1)", &[&key]).await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => drop(Object::take(client)),
        }
    }
}

#[async_trait]
impl Held for SessionLock {
    async fn still_held(&self) -> bool {
        match &self.client {
            Some(client) => client.query_one("SELECT 1", &[]).await.is_ok(),
            None => false,
        }
    }
}

#[async_trait]
impl Store for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.client().await?.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn create_conversation(
        &self,
        id: &str,
        customer: &serde_json::Value,
        account: &AccountContext,
        token_hash: Option<&str>,
    ) -> StoreResult<ConversationRow> {
        conversations::create(&self.client().await?, id, customer, account, token_hash).await
    }

    async fn conversation_by_token(&self, token_hash: &str) -> StoreResult<Option<String>> {
        let client = self.client().await?;
        let row = client.query_opt("SELECT id FROM conversations WHERE token_hash = $1", &[&token_hash]).await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn waiting_counts(&self) -> StoreResult<Vec<WaitingCount>> {
        conversations::waiting_counts(&self.client().await?).await
    }

    async fn conversation(&self, id: &str) -> StoreResult<Option<ConversationRow>> {
        conversations::get(&self.client().await?, id).await
    }

    async fn messages(&self, conversation: &str) -> StoreResult<Vec<MessageRow>> {
        conversations::messages(&self.client().await?, conversation, true).await
    }

    async fn record(&self, conversation: &str, messages: Vec<NewMessage>, change: Change) -> StoreResult<bool> {
        let mut client = self.client().await?;
        conversations::record(&mut client, conversation, &messages, &change).await
    }

    async fn lock_conversation(&self, conversation: &str) -> StoreResult<ConversationLock> {
        let client = self.client().await?;
        let key = lock_key("conversation", conversation);
        client.batch_execute(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'")).await?;
        client.execute("SELECT pg_advisory_lock($1)", &[&key]).await?;
        Ok(ConversationLock::new(SessionLock { client: Some(client), key }))
    }

    async fn waiting(&self, queue: &str, limit: usize) -> StoreResult<Vec<ConversationRow>> {
        conversations::waiting(&self.client().await?, queue, limit).await
    }

    async fn overdue(&self, started_before: i64, limit: usize) -> StoreResult<Vec<String>> {
        conversations::overdue(&self.client().await?, started_before, limit).await
    }

    async fn conversations_created(&self, page: &CreatedPage) -> StoreResult<Vec<ConversationRow>> {
        conversations::created(&self.client().await?, page).await
    }

    async fn first_decisions(&self, page: &CreatedPage) -> StoreResult<Vec<(ConversationRow, Option<StoredDecision>)>> {
        conversations::first_decisions(&self.client().await?, page).await
    }

    async fn account_conversations(&self, since: i64, account: Option<&str>) -> StoreResult<Vec<AccountConversation>> {
        conversations::of_accounts(&self.client().await?, since, account).await
    }

    async fn tickets(&self, since: i64, after_message: i64, limit: usize) -> StoreResult<Vec<StoredTicket>> {
        conversations::tickets(&self.client().await?, since, after_message, limit).await
    }

    async fn feedback(&self, filter: &FeedbackFilter) -> StoreResult<Vec<FeedbackRow>> {
        rest::feedback(&self.client().await?, filter).await
    }

    async fn review_feedback(&self, id: i64, status: FeedbackStatus, label: Option<&str>) -> StoreResult<bool> {
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE feedback SET status = $2, label = COALESCE($3, label), reviewed_at = $4 WHERE id = $1",
                &[&id, &status.as_str(), &label, &crate::clock::now_ms()],
            )
            .await?;
        Ok(changed > 0)
    }

    async fn save_alert(&self, alert: &Alert) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO alerts (id, raised_at, updated_at, active, body) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET updated_at = EXCLUDED.updated_at, active = EXCLUDED.active, body = EXCLUDED.body",
                &[&alert.id, &alert.raised_at, &alert.updated_at, &alert.active, &serde_json::to_string(alert)?],
            )
            .await?;
        Ok(())
    }

    async fn close_active_alerts(&self) -> StoreResult<usize> {
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE alerts SET active = FALSE, body = jsonb_set(body::jsonb, '{active}', 'false')::text WHERE active",
                &[],
            )
            .await?;
        Ok(changed as usize)
    }

    async fn alerts(&self, active_only: bool, limit: usize) -> StoreResult<Vec<Alert>> {
        rest::alerts(&self.client().await?, active_only, limit).await
    }

    async fn document(&self, name: &str) -> StoreResult<Option<(i64, String)>> {
        let client = self.client().await?;
        let row = client.query_opt("SELECT version, body FROM documents WHERE name = $1", &[&name]).await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    async fn save_document(&self, name: &str, body: &str) -> StoreResult<i64> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO documents (name, version, body) VALUES ($1, 1, $2)
                 ON CONFLICT (name) DO UPDATE SET version = documents.version + 1, body = EXCLUDED.body
                 RETURNING version",
                &[&name, &body],
            )
            .await?;
        Ok(row.get(0))
    }

    fn shared(&self) -> bool {
        true
    }

    async fn try_lead(&self, role: &str) -> StoreResult<Option<Leadership>> {
        let client = self.client().await?;
        let key = lock_key("leader", role);
        let won: bool = client.query_one("SELECT pg_try_advisory_lock($1)", &[&key]).await?.get(0);
        Ok(won.then(|| Leadership::new(SessionLock { client: Some(client), key })))
    }

    async fn notify(&self, channel: &str, payload: &str) -> StoreResult<()> {
        self.client().await?.execute("SELECT pg_notify($1, $2)", &[&channel, &payload]).await?;
        Ok(())
    }

    fn listen(&self, channels: &[&'static str]) -> Option<tokio::sync::mpsc::Receiver<Notification>> {
        Some(rest::listen(self.url.clone(), channels.to_vec()))
    }

    async fn insert_key(
        &self,
        id: &str,
        hash: &str,
        name: &str,
        scopes: &[String],
        accounts: &[String],
    ) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO api_keys (id, hash, name, scopes, created_at, accounts) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&id, &hash, &name, &scopes.join(","), &crate::clock::now_ms(), &accounts_to_text(accounts)],
            )
            .await?;
        Ok(())
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKeyRow>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, name, scopes, created_at, revoked_at, accounts FROM api_keys WHERE hash = $1 AND revoked_at IS NULL",
                &[&hash],
            )
            .await?;
        row.map(|r| rest::key_row(&r)).transpose()
    }

    async fn keys(&self) -> StoreResult<Vec<ApiKeyRow>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT id, name, scopes, created_at, revoked_at, accounts FROM api_keys ORDER BY created_at", &[])
            .await?;
        rows.iter().map(rest::key_row).collect()
    }

    async fn audit(
        &self,
        actor: &str,
        action: AuditAction,
        target: &str,
        detail: &serde_json::Value,
    ) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO audit (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
                &[&crate::clock::now_ms(), &actor, &action.as_str(), &target, &detail.to_string()],
            )
            .await?;
        Ok(())
    }

    async fn audit_log(&self, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, at, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT $1",
                &[&(limit as i64)],
            )
            .await?;
        let mut entries = Vec::new();
        for row in rows {
            let id: i64 = row.get(0);
            let corrupt = |reason: String| StoreError::Corrupt { table: "audit", id: id.to_string(), reason };
            let action: String = row.get(3);
            let action = AuditAction::parse(&action).ok_or_else(|| corrupt(format!("unknown action `{action}`")))?;
            let detail: String = row.get(5);
            let detail = serde_json::from_str(&detail).map_err(|err| corrupt(err.to_string()))?;
            entries.push(AuditEntry { id, at: row.get(1), actor: row.get(2), action, target: row.get(4), detail });
        }
        Ok(entries)
    }

    async fn customer_conversations(&self, customer: &str) -> StoreResult<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id FROM conversations
                 WHERE customer::jsonb ->> 'id' = $1 OR lower(customer::jsonb ->> 'email') = lower($1)",
                &[&customer],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn conversations_before(&self, before: i64, limit: usize) -> StoreResult<Vec<String>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id FROM conversations WHERE created_at < $1 ORDER BY created_at LIMIT $2",
                &[&before, &(limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn erase_conversations(&self, ids: &[String]) -> StoreResult<Erased> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let feedback = tx.execute("DELETE FROM feedback WHERE conversation_id = ANY($1)", &[&ids]).await?;
        let messages = tx.execute("DELETE FROM messages WHERE conversation_id = ANY($1)", &[&ids]).await?;
        let conversations = tx.execute("DELETE FROM conversations WHERE id = ANY($1)", &[&ids]).await?;
        tx.commit().await?;
        Ok(Erased { conversations: conversations as usize, messages: messages as usize, feedback: feedback as usize })
    }

    async fn key_count(&self) -> StoreResult<usize> {
        let client = self.client().await?;
        let count: i64 = client.query_one("SELECT COUNT(*) FROM api_keys", &[]).await?.get(0);
        Ok(count as usize)
    }

    async fn revoke_key(&self, id: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
                &[&id, &crate::clock::now_ms()],
            )
            .await?;
        Ok(changed > 0)
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("pool", &self.pool.status()).finish()
    }
}
