//! The `conversations` and `messages` tables in PostgreSQL.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use crate::clock::now_ms;
use crate::store::CONVERSATION_COLUMNS as COLUMNS;
use crate::store::*;
use crate::triage::{AccountContext, ReasonCode, Tier};

fn corrupt(id: &str, reason: String) -> StoreError {
    StoreError::Corrupt { table: "conversations", id: id.to_string(), reason }
}

/// A row of `COLUMNS` as its type, or what is corrupt in it.
fn parse(row: &Row) -> StoreResult<ConversationRow> {
    let id: String = row.get(0);
    let status: String = row.get(3);
    let status = Status::parse(&status).ok_or_else(|| corrupt(&id, format!("unknown status `{status}`")))?;
    let customer: String = row.get(4);
    let customer =
        serde_json::from_str(&customer).map_err(|err| corrupt(&id, format!("customer is not JSON: {err}")))?;
    let account: String = row.get(5);
    let account =
        serde_json::from_str(&account).map_err(|err| corrupt(&id, format!("account does not parse: {err}")))?;
    let tier = match row.get::<_, Option<String>>(7) {
        None => None,
        Some(text) => Some(Tier::parse(&text).ok_or_else(|| corrupt(&id, format!("unknown tier `{text}`")))?),
    };
    let escalation_reason = match row.get::<_, Option<String>>(10) {
        None => None,
        Some(text) => {
            Some(ReasonCode::parse(&text).ok_or_else(|| corrupt(&id, format!("unknown escalation reason `{text}`")))?)
        }
    };
    let outcome = match row.get::<_, Option<String>>(15) {
        None => ResolutionOutcome::default(),
        Some(text) => {
            serde_json::from_str(&text).map_err(|err| corrupt(&id, format!("outcome does not parse: {err}")))?
        }
    };
    Ok(ConversationRow {
        id,
        created_at: row.get(1),
        updated_at: row.get(2),
        status,
        customer,
        account,
        queue: row.get(6),
        tier,
        ai_exchanges: row.get::<_, i32>(8) as u32,
        escalated_at: row.get(9),
        escalation_reason,
        first_human_reply_at: row.get(11),
        resolved_at: row.get(12),
        resolved_by: row.get(13),
        csat: row.get::<_, Option<i16>>(14).map(|c| c as u8),
        outcome,
        reopened_count: row.get::<_, i32>(16) as u32,
    })
}

pub async fn create(
    client: &impl GenericClient,
    id: &str,
    customer: &serde_json::Value,
    account: &AccountContext,
    token_hash: Option<&str>,
) -> StoreResult<ConversationRow> {
    let now = now_ms();
    client
        .execute(
            "INSERT INTO conversations (id, created_at, updated_at, status, customer, account, account_id, token_hash)
             VALUES ($1, $2, $2, 'ai', $3, $4, $5, $6)",
            &[&id, &now, &customer.to_string(), &serde_json::to_string(account)?, &account.id, &token_hash],
        )
        .await?;
    get(client, id).await?.ok_or_else(|| StoreError::Other(anyhow::anyhow!("the conversation just stored is missing")))
}

pub async fn get(client: &impl GenericClient, id: &str) -> StoreResult<Option<ConversationRow>> {
    let row = client.query_opt(&format!("SELECT {COLUMNS} FROM conversations WHERE id = $1"), &[&id]).await?;
    row.as_ref().map(parse).transpose()
}

pub async fn messages(
    client: &impl GenericClient,
    conversation: &str,
    with_embeddings: bool,
) -> StoreResult<Vec<MessageRow>> {
    let rows = client
        .query(
            "SELECT id, role, author, text, created_at, decision, CASE WHEN $2 THEN embedding END
             FROM messages WHERE conversation_id = $1 ORDER BY id",
            &[&conversation, &with_embeddings],
        )
        .await?;
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.get(0);
        let bad = |reason: String| StoreError::Corrupt { table: "messages", id: id.to_string(), reason };
        let role: String = row.get(1);
        let role = Role::parse(&role).ok_or_else(|| bad(format!("unknown role `{role}`")))?;
        let detail =
            row.get::<_, Option<String>>(5).map(|json| MessageDetail::parse(role, &json)).transpose().map_err(bad)?;
        let embedding = row.get::<_, Option<Vec<u8>>>(6).map(|bytes| decode_embedding(&bytes));
        messages.push(MessageRow {
            id,
            role,
            author: row.get(2),
            text: row.get(3),
            created_at: row.get(4),
            detail,
            embedding,
        });
    }
    Ok(messages)
}

/// Appends `messages` and applies `change` in one transaction; the conversation row is locked
/// for the transaction, so a conditional change sees the status no other node is changing.
pub async fn record(
    client: &mut deadpool_postgres::Object,
    id: &str,
    messages: &[NewMessage],
    change: &Change,
) -> StoreResult<bool> {
    let now = now_ms();
    let tx = client.transaction().await?;
    let status: Option<String> =
        tx.query_opt("SELECT status FROM conversations WHERE id = $1 FOR UPDATE", &[&id]).await?.map(|r| r.get(0));
    let Some(status) = status else {
        return Err(StoreError::Other(anyhow::anyhow!("no conversation with id `{id}`")));
    };
    if let Some(required) = change.only_if_status {
        if status != required.as_str() {
            return Ok(false);
        }
    }
    for message in messages {
        let embedding: Option<Vec<u8>> =
            message.embedding.as_ref().map(|e| e.iter().flat_map(|v| v.to_le_bytes()).collect());
        let detail = message.detail.as_ref().map(serde_json::to_string).transpose()?;
        tx.execute(
            "INSERT INTO messages (conversation_id, role, author, text, created_at, decision, embedding, first_of_conversation)
             VALUES ($1, $2, $3, $4, $5, $6, $7,
                     $2 = 'customer' AND NOT EXISTS (SELECT 1 FROM messages WHERE conversation_id = $1 AND role = 'customer'))",
            &[&id, &message.role.as_str(), &message.author, &message.text, &now, &detail, &embedding],
        )
        .await?;
    }
    tx.execute("UPDATE conversations SET updated_at = $2 WHERE id = $1", &[&id, &now]).await?;
    if let Some(status) = change.status {
        tx.execute("UPDATE conversations SET status = $2 WHERE id = $1", &[&id, &status.as_str()]).await?;
    }
    if let Some(tier) = change.tier {
        tx.execute("UPDATE conversations SET tier = $2 WHERE id = $1", &[&id, &tier.as_str()]).await?;
    }
    if let Some(queue) = &change.queue {
        tx.execute("UPDATE conversations SET queue = $2 WHERE id = $1", &[&id, queue]).await?;
    }
    if change.reset_ai_exchanges {
        tx.execute("UPDATE conversations SET ai_exchanges = 0 WHERE id = $1", &[&id]).await?;
    }
    if change.add_ai_exchange {
        tx.execute("UPDATE conversations SET ai_exchanges = ai_exchanges + 1 WHERE id = $1", &[&id]).await?;
    }
    if let Some(reason) = change.escalated {
        let sql = if change.restart_escalation {
            "UPDATE conversations SET escalated_at = $2, escalation_reason = $3 WHERE id = $1"
        } else {
            "UPDATE conversations SET escalated_at = COALESCE(escalated_at, $2),
             escalation_reason = COALESCE(escalation_reason, $3) WHERE id = $1"
        };
        tx.execute(sql, &[&id, &now, &reason.as_str()]).await?;
    }
    if change.first_human_reply {
        tx.execute(
            "UPDATE conversations SET first_human_reply_at = COALESCE(first_human_reply_at, $2) WHERE id = $1",
            &[&id, &now],
        )
        .await?;
    }
    if let Some((by, csat)) = &change.resolved {
        let csat = csat.map(i16::from);
        tx.execute(
            "UPDATE conversations SET resolved_at = $2, resolved_by = $3, csat = $4 WHERE id = $1",
            &[&id, &now, by, &csat],
        )
        .await?;
    }
    if let Some(csat) = change.csat {
        tx.execute("UPDATE conversations SET csat = $2 WHERE id = $1", &[&id, &i16::from(csat)]).await?;
    }
    if let Some(outcome) = &change.outcome {
        tx.execute("UPDATE conversations SET outcome = $2 WHERE id = $1", &[&id, &serde_json::to_string(outcome)?])
            .await?;
    }
    if change.reopened {
        tx.execute(
            "UPDATE conversations SET reopened_count = reopened_count + 1, resolved_at = NULL WHERE id = $1",
            &[&id],
        )
        .await?;
    }
    for example in &change.feedback {
        tx.execute(
            "INSERT INTO feedback (created_at, conversation_id, head, text, label, predicted, kind) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[&now, &id, &example.head, &example.text, &example.label, &example.predicted, &example.kind.as_str()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

async fn query_conversations(
    client: &impl GenericClient,
    sql: &str,
    args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> StoreResult<Vec<ConversationRow>> {
    client.query(sql, args).await?.iter().map(parse).collect()
}

pub async fn waiting(client: &impl GenericClient, queue: &str, limit: usize) -> StoreResult<Vec<ConversationRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM conversations WHERE status = 'waiting' AND queue = $1 ORDER BY escalated_at, id LIMIT $2"
    );
    query_conversations(client, &sql, &[&queue, &(limit as i64)]).await
}

pub async fn waiting_counts(client: &impl GenericClient) -> StoreResult<Vec<WaitingCount>> {
    let rows = client
        .query(
            "SELECT queue, COUNT(*), MIN(COALESCE(escalated_at, updated_at)) FROM conversations
             WHERE status = 'waiting' AND queue IS NOT NULL GROUP BY queue ORDER BY queue",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| WaitingCount { queue: r.get(0), waiting: r.get::<_, i64>(1) as usize, oldest_escalated_at: r.get(2) })
        .collect())
}

pub async fn overdue(client: &impl GenericClient, started_before: i64, limit: usize) -> StoreResult<Vec<String>> {
    let rows = client
        .query(
            "SELECT id FROM conversations WHERE status = 'ai' AND created_at < $1 ORDER BY created_at LIMIT $2",
            &[&started_before, &(limit as i64)],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The window filter and order of a `CreatedPage`, over `conversations c`.
const PAGE_FILTER: &str = "c.created_at >= $1 AND c.created_at < $2 AND NOT (c.created_at = $3 AND c.id >= $4)
     ORDER BY c.created_at DESC, c.id DESC LIMIT $5";

pub async fn created(client: &impl GenericClient, page: &CreatedPage) -> StoreResult<Vec<ConversationRow>> {
    let (to, tie_at, tie_id) = page.bounds();
    let sql = format!("SELECT {} FROM conversations c WHERE {PAGE_FILTER}", conversation_columns("c"));
    query_conversations(client, &sql, &[&page.from, &to, &tie_at, &tie_id, &(page.limit as i64)]).await
}

pub async fn first_decisions(
    client: &impl GenericClient,
    page: &CreatedPage,
) -> StoreResult<Vec<(ConversationRow, Option<StoredDecision>)>> {
    let (to, tie_at, tie_id) = page.bounds();
    let sql = format!(
        "SELECT {}, m.id, m.decision FROM conversations c
         LEFT JOIN messages m ON m.conversation_id = c.id AND m.first_of_conversation
         WHERE {PAGE_FILTER}",
        conversation_columns("c")
    );
    let rows = client.query(&sql, &[&page.from, &to, &tie_at, &tie_id, &(page.limit as i64)]).await?;
    let mut page_rows = Vec::with_capacity(rows.len());
    for row in &rows {
        let decision = match (row.get::<_, Option<i64>>(17), row.get::<_, Option<String>>(18)) {
            (Some(id), Some(json)) => Some(stored_decision(id, &json)?),
            _ => None,
        };
        page_rows.push((parse(row)?, decision));
    }
    Ok(page_rows)
}

pub async fn of_accounts(
    client: &impl GenericClient,
    since: i64,
    account: Option<&str>,
) -> StoreResult<Vec<AccountConversation>> {
    let sql = format!(
        "SELECT {}, c.account_id FROM conversations c
         WHERE c.account_id IS NOT NULL AND ($2::TEXT IS NULL OR c.account_id = $2) AND c.created_at >= $1
         ORDER BY c.created_at",
        conversation_columns("c")
    );
    let rows = client.query(&sql, &[&since, &account]).await?;
    let mut conversations = Vec::with_capacity(rows.len());
    for row in &rows {
        conversations.push(AccountConversation {
            account_id: row.get(17),
            conversation: parse(row)?,
            customer_messages: Vec::new(),
        });
    }
    let position: HashMap<String, usize> =
        conversations.iter().enumerate().map(|(i, c)| (c.conversation.id.clone(), i)).collect();
    let rows = client
        .query(
            "SELECT m.id, m.conversation_id, m.created_at, m.decision FROM messages m JOIN conversations c ON c.id = m.conversation_id
             WHERE c.account_id IS NOT NULL AND ($2::TEXT IS NULL OR c.account_id = $2) AND c.created_at >= $1
               AND m.role = 'customer' ORDER BY m.id",
            &[&since, &account],
        )
        .await?;
    for row in rows {
        let (id, conversation, created_at): (i64, String, i64) = (row.get(0), row.get(1), row.get(2));
        let Some(&index) = position.get(&conversation) else { continue };
        let negativity = stored_negativity(id, row.get::<_, Option<String>>(3).as_deref())?;
        conversations[index].customer_messages.push((created_at, negativity));
    }
    Ok(conversations)
}

pub async fn tickets(
    client: &impl GenericClient,
    since: i64,
    after_message: i64,
    limit: usize,
) -> StoreResult<Vec<StoredTicket>> {
    let limit = if limit == 0 { i64::MAX } else { limit as i64 };
    let rows = client
        .query(
            "SELECT m.id, c.id, c.account_id, m.text, m.created_at, m.embedding FROM messages m
             JOIN conversations c ON c.id = m.conversation_id
             WHERE m.first_of_conversation AND m.id > $2 AND m.created_at >= $1 ORDER BY m.id LIMIT $3",
            &[&since, &after_message, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| StoredTicket {
            message_id: row.get(0),
            conversation_id: row.get(1),
            account_id: row.get(2),
            text: row.get(3),
            created_at: row.get(4),
            embedding: row.get::<_, Option<Vec<u8>>>(5).map(|b| decode_embedding(&b)).unwrap_or_default(),
        })
        .collect())
}

fn decode_embedding(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}
