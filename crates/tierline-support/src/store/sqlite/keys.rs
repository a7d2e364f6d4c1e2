//! The `api_keys` table: only the SHA-256 of each key is stored.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::clock::now_ms;
use crate::store::*;

const COLUMNS: &str = "id, name, scopes, created_at, revoked_at, accounts";

/// A key row with its account list still as stored text (parsed by `parsed`).
fn key_row(row: &Row<'_>) -> rusqlite::Result<(ApiKeyRow, String)> {
    let scopes: String = row.get(2)?;
    let key = ApiKeyRow {
        id: row.get(0)?,
        name: row.get(1)?,
        scopes: scopes.split(',').filter(|s| !s.is_empty()).map(String::from).collect(),
        accounts: Vec::new(),
        created_at: row.get(3)?,
        revoked_at: row.get(4)?,
    };
    Ok((key, row.get(5)?))
}

fn parsed((mut key, accounts): (ApiKeyRow, String)) -> StoreResult<ApiKeyRow> {
    key.accounts = accounts_from_text(&key.id, &accounts)?;
    Ok(key)
}

pub fn insert(db: &Connection, id: &str, hash: &str, name: &str, scopes: &str, accounts: &str) -> StoreResult<()> {
    db.execute(
        "INSERT INTO api_keys (id, hash, name, scopes, created_at, accounts) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, hash, name, scopes, now_ms(), accounts],
    )?;
    Ok(())
}

pub fn by_hash(db: &Connection, hash: &str) -> StoreResult<Option<ApiKeyRow>> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE hash = ?1 AND revoked_at IS NULL");
    db.prepare_cached(&sql)?.query_row([hash], key_row).optional()?.map(parsed).transpose()
}

pub fn list(db: &Connection) -> StoreResult<Vec<ApiKeyRow>> {
    let mut statement = db.prepare_cached(&format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at"))?;
    let rows = statement.query_map([], key_row)?;
    rows.map(|row| parsed(row?)).collect()
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
