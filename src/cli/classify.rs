use clap::Args;
use tierline::classify::{self, HeadResult};
use tierline::config::Config;
use tierline::inference::EngineMetrics;

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Texts to classify; when none are given, one text per line is read from stdin.
    texts: Vec<String>,
    /// Print JSON lines instead of a readable summary.
    #[arg(long)]
    json: bool,
    /// Ranked labels shown per single-label head.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
}

pub fn run(config: Config, args: ClassifyArgs) -> anyhow::Result<()> {
    let texts = super::texts_from_args_or_stdin(args.texts, "classify")?;
    let classifier = classify::start(&config.infer(), EngineMetrics::register(&prometheus::Registry::new())?, true)?;
    anyhow::ensure!(!classifier.cards().is_empty(), "no heads found in {}", config.models.heads_dir.display());
    let results = classifier.classify_blocking(&texts, args.top_k)?;
    for (text, result) in texts.iter().zip(results) {
        if args.json {
            println!("{}", serde_json::json!({ "text": text, "result": result, "models": classifier.versions() }));
            continue;
        }
        println!("{text}");
        for (name, head) in &result.heads {
            match head {
                HeadResult::Single { label, score, top, .. } => {
                    let others: Vec<String> =
                        top.iter().skip(1).map(|t| format!("{} {:.2}", t.label, t.score)).collect();
                    println!(
                        "  {name:<12} {label} ({score:.2}){}",
                        if others.is_empty() { String::new() } else { format!("  [{}]", others.join(", ")) }
                    );
                }
                HeadResult::Multi { labels, scores, level, .. } => {
                    let detail: Vec<String> = scores.iter().map(|(l, s)| format!("{l} {s:.2}")).collect();
                    let applied = if labels.is_empty() { "none".to_string() } else { labels.join(", ") };
                    println!("  {name:<12} {:?} ({applied})  [{}]", level, detail.join(", "));
                }
            }
        }
        if let Some(oos) = result.out_of_scope {
            println!("  {:<12} {oos:.2}", "out-of-scope");
        }
    }
    classifier.engine().shutdown();
    Ok(())
}
