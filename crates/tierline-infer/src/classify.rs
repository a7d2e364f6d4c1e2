//! Classification service: one engine pass per batch gives the embedding and every head's
//! scores; this turns those scores into labelled, explained results. Used by `POST
//! /v1/classify` and `tierline classify`.

use crate::sync::RwLockExt;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::checkpoint::SequenceClassifier;
use crate::head_versions::HeadVersions;
use crate::heads::OUT_OF_SCOPE_LABEL;
use crate::heads::{Activation, ClassifierHead, Head, HeadCard};
use crate::settings::InferSettings;
use crate::{Engine, EngineError, HeadSet};

#[derive(Debug, Clone, Serialize)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// One head's verdict on one text.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum HeadResult {
    /// Softmax head: exactly one label applies.
    Single { activation: Activation, label: String, score: f32, top: Vec<LabelScore> },
    /// Sigmoid head: every label whose score passes its threshold applies.
    Multi { activation: Activation, labels: Vec<String>, scores: BTreeMap<String, f32>, level: Level, score: f32 },
}

/// Coarse reading of a multi-label head's strongest score.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TextClassification {
    /// Per head: `{label, score, top}` (softmax) or `{labels, scores, level, score}` (sigmoid).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub heads: BTreeMap<String, HeadResult>,
    /// P(`other`) of the topic head: how likely the text is not a support request at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_scope: Option<f32>,
    pub tokens: usize,
    pub truncated: bool,
}

impl TextClassification {
    /// P(`label`) from head `head` (0 when the head or label is absent, or outside `top`).
    pub fn probability(&self, head: &str, label: &str) -> f32 {
        match self.heads.get(head) {
            Some(HeadResult::Single { top, .. }) => top.iter().find(|l| l.label == label).map_or(0.0, |l| l.score),
            Some(HeadResult::Multi { scores, .. }) => scores.get(label).copied().unwrap_or(0.0),
            None => 0.0,
        }
    }

    /// The labels `head` scored (a softmax head's top labels, a sigmoid head's every label).
    pub fn labels(&self, head: &str) -> Vec<String> {
        match self.heads.get(head) {
            Some(HeadResult::Single { top, .. }) => top.iter().map(|l| l.label.clone()).collect(),
            Some(HeadResult::Multi { scores, .. }) => scores.keys().cloned().collect(),
            None => Vec::new(),
        }
    }

    /// The single-label head's label and its probability.
    pub fn label(&self, head: &str) -> Option<(&str, f32)> {
        match self.heads.get(head) {
            Some(HeadResult::Single { label, score, .. }) => Some((label.as_str(), *score)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelVersions {
    pub encoder: String,
    pub encoder_revision: String,
    pub heads: BTreeMap<String, u32>,
    /// Heads served by a sequence-classification checkpoint instead: name -> `id@revision`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub checkpoints: BTreeMap<String, String>,
}

/// A sequence-classification checkpoint serving under a head's name (its own encoder pass).
pub struct CheckpointHead {
    pub name: String,
    pub model_id: String,
    pub model: SequenceClassifier,
}

/// What `interpret` needs to know about any scorer's output.
struct LabelSpec<'a> {
    labels: &'a [String],
    activation: Activation,
    thresholds: &'a [f32],
}

type ServedHeads = Arc<Vec<Arc<ClassifierHead>>>;

#[derive(Clone)]
pub struct Classifier {
    engine: Engine,
    /// Swapped whole when a promoted head version is loaded.
    heads: Arc<RwLock<ServedHeads>>,
    checkpoints: Arc<Vec<Arc<CheckpointHead>>>,
}

impl Classifier {
    /// Registers `heads` on the engine: they run on every encoder pass from now on.
    pub fn new(engine: Engine, heads: Vec<Arc<ClassifierHead>>) -> anyhow::Result<Self> {
        Self::with_checkpoints(engine, heads, Vec::new())
    }

    /// As `new`, with checkpoints that replace the heads of the same name.
    pub fn with_checkpoints(
        engine: Engine,
        heads: Vec<Arc<ClassifierHead>>,
        checkpoints: Vec<CheckpointHead>,
    ) -> anyhow::Result<Self> {
        let classifier = Self {
            engine,
            heads: Arc::new(RwLock::new(Arc::new(Vec::new()))),
            checkpoints: Arc::new(checkpoints.into_iter().map(Arc::new).collect()),
        };
        classifier.replace_heads(heads)?;
        Ok(classifier)
    }

    /// Serves `heads` from the next batch on (a checkpoint of the same name still wins).
    pub fn replace_heads(&self, heads: Vec<Arc<ClassifierHead>>) -> anyhow::Result<()> {
        let heads: Vec<_> =
            heads.into_iter().filter(|h| !self.checkpoints.iter().any(|c| c.name == h.card().name)).collect();
        let set = HeadSet::new(heads.iter().map(|h| h.clone() as Arc<dyn Head>).collect())?;
        let mut served = self.heads.write_unpoisoned();
        self.engine.set_heads(set)?;
        *served = Arc::new(heads);
        Ok(())
    }

    /// Loads the configured heads again (promoted versions included) and serves them. Blocking.
    pub fn reload_heads(&self, settings: &InferSettings) -> anyhow::Result<()> {
        let heads = load_served_heads(settings, &self.engine.info().reference(), self.engine.device())?;
        self.replace_heads(heads)?;
        let versions: Vec<String> =
            self.served().iter().map(|h| format!("{} v{}", h.card().name, h.card().version)).collect();
        tracing::info!(heads = ?versions, "heads reloaded");
        Ok(())
    }

    fn served(&self) -> ServedHeads {
        self.heads.read_unpoisoned().clone()
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn cards(&self) -> Vec<HeadCard> {
        self.served().iter().map(|h| h.card().clone()).collect()
    }

    pub fn versions(&self) -> ModelVersions {
        let info = self.engine.info();
        ModelVersions {
            encoder: info.id.clone(),
            encoder_revision: info.revision.clone(),
            heads: self.served().iter().map(|h| (h.card().name.clone(), h.card().version)).collect(),
            checkpoints: self.checkpoints.iter().map(|c| (c.name.clone(), c.model_id.clone())).collect(),
        }
    }

    pub async fn classify(&self, texts: Vec<String>, top_k: usize) -> Result<Vec<TextClassification>, EngineError> {
        Ok(self.classify_with_embeddings(texts, top_k).await?.into_iter().map(|(c, _)| c).collect())
    }

    /// As `classify`, with each text's pooled embedding from the same encoder pass.
    pub async fn classify_with_embeddings(
        &self,
        texts: Vec<String>,
        top_k: usize,
    ) -> Result<Vec<(TextClassification, Vec<f32>)>, EngineError> {
        let checkpoint_texts = if self.checkpoints.is_empty() { Vec::new() } else { texts.clone() };
        let mut outputs = self.engine.score(texts).await?;
        if !self.checkpoints.is_empty() {
            // Checkpoints have their own encoder: run them off the async runtime.
            let this = self.clone();
            let extra = tokio::task::spawn_blocking(move || this.run_checkpoints(&checkpoint_texts))
                .await
                .map_err(|err| EngineError::Inference(format!("checkpoint task failed: {err}")))??;
            for (output, scores) in outputs.iter_mut().zip(extra) {
                output.heads.extend(scores);
            }
        }
        Ok(outputs
            .into_iter()
            .map(|out| (self.interpret(&out.heads, out.tokens, out.truncated, top_k), out.embedding))
            .collect())
    }

    pub fn classify_blocking(&self, texts: &[String], top_k: usize) -> Result<Vec<TextClassification>, EngineError> {
        let mut outputs = self.engine.score_blocking(texts)?;
        for (output, scores) in outputs.iter_mut().zip(self.run_checkpoints(texts)?) {
            output.heads.extend(scores);
        }
        Ok(outputs.into_iter().map(|out| self.interpret(&out.heads, out.tokens, out.truncated, top_k)).collect())
    }

    /// Scores of every checkpoint for every text, by head name (empty maps without checkpoints).
    fn run_checkpoints(&self, texts: &[String]) -> Result<Vec<BTreeMap<String, Vec<f32>>>, EngineError> {
        let mut scores = vec![BTreeMap::new(); texts.len()];
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        for checkpoint in self.checkpoints.iter() {
            let probs = checkpoint
                .model
                .classify(&refs)
                .map_err(|err| EngineError::Inference(format!("{}: {err:#}", checkpoint.name)))?;
            for (row, p) in scores.iter_mut().zip(probs) {
                row.insert(checkpoint.name.clone(), p);
            }
        }
        Ok(scores)
    }

    fn interpret(
        &self,
        scores: &BTreeMap<String, Vec<f32>>,
        tokens: usize,
        truncated: bool,
        top_k: usize,
    ) -> TextClassification {
        let served = self.served();
        let heads = served.iter().map(|h| (&h.card().name, LabelSpec::from(h.card())));
        let checkpoints = self.checkpoints.iter().map(|c| {
            (&c.name, LabelSpec { labels: c.model.labels(), activation: c.model.activation(), thresholds: &[] })
        });
        let mut results = BTreeMap::new();
        let mut out_of_scope = None;
        for (name, spec) in heads.chain(checkpoints) {
            // A head swapped mid-batch may have other labels: skip it for this one batch.
            let Some(values) = scores.get(name).filter(|v| v.len() == spec.labels.len()) else { continue };
            if let Some(other) = spec.labels.iter().position(|l| l == OUT_OF_SCOPE_LABEL) {
                out_of_scope = Some(values[other]);
            }
            results.insert(name.clone(), interpret_head(&spec, values, top_k));
        }
        TextClassification { heads: results, out_of_scope, tokens, truncated }
    }
}

impl<'a> From<&'a HeadCard> for LabelSpec<'a> {
    fn from(card: &'a HeadCard) -> Self {
        Self { labels: &card.labels, activation: card.activation, thresholds: &card.thresholds }
    }
}

fn interpret_head(card: &LabelSpec, values: &[f32], top_k: usize) -> HeadResult {
    let mut ranked: Vec<LabelScore> =
        card.labels.iter().zip(values).map(|(label, &score)| LabelScore { label: label.clone(), score }).collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    match card.activation {
        Activation::Softmax => {
            let best = ranked[0].clone();
            ranked.truncate(top_k.max(1));
            HeadResult::Single { activation: Activation::Softmax, label: best.label, score: best.score, top: ranked }
        }
        Activation::Sigmoid => {
            let threshold = |i: usize| card.thresholds.get(i).copied().unwrap_or(0.5);
            let labels = card
                .labels
                .iter()
                .zip(values)
                .enumerate()
                .filter(|(i, (_, &s))| s >= threshold(*i))
                .map(|(_, (l, _))| l.clone())
                .collect::<Vec<_>>();
            let score = ranked.first().map_or(0.0, |r| r.score);
            let level = if !labels.is_empty() || score >= 0.5 {
                Level::High
            } else if score >= 0.25 {
                Level::Medium
            } else {
                Level::Low
            };
            HeadResult::Multi {
                activation: Activation::Sigmoid,
                labels,
                scores: card.labels.iter().cloned().zip(values.iter().copied()).collect(),
                level,
                score,
            }
        }
    }
}

/// Loads the encoder, starts the engine and registers every configured head: the one start-up
/// path shared by the server and the CLI.
pub fn start(settings: &InferSettings, metrics: crate::EngineMetrics, progress: bool) -> anyhow::Result<Classifier> {
    let engine = crate::start_engine(settings, metrics, progress)?;
    let reference = engine.info().reference();
    let device = engine.device().clone();
    let heads = load_served_heads(settings, &reference, &device)?;
    let checkpoints = load_checkpoints(settings, &device, progress)?;
    let names: Vec<&str> = heads.iter().map(|h| h.card().name.as_str()).collect();
    let replaced: Vec<&str> = checkpoints.iter().map(|c| c.name.as_str()).collect();
    tracing::info!(heads = ?names, checkpoints = ?replaced, "heads loaded");
    Classifier::with_checkpoints(engine, heads, checkpoints)
}

/// The configured heads, each in its promoted version when it has one.
pub fn load_served_heads(
    settings: &InferSettings,
    encoder: &crate::heads::EncoderRef,
    device: &candle_core::Device,
) -> anyhow::Result<Vec<Arc<ClassifierHead>>> {
    let versions = HeadVersions::new(settings.head_versions_dir());
    crate::heads::load_heads_with_versions(
        &settings.models.heads_dir,
        &settings.models.heads,
        Some(&versions),
        encoder,
        device,
    )
}

/// Every manifest role of kind `sequence-classification`, resolved like any model.
fn load_checkpoints(
    settings: &InferSettings,
    device: &candle_core::Device,
    progress: bool,
) -> anyhow::Result<Vec<CheckpointHead>> {
    use crate::{Manifest, ModelKind, Resolver};
    let manifest = Manifest::load(&settings.models.manifest)?;
    let resolver = Resolver::from_settings(settings).with_progress(progress);
    let mut checkpoints = Vec::new();
    for (role, spec) in &manifest.roles {
        if spec.kind != ModelKind::SequenceClassification {
            continue;
        }
        let resolved = resolver.resolve(role, spec)?;
        let model = SequenceClassifier::load(&resolved, device)?;
        let name = spec.head.clone().expect("validated when the manifest loads");
        checkpoints.push(CheckpointHead { name, model_id: format!("{}@{}", spec.id, spec.revision), model });
    }
    Ok(checkpoints)
}
