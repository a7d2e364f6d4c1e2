//! Heads: small models that read the pooled embedding, or the pooled states of every layer.
//! Every registered head runs on the same encoder pass as the embedding itself; adding a head
//! never adds an encoder pass.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::Tensor;

/// How a head turns its logits into scores.
/// The label of a topic-like head that means "not a support request at all": its probability is
/// the out-of-scope score.
pub const OUT_OF_SCOPE_LABEL: &str = "other";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// Exactly one label applies: softmax over labels, scores sum to 1.
    Softmax,
    /// Each label applies independently: sigmoid per label.
    Sigmoid,
}

/// What a head reads from the encoder pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadInput {
    /// The pooled sentence embedding `[dimensions]`.
    #[default]
    Embedding,
    /// Each layer's mean-pooled states then the last layer's max-pooled states, each
    /// L2-normalised: `[(layers + 1) * dimensions]`. Lower layers keep surface cues (negation,
    /// emphasis) that the sentence embedding averages away, which sentiment needs.
    LayerPools,
}

impl HeadInput {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Embedding => "embedding",
            Self::LayerPools => "layer-pools",
        }
    }
}

/// One encoder pass over a batch: what every head may read.
pub struct Encoded {
    /// `[batch, dimensions]`.
    pub pooled: Tensor,
    /// `[batch, (layers + 1) * dimensions]`, computed only when asked for.
    pub layer_pools: Option<Tensor>,
}

impl Encoded {
    /// The rows a head of `input` reads.
    pub fn input(&self, input: HeadInput) -> candle_core::Result<&Tensor> {
        match input {
            HeadInput::Embedding => Ok(&self.pooled),
            HeadInput::LayerPools => {
                self.layer_pools.as_ref().ok_or_else(|| candle_core::Error::Msg("layer pools were not computed".into()))
            }
        }
    }
}

pub trait Head: Send + Sync {
    /// Unique name, the key of its scores in every output (`sentiment`, `topic`...).
    fn name(&self) -> &str;
    fn labels(&self) -> &[String];
    fn activation(&self) -> Activation;
    fn input(&self) -> HeadInput;
    /// Width of the rows it reads.
    fn input_dimensions(&self) -> usize;
    /// Scores `[batch, labels]` for its input rows `[batch, input_dimensions]`.
    fn scores(&self, input: &Tensor) -> candle_core::Result<Tensor>;
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

    /// Whether any head reads the layer pools (the encoder then computes them).
    pub fn needs_layer_pools(&self) -> bool {
        self.heads.iter().any(|head| head.input() == HeadInput::LayerPools)
    }

    /// Every head's scores for the batch, one map per row.
    pub fn run(&self, encoded: &Encoded) -> candle_core::Result<Vec<BTreeMap<String, Vec<f32>>>> {
        let rows = encoded.pooled.dim(0)?;
        let mut outputs = vec![BTreeMap::new(); rows];
        for head in &self.heads {
            let input = encoded.input(head.input())?;
            let scores = head.scores(input)?.to_device(&candle_core::Device::Cpu)?.to_vec2::<f32>()?;
            for (output, row) in outputs.iter_mut().zip(scores) {
                output.insert(head.name().to_string(), row);
            }
        }
        Ok(outputs)
    }
}

/// The encoder a head was trained on; a head refuses to load on any other.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EncoderRef {
    pub id: String,
    pub revision: String,
    pub dimensions: usize,
}

/// `card.json`: everything needed to trust, reproduce and use a head.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadCard {
    pub name: String,
    /// What the head predicts (`sentiment`, `frustration`, `topic`...).
    pub task: String,
    pub labels: Vec<String>,
    pub activation: Activation,
    /// What it reads from the encoder pass.
    #[serde(default)]
    pub input: HeadInput,
    /// Hidden layer sizes; empty for a linear head.
    pub hidden: Vec<usize>,
    pub encoder: EncoderRef,
    /// Logits are divided by this before the activation (temperature scaling, fitted on dev).
    pub temperature: f32,
    /// Per-label decision thresholds for sigmoid heads (fitted on dev).
    #[serde(default)]
    pub thresholds: Vec<f32>,
    /// Version of this head (bumped on every retraining).
    #[serde(default = "first_version")]
    pub version: u32,
    /// Data, command, seed, hyper-parameters.
    pub training: serde_json::Value,
    /// Metrics on the held-out test split, and on other evaluation sets.
    pub metrics: serde_json::Value,
    pub created: String,
}

impl HeadCard {
    /// Reads `dir/card.json`.
    pub fn read(dir: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let path = dir.join(ClassifierHead::CARD_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("invalid {}", path.display()))
    }
}

fn first_version() -> u32 {
    1
}

/// A small classifier over the pooled embedding (or layer pools): linear, or MLP with ReLU hidden
/// layers.
pub struct ClassifierHead {
    card: HeadCard,
    input_dimensions: usize,
    /// `(W^T [in, out], b [out])` per layer.
    layers: Vec<(Tensor, Tensor)>,
}

impl ClassifierHead {
    pub const WEIGHTS_FILE: &'static str = "weights.safetensors";
    pub const CARD_FILE: &'static str = "card.json";

    /// Loads `dir/card.json` and `dir/weights.safetensors`, refusing a head trained on another
    /// encoder than `encoder`.
    pub fn load(dir: &std::path::Path, encoder: &EncoderRef, device: &candle_core::Device) -> anyhow::Result<Self> {
        use anyhow::Context;
        let card = HeadCard::read(dir)?;
        if card.encoder.id != encoder.id || card.encoder.revision != encoder.revision {
            anyhow::bail!(
                "head `{}` was trained on encoder {}@{} but the loaded encoder is {}@{}; retrain it on this encoder \
                 (see `tierline train`)",
                card.name,
                card.encoder.id,
                card.encoder.revision,
                encoder.id,
                encoder.revision
            );
        }
        let weights = candle_core::safetensors::load(dir.join(Self::WEIGHTS_FILE), device)
            .with_context(|| format!("cannot load {}", dir.join(Self::WEIGHTS_FILE).display()))?;
        Self::from_parts(card, &weights).with_context(|| format!("head in {}", dir.display()))
    }

    /// Writes a head as `load` reads it: `dir/weights.safetensors` and `dir/card.json`.
    pub fn save_parts(
        dir: &std::path::Path,
        card: &HeadCard,
        weights: &std::collections::HashMap<String, Tensor>,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        candle_core::safetensors::save(weights, dir.join(Self::WEIGHTS_FILE))?;
        std::fs::write(dir.join(Self::CARD_FILE), serde_json::to_string_pretty(card)? + "\n")?;
        Ok(())
    }

    /// Builds a head from its card and tensors `layer{i}.weight` `[out, in]` / `layer{i}.bias`.
    pub fn from_parts(card: HeadCard, weights: &std::collections::HashMap<String, Tensor>) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut layers = Vec::with_capacity(card.hidden.len() + 1);
        let input_dimensions = match card.input {
            HeadInput::Embedding => card.encoder.dimensions,
            // The layer count is the encoder's; the engine checks it when the head is served.
            HeadInput::LayerPools => {
                let first = weights.get("layer0.weight").context("missing layer0.weight")?;
                let width = first.dim(1)?;
                anyhow::ensure!(
                    width > card.encoder.dimensions && width % card.encoder.dimensions == 0,
                    "a layer-pools head reads a multiple of the encoder's {} dimensions, not {width}",
                    card.encoder.dimensions
                );
                width
            }
        };
        let mut in_dim = input_dimensions;
        for (index, out_dim) in card.hidden.iter().copied().chain([card.labels.len()]).enumerate() {
            let weight =
                weights.get(&format!("layer{index}.weight")).with_context(|| format!("missing layer{index}.weight"))?;
            let bias =
                weights.get(&format!("layer{index}.bias")).with_context(|| format!("missing layer{index}.bias"))?;
            anyhow::ensure!(
                weight.dims() == [out_dim, in_dim],
                "layer{index}.weight has shape {:?}, expected [{out_dim}, {in_dim}]",
                weight.dims()
            );
            anyhow::ensure!(
                bias.dims() == [out_dim],
                "layer{index}.bias has shape {:?}, expected [{out_dim}]",
                bias.dims()
            );
            layers.push((weight.t()?.contiguous()?, bias.clone()));
            in_dim = out_dim;
        }
        anyhow::ensure!(card.temperature > 0.0, "temperature must be positive");
        anyhow::ensure!(
            card.activation == Activation::Softmax
                || card.thresholds.is_empty()
                || card.thresholds.len() == card.labels.len(),
            "thresholds must give one value per label"
        );
        Ok(Self { card, input_dimensions, layers })
    }

    pub fn card(&self) -> &HeadCard {
        &self.card
    }

    /// Logits before temperature and activation.
    pub fn logits(&self, input: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = input.clone();
        let last = self.layers.len() - 1;
        for (index, (weight_t, bias)) in self.layers.iter().enumerate() {
            x = x.matmul(weight_t)?.broadcast_add(bias)?;
            if index < last {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

/// Softmax or sigmoid of `logits / temperature`.
pub fn activate(logits: &Tensor, activation: Activation, temperature: f32) -> candle_core::Result<Tensor> {
    let scaled = (logits / temperature as f64)?;
    match activation {
        Activation::Softmax => candle_nn::ops::softmax_last_dim(&scaled),
        Activation::Sigmoid => candle_nn::ops::sigmoid(&scaled),
    }
}

impl Head for ClassifierHead {
    fn name(&self) -> &str {
        &self.card.name
    }

    fn labels(&self) -> &[String] {
        &self.card.labels
    }

    fn activation(&self) -> Activation {
        self.card.activation
    }

    fn input(&self) -> HeadInput {
        self.card.input
    }

    fn input_dimensions(&self) -> usize {
        self.input_dimensions
    }

    fn scores(&self, input: &Tensor) -> candle_core::Result<Tensor> {
        activate(&self.logits(input)?, self.card.activation, self.card.temperature)
    }
}

/// Loads every `<dir>/<name>/card.json` head (or only `names` when given), all checked against
/// the encoder.
pub fn load_heads(
    dir: &std::path::Path,
    names: &[String],
    encoder: &EncoderRef,
    device: &candle_core::Device,
) -> anyhow::Result<Vec<Arc<ClassifierHead>>> {
    load_heads_with_versions(dir, names, None, encoder, device)
}

/// As `load_heads`, serving each head's promoted version from `versions` when it has one.
pub fn load_heads_with_versions(
    dir: &std::path::Path,
    names: &[String],
    versions: Option<&super::head_versions::HeadVersions>,
    encoder: &EncoderRef,
    device: &candle_core::Device,
) -> anyhow::Result<Vec<Arc<ClassifierHead>>> {
    let mut folders: Vec<std::path::PathBuf> =
        if names.is_empty() { head_folders(dir)? } else { names.iter().map(|name| dir.join(name)).collect() };
    folders.sort();
    folders
        .iter()
        .map(|folder| {
            let promoted = versions
                .zip(folder.file_name().and_then(|n| n.to_str()))
                .and_then(|(versions, name)| versions.current_dir(name))
                .filter(|promoted| newer_than_shipped(folder, promoted));
            if let Some(promoted) = promoted {
                match ClassifierHead::load(&promoted, encoder, device) {
                    Ok(head) => return Ok(Arc::new(head)),
                    Err(err) => tracing::warn!(
                        dir = %promoted.display(),
                        error = format!("{err:#}"),
                        "the promoted version does not load; serving the shipped head"
                    ),
                }
            }
            ClassifierHead::load(folder, encoder, device).map(Arc::new)
        })
        .collect()
}

/// Folders under `dir` that hold a head (a `card.json`), sorted; none when `dir` is missing.
pub fn head_folders(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    use anyhow::Context;
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut folders: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.join(ClassifierHead::CARD_FILE).is_file())
        .collect();
    folders.sort();
    Ok(folders)
}

/// Whether a promoted version is newer than the shipped head, judged by their cards alone (a
/// shipped head retrained since makes the promotion stale; only the winner's weights are read).
fn newer_than_shipped(shipped: &std::path::Path, promoted: &std::path::Path) -> bool {
    let shipped_version = HeadCard::read(shipped).map_or(0, |card| card.version);
    match HeadCard::read(promoted) {
        Ok(card) if card.version > shipped_version => true,
        Ok(card) => {
            tracing::warn!(
                head = %card.name,
                promoted = card.version,
                shipped = shipped_version,
                "the promoted version is older than the shipped head; serving the shipped head"
            );
            false
        }
        Err(err) => {
            tracing::warn!(
                dir = %promoted.display(),
                error = format!("{err:#}"),
                "the promoted version does not load; serving the shipped head"
            );
            false
        }
    }
}
