use tierline::config::Config;
use tierline::conversation::calibration;
use tierline::conversation::metrics::{self, Window};
use tierline::triage::Policy;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// day, week or all.
    #[arg(long, default_value = "week")]
    pub window: Window,
    /// Print JSON (the same as GET /v1/metrics/support).
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: Config, args: ReportArgs) -> anyhow::Result<()> {
    let report = super::block_on(async {
        let store = super::open_store(&config).await?;
        anyhow::Ok(metrics::load_report(store.as_ref(), args.window).await?)
    })??;
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
    #[arg(long, default_value = "all")]
    pub window: Window,
    /// Print JSON (the same as GET /v1/calibration).
    #[arg(long)]
    pub json: bool,
    /// Instead of stored outcomes: fit each signal's threshold to labeled tickets (JSONL,
    /// GUIDE.md format) and print the policy lines to change.
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// With --file: ids left out of the fit (the held-out evaluation set).
    #[arg(long, requires = "file")]
    pub holdout: Option<std::path::PathBuf>,
}

pub fn calibrate(config: Config, args: CalibrateArgs) -> anyhow::Result<()> {
    if let Some(file) = &args.file {
        return super::eval_triage::fit_thresholds(config, file, args.holdout.as_deref(), args.json);
    }
    let policy = Policy::load(&config.support.policy)?;
    let report = super::block_on(async {
        let store = super::open_store(&config).await?;
        anyhow::Ok(calibration::load_and_calibrate(store.as_ref(), &policy, args.window).await?)
    })??;
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
