//! `tierline bench turns`: whole conversations against running servers over HTTP (one node or
//! several behind the same database), customers' requests spread round-robin over the nodes.
//! Reports turns per second and the latency of a turn (p50/p99).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct TurnsArgs {
    /// Base URLs of the nodes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    urls: Vec<String>,
    /// Customers writing at the same time.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How long to measure.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// API key (helpdesk scope), when the servers require one.
    #[arg(long, env = "TIERLINE_KEY")]
    key: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// What each simulated customer says, in order: a routine question, a follow-up, a thank-you.
const SCRIPT: [&str; 3] = [
    "How do I reset my password?",
    "And how do I turn on two-factor authentication for my account?",
    "Thanks, that worked!",
];

struct Shared {
    latencies_us: Mutex<Vec<u64>>,
    errors: AtomicUsize,
    next_node: AtomicUsize,
    stop: AtomicBool,
}

pub fn run(args: TurnsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.urls.is_empty(), "--urls names no node");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be positive");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    for url in &args.urls {
        let response = agent.get(format!("{url}/ready")).call();
        anyhow::ensure!(
            response.as_ref().is_ok_and(|r| r.status() == 200),
            "{url} is not ready (is `tierline serve` running there?)"
        );
    }
    let shared = Arc::new(Shared {
        latencies_us: Mutex::new(Vec::new()),
        errors: AtomicUsize::new(0),
        next_node: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (agent, shared, urls, key) = (agent.clone(), shared.clone(), args.urls.clone(), args.key.clone());
            std::thread::spawn(move || customer_loop(&agent, &urls, key.as_deref(), &shared))
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    shared.stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = shared.latencies_us.lock().map_err(|_| anyhow::anyhow!("a worker panicked"))?.clone();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[index] as f64 / 1000.0
    };
    let report = json!({
        "nodes": args.urls.len(),
        "concurrency": args.concurrency,
        "seconds": elapsed,
        "turns": latencies.len(),
        "turns_per_sec": latencies.len() as f64 / elapsed,
        "p50_ms": percentile(0.5),
        "p99_ms": percentile(0.99),
        "errors": shared.errors.load(Ordering::Relaxed),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{} node(s), {} customers at once: {:.1} turns/s, p50 {:.1} ms, p99 {:.1} ms ({} turns, {} errors)",
            args.urls.len(),
            args.concurrency,
            report["turns_per_sec"].as_f64().unwrap_or_default(),
            report["p50_ms"].as_f64().unwrap_or_default(),
            report["p99_ms"].as_f64().unwrap_or_default(),
            latencies.len(),
            report["errors"],
        );
    }
    Ok(())
}

fn customer_loop(agent: &ureq::Agent, urls: &[String], key: Option<&str>, shared: &Shared) {
    let node = || &urls[shared.next_node.fetch_add(1, Ordering::Relaxed) % urls.len()];
    let post = |url: String, body: Value| -> Option<Value> {
        let mut request = agent.post(&url);
        if let Some(key) = key {
            request = request.header("authorization", &format!("Bearer {key}"));
        }
        let mut response = request.send_json(&body).ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.body_mut().read_json::<Value>().ok()
    };
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(conversation) = post(format!("{}/v1/conversations", node()), json!({})) else {
            shared.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some(id) = conversation["id"].as_str() else { continue };
        for text in SCRIPT {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let started = Instant::now();
            let turn = post(format!("{}/v1/conversations/{id}/messages", node()), json!({ "text": text }));
            let took = started.elapsed().as_micros() as u64;
            match turn {
                Some(_) => shared.latencies_us.lock().unwrap_or_else(|p| p.into_inner()).push(took),
                None => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}
