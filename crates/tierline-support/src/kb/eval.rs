//! Retrieval quality at the article level: recall@1, recall@5, MRR@10, nDCG@10 per mode, and how
//! the answer threshold trades answered rate against wrong answers.

use serde::{Deserialize, Serialize};

use super::index::{Filter, KbIndex, Mode};

#[derive(Debug, Clone, Deserialize)]
pub struct LabeledQuery {
    pub query: String,
    /// Article ids that answer it; empty when the knowledge base cannot answer it.
    #[serde(default)]
    pub relevant: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetrievalReport {
    pub mode: Mode,
    /// Dense share of the hybrid fusion (hybrid only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dense_weight: Option<f32>,
    pub queries: usize,
    pub recall_at_1: f64,
    pub recall_at_5: f64,
    pub mrr_at_10: f64,
    pub ndcg_at_10: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThresholdRow {
    pub threshold: f32,
    /// Share of all queries answered.
    pub answered_rate: f64,
    /// Share of answered queries whose cited article is wrong (or that had no answer at all).
    pub wrong_answer_rate: f64,
    /// Share of answerable queries answered with a right article.
    pub correct_answer_rate: f64,
}

/// Article ids in rank order (first passage of each article wins).
fn ranked_articles(
    index: &KbIndex,
    query: &str,
    embedding: &[f32],
    mode: Mode,
    filter: &Filter,
    dense_weight: f32,
) -> anyhow::Result<Vec<String>> {
    let mut articles: Vec<String> = Vec::new();
    for hit in index.search_weighted(query, embedding, mode, 50, filter, dense_weight)? {
        let id = &index.passage(hit.passage).article_id;
        if !articles.contains(id) {
            articles.push(id.clone());
        }
    }
    Ok(articles)
}

pub fn evaluate(
    index: &KbIndex,
    queries: &[LabeledQuery],
    embeddings: &[Vec<f32>],
    mode: Mode,
    filter: &Filter,
    dense_weight: f32,
) -> anyhow::Result<RetrievalReport> {
    let (mut r1, mut r5, mut mrr, mut ndcg, mut n) = (0.0, 0.0, 0.0, 0.0, 0usize);
    for (query, embedding) in queries.iter().zip(embeddings) {
        if query.relevant.is_empty() {
            continue;
        }
        n += 1;
        let ranked = ranked_articles(index, &query.query, embedding, mode, filter, dense_weight)?;
        let relevant = |id: &String| query.relevant.contains(id);
        let hits_at =
            |k: usize| ranked.iter().take(k).filter(|id| relevant(id)).count() as f64 / query.relevant.len() as f64;
        r1 += hits_at(1);
        r5 += hits_at(5);
        if let Some(position) = ranked.iter().take(10).position(relevant) {
            mrr += 1.0 / (position + 1) as f64;
        }
        let dcg: f64 = ranked
            .iter()
            .take(10)
            .enumerate()
            .filter(|(_, id)| relevant(id))
            .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
            .sum();
        let ideal: f64 = (0..query.relevant.len().min(10)).map(|i| 1.0 / ((i + 2) as f64).log2()).sum();
        ndcg += dcg / ideal;
    }
    let n_f = n.max(1) as f64;
    Ok(RetrievalReport {
        mode,
        dense_weight: (mode == Mode::Hybrid).then_some(dense_weight),
        queries: n,
        recall_at_1: r1 / n_f,
        recall_at_5: r5 / n_f,
        mrr_at_10: mrr / n_f,
        ndcg_at_10: ndcg / n_f,
    })
}

/// One query's answer: its confidence, whether the cited article is right, whether the query
/// has a right article at all.
#[derive(Debug, Clone, Copy)]
pub struct AnswerOutcome {
    pub confidence: f32,
    pub right: bool,
    pub answerable: bool,
}

/// Each query's answer (hybrid, customer filter), with `model` giving the confidence.
pub fn answer_outcomes(
    index: &KbIndex,
    queries: &[LabeledQuery],
    embeddings: &[Vec<f32>],
    model: Option<&super::Answerability>,
) -> anyhow::Result<Vec<AnswerOutcome>> {
    let mut outcomes = Vec::new();
    for (query, embedding) in queries.iter().zip(embeddings) {
        let hits = index.search(&query.query, embedding, Mode::Hybrid, 5, &Filter::customer())?;
        let answer = super::decide(index, &query.query, &hits, 0.0, model);
        let cited = answer.citations.first().map(|c| c.article_id.clone());
        let right = cited.is_some_and(|id| query.relevant.contains(&id));
        outcomes.push(AnswerOutcome { confidence: answer.confidence, right, answerable: !query.relevant.is_empty() });
    }
    Ok(outcomes)
}

/// What answering at `threshold` gives.
pub fn at_threshold(outcomes: &[AnswerOutcome], threshold: f32) -> ThresholdRow {
    let answerable = outcomes.iter().filter(|o| o.answerable).count().max(1) as f64;
    let answered: Vec<_> = outcomes.iter().filter(|o| o.confidence >= threshold).collect();
    let wrong = answered.iter().filter(|o| !o.right).count();
    let correct = answered.iter().filter(|o| o.right).count();
    ThresholdRow {
        threshold,
        answered_rate: answered.len() as f64 / outcomes.len().max(1) as f64,
        wrong_answer_rate: if answered.is_empty() { 0.0 } else { wrong as f64 / answered.len() as f64 },
        correct_answer_rate: correct as f64 / answerable,
    }
}

/// The threshold that answers the same share of queries as `answered_rate` (the lowest
/// confidence among that many best-scored queries).
pub fn threshold_for_rate(outcomes: &[AnswerOutcome], answered_rate: f64) -> f32 {
    let mut confidences: Vec<f32> = outcomes.iter().map(|o| o.confidence).collect();
    confidences.sort_by(|a, b| b.total_cmp(a));
    let count = ((answered_rate * outcomes.len() as f64).round() as usize).clamp(1, confidences.len().max(1));
    confidences.get(count - 1).copied().unwrap_or(1.0)
}

/// Answer decisions (hybrid, customer filter) at each threshold.
pub fn threshold_tradeoff(
    index: &KbIndex,
    queries: &[LabeledQuery],
    embeddings: &[Vec<f32>],
    thresholds: &[f32],
    model: Option<&super::Answerability>,
) -> anyhow::Result<Vec<ThresholdRow>> {
    let outcomes = answer_outcomes(index, queries, embeddings, model)?;
    Ok(thresholds.iter().map(|&t| at_threshold(&outcomes, t)).collect())
}

/// Feature rows for fitting the answerability model: each query's search, and whether the
/// article the answer would cite is a right one (never, for an unanswerable query).
pub fn answerability_rows(
    index: &KbIndex,
    queries: &[LabeledQuery],
    embeddings: &[Vec<f32>],
) -> anyhow::Result<Vec<([f32; super::answerability::WIDTH], bool)>> {
    let mut rows = Vec::new();
    for (query, embedding) in queries.iter().zip(embeddings) {
        let hits = index.search(&query.query, embedding, Mode::Hybrid, 5, &Filter::customer())?;
        let Some(features) = super::answerability::features(index, &hits) else { continue };
        let top = hits
            .iter()
            .max_by(|a, b| a.similarity.total_cmp(&b.similarity))
            .map(|h| &index.passage(h.passage).article_id);
        rows.push((features, top.is_some_and(|id| query.relevant.contains(id))));
    }
    Ok(rows)
}
