//! Typed configuration: one TOML file (`tierline.toml`) with documented defaults, overridden by
//! `TIERLINE_<SECTION>__<KEY>` environment variables. Invalid values fail at start with the key named.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use tierline_infer::settings::{EngineConfig, InferSettings, ModelsConfig};
use tierline_support::insights::anomaly::AnomalyConfig;
use tierline_support::settings::{KbConfig, PrivacyConfig, SupportConfig};

/// Prefix of environment overrides: `TIERLINE_SERVER__PORT=9000` sets `server.port`.
pub const ENV_PREFIX: &str = "TIERLINE_";

/// Variables under the prefix that are not configuration: the command line's own (`--config`,
/// `--key`), the kernel override, and the bench scripts' binary.
const NOT_CONFIG: [&str; 4] = ["TIERLINE_CONFIG", "TIERLINE_KEY", "TIERLINE_SIMD", "TIERLINE_BIN"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Folder for tierline's own state: model cache, indexes, database.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub models: ModelsConfig,
    pub engine: EngineConfig,
    pub kb: KbConfig,
    pub support: SupportConfig,
    /// Spike detection over ticket embeddings.
    pub anomaly: AnomalyConfig,
    pub privacy: PrivacyConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Largest accepted request body, in bytes (413 above).
    pub max_body_bytes: usize,
    /// Most texts in one `/v1/embed` request (422 above).
    pub max_texts_per_request: usize,
    /// Longest accepted text, in characters (413 above; the OpenAPI document's `maxLength`).
    /// Texts are truncated to the model's maximum number of tokens, so this only guards memory.
    #[serde(alias = "max_text_bytes")]
    pub max_text_chars: usize,
    /// Longest knowledge-base article body (or approved answer) accepted over HTTP, in
    /// characters (413 above).
    #[serde(alias = "max_article_bytes")]
    pub max_article_chars: usize,
    /// A request still waiting for inference after this long gets 503.
    pub request_timeout_ms: u64,
    /// How long graceful shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
    /// Support gauges on `/metrics` are recomputed this often in the background (a scrape
    /// only reads them), so scrapes never rescan conversations.
    pub metrics_refresh_secs: u64,
    /// `/metrics` needs an agent (or admin) key like the API routes.
    pub metrics_require_key: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            server: ServerConfig::default(),
            models: ModelsConfig::default(),
            engine: EngineConfig::default(),
            kb: KbConfig::default(),
            support: SupportConfig::default(),
            anomaly: Default::default(),
            privacy: PrivacyConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            max_body_bytes: 2 * 1024 * 1024,
            max_texts_per_request: 256,
            max_text_chars: 32 * 1024,
            max_article_chars: 256 * 1024,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
            metrics_refresh_secs: 30,
            metrics_require_key: false,
        }
    }
}

impl Config {
    /// Loads `path` when given (it must exist), else `tierline.toml` when present, else defaults;
    /// then applies environment overrides and validates.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let (text, origin) = match path {
            Some(path) => (
                std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?,
                path.display().to_string(),
            ),
            None if Path::new("tierline.toml").exists() => (
                std::fs::read_to_string("tierline.toml").context("cannot read tierline.toml")?,
                "tierline.toml".to_string(),
            ),
            None => (String::new(), "defaults".to_string()),
        };
        let vars = std::env::vars().filter(|(key, _)| key.starts_with(ENV_PREFIX));
        Self::from_toml_and_env(&text, vars).with_context(|| format!("invalid configuration ({origin})"))
    }

    pub fn from_toml_and_env(text: &str, vars: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let mut table: toml::Table = toml::from_str(text)?;
        for (key, value) in vars {
            apply_env_override(&mut table, &key, &value)?;
        }
        let config: Config = toml::Value::Table(table).try_into()?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.server.metrics_refresh_secs == 0 {
            bail!("`server.metrics_refresh_secs` must be greater than 0");
        }
        self.infer().validate()?;
        let positive = [
            ("server.max_body_bytes", self.server.max_body_bytes),
            ("server.max_texts_per_request", self.server.max_texts_per_request),
            ("server.max_text_chars", self.server.max_text_chars),
            ("server.max_article_chars", self.server.max_article_chars),
        ];
        for (key, value) in positive {
            if value == 0 {
                bail!("`{key}` must be greater than 0");
            }
        }
        if self.server.request_timeout_ms == 0 {
            bail!("`server.request_timeout_ms` must be greater than 0");
        }
        if self.engine.max_queued_texts < self.server.max_texts_per_request {
            bail!(
                "`engine.max_queued_texts` ({}) must be at least `server.max_texts_per_request` ({}), \
                 or large requests could never be admitted",
                self.engine.max_queued_texts,
                self.server.max_texts_per_request
            );
        }
        self.kb.validate()?;
        self.support.validate()?;
        self.anomaly.validate()?;
        Ok(())
    }

    /// The inference layer's settings.
    pub fn infer(&self) -> InferSettings {
        InferSettings { data_dir: self.data_dir.clone(), models: self.models.clone(), engine: self.engine.clone() }
    }

    /// The database: a `postgres://` URL as given, else the SQLite file (`support.database`,
    /// relative to `data_dir`).
    pub fn database_path(&self) -> PathBuf {
        if self.support.is_shared() {
            return self.support.database.clone();
        }
        self.data_dir.join(&self.support.database)
    }
}

/// `TIERLINE_ENGINE__MAX_WAIT_US=500` sets `engine.max_wait_us`; a top-level key has no `__`
/// (`TIERLINE_DATA_DIR`). Values are parsed as TOML (numbers, booleans, arrays), else taken as strings.
fn apply_env_override(table: &mut toml::Table, var: &str, raw: &str) -> anyhow::Result<()> {
    let Some(path) = var.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    if NOT_CONFIG.contains(&var) {
        return Ok(());
    }
    let keys: Vec<String> = path.split("__").map(|part| part.to_ascii_lowercase()).collect();
    if keys.iter().any(|key| key.is_empty()) {
        bail!("environment variable {var} does not name a config key");
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut parsed| parsed.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let (last, parents) = keys.split_last().expect("split yields at least one key");
    let mut node = table;
    for key in parents {
        let entry = node.entry(key.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().with_context(|| format!("{var}: `{key}` is not a section"))?;
    }
    node.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tierline_infer::settings::SourceKind;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::from_toml_and_env("", env(&[])).unwrap();
        assert_eq!(config.server.port, 8080);
        assert_eq!(config.models.sources.len(), 4);
    }

    #[test]
    fn shipped_config_file_parses_and_matches_defaults() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tierline.toml")).unwrap();
        let config = Config::from_toml_and_env(&text, env(&[])).unwrap();
        let defaults = Config::default();
        assert_eq!(config.server.port, defaults.server.port);
        assert_eq!(config.engine.max_batch_tokens, defaults.engine.max_batch_tokens);
        assert_eq!(config.models.sources, defaults.models.sources);
    }

    #[test]
    fn env_overrides_win_over_file() {
        let config = Config::from_toml_and_env(
            "[server]\nport = 9000\n",
            env(&[
                ("TIERLINE_SERVER__PORT", "9100"),
                ("TIERLINE_ENGINE__DEVICE", "cpu"),
                ("TIERLINE_MODELS__SOURCES", "[\"pip\"]"),
                ("TIERLINE_DATA_DIR", "/tmp/x"),
                ("TIERLINE_ENGINE__PRECISION", "int8"),
                // Not configuration: `TIERLINE_KEY=... tierline bench encoder --url` must work.
                ("TIERLINE_KEY", "secret"),
                ("TIERLINE_CONFIG", "other.toml"),
            ]),
        )
        .unwrap();
        assert_eq!(config.engine.precision, tierline_infer::Precision::Int8);
        assert_eq!(config.server.port, 9100);
        assert_eq!(config.engine.device, "cpu");
        assert_eq!(config.models.sources, vec![SourceKind::Pip]);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::from_toml_and_env("[server]\nport = \"eighty\"\n", env(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("port"), "{err:#}");
        let err = Config::from_toml_and_env("[server]\nprot = 1\n", env(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("prot"), "{err:#}");
        let err = Config::from_toml_and_env("[engine]\nmax_batch_texts = 0\n", env(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("engine.max_batch_texts"), "{err:#}");
        let err = Config::from_toml_and_env("[engine]\ndevice = \"tpu\"\n", env(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("engine.device"), "{err:#}");
        let err = Config::from_toml_and_env("[engine]\nprecision = \"int4\"\n", env(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("int4") && format!("{err:#}").contains("int8"), "{err:#}");
        let err = Config::from_toml_and_env("", env(&[("TIERLINE_MODELS__SOURCES", "[\"ftp\"]")])).unwrap_err();
        assert!(format!("{err:#}").contains("ftp"), "{err:#}");
    }
}
