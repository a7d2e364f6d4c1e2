use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use tierline::config::Config;
use tierline::inference::{self, Engine, EngineMetrics};
use tierline::learn::embed_cache::EmbedCache;
use tierline::learn::eval;
use tierline::learn::pipeline::{self, RecipeSource};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The head's recipe (data sources, label maps, settings): models/heads/<name>/recipe.toml.
    #[arg(long, conflicts_with_all = ["file", "name"])]
    recipe: Option<PathBuf>,
    /// Shared training data folder that recipe sources are relative to.
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Instead of a recipe: one JSONL/CSV file of labeled texts...
    #[arg(long)]
    file: Option<PathBuf>,
    /// ...the head's name...
    #[arg(long)]
    name: Option<String>,
    /// ...its text column...
    #[arg(long, default_value = "text")]
    text_column: String,
    /// ...its label column (a string, or a list for multi-label data)...
    #[arg(long, default_value = "label")]
    label_column: String,
    /// ...multi-label (sigmoid) rather than single-label (softmax)...
    #[arg(long)]
    multi_label: bool,
    /// ...hidden layer sizes (empty: linear head).
    #[arg(long, value_delimiter = ',')]
    hidden: Vec<usize>,
    /// Output folder (default: models/heads/<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Retrain this served head on its original data (its recipe, or --file) plus the feedback
    /// stored at resolutions; promote the new version only if it is not worse on held-out data.
    #[arg(long, value_name = "HEAD", conflicts_with = "out")]
    pub from_feedback: Option<String>,
    /// With --from-feedback: how many times each feedback example counts in training.
    #[arg(long, default_value_t = 5)]
    pub feedback_weight: usize,
    /// With --from-feedback: largest drop of macro-F1 on the original held-out split still promoted.
    #[arg(long, default_value_t = 0.01)]
    pub tolerance: f64,
    /// With --from-feedback: only examples a person accepted (default: all not rejected).
    #[arg(long)]
    pub reviewed_only: bool,
    /// With --from-feedback: also learn from unreviewed confirmations (resolutions that kept the
    /// predicted topic); by default only corrections and accepted examples are used.
    #[arg(long)]
    pub include_confirmed: bool,
    /// With --from-feedback: compare and report, but write and promote nothing.
    #[arg(long)]
    pub no_promote: bool,
}

pub fn run(config: Config, args: TrainArgs) -> anyhow::Result<()> {
    if let Some(head) = args.from_feedback.clone() {
        return super::feedback::train_from_feedback(config, &args, &head);
    }
    let source = recipe_source(&args, None)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("models/heads").join(&source.recipe.name));
    let engine = start_engine(&config)?;
    let cache = EmbedCache::new(config.data_dir.join("cache/embeddings"));
    let report = pipeline::train_head(&engine, &cache, &source, &out, &command_line())?;
    engine.shutdown();
    for (name, count) in &report.source_counts {
        eprintln!("source {name:<14} {count:>6} examples");
    }
    let (train, dev, test) = report.split_sizes;
    eprintln!("split: train {train}, dev {dev}, test {test}");
    eprintln!(
        "trained in {:.1} s: {} epochs, best dev {:.4} at epoch {}, temperature {:.2}",
        report.train_seconds, report.epochs_run, report.best_dev_score, report.best_epoch, report.temperature
    );
    for evaluation in &report.evaluations {
        eprintln!("{}", eval::render(evaluation, &source.recipe.labels));
    }
    println!("wrote {} (version {})", report.out.display(), report.card.version);
    Ok(())
}

/// The command line as typed, kept on the card.
pub fn command_line() -> String {
    std::iter::once("tierline".to_string()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ")
}

/// The recipe: `--recipe`, `--file`, or for a head being retrained, its own
/// `models/heads/<head>/recipe.toml`.
pub fn recipe_source(args: &TrainArgs, head: Option<(&Path, &str)>) -> anyhow::Result<RecipeSource> {
    let default_recipe = head.map(|(heads_dir, name)| heads_dir.join(name).join("recipe.toml"));
    match (args.recipe.as_ref().or(default_recipe.as_ref().filter(|_| args.file.is_none())), &args.file) {
        (Some(path), _) => RecipeSource::load(path, &args.data),
        (None, Some(file)) => {
            let name = args
                .name
                .clone()
                .or(head.map(|(_, name)| name.to_string()))
                .context("--name is required with --file")?;
            let columns = (args.text_column.as_str(), args.label_column.as_str());
            RecipeSource::for_file(file, &name, columns, args.multi_label, args.hidden.clone())
        }
        (None, None) => anyhow::bail!("give --recipe FILE, or --file FILE --name NAME"),
    }
}

pub fn start_engine(config: &Config) -> anyhow::Result<Engine> {
    let metrics = EngineMetrics::register(&prometheus::Registry::new())?;
    inference::start_engine(&config.infer(), metrics, true)
}
