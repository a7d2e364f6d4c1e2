use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use tierline::config::Config;
use tierline::inference::{self, BackendKind, Encoder, Precision};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Encoder throughput and latency per batch size (tokenization included, as in PyTorch's
    /// `encode`), on the project's sentence set.
    Encoder(EncoderArgs),
    /// Whole conversations over HTTP against running servers (one node, or several sharing a
    /// PostgreSQL database): turns per second and turn latency.
    Turns(super::bench_turns::TurnsArgs),
    /// A running server offered a multiple of its measured capacity (open-loop arrivals):
    /// answered texts per second, 429 latency, accepted latency and the server's peak memory.
    Overload(super::bench_overload::OverloadArgs),
}

#[derive(Debug, Args)]
pub struct EncoderArgs {
    /// One sentence per line.
    #[arg(long, default_value = "benches/sentences.txt")]
    sentences: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64")]
    batch_sizes: Vec<usize>,
    /// Measure each batch size for at least this long (and at least one pass over the sentences).
    #[arg(long, default_value_t = 5.0)]
    min_seconds: f64,
    /// Untimed batches before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Transformer implementation: auto, packed or generic (candle-transformers).
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
    /// Encoder arithmetic (overrides `engine.precision`). Other than f32, the f32 encoder is
    /// also loaded to report the cosine of each sentence's embedding to its f32 embedding.
    #[arg(long, value_enum)]
    precision: Option<PrecisionArg>,
    /// Print one JSON object (the compare runner reads it).
    #[arg(long)]
    json: bool,
    /// Measure a running server instead: the same batches as `POST {url}/v1/embed` requests,
    /// one at a time, the response parsed as a client would (`--key` for a server with keys).
    #[arg(long)]
    url: Option<String>,
    #[arg(long, env = "TIERLINE_KEY")]
    key: Option<String>,
    /// The server's `encoding_format`: float (JSON numbers) or base64.
    #[arg(long, value_enum, default_value = "float")]
    encoding: EncodingArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EncodingArg {
    Float,
    Base64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BackendArg {
    Auto,
    Packed,
    Generic,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PrecisionArg {
    F32,
    Int8,
}

impl From<PrecisionArg> for Precision {
    fn from(arg: PrecisionArg) -> Self {
        match arg {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Int8 => Precision::Int8,
        }
    }
}

#[derive(Debug, serde::Serialize)]
struct CosineToF32 {
    min: f64,
    mean: f64,
    /// Share of sentences at or above 0.99.
    share_at_least_0_99: f64,
}

#[derive(Debug, serde::Serialize)]
struct BatchResult {
    batch_size: usize,
    sentences_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    batches: usize,
}

pub fn run(config: Config, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Encoder(args) => bench_encoder(config, args),
        BenchCommand::Turns(args) => super::bench_turns::run(args),
        BenchCommand::Overload(args) => super::bench_overload::run(args),
    }
}

fn bench_encoder(mut config: Config, args: EncoderArgs) -> anyhow::Result<()> {
    if let Some(precision) = args.precision {
        config.engine.precision = precision.into();
    }
    let text = std::fs::read_to_string(&args.sentences)
        .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", args.sentences.display()))?;
    let sentences: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
    anyhow::ensure!(!sentences.is_empty(), "{} holds no sentences", args.sentences.display());
    anyhow::ensure!(args.batch_sizes.iter().all(|&b| b > 0), "batch sizes must be positive");
    if let Some(url) = &args.url {
        return bench_http(url, &args, &sentences);
    }
    let backend = match args.backend {
        BackendArg::Auto => BackendKind::Auto,
        BackendArg::Packed => BackendKind::Packed,
        BackendArg::Generic => BackendKind::Generic,
    };
    let encoder = inference::load_encoder(&config.infer(), backend, !args.json)?;
    let info = encoder.info().clone();
    let cosine = match info.precision {
        Precision::F32 => None,
        _ => Some(cosine_to_f32(&config, &encoder, &sentences, !args.json)?),
    };
    if let (Some(cosine), false) = (&cosine, args.json) {
        eprintln!(
            "cosine to f32 over {} sentences: min {:.4}, mean {:.4}, {:.1}% >= 0.99",
            sentences.len(),
            cosine.min,
            cosine.mean,
            cosine.share_at_least_0_99 * 100.0
        );
    }
    let embed = |batch: &[&str]| -> anyhow::Result<()> {
        let ids = batch.iter().map(|text| encoder.tokenize(text).map(|t| t.ids)).collect::<anyhow::Result<Vec<_>>>()?;
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        std::hint::black_box(encoder.embed(&refs)?.to_vec2::<f32>()?);
        Ok(())
    };
    let results = measure_each_batch_size(embed, &sentences, &args, ("", "", "batches"))?;
    let report = serde_json::json!({
        "engine": "tierline-candle",
        "precision": info.precision,
        "cosine_to_f32": cosine,
        "backend": info.backend,
        "model": info.id,
        "threads": rayon::current_num_threads(),
        "simd": format!("{:?}", inference::kernels::simd_level()),
        "sentences": sentences.len(),
        "results": results,
    });
    if args.json {
        println!("{report}");
    }
    Ok(())
}

/// Embeds every sentence with `encoder` and with an f32 encoder of the same model.
fn cosine_to_f32(
    config: &Config,
    encoder: &Encoder,
    sentences: &[&str],
    progress: bool,
) -> anyhow::Result<CosineToF32> {
    let mut reference_config = config.clone();
    reference_config.engine.precision = Precision::F32;
    let reference = inference::load_encoder(&reference_config.infer(), BackendKind::Auto, progress)?;
    let mut cosines = Vec::with_capacity(sentences.len());
    for batch in sentences.chunks(32) {
        let ids = batch.iter().map(|text| encoder.tokenize(text).map(|t| t.ids)).collect::<anyhow::Result<Vec<_>>>()?;
        let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let ours = encoder.embed(&refs)?.to_vec2::<f32>()?;
        let theirs = reference.embed(&refs)?.to_vec2::<f32>()?;
        for (a, b) in ours.iter().zip(&theirs) {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
            let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            cosines.push(dot / (norm(a) * norm(b)).max(1e-12));
        }
    }
    let count = cosines.len() as f64;
    Ok(CosineToF32 {
        min: cosines.iter().copied().fold(f64::INFINITY, f64::min),
        mean: cosines.iter().sum::<f64>() / count,
        share_at_least_0_99: cosines.iter().filter(|&&c| c >= 0.99).count() as f64 / count,
    })
}

/// The same batches as the in-process run, as `POST /v1/embed` requests to a running server,
/// one at a time: the HTTP path's share of the engine is this run's figure over that one's.
fn bench_http(url: &str, args: &EncoderArgs, sentences: &[&str]) -> anyhow::Result<()> {
    let endpoint = format!("{}/v1/embed", url.trim_end_matches('/'));
    let agent = ureq::Agent::new_with_defaults();
    let encoding = match args.encoding {
        EncodingArg::Float => "float",
        EncodingArg::Base64 => "base64",
    };
    let embed = |batch: &[&str]| -> anyhow::Result<()> {
        let mut request = agent.post(&endpoint);
        if let Some(key) = &args.key {
            request = request.header("authorization", &format!("Bearer {key}"));
        }
        let body = serde_json::json!({ "texts": batch, "encoding_format": encoding });
        let mut response = request.send_json(&body).map_err(|err| anyhow::anyhow!("POST {endpoint}: {err}"))?;
        // Parsed as a client would, embeddings included.
        let parsed: serde_json::Value = response.body_mut().read_json()?;
        anyhow::ensure!(parsed["data"].as_array().is_some_and(|d| d.len() == batch.len()), "unexpected response");
        std::hint::black_box(parsed);
        Ok(())
    };
    let detail = format!(" ({encoding})");
    let results = measure_each_batch_size(embed, sentences, args, ("http ", &detail, "requests"))?;
    if args.json {
        let report = serde_json::json!({
            "engine": "tierline-http",
            "url": url,
            "encoding_format": encoding,
            "sentences": sentences.len(),
            "results": results,
        });
        println!("{report}");
    }
    Ok(())
}

/// `measure` at every batch size of `args`, each printed unless `--json`; `label` is the line's
/// prefix, the text after the batch size, and what one call is called.
fn measure_each_batch_size(
    mut run: impl FnMut(&[&str]) -> anyhow::Result<()>,
    sentences: &[&str],
    args: &EncoderArgs,
    (prefix, detail, calls): (&str, &str, &str),
) -> anyhow::Result<Vec<BatchResult>> {
    let min_time = Duration::from_secs_f64(args.min_seconds);
    let mut results = Vec::new();
    for &batch_size in &args.batch_sizes {
        let result = measure(&mut run, sentences, batch_size, args.warmup, min_time)?;
        if !args.json {
            eprintln!(
                "{prefix}batch {:>3}{detail}: {:>8.1} sentences/s  p50 {:>8.2} ms  p99 {:>8.2} ms  ({} {calls})",
                result.batch_size, result.sentences_per_sec, result.p50_ms, result.p99_ms, result.batches
            );
        }
        results.push(result);
    }
    Ok(results)
}

fn measure(
    mut run: impl FnMut(&[&str]) -> anyhow::Result<()>,
    sentences: &[&str],
    batch_size: usize,
    warmup: usize,
    min_time: Duration,
) -> anyhow::Result<BatchResult> {
    // Batch i holds sentences i*B .. i*B+B, wrapping around the list (as the Python reference).
    let batch_at = |index: usize| -> Vec<&str> {
        (0..batch_size).map(|j| sentences[(index * batch_size + j) % sentences.len()]).collect()
    };
    for index in 0..warmup {
        run(&batch_at(index))?;
    }
    let mut latencies = Vec::new();
    let mut done = 0;
    let started = Instant::now();
    let full_pass_calls = sentences.len().div_ceil(batch_size).min(512);
    while started.elapsed() < min_time || latencies.len() < full_pass_calls {
        let batch = batch_at(latencies.len());
        let t0 = Instant::now();
        run(&batch)?;
        latencies.push(t0.elapsed().as_secs_f64() * 1e3);
        done += batch.len();
    }
    let total = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    Ok(BatchResult {
        batch_size,
        sentences_per_sec: done as f64 / total,
        p50_ms: percentile(0.5),
        p99_ms: percentile(0.99),
        batches: latencies.len(),
    })
}
