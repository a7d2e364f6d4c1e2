use std::path::PathBuf;

use clap::Subcommand;
use tierline::config::Config;
use tierline::kb::KnowledgeBase;

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Index a folder of Markdown articles and/or JSONL rows (default: `kb.source`), reporting bad
    /// articles by file and line; the index is switched in atomically.
    Build { source: Option<PathBuf> },
}

pub fn run(config: Config, command: IndexCommand) -> anyhow::Result<()> {
    match command {
        IndexCommand::Build { source } => {
            let source = source.unwrap_or_else(|| config.kb.source.clone());
            let engine = super::train::start_engine(&config)?;
            let root = config.data_dir.join(&config.kb.index_dir);
            let (kb, errors) = KnowledgeBase::build(engine.clone(), &root, &source, config.kb.min_confidence)?;
            for error in &errors {
                eprintln!("skipped {error}");
            }
            let index = kb.current();
            let articles: std::collections::BTreeSet<&str> =
                index.passages().iter().map(|p| p.article_id.as_str()).collect();
            println!(
                "indexed {} articles ({} passages) from {} into {}; {} skipped",
                articles.len(),
                index.passages().len(),
                source.display(),
                root.display(),
                errors.len()
            );
            engine.shutdown();
            Ok(())
        }
    }
}
