//! API keys and scopes. Keys are random 256-bit tokens shown once at creation; only their SHA-256
//! is stored, so a leaked database does not leak keys. Keys never appear in logs.

use std::str::FromStr;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::clock::{new_id, random_hex};
use crate::store::{ApiKeyRow, AuditAction, Store, StoreResult};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// A helpdesk integration: classify, answer, embed, run customer conversations.
    Helpdesk,
    /// Support agents: queues, handoff packets, agent replies, resolving, KB search.
    Agent,
    /// Everything, including knowledge-base edits and policy reloads.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Helpdesk => "helpdesk",
            Scope::Agent => "agent",
            Scope::Admin => "admin",
        }
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "helpdesk" => Ok(Scope::Helpdesk),
            "agent" => Ok(Scope::Agent),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("unknown scope `{other}` (helpdesk, agent, admin)")),
        }
    }
}

pub struct CreatedKey {
    pub id: String,
    /// The secret: shown once, never stored.
    pub key: String,
}

pub fn hash(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.as_bytes()))
}

pub async fn create(store: &dyn Store, name: &str, scopes: &[Scope]) -> anyhow::Result<CreatedKey> {
    create_for_accounts(store, name, scopes, &[]).await
}

/// A key kept to the conversations of `accounts` (their `account.id`); empty: every account.
/// A kept key cannot call the routes that span every account (queues, metrics, events...).
pub async fn create_for_accounts(
    store: &dyn Store,
    name: &str,
    scopes: &[Scope],
    accounts: &[String],
) -> anyhow::Result<CreatedKey> {
    anyhow::ensure!(!scopes.is_empty(), "a key needs at least one scope");
    anyhow::ensure!(!name.trim().is_empty(), "a key needs a name");
    anyhow::ensure!(accounts.iter().all(|a| !crate::text::is_blank(a)), "an account id must not be empty");
    anyhow::ensure!(
        accounts.is_empty() || !scopes.contains(&Scope::Admin),
        "an admin key manages every account: it cannot be kept to some"
    );
    let key = format!("tl_{}", random_hex(32)?);
    let id = new_id("key");
    let scopes: Vec<String> = scopes.iter().map(|s| s.as_str().to_string()).collect();
    store.insert_key(&id, &hash(&key), name, &scopes, accounts).await?;
    let detail = serde_json::json!({ "name": name, "scopes": scopes, "accounts": accounts });
    store.audit("cli", AuditAction::KeyCreated, &id, &detail).await?;
    Ok(CreatedKey { id, key })
}

/// Revokes a key; refuses to revoke the last live admin key (nobody could manage keys, and
/// the server would be locked or, worse, open).
pub async fn revoke(store: &dyn Store, id: &str) -> anyhow::Result<()> {
    let keys = store.keys().await?;
    let live_admin = |k: &&ApiKeyRow| k.revoked_at.is_none() && k.scopes.iter().any(|s| s == Scope::Admin.as_str());
    let Some(key) = keys.iter().find(|k| k.id == id && k.revoked_at.is_none()) else {
        anyhow::bail!("no live key with id `{id}`");
    };
    if live_admin(&key) && keys.iter().filter(live_admin).count() == 1 {
        anyhow::bail!("`{id}` is the last admin key: create another admin key before revoking it");
    }
    anyhow::ensure!(store.revoke_key(id).await?, "no live key with id `{id}`");
    store.audit("cli", AuditAction::KeyRevoked, id, &serde_json::json!({ "name": key.name })).await?;
    Ok(())
}

/// The live key matching `presented`, if any.
pub async fn verify(store: &dyn Store, presented: &str) -> StoreResult<Option<ApiKeyRow>> {
    store.key_by_hash(&hash(presented)).await
}

/// Whether `key` holds one of `accepted` (admin holds every scope).
pub fn allows(key: &ApiKeyRow, accepted: &[Scope]) -> bool {
    key.scopes.iter().any(|s| s == Scope::Admin.as_str() || accepted.iter().any(|a| a.as_str() == s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_stored_hashed_verified_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let created = create(&store, "zendesk", &[Scope::Helpdesk]).await.unwrap();
        assert!(created.key.starts_with("tl_") && created.key.len() == 67);
        let raw = std::fs::read(dir.path().join("t.db")).unwrap_or_default();
        let wal = std::fs::read(dir.path().join("t.db-wal")).unwrap_or_default();
        let needle = created.key.as_bytes();
        assert!(
            ![raw, wal].iter().any(|bytes| bytes.windows(needle.len()).any(|w| w == needle)),
            "plaintext key stored"
        );
        let key = verify(&store, &created.key).await.unwrap().unwrap();
        assert!(allows(&key, &[Scope::Helpdesk]) && !allows(&key, &[Scope::Admin]));
        assert!(verify(&store, "tl_wrong").await.unwrap().is_none());
        assert!(store.revoke_key(&created.id).await.unwrap());
        assert!(verify(&store, &created.key).await.unwrap().is_none());
    }
}
