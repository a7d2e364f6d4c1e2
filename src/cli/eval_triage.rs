//! `tierline eval triage` and `tierline eval conversations`: the labeled dev set (GUIDE.md format)
//! run through the real service, models and knowledge base, with the figures a support lead
//! reads.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use tierline::config::Config;
use tierline::conversation::{Models, Support};
use tierline::inference::EngineMetrics;
use tierline::insights::alerts::Alerting;
use tierline::kb::KnowledgeBase;
use tierline::learn::recipe::read_ids;
use tierline::learn::triage_eval::{
    self, ConversationOutcome, LabeledConversation, LabeledTicket, TicketOutcome, TriageFigures,
};

#[derive(Debug, Args)]
pub struct TriageArgs {
    /// Labeled tickets (JSONL, GUIDE.md format), e.g. ../shared/data/triage/tickets_dev.jsonl.
    #[arg(long)]
    file: PathBuf,
    /// Ids kept out of all tuning: reported apart from the rest (models/triage/heldout_ids.txt).
    #[arg(long)]
    holdout: Option<PathBuf>,
    /// How many wrong decisions to list (dangerous misses are always listed).
    #[arg(long, default_value_t = 20)]
    show: usize,
    /// Print every outcome and the figures as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ConversationsArgs {
    /// Labeled scenarios (JSONL, GUIDE.md format), e.g. ../shared/data/triage/conversations_dev.jsonl.
    #[arg(long)]
    file: PathBuf,
    /// Ids kept out of all tuning: reported apart from the rest.
    #[arg(long)]
    holdout: Option<PathBuf>,
    #[arg(long, default_value_t = 20)]
    show: usize,
    #[arg(long)]
    json: bool,
}

/// The support service over a throwaway database, with the configured models and knowledge base.
struct Service {
    support: Support,
    classifier: tierline::classify::Classifier,
    kb: Option<Arc<KnowledgeBase>>,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A folder removed when dropped.
    pub struct Dir(pub std::path::PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Service {
    async fn start(config: &Config) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("tierline-eval-{}", std::process::id()));
        let store = tierline::store::open(&dir.join("eval.db"), 4).await?;
        let mut anomaly = config.anomaly.clone();
        anomaly.enabled = false;
        let events = tierline::conversation::Events::default();
        let alerting = Alerting::new(store.clone(), anomaly, "", 1, events.clone());
        let support = Support::new(store, config.support.policy.clone(), alerting, events)?;
        let settings = config.infer();
        let kb_config = config.kb.clone();
        let index_root = dir.join("kb");
        let (classifier, kb) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let classifier =
                tierline::classify::start(&settings, EngineMetrics::register(&prometheus::Registry::new())?, true)?;
            let mut kb_config = kb_config;
            kb_config.index_dir = index_root;
            let kb =
                KnowledgeBase::from_config(classifier.engine().clone(), std::path::Path::new("."), &kb_config, None)?
                    .map(Arc::new);
            Ok((classifier, kb))
        })
        .await??;
        Ok(Self { support, classifier, kb, _dir: tempdir::Dir(dir) })
    }

    fn models(&self) -> Models<'_> {
        Models { classifier: &self.classifier, kb: self.kb.as_ref() }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

fn held_out(path: &Option<PathBuf>) -> anyhow::Result<BTreeSet<String>> {
    path.as_ref().map_or(Ok(BTreeSet::new()), |p| read_ids(p))
}

pub fn triage(config: Config, args: TriageArgs) -> anyhow::Result<()> {
    let tickets: Vec<LabeledTicket> = triage_eval::read_jsonl(&args.file)?;
    let held = held_out(&args.holdout)?;
    let outcomes = runtime()?.block_on(async {
        let service = Service::start(&config).await?;
        triage_eval::triage_tickets(&service.support, service.models(), &tickets).await
    })?;
    let (held_outcomes, tuned) = triage_eval::split_by_ids(&outcomes, &held, |o| &o.id);
    let sets: Vec<(&str, Vec<&TicketOutcome>)> = if held.is_empty() {
        vec![("all", outcomes.iter().collect())]
    } else {
        vec![("tuned on", tuned), ("held out", held_outcomes), ("all", outcomes.iter().collect())]
    };
    if args.json {
        let figures: Vec<_> = sets
            .iter()
            .map(|(name, set)| serde_json::json!({"set": name, "figures": TriageFigures::of(set.iter().copied())}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"sets": figures, "outcomes": outcomes}))?);
        return Ok(());
    }
    for (name, set) in &sets {
        print_figures(name, &TriageFigures::of(set.iter().copied()));
    }
    let dangerous: Vec<&TicketOutcome> = outcomes.iter().filter(|o| o.dangerous()).collect();
    println!("\ndangerous misses (needs a person, decided auto): {}", dangerous.len());
    for outcome in dangerous {
        print_outcome(outcome, &held);
    }
    let wrong: Vec<&TicketOutcome> = outcomes
        .iter()
        .filter(|o| !o.dangerous() && (!o.tier_right() || (o.to_person() && o.queue != o.expected_queue)))
        .collect();
    println!("\nother wrong decisions: {} (first {})", wrong.len(), args.show.min(wrong.len()));
    for outcome in wrong.into_iter().take(args.show) {
        print_outcome(outcome, &held);
    }
    Ok(())
}

fn print_figures(name: &str, figures: &TriageFigures) {
    println!("== {name}: {} tickets", figures.tickets);
    println!(
        "tier right {:.3} ({}/{}), queue right when it goes to a person {:.3} ({}/{}), dangerous misses {}",
        figures.tier.value(),
        figures.tier.right,
        figures.tier.total,
        figures.queue_to_person.value(),
        figures.queue_to_person.right,
        figures.queue_to_person.total,
        figures.dangerous_misses
    );
    println!("confusion (label -> decided):");
    for (expected, row) in &figures.confusion {
        let cells: Vec<String> = row.iter().map(|(got, n)| format!("{got} {n}")).collect();
        println!("  {expected:<7} -> {}", cells.join(", "));
    }
    println!("{:<20} {:>9} {:>7} {:>4} {:>4} {:>4}", "signal", "precision", "recall", "tp", "fp", "fn");
    for (signal, score) in &figures.signals {
        if score.true_positives + score.false_positives + score.false_negatives == 0 {
            continue;
        }
        println!(
            "{signal:<20} {:>9.3} {:>7.3} {:>4} {:>4} {:>4}",
            score.precision(),
            score.recall(),
            score.true_positives,
            score.false_positives,
            score.false_negatives
        );
    }
    let rates = |rates: &std::collections::BTreeMap<String, triage_eval::Rate>| {
        rates.iter().map(|(k, r)| format!("{k} {:.2} ({})", r.value(), r.total)).collect::<Vec<_>>().join(", ")
    };
    println!("tier right by style: {}", rates(&figures.tier_by_style));
    println!("tier right by language: {}\n", rates(&figures.tier_by_language));
}

fn print_outcome(outcome: &TicketOutcome, held: &BTreeSet<String>) {
    if held.contains(&outcome.id) {
        // Held-out tickets are counted, never shown: reading them would be tuning on them.
        println!("  {} [held out]: {} decided {}", outcome.id, outcome.expected_tier.as_str(), outcome.tier.as_str());
        return;
    }
    let mark = "";
    let text: String = outcome.text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(110).collect();
    println!(
        "  {}{mark}: {}/{} decided {}/{}; signals {:?} (expected {:?})\n    \"{text}\"\n    {}",
        outcome.id,
        outcome.expected_tier.as_str(),
        outcome.expected_queue,
        outcome.tier.as_str(),
        outcome.queue,
        outcome.signals,
        outcome.expected_signals,
        outcome.reasons.first().map(String::as_str).unwrap_or("")
    );
}

pub fn conversations(config: Config, args: ConversationsArgs) -> anyhow::Result<()> {
    let scenarios: Vec<LabeledConversation> = triage_eval::read_jsonl(&args.file)?;
    let held = held_out(&args.holdout)?;
    let outcomes = runtime()?.block_on(async {
        let service = Service::start(&config).await?;
        triage_eval::replay_conversations(&service.support, service.models(), &scenarios).await
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
        return Ok(());
    }
    let (held_outcomes, tuned) = triage_eval::split_by_ids(&outcomes, &held, |o| &o.id);
    let report = |name: &str, set: &[&ConversationOutcome]| {
        let right = set.iter().filter(|o| o.right()).count();
        let early = set
            .iter()
            .filter(|o| {
                matches!((o.handoff_at, o.expected), (Some(a), Some(e)) if a < e)
                    || (o.handoff_at.is_some() && o.expected.is_none())
            })
            .count();
        println!(
            "== {name}: {} scenarios, handoff at the right turn {:.3} ({right}/{}), too early {early}, too late or missed {}",
            set.len(),
            if set.is_empty() { 0.0 } else { right as f64 / set.len() as f64 },
            set.len(),
            set.len() - right - early
        );
    };
    if held.is_empty() {
        report("all", &outcomes.iter().collect::<Vec<_>>());
    } else {
        report("tuned on", &tuned);
        report("held out", &held_outcomes);
        report("all", &outcomes.iter().collect::<Vec<_>>());
    }
    let wrong: Vec<&ConversationOutcome> = outcomes.iter().filter(|o| !o.right()).collect();
    println!("\nwrong turns: {} (first {})", wrong.len(), args.show.min(wrong.len()));
    for outcome in wrong.into_iter().take(args.show) {
        if held.contains(&outcome.id) {
            println!(
                "  {} [held out]: expected {:?}, handed off at {:?}",
                outcome.id, outcome.expected, outcome.handoff_at
            );
            continue;
        }
        println!("  {}: expected {:?}, handed off at {:?}", outcome.id, outcome.expected, outcome.handoff_at);
        for (i, turn) in outcome.turns.iter().enumerate() {
            println!("    {}. {}", i + 1, turn.chars().take(100).collect::<String>());
        }
        println!("    -> {}", outcome.reasons.first().map(String::as_str).unwrap_or(""));
    }
    Ok(())
}

/// `tierline calibrate --file`: each signal's threshold fitted to labeled tickets (F2: a missed
/// signal costs more than a needless handoff), as policy lines to change.
pub fn fit_thresholds(
    config: Config,
    file: &std::path::Path,
    holdout: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<()> {
    let tickets: Vec<LabeledTicket> = triage_eval::read_jsonl(file)?;
    let held = holdout.map_or(Ok(BTreeSet::new()), read_ids)?;
    let tickets: Vec<LabeledTicket> = tickets.into_iter().filter(|t| !held.contains(&t.id)).collect();
    let policy = tierline::triage::Policy::load(&config.support.policy)?;
    let outcomes = runtime()?.block_on(async {
        let service = Service::start(&config).await?;
        triage_eval::triage_tickets(&service.support, service.models(), &tickets).await
    })?;
    let fits = triage_eval::fit_thresholds(&policy, &outcomes.iter().collect::<Vec<_>>());
    if json {
        println!("{}", serde_json::to_string_pretty(&fits)?);
        return Ok(());
    }
    println!("fitted on {} tickets ({} held out and left out)", tickets.len(), held.len());
    println!("{:<20} {:>8} {:>8} {:>10} {:>8} {:>7}", "signal", "current", "F2", "suggested", "F2", "missed");
    for fit in &fits {
        println!(
            "{:<20} {:>8.2} {:>8.3} {:>10.2} {:>8.3} {:>7}",
            fit.signal, fit.current, fit.current_f1, fit.suggested, fit.suggested_f1, fit.missed
        );
    }
    println!("\npolicy lines to change (models/policy.toml):");
    for fit in fits.iter().filter(|f| (f.suggested - f.current).abs() > 1e-6) {
        println!("  [signals.{}] threshold = {:.2}", fit.signal, fit.suggested);
    }
    Ok(())
}
