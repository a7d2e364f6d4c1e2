use std::path::PathBuf;

use clap::Subcommand;
use tierline::config::Config;
use tierline::kb::{article, KnowledgeBase, Upserted};

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Index a folder of Markdown articles and/or JSONL rows (default: `kb.source`), reporting bad
    /// articles by file and line; the index is switched in atomically.
    Build { source: Option<PathBuf> },
    /// Add or replace articles from Markdown files, JSONL files or folders of them. The edits are
    /// kept beside the index and applied on top of `kb.source` at every build.
    Add {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Remove articles by id.
    Remove {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List the indexed articles: id, audience, title.
    List,
    /// Fit the answerability model (answers' confidence) on knowledge bases other than yours,
    /// and measure each one held out.
    Answerability(super::answerability::AnswerabilityArgs),
}

pub fn run(config: Config, command: IndexCommand) -> anyhow::Result<()> {
    if let IndexCommand::Answerability(args) = command {
        return super::answerability::run(config, args);
    }
    let root = config.data_dir.join(&config.kb.index_dir);
    let source = match &command {
        IndexCommand::Build { source: Some(source) } => source.clone(),
        _ => config.kb.source.clone(),
    };
    let engine = super::train::start_engine(&config)?;
    let (kb, errors) = KnowledgeBase::build(engine.clone(), &root, &source, config.kb.min_confidence)?;
    for error in &errors {
        eprintln!("skipped {error}");
    }
    let result = edit(&kb, command);
    engine.shutdown();
    result?;
    let index = kb.current();
    println!(
        "{} articles ({} passages) from {} plus edits, in {}; {} skipped",
        index.articles().len(),
        index.passages().len(),
        source.display(),
        root.display(),
        errors.len()
    );
    Ok(())
}

fn edit(kb: &KnowledgeBase, command: IndexCommand) -> anyhow::Result<()> {
    match command {
        IndexCommand::Build { .. } | IndexCommand::Answerability(_) => Ok(()),
        IndexCommand::List => {
            for article in kb.current().articles() {
                println!("{}\t{}\t{}", article.id, article.audience.as_str(), article.title);
            }
            Ok(())
        }
        IndexCommand::Add { paths } => {
            let mut failed = 0;
            let mut valid = Vec::new();
            for path in paths {
                let (articles, errors) = article::load(&path)?;
                for error in &errors {
                    eprintln!("skipped {error}");
                }
                failed += errors.len();
                for article in articles {
                    match article.validate() {
                        Ok(()) => valid.push(article),
                        Err((_, message)) => {
                            eprintln!("skipped {}: {message}", article.id);
                            failed += 1;
                        }
                    }
                }
            }
            let ids: Vec<String> = valid.iter().map(|a| a.id.clone()).collect();
            for (id, outcome) in ids.iter().zip(kb.upsert_all(valid)?) {
                match outcome {
                    Upserted::Created => println!("added {id}"),
                    Upserted::Replaced => println!("replaced {id}"),
                }
            }
            anyhow::ensure!(failed == 0, "{failed} articles could not be added");
            Ok(())
        }
        IndexCommand::Remove { ids } => {
            let mut missing = Vec::new();
            for id in ids {
                if kb.remove(&id)? {
                    println!("removed {id}");
                } else {
                    missing.push(id);
                }
            }
            anyhow::ensure!(missing.is_empty(), "no article with id {}", missing.join(", "));
            Ok(())
        }
    }
}
