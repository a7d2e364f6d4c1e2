//! Knowledge-base search latency on a synthetic 10,000-article KB, excluding the encoder pass
//! (embeddings are deterministic pseudo-random unit vectors), and index build throughput.
//! Run: `cargo bench --bench kb`. Prints p50/p99 per mode before criterion's own report.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tierline::inference::heads::EncoderRef;
use tierline::kb::{index, Article, Audience, Filter, KbIndex, Mode};

const DIMS: usize = 384;
const WORDS: &[&str] = &[
    "invoice",
    "billing",
    "refund",
    "password",
    "reset",
    "login",
    "sso",
    "saml",
    "okta",
    "webhook",
    "signature",
    "retry",
    "export",
    "csv",
    "schedule",
    "api",
    "key",
    "rotate",
    "rate",
    "limit",
    "slack",
    "salesforce",
    "sync",
    "zendesk",
    "jira",
    "workspace",
    "owner",
    "seat",
    "plan",
    "upgrade",
    "downgrade",
    "trial",
    "error",
    "timeout",
    "dashboard",
    "report",
    "permission",
    "role",
    "admin",
    "audit",
    "log",
    "retention",
    "gdpr",
    "delete",
    "account",
    "mobile",
    "notification",
    "import",
    "integration",
    "token",
    "certificate",
    "domain",
    "email",
    "payment",
    "card",
    "tax",
    "vat",
    "credit",
];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit_vector(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..DIMS).map(|_| (self.next() % 2001) as f32 / 1000.0 - 1.0).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }
}

/// How the words of the synthetic articles and queries are drawn.
#[derive(Debug, Clone, Copy)]
enum Vocabulary {
    /// The 58 support words, uniformly: every query term is in most passages, the worst case
    /// for BM25 (nothing for block-max WAND to skip).
    Narrow,
    /// 5,000 words with Zipf frequencies (s = 1.07, as measured on English text), the support
    /// words the most frequent: how help-center text is distributed.
    Zipf,
}

const ZIPF_WORDS: usize = 5_000;

/// Cumulative Zipf weights over `ZIPF_WORDS` ranks.
fn zipf_table() -> &'static [f64] {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut total = 0.0;
        (1..=ZIPF_WORDS)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(1.07);
                total
            })
            .collect()
    })
}

/// The word of a Zipf rank: the support words first, then made-up words ("w123").
fn zipf_word(rank: usize) -> String {
    WORDS.get(rank).map_or_else(|| format!("w{rank}"), |word| word.to_string())
}

fn words_from(rng: &mut Rng, vocabulary: Vocabulary, count: usize) -> String {
    let pick = |rng: &mut Rng| match vocabulary {
        Vocabulary::Narrow => WORDS[rng.next() as usize % WORDS.len()].to_string(),
        Vocabulary::Zipf => {
            let table = zipf_table();
            let target = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * table[table.len() - 1];
            zipf_word(table.partition_point(|&c| c < target))
        }
    };
    (0..count).map(|_| pick(rng)).collect::<Vec<_>>().join(" ")
}

fn articles_of(count: usize, vocabulary: Vocabulary) -> Vec<Article> {
    let mut rng = Rng(42);
    let words = |rng: &mut Rng, count| words_from(rng, vocabulary, count);
    (0..count)
        .map(|i| Article {
            id: format!("article-{i}"),
            title: words(&mut rng, 5),
            url: Some(format!("https://help.example.com/{i}")),
            tags: vec![WORDS[i % WORDS.len()].to_string()],
            product: None,
            audience: if i % 10 == 0 { Audience::Internal } else { Audience::Public },
            updated: None,
            body: format!(
                "{}\n\n## Steps\n{}\n\n## Troubleshooting\n{}",
                words(&mut rng, 60),
                words(&mut rng, 80),
                words(&mut rng, 70)
            ),
        })
        .collect()
}

fn build(root: &std::path::Path, articles: &[Article]) -> KbIndex {
    let encoder = EncoderRef { id: "synthetic".into(), revision: "bench".into(), dimensions: DIMS };
    // Each passage's vector is seeded by its text (FNV-1a), so the closure needs no state.
    let vector = |text: &String| {
        let seed = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        Rng(seed | 1).unit_vector()
    };
    index::build(root, articles, &encoder, |texts| Ok(texts.iter().flat_map(vector).collect())).expect("build")
}

fn search_latency(c: &mut Criterion) {
    for vocabulary in [Vocabulary::Narrow, Vocabulary::Zipf] {
        let dir = tempfile::tempdir().unwrap();
        let kb = build(dir.path(), &articles_of(10_000, vocabulary));
        let mut rng = Rng(99);
        let queries: Vec<(String, Vec<f32>)> =
            (0..200).map(|_| (words_from(&mut rng, vocabulary, 6), rng.unit_vector())).collect();
        let filter = Filter::customer();
        eprintln!("synthetic KB ({vocabulary:?} vocabulary): 10,000 articles, {} passages", kb.passages().len());
        for mode in [Mode::Bm25, Mode::Dense, Mode::Hybrid] {
            let mut times: Vec<f64> = queries
                .iter()
                .cycle()
                .take(1000)
                .map(|(q, e)| {
                    let started = Instant::now();
                    std::hint::black_box(kb.search(q, e, mode, 5, &filter).unwrap());
                    started.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            times.sort_by(f64::total_cmp);
            eprintln!(
                "{vocabulary:?} {mode:?}: p50 {:.3} ms, p99 {:.3} ms (1000 queries, top 5, customer filter)",
                times[499], times[989]
            );
        }
        let mut group = c.benchmark_group(format!("kb_search_10k_{vocabulary:?}").to_lowercase());
        group.sample_size(50).measurement_time(Duration::from_secs(4));
        for mode in [Mode::Bm25, Mode::Dense, Mode::Hybrid] {
            let mut i = 0;
            group.bench_function(format!("{mode:?}").to_lowercase(), |b| {
                b.iter(|| {
                    let (q, e) = &queries[i % queries.len()];
                    i += 1;
                    kb.search(q, e, mode, 5, &filter).unwrap()
                })
            });
        }
        group.finish();
    }
}

fn build_throughput(c: &mut Criterion) {
    let corpus = articles_of(1_000, Vocabulary::Narrow);
    let mut group = c.benchmark_group("kb_build_1k_articles");
    group.sample_size(10).throughput(criterion::Throughput::Elements(corpus.len() as u64));
    group.bench_function("tantivy_and_dense_no_encoder", |b| {
        b.iter_with_setup(|| tempfile::tempdir().unwrap(), |dir| build(dir.path(), &corpus))
    });
    group.finish();
}

criterion_group!(benches, search_latency, build_throughput);
criterion_main!(benches);
