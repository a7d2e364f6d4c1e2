//! Inference: model resolution, the BERT-family encoder, heads and the batched engine.
//! Knows nothing of tickets, tiers or HTTP.

pub mod checkpoint;
pub mod device;
pub mod encoder;
pub mod engine;
pub mod head_versions;
pub mod heads;
pub mod kernels;
pub mod layered_bert;
pub mod manifest;
pub mod packed_bert;
pub mod source;

pub use device::DeviceRequest;
pub use encoder::{BackendKind, Encoder, EncoderInfo, Pooling, Precision};
pub use engine::{BatchLimits, Embedded, Engine, EngineError, EngineMetrics};
pub use heads::{Head, HeadSet};
pub use manifest::{Manifest, ModelKind, ModelSpec};
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
pub fn load_encoder(config: &crate::config::Config, backend: BackendKind, progress: bool) -> anyhow::Result<Encoder> {
    let manifest = Manifest::load(&config.models.manifest)?;
    let spec = manifest.role("encoder")?;
    let resolved = Resolver::from_config(config).with_progress(progress).resolve("encoder", spec)?;
    let device = DeviceRequest::parse(&config.engine.device).map_err(anyhow::Error::msg)?.open()?;
    init_threads(config.engine.threads);
    Encoder::load(&resolved, &device, backend, rayon::current_num_threads(), config.engine.precision)
}
