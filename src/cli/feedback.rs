//! `tierline train --from-feedback HEAD`, `tierline heads list|rollback` and
//! `tierline feedback export`: the learning loop from the command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use tierline::config::Config;
use tierline::inference::head_versions::HeadVersions;
use tierline::inference::heads::{head_folders, Activation, ClassifierHead, Head, HeadCard};
use tierline::learn::embed_cache::EmbedCache;
use tierline::learn::eval::{self, Evaluation, Report};
use tierline::learn::feedback::{self, Scores};
use tierline::learn::recipe::Example;
use tierline::learn::train::{self, HeadShape, Split};
use tierline::storage::{FeedbackFilter, FeedbackStatus, Store};

use super::train::{base_recipe, start_engine, TrainArgs};

/// Retrains `head` on its original data plus the feedback stored at resolutions, compares the
/// candidate with the served version on held-out data, and promotes it only if it is not worse.
pub fn train_from_feedback(config: Config, args: &TrainArgs, head: &str) -> anyhow::Result<()> {
    let command = std::iter::once("tierline".to_string()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ");
    let versions = HeadVersions::new(config.infer().head_versions_dir());
    let engine = start_engine(&config)?;
    let info = engine.info().clone();
    let served_dir = versions.current_dir(head).unwrap_or_else(|| config.models.heads_dir.join(head));
    let current = ClassifierHead::load(&served_dir, &info.reference(), &candle_core::Device::Cpu)
        .with_context(|| format!("cannot load the served version of head `{head}`"))?;
    let card = current.card().clone();
    anyhow::ensure!(
        card.activation == Activation::Softmax,
        "learning from feedback needs a single-label head; `{head}` is multi-label"
    );
    eprintln!("served: {head} v{} from {}", card.version, served_dir.display());

    // The original data, labelled the way the served head labels.
    let (mut recipe, recipe_dir, data_dir) = base_recipe(args, Some((&config.models.heads_dir, head)))?;
    let mut base = Vec::new();
    for source in &recipe.sources {
        base.extend(recipe.examples(source, &recipe_dir, &data_dir)?);
    }
    let (base, dropped) = relabel(base, &recipe.labels, &card.labels);
    if dropped > 0 {
        eprintln!("{dropped} original examples carry labels the served head lacks; left out");
    }
    recipe.labels = card.labels.clone();
    // The candidate has the served head's shape (an ensemble is already merged into it).
    recipe.hidden = card.hidden.clone();
    recipe.train.ensemble = 1;
    let splits = recipe.split(base);

    // The feedback, split into training and held-out parts.
    let database = config.database_path();
    anyhow::ensure!(database.is_file(), "no database at {}: nothing to learn from yet", database.display());
    let store = Store::open(&database)?;
    let statuses = if args.reviewed_only {
        vec![FeedbackStatus::Accepted]
    } else {
        vec![FeedbackStatus::Pending, FeedbackStatus::Accepted]
    };
    let mut rows = store.feedback(&FeedbackFilter { head: Some(head.into()), statuses, after_id: 0, limit: 0 })?;
    // Unreviewed confirmations repeat the head's own prediction: learning from them would only
    // entrench it. Corrections, and whatever a person accepted, are the signal.
    rows.retain(|r| args.include_confirmed || r.kind == "corrected" || r.status == FeedbackStatus::Accepted);
    let feedback = feedback::examples(&rows, &card.labels);
    for (label, count) in &feedback.unknown_labels {
        eprintln!("{count} feedback examples labelled `{label}`, which head `{head}` does not have; left out");
    }
    anyhow::ensure!(
        !feedback.train.is_empty(),
        "no usable feedback for head `{head}` in {} (resolve conversations with `corrected_topic`, or review examples)",
        database.display()
    );
    eprintln!(
        "original: train {}, dev {}, test {}; feedback: train {} (x{} weight), held out {}",
        splits.train.len(),
        splits.dev.len(),
        splits.test.len(),
        feedback.train.len(),
        args.feedback_weight,
        feedback.held_out.len()
    );

    let cache = EmbedCache::new(config.data_dir.join("cache/embeddings"));
    let embed = |rows: &[Example], label: &str| cache.embed_examples(&engine, card.input, rows, label);
    let (mut train_x, dev_x, test_x) =
        (embed(&splits.train, "train")?, embed(&splits.dev, "dev")?, embed(&splits.test, "test")?);
    let (feedback_x, held_out_x) = (embed(&feedback.train, "feedback")?, embed(&feedback.held_out, "held-out")?);
    let mut train_rows = splits.train.clone();
    for _ in 0..args.feedback_weight.max(1) {
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
        created: super::train::today(),
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
    let (current_scores, _) = judge(&current)?;
    let (candidate_scores, evaluations) = judge(&candidate)?;
    let verdict = feedback::verdict(&current_scores, &candidate_scores, args.tolerance);
    println!("{:<34} {:>10} {:>10}", "", format!("v{}", card.version), format!("v{number}"));
    println!(
        "{:<34} {:>10.4} {:>10.4}",
        "macro-F1, original held-out", current_scores.base_macro_f1, candidate_scores.base_macro_f1
    );
    if let (Some(before), Some(after)) = (current_scores.feedback_accuracy, candidate_scores.feedback_accuracy) {
        println!("{:<34} {:>10.4} {:>10.4}", "accuracy, held-out feedback", before, after);
    }
    for reason in &verdict.reasons {
        println!("  - {reason}");
    }
    if !verdict.promote {
        anyhow::bail!("not promoted: {head} v{number} is worse than the served v{}", card.version);
    }
    if args.no_promote {
        println!("{head} v{number} would be promoted (--no-promote: nothing written)");
        return Ok(());
    }

    candidate_card.training = serde_json::json!({
        "command": command,
        "from_feedback": {
            "base_version": card.version,
            "feedback_examples": {"train": feedback.train.len(), "held_out": feedback.held_out.len()},
            "feedback_weight": args.feedback_weight,
            "reviewed_only": args.reviewed_only,
        },
        "examples": {"train": train_rows.len(), "dev": splits.dev.len(), "test": splits.test.len()},
        "epochs_run": outcome.epochs_run,
        "best_epoch": outcome.best_epoch,
        "previous": card.training,
    });
    candidate_card.metrics = serde_json::json!({
        "compared_with": {"version": card.version, "scores": current_scores},
        "scores": candidate_scores,
        "evaluations": evaluations.iter().map(super::train::summary).collect::<Vec<_>>(),
    });
    let (staged, dir) = versions.stage(head, number)?;
    anyhow::ensure!(staged == number, "version v{number} was taken meanwhile; run again");
    ClassifierHead::save_parts(&dir, &candidate_card, &outcome.tensors)?;
    versions.promote(head, &format!("v{number}"))?;
    println!(
        "promoted {head} v{number} ({}); running servers switch within {} s; undo with `tierline heads rollback {head}`",
        dir.display(),
        config.models.head_poll_secs
    );
    engine.shutdown();
    Ok(())
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

#[derive(Debug, Subcommand)]
pub enum HeadsCommand {
    /// Every head with its shipped and promoted versions, and which one is served.
    List,
    /// Serve the version promoted before the current one (or the shipped head).
    Rollback { head: String },
}

pub fn heads(config: Config, command: HeadsCommand) -> anyhow::Result<()> {
    let versions = HeadVersions::new(config.infer().head_versions_dir());
    match command {
        HeadsCommand::List => {
            let names = head_folders(&config.models.heads_dir)?
                .into_iter()
                .filter_map(|folder| folder.file_name()?.to_str().map(String::from));
            for name in names {
                let shipped = HeadCard::read(&config.models.heads_dir.join(&name)).map_or(0, |c| c.version);
                let served = versions.current(&name);
                println!("{name}: shipped v{shipped}{}", if served.is_none() { " (served)" } else { "" });
                for number in versions.versions(&name) {
                    let version = format!("v{number}");
                    let marker = if served.as_deref() == Some(&version) { " (served)" } else { "" };
                    let scores = HeadCard::read(&versions.root().join(&name).join(&version))
                        .map(|c| c.metrics.get("scores").cloned().unwrap_or_default())
                        .unwrap_or_default();
                    println!("  {version}{marker} {scores}");
                }
            }
            Ok(())
        }
        HeadsCommand::Rollback { head } => {
            match versions.rollback(&head)? {
                Some(version) => println!("{head}: serving {version} again"),
                None => println!("{head}: serving the shipped head again"),
            }
            println!("running servers switch within {} s", config.models.head_poll_secs);
            Ok(())
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum FeedbackCommand {
    /// Write the labeled examples as JSONL (`text`, `label`, `kind`, `status`...), not rejected ones.
    Export(ExportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Only this head's examples.
    #[arg(long)]
    head: Option<String>,
    /// Output file (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn feedback(config: Config, command: FeedbackCommand) -> anyhow::Result<()> {
    let FeedbackCommand::Export(args) = command;
    let store = Store::open(&config.database_path())?;
    let filter = FeedbackFilter {
        head: args.head,
        statuses: vec![FeedbackStatus::Pending, FeedbackStatus::Accepted],
        after_id: 0,
        limit: 0,
    };
    let text = store.feedback_jsonl(&filter)?;
    match args.out {
        Some(path) => std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}
