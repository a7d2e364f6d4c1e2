//! Erasure and retention: whole conversations removed with everything derived from them.
//! `secure_delete` (set on every connection) overwrites the freed pages and a truncating
//! checkpoint empties the WAL, so erased text is gone from the files, not only from queries.

use rusqlite::{params_from_iter, Connection};

use crate::store::*;

/// Conversations whose customer details carry this id or e-mail (case-insensitive).
pub fn of_customer(db: &Connection, customer: &str) -> StoreResult<Vec<String>> {
    let mut statement = db.prepare(
        "SELECT id FROM conversations
         WHERE json_extract(customer, '$.id') = ?1 OR lower(json_extract(customer, '$.email')) = lower(?1)",
    )?;
    let ids = statement.query_map([customer], |row| row.get(0))?.collect::<Result<Vec<String>, _>>()?;
    Ok(ids)
}

pub fn created_before(db: &Connection, before: i64, limit: usize) -> StoreResult<Vec<String>> {
    let mut statement =
        db.prepare("SELECT id FROM conversations WHERE created_at < ?1 ORDER BY created_at LIMIT ?2")?;
    let ids = statement.query_map(rusqlite::params![before, limit as i64], |row| row.get(0))?;
    Ok(ids.collect::<Result<Vec<String>, _>>()?)
}

pub fn erase(db: &mut Connection, ids: &[String]) -> StoreResult<Erased> {
    if ids.is_empty() {
        return Ok(Erased::default());
    }
    let marks = vec!["?"; ids.len()].join(",");
    let tx = db.transaction()?;
    let feedback =
        tx.execute(&format!("DELETE FROM feedback WHERE conversation_id IN ({marks})"), params_from_iter(ids))?;
    let messages =
        tx.execute(&format!("DELETE FROM messages WHERE conversation_id IN ({marks})"), params_from_iter(ids))?;
    let conversations =
        tx.execute(&format!("DELETE FROM conversations WHERE id IN ({marks})"), params_from_iter(ids))?;
    tx.commit()?;
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(Erased { conversations, messages, feedback })
}
