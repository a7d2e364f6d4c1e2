//! The learning pipeline as library functions that return reports: train a head from a recipe,
//! evaluate a head on its recipe's held-out data, retrain a served head from stored feedback and
//! promote it only when it is not worse. The command line parses arguments and prints reports;
//! the rules live here.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use tierline_infer::head_versions::HeadVersions;
use tierline_infer::heads::{Activation, ClassifierHead, Head, HeadCard};
use tierline_infer::Engine;

use super::embed_cache::EmbedCache;
use super::eval::{self, Evaluation, Report};
use super::feedback::{self, Scores, Verdict};
use super::recipe::{Example, Recipe, Source, TrainSettings};
use super::train::{self, HeadShape, Split};
use crate::store::{FeedbackFilter, FeedbackRow, FeedbackStatus, Store, StoreResult};

/// A recipe with the folders its sources are read from.
pub struct RecipeSource {
    pub recipe: Recipe,
    /// The recipe's own folder (`local = true` sources, mapping files).
    pub recipe_dir: PathBuf,
    /// The shared data folder the other sources are relative to.
    pub data_dir: PathBuf,
    /// Where the recipe was read from, for the card.
    pub path: Option<PathBuf>,
}

impl RecipeSource {
    /// Reads `path`; the shared data folder must exist.
    pub fn load(path: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        let (recipe, recipe_dir) = Recipe::load(path)?;
        anyhow::ensure!(
            data_dir.is_dir(),
            "training data folder {} is missing: recipes read the shared public datasets from there (pass --data DIR, or --file FILE)",
            data_dir.display()
        );
        Ok(Self { recipe, recipe_dir, data_dir: data_dir.to_path_buf(), path: Some(path.to_path_buf()) })
    }

    /// A one-source recipe for a single labeled file: labels are whatever it holds, sorted.
    pub fn for_file(
        file: &Path,
        name: &str,
        columns: (&str, &str),
        multi_label: bool,
        hidden: Vec<usize>,
    ) -> anyhow::Result<Self> {
        let (text, label) = columns;
        let rows = super::dataset::load(file, text, label)?;
        let mut labels: Vec<String> = rows.iter().flat_map(|r| r.labels.iter().cloned()).collect();
        labels.sort();
        labels.dedup();
        let source = Source {
            name: file.file_stem().map_or("data".into(), |s| s.to_string_lossy().to_string()),
            file: PathBuf::from(file.file_name().context("the file path names no file")?),
            local: false,
            text: text.to_string(),
            label: label.to_string(),
            map: Default::default(),
            mapping_file: None,
            mapping_key: None,
            keep_only_mapped: false,
            sample: None,
            train_only: false,
            subject: None,
            exclude_ids: None,
        };
        let recipe = Recipe {
            name: name.to_string(),
            task: name.to_string(),
            labels,
            multi_label,
            hidden,
            input: Default::default(),
            train: Default::default(),
            sources: vec![source],
            evaluations: Vec::new(),
        };
        let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(Self { recipe, recipe_dir: dir.clone(), data_dir: dir, path: None })
    }

    /// Every source's examples, with how many each gave.
    pub fn examples(&self) -> anyhow::Result<(Vec<Example>, SourceCounts)> {
        let mut examples = Vec::new();
        let mut counts = Vec::new();
        for source in &self.recipe.sources {
            let rows = self.recipe.examples(source, &self.recipe_dir, &self.data_dir)?;
            counts.push((source.name.clone(), rows.len()));
            examples.extend(rows);
        }
        Ok((examples, counts))
    }
}

/// Examples per source, by source name.
pub type SourceCounts = Vec<(String, usize)>;

/// What `train_head` did.
pub struct TrainReport {
    pub card: HeadCard,
    pub out: PathBuf,
    pub source_counts: SourceCounts,
    pub split_sizes: (usize, usize, usize),
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub best_dev_score: f64,
    pub temperature: f32,
    pub train_seconds: f64,
    pub evaluations: Vec<Evaluation>,
}

/// Trains a head from its recipe on the engine's encoder, measures it on the held-out split and
/// the recipe's other sources, and writes it to `out` (its version one above what was there).
pub fn train_head(
    engine: &Engine,
    cache: &EmbedCache,
    source: &RecipeSource,
    out: &Path,
    command: &str,
) -> anyhow::Result<TrainReport> {
    let recipe = &source.recipe;
    let info = engine.info().clone();
    let (examples, source_counts) = source.examples()?;
    let splits = recipe.split(examples);
    let embed = |rows: &[Example], label: &str| cache.embed_examples(engine, recipe.input, rows, label);
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
    let previous_version = HeadCard::read(out).map_or(0, |card| card.version);
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
            "recipe": source.path.as_ref().map(|p| p.display().to_string()),
            "sources": recipe.sources.iter().map(|s| serde_json::json!({"name": s.name, "file": s.file, "sample": s.sample})).collect::<Vec<_>>(),
            "examples": {"train": splits.train.len(), "dev": splits.dev.len(), "test": splits.test.len()},
            "settings": serde_json::to_value(SettingsView::from(&recipe.train))?,
            "epochs_run": outcome.epochs_run,
            "best_epoch": outcome.best_epoch,
            "best_dev_score": outcome.best_dev_score,
            "train_seconds": train_seconds,
        }),
        metrics: serde_json::Value::Null,
        created: today(),
    };
    let head = ClassifierHead::from_parts(card.clone(), &outcome.tensors)?;
    let evaluations = held_out_evaluations(source, &splits.test, &test_x, &head, &embed)?;
    card.metrics = serde_json::json!({
        "split": format!(
            "held-out {:.0}% test split (seed {}), dev {:.0}% for early stopping and calibration",
            recipe.train.test_fraction * 100.0,
            recipe.train.seed,
            recipe.train.dev_fraction * 100.0
        ),
        "evaluations": evaluations.iter().map(summary).collect::<Vec<_>>(),
    });
    ClassifierHead::save_parts(out, &card, &outcome.tensors)?;
    Ok(TrainReport {
        card,
        out: out.to_path_buf(),
        source_counts,
        split_sizes: (splits.train.len(), splits.dev.len(), splits.test.len()),
        epochs_run: outcome.epochs_run,
        best_epoch: outcome.best_epoch,
        best_dev_score: outcome.best_dev_score,
        temperature: outcome.temperature,
        train_seconds,
        evaluations,
    })
}

/// Re-measures a trained head on its recipe's held-out split (rebuilt as training built it) and
/// the recipe's other sources, for example under another `engine.precision`.
pub fn evaluate_head(
    engine: &Engine,
    cache: &EmbedCache,
    source: &RecipeSource,
    head: &ClassifierHead,
) -> anyhow::Result<Vec<Evaluation>> {
    let (examples, _) = source.examples()?;
    let splits = source.recipe.split(examples);
    let embed = |rows: &[Example], label: &str| cache.embed_examples(engine, head.card().input, rows, label);
    let test_x = embed(&splits.test, "test")?;
    held_out_evaluations(source, &splits.test, &test_x, head, &embed)
}

/// Embeddings of a set of examples, under a cache label.
type EmbedFn<'a> = dyn Fn(&[Example], &str) -> anyhow::Result<Vec<f32>> + 'a;

/// The held-out test split, overall and per source; then the recipe's evaluation sets from other
/// sources.
fn held_out_evaluations(
    source: &RecipeSource,
    test: &[Example],
    test_x: &[f32],
    head: &ClassifierHead,
    embed: &EmbedFn,
) -> anyhow::Result<Vec<Evaluation>> {
    let recipe = &source.recipe;
    let dims = head.input_dimensions();
    let mut evaluations = vec![eval::evaluate("test (held-out split)", head, test_x, test)?];
    for name in recipe.sources.iter().map(|s| s.name.clone()) {
        let (rows, x) = subset(test, test_x, dims, |e| e.source == name);
        if !rows.is_empty() {
            evaluations.push(eval::evaluate(&format!("test: {name}"), head, &x, &rows)?);
        }
    }
    for other in &recipe.evaluations {
        let rows = recipe.examples(other, &source.recipe_dir, &source.data_dir)?;
        let x = embed(&rows, &other.name)?;
        evaluations.push(eval::evaluate(&format!("other source: {}", other.name), head, &x, &rows)?);
    }
    Ok(evaluations)
}

/// Which stored feedback a retraining reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct FeedbackChoice {
    /// Only examples a person accepted.
    pub reviewed_only: bool,
    /// Also unreviewed confirmations (by default only corrections and accepted examples).
    pub include_confirmed: bool,
}

/// The stored feedback of `head` that a retraining learns from.
pub async fn training_feedback(store: &dyn Store, head: &str, choice: FeedbackChoice) -> StoreResult<Vec<FeedbackRow>> {
    let statuses = if choice.reviewed_only {
        vec![FeedbackStatus::Accepted]
    } else {
        vec![FeedbackStatus::Pending, FeedbackStatus::Accepted]
    };
    let filter = FeedbackFilter { head: Some(head.into()), statuses, after_id: 0, limit: 0 };
    let rows = store.feedback(&filter).await?;
    Ok(rows.into_iter().filter(|row| feedback::counts_for_training(row, choice.include_confirmed)).collect())
}

/// How a retraining runs.
#[derive(Debug, Clone)]
pub struct RetrainSettings {
    /// How many times each feedback example counts in training.
    pub feedback_weight: usize,
    /// Largest drop of macro-F1 on the original held-out split still promoted.
    pub tolerance: f64,
    /// Compare and report, but write and promote nothing.
    pub dry_run: bool,
    /// The command line, kept on the card.
    pub command: String,
}

/// Where a served head lives: its shipped folder and its promoted versions.
#[derive(Clone, Copy)]
pub struct ServedHead<'a> {
    pub versions: &'a HeadVersions,
    /// `models.heads_dir`: the shipped heads.
    pub heads_dir: &'a Path,
    pub name: &'a str,
}

/// What `retrain_from_feedback` did.
#[derive(Debug, Serialize)]
pub struct RetrainReport {
    pub head: String,
    pub served_version: u32,
    pub served_from: PathBuf,
    pub candidate_version: u32,
    pub original_split: (usize, usize, usize),
    pub feedback_train: usize,
    pub feedback_held_out: usize,
    /// Original examples whose label the served head lacks (left out).
    pub dropped_original: usize,
    /// Feedback labels the head lacks, with their counts (left out).
    pub unknown_labels: Vec<(String, usize)>,
    pub served_scores: Scores,
    pub candidate_scores: Scores,
    pub verdict: Verdict,
    /// Where the promoted version was written; `None` when not promoted or a dry run.
    pub promoted: Option<PathBuf>,
}

/// Retrains the served version of `head` on its original data plus `rows` (stored feedback),
/// compares the candidate with the served version on held-out data, and promotes it only if it
/// is not worse. A refused candidate is reported with `verdict.promote == false`.
pub fn retrain_from_feedback(
    engine: &Engine,
    cache: &EmbedCache,
    served: &ServedHead<'_>,
    source: RecipeSource,
    rows: &[FeedbackRow],
    settings: &RetrainSettings,
) -> anyhow::Result<RetrainReport> {
    let ServedHead { versions, heads_dir, name: head } = *served;
    let info = engine.info().clone();
    let served_dir = versions.current_dir(head).unwrap_or_else(|| heads_dir.join(head));
    let current = ClassifierHead::load(&served_dir, &info.reference(), &candle_core::Device::Cpu)
        .with_context(|| format!("cannot load the served version of head `{head}`"))?;
    let card = current.card().clone();
    anyhow::ensure!(
        card.activation == Activation::Softmax,
        "learning from feedback needs a single-label head; `{head}` is multi-label"
    );

    // The original data, labelled the way the served head labels.
    let mut recipe = source.recipe.clone();
    let (base, _) = source.examples()?;
    let (base, dropped_original) = relabel(base, &recipe.labels, &card.labels);
    recipe.labels = card.labels.clone();
    // The candidate has the served head's shape (an ensemble is already merged into it).
    recipe.hidden = card.hidden.clone();
    recipe.train.ensemble = 1;
    let splits = recipe.split(base);

    let feedback = feedback::examples(rows, &card.labels);
    anyhow::ensure!(
        !feedback.train.is_empty(),
        "no usable feedback for head `{head}` (resolve conversations with `corrected_topic`, or review examples)"
    );
    let embed = |rows: &[Example], label: &str| cache.embed_examples(engine, card.input, rows, label);
    let (mut train_x, dev_x, test_x) =
        (embed(&splits.train, "train")?, embed(&splits.dev, "dev")?, embed(&splits.test, "test")?);
    let (feedback_x, held_out_x) = (embed(&feedback.train, "feedback")?, embed(&feedback.held_out, "held-out")?);
    let mut train_rows = splits.train.clone();
    for _ in 0..settings.feedback_weight.max(1) {
        train_rows.extend(feedback.train.iter().cloned());
        train_x.extend_from_slice(&feedback_x);
    }
    let shape = HeadShape {
        dims: current.input_dimensions(),
        hidden: &recipe.hidden,
        labels: card.labels.len(),
        multi_label: false,
    };
    let outcome = train::train(
        &shape,
        &recipe.train,
        &Split { embeddings: &train_x, examples: &train_rows },
        &Split { embeddings: &dev_x, examples: &splits.dev },
        true,
    )?;
    let number = versions.versions(head).last().copied().unwrap_or(0).max(card.version) + 1;
    let mut candidate_card = HeadCard {
        version: number,
        temperature: outcome.temperature,
        thresholds: outcome.thresholds.clone(),
        created: today(),
        ..card.clone()
    };
    let candidate = ClassifierHead::from_parts(candidate_card.clone(), &outcome.tensors)?;

    let judge = |head: &ClassifierHead| -> anyhow::Result<(Scores, Vec<Evaluation>)> {
        let base = eval::evaluate("original held-out split", head, &test_x, &splits.test)?;
        let held_out = if feedback.held_out.is_empty() {
            None
        } else {
            Some(eval::evaluate("held-out feedback", head, &held_out_x, &feedback.held_out)?)
        };
        let scores = Scores { base_macro_f1: base.headline(), feedback_accuracy: held_out.as_ref().map(accuracy) };
        Ok((scores, std::iter::once(base).chain(held_out).collect()))
    };
    let (served_scores, _) = judge(&current)?;
    let (candidate_scores, evaluations) = judge(&candidate)?;
    let verdict = feedback::verdict(&served_scores, &candidate_scores, settings.tolerance);
    let mut report = RetrainReport {
        head: head.to_string(),
        served_version: card.version,
        served_from: served_dir,
        candidate_version: number,
        original_split: (splits.train.len(), splits.dev.len(), splits.test.len()),
        feedback_train: feedback.train.len(),
        feedback_held_out: feedback.held_out.len(),
        dropped_original,
        unknown_labels: feedback.unknown_labels.into_iter().collect(),
        served_scores,
        candidate_scores,
        verdict,
        promoted: None,
    };
    if !report.verdict.promote || settings.dry_run {
        return Ok(report);
    }
    candidate_card.training = serde_json::json!({
        "command": settings.command,
        "from_feedback": {
            "base_version": card.version,
            "feedback_examples": {"train": report.feedback_train, "held_out": report.feedback_held_out},
            "feedback_weight": settings.feedback_weight,
        },
        "examples": {"train": train_rows.len(), "dev": splits.dev.len(), "test": splits.test.len()},
        "epochs_run": outcome.epochs_run,
        "best_epoch": outcome.best_epoch,
        "previous": card.training,
    });
    candidate_card.metrics = serde_json::json!({
        "compared_with": {"version": card.version, "scores": served_scores},
        "scores": candidate_scores,
        "evaluations": evaluations.iter().map(summary).collect::<Vec<_>>(),
    });
    report.promoted = Some(promote(versions, head, number, &candidate_card, &outcome.tensors)?);
    Ok(report)
}

/// Writes version `number` of `head` and makes it the served one; running servers pick it up at
/// their next poll. Returns its folder.
pub fn promote(
    versions: &HeadVersions,
    head: &str,
    number: u32,
    card: &HeadCard,
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
) -> anyhow::Result<PathBuf> {
    let (staged, dir) = versions.stage(head, number)?;
    anyhow::ensure!(staged == number, "version v{number} was taken meanwhile; run again");
    ClassifierHead::save_parts(&dir, card, tensors)?;
    versions.promote(head, &format!("v{number}"))?;
    Ok(dir)
}

fn accuracy(evaluation: &Evaluation) -> f64 {
    match &evaluation.report {
        Report::Single(report) => report.accuracy,
        Report::Multi(report) => report.subset_accuracy,
    }
}

/// Maps label indices from `from` onto `to` by name; examples whose label `to` lacks are dropped.
fn relabel(examples: Vec<Example>, from: &[String], to: &[String]) -> (Vec<Example>, usize) {
    let before = examples.len();
    let kept: Vec<Example> = examples
        .into_iter()
        .filter_map(|mut example| {
            example.labels = example
                .labels
                .iter()
                .map(|&i| to.iter().position(|l| Some(l) == from.get(i)))
                .collect::<Option<Vec<_>>>()?;
            Some(example)
        })
        .collect();
    let dropped = before - kept.len();
    (kept, dropped)
}

/// The rows of `rows` (and their `dims`-wide inputs) that `keep` selects.
fn subset(rows: &[Example], x: &[f32], dims: usize, keep: impl Fn(&Example) -> bool) -> (Vec<Example>, Vec<f32>) {
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

/// The card keeps headline figures; `tierline eval --json` gives everything.
fn summary(evaluation: &Evaluation) -> serde_json::Value {
    let mut value = serde_json::to_value(evaluation).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("reliability");
        map.remove("confusion");
    }
    value
}

#[derive(Serialize)]
struct SettingsView {
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

impl From<&TrainSettings> for SettingsView {
    fn from(s: &TrainSettings) -> Self {
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

/// Today's date (UTC) as `YYYY-MM-DD`, for cards.
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
