//! Head inputs (embeddings or layer pools) of training texts cached on disk, keyed by encoder,
//! input kind and texts, so retraining a head takes seconds instead of re-encoding tens of
//! thousands of texts.

use std::path::{Path, PathBuf};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::learn::recipe::Example;
use tierline_infer::heads::HeadInput;
use tierline_infer::{Engine, EngineError, Precision};

/// Texts per engine call: large enough to fill batches, small enough for smooth progress.
const CHUNK: usize = 256;

pub struct EmbedCache {
    dir: PathBuf,
}

impl EmbedCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `embed` over the examples' texts.
    pub fn embed_examples(
        &self,
        engine: &Engine,
        input: HeadInput,
        examples: &[Example],
        label: &str,
    ) -> anyhow::Result<Vec<f32>> {
        let texts: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();
        self.embed(engine, input, &texts, label)
    }

    /// Row-major `[texts.len(), width]` head inputs, from the cache or computed through the
    /// engine (then cached).
    pub fn embed(&self, engine: &Engine, input: HeadInput, texts: &[String], label: &str) -> anyhow::Result<Vec<f32>> {
        let info = engine.info();
        let dims = info.input_dimensions(input)?;
        let mut hasher = Sha256::new();
        // f32 embeddings keep the key they always had, so existing caches stay valid.
        let mut key = format!("{}@{}", info.id, info.revision);
        if info.precision != Precision::F32 {
            key += &format!(" {}", info.precision.as_str());
        }
        if input != HeadInput::Embedding {
            key += &format!(" {}", input.as_str());
        }
        hasher.update(key + "\n");
        for text in texts {
            hasher.update(text.as_bytes());
            hasher.update([0]);
        }
        let path = self.dir.join(format!("{:x}.f32", hasher.finalize()));
        if let Some(cached) = read_cached(&path, texts.len() * dims)? {
            tracing::info!(label, texts = texts.len(), path = %path.display(), "embeddings from cache");
            return Ok(cached);
        }
        let bar = ProgressBar::new(texts.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("embedding {msg} {bar:40} {pos}/{len} ({per_sec}, eta {eta})")
                .expect("static template"),
        );
        bar.set_message(label.to_string());
        let mut values = Vec::with_capacity(texts.len() * dims);
        for chunk in texts.chunks(CHUNK) {
            for row in engine.inputs_blocking(chunk, input).map_err(|err: EngineError| anyhow::anyhow!(err))? {
                anyhow::ensure!(row.len() == dims, "the engine gave {} values per text, expected {dims}", row.len());
                values.extend_from_slice(&row);
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        std::fs::create_dir_all(&self.dir).with_context(|| format!("cannot create {}", self.dir.display()))?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let partial = path.with_extension("partial");
        std::fs::write(&partial, bytes)?;
        std::fs::rename(&partial, &path)?;
        Ok(values)
    }
}

fn read_cached(path: &Path, expected: usize) -> anyhow::Result<Option<Vec<f32>>> {
    let Ok(bytes) = std::fs::read(path) else { return Ok(None) };
    if bytes.len() != expected * 4 {
        tracing::warn!(path = %path.display(), "ignoring a cache file of the wrong size");
        return Ok(None);
    }
    Ok(Some(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()))
}
