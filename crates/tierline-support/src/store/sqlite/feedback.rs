//! The `feedback` table: labeled examples learned from resolutions, with their review state.

use rusqlite::{params, Connection};

use crate::clock::now_ms;
use crate::store::*;

pub fn list(db: &Connection, filter: &FeedbackFilter) -> StoreResult<Vec<FeedbackRow>> {
    let mut statement = db.prepare_cached(
        "SELECT id, created_at, conversation_id, head, text, label, predicted, kind, status, reviewed_at FROM feedback
         WHERE id > ?1 AND (?2 IS NULL OR head = ?2) AND (?3 = '' OR instr(?3, ',' || status || ',') > 0)
         ORDER BY id LIMIT ?4",
    )?;
    let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    let status_list = if statuses.is_empty() { String::new() } else { format!(",{},", statuses.join(",")) };
    let limit = if filter.limit == 0 { i64::MAX } else { filter.limit as i64 };
    let rows = statement.query_map(params![filter.after_id, filter.head, status_list, limit], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, Option<String>>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, String>(5)?,
            row.get::<_, Option<String>>(6)?,
            row.get::<_, String>(7)?,
            row.get::<_, String>(8)?,
            row.get::<_, Option<i64>>(9)?,
        ))
    })?;
    let mut examples = Vec::new();
    for row in rows {
        let (id, created_at, conversation_id, head, text, label, predicted, kind, status, reviewed_at) = row?;
        let bad = |reason: String| StoreError::Corrupt { table: "feedback", id: id.to_string(), reason };
        let kind = FeedbackKind::parse(&kind).ok_or_else(|| bad(format!("unknown kind `{kind}`")))?;
        let status = FeedbackStatus::parse(&status).ok_or_else(|| bad(format!("unknown status `{status}`")))?;
        examples.push(FeedbackRow {
            id,
            created_at,
            conversation_id,
            head,
            text,
            label,
            predicted,
            kind,
            status,
            reviewed_at,
        });
    }
    Ok(examples)
}

pub fn review(db: &Connection, id: i64, status: FeedbackStatus, label: Option<&str>) -> StoreResult<bool> {
    let changed = db.execute(
        "UPDATE feedback SET status = ?2, label = COALESCE(?3, label), reviewed_at = ?4 WHERE id = ?1",
        params![id, status.as_str(), label, now_ms()],
    )?;
    Ok(changed > 0)
}
