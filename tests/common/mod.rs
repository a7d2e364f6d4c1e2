//! Shared helpers: configuration rooted at the crate, the real encoder loaded once per test binary.

#![allow(dead_code)]

pub mod browser;
pub mod postgres;
pub mod server;

use std::path::PathBuf;
use std::sync::OnceLock;

use tierline::config::Config;
use tierline::inference::{self, BackendKind, Encoder};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Defaults, with paths anchored at the crate root so every test shares one model cache
/// (`data/models`, the same one `cargo run -- serve` uses).
pub fn config() -> Config {
    let mut config = Config { data_dir: root().join("data"), ..Config::default() };
    config.models.manifest = root().join("models/models.toml");
    config.models.local_dir = root().join("models/local");
    config.engine.device = "cpu".into();
    config.kb.source = root().join("index/kb");
    config.kb.answerability = root().join("models/answerability.json");
    // Each test process gets its own index folder: concurrent servers never share generations.
    config.kb.index_dir = std::env::temp_dir().join(format!("tierline-test-kb-{}-{}", std::process::id(), unique()));
    // ... and its own database (absolute paths win over data_dir).
    config.support.database = test_database();
    config.support.policy = root().join("models/policy.toml");
    // ... and its own promoted head versions, so no test serves another's.
    config.models.head_versions =
        std::env::temp_dir().join(format!("tierline-test-heads-{}-{}", std::process::id(), unique()));
    config
}

/// The store tests run against: a SQLite file of their own, or, with
/// `STORE_UNDER_TEST=postgres`, a fresh database on this binary's PostgreSQL cluster (so the
/// same conversation and metrics tests check both backends: `.ci/run` runs them twice).
fn test_database() -> PathBuf {
    if std::env::var("STORE_UNDER_TEST").is_ok_and(|v| v == "postgres") {
        let cluster = postgres::shared().expect("STORE_UNDER_TEST=postgres needs PostgreSQL installed");
        return PathBuf::from(cluster.database());
    }
    std::env::temp_dir().join(format!("tierline-test-db-{}-{}/tierline.db", std::process::id(), unique()))
}

/// One failing feature (CSV export) phrased six ways: the spike the alert tests raise.
pub const CSV_SPIKE: [&str; 6] = [
    "CSV export fails with an error 500",
    "The export to CSV button does nothing",
    "I can't export my report as CSV anymore",
    "CSV export is broken since this morning",
    "Exporting data to CSV keeps failing",
    "Report export to CSV stopped working, is there an outage?",
];

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub fn encoder(backend: BackendKind) -> &'static Encoder {
    static PACKED: OnceLock<Encoder> = OnceLock::new();
    static GENERIC: OnceLock<Encoder> = OnceLock::new();
    let cell = match backend {
        BackendKind::Generic => &GENERIC,
        _ => &PACKED,
    };
    cell.get_or_init(|| {
        inference::load_encoder(&config().infer(), backend, false)
            .expect("the encoder loads (pulled through the configured sources)")
    })
}

pub fn embed(encoder: &Encoder, texts: &[&str]) -> Vec<Vec<f32>> {
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| encoder.tokenize(t).unwrap().ids).collect();
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    encoder.embed(&refs).unwrap().to_vec2::<f32>().unwrap()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// A WordPiece tokenizer.json over 16 words (ids 0-15: [PAD] [UNK] [CLS] [SEP] ...), for tiny
/// random checkpoints written by tests.
pub fn write_tiny_tokenizer(dir: &std::path::Path) {
    use tokenizers::models::wordpiece::WordPiece;
    let words = [
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "my", "order", "is", "late", "thank", "you", "the", "app", "crash", "##es",
        "!", "?",
    ];
    std::fs::write(dir.join("vocab.txt"), words.join("\n")).unwrap();
    let model =
        WordPiece::from_file(dir.join("vocab.txt").to_str().unwrap()).unk_token("[UNK]".into()).build().unwrap();
    let mut tokenizer = tokenizers::Tokenizer::new(model);
    tokenizer.with_normalizer(Some(tokenizers::normalizers::bert::BertNormalizer::default())).unwrap();
    tokenizer.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::bert::BertPreTokenizer));
    tokenizer.with_post_processor(Some(
        tokenizers::processors::template::TemplateProcessing::builder()
            .try_single("[CLS] $A [SEP]")
            .unwrap()
            .special_tokens(vec![("[CLS]", 2), ("[SEP]", 3)])
            .build()
            .unwrap(),
    ));
    tokenizer.save(dir.join("tokenizer.json"), false).unwrap();
}

/// A tiny deterministic generator (xorshift64) for simulated traffic.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}
