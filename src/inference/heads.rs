//! Heads: small models that read the pooled embedding. Every registered head runs on the same
//! encoder pass as the embedding itself; adding a head never adds an encoder pass.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::Tensor;

/// How a head turns its logits into scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// Exactly one label applies: softmax over labels, scores sum to 1.
    Softmax,
    /// Each label applies independently: sigmoid per label.
    Sigmoid,
}

pub trait Head: Send + Sync {
    /// Unique name, the key of its scores in every output (`sentiment`, `topic`...).
    fn name(&self) -> &str;
    fn labels(&self) -> &[String];
    fn activation(&self) -> Activation;
    /// Scores `[batch, labels]` for pooled embeddings `[batch, dimensions]`.
    fn scores(&self, pooled: &Tensor) -> candle_core::Result<Tensor>;
}

/// The heads served together; swapped as a whole so a batch never sees half an update.
#[derive(Clone, Default)]
pub struct HeadSet {
    heads: Vec<Arc<dyn Head>>,
}

impl HeadSet {
    pub fn new(heads: Vec<Arc<dyn Head>>) -> anyhow::Result<Self> {
        let mut seen = std::collections::HashSet::new();
        for head in &heads {
            anyhow::ensure!(seen.insert(head.name().to_string()), "two heads are named `{}`", head.name());
        }
        Ok(Self { heads })
    }

    pub fn heads(&self) -> &[Arc<dyn Head>] {
        &self.heads
    }

    /// Every head's scores for the batch, one map per row.
    pub fn run(&self, pooled: &Tensor) -> candle_core::Result<Vec<BTreeMap<String, Vec<f32>>>> {
        let rows = pooled.dim(0)?;
        let mut outputs = vec![BTreeMap::new(); rows];
        for head in &self.heads {
            let scores = head.scores(pooled)?.to_device(&candle_core::Device::Cpu)?.to_vec2::<f32>()?;
            for (output, row) in outputs.iter_mut().zip(scores) {
                output.insert(head.name().to_string(), row);
            }
        }
        Ok(outputs)
    }
}
