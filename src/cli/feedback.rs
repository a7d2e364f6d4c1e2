//! `tierline train --from-feedback HEAD`, `tierline heads list|rollback` and
//! `tierline feedback export`: the learning loop from the command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use tierline::config::Config;
use tierline::inference::head_versions::HeadVersions;
use tierline::inference::heads::{head_folders, HeadCard};
use tierline::learn::embed_cache::EmbedCache;
use tierline::learn::pipeline::{self, FeedbackChoice, RetrainSettings, ServedHead};
use tierline::store::{AuditAction, FeedbackFilter, FeedbackStatus};

use super::train::{command_line, recipe_source, start_engine, TrainArgs};

/// Retrains `head` on its original data plus the feedback stored at resolutions, compares the
/// candidate with the served version on held-out data, and promotes it only if it is not worse.
pub fn train_from_feedback(config: Config, args: &TrainArgs, head: &str) -> anyhow::Result<()> {
    let database = config.database_path();
    anyhow::ensure!(database.is_file(), "no database at {}: nothing to learn from yet", database.display());
    let choice = FeedbackChoice { reviewed_only: args.reviewed_only, include_confirmed: args.include_confirmed };
    let rows = super::block_on(async {
        let store = super::open_store(&config).await?;
        anyhow::Ok(pipeline::training_feedback(store.as_ref(), head, choice).await?)
    })??;
    let source = recipe_source(args, Some((&config.models.heads_dir, head)))?;
    let versions = HeadVersions::new(config.infer().head_versions_dir());
    let engine = start_engine(&config)?;
    let cache = EmbedCache::new(config.data_dir.join("cache/embeddings"));
    let settings = RetrainSettings {
        feedback_weight: args.feedback_weight,
        tolerance: args.tolerance,
        dry_run: args.no_promote,
        command: command_line(),
    };
    let served = ServedHead { versions: &versions, heads_dir: &config.models.heads_dir, name: head };
    let report = pipeline::retrain_from_feedback(&engine, &cache, &served, source, &rows, &settings);
    engine.shutdown();
    let report = report?;
    eprintln!("served: {head} v{} from {}", report.served_version, report.served_from.display());
    if report.dropped_original > 0 {
        eprintln!("{} original examples carry labels the served head lacks; left out", report.dropped_original);
    }
    for (label, count) in &report.unknown_labels {
        eprintln!("{count} feedback examples labelled `{label}`, which head `{head}` does not have; left out");
    }
    let (train, dev, test) = report.original_split;
    eprintln!(
        "original: train {train}, dev {dev}, test {test}; feedback: train {} (x{} weight), held out {}",
        report.feedback_train, args.feedback_weight, report.feedback_held_out
    );
    let (served, candidate) = (&report.served_scores, &report.candidate_scores);
    println!(
        "{:<34} {:>10} {:>10}",
        "",
        format!("v{}", report.served_version),
        format!("v{}", report.candidate_version)
    );
    println!("{:<34} {:>10.4} {:>10.4}", "macro-F1, original held-out", served.base_macro_f1, candidate.base_macro_f1);
    if let (Some(before), Some(after)) = (served.feedback_accuracy, candidate.feedback_accuracy) {
        println!("{:<34} {:>10.4} {:>10.4}", "accuracy, held-out feedback", before, after);
    }
    for reason in &report.verdict.reasons {
        println!("  - {reason}");
    }
    let number = report.candidate_version;
    if !report.verdict.promote {
        anyhow::bail!("not promoted: {head} v{number} is worse than the served v{}", report.served_version);
    }
    let Some(dir) = &report.promoted else {
        println!("{head} v{number} would be promoted (--no-promote: nothing written)");
        return Ok(());
    };
    let detail = serde_json::json!({
        "version": number,
        "replaces": report.served_version,
        "macro_f1": candidate.base_macro_f1,
        "served_macro_f1": served.base_macro_f1,
        "feedback_examples": report.feedback_train + report.feedback_held_out,
    });
    audit(&config, AuditAction::HeadPromoted, head, detail);
    println!(
        "promoted {head} v{number} ({}); running servers switch within {} s; undo with `tierline heads rollback {head}`",
        dir.display(),
        config.models.head_poll_secs
    );
    Ok(())
}

/// Records a change of what the servers serve in the audit log (`GET /v1/admin/audit`), as
/// the command line. The change is made by then: a failure to log it is said, not an error that
/// would invite running the command again.
fn audit(config: &Config, action: AuditAction, head: &str, detail: serde_json::Value) {
    let logged = super::block_on(async {
        let store = super::open_store(config).await?;
        store.audit("cli", action, head, &detail).await.context("could not write the audit log")
    });
    if let Err(err) = logged.and_then(|logged| logged) {
        eprintln!("warning: {} {head} is done but not in the audit log: {err:#}", action.as_str());
    }
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
            let now_served = versions.rollback(&head)?;
            let detail = serde_json::json!({ "serves": now_served.as_deref().unwrap_or("shipped") });
            audit(&config, AuditAction::HeadRolledBack, &head, detail);
            match now_served {
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
    let filter = FeedbackFilter {
        head: args.head,
        statuses: vec![FeedbackStatus::Pending, FeedbackStatus::Accepted],
        after_id: 0,
        limit: 0,
    };
    let rows = super::block_on(async {
        let store = super::open_store(&config).await?;
        anyhow::Ok(store.feedback(&filter).await?)
    })??;
    let text = tierline::learn::feedback::to_jsonl(&rows)?;
    match args.out {
        Some(path) => std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}
