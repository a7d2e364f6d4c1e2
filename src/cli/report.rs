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
