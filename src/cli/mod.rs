//! Subcommands; each lives in its own module and calls library services.

mod answerability;
mod bench;
mod bench_overload;
mod bench_turns;
mod classify;
mod demo;
mod embed;
mod eval;
mod eval_retrieval;
mod eval_triage;
mod feedback;
mod index;
mod keys;
mod models;
mod plot;
mod report;
mod serve;
mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tierline::config::Config;

#[derive(Debug, Parser)]
#[command(name = "tierline", version, about = "Self-hosted AI customer-support automation")]
pub struct Cli {
    /// Configuration file (default: ./tierline.toml when present, else built-in defaults).
    #[arg(long, global = true, env = "TIERLINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Inference device: auto, cpu, cuda, cuda:N or metal (overrides `engine.device`).
    #[arg(long, global = true)]
    pub device: Option<String>,
    /// More log output (-v info, -vv debug); RUST_LOG wins when set.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (pulls the models on first start).
    Serve(serve::ServeArgs),
    /// Pull, list and locate models.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Embed texts given as arguments or one per line on stdin; prints JSON lines.
    Embed(embed::EmbedArgs),
    /// Train a head on the shared encoder (from a recipe, or one labeled file).
    Train(train::TrainArgs),
    /// Sentiment, frustration, topic and out-of-scope score for texts (arguments or stdin).
    Classify(classify::ClassifyArgs),
    /// Evaluate a head (or two side by side) on a labeled file: metrics, calibration, plots;
    /// `eval retrieval` measures knowledge-base search.
    Eval(eval::EvalArgs),
    /// Build the knowledge-base index.
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Measure speed.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Support metrics (escalation, AI resolution, time to human, CSAT...) per queue, as a table.
    Report(report::ReportArgs),
    /// Replay stored decisions and outcomes under other thresholds; suggests policy changes.
    Calibrate(report::CalibrateArgs),
    /// Play a few realistic conversations against a running server and print what happens.
    Demo(demo::DemoArgs),
    /// Head versions promoted from feedback: list them, roll back.
    #[command(subcommand)]
    Heads(feedback::HeadsCommand),
    /// Labeled examples learned from resolutions: export them.
    #[command(subcommand)]
    Feedback(feedback::FeedbackCommand),
}

/// The texts given as arguments, or else one per non-empty line of stdin; `what` names the action
/// in the error when there are none.
pub fn texts_from_args_or_stdin(texts: Vec<String>, what: &str) -> anyhow::Result<Vec<String>> {
    use std::io::BufRead;
    let texts = if texts.is_empty() {
        let lines = std::io::stdin().lock().lines().collect::<Result<Vec<_>, _>>()?;
        lines.into_iter().filter(|line| !line.trim().is_empty()).collect()
    } else {
        texts
    };
    anyhow::ensure!(!texts.is_empty(), "no text to {what} (give texts as arguments or on stdin)");
    Ok(texts)
}

/// Runs `work` to completion on a small runtime: the store is async, the CLI is not.
pub fn block_on<F: std::future::Future>(work: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(work))
}

/// The configured database (created on first use).
pub async fn open_store(config: &Config) -> anyhow::Result<std::sync::Arc<dyn tierline::store::Store>> {
    tierline::store::open(&config.database_path(), config.support.pool_size).await
}

pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn,tierline=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(device) = cli.device {
        tierline::inference::DeviceRequest::parse(&device).map_err(anyhow::Error::msg)?;
        config.engine.device = device;
    }
    match cli.command {
        Command::Serve(args) => serve::run(config, args),
        Command::Models(command) => models::run(config, command),
        Command::Embed(args) => embed::run(config, args),
        Command::Bench(command) => bench::run(config, command),
        Command::Keys(command) => keys::run(config, command),
        Command::Demo(args) => demo::run(args),
        Command::Heads(command) => feedback::heads(config, command),
        Command::Feedback(command) => feedback::feedback(config, command),
        Command::Report(args) => report::run(config, args),
        Command::Calibrate(args) => report::calibrate(config, args),
        Command::Train(args) => train::run(config, args),
        Command::Classify(args) => classify::run(config, args),
        Command::Eval(args) => match args.retrieval {
            Some(eval::EvalSubcommand::Retrieval(retrieval)) => eval_retrieval::run(config, retrieval),
            Some(eval::EvalSubcommand::Triage(triage)) => eval_triage::triage(config, triage),
            Some(eval::EvalSubcommand::Conversations(scenarios)) => eval_triage::conversations(config, scenarios),
            None => eval::run(config, args),
        },
        Command::Index(command) => index::run(config, command),
    }
}
