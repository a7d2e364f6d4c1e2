//! The `conversations` and `messages` tables.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::clock::now_ms;
use crate::store::CONVERSATION_COLUMNS as COLUMNS;
use crate::store::*;
use crate::triage::{ReasonCode, Tier};

/// The columns above as read straight from a row; `parse` turns them into a typed row or says
/// what is corrupt.
struct RawConversation {
    id: String,
    created_at: i64,
    updated_at: i64,
    status: String,
    customer: String,
    account: String,
    queue: Option<String>,
    tier: Option<String>,
    ai_exchanges: u32,
    escalated_at: Option<i64>,
    escalation_reason: Option<String>,
    first_human_reply_at: Option<i64>,
    resolved_at: Option<i64>,
    resolved_by: Option<String>,
    csat: Option<u8>,
    outcome: Option<String>,
    reopened_count: u32,
}

fn raw(row: &Row<'_>) -> rusqlite::Result<RawConversation> {
    Ok(RawConversation {
        id: row.get(0)?,
        created_at: row.get(1)?,
        updated_at: row.get(2)?,
        status: row.get(3)?,
        customer: row.get(4)?,
        account: row.get(5)?,
        queue: row.get(6)?,
        tier: row.get(7)?,
        ai_exchanges: row.get(8)?,
        escalated_at: row.get(9)?,
        escalation_reason: row.get(10)?,
        first_human_reply_at: row.get(11)?,
        resolved_at: row.get(12)?,
        resolved_by: row.get(13)?,
        csat: row.get(14)?,
        outcome: row.get(15)?,
        reopened_count: row.get(16)?,
    })
}

fn corrupt(id: &str, reason: String) -> StoreError {
    StoreError::Corrupt { table: "conversations", id: id.to_string(), reason }
}

impl RawConversation {
    fn parse(self) -> StoreResult<ConversationRow> {
        let id = self.id;
        let status =
            Status::parse(&self.status).ok_or_else(|| corrupt(&id, format!("unknown status `{}`", self.status)))?;
        let customer =
            serde_json::from_str(&self.customer).map_err(|err| corrupt(&id, format!("customer is not JSON: {err}")))?;
        let account = serde_json::from_str(&self.account)
            .map_err(|err| corrupt(&id, format!("account does not parse: {err}")))?;
        let tier = match self.tier.as_deref() {
            None => None,
            Some(text) => Some(Tier::parse(text).ok_or_else(|| corrupt(&id, format!("unknown tier `{text}`")))?),
        };
        let escalation_reason = match self.escalation_reason.as_deref() {
            None => None,
            Some(text) => Some(
                ReasonCode::parse(text).ok_or_else(|| corrupt(&id, format!("unknown escalation reason `{text}`")))?,
            ),
        };
        let outcome = match self.outcome.as_deref() {
            None => ResolutionOutcome::default(),
            Some(text) => {
                serde_json::from_str(text).map_err(|err| corrupt(&id, format!("outcome does not parse: {err}")))?
            }
        };
        Ok(ConversationRow {
            id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            status,
            customer,
            account,
            queue: self.queue,
            tier,
            ai_exchanges: self.ai_exchanges,
            escalated_at: self.escalated_at,
            escalation_reason,
            first_human_reply_at: self.first_human_reply_at,
            resolved_at: self.resolved_at,
            resolved_by: self.resolved_by,
            csat: self.csat,
            outcome,
            reopened_count: self.reopened_count,
        })
    }
}

fn query_conversations(db: &Connection, sql: &str, args: impl rusqlite::Params) -> StoreResult<Vec<ConversationRow>> {
    let mut statement = db.prepare_cached(sql)?;
    let rows = statement.query_map(args, raw)?.collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(RawConversation::parse).collect()
}

pub fn create(
    db: &Connection,
    id: &str,
    customer: &str,
    account: &str,
    token_hash: Option<&str>,
) -> StoreResult<ConversationRow> {
    db.execute(
        "INSERT INTO conversations (id, created_at, updated_at, status, customer, account, token_hash)
         VALUES (?1, ?2, ?2, 'ai', ?3, ?4, ?5)",
        params![id, now_ms(), customer, account, token_hash],
    )?;
    get(db, id)?.ok_or_else(|| StoreError::Other(anyhow::anyhow!("the conversation just stored is missing")))
}

pub fn by_token(db: &Connection, token_hash: &str) -> StoreResult<Option<String>> {
    Ok(db
        .prepare_cached("SELECT id FROM conversations WHERE token_hash = ?1")?
        .query_row([token_hash], |row| row.get(0))
        .optional()?)
}

pub fn waiting_counts(db: &Connection) -> StoreResult<Vec<WaitingCount>> {
    let mut statement = db.prepare_cached(
        "SELECT queue, COUNT(*), MIN(COALESCE(escalated_at, updated_at)) FROM conversations
         WHERE status = 'waiting' AND queue IS NOT NULL GROUP BY queue ORDER BY queue",
    )?;
    let rows = statement.query_map([], |row| {
        Ok(WaitingCount {
            queue: row.get(0)?,
            waiting: row.get::<_, i64>(1)? as usize,
            oldest_escalated_at: row.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn get(db: &Connection, id: &str) -> StoreResult<Option<ConversationRow>> {
    let sql = format!("SELECT {COLUMNS} FROM conversations WHERE id = ?1");
    let found = db.prepare_cached(&sql)?.query_row([id], raw).optional()?;
    found.map(RawConversation::parse).transpose()
}

pub fn messages(db: &Connection, conversation: &str, with_embeddings: bool) -> StoreResult<Vec<MessageRow>> {
    let mut statement = db.prepare_cached(
        "SELECT id, role, author, text, created_at, decision, CASE WHEN ?2 THEN embedding END
         FROM messages WHERE conversation_id = ?1 ORDER BY id",
    )?;
    let rows = statement.query_map(params![conversation, with_embeddings], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, Option<String>>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, i64>(4)?,
            row.get::<_, Option<String>>(5)?,
            row.get::<_, Option<Vec<u8>>>(6)?,
        ))
    })?;
    let mut messages = Vec::new();
    for row in rows {
        let (id, role, author, text, created_at, detail, embedding) = row?;
        let bad = |reason: String| StoreError::Corrupt { table: "messages", id: id.to_string(), reason };
        let role = Role::parse(&role).ok_or_else(|| bad(format!("unknown role `{role}`")))?;
        let detail = detail.map(|json| MessageDetail::parse(role, &json)).transpose().map_err(bad)?;
        let embedding = embedding.map(|bytes| decode_embedding(&bytes));
        messages.push(MessageRow { id, role, author, text, created_at, detail, embedding });
    }
    Ok(messages)
}

/// Appends `messages` and applies `change` in one transaction.
pub fn record(db: &mut Connection, id: &str, messages: &[NewMessage], change: &Change) -> StoreResult<bool> {
    let now = now_ms();
    let tx = db.transaction()?;
    if let Some(required) = change.only_if_status {
        let status: Option<String> =
            tx.query_row("SELECT status FROM conversations WHERE id = ?1", [id], |row| row.get(0)).optional()?;
        if status.as_deref() != Some(required.as_str()) {
            return Ok(false);
        }
    }
    for message in messages {
        let embedding: Option<Vec<u8>> =
            message.embedding.as_ref().map(|e| e.iter().flat_map(|v| v.to_le_bytes()).collect());
        let detail = message.detail.as_ref().map(serde_json::to_string).transpose()?;
        tx.execute(
            "INSERT INTO messages (conversation_id, role, author, text, created_at, decision, embedding, first_of_conversation)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,
                     ?2 = 'customer' AND NOT EXISTS (SELECT 1 FROM messages WHERE conversation_id = ?1 AND role = 'customer'))",
            params![id, message.role.as_str(), message.author, message.text, now, detail, embedding],
        )?;
    }
    let changed = tx.execute("UPDATE conversations SET updated_at = ?2 WHERE id = ?1", params![id, now])?;
    if changed == 0 {
        return Err(StoreError::Other(anyhow::anyhow!("no conversation with id `{id}`")));
    }
    if let Some(status) = change.status {
        tx.execute("UPDATE conversations SET status = ?2 WHERE id = ?1", params![id, status.as_str()])?;
    }
    if let Some(tier) = change.tier {
        tx.execute("UPDATE conversations SET tier = ?2 WHERE id = ?1", params![id, tier.as_str()])?;
    }
    if let Some(queue) = &change.queue {
        tx.execute("UPDATE conversations SET queue = ?2 WHERE id = ?1", params![id, queue])?;
    }
    if change.reset_ai_exchanges {
        tx.execute("UPDATE conversations SET ai_exchanges = 0 WHERE id = ?1", [id])?;
    }
    if change.add_ai_exchange {
        tx.execute("UPDATE conversations SET ai_exchanges = ai_exchanges + 1 WHERE id = ?1", [id])?;
    }
    if let Some(reason) = change.escalated {
        let sql = if change.restart_escalation {
            "UPDATE conversations SET escalated_at = ?2, escalation_reason = ?3 WHERE id = ?1"
        } else {
            "UPDATE conversations SET escalated_at = COALESCE(escalated_at, ?2),
             escalation_reason = COALESCE(escalation_reason, ?3) WHERE id = ?1"
        };
        tx.execute(sql, params![id, now, reason.as_str()])?;
    }
    if change.first_human_reply {
        tx.execute(
            "UPDATE conversations SET first_human_reply_at = COALESCE(first_human_reply_at, ?2) WHERE id = ?1",
            params![id, now],
        )?;
    }
    if let Some((by, csat)) = &change.resolved {
        tx.execute(
            "UPDATE conversations SET resolved_at = ?2, resolved_by = ?3, csat = ?4 WHERE id = ?1",
            params![id, now, by, csat],
        )?;
    }
    if let Some(csat) = change.csat {
        tx.execute("UPDATE conversations SET csat = ?2 WHERE id = ?1", params![id, csat])?;
    }
    if let Some(outcome) = &change.outcome {
        tx.execute(
            "UPDATE conversations SET outcome = ?2 WHERE id = ?1",
            params![id, serde_json::to_string(outcome)?],
        )?;
    }
    if change.reopened {
        tx.execute(
            "UPDATE conversations SET reopened_count = reopened_count + 1, resolved_at = NULL WHERE id = ?1",
            [id],
        )?;
    }
    for example in &change.feedback {
        tx.execute(
            "INSERT INTO feedback (created_at, conversation_id, head, text, label, predicted, kind) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![now, id, example.head, example.text, example.label, example.predicted, example.kind.as_str()],
        )?;
    }
    tx.commit()?;
    Ok(true)
}

pub fn waiting(db: &Connection, queue: &str, limit: usize) -> StoreResult<Vec<ConversationRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM conversations WHERE status = 'waiting' AND queue = ?1 ORDER BY escalated_at, id LIMIT ?2"
    );
    query_conversations(db, &sql, params![queue, limit as i64])
}

pub fn overdue(db: &Connection, started_before: i64, limit: usize) -> StoreResult<Vec<String>> {
    let mut statement = db.prepare_cached(
        "SELECT id FROM conversations WHERE status = 'ai' AND created_at < ?1 ORDER BY created_at LIMIT ?2",
    )?;
    let rows = statement.query_map(params![started_before, limit as i64], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The window filter and order of a `CreatedPage`, over `conversations c`.
const PAGE_FILTER: &str = "c.created_at >= ?1 AND c.created_at < ?2 AND NOT (c.created_at = ?3 AND c.id >= ?4)
     ORDER BY c.created_at DESC, c.id DESC LIMIT ?5";

pub fn created(db: &Connection, page: &CreatedPage) -> StoreResult<Vec<ConversationRow>> {
    let (to, tie_at, tie_id) = page.bounds();
    let sql = format!("SELECT {} FROM conversations c WHERE {PAGE_FILTER}", conversation_columns("c"));
    query_conversations(db, &sql, params![page.from, to, tie_at, tie_id, page.limit as i64])
}

pub fn first_decisions(
    db: &Connection,
    page: &CreatedPage,
) -> StoreResult<Vec<(ConversationRow, Option<StoredDecision>)>> {
    let (to, tie_at, tie_id) = page.bounds();
    let sql = format!(
        "SELECT {}, m.id, m.decision FROM conversations c
         LEFT JOIN messages m ON m.conversation_id = c.id AND m.first_of_conversation = 1
         WHERE {PAGE_FILTER}",
        conversation_columns("c")
    );
    let mut statement = db.prepare_cached(&sql)?;
    let rows = statement
        .query_map(params![page.from, to, tie_at, tie_id, page.limit as i64], |row| {
            Ok((raw(row)?, row.get::<_, Option<i64>>(17)?, row.get::<_, Option<String>>(18)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(conversation, message_id, decision)| {
            let decision = match (message_id, decision) {
                (Some(id), Some(json)) => Some(stored_decision(id, &json)?),
                _ => None,
            };
            Ok((conversation.parse()?, decision))
        })
        .collect()
}

/// Conversations of identified accounts (one account, or all) with the negativity of each
/// customer message. Two queries whatever the count.
pub fn of_accounts(db: &Connection, since: i64, account: Option<&str>) -> StoreResult<Vec<AccountConversation>> {
    // Separate statements, so the one-account case uses the (account_id, created_at) index.
    let (filter, key) = match account {
        Some(id) => ("c.account_id = ?2", id),
        None => ("c.account_id IS NOT NULL AND ?2 = ''", ""),
    };
    let sql = format!(
        "SELECT {}, c.account_id FROM conversations c WHERE {filter} AND c.created_at >= ?1 ORDER BY c.created_at",
        conversation_columns("c")
    );
    let mut statement = db.prepare_cached(&sql)?;
    let rows = statement
        .query_map(params![since, key], |row| Ok((raw(row)?, row.get::<_, String>(17)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut conversations = Vec::with_capacity(rows.len());
    for (row, account_id) in rows {
        conversations.push(AccountConversation {
            account_id,
            conversation: row.parse()?,
            customer_messages: Vec::new(),
        });
    }
    let position: HashMap<String, usize> =
        conversations.iter().enumerate().map(|(i, c)| (c.conversation.id.clone(), i)).collect();
    let mut statement = db.prepare_cached(&format!(
        "SELECT m.id, m.conversation_id, m.created_at, m.decision FROM messages m JOIN conversations c ON c.id = m.conversation_id
         WHERE {filter} AND c.created_at >= ?1 AND m.role = 'customer' ORDER BY m.id"
    ))?;
    let rows = statement.query_map(params![since, key], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?, row.get::<_, Option<String>>(3)?))
    })?;
    for row in rows {
        let (id, conversation, created_at, detail) = row?;
        let Some(&index) = position.get(&conversation) else { continue };
        let negativity = stored_negativity(id, detail.as_deref())?;
        conversations[index].customer_messages.push((created_at, negativity));
    }
    Ok(conversations)
}

pub fn tickets(db: &Connection, since: i64, after_message: i64, limit: usize) -> StoreResult<Vec<StoredTicket>> {
    let mut statement = db.prepare_cached(
        "SELECT m.id, c.id, c.account_id, m.text, m.created_at, m.embedding FROM messages m
         JOIN conversations c ON c.id = m.conversation_id
         WHERE m.first_of_conversation = 1 AND m.id > ?2 AND m.created_at >= ?1 ORDER BY m.id LIMIT ?3",
    )?;
    let limit = if limit == 0 { i64::MAX } else { limit as i64 };
    let rows = statement.query_map(params![since, after_message, limit], |row| {
        let embedding: Option<Vec<u8>> = row.get(5)?;
        Ok(StoredTicket {
            message_id: row.get(0)?,
            conversation_id: row.get(1)?,
            account_id: row.get(2)?,
            text: row.get(3)?,
            created_at: row.get(4)?,
            embedding: embedding.map(|bytes| decode_embedding(&bytes)).unwrap_or_default(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn decode_embedding(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}
