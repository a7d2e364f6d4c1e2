//! BERT forward pass over packed sequences (no padding anywhere) with fused CPU kernels and
//! reused buffers. Numerically it is the same model as candle-transformers' `BertModel`; tests
//! compare the two.

use crate::sync::MutexExt;
use std::sync::Mutex;

use anyhow::{bail, ensure, Context};
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use super::encoder::Precision;
use super::kernels::{self, PackedLinear, QuantScratch, QuantizedLinear, SeqSpan};

#[derive(Debug, Clone, serde::Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Why the packed path cannot run this model, if it cannot.
    pub fn unsupported_reason(&self) -> Option<String> {
        if self.hidden_act != "gelu" {
            return Some(format!("hidden_act `{}` (packed path supports `gelu`)", self.hidden_act));
        }
        if let Some(kind) = &self.position_embedding_type {
            if kind != "absolute" {
                return Some(format!("position_embedding_type `{kind}`"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Some("hidden_size is not a multiple of num_attention_heads".into());
        }
        None
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// A dense layer in the precision the encoder was loaded with.
enum Dense {
    F32(PackedLinear),
    Int8(QuantizedLinear),
}

impl Dense {
    fn new(weight: &[f32], bias: Vec<f32>, out_dim: usize, in_dim: usize, precision: Precision) -> Self {
        match precision {
            Precision::Int8 => Dense::Int8(QuantizedLinear::new(weight, bias, out_dim, in_dim)),
            Precision::F32 => Dense::F32(PackedLinear::new(weight, bias, out_dim, in_dim)),
        }
    }

    /// Q, K and V read the same input: one wider product.
    fn concat(parts: Vec<Dense>) -> Self {
        let mut f32_parts = Vec::new();
        let mut int8_parts = Vec::new();
        for part in parts {
            match part {
                Dense::F32(linear) => f32_parts.push(linear),
                Dense::Int8(linear) => int8_parts.push(linear),
            }
        }
        if int8_parts.is_empty() {
            Dense::F32(PackedLinear::concat(&f32_parts))
        } else {
            assert!(f32_parts.is_empty(), "one precision per model");
            Dense::Int8(QuantizedLinear::concat(&int8_parts))
        }
    }

    fn forward(&self, x: &[f32], rows: usize, out: &mut Vec<f32>, threads: usize, scratch: &mut QuantScratch) {
        match self {
            Dense::F32(linear) => linear.forward(x, rows, out, threads),
            Dense::Int8(linear) => linear.forward(x, rows, out, threads, scratch),
        }
    }
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

/// Buffers reused across calls: no large allocation (and no page faults) per batch.
#[derive(Default)]
struct Workspace {
    hidden: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    attention: Vec<f32>,
    intermediate: Vec<f32>,
    ffn: Vec<f32>,
    quantized: QuantScratch,
}

pub struct PackedBert {
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    token_type_embedding: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    max_positions: usize,
    vocab_size: usize,
    eps: f32,
    threads: usize,
    workspace: Mutex<Workspace>,
}

fn read(vb: &VarBuilder, name: &str) -> anyhow::Result<Vec<f32>> {
    let tensor = vb.get_unchecked(name).with_context(|| format!("missing weight `{name}`"))?;
    Ok(tensor.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

fn norm(vb: &VarBuilder, prefix: &str) -> anyhow::Result<Norm> {
    Ok(Norm { gamma: read(vb, &format!("{prefix}.weight"))?, beta: read(vb, &format!("{prefix}.bias"))? })
}

fn linear(vb: &VarBuilder, prefix: &str, out_dim: usize, in_dim: usize, precision: Precision) -> anyhow::Result<Dense> {
    let weight = read(vb, &format!("{prefix}.weight"))?;
    let bias = read(vb, &format!("{prefix}.bias"))?;
    ensure!(
        weight.len() == out_dim * in_dim,
        "`{prefix}.weight` has {} values, expected {out_dim}x{in_dim}",
        weight.len()
    );
    Ok(Dense::new(&weight, bias, out_dim, in_dim, precision))
}

impl PackedBert {
    /// Loads the weights; with `Precision::Int8` every dense layer of the encoder is quantised
    /// (embeddings, norms and attention stay f32).
    pub fn load(vb: VarBuilder, config: &BertConfig, threads: usize, precision: Precision) -> anyhow::Result<Self> {
        if let Some(reason) = config.unsupported_reason() {
            bail!("packed BERT path does not support {reason}");
        }
        // Checkpoints saved from BertForX prefix every weight with `bert.`.
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") { vb.pp("bert") } else { vb };
        let (h, inter) = (config.hidden_size, config.intermediate_size);
        let token_types = read(&vb, "embeddings.token_type_embeddings.weight")?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| -> anyhow::Result<Layer> {
                let p = format!("encoder.layer.{i}");
                let q = linear(&vb, &format!("{p}.attention.self.query"), h, h, precision)?;
                let k = linear(&vb, &format!("{p}.attention.self.key"), h, h, precision)?;
                let v = linear(&vb, &format!("{p}.attention.self.value"), h, h, precision)?;
                Ok(Layer {
                    qkv: Dense::concat(vec![q, k, v]),
                    attention_out: linear(&vb, &format!("{p}.attention.output.dense"), h, h, precision)?,
                    attention_norm: norm(&vb, &format!("{p}.attention.output.LayerNorm"))?,
                    intermediate: linear(&vb, &format!("{p}.intermediate.dense"), inter, h, precision)?,
                    output: linear(&vb, &format!("{p}.output.dense"), h, inter, precision)?,
                    output_norm: norm(&vb, &format!("{p}.output.LayerNorm"))?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings: read(&vb, "embeddings.word_embeddings.weight")?,
            position_embeddings: read(&vb, "embeddings.position_embeddings.weight")?,
            token_type_embedding: token_types[..h].to_vec(),
            embedding_norm: norm(&vb, "embeddings.LayerNorm")?,
            layers,
            hidden: h,
            heads: config.num_attention_heads,
            max_positions: config.max_position_embeddings,
            vocab_size: config.vocab_size,
            eps: config.layer_norm_eps as f32,
            threads,
            workspace: Mutex::new(Workspace::default()),
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Runs the encoder on `sequences` (token ids, already truncated) and hands the final token
    /// states, packed `[tokens, hidden]`, with each sequence's span to `consume`.
    pub fn forward<R>(&self, sequences: &[&[u32]], consume: impl FnOnce(&[f32], &[SeqSpan]) -> R) -> anyhow::Result<R> {
        self.forward_observed(sequences, |_, _, _| {}, consume)
    }

    /// As `forward`, also showing `observe` the states after each layer (index from 0), the last
    /// layer included, before `consume` runs.
    pub fn forward_observed<R>(
        &self,
        sequences: &[&[u32]],
        observe: impl FnMut(usize, &[f32], &[SeqSpan]),
        consume: impl FnOnce(&[f32], &[SeqSpan]) -> R,
    ) -> anyhow::Result<R> {
        let mut spans = Vec::with_capacity(sequences.len());
        let mut start = 0;
        for seq in sequences {
            ensure!(!seq.is_empty(), "empty token sequence");
            ensure!(
                seq.len() <= self.max_positions,
                "sequence of {} tokens exceeds {} positions",
                seq.len(),
                self.max_positions
            );
            spans.push(SeqSpan { start, len: seq.len() });
            start += seq.len();
        }
        let tokens = start;
        let h = self.hidden;
        let mut guard = self.workspace.lock_unpoisoned();
        let ws = &mut *guard;

        ws.hidden.clear();
        ws.hidden.reserve(tokens * h);
        for seq in sequences {
            for (position, &id) in seq.iter().enumerate() {
                let id = id as usize;
                ensure!(id < self.vocab_size, "token id {id} outside the vocabulary");
                let word = &self.word_embeddings[id * h..(id + 1) * h];
                let pos = &self.position_embeddings[position * h..(position + 1) * h];
                ws.hidden.extend(word.iter().zip(pos).zip(&self.token_type_embedding).map(|((w, p), t)| w + p + t));
            }
        }
        // One team for the whole pass: its parallel regions find the other threads spinning.
        kernels::with_team(self.threads, || self.layers_forward(ws, tokens, &spans, observe));
        Ok(consume(&ws.hidden, &spans))
    }

    /// The embedding norm and every layer, in place on `ws.hidden`.
    fn layers_forward(
        &self,
        ws: &mut Workspace,
        tokens: usize,
        spans: &[SeqSpan],
        mut observe: impl FnMut(usize, &[f32], &[SeqSpan]),
    ) {
        let h = self.hidden;
        kernels::layer_norm(&mut ws.hidden, &self.embedding_norm.gamma, &self.embedding_norm.beta, self.eps);
        for (index, layer) in self.layers.iter().enumerate() {
            layer.qkv.forward(&ws.hidden, tokens, &mut ws.qkv, self.threads, &mut ws.quantized);
            ws.context.resize(tokens * h, 0.0);
            kernels::attention_varlen(&ws.qkv, spans, self.heads, h / self.heads, &mut ws.context);
            layer.attention_out.forward(&ws.context, tokens, &mut ws.attention, self.threads, &mut ws.quantized);
            kernels::add_layer_norm(
                &mut ws.attention,
                &ws.hidden,
                &layer.attention_norm.gamma,
                &layer.attention_norm.beta,
                self.eps,
            );
            layer.intermediate.forward(&ws.attention, tokens, &mut ws.intermediate, self.threads, &mut ws.quantized);
            kernels::gelu(&mut ws.intermediate);
            layer.output.forward(&ws.intermediate, tokens, &mut ws.ffn, self.threads, &mut ws.quantized);
            kernels::add_layer_norm(
                &mut ws.ffn,
                &ws.attention,
                &layer.output_norm.gamma,
                &layer.output_norm.beta,
                self.eps,
            );
            std::mem::swap(&mut ws.hidden, &mut ws.ffn);
            observe(index, &ws.hidden, spans);
        }
    }
}

/// Convenience for tests and benches: the packed token states as a tensor `[tokens, hidden]`.
pub fn forward_to_tensor(model: &PackedBert, sequences: &[&[u32]]) -> anyhow::Result<Tensor> {
    let h = model.hidden_size();
    let (values, tokens) =
        model.forward(sequences, |states, spans| (states.to_vec(), spans.last().map_or(0, |s| s.start + s.len)))?;
    Ok(Tensor::from_vec(values, (tokens, h), &candle_core::Device::Cpu)?)
}
