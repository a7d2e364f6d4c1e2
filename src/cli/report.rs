use tierline::config::Config;
use tierline::conversation::metrics::{self, Window};
use tierline::storage::{self, Store};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// day, week or all.
    #[arg(long, value_enum, default_value = "week")]
    pub window: WindowArg,
    /// Print JSON (the same as GET /v1/metrics/support).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum WindowArg {
    Day,
    Week,
    All,
}

pub fn run(config: Config, args: ReportArgs) -> anyhow::Result<()> {
    let store = Store::open(&config.data_dir.join(&config.support.database))?;
    let window = match args.window {
        WindowArg::Day => Window::Day,
        WindowArg::Week => Window::Week,
        WindowArg::All => Window::All,
    };
    let to = storage::now_ms() + 1;
    let from = window.millis().map_or(0, |w| to - w);
    let report = metrics::report(&store.conversations_created(from, to)?, window, from, to);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", metrics::table(&report));
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// day, week or all (default all: calibration wants every outcome).
    #[arg(long, value_enum, default_value = "all")]
    pub window: WindowArg,
    /// Print JSON (the same as GET /v1/calibration).
    #[arg(long)]
    pub json: bool,
}

pub fn calibrate(config: Config, args: CalibrateArgs) -> anyhow::Result<()> {
    let store = Store::open(&config.data_dir.join(&config.support.database))?;
    let policy = tierline::triage::Policy::load(&config.support.policy)?;
    let window = match args.window {
        WindowArg::Day => Window::Day,
        WindowArg::Week => Window::Week,
        WindowArg::All => Window::All,
    };
    let to = storage::now_ms() + 1;
    let from = window.millis().map_or(0, |w| to - w);
    let conversations = store
        .conversations_created(from, to)?
        .into_iter()
        .map(|row| {
            let messages = store.messages(&row.id)?;
            Ok((row, messages))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = tierline::conversation::calibration::calibrate(&policy, &conversations);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{} conversations replayed, {} with an outcome that tells", report.conversations, report.with_verdict);
    for signal in &report.signals {
        println!("\n{} (current {:.2}): {}", signal.signal.as_str(), signal.current_threshold, signal.suggestion);
        println!("  threshold  escalation  avoidable  missed");
        for row in &signal.rows {
            let mark = if row.current { "  <- current" } else { "" };
            println!(
                "  {:>9.2}  {:>9.1}%  {:>9}  {:>6}{mark}",
                row.threshold,
                row.escalation_rate * 100.0,
                row.avoidable_escalations,
                row.missed_escalations
            );
        }
    }
    Ok(())
}
