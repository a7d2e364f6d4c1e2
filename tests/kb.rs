//! The knowledge base with the real encoder on the sample help center: answers with citations,
//! abstention, internal articles never reaching customers, atomic rebuilds.

mod common;

use std::path::Path;

use tierline::inference::{self, BackendKind, BatchLimits, Engine, EngineMetrics, HeadSet};
use tierline::kb::{article, Audience, Filter, KbIndex, KnowledgeBase, Mode};

fn engine() -> Engine {
    let config = common::config();
    let encoder = inference::load_encoder(&config.infer(), BackendKind::Auto, false).unwrap();
    Engine::start(
        encoder,
        HeadSet::default(),
        BatchLimits::from_settings(&config.engine),
        EngineMetrics::register(&prometheus::Registry::new()).unwrap(),
    )
    .unwrap()
}

fn sample_kb(root: &Path, min_confidence: f32) -> KnowledgeBase {
    let (kb, errors) = KnowledgeBase::build(engine(), root, &common::root().join("index/kb"), min_confidence).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    kb
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[test]
fn answers_password_resets_and_abstains_on_out_of_scope_questions() {
    let dir = tempfile::tempdir().unwrap();
    let kb = sample_kb(dir.path(), 0.5);
    let rt = runtime();
    let answer = rt.block_on(kb.answer("How do I reset my password?")).unwrap();
    assert!(answer.answered, "{answer:?}");
    assert!(answer.ai_generated);
    assert_eq!(answer.citations[0].article_id, "reset-your-password", "{answer:?}");
    assert!(answer.citations[0].url.as_deref().unwrap().starts_with("https://help.brightwave.io/"));
    let text = answer.answer.unwrap();
    let source = std::fs::read_to_string(common::root().join("index/kb/reset-your-password.md")).unwrap();
    // The answer is the matching section, verbatim: every paragraph comes from the article, and
    // it holds the steps, not only the introduction.
    for paragraph in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty() && *p != "(...)") {
        assert!(source.contains(paragraph), "not in the article: {paragraph}");
    }
    assert!(text.contains("Forgot password?") && text.contains("Send reset link"), "the steps: {text}");

    let swallow = rt.block_on(kb.answer("What is the airspeed of a swallow?")).unwrap();
    assert!(!swallow.answered, "{swallow:?}");
    assert!(swallow.answer.is_none());
    assert!(swallow.reason.is_some() && swallow.confidence < 0.5, "{swallow:?}");

    // A follow-up is read with the conversation's previous message.
    let context = vec!["How do I download my invoices?".to_string()];
    let alone = rt.block_on(kb.answer("Can I get them as PDF files?")).unwrap();
    let in_context = rt.block_on(kb.answer_in_context("Can I get them as PDF files?", &context)).unwrap();
    assert!(in_context.answered, "{in_context:?}");
    assert_eq!(in_context.citations[0].article_id, "download-invoices", "{in_context:?}");
    assert!(in_context.confidence >= alone.confidence);

    // The threshold decides: the same question goes unanswered when nothing short of certainty will do.
    let strict = sample_kb(tempfile::tempdir().unwrap().path(), 0.999);
    let unsure = rt.block_on(strict.answer("How do I reset my password?")).unwrap();
    assert!(!unsure.answered && unsure.reason.as_deref() == Some("low_confidence"), "{unsure:?}");
}

#[test]
fn internal_articles_never_answer_customers() {
    let dir = tempfile::tempdir().unwrap();
    let kb = sample_kb(dir.path(), 0.5);
    let rt = runtime();
    let (articles, _) = article::load(&common::root().join("index/kb")).unwrap();
    let internal: Vec<&article::Article> = articles.iter().filter(|a| a.audience == Audience::Internal).collect();
    assert_eq!(internal.len(), 4);
    for article in &internal {
        // Ask with the internal article's own title and opening words: the best possible match.
        let question = format!("{} {}", article.title, article.body.chars().take(200).collect::<String>());
        let answer = rt.block_on(kb.answer(&question)).unwrap();
        assert!(answer.citations.iter().all(|c| c.article_id != article.id), "{} leaked: {answer:?}", article.id);
        let hits = rt.block_on(kb.search(&question, Mode::Hybrid, 10, &Filter::customer())).unwrap();
        assert!(hits.iter().all(|h| h.article_id != article.id), "{} leaked into customer search", article.id);
        // Agents may see them.
        let all = rt.block_on(kb.search(&question, Mode::Hybrid, 10, &Filter::default())).unwrap();
        assert_eq!(all[0].article_id, article.id);
    }
}

#[test]
fn rebuilds_switch_atomically_and_a_crashed_build_leaves_the_old_index() {
    let dir = tempfile::tempdir().unwrap();
    let kb = sample_kb(dir.path(), 0.5);
    let rt = runtime();
    let before = kb.current();
    let count = before.passages().len();

    // A reader keeps its index through a rebuild that drops every billing article.
    let (articles, _) = article::load(&common::root().join("index/kb")).unwrap();
    let kept: Vec<_> = articles.into_iter().filter(|a| !a.tags.iter().any(|t| t == "billing")).collect();
    kb.rebuild(&kept).unwrap();
    let after = kb.current();
    assert!(after.passages().len() < count);
    assert_eq!(before.passages().len(), count, "the old reader still sees the whole old index");
    let hits = rt.block_on(kb.search("download invoices pdf", Mode::Bm25, 5, &Filter::default())).unwrap();
    assert!(hits.iter().all(|h| kept.iter().any(|a| a.id == h.article_id)), "new readers see only the new articles");

    // A build that crashed before switching (a generation without the pointer update) is ignored.
    let pointer = std::fs::read_to_string(dir.path().join("CURRENT")).unwrap();
    std::fs::create_dir_all(dir.path().join("gen-99999999999999999999/tantivy")).unwrap();
    std::fs::write(dir.path().join("gen-99999999999999999999/meta.json"), b"{ half written").unwrap();
    let reopened = KbIndex::open(dir.path()).unwrap();
    assert_eq!(std::fs::read_to_string(dir.path().join("CURRENT")).unwrap(), pointer);
    assert_eq!(reopened.passages().len(), after.passages().len());
}
