//! The generic BERT backend: candle-transformers' BERT layers, run one at a time so every
//! layer's states can be read (layer-pool heads need them) on any candle device.
//!
//! candle-transformers keeps its embedding module and per-layer forward private, but its
//! `BertEncoder` is public and clonable: each layer becomes a one-layer encoder. The embedding
//! sum is ours (word + position + token type, then LayerNorm), checked against the reference
//! vectors in `tests/encoder_reference.rs`.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use candle_transformers::models::bert;

pub struct LayeredBert {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    embedding_norm: LayerNorm,
    /// One single-layer encoder per transformer layer, in order.
    layers: Vec<bert::BertEncoder>,
}

impl LayeredBert {
    pub fn load(vb: VarBuilder, config: &bert::Config) -> Result<Self> {
        // Checkpoints saved from BertForX prefix every weight with `bert.`.
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") { vb.pp("bert") } else { vb };
        let embeddings = vb.pp("embeddings");
        let hidden = config.hidden_size;
        let encoder = bert::BertEncoder::load(vb.pp("encoder"), config)?;
        let layers = encoder
            .layers
            .iter()
            .map(|layer| {
                let mut single = encoder.clone();
                single.layers = vec![layer.clone()];
                single
            })
            .collect();
        Ok(Self {
            word_embeddings: candle_nn::embedding(config.vocab_size, hidden, embeddings.pp("word_embeddings"))?,
            position_embeddings: candle_nn::embedding(
                config.max_position_embeddings,
                hidden,
                embeddings.pp("position_embeddings"),
            )?,
            token_type_embeddings: candle_nn::embedding(
                config.type_vocab_size,
                hidden,
                embeddings.pp("token_type_embeddings"),
            )?,
            embedding_norm: candle_nn::layer_norm(hidden, config.layer_norm_eps, embeddings.pp("LayerNorm"))?,
            layers,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// States after every layer, `[batch, seq, hidden]` each, the last layer last. `attention_mask`
    /// is `[batch, seq]`, 1 for tokens and 0 for padding; token types are all 0.
    pub fn forward_layers(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Vec<Tensor>> {
        let seq_len = input_ids.dim(1)?;
        let positions = Tensor::arange(0u32, seq_len as u32, input_ids.device())?;
        let token_types = input_ids.zeros_like()?;
        let embedded = self
            .word_embeddings
            .forward(input_ids)?
            .add(&self.token_type_embeddings.forward(&token_types)?)?
            .broadcast_add(&self.position_embeddings.forward(&positions)?)?;
        let mut states = self.embedding_norm.forward(&embedded)?;
        // Padding gets the most negative score before the softmax, as in BERT.
        let keep = attention_mask.to_dtype(DType::F32)?.unsqueeze(1)?.unsqueeze(1)?;
        let hide = keep.ones_like()?.sub(&keep)?.affine(f32::MIN as f64, 0.0)?;
        let mut outputs = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            states = layer.forward(&states, &hide)?;
            outputs.push(states.clone());
        }
        Ok(outputs)
    }
}
