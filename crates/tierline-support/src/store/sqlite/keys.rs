//! The `api_keys` table: only the SHA-256 of each key is stored.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::clock::now_ms;
use crate::store::*;

const COLUMNS: &str = "id, name, scopes, created_at, revoked_at";

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

pub fn insert(db: &Connection, id: &str, hash: &str, name: &str, scopes: &str) -> StoreResult<()> {
    db.execute(
        "INSERT INTO api_keys (id, hash, name, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, hash, name, scopes, now_ms()],
    )?;
    Ok(())
}

pub fn by_hash(db: &Connection, hash: &str) -> StoreResult<Option<ApiKeyRow>> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL");
    Ok(db.prepare_cached(&sql)?.query_row([hash], key_row).optional()?)
}

pub fn list(db: &Connection) -> StoreResult<Vec<ApiKeyRow>> {
    let mut statement = db.prepare_cached(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at"))?;
    let rows = statement.query_map([], key_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn count(db: &Connection) -> StoreResult<usize> {
    let count: i64 = db.query_row("SELECT COUNT(*) FROM api_keys", [], |row| row.get(0))?;
    Ok(count as usize)
}

pub fn revoke(db: &Connection, id: &str) -> StoreResult<bool> {
    let changed =
        db.execute("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL", params![id, now_ms()])?;
    Ok(changed > 0)
}
