use clap::Args;
use tierline::config::Config;
use tierline::inference::{self, BackendKind, BatchLimits, Engine, EngineMetrics, HeadSet};

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Texts to embed; when none are given, one text per line is read from stdin.
    texts: Vec<String>,
}

pub fn run(config: Config, args: EmbedArgs) -> anyhow::Result<()> {
    let texts = super::texts_from_args_or_stdin(args.texts, "embed")?;
    let encoder = inference::load_encoder(&config.infer(), BackendKind::Auto, true)?;
    let metrics = EngineMetrics::register(&prometheus::Registry::new())?;
    let mut limits = BatchLimits::from_settings(&config.engine);
    limits.max_queued_texts = limits.max_queued_texts.max(texts.len());
    let engine = Engine::start(encoder, HeadSet::default(), limits, metrics)?;
    let outputs = engine.embed_blocking(&texts)?;
    for (text, output) in texts.iter().zip(outputs) {
        println!(
            "{}",
            serde_json::json!({ "text": text, "tokens": output.tokens, "truncated": output.truncated, "embedding": output.embedding })
        );
    }
    engine.shutdown();
    Ok(())
}
