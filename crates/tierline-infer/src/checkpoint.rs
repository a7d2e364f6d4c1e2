//! Hugging Face `*ForSequenceClassification` checkpoints (BERT, DistilBERT, XLM-RoBERTa) as a
//! swap-in for a trained head. Such a checkpoint has its own encoder, so it runs its own pass:
//! the first-token state goes through the checkpoint's classifier layers; labels come from
//! `id2label`; `problem_type = "multi_label_classification"` means sigmoid, otherwise softmax.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::encoder::{BackendKind, Encoder, Pooling, Precision};
use super::heads::{activate, Activation};
use super::source::ResolvedModel;

#[derive(Deserialize)]
struct ClassifierConfig {
    model_type: Option<String>,
    #[serde(default)]
    id2label: BTreeMap<String, String>,
    problem_type: Option<String>,
}

/// The layers between the first-token state and the logits.
enum ClassifierLayers {
    /// BERT: `pooler.dense` + tanh, then `classifier`.
    Bert { pooler: (Tensor, Tensor), classifier: (Tensor, Tensor) },
    /// DistilBERT: `pre_classifier` + ReLU, then `classifier`.
    DistilBert { pre: (Tensor, Tensor), classifier: (Tensor, Tensor) },
    /// XLM-RoBERTa: `classifier.dense` + tanh, then `classifier.out_proj`.
    XlmRoberta { dense: (Tensor, Tensor), out: (Tensor, Tensor) },
}

pub struct SequenceClassifier {
    encoder: Encoder,
    layers: ClassifierLayers,
    labels: Vec<String>,
    activation: Activation,
}

fn linear(tensors: &HashMap<String, Tensor>, names: &[&str]) -> anyhow::Result<(Tensor, Tensor)> {
    for prefix in names {
        if let (Some(w), Some(b)) = (tensors.get(&format!("{prefix}.weight")), tensors.get(&format!("{prefix}.bias"))) {
            return Ok((w.to_dtype(DType::F32)?.t()?.contiguous()?, b.to_dtype(DType::F32)?));
        }
    }
    anyhow::bail!("the checkpoint has no `{}.weight`/`.bias`", names[0])
}

fn apply(x: &Tensor, (weight_t, bias): &(Tensor, Tensor)) -> candle_core::Result<Tensor> {
    x.matmul(weight_t)?.broadcast_add(bias)
}

impl SequenceClassifier {
    pub fn load(model: &ResolvedModel, device: &Device) -> anyhow::Result<Self> {
        let config_path = model.dir.join("config.json");
        let config: ClassifierConfig = serde_json::from_str(
            &std::fs::read_to_string(&config_path).with_context(|| format!("cannot read {}", config_path.display()))?,
        )
        .with_context(|| format!("invalid {}", config_path.display()))?;
        anyhow::ensure!(
            !config.id2label.is_empty(),
            "{}: no id2label: not a sequence-classification checkpoint",
            config_path.display()
        );
        let mut labels = vec![String::new(); config.id2label.len()];
        for (id, label) in &config.id2label {
            let index: usize = id
                .parse()
                .with_context(|| format!("{}: id2label key `{id}` is not a number", config_path.display()))?;
            let count = labels.len();
            *labels
                .get_mut(index)
                .with_context(|| format!("{}: id2label ids must be 0..{count}", config_path.display()))? =
                label.clone();
        }
        let activation = match config.problem_type.as_deref() {
            Some("multi_label_classification") => Activation::Sigmoid,
            _ => Activation::Softmax,
        };
        let encoder = Encoder::load_with_pooling(
            model,
            device,
            BackendKind::Generic,
            rayon::current_num_threads(),
            // `engine.precision` applies to the shared encoder; checkpoints run in f32.
            Precision::F32,
            Some((Pooling::Cls, false)),
        )?;
        let tensors = candle_core::safetensors::load(model.dir.join("model.safetensors"), device)?;
        let layers = match config.model_type.as_deref().unwrap_or("bert") {
            "bert" => ClassifierLayers::Bert {
                pooler: linear(&tensors, &["bert.pooler.dense", "pooler.dense"])?,
                classifier: linear(&tensors, &["classifier"])?,
            },
            "distilbert" => ClassifierLayers::DistilBert {
                pre: linear(&tensors, &["pre_classifier"])?,
                classifier: linear(&tensors, &["classifier"])?,
            },
            "xlm-roberta" | "roberta" => ClassifierLayers::XlmRoberta {
                dense: linear(&tensors, &["classifier.dense"])?,
                out: linear(&tensors, &["classifier.out_proj"])?,
            },
            other => anyhow::bail!("model_type `{other}` is not supported for sequence classification"),
        };
        let classes = match &layers {
            ClassifierLayers::Bert { classifier, .. } | ClassifierLayers::DistilBert { classifier, .. } => {
                classifier.1.dim(0)?
            }
            ClassifierLayers::XlmRoberta { out, .. } => out.1.dim(0)?,
        };
        anyhow::ensure!(
            classes == labels.len(),
            "the classifier has {classes} outputs but id2label names {}",
            labels.len()
        );
        Ok(Self { encoder, layers, labels, activation })
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// Probabilities `[texts, labels]`.
    pub fn classify(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        let ids: Vec<Vec<u32>> =
            texts.iter().map(|t| self.encoder.tokenize(t).map(|t| t.ids)).collect::<anyhow::Result<_>>()?;
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let first_token = self.encoder.embed(&refs)?;
        let logits = match &self.layers {
            ClassifierLayers::Bert { pooler, classifier } => apply(&apply(&first_token, pooler)?.tanh()?, classifier)?,
            ClassifierLayers::DistilBert { pre, classifier } => apply(&apply(&first_token, pre)?.relu()?, classifier)?,
            ClassifierLayers::XlmRoberta { dense, out } => apply(&apply(&first_token, dense)?.tanh()?, out)?,
        };
        Ok(activate(&logits, self.activation, 1.0)?.to_vec2::<f32>()?)
    }
}
