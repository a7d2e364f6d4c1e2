//! The batched inference engine. Callers (async or blocking) submit texts; a dedicated OS thread
//! forms batches and runs ONE encoder pass per batch, feeding the pooled embedding and every
//! registered head. Admission is bounded: a full queue is an explicit `Overloaded` error.

use crate::sync::{MutexExt, RwLockExt};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use tokenizers::Tokenizer;
use tokio::sync::oneshot;

use super::encoder::{tokenize_with, Encoder, EncoderInfo, TokenizedText};
use super::heads::{HeadInput, HeadSet};

#[derive(Debug, Clone)]
pub struct BatchLimits {
    /// Texts admitted (queued or running) before `Overloaded`.
    pub max_queued_texts: usize,
    /// Admitted work (tokens at the measured tokens per second) before `Overloaded`: a request
    /// admitted behind it is answered within about this long.
    pub max_queue_time: Duration,
    /// Padded cost of one batch: texts x longest text, in tokens.
    pub max_batch_tokens: usize,
    pub max_batch_texts: usize,
    /// How long to hold a batch open for texts already admitted but still being tokenized.
    pub max_wait: Duration,
}

impl BatchLimits {
    pub fn from_settings(config: &crate::settings::EngineConfig) -> Self {
        Self {
            max_queued_texts: config.max_queued_texts,
            max_queue_time: Duration::from_millis(config.max_queue_ms),
            max_batch_tokens: config.max_batch_tokens,
            max_batch_texts: config.max_batch_texts,
            max_wait: Duration::from_micros(config.max_wait_us),
        }
    }
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum EngineError {
    #[error("the inference queue is full ({queued} texts admitted, about {retry_after_secs} s of work, limit {limit} texts); retry in {retry_after_secs} s")]
    Overloaded { queued: usize, limit: usize, retry_after_secs: u64 },
    #[error("the inference engine has stopped")]
    Stopped,
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("cannot tokenize text {index}: {reason}")]
    Tokenize { index: usize, reason: String },
}

/// What the engine returns for one text.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Embedded {
    pub embedding: Vec<f32>,
    /// Scores of every registered head, by head name (from `score`; empty from `embed`).
    pub heads: BTreeMap<String, Vec<f32>>,
    pub tokens: usize,
    pub truncated: bool,
    /// The layer pools, only for callers that asked for them (training a layer-pools head).
    #[serde(skip)]
    pub layer_pools: Option<Vec<f32>>,
}

#[derive(Clone)]
pub struct EngineMetrics {
    pub queued_texts: IntGauge,
    pub batch_size: Histogram,
    pub batch_tokens: Histogram,
    pub inference_seconds: Histogram,
    pub queue_seconds: Histogram,
    pub overloaded_total: IntCounter,
    pub cancelled_total: IntCounter,
    pub texts_total: IntCounter,
}

impl EngineMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            queued_texts: IntGauge::new(
                "tierline_engine_queued_texts",
                "texts admitted to the engine and not finished",
            )?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new("tierline_engine_batch_size", "texts per encoder pass")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            )?,
            batch_tokens: Histogram::with_opts(
                HistogramOpts::new("tierline_engine_batch_tokens", "real (unpadded) tokens per encoder pass")
                    .buckets(prometheus::exponential_buckets(16.0, 2.0, 11)?),
            )?,
            inference_seconds: Histogram::with_opts(
                HistogramOpts::new("tierline_engine_inference_seconds", "duration of one encoder pass with its heads")
                    .buckets(prometheus::exponential_buckets(0.0005, 2.0, 14)?),
            )?,
            queue_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "tierline_engine_queue_seconds",
                    "time from admission to the start of the text's batch",
                )
                .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
            )?,
            overloaded_total: IntCounter::new(
                "tierline_engine_overloaded_total",
                "requests refused because the queue was full",
            )?,
            cancelled_total: IntCounter::new(
                "tierline_engine_cancelled_total",
                "texts dropped because their caller went away",
            )?,
            texts_total: IntCounter::new("tierline_engine_texts_total", "texts encoded")?,
        };
        registry.register(Box::new(metrics.queued_texts.clone()))?;
        registry.register(Box::new(metrics.batch_size.clone()))?;
        registry.register(Box::new(metrics.batch_tokens.clone()))?;
        registry.register(Box::new(metrics.inference_seconds.clone()))?;
        registry.register(Box::new(metrics.queue_seconds.clone()))?;
        registry.register(Box::new(metrics.overloaded_total.clone()))?;
        registry.register(Box::new(metrics.cancelled_total.clone()))?;
        registry.register(Box::new(metrics.texts_total.clone()))?;
        Ok(metrics)
    }
}

type Reply = Result<Vec<Embedded>, EngineError>;

/// One caller's request, completed piece by piece as its texts go through batches.
struct PendingRequest {
    results: Mutex<Vec<Option<Embedded>>>,
    remaining: AtomicUsize,
    reply: Mutex<Option<oneshot::Sender<Reply>>>,
    admitted_at: Instant,
    /// What the caller wants beyond the embedding.
    wants: Wants,
}

/// What a request wants computed beyond the pooled embedding. A batch computes the heads (and
/// the layer pools they read) only when one of its requests wants them: an embedding client
/// pays for the encoder alone.
#[derive(Debug, Clone, Copy, Default)]
struct Wants {
    heads: bool,
    layer_pools: bool,
}

impl PendingRequest {
    /// The caller went away (timeout, disconnect) or the request already failed.
    fn is_abandoned(&self) -> bool {
        self.reply.lock().map_or(true, |reply| reply.as_ref().is_none_or(|tx| tx.is_closed()))
    }

    fn complete(&self, index: usize, output: Embedded) {
        let mut results = self.results.lock_unpoisoned();
        results[index] = Some(output);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let all = results.iter_mut().map(|slot| slot.take().expect("every text completed")).collect();
            self.send(Ok(all));
        }
    }

    fn send(&self, reply: Reply) {
        if let Some(tx) = self.reply.lock_unpoisoned().take() {
            let _ = tx.send(reply);
        }
    }
}

struct Job {
    request: Arc<PendingRequest>,
    index: usize,
    text: TokenizedText,
}

/// The share of the time budget (`engine.max_queue_ms`) that admission plans to fill. The rest
/// is headroom for what the plan cannot see: the rate moving between batches (other work on the
/// machine, longer texts), tokenizing, the heads and the HTTP round trip.
const PLANNED_SHARE_OF_BUDGET: f64 = 0.8;

/// The most work one batch holds, as a share of the planned budget.
const BATCH_SHARE_OF_BUDGET: f64 = 0.25;

/// A batch may always hold this many tokens (unless configured smaller): below it, per-batch
/// overhead would dominate.
const MIN_BATCH_TOKENS: usize = 512;

/// Requests of at most this many bytes of text are tokenized on the calling async worker: that
/// takes tens of microseconds, less than the two thread hand-offs of the blocking pool, which
/// were most of the HTTP overhead at one short text. Longer requests go to the blocking pool.
const INLINE_TOKENIZE_BYTES: usize = 2048;

/// Work admitted and not finished (queued or running).
#[derive(Debug, Default)]
struct Queued {
    texts: usize,
    /// The cost admission weighs: a long ticket costs many short messages.
    tokens: usize,
}

struct Shared {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    queued: Mutex<Queued>,
    /// Texts being tokenized, not yet admitted: the worker holds a batch open for them.
    tokenizing: AtomicUsize,
    /// Recent throughput in tokens per second (f64 bits): what admission and Retry-After use.
    tokens_per_second: AtomicU64,
    /// The last batch's tokens per second (f64 bits).
    last_tokens_per_second: AtomicU64,
    limits: BatchLimits,
    info: EncoderInfo,
    tokenizer: Tokenizer,
    /// Where the encoder runs: heads loaded later must live there too.
    device: candle_core::Device,
    heads: RwLock<HeadSet>,
    metrics: EngineMetrics,
}

impl Shared {
    fn release(&self, texts: usize, tokens: usize) {
        let mut queued = self.queued.lock_unpoisoned();
        queued.texts -= texts;
        queued.tokens -= tokens;
        self.metrics.queued_texts.set(queued.texts as i64);
    }

    fn queued_texts(&self) -> usize {
        self.queued.lock_unpoisoned().texts
    }

    fn tokens_per_second(&self) -> f64 {
        f64::from_bits(self.tokens_per_second.load(Ordering::Relaxed)).max(1.0)
    }

    /// The rate admission plans with: the slower of the smoothed rate and the last batch's, so
    /// a slowdown (longer texts, a busier machine) shrinks the queue at once.
    fn planning_rate(&self) -> f64 {
        let last = f64::from_bits(self.last_tokens_per_second.load(Ordering::Relaxed));
        self.tokens_per_second().min(last).max(1.0)
    }

    fn planned_budget_secs(&self) -> f64 {
        self.limits.max_queue_time.as_secs_f64() * PLANNED_SHARE_OF_BUDGET
    }

    /// The batch limits for the next round: at most a quarter of the planned budget of work per
    /// batch (at the planning rate), so a request never waits much longer than the budget behind
    /// one large batch that started just before it and another that it shares with later texts.
    /// Where the engine is fast (a GPU) the configured limits are the smaller.
    fn round_limits(&self) -> BatchLimits {
        let quarter = self.planning_rate() * self.planned_budget_secs() * BATCH_SHARE_OF_BUDGET;
        let mut limits = self.limits.clone();
        limits.max_batch_tokens = limits.max_batch_tokens.min((quarter as usize).max(MIN_BATCH_TOKENS));
        limits
    }

    /// Refuses `texts` more (of `tokens`, when known) if they would pass the count limit, or if
    /// the admitted work would take longer than the time budget; otherwise admits them when
    /// `admit`. An idle engine takes any request.
    fn check(&self, texts: usize, tokens: usize, admit: bool) -> Result<(), EngineError> {
        let limit = self.limits.max_queued_texts;
        // The admitted work drains within the budget less one batch: the batch a request shares
        // with texts admitted after it takes the rest.
        let budget = self.planned_budget_secs() * (1.0 - BATCH_SHARE_OF_BUDGET);
        let rate = self.planning_rate();
        let mut queued = self.queued.lock_unpoisoned();
        let over_budget = queued.tokens > 0 && (queued.tokens + tokens) as f64 / rate > budget;
        if queued.texts + texts > limit || over_budget {
            self.metrics.overloaded_total.inc();
            let retry_after_secs = ((queued.tokens as f64 / rate).ceil() as u64).clamp(1, 60);
            return Err(EngineError::Overloaded { queued: queued.texts, limit, retry_after_secs });
        }
        if admit {
            queued.texts += texts;
            queued.tokens += tokens;
            self.metrics.queued_texts.set(queued.texts as i64);
        }
        Ok(())
    }
}

/// Cheap to clone; the worker thread stops when the last handle is dropped or on `shutdown`.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    worker: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// Counts texts on their way to admission (being tokenized) for as long as it lives.
struct Tokenizing<'a> {
    shared: &'a Shared,
    texts: usize,
}

impl<'a> Tokenizing<'a> {
    fn start(shared: &'a Shared, texts: usize) -> Self {
        shared.tokenizing.fetch_add(texts, Ordering::AcqRel);
        Self { shared, texts }
    }
}

impl Drop for Tokenizing<'_> {
    fn drop(&mut self) {
        self.shared.tokenizing.fetch_sub(self.texts, Ordering::AcqRel);
    }
}

/// Gives admitted capacity back unless the texts were handed to the worker.
struct Admission<'a> {
    shared: &'a Shared,
    texts: usize,
    tokens: usize,
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.texts > 0 {
            self.shared.release(self.texts, self.tokens);
        }
    }
}

impl Engine {
    pub fn start(
        encoder: Encoder,
        heads: HeadSet,
        limits: BatchLimits,
        metrics: EngineMetrics,
    ) -> anyhow::Result<Self> {
        let (sender, receiver) = mpsc::channel();
        let shared = Arc::new(Shared {
            sender: Mutex::new(Some(sender)),
            queued: Mutex::new(Queued::default()),
            tokenizing: AtomicUsize::new(0),
            // Until the first batch says otherwise: about a hundred short texts a second.
            tokens_per_second: AtomicU64::new(4_000f64.to_bits()),
            last_tokens_per_second: AtomicU64::new(4_000f64.to_bits()),
            limits,
            info: encoder.info().clone(),
            tokenizer: encoder.tokenizer().clone(),
            device: encoder.device().clone(),
            heads: RwLock::new(heads),
            metrics,
        });
        let worker_shared = shared.clone();
        let worker = std::thread::Builder::new()
            .name("tierline-inference".into())
            .spawn(move || run_worker(encoder, receiver, worker_shared))?;
        Ok(Self { shared, worker: Arc::new(Mutex::new(Some(worker))) })
    }

    pub fn info(&self) -> &EncoderInfo {
        &self.shared.info
    }

    pub fn device(&self) -> &candle_core::Device {
        &self.shared.device
    }

    pub fn limits(&self) -> &BatchLimits {
        &self.shared.limits
    }

    /// Replaces the served heads, refusing any whose input this encoder cannot give; batches
    /// already running finish with the old set.
    pub fn set_heads(&self, heads: HeadSet) -> anyhow::Result<()> {
        for head in heads.heads() {
            let input = head.input();
            let width = self
                .shared
                .info
                .input_dimensions(input)
                .map_err(|err| anyhow::anyhow!("head `{}` reads {}: {err}", head.name(), input.as_str()))?;
            anyhow::ensure!(
                width == head.input_dimensions(),
                "head `{}` reads {} of width {} but this encoder gives {width}; retrain it on this encoder",
                head.name(),
                input.as_str(),
                head.input_dimensions()
            );
        }
        *self.shared.heads.write_unpoisoned() = heads;
        Ok(())
    }

    pub fn heads(&self) -> HeadSet {
        self.shared.heads.read_unpoisoned().clone()
    }

    /// Texts admitted and not finished.
    pub fn queued_texts(&self) -> usize {
        self.shared.queued_texts()
    }

    /// Embeds `texts` without blocking the async runtime: tokenization runs on the blocking
    /// pool (inline for a short request), inference on the engine's thread. No head runs
    /// (`heads` is empty): see `score`.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Embedded>, EngineError> {
        self.run(texts, Wants::default()).await
    }

    /// As `embed`, with every registered head's scores from the same encoder pass.
    pub async fn score(&self, texts: Vec<String>) -> Result<Vec<Embedded>, EngineError> {
        self.run(texts, Wants { heads: true, layer_pools: false }).await
    }

    async fn run(&self, texts: Vec<String>, wants: Wants) -> Result<Vec<Embedded>, EngineError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let tokenizing = self.start_tokenizing(texts.len())?;
        let tokenized = if texts.iter().map(String::len).sum::<usize>() <= INLINE_TOKENIZE_BYTES {
            tokenize_all(&self.shared, &texts)?
        } else {
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || tokenize_all(&shared, &texts))
                .await
                .map_err(|err| EngineError::Inference(format!("tokenizer task failed: {err}")))??
        };
        let receiver = self.submit(tokenized, tokenizing, wants)?;
        receiver.await.map_err(|_| EngineError::Stopped)?
    }

    /// Blocking variant of `embed` for the CLI and benchmarks; never call it from async code.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Embedded>, EngineError> {
        self.run_blocking(texts, Wants::default())
    }

    /// Blocking variant of `score`.
    pub fn score_blocking(&self, texts: &[String]) -> Result<Vec<Embedded>, EngineError> {
        self.run_blocking(texts, Wants { heads: true, layer_pools: false })
    }

    /// The rows a head of `input` reads, one per text, for training and evaluating heads.
    /// Blocking, like `embed_blocking`.
    /// An encoder without layer pools fails the request in `Encoder::encode`, with the reason.
    pub fn inputs_blocking(&self, texts: &[String], input: HeadInput) -> Result<Vec<Vec<f32>>, EngineError> {
        let outputs = self.run_blocking(texts, Wants { heads: false, layer_pools: input == HeadInput::LayerPools })?;
        Ok(outputs
            .into_iter()
            .map(|output| match input {
                HeadInput::Embedding => output.embedding,
                HeadInput::LayerPools => output.layer_pools.unwrap_or_default(),
            })
            .collect())
    }

    fn run_blocking(&self, texts: &[String], wants: Wants) -> Result<Vec<Embedded>, EngineError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let tokenizing = self.start_tokenizing(texts.len())?;
        let tokenized = tokenize_all(&self.shared, texts)?;
        let receiver = self.submit(tokenized, tokenizing, wants)?;
        receiver.blocking_recv().map_err(|_| EngineError::Stopped)?
    }

    /// Refuses at once when the queue is already past its budget (before any tokenizing);
    /// otherwise counts `texts` as on their way until `submit`.
    fn start_tokenizing(&self, texts: usize) -> Result<Tokenizing<'_>, EngineError> {
        self.shared.check(texts, 0, false)?;
        Ok(Tokenizing::start(&self.shared, texts))
    }

    /// Admits the tokenized texts (at their cost in tokens) and hands them to the worker; they
    /// count as on their way (`tokenizing`) until they are admitted.
    fn submit(
        &self,
        tokenized: Vec<TokenizedText>,
        tokenizing: Tokenizing<'_>,
        wants: Wants,
    ) -> Result<oneshot::Receiver<Reply>, EngineError> {
        let tokens = tokenized.iter().map(|text| text.ids.len()).sum();
        self.shared.check(tokenized.len(), tokens, true)?;
        // Admitted texts are counted as queued from here. Stop counting them as tokenizing before
        // the first is sent: a worker that saw them as both would wait `max_wait` for texts that
        // never come, because nothing wakes it when this count drops.
        drop(tokenizing);
        let mut admission = Admission { shared: &self.shared, texts: tokenized.len(), tokens };
        let (tx, rx) = oneshot::channel();
        let request = Arc::new(PendingRequest {
            results: Mutex::new(vec![None; tokenized.len()]),
            remaining: AtomicUsize::new(tokenized.len()),
            reply: Mutex::new(Some(tx)),
            admitted_at: Instant::now(),
            wants,
        });
        let guard = self.shared.sender.lock_unpoisoned();
        let sender = guard.as_ref().ok_or(EngineError::Stopped)?;
        for (index, text) in tokenized.into_iter().enumerate() {
            let cost = text.ids.len();
            sender.send(Job { request: request.clone(), index, text }).map_err(|_| EngineError::Stopped)?;
            // From here on the worker releases this text's admission.
            admission.texts -= 1;
            admission.tokens -= cost;
        }
        Ok(rx)
    }

    /// Stops accepting work, lets the worker finish what it has, and waits for it.
    pub fn shutdown(&self) {
        self.shared.sender.lock_unpoisoned().take();
        if let Some(worker) = self.worker.lock_unpoisoned().take() {
            let _ = worker.join();
        }
    }
}

fn tokenize_all(shared: &Shared, texts: &[String]) -> Result<Vec<TokenizedText>, EngineError> {
    texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            tokenize_with(&shared.tokenizer, shared.info.max_tokens, text)
                .map_err(|err| EngineError::Tokenize { index, reason: err.to_string() })
        })
        .collect()
}

fn run_worker(encoder: Encoder, receiver: mpsc::Receiver<Job>, shared: Arc<Shared>) {
    // Oldest first. Texts left over from a round stay here and go first in the next one.
    let mut pending: Vec<Job> = Vec::new();
    loop {
        if pending.is_empty() {
            match receiver.recv() {
                Ok(job) => pending.push(job),
                // Stopped, and everything admitted has run.
                Err(_) => break,
            }
        }
        let limits = shared.round_limits();
        let deadline = Instant::now() + limits.max_wait;
        loop {
            while let Ok(job) = receiver.try_recv() {
                pending.push(job);
            }
            if is_full(&pending, &limits) {
                break;
            }
            // Only wait for texts on their way: being tokenized, or admitted and being sent.
            // They arrive within microseconds. An idle engine runs a lone text at once.
            let coming = shared.queued_texts() + shared.tokenizing.load(Ordering::Acquire);
            if coming <= pending.len() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match receiver.recv_timeout(deadline - now) {
                Ok(job) => pending.push(job),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let (abandoned, live): (Vec<Job>, Vec<Job>) =
            std::mem::take(&mut pending).into_iter().partition(|job| job.request.is_abandoned());
        pending = live;
        let dropped = abandoned.len();
        if dropped > 0 {
            shared.metrics.cancelled_total.inc_by(dropped as u64);
            shared.release(dropped, abandoned.iter().map(|job| job.text.ids.len()).sum());
            tracing::debug!(dropped, "dropped texts whose caller went away");
        }
        if pending.is_empty() {
            continue;
        }
        let batch = oldest_batch(&mut pending, &limits);
        run_batch(&encoder, &shared, batch);
    }
    tracing::info!("inference worker stopped");
}

fn is_full(pending: &[Job], limits: &BatchLimits) -> bool {
    let longest = pending.iter().map(|job| job.text.ids.len()).max().unwrap_or(0);
    pending.len() >= limits.max_batch_texts || pending.len() * longest >= limits.max_batch_tokens
}

/// The oldest texts that fit one batch, taken out of `pending`. First come, first served: a
/// text admitted behind a queue never waits for texts admitted after it, so the admission
/// budget bounds its wait. Sorted by length inside the batch (balanced attention work on the
/// packed backend).
fn oldest_batch(pending: &mut Vec<Job>, limits: &BatchLimits) -> Vec<Job> {
    let mut longest = 0;
    let mut count = 0;
    for job in pending.iter() {
        let with_it = longest.max(job.text.ids.len());
        if count > 0 && (count + 1 > limits.max_batch_texts || (count + 1) * with_it > limits.max_batch_tokens) {
            break;
        }
        longest = with_it;
        count += 1;
    }
    let mut batch: Vec<Job> = pending.drain(..count).collect();
    batch.sort_by_key(|job| job.text.ids.len());
    batch
}

fn run_batch(encoder: &Encoder, shared: &Shared, batch: Vec<Job>) {
    let started = Instant::now();
    for job in &batch {
        shared.metrics.queue_seconds.observe(started.duration_since(job.request.admitted_at).as_secs_f64());
    }
    let sequences: Vec<&[u32]> = batch.iter().map(|job| job.text.ids.as_slice()).collect();
    let heads = shared.heads.read_unpoisoned().clone();
    // A panic inside a kernel must fail this batch, not kill the engine.
    let callers_want_pools = batch.iter().any(|job| job.request.wants.layer_pools);
    let callers_want_heads = batch.iter().any(|job| job.request.wants.heads);
    let outcome = catch_unwind(AssertUnwindSafe(|| -> anyhow::Result<_> {
        let pools_needed = callers_want_pools || (callers_want_heads && heads.needs_layer_pools());
        let encoded = encoder.encode(&sequences, pools_needed)?;
        let head_scores =
            if callers_want_heads { heads.run(&encoded)? } else { vec![BTreeMap::new(); sequences.len()] };
        let embeddings = encoded.pooled.to_device(&candle_core::Device::Cpu)?.to_vec2::<f32>()?;
        let pools = match (&encoded.layer_pools, callers_want_pools) {
            (Some(pools), true) => pools.to_device(&candle_core::Device::Cpu)?.to_vec2::<f32>()?,
            _ => vec![Vec::new(); batch.len()],
        };
        Ok((embeddings, pools, head_scores))
    }));
    let elapsed = started.elapsed();
    let texts = batch.len();
    let tokens: usize = sequences.iter().map(|s| s.len()).sum();
    shared.metrics.batch_size.observe(texts as f64);
    shared.metrics.batch_tokens.observe(tokens as f64);
    shared.metrics.inference_seconds.observe(elapsed.as_secs_f64());
    // Only a batch that ran says how fast the engine is. Smoothed, so one batch cannot swing
    // admission; the last batch counts alone only when it was big enough to measure throughput
    // rather than per-batch overhead.
    if matches!(outcome, Ok(Ok(_))) {
        let rate = tokens as f64 / elapsed.as_secs_f64().max(1e-6);
        let smoothed = 0.8 * shared.tokens_per_second() + 0.2 * rate;
        shared.tokens_per_second.store(smoothed.to_bits(), Ordering::Relaxed);
        if tokens >= MIN_BATCH_TOKENS {
            shared.last_tokens_per_second.store(rate.to_bits(), Ordering::Relaxed);
        }
    }
    // Capacity goes back before the callers hear: one that sees its answer also sees it released.
    shared.release(texts, tokens);
    match outcome {
        Ok(Ok((embeddings, pools, head_scores))) => {
            shared.metrics.texts_total.inc_by(texts as u64);
            for (((job, embedding), pools), heads) in batch.iter().zip(embeddings).zip(pools).zip(head_scores) {
                let output = Embedded {
                    embedding,
                    heads: if job.request.wants.heads { heads } else { BTreeMap::new() },
                    tokens: job.text.ids.len(),
                    truncated: job.text.truncated,
                    layer_pools: job.request.wants.layer_pools.then_some(pools),
                };
                job.request.complete(job.index, output);
            }
        }
        Ok(Err(err)) => fail_batch(&batch, EngineError::Inference(format!("{err:#}"))),
        Err(panic) => {
            let reason =
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            tracing::error!(reason = reason.as_deref().unwrap_or("unknown"), "inference panicked");
            fail_batch(&batch, EngineError::Inference("the encoder panicked; see the server log".into()));
        }
    }
    tracing::trace!(texts, tokens, elapsed_us = elapsed.as_micros() as u64, "batch done");
}

fn fail_batch(batch: &[Job], error: EngineError) {
    tracing::error!(%error, texts = batch.len(), "batch failed");
    for job in batch {
        job.request.send(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(tokens: usize, index: usize) -> Job {
        let request = Arc::new(PendingRequest {
            results: Mutex::new(vec![None]),
            remaining: AtomicUsize::new(1),
            reply: Mutex::new(None),
            admitted_at: Instant::now(),
            wants: Wants::default(),
        });
        Job { request, index, text: TokenizedText { ids: vec![0; tokens], truncated: false } }
    }

    #[test]
    fn batches_take_the_oldest_texts_first() {
        let limits = BatchLimits {
            max_queued_texts: 100,
            max_queue_time: Duration::from_secs(2),
            max_batch_tokens: 400,
            max_batch_texts: 4,
            max_wait: Duration::ZERO,
        };
        // Arrival order 0..6; lengths would sort the short late ones first.
        let mut pending: Vec<Job> = [90, 80, 70, 60, 5, 5].iter().enumerate().map(|(i, &t)| job(t, i)).collect();
        let first = oldest_batch(&mut pending, &limits);
        let arrivals: Vec<usize> = first.iter().map(|j| j.index).collect();
        assert_eq!(arrivals, [3, 2, 1, 0], "the four oldest, sorted by length inside");
        assert_eq!(pending.iter().map(|j| j.index).collect::<Vec<_>>(), [4, 5]);
        // The token budget cuts a batch too: 3 x 150 > 400.
        let mut pending: Vec<Job> = [150, 10, 150, 10].iter().enumerate().map(|(i, &t)| job(t, i)).collect();
        assert_eq!(oldest_batch(&mut pending, &limits).len(), 2);
        assert_eq!(oldest_batch(&mut pending, &limits).len(), 2);
        assert!(pending.is_empty());
    }
}
