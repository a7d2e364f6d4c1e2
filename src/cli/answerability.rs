//! `tierline index answerability`: fits the answerability model on the sample help center's
//! questions, StackFAQ and out-of-scope questions, and measures each knowledge base held out
//! (fitted on the other one): the share of answers citing a wrong article at the shipped
//! threshold and at equal coverage, before (a fixed curve of the best cosine) and after.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use tierline::config::Config;
use tierline::inference::Engine;
use tierline::kb::eval::{self, AnswerOutcome, LabeledQuery};
use tierline::kb::{Answerability, KbIndex, KnowledgeBase};
use tierline::learn::triage_eval::read_jsonl;

#[derive(Debug, Args)]
pub struct AnswerabilityArgs {
    /// Shared data folder: retrieval/stackfaq_kb.jsonl, retrieval/stackfaq_queries.jsonl,
    /// topic/clinc150_train.jsonl (its `oos` questions are the unanswerable ones).
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Where the fitted model goes.
    #[arg(long, default_value = "models/answerability.json")]
    out: PathBuf,
    /// Out-of-scope questions drawn from CLINC150 for each knowledge base.
    #[arg(long, default_value_t = 50)]
    out_of_scope: usize,
    /// Measure only; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also write every search's features and label here (JSONL), for analysis.
    #[arg(long)]
    dump: Option<PathBuf>,
}

/// One knowledge base with its labeled questions, searched once.
struct Bench {
    name: &'static str,
    index: std::sync::Arc<KbIndex>,
    queries: Vec<LabeledQuery>,
    embeddings: Vec<Vec<f32>>,
}

impl Bench {
    fn load(
        engine: &Engine,
        config: &Config,
        name: &'static str,
        source: &Path,
        queries: Vec<LabeledQuery>,
    ) -> anyhow::Result<Self> {
        let root = config.data_dir.join("cache/answerability-kb").join(name);
        let (kb, errors) = KnowledgeBase::build(engine.clone(), &root, source, config.kb.min_confidence)?;
        anyhow::ensure!(
            errors.is_empty(),
            "{name}: {} articles could not be loaded, first: {}",
            errors.len(),
            errors[0]
        );
        let texts: Vec<String> = queries.iter().map(|q| q.query.clone()).collect();
        let embeddings = engine.embed_blocking(&texts)?.into_iter().map(|o| o.embedding).collect();
        Ok(Self { name, index: kb.current(), queries, embeddings })
    }

    fn rows(&self) -> anyhow::Result<Vec<([f32; tierline::kb::answerability::WIDTH], bool)>> {
        eval::answerability_rows(&self.index, &self.queries, &self.embeddings)
    }

    fn outcomes(&self, model: Option<&Answerability>) -> anyhow::Result<Vec<AnswerOutcome>> {
        eval::answer_outcomes(&self.index, &self.queries, &self.embeddings, model)
    }
}

/// `count` out-of-scope questions from CLINC150, every n-th so the sample is fixed.
fn out_of_scope(data: &Path, count: usize, skip: usize) -> anyhow::Result<Vec<LabeledQuery>> {
    let path = data.join("topic/clinc150_train.jsonl");
    let rows = tierline::learn::dataset::load(&path, "text", "label")?;
    let oos: Vec<String> = rows.into_iter().filter(|r| r.labels.iter().any(|l| l == "oos")).map(|r| r.text).collect();
    anyhow::ensure!(!oos.is_empty(), "{} holds no `oos` questions", path.display());
    let step = (oos.len() / (2 * count).max(1)).max(1);
    Ok(oos
        .iter()
        .skip(skip)
        .step_by(step)
        .take(count)
        .map(|q| LabeledQuery { query: q.clone(), relevant: Vec::new() })
        .collect())
}

pub fn run(config: Config, args: AnswerabilityArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.data.is_dir(),
        "data folder {} is missing: the answerability model is fitted on the shared public datasets (pass --data DIR)",
        args.data.display()
    );
    let mut sample_queries: Vec<LabeledQuery> =
        read_jsonl(Path::new("index/queries.jsonl")).context("the sample help center's questions")?;
    sample_queries.extend(out_of_scope(&args.data, args.out_of_scope, 0)?);
    let mut stackfaq_queries: Vec<LabeledQuery> = read_jsonl(&args.data.join("retrieval/stackfaq_queries.jsonl"))?;
    stackfaq_queries.extend(out_of_scope(&args.data, args.out_of_scope, 1)?);
    let engine = super::train::start_engine(&config)?;
    let benches = (|| -> anyhow::Result<_> {
        let sample = Bench::load(&engine, &config, "sample", &config.kb.source, sample_queries)?;
        let stackfaq = Bench::load(
            &engine,
            &config,
            "stackfaq",
            &args.data.join("retrieval/stackfaq_kb.jsonl"),
            stackfaq_queries,
        )?;
        Ok((sample, stackfaq))
    })();
    engine.shutdown();
    let (sample, stackfaq) = benches?;
    let (sample_rows, stackfaq_rows) = (sample.rows()?, stackfaq.rows()?);
    if let Some(path) = &args.dump {
        let mut text = String::new();
        for (kb, rows) in [("sample", &sample_rows), ("stackfaq", &stackfaq_rows)] {
            for (features, right) in rows.iter() {
                text.push_str(&serde_json::json!({"kb": kb, "features": features, "right": right}).to_string());
                text.push('\n');
            }
        }
        std::fs::write(path, text)?;
    }

    println!("held-out knowledge base: fitted on the other one (+ its out-of-scope questions)");
    println!(
        "{:<10} {:>9} | {:>26} | {:>26} | {:>22}",
        "kb", "threshold", "before: answered / wrong", "after: answered / wrong", "after at equal coverage"
    );
    let mut cross = Vec::new();
    for (held, other_rows, name) in [(&sample, &stackfaq_rows, "stackfaq"), (&stackfaq, &sample_rows, "sample")] {
        let model = Answerability::fit(other_rows, serde_json::json!({ "knowledge_bases": [name] }))?;
        let threshold = config.kb.min_confidence;
        let (before, after) = (held.outcomes(None)?, held.outcomes(Some(&model))?);
        let (b, a) = (eval::at_threshold(&before, threshold), eval::at_threshold(&after, threshold));
        let equal = eval::at_threshold(&after, eval::threshold_for_rate(&after, b.answered_rate));
        println!(
            "{:<10} {:>9.2} | {:>11.1}% / {:>10.1}% | {:>11.1}% / {:>10.1}% | {:>8.1}% / {:>10.1}%",
            held.name,
            threshold,
            b.answered_rate * 100.0,
            b.wrong_answer_rate * 100.0,
            a.answered_rate * 100.0,
            a.wrong_answer_rate * 100.0,
            equal.answered_rate * 100.0,
            equal.wrong_answer_rate * 100.0
        );
        let coverage: Vec<String> = [0.5, 0.6, 0.7, 0.8, 0.9]
            .iter()
            .map(|&rate| {
                let old = eval::at_threshold(&before, eval::threshold_for_rate(&before, rate));
                let new = eval::at_threshold(&after, eval::threshold_for_rate(&after, rate));
                format!(
                    "{:.0}%: {:.1}% -> {:.1}%",
                    rate * 100.0,
                    old.wrong_answer_rate * 100.0,
                    new.wrong_answer_rate * 100.0
                )
            })
            .collect();
        println!("{:<10} wrong among answered at equal coverage, before -> after: {}", "", coverage.join(", "));
        cross.push(serde_json::json!({
            "held_out": held.name, "fitted_on": name, "threshold": threshold,
            "before": b, "after": a, "after_at_equal_coverage": equal,
        }));
    }

    let all: Vec<([f32; tierline::kb::answerability::WIDTH], bool)> =
        sample_rows.iter().chain(&stackfaq_rows).copied().collect();
    let fitted_on = serde_json::json!({
        "knowledge_bases": ["sample (index/kb, index/queries.jsonl)", "stackfaq (../shared/data/retrieval)"],
        "out_of_scope": format!("{} CLINC150 oos questions per knowledge base", args.out_of_scope),
        "rows": all.len(),
        "command": super::train::command_line(),
        "held_out_checks": cross,
    });
    let model = Answerability::fit(&all, fitted_on)?;
    if args.dry_run {
        println!("\n--dry-run: {} not written", args.out.display());
        return Ok(());
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&model)? + "\n")
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!("\nwrote {} (fitted on {} searches over both knowledge bases)", args.out.display(), all.len());
    Ok(())
}
