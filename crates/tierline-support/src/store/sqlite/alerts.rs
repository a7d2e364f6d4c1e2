//! The `alerts` table: every raised, updated or cleared spike alert, by id.

use rusqlite::{params, Connection};

use crate::insights::anomaly::Alert;
use crate::store::*;

pub fn save(db: &Connection, alert: &Alert) -> StoreResult<()> {
    db.execute(
        "INSERT INTO alerts (id, raised_at, updated_at, active, body) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at, active = excluded.active, body = excluded.body",
        params![alert.id, alert.raised_at, alert.updated_at, alert.active, serde_json::to_string(alert)?],
    )?;
    Ok(())
}

pub fn close_active(db: &Connection) -> StoreResult<usize> {
    Ok(db.execute(
        "UPDATE alerts SET active = 0, body = json_set(body, '$.active', json('false')) WHERE active = 1",
        [],
    )?)
}

pub fn list(db: &Connection, active_only: bool, limit: usize) -> StoreResult<Vec<Alert>> {
    let mut statement = db.prepare_cached(
        "SELECT id, body FROM alerts WHERE (?1 = 0 OR active = 1) ORDER BY raised_at DESC, id LIMIT ?2",
    )?;
    let rows = statement.query_map(params![active_only, limit as i64], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut alerts = Vec::new();
    for row in rows {
        let (id, body) = row?;
        let alert = serde_json::from_str(&body).map_err(|err| StoreError::Corrupt {
            table: "alerts",
            id,
            reason: format!("body does not parse: {err}"),
        })?;
        alerts.push(alert);
    }
    Ok(alerts)
}
