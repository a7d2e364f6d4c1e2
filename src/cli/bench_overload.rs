//! `tierline bench overload`: how a running server answers more work than it can do. It first
//! measures the server's capacity (a few clients sending back to back), then offers a multiple of
//! that as an open-loop arrival rate (requests start on a clock, whether or not earlier ones were
//! answered, as a helpdesk's traffic does), and reports what was answered, how fast refusals
//! came, the accepted requests' latency and the server's memory. The client is asynchronous, so
//! a thousand requests in flight cost it little of the CPU it shares with a local server.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct OverloadArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The route to load.
    #[arg(long, value_enum, default_value = "embed")]
    route: RouteArg,
    /// Texts per request.
    #[arg(long, default_value_t = 4)]
    texts: usize,
    /// One text per line, taken in turn.
    #[arg(long, default_value = "benches/sentences.txt")]
    sentences: PathBuf,
    /// Clients sending back to back while the capacity is measured.
    #[arg(long, default_value_t = 4)]
    capacity_clients: usize,
    #[arg(long, default_value_t = 20.0)]
    capacity_seconds: f64,
    /// Offered load as a multiple of the measured capacity.
    #[arg(long, default_value_t = 10.0)]
    multiple: f64,
    /// How long the offered load lasts.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// Requests the client keeps in flight at most; arrivals beyond it are counted, not sent.
    /// Each is a socket: keep it under the open-file limit (`ulimit -n`).
    #[arg(long, default_value_t = 4000)]
    max_in_flight: usize,
    /// The server's process id (a local server): its resident memory is sampled, and its peak read.
    #[arg(long)]
    pid: Option<u32>,
    #[arg(long, env = "TIERLINE_KEY")]
    key: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RouteArg {
    Embed,
    Classify,
}

impl RouteArg {
    fn path(self) -> &'static str {
        match self {
            RouteArg::Embed => "/v1/embed",
            RouteArg::Classify => "/v1/classify",
        }
    }
}

/// One answered request: its status (0 for a transport error), latency, when it ended (since the
/// phase began) and, for a 429, whether it said when to retry.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    status: u16,
    latency: Duration,
    ended: Duration,
    retry_after: bool,
}

/// What one phase saw.
#[derive(Debug, Default)]
struct Phase {
    outcomes: Mutex<Vec<Outcome>>,
    /// Arrivals not sent because `max_in_flight` requests were already out.
    not_sent: AtomicUsize,
    /// How far behind its schedule the client started a request, at worst (µs).
    max_lag_us: AtomicUsize,
}

impl Phase {
    fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().map(|o| o.clone()).unwrap_or_default()
    }
}

/// Sends requests round the sentence file.
struct Client {
    http: reqwest::Client,
    url: String,
    key: Option<String>,
    sentences: Vec<String>,
    texts: usize,
    next: AtomicUsize,
}

impl Client {
    fn body(&self) -> Value {
        let start = self.next.fetch_add(self.texts, Ordering::Relaxed);
        let texts: Vec<&str> =
            (0..self.texts).map(|k| self.sentences[(start + k) % self.sentences.len()].as_str()).collect();
        json!({ "texts": texts })
    }

    /// Latency counts from `due`, when the request was meant to start: a client that fell
    /// behind its schedule does not hide the wait (no coordinated omission).
    async fn send(&self, phase_start: Instant, due: Instant) -> Outcome {
        let mut request = self.http.post(&self.url).json(&self.body());
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let (status, retry_after) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                // The whole body is read, as a client would.
                match response.bytes().await {
                    Ok(_) => (status, retry_after),
                    Err(_) => (0, false),
                }
            }
            Err(_) => (0, false),
        };
        Outcome { status, latency: due.elapsed(), ended: phase_start.elapsed(), retry_after }
    }
}

pub fn run(args: OverloadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.texts > 0 && args.capacity_clients > 0, "--texts and --capacity-clients must be positive");
    anyhow::ensure!(args.multiple > 0.0 && args.seconds > 0.0, "--multiple and --seconds must be positive");
    let sentences: Vec<String> = std::fs::read_to_string(&args.sentences)
        .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", args.sentences.display()))?
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(String::from)
        .collect();
    anyhow::ensure!(!sentences.is_empty(), "{} holds no sentence", args.sentences.display());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(measure(args, sentences))
}

async fn measure(args: OverloadArgs, sentences: Vec<String>) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(args.max_in_flight)
        .build()?;
    let ready = http.get(format!("{}/ready", args.url)).send().await;
    anyhow::ensure!(
        ready.as_ref().is_ok_and(|r| r.status().is_success()),
        "{} is not ready (is `tierline serve` running there?)",
        args.url
    );
    let client = Arc::new(Client {
        http,
        url: format!("{}{}", args.url, args.route.path()),
        key: args.key.clone(),
        sentences,
        texts: args.texts,
        next: AtomicUsize::new(0),
    });
    let memory = args.pid.map(MemorySampler::start);

    let capacity = closed_loop(&client, args.capacity_clients, Duration::from_secs_f64(args.capacity_seconds)).await;
    let capacity_outcomes = capacity.outcomes();
    let capacity_texts_per_s = answered(&capacity_outcomes) as f64 * args.texts as f64 / args.capacity_seconds;
    anyhow::ensure!(capacity_texts_per_s > 0.0, "no request was answered while measuring the capacity");

    let rate = args.multiple * capacity_texts_per_s / args.texts as f64;
    let window = Duration::from_secs_f64(args.seconds);
    let overload = open_loop(&client, rate, window, args.max_in_flight).await;
    let outcomes = overload.outcomes();
    // Answered within the offered window: the rate the server sustained while overloaded.
    let in_window: Vec<Outcome> = outcomes.iter().copied().filter(|o| o.ended <= window).collect();
    let overload_texts_per_s = answered(&in_window) as f64 * args.texts as f64 / args.seconds;

    let memory = memory.map(MemorySampler::stop);
    let report = json!({
        "route": args.route.path(),
        "texts_per_request": args.texts,
        "capacity": {
            "clients": args.capacity_clients,
            "seconds": args.capacity_seconds,
            "texts_per_s": round(capacity_texts_per_s),
            "statuses": statuses(&capacity_outcomes),
            "latency_ms": latency(&capacity_outcomes, |o| o.status == 200),
        },
        "overload": {
            "multiple": args.multiple,
            "offered_requests_per_s": round(rate),
            "seconds": args.seconds,
            "sent": outcomes.len(),
            "not_sent_client_limit": overload.not_sent.load(Ordering::Relaxed),
            "client_max_lag_ms": round(overload.max_lag_us.load(Ordering::Relaxed) as f64 / 1e3),
            "statuses": statuses(&outcomes),
            "answered_texts_per_s": round(overload_texts_per_s),
            "share_of_capacity": round(overload_texts_per_s / capacity_texts_per_s),
            "accepted_latency_ms": latency(&outcomes, |o| o.status == 200),
            "refused_latency_ms": latency(&outcomes, |o| o.status == 429),
            "refusals_without_retry_after": outcomes.iter().filter(|o| o.status == 429 && !o.retry_after).count(),
        },
        "server_peak_rss_mb": memory.map(|m| round(m.sampled)),
        "server_lifetime_peak_rss_mb": memory.map(|m| round(m.lifetime)),
    });
    if args.json {
        println!("{report}");
        return Ok(());
    }
    let overload = &report["overload"];
    println!(
        "capacity: {:.1} texts/s ({} clients, {} s, {} texts a request)",
        capacity_texts_per_s, args.capacity_clients, args.capacity_seconds, args.texts
    );
    println!(
        "{}x offered ({:.1} requests/s for {} s): {:.1} texts/s answered = {:.0}% of capacity",
        args.multiple,
        rate,
        args.seconds,
        overload_texts_per_s,
        100.0 * overload_texts_per_s / capacity_texts_per_s
    );
    println!("statuses: {}", overload["statuses"]);
    println!("accepted (200) latency ms: {}", overload["accepted_latency_ms"]);
    println!(
        "refused (429) latency ms: {} ({} without Retry-After)",
        overload["refused_latency_ms"], overload["refusals_without_retry_after"]
    );
    println!(
        "client: {} arrivals not sent, {} ms behind schedule at worst",
        overload["not_sent_client_limit"], overload["client_max_lag_ms"]
    );
    if let Some(memory) = memory {
        println!(
            "server resident memory: {:.0} MB at most during the bench ({:.0} MB since it started)",
            memory.sampled, memory.lifetime
        );
    }
    Ok(())
}

/// `clients` tasks, each sending its next request when the last one is answered.
async fn closed_loop(client: &Arc<Client>, clients: usize, duration: Duration) -> Arc<Phase> {
    let phase = Arc::new(Phase::default());
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (client, phase) = (client.clone(), phase.clone());
            tokio::spawn(async move {
                while start.elapsed() < duration {
                    let outcome = client.send(start, Instant::now()).await;
                    if outcome.ended <= duration {
                        phase.outcomes.lock().expect("outcomes").push(outcome);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    phase
}

/// Requests started at `rate` per second for `duration`, each on its own task; then waits for
/// the ones still in flight.
async fn open_loop(client: &Arc<Client>, rate: f64, duration: Duration, max_in_flight: usize) -> Arc<Phase> {
    let phase = Arc::new(Phase::default());
    let in_flight = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut arrivals: u64 = 0;
    loop {
        // Arrivals on a fixed schedule, so a slow send never lowers the offered rate.
        let due = start + Duration::from_secs_f64(arrivals as f64 / rate);
        if due.duration_since(start) >= duration {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        arrivals += 1;
        let lag = due.elapsed().as_micros() as usize;
        phase.max_lag_us.fetch_max(lag, Ordering::Relaxed);
        if in_flight.load(Ordering::Relaxed) >= max_in_flight {
            phase.not_sent.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (client, phase, in_flight) = (client.clone(), phase.clone(), in_flight.clone());
        tasks.push(tokio::spawn(async move {
            let outcome = client.send(start, due).await;
            phase.outcomes.lock().expect("outcomes").push(outcome);
            in_flight.fetch_sub(1, Ordering::Relaxed);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    phase
}

fn answered(outcomes: &[Outcome]) -> usize {
    outcomes.iter().filter(|o| o.status == 200).count()
}

fn statuses(outcomes: &[Outcome]) -> Value {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for outcome in outcomes {
        let key = if outcome.status == 0 { "transport_error".to_string() } else { outcome.status.to_string() };
        *counts.entry(key).or_default() += 1;
    }
    json!(counts)
}

/// p50, p99 and max in ms of the outcomes that `keep`, or null when there are none.
fn latency(outcomes: &[Outcome], keep: impl Fn(&Outcome) -> bool) -> Value {
    let mut ms: Vec<f64> = outcomes.iter().filter(|o| keep(o)).map(|o| o.latency.as_secs_f64() * 1e3).collect();
    if ms.is_empty() {
        return Value::Null;
    }
    ms.sort_by(f64::total_cmp);
    let rank = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    json!({ "p50": round(rank(0.5)), "p99": round(rank(0.99)), "max": round(ms[ms.len() - 1]) })
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Resident memory of the server: the most sampled during the bench, and the kernel's
/// high-water mark since the process started (model loading included).
#[derive(Debug, Clone, Copy)]
struct Memory {
    sampled: f64,
    lifetime: f64,
}

/// Samples a local process's resident memory every 100 ms.
struct MemorySampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<f64>,
    pid: u32,
}

impl MemorySampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak: f64 = 0.0;
            while !flag.load(Ordering::Relaxed) {
                if let Some(rss) = status_mb(pid, "VmRSS:") {
                    peak = peak.max(rss);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        Self { stop, sampler, pid }
    }

    fn stop(self) -> Memory {
        self.stop.store(true, Ordering::Relaxed);
        let sampled = self.sampler.join().unwrap_or_default();
        Memory { sampled, lifetime: status_mb(self.pid, "VmHWM:").unwrap_or(sampled).max(sampled) }
    }
}

/// A `/proc/PID/status` field in MB (Linux).
fn status_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kb: f64 = line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}
