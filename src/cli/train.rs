use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use tierline::config::Config;
use tierline::inference::heads::{Activation, ClassifierHead, Head, HeadCard};
use tierline::inference::{self, Engine, EngineMetrics};
use tierline::learn::embed_cache::EmbedCache;
use tierline::learn::eval::{self, Evaluation};
use tierline::learn::recipe::{self, Example, Recipe, Source};
use tierline::learn::train::{self, HeadShape, Split};

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
    let command = std::iter::once("tierline".to_string()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
    let (recipe, recipe_dir, data_dir) = base_recipe(&args, None)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("models/heads").join(&recipe.name));

    let mut examples = Vec::new();
    for source in &recipe.sources {
        let rows = recipe.examples(source, &recipe_dir, &data_dir)?;
        eprintln!("source {:<14} {:>6} examples", source.name, rows.len());
        examples.extend(rows);
    }
    let splits = recipe.split(examples);
    eprintln!("split: train {}, dev {}, test {}", splits.train.len(), splits.dev.len(), splits.test.len());

    let engine = start_engine(&config)?;
    let info = engine.info().clone();
    let cache = EmbedCache::new(config.data_dir.join("cache/embeddings"));
    let embed = |rows: &[Example], label: &str| cache.embed_examples(&engine, recipe.input, rows, label);
    let (train_x, dev_x, test_x) =
        (embed(&splits.train, "train")?, embed(&splits.dev, "dev")?, embed(&splits.test, "test")?);

    let shape = HeadShape {
        dims: info.input_dimensions(recipe.input)?,
        hidden: &recipe.hidden,
        labels: recipe.labels.len(),
        multi_label: recipe.multi_label,
    };
    let started = std::time::Instant::now();
    let (outcome, hidden) = train::train_ensemble(
        &shape,
        &recipe.train,
        &Split { embeddings: &train_x, examples: &splits.train },
        &Split { embeddings: &dev_x, examples: &splits.dev },
        true,
    )?;
    let train_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "trained in {train_seconds:.1} s: {} epochs, best dev {:.4} at epoch {}, temperature {:.2}",
        outcome.epochs_run, outcome.best_dev_score, outcome.best_epoch, outcome.temperature
    );

    let previous_version = HeadCard::read(&out).map_or(0, |card| card.version);
    let mut card = HeadCard {
        name: recipe.name.clone(),
        task: recipe.task.clone(),
        labels: recipe.labels.clone(),
        activation: if recipe.multi_label { Activation::Sigmoid } else { Activation::Softmax },
        input: recipe.input,
        hidden,
        encoder: info.reference(),
        temperature: outcome.temperature,
        thresholds: outcome.thresholds.clone(),
        version: previous_version + 1,
        training: serde_json::json!({
            "command": command,
            "recipe": args.recipe.as_ref().map(|p| p.display().to_string()),
            "sources": recipe.sources.iter().map(|s| serde_json::json!({"name": s.name, "file": s.file, "sample": s.sample})).collect::<Vec<_>>(),
            "examples": {"train": splits.train.len(), "dev": splits.dev.len(), "test": splits.test.len()},
            "settings": serde_json::to_value(TrainSettingsView::from(&recipe.train))?,
            "epochs_run": outcome.epochs_run,
            "best_epoch": outcome.best_epoch,
            "best_dev_score": outcome.best_dev_score,
            "train_seconds": train_seconds,
        }),
        metrics: serde_json::Value::Null,
        created: today(),
    };
    let head = ClassifierHead::from_parts(card.clone(), &outcome.tensors)?;

    let evaluations = held_out_evaluations(&recipe, &recipe_dir, &data_dir, &splits.test, &test_x, &head, &embed)?;
    for evaluation in &evaluations {
        eprintln!("{}", eval::render(evaluation, &recipe.labels));
    }
    card.metrics = serde_json::json!({
        "split": format!("held-out {:.0}% test split (seed {}), dev {:.0}% for early stopping and calibration", recipe.train.test_fraction * 100.0, recipe.train.seed, recipe.train.dev_fraction * 100.0),
        "evaluations": evaluations.iter().map(summary).collect::<Vec<_>>(),
    });

    ClassifierHead::save_parts(&out, &card, &outcome.tensors)?;
    println!("wrote {} (version {})", out.display(), card.version);
    engine.shutdown();
    Ok(())
}

/// Embeddings of a set of examples, under a cache label.
pub type EmbedFn<'a> = dyn Fn(&[Example], &str) -> anyhow::Result<Vec<f32>> + 'a;

/// The held-out test split, overall and per source; then the recipe's evaluation sets from other
/// sources.
pub fn held_out_evaluations(
    recipe: &Recipe,
    recipe_dir: &Path,
    data_dir: &Path,
    test: &[Example],
    test_x: &[f32],
    head: &ClassifierHead,
    embed: &EmbedFn,
) -> anyhow::Result<Vec<Evaluation>> {
    let dims = head.input_dimensions();
    let mut evaluations = vec![eval::evaluate("test (held-out split)", head, test_x, test)?];
    for source in recipe.sources.iter().map(|s| s.name.clone()) {
        let (rows, x) = subset(test, test_x, dims, |e| e.source == source);
        if !rows.is_empty() {
            evaluations.push(eval::evaluate(&format!("test: {source}"), head, &x, &rows)?);
        }
    }
    for source in &recipe.evaluations {
        let rows = recipe.examples(source, recipe_dir, data_dir)?;
        let x = embed(&rows, &source.name)?;
        evaluations.push(eval::evaluate(&format!("other source: {}", source.name), head, &x, &rows)?);
    }
    Ok(evaluations)
}

/// The recipe (with the folders its sources are read from): `--recipe`, `--file`, or for a
/// head being retrained, its own `models/heads/<head>/recipe.toml`.
pub fn base_recipe(args: &TrainArgs, head: Option<(&Path, &str)>) -> anyhow::Result<(Recipe, PathBuf, PathBuf)> {
    let default_recipe = head.map(|(heads_dir, name)| heads_dir.join(name).join("recipe.toml"));
    match (args.recipe.as_ref().or(default_recipe.as_ref().filter(|_| args.file.is_none())), &args.file) {
        (Some(path), _) => {
            let (recipe, dir) = Recipe::load(path)?;
            anyhow::ensure!(
                args.data.is_dir(),
                "training data folder {} is missing: recipes read the shared public datasets from there (pass --data DIR, or --file FILE)",
                args.data.display()
            );
            Ok((recipe, dir, args.data.clone()))
        }
        (None, Some(file)) => file_recipe(args, head.map(|(_, name)| name), file),
        (None, None) => anyhow::bail!("give --recipe FILE, or --file FILE --name NAME"),
    }
}

/// The card keeps headline figures; `tierline eval --json` gives everything.
pub fn summary(evaluation: &Evaluation) -> serde_json::Value {
    let mut value = serde_json::to_value(evaluation).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("reliability");
        map.remove("confusion");
    }
    value
}

#[derive(serde::Serialize)]
struct TrainSettingsView {
    epochs: usize,
    learning_rate: f64,
    weight_decay: f64,
    batch_size: usize,
    patience: usize,
    seed: u64,
    class_weights: bool,
    ensemble: usize,
    balance_on_dev: bool,
}

impl From<&recipe::TrainSettings> for TrainSettingsView {
    fn from(s: &recipe::TrainSettings) -> Self {
        Self {
            epochs: s.epochs,
            learning_rate: s.learning_rate,
            weight_decay: s.weight_decay,
            batch_size: s.batch_size,
            patience: s.patience,
            seed: s.seed,
            class_weights: s.class_weights,
            ensemble: s.ensemble,
            balance_on_dev: s.balance_on_dev,
        }
    }
}

pub fn subset(rows: &[Example], x: &[f32], dims: usize, keep: impl Fn(&Example) -> bool) -> (Vec<Example>, Vec<f32>) {
    let mut kept = Vec::new();
    let mut values = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if keep(row) {
            kept.push(row.clone());
            values.extend_from_slice(&x[i * dims..(i + 1) * dims]);
        }
    }
    (kept, values)
}

pub fn start_engine(config: &Config) -> anyhow::Result<Engine> {
    let metrics = EngineMetrics::register(&prometheus::Registry::new())?;
    inference::start_engine(&config.infer(), metrics, true)
}

/// A one-source recipe for `--file`: labels are whatever the file holds, in sorted order.
fn file_recipe(args: &TrainArgs, head: Option<&str>, file: &Path) -> anyhow::Result<(Recipe, PathBuf, PathBuf)> {
    let rows = tierline::learn::dataset::load(file, &args.text_column, &args.label_column)?;
    let mut labels: Vec<String> = rows.iter().flat_map(|r| r.labels.iter().cloned()).collect();
    labels.sort();
    labels.dedup();
    let name = args.name.clone().or(head.map(String::from)).context("--name is required with --file")?;
    let source = Source {
        name: file.file_stem().map_or("data".into(), |s| s.to_string_lossy().to_string()),
        file: PathBuf::from(file.file_name().context("--file names no file")?),
        local: false,
        text: args.text_column.clone(),
        label: args.label_column.clone(),
        map: Default::default(),
        mapping_file: None,
        mapping_key: None,
        keep_only_mapped: false,
        sample: None,
        train_only: false,
    };
    let recipe = Recipe {
        name: name.clone(),
        task: name,
        labels,
        multi_label: args.multi_label,
        hidden: args.hidden.clone(),
        input: Default::default(),
        train: Default::default(),
        sources: vec![source],
        evaluations: Vec::new(),
    };
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    Ok((recipe, dir.clone(), dir))
}

pub fn today() -> String {
    let days =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0)
            as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
