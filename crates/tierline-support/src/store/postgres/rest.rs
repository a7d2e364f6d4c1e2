//! The `feedback`, `alerts` and `api_keys` tables in PostgreSQL, and the notification listener.

use std::time::Duration;

use deadpool_postgres::GenericClient;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use crate::insights::anomaly::Alert;
use crate::store::*;

pub async fn feedback(client: &impl GenericClient, filter: &FeedbackFilter) -> StoreResult<Vec<FeedbackRow>> {
    let statuses: Vec<String> = filter.statuses.iter().map(|s| s.as_str().to_string()).collect();
    let limit = if filter.limit == 0 { i64::MAX } else { filter.limit as i64 };
    let rows = client
        .query(
            "SELECT id, created_at, conversation_id, head, text, label, predicted, kind, status, reviewed_at FROM feedback
             WHERE id > $1 AND ($2::TEXT IS NULL OR head = $2) AND (cardinality($3::TEXT[]) = 0 OR status = ANY($3))
             ORDER BY id LIMIT $4",
            &[&filter.after_id, &filter.head, &statuses, &limit],
        )
        .await?;
    let mut examples = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.get(0);
        let bad = |reason: String| StoreError::Corrupt { table: "feedback", id: id.to_string(), reason };
        let kind: String = row.get(7);
        let kind = FeedbackKind::parse(&kind).ok_or_else(|| bad(format!("unknown kind `{kind}`")))?;
        let status: String = row.get(8);
        let status = FeedbackStatus::parse(&status).ok_or_else(|| bad(format!("unknown status `{status}`")))?;
        examples.push(FeedbackRow {
            id,
            created_at: row.get(1),
            conversation_id: row.get(2),
            head: row.get(3),
            text: row.get(4),
            label: row.get(5),
            predicted: row.get(6),
            kind,
            status,
            reviewed_at: row.get(9),
        });
    }
    Ok(examples)
}

pub async fn alerts(client: &impl GenericClient, active_only: bool, limit: usize) -> StoreResult<Vec<Alert>> {
    let rows = client
        .query(
            "SELECT id, body FROM alerts WHERE (NOT $1 OR active) ORDER BY raised_at DESC, id LIMIT $2",
            &[&active_only, &(limit as i64)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            let (id, body): (String, String) = (row.get(0), row.get(1));
            serde_json::from_str(&body).map_err(|err| StoreError::Corrupt {
                table: "alerts",
                id,
                reason: format!("body does not parse: {err}"),
            })
        })
        .collect()
}

pub fn key_row(row: &Row) -> StoreResult<ApiKeyRow> {
    let (id, scopes, accounts): (String, String, String) = (row.get(0), row.get(2), row.get(5));
    Ok(ApiKeyRow {
        accounts: accounts_from_text(&id, &accounts)?,
        id,
        name: row.get(1),
        scopes: scopes.split(',').filter(|s| !s.is_empty()).map(String::from).collect(),
        created_at: row.get(3),
        revoked_at: row.get(4),
    })
}

/// Notifications on `channels` from a connection of its own (a `LISTEN` needs one), reconnected
/// with backoff whenever it drops; the receiver sees each notification once.
pub fn listen(url: String, channels: Vec<&'static str>) -> tokio::sync::mpsc::Receiver<Notification> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        while !sender.is_closed() {
            match tokio_postgres::connect(&url, NoTls).await {
                Ok((client, mut connection)) => {
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                    let pump = tokio::spawn(async move {
                        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                        use futures_util::StreamExt;
                        while let Some(message) = messages.next().await {
                            match message {
                                Ok(AsyncMessage::Notification(n)) => {
                                    let _ = tx.send(Notification {
                                        channel: n.channel().into(),
                                        payload: n.payload().into(),
                                    });
                                }
                                Ok(_) => {}
                                Err(_) => break,
                            }
                        }
                    });
                    let listening = channels.iter().map(|c| format!("LISTEN {c};")).collect::<String>();
                    if client.batch_execute(&listening).await.is_ok() {
                        backoff = Duration::from_millis(200);
                        while let Some(notification) = rx.recv().await {
                            if sender.send(notification).await.is_err() {
                                break;
                            }
                        }
                    }
                    pump.abort();
                    tracing::warn!("notification listener lost its connection; reconnecting");
                }
                Err(err) => tracing::warn!(error = %err, "notification listener cannot connect; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    receiver
}
