//! Shared server state: the engine once the model is loaded, limits, metrics.

use std::sync::{Arc, OnceLock, RwLock};
use tierline_infer::sync::RwLockExt;

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, Opts, Registry};

use crate::config::ServerConfig;
use tierline_infer::classify::Classifier;
use tierline_infer::Engine;
use tierline_support::conversation::{Models, Support};
use tierline_support::kb::KnowledgeBase;
use tierline_support::settings::AuthMode;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    classifier: OnceLock<Classifier>,
    kb: OnceLock<Arc<KnowledgeBase>>,
    load_error: RwLock<Option<String>>,
    support: Arc<Support>,
    auth: AuthMode,
    public_chat: bool,
    limits: ServerConfig,
    registry: Registry,
    http_seconds: HistogramVec,
    support_gauges: GaugeVec,
    /// Open event streams are bounded: each holds a connection and a broadcast receiver.
    streams: Arc<tokio::sync::Semaphore>,
}

/// Event streams open at once, at most.
const MAX_STREAMS: usize = 1024;

impl AppState {
    pub fn new(
        limits: ServerConfig,
        support: Arc<Support>,
        auth: AuthMode,
        public_chat: bool,
        registry: Registry,
    ) -> anyhow::Result<Self> {
        let http_seconds = HistogramVec::new(
            HistogramOpts::new("tierline_http_request_seconds", "HTTP request latency by route and status")
                .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16)?),
            &["route", "status"],
        )?;
        registry.register(Box::new(http_seconds.clone()))?;
        let support_gauges = GaugeVec::new(
            Opts::new("tierline_support", "Support metrics over the last 7 days (see GET /v1/metrics/support)"),
            &["metric", "queue"],
        )?;
        registry.register(Box::new(support_gauges.clone()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                classifier: OnceLock::new(),
                kb: OnceLock::new(),
                load_error: RwLock::new(None),
                support,
                auth,
                public_chat,
                limits,
                registry,
                http_seconds,
                support_gauges,
                streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
            }),
        })
    }

    pub fn engine(&self) -> Option<&Engine> {
        self.classifier().map(Classifier::engine)
    }

    pub fn classifier(&self) -> Option<&Classifier> {
        self.inner.classifier.get()
    }

    pub fn set_classifier(&self, classifier: Classifier) {
        if self.inner.classifier.set(classifier).is_err() {
            tracing::warn!("models already loaded; ignoring the second set");
        }
    }

    pub fn kb(&self) -> Option<&Arc<KnowledgeBase>> {
        self.inner.kb.get()
    }

    pub fn set_kb(&self, kb: KnowledgeBase) {
        if self.inner.kb.set(Arc::new(kb)).is_err() {
            tracing::warn!("knowledge base already set; ignoring the second one");
        }
    }

    pub fn support(&self) -> &Arc<Support> {
        &self.inner.support
    }

    pub fn auth(&self) -> AuthMode {
        self.inner.auth
    }

    /// Whether a customer's browser may start a chat without a key.
    pub fn public_chat(&self) -> bool {
        self.inner.public_chat
    }

    /// The models, once loaded.
    pub fn models(&self) -> Option<Models<'_>> {
        self.classifier().map(|classifier| Models { classifier, kb: self.kb() })
    }

    pub fn set_load_error(&self, error: String) {
        *self.inner.load_error.write_unpoisoned() = Some(error);
    }

    pub fn load_error(&self) -> Option<String> {
        self.inner.load_error.read_unpoisoned().clone()
    }

    /// How long a request may wait for inference before it is answered 503.
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.limits().request_timeout_ms)
    }

    pub fn limits(&self) -> &ServerConfig {
        &self.inner.limits
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub fn support_gauges(&self) -> &GaugeVec {
        &self.inner.support_gauges
    }

    /// A place for one more event stream, held while it is open; `None` when all are taken.
    pub fn stream_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.streams.clone().try_acquire_owned().ok()
    }

    pub fn http_seconds(&self) -> &HistogramVec {
        &self.inner.http_seconds
    }
}
