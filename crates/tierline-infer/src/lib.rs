//! tierline's inference layer: model resolution, the BERT-family encoder (two backends), fused
//! CPU kernels, heads, and the batched engine that runs one encoder pass per batch for every head.
//! Knows nothing of tickets, tiers or HTTP; its settings are its own (`settings`).

pub mod checkpoint;
pub mod classify;
pub mod device;
pub mod encoder;
pub mod engine;
pub mod head_versions;
pub mod heads;
pub mod kernels;
pub mod layered_bert;
pub mod manifest;
pub mod packed_bert;
pub mod settings;
pub mod source;
pub mod sync;

pub use device::DeviceRequest;
pub use encoder::{BackendKind, Encoder, EncoderInfo, Pooling, Precision};
pub use engine::{BatchLimits, Embedded, Engine, EngineError, EngineMetrics};
pub use heads::{Head, HeadSet};
pub use manifest::{Manifest, ModelKind, ModelSpec};
pub use settings::InferSettings;
pub use source::{ResolvedModel, Resolver};

/// Sizes rayon's global pool once per process; candle's matmul and our kernels share it.
pub fn init_threads(threads: usize) {
    if threads == 0 {
        return;
    }
    if rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().is_err() {
        tracing::debug!("rayon pool already initialised");
    }
}

/// Resolves and loads the encoder role from the manifest: the one entry point the server, the
/// CLI and the tests share.
pub fn load_encoder(settings: &InferSettings, backend: BackendKind, progress: bool) -> anyhow::Result<Encoder> {
    let manifest = Manifest::load(&settings.models.manifest)?;
    let spec = manifest.role("encoder")?;
    let resolved = Resolver::from_settings(settings).with_progress(progress).resolve("encoder", spec)?;
    let device = DeviceRequest::parse(&settings.engine.device).map_err(anyhow::Error::msg)?.open()?;
    init_threads(settings.engine.threads);
    Encoder::load(&resolved, &device, backend, rayon::current_num_threads(), settings.engine.precision)
}

/// Loads the encoder and starts the engine with no heads: the one start-up path for everything
/// that only needs embeddings (training, benches). `classify::start` adds the served heads.
pub fn start_engine(settings: &InferSettings, metrics: EngineMetrics, progress: bool) -> anyhow::Result<Engine> {
    let encoder = load_encoder(settings, BackendKind::Auto, progress)?;
    Engine::start(encoder, HeadSet::default(), BatchLimits::from_settings(&settings.engine), metrics)
}
