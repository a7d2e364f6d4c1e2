//! Knowledge base: articles -> passages -> tantivy BM25 + dense index -> hybrid search ->
//! Tier-1 answers with citations, or an explicit "no answer" so the caller escalates.

pub mod answerability;
pub mod article;
pub mod edits;
pub mod eval;
pub mod index;
pub mod passage;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tierline_infer::sync::{MutexExt, RwLockExt};

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub use article::{Article, Audience, IngestError};
pub use edits::Edits;
pub use index::{Filter, Hit, KbIndex, Mode};

use tierline_infer::{Engine, EngineError};

pub use answerability::Answerability;
pub use edits::EditsStorage;

/// Similarity -> confidence: a logistic curve centred where answers start being right.
/// (Fitted by eye on index/queries.jsonl; see `tierline eval retrieval` for the trade-off.)
const CONFIDENCE_MIDPOINT: f32 = 0.45;
const CONFIDENCE_SLOPE: f32 = 12.0;
/// Longest answer text: the matching section is cut at a paragraph beyond this.
const ANSWER_MAX_CHARS: usize = 1200;
/// Edits made through the API or the CLI, beside the index generations.
const EDITS_FILE: &str = "edits.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Citation {
    pub article_id: String,
    pub title: String,
    pub url: Option<String>,
    pub heading: Option<String>,
    /// Highlighted snippet of the passage.
    pub passage: String,
    pub score: f32,
    pub similarity: f32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Answer {
    pub answered: bool,
    /// The best passage, verbatim from the article: never generated text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Why there is no answer: `no_relevant_article`, `ambiguous` or `low_confidence`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub confidence: f32,
    pub citations: Vec<Citation>,
    pub ai_generated: bool,
}

pub fn confidence(similarity: f32) -> f32 {
    1.0 / (1.0 + (-(similarity - CONFIDENCE_MIDPOINT) * CONFIDENCE_SLOPE).exp())
}

pub struct KnowledgeBase {
    index: RwLock<Arc<KbIndex>>,
    engine: Engine,
    root: PathBuf,
    source: PathBuf,
    min_confidence: f32,
    /// Reads how likely the best passage answers the question; without it, a fixed curve of the
    /// best cosine.
    answerability: Option<Arc<Answerability>>,
    edits: EditsStorage,
    /// The version of the shared edits this index was built with.
    edits_version: std::sync::atomic::AtomicI64,
    /// Serialises edits: each one reads, changes and rebuilds the whole article set.
    updating: Mutex<()>,
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Replaced,
}

impl KnowledgeBase {
    /// Loads the articles at `source`, applies the stored edits, (re)builds the index under `root`
    /// (reusing unchanged passage embeddings) and returns it with the articles that could not be
    /// loaded.
    pub fn build(
        engine: Engine,
        root: &Path,
        source: &Path,
        min_confidence: f32,
    ) -> anyhow::Result<(Self, Vec<IngestError>)> {
        Self::build_with(engine, root, source, min_confidence, EditsStorage::File(root.join(EDITS_FILE)))
    }

    /// As `build`, with the edits kept in `edits`.
    pub fn build_with(
        engine: Engine,
        root: &Path,
        source: &Path,
        min_confidence: f32,
        edits: EditsStorage,
    ) -> anyhow::Result<(Self, Vec<IngestError>)> {
        let (articles, errors) = article::load(source)?;
        for error in &errors {
            tracing::warn!(%error, "article not indexed");
        }
        let (stored, version) = edits.load()?;
        let articles = stored.apply(articles);
        let index = build_index(&engine, root, &articles)?;
        tracing::info!(articles = articles.len(), passages = index.passages().len(), "knowledge base indexed");
        let kb = Self {
            index: RwLock::new(Arc::new(index)),
            engine,
            root: root.to_path_buf(),
            source: source.to_path_buf(),
            min_confidence,
            answerability: None,
            edits,
            edits_version: std::sync::atomic::AtomicI64::new(version),
            updating: Mutex::new(()),
        };
        Ok((kb, errors))
    }

    /// Rebuilds when another node changed the shared edits since this index was built; `true`
    /// when it did. Blocking.
    pub fn follow_shared_edits(&self) -> anyhow::Result<bool> {
        use std::sync::atomic::Ordering;
        if matches!(self.edits, EditsStorage::File(_)) {
            return Ok(false);
        }
        let _guard = self.updating.lock_unpoisoned();
        let (stored, version) = self.edits.load()?;
        if version <= self.edits_version.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let (articles, _) = article::load(&self.source)?;
        let articles = stored.apply(articles);
        let before = self.current();
        self.rebuild(&articles)?;
        // Another node removed articles (perhaps an erasure): no older folder keeps them here.
        let kept: std::collections::HashSet<&str> = articles.iter().map(|a| a.id.as_str()).collect();
        if before.articles().iter().any(|old| !kept.contains(old.id.as_str())) {
            index::remove_previous_generations(&self.root)?;
        }
        self.edits_version.store(version, Ordering::SeqCst);
        tracing::info!(version, "knowledge base rebuilt with another node's edits");
        Ok(true)
    }

    /// The configured knowledge base: `kb.source` indexed under `<data_dir>/<kb.index_dir>`, with
    /// the answerability model when one is configured. `None` when `kb.source` is empty. Blocking.
    pub fn from_config(
        engine: Engine,
        data_dir: &Path,
        config: &crate::settings::KbConfig,
        shared: Option<EditsStorage>,
    ) -> anyhow::Result<Option<Self>> {
        if config.source.as_os_str().is_empty() {
            return Ok(None);
        }
        let root = data_dir.join(&config.index_dir);
        let edits = shared.unwrap_or_else(|| EditsStorage::File(root.join(EDITS_FILE)));
        let (kb, _) = Self::build_with(engine, &root, &config.source, config.min_confidence, edits)?;
        if config.answerability.as_os_str().is_empty() {
            return Ok(Some(kb));
        }
        let model = Answerability::load(&config.answerability)
            .with_context(|| "`kb.answerability` names a model that cannot be read (set it to \"\" to go without)")?;
        Ok(Some(kb.with_answerability(model)))
    }

    /// Answers' confidence from this answerability model.
    pub fn with_answerability(mut self, model: Answerability) -> Self {
        self.answerability = Some(Arc::new(model));
        self
    }

    /// The index readers use now; a rebuild swaps it whole.
    pub fn current(&self) -> Arc<KbIndex> {
        self.index.read_unpoisoned().clone()
    }

    /// Rebuilds from `articles` and swaps the new index in.
    pub fn rebuild(&self, articles: &[Article]) -> anyhow::Result<()> {
        let index = build_index(&self.engine, &self.root, articles)?;
        *self.index.write_unpoisoned() = Arc::new(index);
        Ok(())
    }

    /// Adds or replaces an article (blocking: it embeds the changed passages and rebuilds).
    pub fn upsert(&self, article: Article) -> anyhow::Result<Upserted> {
        Ok(self.upsert_all(vec![article])?.remove(0))
    }

    /// Adds or replaces articles with one rebuild. The edit is stored before the rebuild and taken
    /// back if the rebuild fails.
    pub fn upsert_all(&self, new: Vec<Article>) -> anyhow::Result<Vec<Upserted>> {
        let _guard = self.updating.lock_unpoisoned();
        let mut articles: Vec<Article> = self.current().articles().to_vec();
        let mut outcomes = Vec::with_capacity(new.len());
        for article in &new {
            match articles.iter_mut().find(|a| a.id == article.id) {
                Some(existing) => {
                    *existing = article.clone();
                    outcomes.push(Upserted::Replaced);
                }
                None => {
                    articles.push(article.clone());
                    outcomes.push(Upserted::Created);
                }
            }
        }
        self.apply_edit(|edits| new.into_iter().for_each(|a| edits.upsert(a)), &articles)?;
        Ok(outcomes)
    }

    /// Removes an article; `false` when there was none with that id.
    pub fn remove(&self, id: &str) -> anyhow::Result<bool> {
        Ok(self.remove_all(&[id.to_string()])? == 1)
    }

    /// Removes articles for good (an erasure): as `remove_all`, also those another node added
    /// that this one has not followed yet, and no earlier generation of this node's index is
    /// kept on disk.
    pub fn purge(&self, ids: &[String]) -> anyhow::Result<usize> {
        self.remove_ids(ids, true)
    }

    /// Removes the articles with these ids that exist, with one rebuild; how many.
    pub fn remove_all(&self, ids: &[String]) -> anyhow::Result<usize> {
        self.remove_ids(ids, false)
    }

    fn remove_ids(&self, ids: &[String], purge: bool) -> anyhow::Result<usize> {
        let _guard = self.updating.lock_unpoisoned();
        let current = self.current();
        // The shared edits too: an article another node added may not be in this index yet.
        let stored = if purge { self.edits.load()?.0.upserts } else { Default::default() };
        let present: Vec<&String> =
            ids.iter().filter(|id| current.article(id).is_some() || stored.contains_key(*id)).collect();
        if present.is_empty() {
            return Ok(0);
        }
        let articles: Vec<Article> = current.articles().iter().filter(|a| !present.contains(&&a.id)).cloned().collect();
        self.apply_edit(|edits| present.iter().for_each(|id| edits.delete(id)), &articles)?;
        if purge {
            // Under the update lock: no build can switch `CURRENT` while older folders go.
            index::remove_previous_generations(&self.root)?;
        }
        Ok(present.len())
    }

    fn apply_edit(&self, edit: impl FnOnce(&mut Edits), articles: &[Article]) -> anyhow::Result<()> {
        let (before, _) = self.edits.load()?;
        let mut after = before.clone();
        edit(&mut after);
        let version = self.edits.save(&after)?;
        if let Err(err) = self.rebuild(articles) {
            self.edits.save(&before)?;
            return Err(err);
        }
        self.edits_version.store(version, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// The folder the articles are loaded from before the edits apply.
    pub fn source(&self) -> &Path {
        &self.source
    }

    async fn embed_query(&self, text: &str) -> Result<Vec<f32>, EngineError> {
        Ok(self.engine.embed(vec![text.to_string()]).await?.remove(0).embedding)
    }

    pub async fn search(&self, query: &str, mode: Mode, k: usize, filter: &Filter) -> anyhow::Result<Vec<Citation>> {
        let embedding = self.embed_query(query).await?;
        let index = self.current();
        let (query, filter) = (query.to_string(), filter.clone());
        // A search takes milliseconds: off the async workers.
        tokio::task::spawn_blocking(move || {
            let hits = index.search(&query, &embedding, mode, k, &filter)?;
            Ok(hits.iter().map(|hit| citation(&index, &query, hit)).collect())
        })
        .await?
    }

    /// A Tier-1 answer for a customer: public articles only.
    pub async fn answer(&self, question: &str) -> anyhow::Result<Answer> {
        self.answer_in_context(question, &[]).await
    }

    /// As `answer`, for a question asked in a conversation: `context` holds the customer's earlier
    /// messages, oldest first. A follow-up ("and on the annual plan?") is also searched together
    /// with the previous message; the reading whose best match is closer wins.
    pub async fn answer_in_context(&self, question: &str, context: &[String]) -> anyhow::Result<Answer> {
        self.answer_at(question, context, self.min_confidence).await
    }

    /// As `answer_in_context`, answering from `min_confidence` on (triage has its own bar).
    pub async fn answer_at(&self, question: &str, context: &[String], min_confidence: f32) -> anyhow::Result<Answer> {
        let mut readings = vec![question.to_string()];
        if let Some(previous) = context.iter().rev().find(|m| !m.trim().is_empty()) {
            readings.push(format!("{previous} {question}"));
        }
        let embeddings: Vec<Vec<f32>> =
            self.engine.embed(readings.clone()).await?.into_iter().map(|o| o.embedding).collect();
        let index = self.current();
        let model = self.answerability.clone();
        tokio::task::spawn_blocking(move || {
            let mut best: Option<Answer> = None;
            for (reading, embedding) in readings.iter().zip(&embeddings) {
                let hits = index.search(reading, embedding, Mode::Hybrid, 5, &Filter::customer())?;
                let answer = decide(&index, reading, &hits, min_confidence, model.as_deref());
                if best.as_ref().is_none_or(|b| answer.confidence > b.confidence) {
                    best = Some(answer);
                }
            }
            Ok(best.expect("at least the question itself is searched"))
        })
        .await?
    }
}

fn build_index(engine: &Engine, root: &Path, articles: &[Article]) -> anyhow::Result<KbIndex> {
    index::build(root, articles, &engine.info().reference(), |texts| {
        let mut values = Vec::with_capacity(texts.len() * engine.info().dimensions);
        for chunk in texts.chunks(128) {
            for output in engine.embed_blocking(chunk)? {
                values.extend_from_slice(&output.embedding);
            }
        }
        Ok(values)
    })
}

fn citation(index: &KbIndex, query: &str, hit: &Hit) -> Citation {
    let passage = index.passage(hit.passage);
    Citation {
        article_id: passage.article_id.clone(),
        title: passage.title.clone(),
        url: passage.url.clone(),
        heading: passage.heading.clone(),
        passage: index.snippet(query, hit.passage),
        score: hit.score,
        similarity: hit.similarity,
    }
}

/// Answer with the best passage when confident enough, else say why not.
pub fn decide(
    index: &KbIndex,
    question: &str,
    hits: &[Hit],
    min_confidence: f32,
    model: Option<&Answerability>,
) -> Answer {
    // The passage that answers (best semantic match) is cited first, then the others by rank.
    let top_index = hits.iter().enumerate().max_by(|a, b| a.1.similarity.total_cmp(&b.1.similarity)).map(|(i, _)| i);
    let ordered: Vec<&Hit> = top_index
        .map(|t| &hits[t])
        .into_iter()
        .chain(hits.iter().enumerate().filter(|(i, _)| Some(*i) != top_index).map(|(_, h)| h))
        .collect();
    // One citation per article: the best passage of each of the first three.
    let mut cited: Vec<&str> = Vec::new();
    let citations: Vec<Citation> = ordered
        .iter()
        .filter(|hit| {
            let article = index.passage(hit.passage).article_id.as_str();
            let first = !cited.contains(&article);
            cited.push(article);
            first
        })
        .take(3)
        .map(|hit| citation(index, question, hit))
        .collect();
    let Some(best) = hits.first() else {
        return Answer {
            answered: false,
            answer: None,
            reason: Some("no_relevant_article".into()),
            confidence: 0.0,
            citations,
            ai_generated: true,
        };
    };
    // Confidence follows the best semantic match among the top hits.
    let top = hits.iter().max_by(|a, b| a.similarity.total_cmp(&b.similarity)).unwrap_or(best);
    let confidence = match (model, answerability::features(index, hits)) {
        (Some(model), Some(features)) => model.probability(&features),
        _ => confidence(top.similarity),
    };
    let top_article = &index.passage(top.passage).article_id;
    let runner_up = hits
        .iter()
        .filter(|h| &index.passage(h.passage).article_id != top_article)
        .map(|h| h.similarity)
        .fold(f32::NEG_INFINITY, f32::max);
    let reason = if confidence >= min_confidence {
        None
    } else if top.similarity < 0.3 {
        Some("no_relevant_article")
    } else if top.similarity - runner_up < 0.02 {
        Some("ambiguous")
    } else {
        Some("low_confidence")
    };
    match reason {
        Some(reason) => Answer {
            answered: false,
            answer: None,
            reason: Some(reason.into()),
            confidence,
            citations,
            ai_generated: true,
        },
        None => Answer {
            answered: true,
            answer: Some(index.section_text(top.passage, ANSWER_MAX_CHARS)),
            reason: None,
            confidence,
            citations,
            ai_generated: true,
        },
    }
}
