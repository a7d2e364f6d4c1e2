use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use tierline::config::Config;
use tierline::inference::heads::ClassifierHead;
use tierline::learn::embed_cache::EmbedCache;
use tierline::learn::eval::{self, Evaluation};
use tierline::learn::plot;
use tierline::learn::recipe::Example;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The head to evaluate (a folder with card.json and weights.safetensors).
    #[arg(long)]
    head: PathBuf,
    /// A second head to compare with, side by side, on the same file.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Labeled JSONL or CSV; its labels must be the head's labels.
    #[arg(long)]
    file: PathBuf,
    #[arg(long, default_value = "text")]
    text_column: String,
    #[arg(long, default_value = "label")]
    label_column: String,
    /// Print the full report as JSON.
    #[arg(long)]
    json: bool,
    /// Write an SVG with the confusion matrix and the reliability diagram.
    #[arg(long)]
    plot: Option<PathBuf>,
}

pub fn run(config: Config, args: EvalArgs) -> anyhow::Result<()> {
    if let Some(plot) = &args.plot {
        anyhow::ensure!(plot.extension().is_some_and(|e| e == "svg"), "--plot writes SVG: give a file ending in .svg");
    }
    let engine = super::train::start_engine(&config)?;
    let reference = engine.info().reference();
    let device = candle_core::Device::Cpu;
    let mut heads = vec![ClassifierHead::load(&args.head, &reference, &device)?];
    if let Some(other) = &args.compare {
        heads.push(ClassifierHead::load(other, &reference, &device)?);
    }
    let rows = tierline::learn::dataset::load(&args.file, &args.text_column, &args.label_column)?;
    let labels = heads[0].card().labels.clone();
    let multi_label = heads[0].card().activation == tierline::inference::heads::Activation::Sigmoid;
    let mut examples = Vec::with_capacity(rows.len());
    for (line, row) in rows.into_iter().enumerate() {
        let mut indices = Vec::new();
        for label in &row.labels {
            let index = labels.iter().position(|l| l == label).with_context(|| {
                format!(
                    "{}: row {}: label `{label}` is not one of the head's labels {labels:?}",
                    args.file.display(),
                    line + 1
                )
            })?;
            indices.push(index);
        }
        if !multi_label && indices.len() != 1 {
            anyhow::bail!("{}: row {}: a single-label head needs exactly one label", args.file.display(), line + 1);
        }
        examples.push(Example { text: row.text, labels: indices, source: "file".into() });
    }
    anyhow::ensure!(!examples.is_empty(), "{} holds no examples", args.file.display());
    let texts: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();

    // Latency per item: a fresh (uncached) pass through the engine plus the head, on up to 512 texts.
    let sample = &texts[..texts.len().min(512)];
    let started = Instant::now();
    let fresh = engine.embed_blocking(sample)?;
    let sample_x: Vec<f32> = fresh.iter().flat_map(|o| o.embedding.iter().copied()).collect();
    eval::head_probabilities(&heads[0], &sample_x, sample.len())?;
    let latency_ms = started.elapsed().as_secs_f64() * 1e3 / sample.len() as f64;

    let x = EmbedCache::new(config.data_dir.join("cache/embeddings")).embed(&engine, &texts, "eval")?;
    let evaluations: Vec<Evaluation> = heads
        .iter()
        .map(|head| {
            eval::evaluate(
                &format!("{} v{} on {}", head.card().name, head.card().version, args.file.display()),
                head,
                &x,
                &examples,
            )
        })
        .collect::<anyhow::Result<_>>()?;
    engine.shutdown();

    if let Some(path) = &args.plot {
        std::fs::write(path, plot::svg(&evaluations[0], &labels))
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "latency_ms_per_item": latency_ms, "evaluations": evaluations })
            )?
        );
        return Ok(());
    }
    for evaluation in &evaluations {
        println!("{}", eval::render(evaluation, &labels));
    }
    println!("latency per item (encoder pass + head, batched, {} texts): {latency_ms:.2} ms", sample.len());
    if evaluations.len() == 2 {
        println!("\n{:<28} {:>10} {:>10} {:>9}", "side by side", "A", "B", "B - A");
        let row = |name: &str, a: f64, b: f64| println!("{name:<28} {a:>10.4} {b:>10.4} {:>+9.4}", b - a);
        row("headline (macro/micro F1)", evaluations[0].headline(), evaluations[1].headline());
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
