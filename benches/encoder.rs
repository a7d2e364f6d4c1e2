//! Criterion benches: the encoder per batch size (packed f32 and int8, generic), the batching
//! engine's overhead over a direct encoder call, and each fused kernel against candle's op.
//! Run: `cargo bench --bench encoder` (the model is pulled on first use).

use std::path::PathBuf;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tierline::config::Config;
use tierline::inference::kernels::{self, PackedLinear, QuantScratch, QuantizedLinear, SeqSpan};
use tierline::inference::{self, BackendKind, BatchLimits, Engine, EngineMetrics, HeadSet, Precision};

fn config() -> Config {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut config = Config { data_dir: root.join("data"), ..Config::default() };
    config.models.manifest = root.join("models/models.toml");
    config.engine.device = "cpu".into();
    config
}

fn sentences() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/sentences.txt");
    std::fs::read_to_string(path).expect("benches/sentences.txt").lines().map(str::to_string).collect()
}

fn encoder_batches(c: &mut Criterion) {
    let sentences = sentences();
    for (backend, precision) in [
        (BackendKind::Packed, Precision::F32),
        (BackendKind::Packed, Precision::Int8),
        (BackendKind::Generic, Precision::F32),
    ] {
        let mut config = config();
        config.engine.precision = precision;
        let encoder = inference::load_encoder(&config.infer(), backend, false).expect("encoder");
        let ids: Vec<Vec<u32>> = sentences.iter().map(|s| encoder.tokenize(s).unwrap().ids).collect();
        let mut group = c.benchmark_group(format!("encoder/{backend:?}/{}", precision.as_str()).to_lowercase());
        group.sample_size(10).measurement_time(Duration::from_secs(5));
        for batch in [1usize, 8, 32, 64] {
            let refs: Vec<&[u32]> = ids.iter().take(batch).map(Vec::as_slice).collect();
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::from_parameter(batch), &refs, |b, refs| {
                b.iter(|| encoder.embed(refs).unwrap().to_vec2::<f32>().unwrap())
            });
        }
        group.finish();
    }
}

fn engine_overhead(c: &mut Criterion) {
    let texts: Vec<String> = sentences().into_iter().take(32).collect();
    let encoder = inference::load_encoder(&config().infer(), BackendKind::Auto, false).expect("encoder");
    let direct = inference::load_encoder(&config().infer(), BackendKind::Auto, false).expect("encoder");
    let metrics = EngineMetrics::register(&prometheus::Registry::new()).unwrap();
    let limits = BatchLimits::from_settings(&config().engine);
    let engine = Engine::start(encoder, HeadSet::default(), limits, metrics).unwrap();
    let mut group = c.benchmark_group("engine/batch32");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    group.bench_function("direct_encoder", |b| {
        b.iter(|| {
            let ids: Vec<Vec<u32>> = texts.iter().map(|t| direct.tokenize(t).unwrap().ids).collect();
            let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
            direct.embed(&refs).unwrap().to_vec2::<f32>().unwrap()
        })
    });
    group.bench_function("through_engine", |b| b.iter(|| engine.embed_blocking(&texts).unwrap()));
    group.finish();
    engine.shutdown();
}

fn values(len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0).collect()
}

fn kernels_vs_candle(c: &mut Criterion) {
    let (rows, hidden, inter) = (1152usize, 384usize, 1536usize); // batch 32 x 36 tokens
    let mut group = c.benchmark_group("kernels");
    group.sample_size(20).measurement_time(Duration::from_secs(3));

    let x = values(rows * inter);
    let xt = Tensor::from_vec(x.clone(), (rows, inter), &Device::Cpu).unwrap();
    group.bench_function("gelu/fused", |b| {
        b.iter_batched(|| x.clone(), |mut v| kernels::gelu(&mut v), criterion::BatchSize::LargeInput)
    });
    group.bench_function("gelu/candle_gelu_erf", |b| b.iter(|| xt.gelu_erf().unwrap()));

    let h = values(rows * hidden);
    let residual = values(rows * hidden);
    let gamma = vec![1.0f32; hidden];
    let beta = vec![0.0f32; hidden];
    let ht = Tensor::from_vec(h.clone(), (rows, hidden), &Device::Cpu).unwrap();
    let rt = Tensor::from_vec(residual.clone(), (rows, hidden), &Device::Cpu).unwrap();
    let gt = Tensor::from_vec(gamma.clone(), hidden, &Device::Cpu).unwrap();
    let bt = Tensor::from_vec(beta.clone(), hidden, &Device::Cpu).unwrap();
    group.bench_function("add_layer_norm/fused", |b| {
        b.iter_batched(
            || h.clone(),
            |mut v| kernels::add_layer_norm(&mut v, &residual, &gamma, &beta, 1e-12),
            criterion::BatchSize::LargeInput,
        )
    });
    group.bench_function("add_layer_norm/candle", |b| {
        b.iter(|| candle_nn::ops::layer_norm(&(&ht + &rt).unwrap(), &gt, &bt, 1e-12).unwrap())
    });

    let weight = values(inter * hidden);
    let bias = values(inter);
    let linear = PackedLinear::new(&weight, bias.clone(), inter, hidden);
    let quantized = QuantizedLinear::new(&weight, bias.clone(), inter, hidden);
    let wt = Tensor::from_vec(weight, (inter, hidden), &Device::Cpu).unwrap();
    let biast = Tensor::from_vec(bias, inter, &Device::Cpu).unwrap();
    let mut out = Vec::new();
    let threads = rayon::current_num_threads();
    group.bench_function("linear_384x1536/fused_bias", |b| b.iter(|| linear.forward(&h, rows, &mut out, threads)));
    let mut scratch = QuantScratch::default();
    group.bench_function("linear_384x1536/int8_weights", |b| {
        b.iter(|| quantized.forward(&h, rows, &mut out, threads, &mut scratch))
    });
    let one_text = &h[..36 * hidden];
    group.bench_function("linear_384x1536_36rows/fused_bias", |b| {
        b.iter(|| linear.forward(one_text, 36, &mut out, threads))
    });
    group.bench_function("linear_384x1536_36rows/int8_weights", |b| {
        b.iter(|| quantized.forward(one_text, 36, &mut out, threads, &mut scratch))
    });
    group.bench_function("linear_384x1536/candle_matmul_add", |b| {
        b.iter(|| ht.matmul(&wt.t().unwrap()).unwrap().broadcast_add(&biast).unwrap())
    });

    let (heads, head_dim, seq) = (12usize, 32usize, 36usize);
    let spans: Vec<SeqSpan> = (0..32).map(|i| SeqSpan { start: i * seq, len: seq }).collect();
    let qkv = values(32 * seq * 3 * hidden);
    let mut ctx = vec![0.0f32; 32 * seq * hidden];
    group.bench_function("attention_b32_l36/varlen", |b| {
        b.iter(|| kernels::attention_varlen(&qkv, &spans, heads, head_dim, &mut ctx))
    });
    let q = Tensor::from_vec(values(32 * heads * seq * head_dim), (32, heads, seq, head_dim), &Device::Cpu).unwrap();
    let mask = Tensor::zeros((32, 1, 1, seq), candle_core::DType::F32, &Device::Cpu).unwrap();
    group.bench_function("attention_b32_l36/candle_ops", |b| {
        b.iter(|| {
            let scores =
                (q.matmul(&q.t().unwrap()).unwrap() / (head_dim as f64).sqrt()).unwrap().broadcast_add(&mask).unwrap();
            candle_nn::ops::softmax_last_dim(&scores).unwrap().matmul(&q).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, kernels_vs_candle, encoder_batches, engine_overhead);
criterion_main!(benches);
