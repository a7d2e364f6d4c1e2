use std::path::{Path, PathBuf};
use std::time::Instant;

use super::plot;
use anyhow::Context;
use clap::Args;
use tierline::config::Config;
use tierline::inference::checkpoint::SequenceClassifier;
use tierline::inference::heads::{Activation, ClassifierHead};
use tierline::inference::{Engine, ResolvedModel};
use tierline::learn::embed_cache::EmbedCache;
use tierline::learn::eval::{self, Evaluation};
use tierline::learn::pipeline::{self, RecipeSource};
use tierline::learn::recipe::Example;

#[derive(Debug, clap::Subcommand)]
pub enum EvalSubcommand {
    /// Knowledge-base retrieval: recall@1/@5, MRR@10, nDCG@10 for BM25, dense and hybrid.
    Retrieval(super::eval_retrieval::RetrievalArgs),
    /// Labeled tickets through the real triage: tier and queue accuracy, confusion, per-signal
    /// precision/recall, per style and language, every dangerous miss.
    Triage(super::eval_triage::TriageArgs),
    /// Labeled multi-turn scenarios through the real conversation service: does the handoff come
    /// at the right turn?
    Conversations(super::eval_triage::ConversationsArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    pub retrieval: Option<EvalSubcommand>,
    /// The head to evaluate (a folder with card.json and weights.safetensors).
    #[arg(long, conflicts_with = "checkpoint")]
    head: Option<PathBuf>,
    /// Or a Hugging Face *ForSequenceClassification checkpoint folder (config.json with
    /// id2label, model.safetensors, tokenizer.json).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// A second head to compare with, side by side, on the same file.
    #[arg(long, conflicts_with = "compare_checkpoint")]
    compare: Option<PathBuf>,
    /// Or a second checkpoint to compare with.
    #[arg(long)]
    compare_checkpoint: Option<PathBuf>,
    /// Labeled JSONL or CSV; its labels must be the model's labels.
    #[arg(long)]
    file: Option<PathBuf>,
    #[arg(long, default_value = "text")]
    text_column: String,
    #[arg(long, default_value = "label")]
    label_column: String,
    /// Print the full report as JSON.
    #[arg(long)]
    json: bool,
    /// Write the confusion matrix and the reliability diagram of the first model: FILE.svg or FILE.png.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// With --head, instead of --file: the held-out test split of this training recipe (and its
    /// other-source sets), rebuilt as `tierline train` built it, so the card's figures can be
    /// re-measured, for example under another `engine.precision`.
    #[arg(long, requires = "head", conflicts_with_all = ["file", "checkpoint", "compare", "compare_checkpoint", "plot"])]
    recipe: Option<PathBuf>,
    /// Shared training data folder that recipe sources are relative to.
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
}

/// A model under evaluation: a head over the shared encoder, or a whole checkpoint.
enum Candidate {
    Head(Box<ClassifierHead>),
    Checkpoint { name: String, model: Box<SequenceClassifier> },
}

impl Candidate {
    fn load(head: Option<&PathBuf>, checkpoint: Option<&PathBuf>, engine: &Engine) -> anyhow::Result<Option<Self>> {
        let device = candle_core::Device::Cpu;
        if let Some(dir) = head {
            return Ok(Some(Candidate::Head(Box::new(ClassifierHead::load(
                dir,
                &engine.info().reference(),
                &device,
            )?))));
        }
        let Some(dir) = checkpoint else { return Ok(None) };
        let resolved = ResolvedModel {
            role: "checkpoint".into(),
            id: dir.display().to_string(),
            revision: "local".into(),
            dir: dir.clone(),
            source: "path".into(),
        };
        Ok(Some(Candidate::Checkpoint {
            name: dir.display().to_string(),
            model: Box::new(SequenceClassifier::load(&resolved, &device)?),
        }))
    }

    fn name(&self) -> String {
        match self {
            Candidate::Head(head) => format!("head {} v{}", head.card().name, head.card().version),
            Candidate::Checkpoint { name, .. } => format!("checkpoint {name}"),
        }
    }

    fn labels(&self) -> &[String] {
        match self {
            Candidate::Head(head) => &head.card().labels,
            Candidate::Checkpoint { model, .. } => model.labels(),
        }
    }

    fn activation(&self) -> Activation {
        match self {
            Candidate::Head(head) => head.card().activation,
            Candidate::Checkpoint { model, .. } => model.activation(),
        }
    }

    fn thresholds(&self) -> &[f32] {
        match self {
            Candidate::Head(head) => &head.card().thresholds,
            Candidate::Checkpoint { .. } => &[],
        }
    }

    /// Probabilities for `texts`; heads read their inputs through the cache.
    fn probabilities(&self, texts: &[String], cache: &EmbedCache, engine: &Engine) -> anyhow::Result<Vec<Vec<f32>>> {
        match self {
            Candidate::Head(head) => {
                let x = cache.embed(engine, head.card().input, texts, "eval")?;
                eval::head_probabilities(head, &x, texts.len())
            }
            Candidate::Checkpoint { model, .. } => checkpoint_probabilities(model, texts),
        }
    }

    /// Milliseconds per item for a fresh pass over `sample` (encoder pass + head, or the
    /// checkpoint's own pass).
    fn latency_ms(&self, engine: &Engine, sample: &[String]) -> anyhow::Result<f64> {
        let started = Instant::now();
        match self {
            Candidate::Head(head) => {
                let fresh = engine.inputs_blocking(sample, head.card().input)?;
                eval::head_probabilities(head, &fresh.concat(), sample.len())?;
            }
            Candidate::Checkpoint { model, .. } => {
                checkpoint_probabilities(model, sample)?;
            }
        }
        Ok(started.elapsed().as_secs_f64() * 1e3 / sample.len() as f64)
    }
}

/// A checkpoint's own passes over `texts`, 32 at a time.
fn checkpoint_probabilities(model: &SequenceClassifier, texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut probs = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(32) {
        probs.extend(model.classify(&chunk.iter().map(String::as_str).collect::<Vec<_>>())?);
    }
    Ok(probs)
}

pub fn run(config: Config, args: EvalArgs) -> anyhow::Result<()> {
    if let (Some(recipe), Some(head)) = (&args.recipe, &args.head) {
        return eval_on_recipe(config, head, recipe, &args.data, args.json);
    }
    let file = args.file.clone().context("--file is required")?;
    if let Some(plot) = &args.plot {
        anyhow::ensure!(
            plot.extension().is_some_and(|e| e == "svg" || e == "png"),
            "--plot writes SVG or PNG: give a file ending in .svg or .png"
        );
    }
    let engine = super::train::start_engine(&config)?;
    let mut candidates = vec![Candidate::load(args.head.as_ref(), args.checkpoint.as_ref(), &engine)?
        .context("give --head or --checkpoint")?];
    if let Some(second) = Candidate::load(args.compare.as_ref(), args.compare_checkpoint.as_ref(), &engine)? {
        anyhow::ensure!(
            second.labels() == candidates[0].labels(),
            "the two models have different labels: {:?} vs {:?}",
            candidates[0].labels(),
            second.labels()
        );
        candidates.push(second);
    }
    let labels = candidates[0].labels().to_vec();
    let multi_label = candidates[0].activation() == Activation::Sigmoid;
    let rows = tierline::learn::dataset::load(&file, &args.text_column, &args.label_column)?;
    let mut examples = Vec::with_capacity(rows.len());
    for (line, row) in rows.into_iter().enumerate() {
        let mut indices = Vec::new();
        for label in &row.labels {
            let index = labels.iter().position(|l| l == label).with_context(|| {
                format!(
                    "{}: row {}: label `{label}` is not one of the model's labels {labels:?}",
                    file.display(),
                    line + 1
                )
            })?;
            indices.push(index);
        }
        anyhow::ensure!(
            multi_label || indices.len() == 1,
            "{}: row {}: a single-label model needs exactly one label",
            file.display(),
            line + 1
        );
        examples.push(Example { text: row.text, labels: indices, source: "file".into() });
    }
    anyhow::ensure!(!examples.is_empty(), "{} holds no examples", file.display());
    let texts: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();
    let cache = EmbedCache::new(config.data_dir.join("cache/embeddings"));
    let sample = &texts[..texts.len().min(256)];
    let mut evaluations: Vec<Evaluation> = Vec::new();
    let mut latencies = Vec::new();
    for candidate in &candidates {
        let probs = candidate.probabilities(&texts, &cache, &engine)?;
        let name = format!("{} on {}", candidate.name(), file.display());
        evaluations.push(eval::evaluate_probabilities(
            &name,
            &labels,
            candidate.activation(),
            candidate.thresholds(),
            &probs,
            &examples,
        ));
        latencies.push(candidate.latency_ms(&engine, sample)?);
    }
    engine.shutdown();

    if let Some(path) = &args.plot {
        let chart = if path.extension().is_some_and(|e| e == "png") {
            plot::png(&evaluations[0], &labels)?
        } else {
            plot::svg(&evaluations[0], &labels).into_bytes()
        };
        std::fs::write(path, chart).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if args.json {
        let report: Vec<_> = evaluations
            .iter()
            .zip(&latencies)
            .map(|(e, l)| serde_json::json!({ "evaluation": e, "latency_ms_per_item": l }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for (evaluation, latency) in evaluations.iter().zip(&latencies) {
        println!("{}", eval::render(evaluation, &labels));
        println!("latency per item (fresh batched pass over {} texts): {latency:.2} ms\n", sample.len());
    }
    if evaluations.len() == 2 {
        println!("{:<28} {:>10} {:>10} {:>9}", "side by side", "A", "B", "B - A");
        let row = |name: &str, a: f64, b: f64| println!("{name:<28} {a:>10.4} {b:>10.4} {:>+9.4}", b - a);
        row("headline (macro/micro F1)", evaluations[0].headline(), evaluations[1].headline());
        row("latency ms per item", latencies[0], latencies[1]);
        if let (Some(a), Some(b)) = (evaluations[0].out_of_scope_auroc, evaluations[1].out_of_scope_auroc) {
            row("out-of-scope AUROC", a, b);
        }
        if let (eval::Report::Single(a), eval::Report::Single(b)) = (&evaluations[0].report, &evaluations[1].report) {
            row("accuracy", a.accuracy, b.accuracy);
            row("expected calibration error", a.expected_calibration_error, b.expected_calibration_error);
            for (ca, cb) in a.per_class.iter().zip(&b.per_class) {
                row(&format!("F1 {}", ca.label), ca.f1, cb.f1);
            }
        }
    }
    Ok(())
}

/// `eval --head H --recipe R`: the recipe's held-out evaluations for a trained head.
fn eval_on_recipe(
    config: Config,
    head_dir: &Path,
    recipe_path: &Path,
    data_dir: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let source = RecipeSource::load(recipe_path, data_dir)?;
    let engine = super::train::start_engine(&config)?;
    let info = engine.info().clone();
    let head = ClassifierHead::load(head_dir, &info.reference(), &candle_core::Device::Cpu)?;
    let cache = EmbedCache::new(config.data_dir.join("cache/embeddings"));
    let evaluations = pipeline::evaluate_head(&engine, &cache, &source, &head);
    engine.shutdown();
    let evaluations = evaluations?;
    if json {
        let report = serde_json::json!({
            "head": head.card().name,
            "version": head.card().version,
            "encoder_precision": info.precision,
            "evaluations": evaluations,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("head {} v{}, encoder precision {}\n", head.card().name, head.card().version, info.precision.as_str());
    for evaluation in &evaluations {
        println!("{}", eval::render(evaluation, &head.card().labels));
    }
    Ok(())
}
