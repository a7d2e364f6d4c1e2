//! The batched engine with the real model: concurrency, one pass per batch, overload, callers
//! that go away.

mod common;

use std::time::Duration;

use tierline::inference::{self, BackendKind, BatchLimits, Engine, EngineError, EngineMetrics, HeadSet};

fn start(limits: BatchLimits) -> (Engine, EngineMetrics) {
    let encoder = inference::load_encoder(&common::config().infer(), BackendKind::Auto, false).unwrap();
    let metrics = EngineMetrics::register(&prometheus::Registry::new()).unwrap();
    (Engine::start(encoder, HeadSet::default(), limits, metrics.clone()).unwrap(), metrics)
}

fn limits(max_queued_texts: usize) -> BatchLimits {
    BatchLimits {
        max_queued_texts,
        max_queue_time: Duration::from_secs(3600),
        max_batch_tokens: 4096,
        max_batch_texts: 32,
        max_wait: Duration::from_millis(2),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_batched_and_each_gets_its_own_answer() {
    let (engine, metrics) = start(limits(1024));
    let texts: Vec<String> = (0..48)
        .map(|i| format!("order {i} has not arrived, the tracking page shows nothing since {} days", i % 7 + 1))
        .collect();
    let alone = engine.embed(vec![texts[5].clone()]).await.unwrap();
    let tasks: Vec<_> = texts
        .iter()
        .map(|t| {
            let engine = engine.clone();
            let text = t.clone();
            tokio::spawn(async move { engine.embed(vec![text]).await })
        })
        .collect();
    let mut outputs = Vec::new();
    for task in tasks {
        outputs.push(task.await.unwrap().unwrap().remove(0));
    }
    let diff = alone[0].embedding.iter().zip(&outputs[5].embedding).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "the answer belongs to its own text (diff {diff})");
    assert_ne!(outputs[4].embedding, outputs[5].embedding);
    let passes = metrics.batch_size.get_sample_count();
    assert!(passes < 1 + texts.len() as u64, "48 concurrent texts took {passes} passes: some were batched");
    assert_eq!(metrics.texts_total.get(), 49);
    assert_eq!(engine.queued_texts(), 0);
    engine.shutdown();
}

/// The batching window is for texts on their way; a lone request runs at once. Before the fix a
/// worker that woke while the request still counted as "being tokenized" waited the whole window
/// for it, though it was already in hand (HTTP at one text lost a third of its throughput).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_request_never_waits_for_the_batching_window() {
    let (engine, metrics) = start(BatchLimits { max_wait: Duration::from_secs(5), ..limits(1024) });
    for i in 0..30 {
        engine.embed(vec![format!("where do I find invoice {i}?")]).await.unwrap();
    }
    let blocking = engine.clone();
    tokio::task::spawn_blocking(move || blocking.embed_blocking(&["and one from a blocking caller".to_string()]))
        .await
        .unwrap()
        .unwrap();
    let waited = metrics.queue_seconds.get_sample_sum();
    assert_eq!(metrics.queue_seconds.get_sample_count(), 31);
    assert!(waited < 2.5, "31 lone texts waited {waited:.3} s in all before their batch started (window 5 s)");
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_an_explicit_overload_error() {
    let (engine, metrics) = start(limits(8));
    let err = engine.embed(vec!["hello".to_string(); 9]).await.unwrap_err();
    assert!(matches!(err, EngineError::Overloaded { limit: 8, retry_after_secs: 1.., .. }), "{err:?}");
    assert_eq!(metrics.overloaded_total.get(), 1);
    assert_eq!(engine.queued_texts(), 0, "a refused request holds no capacity");
    assert_eq!(engine.embed(vec!["hello".to_string(); 8]).await.unwrap().len(), 8);
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_beyond_the_time_budget_is_refused_at_once() {
    let (engine, metrics) = start(BatchLimits { max_queue_time: Duration::from_millis(300), ..limits(100_000) });
    // Measure the throughput once, then keep the engine busy with about ten seconds of work.
    engine.embed(vec!["warm up the throughput estimate".to_string(); 32]).await.unwrap();
    let busy: Vec<String> = (0..256).map(|i| format!("{i} ").repeat(120)).collect();
    let background = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.embed(busy).await })
    };
    while engine.queued_texts() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = std::time::Instant::now();
    let err = engine.embed(vec!["one more".to_string()]).await.unwrap_err();
    let refused_in = started.elapsed();
    assert!(matches!(err, EngineError::Overloaded { retry_after_secs: 1.., .. }), "{err:?}");
    assert!(refused_in < Duration::from_secs(1), "refused at once, not after the queued work ({refused_in:?})");
    assert!(metrics.overloaded_total.get() >= 1);
    // The first request was admitted whole (an idle engine takes any request) and finishes.
    let _ = background.await.unwrap();
    engine.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_whose_caller_went_away_are_dropped_before_inference() {
    let (engine, metrics) = start(limits(1024));
    let busy: Vec<String> = (0..512).map(|i| format!("{i} ").repeat(60)).collect();
    let background = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.embed(busy).await })
    };
    // Wait until the worker is inside the busy request's batches (16 of them).
    while metrics.batch_size.get_sample_count() == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Admitted and queued behind the busy batch, then abandoned.
    let abandoned =
        tokio::time::timeout(Duration::from_millis(30), engine.embed(vec!["never mind".to_string(); 3])).await;
    assert!(abandoned.is_err(), "the engine was busy; the short request timed out");
    background.await.unwrap().unwrap();
    for _ in 0..100 {
        if engine.queued_texts() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(engine.queued_texts(), 0, "abandoned texts released their capacity");
    assert_eq!(metrics.cancelled_total.get(), 3);
    assert_eq!(metrics.texts_total.get(), 512, "abandoned texts were never encoded");
    engine.shutdown();
}
