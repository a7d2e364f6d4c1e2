//! Sentence encoder: tokenizer + BERT-family transformer + pooling, as the model folder's
//! sentence-transformers config says. Two backends compute the same function:
//! - `packed`: our padding-free BERT with fused CPU kernels (BERT on CPU, the fast path);
//! - `generic`: candle-transformers' BERT, DistilBERT and XLM-RoBERTa on any candle device.
//!
//! Besides the pooled embedding, BERT encoders (both backends) can give the layer pools that
//! `HeadInput::LayerPools` heads read, from the same pass.

use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::{distilbert, xlm_roberta};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

use super::heads::{Encoded, HeadInput};
use super::kernels::SeqSpan;
use super::layered_bert::LayeredBert;
use super::packed_bert::{BertConfig, PackedBert};
use super::source::ResolvedModel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Mean,
    Cls,
    Max,
}

/// Which implementation runs the transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Packed when the model and device allow it, else generic.
    Auto,
    Packed,
    Generic,
}

/// Number format of the encoder's weights and arithmetic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    /// int8 weights (one scale per output channel) in every dense layer of the packed CPU path,
    /// activations quantised per token at each layer (see `kernels::QuantizedLinear`).
    Int8,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EncoderInfo {
    pub id: String,
    pub revision: String,
    pub architecture: String,
    pub backend: String,
    pub precision: Precision,
    pub device: String,
    pub dimensions: usize,
    pub max_tokens: usize,
    pub pooling: Pooling,
    pub normalize: bool,
    /// Width of the layer pools (`(layers + 1) * dimensions`); none when the backend cannot
    /// give them (DistilBERT, XLM-RoBERTa).
    pub layer_pools: Option<usize>,
}

enum Backend {
    Packed(PackedBert),
    Bert(LayeredBert),
    DistilBert(distilbert::DistilBertModel),
    XlmRoberta(xlm_roberta::XLMRobertaModel),
}

pub struct Encoder {
    info: EncoderInfo,
    tokenizer: Tokenizer,
    backend: Backend,
    device: Device,
}

/// Token ids of one text after truncation.
#[derive(Debug, Clone)]
pub struct TokenizedText {
    pub ids: Vec<u32>,
    /// True when the text was cut at the model's maximum length.
    pub truncated: bool,
}

/// The encoder families tierline loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Architecture {
    Bert,
    DistilBert,
    XlmRoberta,
}

impl Architecture {
    /// From `model_type`, else the first of `architectures`.
    fn of(probe: &ArchProbe) -> anyhow::Result<Self> {
        let model_type = probe
            .model_type
            .clone()
            .or_else(|| probe.architectures.first().map(|a| a.to_lowercase()))
            .unwrap_or_default();
        Ok(match model_type.as_str() {
            "bert" => Architecture::Bert,
            "distilbert" => Architecture::DistilBert,
            "xlm-roberta" | "roberta" => Architecture::XlmRoberta,
            other => bail!("model_type `{other}` is not supported (bert, distilbert, xlm-roberta)"),
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Architecture::Bert => "bert",
            Architecture::DistilBert => "distilbert",
            Architecture::XlmRoberta => "xlm-roberta",
        }
    }
}

#[derive(Deserialize)]
struct ArchProbe {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    max_position_embeddings: Option<usize>,
    pad_token_id: Option<usize>,
}

#[derive(Deserialize)]
struct StModule {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct StPooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

#[derive(Deserialize)]
struct StConfig {
    max_seq_length: Option<usize>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("invalid {}", path.display()))
}

/// Pooling and normalisation from sentence-transformers' `modules.json`; mean pooling without
/// normalisation for a bare transformer folder.
fn pooling_from_folder(dir: &Path) -> anyhow::Result<(Pooling, bool)> {
    let modules_path = dir.join("modules.json");
    if !modules_path.exists() {
        tracing::warn!(dir = %dir.display(), "no modules.json: using mean pooling without normalisation");
        return Ok((Pooling::Mean, false));
    }
    let modules: Vec<StModule> = read_json(&modules_path)?;
    let normalize = modules.iter().any(|m| m.kind.ends_with("Normalize"));
    let pooling = match modules.iter().find(|m| m.kind.ends_with("Pooling")) {
        None => Pooling::Cls,
        Some(module) => {
            let config: StPooling = read_json(&dir.join(&module.path).join("config.json"))?;
            match (config.pooling_mode_mean_tokens, config.pooling_mode_cls_token, config.pooling_mode_max_tokens) {
                (true, false, false) => Pooling::Mean,
                (false, true, false) => Pooling::Cls,
                (false, false, true) => Pooling::Max,
                _ => bail!("{}: unsupported pooling combination", module.path),
            }
        }
    };
    Ok((pooling, normalize))
}

impl EncoderInfo {
    /// What a head records about the encoder it was trained on.
    pub fn reference(&self) -> super::heads::EncoderRef {
        super::heads::EncoderRef { id: self.id.clone(), revision: self.revision.clone(), dimensions: self.dimensions }
    }

    /// Width of the rows a head of `input` reads, or why this encoder cannot feed it.
    pub fn input_dimensions(&self, input: HeadInput) -> anyhow::Result<usize> {
        match input {
            HeadInput::Embedding => Ok(self.dimensions),
            HeadInput::LayerPools => self.layer_pools.with_context(|| {
                format!("the {} encoder ({} backend) cannot give layer pools", self.architecture, self.backend)
            }),
        }
    }
}

impl Encoder {
    pub fn load(
        model: &ResolvedModel,
        device: &Device,
        backend: BackendKind,
        threads: usize,
        precision: Precision,
    ) -> anyhow::Result<Self> {
        Self::load_with_pooling(model, device, backend, threads, precision, None)
    }

    /// As `load`, with the pooling forced (`(Cls, false)` gives the raw first-token state that
    /// sequence-classification checkpoints feed their classifier).
    pub fn load_with_pooling(
        model: &ResolvedModel,
        device: &Device,
        backend: BackendKind,
        threads: usize,
        precision: Precision,
        pooling: Option<(Pooling, bool)>,
    ) -> anyhow::Result<Self> {
        let dir = &model.dir;
        let config_path = dir.join("config.json");
        let config_text =
            std::fs::read_to_string(&config_path).with_context(|| format!("cannot read {}", config_path.display()))?;
        // Parsed once; each backend reads its own config type from the same value.
        let config: serde_json::Value =
            serde_json::from_str(&config_text).with_context(|| format!("invalid {}", config_path.display()))?;
        let probe: ArchProbe = parse_config(&config, &config_path)?;
        let arch = Architecture::of(&probe).with_context(|| format!("{}", config_path.display()))?;
        let (pooling, normalize) = match pooling {
            Some(forced) => forced,
            None => pooling_from_folder(dir)?,
        };
        // RoBERTa positions start after the padding index.
        let position_offset = if arch == Architecture::XlmRoberta { probe.pad_token_id.unwrap_or(1) + 1 } else { 0 };
        let position_limit = probe.max_position_embeddings.unwrap_or(512).saturating_sub(position_offset);
        let st_config = dir.join("sentence_bert_config.json");
        let max_tokens = if st_config.exists() {
            read_json::<StConfig>(&st_config)?.max_seq_length.unwrap_or(position_limit).min(position_limit)
        } else {
            position_limit
        };

        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|err| anyhow::anyhow!("cannot load {}: {err}", dir.join("tokenizer.json").display()))?;
        // Shipped tokenizers often pad to a fixed 128 and truncate at 128: we batch ourselves
        // and truncate at the model's real limit.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(|err| anyhow::anyhow!("cannot set truncation: {err}"))?;

        let weights = dir.join("model.safetensors");
        // SAFETY: the weights file is memory-mapped read-only; tierline never writes model files
        // it has loaded.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, device) }
            .with_context(|| format!("cannot map {}", weights.display()))?;

        let packed_possible = arch == Architecture::Bert && device.is_cpu();
        if precision == Precision::Int8 && (!packed_possible || backend == BackendKind::Generic) {
            bail!(
                "precision int8 runs on the packed backend, for BERT models on the CPU only (model: {}, device: {}, backend: {backend:?})",
                arch.as_str(),
                device_label(device)
            );
        }
        let use_packed = match backend {
            BackendKind::Auto => packed_possible,
            BackendKind::Packed if !packed_possible => {
                bail!(
                    "the packed backend runs BERT models on the CPU only (model: {}, device: {device:?})",
                    arch.as_str()
                )
            }
            BackendKind::Packed => true,
            BackendKind::Generic => false,
        };
        let backend = if use_packed {
            let bert: BertConfig = parse_config(&config, &config_path)?;
            match bert.unsupported_reason() {
                Some(reason) if backend == BackendKind::Auto && precision == Precision::F32 => {
                    tracing::info!(%reason, "packed backend not applicable, using the generic one");
                    Backend::Bert(LayeredBert::load(vb, &parse_config(&config, &config_path)?)?)
                }
                _ => Backend::Packed(PackedBert::load(vb, &bert, threads, precision)?),
            }
        } else {
            match arch {
                Architecture::Bert => Backend::Bert(LayeredBert::load(vb, &parse_config(&config, &config_path)?)?),
                Architecture::DistilBert => {
                    Backend::DistilBert(distilbert::DistilBertModel::load(vb, &parse_config(&config, &config_path)?)?)
                }
                Architecture::XlmRoberta => {
                    let vb = if vb.contains_tensor("roberta.embeddings.word_embeddings.weight") {
                        vb.pp("roberta")
                    } else {
                        vb
                    };
                    Backend::XlmRoberta(xlm_roberta::XLMRobertaModel::new(&parse_config(&config, &config_path)?, vb)?)
                }
            }
        };
        let dimensions = dimensions_of(&config)?;
        let backend_name = match backend {
            Backend::Packed(_) => "packed",
            _ => "generic",
        };
        let layer_pools = match &backend {
            Backend::Packed(model) => Some((model.num_layers() + 1) * dimensions),
            Backend::Bert(model) => Some((model.num_layers() + 1) * dimensions),
            Backend::DistilBert(_) | Backend::XlmRoberta(_) => None,
        };
        let info = EncoderInfo {
            id: model.id.clone(),
            revision: model.revision.clone(),
            architecture: arch.as_str().to_string(),
            backend: backend_name.to_string(),
            precision,
            device: device_label(device),
            dimensions,
            max_tokens,
            pooling,
            normalize,
            layer_pools,
        };
        tracing::info!(model = %info.id, arch = arch.as_str(), backend = backend_name, precision = precision.as_str(), max_tokens, ?pooling, normalize, "encoder loaded");
        Ok(Self { info, tokenizer, backend, device: device.clone() })
    }

    pub fn info(&self) -> &EncoderInfo {
        &self.info
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn tokenize(&self, text: &str) -> anyhow::Result<TokenizedText> {
        tokenize_with(&self.tokenizer, self.info.max_tokens, text)
    }

    /// Pooled (and, per the model config, L2-normalised) embeddings `[batch, dimensions]`, on the
    /// encoder's device.
    pub fn embed(&self, batch: &[&[u32]]) -> anyhow::Result<Tensor> {
        Ok(self.encode(batch, false)?.pooled)
    }

    /// One pass over `batch`: the pooled embeddings and, when `layer_pools`, the layer pools.
    pub fn encode(&self, batch: &[&[u32]], layer_pools: bool) -> anyhow::Result<Encoded> {
        if layer_pools {
            self.info.input_dimensions(HeadInput::LayerPools)?;
        }
        if batch.is_empty() {
            let pooled = Tensor::zeros((0, self.info.dimensions), DType::F32, &self.device)?;
            let pools = match layer_pools {
                true => Some(Tensor::zeros((0, self.info.layer_pools.unwrap_or(0)), DType::F32, &self.device)?),
                false => None,
            };
            return Ok(Encoded { pooled, layer_pools: pools });
        }
        let (pooled, pools) = match &self.backend {
            Backend::Packed(model) => self.encode_packed(model, batch, layer_pools)?,
            _ => self.encode_generic(batch, layer_pools)?,
        };
        let pooled = match self.info.normalize {
            true => l2_normalize(&pooled)?,
            false => pooled,
        };
        Ok(Encoded { pooled, layer_pools: pools })
    }

    fn encode_packed(
        &self,
        model: &PackedBert,
        batch: &[&[u32]],
        layer_pools: bool,
    ) -> anyhow::Result<(Tensor, Option<Tensor>)> {
        let h = model.hidden_size();
        let slots = model.num_layers() + 1;
        let mut pools = layer_pools.then(|| vec![0.0f32; batch.len() * slots * h]);
        let pooling = self.info.pooling;
        let observe = |layer: usize, states: &[f32], spans: &[SeqSpan]| {
            let Some(pools) = pools.as_mut() else { return };
            for (row, span) in pools.chunks_exact_mut(slots * h).zip(spans) {
                let rows = &states[span.start * h..(span.start + span.len) * h];
                pool_rows(rows, h, Pooling::Mean, &mut row[layer * h..(layer + 1) * h]);
                if layer + 2 == slots {
                    pool_rows(rows, h, Pooling::Max, &mut row[(layer + 1) * h..]);
                }
            }
        };
        let pooled = model.forward_observed(batch, observe, |states, spans| {
            let mut pooled = vec![0.0f32; spans.len() * h];
            for (out, span) in pooled.chunks_exact_mut(h).zip(spans) {
                pool_rows(&states[span.start * h..(span.start + span.len) * h], h, pooling, out);
            }
            pooled
        })?;
        let pooled = Tensor::from_vec(pooled, (batch.len(), h), &Device::Cpu)?;
        let pools = match pools {
            Some(mut pools) => {
                pools.chunks_exact_mut(h).for_each(normalize_in_place);
                Some(Tensor::from_vec(pools, (batch.len(), slots * h), &Device::Cpu)?)
            }
            None => None,
        };
        Ok((pooled, pools))
    }

    fn encode_generic(&self, batch: &[&[u32]], layer_pools: bool) -> anyhow::Result<(Tensor, Option<Tensor>)> {
        let longest = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        let pad_id = self.tokenizer.get_padding().map_or(0, |p| p.pad_id);
        let mut ids = Vec::with_capacity(batch.len() * longest);
        let mut mask = Vec::with_capacity(batch.len() * longest);
        for seq in batch {
            ids.extend_from_slice(seq);
            ids.extend(std::iter::repeat_n(pad_id, longest - seq.len()));
            mask.extend(std::iter::repeat_n(1u32, seq.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - seq.len()));
        }
        let shape = (batch.len(), longest);
        let input_ids = Tensor::from_vec(ids, shape, &self.device)?;
        let attention_mask = Tensor::from_vec(mask, shape, &self.device)?;
        let token_type_ids = input_ids.zeros_like()?;
        let mut layers = match &self.backend {
            Backend::Bert(model) => model.forward_layers(&input_ids, &attention_mask)?,
            Backend::DistilBert(model) => {
                // DistilBERT's mask marks the positions to hide.
                let hide = attention_mask.eq(0u32)?.unsqueeze(1)?.unsqueeze(1)?;
                vec![model.forward(&input_ids, &hide)?]
            }
            Backend::XlmRoberta(model) => {
                vec![model.forward(&input_ids, &attention_mask, &token_type_ids, None, None, None)?]
            }
            Backend::Packed(_) => unreachable!("packed models take the packed path"),
        };
        let mask = attention_mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
        let states = layers.last().context("the encoder has no layers")?;
        let pooled = pool_padded(states, &mask, self.info.pooling)?;
        if !layer_pools {
            return Ok((pooled, None));
        }
        let last = pool_padded(states, &mask, Pooling::Max)?;
        let mut slots = Vec::with_capacity(layers.len() + 1);
        for states in layers.drain(..) {
            slots.push(l2_normalize(&pool_padded(&states, &mask, Pooling::Mean)?)?);
        }
        slots.push(l2_normalize(&last)?);
        Ok((pooled, Some(Tensor::cat(&slots, 1)?)))
    }
}

/// Pools one sequence's token states (`rows`, `[tokens, h]` row-major) into `out` `[h]`.
fn pool_rows(rows: &[f32], h: usize, pooling: Pooling, out: &mut [f32]) {
    match pooling {
        Pooling::Cls => out.copy_from_slice(&rows[..h]),
        Pooling::Mean => {
            out.fill(0.0);
            for row in rows.chunks_exact(h) {
                out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
            }
            let inv = 1.0 / (rows.len() / h) as f32;
            out.iter_mut().for_each(|o| *o *= inv);
        }
        Pooling::Max => {
            out.fill(f32::NEG_INFINITY);
            for row in rows.chunks_exact(h) {
                out.iter_mut().zip(row).for_each(|(o, v)| *o = o.max(*v));
            }
        }
    }
}

fn normalize_in_place(row: &mut [f32]) {
    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    row.iter_mut().for_each(|v| *v /= norm);
}

/// Pools padded states `[batch, seq, h]` with `mask` `[batch, seq, 1]` (1 = token).
fn pool_padded(states: &Tensor, mask: &Tensor, pooling: Pooling) -> candle_core::Result<Tensor> {
    match pooling {
        Pooling::Cls => states.narrow(1, 0, 1)?.squeeze(1),
        Pooling::Mean => states.broadcast_mul(mask)?.sum(1)?.broadcast_div(&mask.sum(1)?),
        Pooling::Max => {
            // Padded positions must never win the max.
            let hidden = (mask.ones_like()? - mask)?.affine(-1e9, 0.0)?;
            states.broadcast_add(&hidden)?.max(1)
        }
    }
}

fn l2_normalize(rows: &Tensor) -> candle_core::Result<Tensor> {
    let norms = rows.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    rows.broadcast_div(&norms)
}

/// Tokenizes one text with special tokens, truncated at `max_tokens`.
pub fn tokenize_with(tokenizer: &Tokenizer, max_tokens: usize, text: &str) -> anyhow::Result<TokenizedText> {
    let encoding = tokenizer.encode(text, true).map_err(|err| anyhow::anyhow!("tokenizer failed: {err}"))?;
    let ids = encoding.get_ids().to_vec();
    let truncated = !encoding.get_overflowing().is_empty() || ids.len() >= max_tokens;
    Ok(TokenizedText { ids, truncated })
}

/// A model config type read from the already-parsed `config.json`.
fn parse_config<T: serde::de::DeserializeOwned>(config: &serde_json::Value, path: &Path) -> anyhow::Result<T> {
    T::deserialize(config).with_context(|| format!("invalid {}", path.display()))
}

fn dimensions_of(value: &serde_json::Value) -> anyhow::Result<usize> {
    value
        .get("hidden_size")
        .or_else(|| value.get("dim"))
        .and_then(|v| v.as_u64())
        .map(|v| v as usize)
        .context("config.json has neither `hidden_size` nor `dim`")
}

fn device_label(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}
