//! Classification service: one engine pass per batch gives the embedding and every head's
//! scores; this turns those scores into labelled, explained results. Used by `POST
//! /v1/classify` and `tierline classify`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::inference::heads::{Activation, ClassifierHead, Head, HeadCard};
use crate::inference::{Engine, EngineError, HeadSet};
use crate::learn::eval::OUT_OF_SCOPE_LABEL;

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

#[derive(Debug, Clone, Serialize)]
pub struct TextClassification {
    #[serde(flatten)]
    pub heads: BTreeMap<String, HeadResult>,
    /// P(`other`) of the topic head: how likely the text is not a support request at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_scope: Option<f32>,
    pub tokens: usize,
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelVersions {
    pub encoder: String,
    pub encoder_revision: String,
    pub heads: BTreeMap<String, u32>,
}

#[derive(Clone)]
pub struct Classifier {
    engine: Engine,
    heads: Arc<Vec<Arc<ClassifierHead>>>,
}

impl Classifier {
    /// Registers `heads` on the engine: they run on every encoder pass from now on.
    pub fn new(engine: Engine, heads: Vec<Arc<ClassifierHead>>) -> anyhow::Result<Self> {
        let set = HeadSet::new(heads.iter().map(|h| h.clone() as Arc<dyn Head>).collect())?;
        engine.set_heads(set);
        Ok(Self { engine, heads: Arc::new(heads) })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn cards(&self) -> Vec<&HeadCard> {
        self.heads.iter().map(|h| h.card()).collect()
    }

    pub fn versions(&self) -> ModelVersions {
        let info = self.engine.info();
        ModelVersions {
            encoder: info.id.clone(),
            encoder_revision: info.revision.clone(),
            heads: self.heads.iter().map(|h| (h.card().name.clone(), h.card().version)).collect(),
        }
    }

    pub async fn classify(&self, texts: Vec<String>, top_k: usize) -> Result<Vec<TextClassification>, EngineError> {
        let outputs = self.engine.embed(texts).await?;
        Ok(outputs.into_iter().map(|out| self.interpret(&out.heads, out.tokens, out.truncated, top_k)).collect())
    }

    pub fn classify_blocking(&self, texts: &[String], top_k: usize) -> Result<Vec<TextClassification>, EngineError> {
        let outputs = self.engine.embed_blocking(texts)?;
        Ok(outputs.into_iter().map(|out| self.interpret(&out.heads, out.tokens, out.truncated, top_k)).collect())
    }

    fn interpret(
        &self,
        scores: &BTreeMap<String, Vec<f32>>,
        tokens: usize,
        truncated: bool,
        top_k: usize,
    ) -> TextClassification {
        let mut heads = BTreeMap::new();
        let mut out_of_scope = None;
        for head in self.heads.iter() {
            let card = head.card();
            let Some(values) = scores.get(&card.name) else { continue };
            if let Some(other) = card.labels.iter().position(|l| l == OUT_OF_SCOPE_LABEL) {
                out_of_scope = Some(values[other]);
            }
            heads.insert(card.name.clone(), interpret_head(card, values, top_k));
        }
        TextClassification { heads, out_of_scope, tokens, truncated }
    }
}

fn interpret_head(card: &HeadCard, values: &[f32], top_k: usize) -> HeadResult {
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
pub fn start(
    config: &crate::config::Config,
    metrics: crate::inference::EngineMetrics,
    progress: bool,
) -> anyhow::Result<Classifier> {
    use crate::inference::{self, BackendKind, BatchLimits};
    let encoder = inference::load_encoder(config, BackendKind::Auto, progress)?;
    let reference = encoder.info().reference();
    let device = encoder.device().clone();
    let heads = inference::heads::load_heads(&config.models.heads_dir, &config.models.heads, &reference, &device)?;
    let engine = Engine::start(encoder, HeadSet::default(), BatchLimits::from_config(&config.engine), metrics)?;
    let names: Vec<&str> = heads.iter().map(|h| h.card().name.as_str()).collect();
    tracing::info!(heads = ?names, "heads loaded");
    Classifier::new(engine, heads)
}
