//! The support layer's own settings: the `[support]` and `[kb]` sections of the configuration.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupportConfig {
    /// The database: a SQLite file relative to `data_dir` (one node), or a
    /// `postgres://user:password@host:port/db` URL (several nodes sharing it).
    pub database: PathBuf,
    /// Connections in the PostgreSQL pool (each running turn holds one for its lock).
    pub pool_size: usize,
    /// The triage policy: thresholds, phrases, queues, account rules.
    pub policy: PathBuf,
    /// API keys: `auto` (required once a key exists), `required`, or `off`.
    pub auth: AuthMode,
    /// Where anomaly alerts are POSTed as JSON (`http://` only); empty: no webhook.
    pub alert_webhook_url: String,
    /// Attempts per alert before the webhook gives up (backoff 1 s, 2 s, 4 s...).
    pub alert_webhook_attempts: u32,
    /// Whether a customer's browser may start a chat (`POST /v1/chat/conversations`) without a
    /// key; off: the host page's backend starts it with a helpdesk key and hands the widget the
    /// token.
    pub public_chat: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Auto,
    Required,
    Off,
}

impl Default for SupportConfig {
    fn default() -> Self {
        Self {
            database: PathBuf::from("tierline.db"),
            pool_size: 16,
            policy: PathBuf::from("models/policy.toml"),
            auth: AuthMode::Auto,
            alert_webhook_url: String::new(),
            alert_webhook_attempts: 5,
            public_chat: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KbConfig {
    /// Folder of Markdown articles and/or JSONL rows to index at start; empty disables the KB.
    pub source: PathBuf,
    /// Where the index lives, relative to `data_dir`.
    pub index_dir: PathBuf,
    /// Below this confidence `/v1/answer` returns `answered: false` with the reason.
    pub min_confidence: f32,
    /// The answerability model (`tierline index answerability`) that gives answers their
    /// confidence; empty: a fixed curve of the best passage's cosine.
    pub answerability: PathBuf,
}

impl Default for KbConfig {
    fn default() -> Self {
        Self {
            source: PathBuf::from("index/kb"),
            index_dir: PathBuf::from("kb"),
            min_confidence: 0.5,
            answerability: PathBuf::from("models/answerability.json"),
        }
    }
}

impl KbConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((0.0..=1.0).contains(&self.min_confidence), "`kb.min_confidence` must be between 0 and 1");
        Ok(())
    }
}

impl SupportConfig {
    /// Whether the database is a PostgreSQL server several nodes share.
    pub fn is_shared(&self) -> bool {
        self.database.to_str().is_some_and(|d| d.starts_with("postgres://") || d.starts_with("postgresql://"))
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.pool_size >= 2,
            "`support.pool_size` must be at least 2 (a turn holds one connection for its lock)"
        );
        let webhook = &self.alert_webhook_url;
        anyhow::ensure!(
            webhook.is_empty() || webhook.starts_with("http://"),
            "`support.alert_webhook_url` must be an http:// URL (got `{webhook}`); TLS is left to a local relay"
        );
        anyhow::ensure!(self.alert_webhook_attempts > 0, "`support.alert_webhook_attempts` must be greater than 0");
        Ok(())
    }
}

/// `[privacy]`: what is redacted before anything is stored, and how long conversations are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Kinds replaced by typed placeholders in stored messages, live events, handoff packets
    /// and logs: email, phone, card, iban, secret. `[]` stores text as written.
    pub redact: Vec<crate::privacy::Redaction>,
    /// Conversations (and their messages, feedback and derived rows) older than this many days
    /// are deleted by the sweeper; 0 keeps them.
    pub retention_days: u32,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self { redact: crate::privacy::Redaction::ALL.to_vec(), retention_days: 0 }
    }
}
