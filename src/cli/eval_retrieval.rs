use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use sha2::{Digest, Sha256};
use tierline::config::Config;
use tierline::kb::eval::{self, LabeledQuery};
use tierline::kb::{Filter, KnowledgeBase, Mode};

#[derive(Debug, Args)]
pub struct RetrievalArgs {
    /// Knowledge base: a JSONL file of {id, title, body, url} or a folder of articles.
    #[arg(long)]
    kb: PathBuf,
    /// JSONL of {query, relevant: [article ids]}; an empty list marks an unanswerable query.
    #[arg(long)]
    queries: PathBuf,
    /// Dense shares of the hybrid fusion to report (0.5 = plain reciprocal rank fusion).
    #[arg(long, value_delimiter = ',', default_values_t = [tierline::kb::index::HYBRID_DENSE_WEIGHT])]
    dense_weights: Vec<f32>,
    #[arg(long)]
    json: bool,
}

pub fn run(config: Config, args: RetrievalArgs) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(&args.queries).with_context(|| format!("cannot read {}", args.queries.display()))?;
    let queries: Vec<LabeledQuery> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}: invalid query row", args.queries.display(), i + 1))
        })
        .collect::<anyhow::Result<_>>()?;
    let engine = super::train::start_engine(&config)?;
    let key = format!("{:x}", Sha256::digest(args.kb.display().to_string()));
    let root = config.data_dir.join("cache/eval-kb").join(&key[..16]);
    let (kb, errors) = KnowledgeBase::build(engine.clone(), &root, &args.kb, config.kb.min_confidence)?;
    anyhow::ensure!(errors.is_empty(), "{} articles could not be loaded, first: {}", errors.len(), errors[0]);
    let index = kb.current();
    let texts: Vec<String> = queries.iter().map(|q| q.query.clone()).collect();
    let embeddings: Vec<Vec<f32>> = engine.embed_blocking(&texts)?.into_iter().map(|o| o.embedding).collect();
    let filter = Filter::default();
    let mut runs = vec![(Mode::Bm25, 0.5), (Mode::Dense, 0.5)];
    runs.extend(args.dense_weights.iter().map(|&w| (Mode::Hybrid, w)));
    let reports = runs
        .into_iter()
        .map(|(mode, weight)| eval::evaluate(&index, &queries, &embeddings, mode, &filter, weight))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let thresholds: Vec<f32> = (2..=9).map(|t| t as f32 / 10.0).collect();
    let model = match config.kb.answerability.as_os_str().is_empty() {
        true => None,
        false => Some(tierline::kb::Answerability::load(&config.kb.answerability)?),
    };
    let tradeoff = eval::threshold_tradeoff(&index, &queries, &embeddings, &thresholds, model.as_ref())?;
    let before = eval::threshold_tradeoff(&index, &queries, &embeddings, &thresholds, None)?;
    engine.shutdown();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "retrieval": reports, "answer_threshold": tradeoff, "without_answerability": before })
            )?
        );
        return Ok(());
    }
    println!(
        "{} queries with a relevant article, {} without; {} passages",
        reports[0].queries,
        queries.len() - reports[0].queries,
        index.passages().len()
    );
    println!("{:<14} {:>9} {:>9} {:>9} {:>9}", "mode", "recall@1", "recall@5", "MRR@10", "nDCG@10");
    for r in &reports {
        let name = match r.dense_weight {
            Some(weight) => format!("hybrid w={weight:.2}"),
            None => format!("{:?}", r.mode).to_lowercase(),
        };
        println!("{name:<14} {:>9.4} {:>9.4} {:>9.4} {:>9.4}", r.recall_at_1, r.recall_at_5, r.mrr_at_10, r.ndcg_at_10);
    }
    let name = if model.is_some() { "answerability model" } else { "cosine curve (no answerability model)" };
    println!("\nanswer threshold (hybrid), {name} | without the model:");
    println!("  answered rate / wrong among answered / right answers of answerable");
    for (row, old) in tradeoff.iter().zip(&before) {
        println!(
            "  >= {:.1}: {:>6.1}% answered  {:>6.1}% wrong  {:>6.1}% right | {:>6.1}% answered  {:>6.1}% wrong",
            row.threshold,
            row.answered_rate * 100.0,
            row.wrong_answer_rate * 100.0,
            row.correct_answer_rate * 100.0,
            old.answered_rate * 100.0,
            old.wrong_answer_rate * 100.0
        );
    }
    Ok(())
}
