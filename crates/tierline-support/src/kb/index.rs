//! The knowledge-base index: tantivy (BM25) and a dense passage matrix, built into a new
//! generation folder and switched in by an atomic rename of the `CURRENT` pointer, so readers see
//! the old index or the new one, never half, and a crash mid-build leaves the old one serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED, STORED};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{doc, Index, IndexReader};

use super::article::{Article, Audience};
use super::passage::{self, Passage};
use tierline_infer::heads::EncoderRef;
use tierline_infer::kernels;

const TOKENIZER: &str = "tierline_en";
const POINTER: &str = "CURRENT";
/// Reciprocal rank fusion constant (the usual 60).
const RRF_K: f32 = 60.0;
/// Share of the fused score given to the dense ranking (0.5 = plain RRF). Chosen on the sample
/// KB's own queries (index/queries.jsonl, best nDCG@10) with `tierline eval retrieval --dense-weights ...`.
pub const HYBRID_DENSE_WEIGHT: f32 = DENSE_WEIGHT_DEFAULT;
const DENSE_WEIGHT_DEFAULT: f32 = 0.8;
/// Extra int8 candidates rescored in f32 beyond the k asked for.
const RESCORE_MARGIN: usize = 32;

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    encoder: EncoderRef,
    passages: usize,
    dims: usize,
}

#[derive(Clone, Copy)]
struct Fields {
    passage: Field,
    text: Field,
}

pub struct KbIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    passages: Vec<Passage>,
    /// `[passages, dims]`, L2-normalised rows (cosine = dot product).
    dense: Vec<f32>,
    /// The same rows in int8 with one scale each: the full scan reads 4x fewer bytes (it is
    /// memory-bound), and the best candidates are then rescored exactly in f32.
    dense_i8: Vec<i8>,
    dense_scales: Vec<f32>,
    dims: usize,
    generation: PathBuf,
    articles: Vec<Article>,
    encoder: EncoderRef,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Bm25,
    Dense,
    Hybrid,
}

/// Which passages may be returned.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `None`: every audience (agents); `Some(Public)` for anything a customer sees.
    pub audience: Option<Audience>,
    pub product: Option<String>,
    pub tag: Option<String>,
}

impl Filter {
    pub fn customer() -> Self {
        Self { audience: Some(Audience::Public), ..Default::default() }
    }

    fn allows(&self, passage: &Passage) -> bool {
        self.audience.is_none_or(|a| a == passage.audience)
            && self.product.as_ref().is_none_or(|p| passage.product.as_ref() == Some(p))
            && self.tag.as_ref().is_none_or(|t| passage.tags.contains(t))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub passage: usize,
    /// The fused score for hybrid, else the mode's own score.
    pub score: f32,
    /// Cosine between the query and the passage.
    pub similarity: f32,
    pub bm25_rank: Option<usize>,
    pub dense_rank: Option<usize>,
}

fn register_tokenizer(index: &Index) {
    let analyzer = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(StopWordFilter::new(Language::English).expect("tantivy ships English stop words"))
        .filter(Stemmer::new(Language::English))
        .build();
    index.tokenizers().register(TOKENIZER, analyzer);
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let indexing = TextFieldIndexing::default()
        .set_tokenizer(TOKENIZER)
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let passage = builder.add_u64_field("passage", INDEXED | STORED | FAST);
    let text = builder.add_text_field("text", TextOptions::default().set_indexing_options(indexing));
    (builder.build(), Fields { passage, text })
}

/// Builds a new generation under `root` from `articles` and switches `CURRENT` to it.
/// `embed` returns L2-normalised embeddings `[texts, dims]`; passages whose text did not change
/// since the current generation reuse their embedding.
pub fn build(
    root: &Path,
    articles: &[Article],
    encoder: &EncoderRef,
    embed: impl Fn(&[String]) -> anyhow::Result<Vec<f32>>,
) -> anyhow::Result<KbIndex> {
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let passages: Vec<Passage> = articles.iter().flat_map(passage::split).collect();
    let texts: Vec<String> = passages.iter().map(Passage::indexed_text).collect();
    let dims = encoder.dimensions;

    // Vectors from another encoder (or revision) live in another space: never reuse them.
    let previous = KbIndex::open(root).ok().filter(|old| old.dims == dims && &old.encoder == encoder);
    let reusable: HashMap<String, &[f32]> = previous
        .as_ref()
        .map(|old| {
            old.passages
                .iter()
                .enumerate()
                .map(|(i, p)| (p.indexed_text(), &old.dense[i * dims..(i + 1) * dims]))
                .collect()
        })
        .unwrap_or_default();
    let missing: Vec<String> = texts.iter().filter(|t| !reusable.contains_key(*t)).cloned().collect();
    let fresh = if missing.is_empty() { Vec::new() } else { embed(&missing)? };
    let fresh: HashMap<&String, &[f32]> = missing.iter().zip(fresh.chunks_exact(dims)).collect();
    let mut dense = Vec::with_capacity(texts.len() * dims);
    for text in &texts {
        dense.extend_from_slice(
            reusable.get(text).copied().or_else(|| fresh.get(text).copied()).context("an embedding is missing")?,
        );
    }
    tracing::info!(
        passages = passages.len(),
        embedded = missing.len(),
        reused = passages.len() - missing.len(),
        "knowledge base embeddings"
    );

    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let generation = root.join(format!("gen-{stamp}"));
    std::fs::create_dir_all(generation.join("tantivy"))?;
    let (schema, fields) = schema();
    let index = Index::create_in_dir(generation.join("tantivy"), schema)?;
    register_tokenizer(&index);
    let mut writer: tantivy::IndexWriter = index.writer(32 * 1024 * 1024)?;
    for (i, text) in texts.iter().enumerate() {
        writer.add_document(doc!(fields.passage => i as u64, fields.text => text.as_str()))?;
    }
    writer.commit()?;
    std::fs::write(generation.join("passages.json"), serde_json::to_vec(&passages)?)?;
    std::fs::write(generation.join("articles.json"), serde_json::to_vec(articles)?)?;
    let bytes: Vec<u8> = dense.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(generation.join("dense.f32"), bytes)?;
    std::fs::write(
        generation.join("meta.json"),
        serde_json::to_vec_pretty(&Meta { encoder: encoder.clone(), passages: passages.len(), dims })?,
    )?;

    // The switch: write the pointer beside, then rename over the old one (atomic on POSIX).
    let name = generation.file_name().expect("generation has a name").to_string_lossy().to_string();
    let pointer_tmp = root.join(format!("{POINTER}.tmp"));
    std::fs::write(&pointer_tmp, &name)?;
    std::fs::rename(&pointer_tmp, root.join(POINTER))?;
    remove_old_generations(root, &name, previous.as_ref().map(|p| &p.generation));
    KbIndex::open(root)
}

/// Removes every generation but the current one, the one before it included: after an erasure no
/// folder may keep the removed articles. A search still running on the previous generation keeps
/// its open files (they are unlinked, not truncated).
pub fn remove_previous_generations(root: &Path) -> anyhow::Result<()> {
    let current = std::fs::read_to_string(root.join(POINTER))?;
    remove_old_generations(root, current.trim(), None);
    Ok(())
}

/// Keeps the current generation and the one before it (a reader may still hold it).
fn remove_old_generations(root: &Path, current: &str, previous: Option<&PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("gen-") && name != current && Some(&path) != previous {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

impl KbIndex {
    /// Opens the generation `CURRENT` points to.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        let name = std::fs::read_to_string(root.join(POINTER))
            .with_context(|| format!("no knowledge-base index in {}", root.display()))?;
        let generation = root.join(name.trim());
        let meta: Meta = serde_json::from_slice(&std::fs::read(generation.join("meta.json"))?)?;
        let passages: Vec<Passage> = serde_json::from_slice(&std::fs::read(generation.join("passages.json"))?)?;
        let articles: Vec<Article> = serde_json::from_slice(&std::fs::read(generation.join("articles.json"))?)?;
        let bytes = std::fs::read(generation.join("dense.f32"))?;
        anyhow::ensure!(
            bytes.len() == meta.passages * meta.dims * 4 && passages.len() == meta.passages,
            "index {} is inconsistent",
            generation.display()
        );
        let dense: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let mut dense_i8 = vec![0i8; dense.len()];
        let dense_scales = dense
            .chunks_exact(meta.dims.max(1))
            .zip(dense_i8.chunks_exact_mut(meta.dims.max(1)))
            .map(|(row, out)| kernels::quantize_i8(row, out))
            .collect();
        let index = Index::open_in_dir(generation.join("tantivy"))?;
        register_tokenizer(&index);
        let (_, fields) = schema();
        let reader = index.reader()?;
        Ok(Self {
            index,
            reader,
            fields,
            passages,
            dense,
            dense_i8,
            dense_scales,
            dims: meta.dims,
            generation,
            articles,
            encoder: meta.encoder,
        })
    }

    /// The articles this generation was built from.
    pub fn articles(&self) -> &[Article] {
        &self.articles
    }

    pub fn article(&self, id: &str) -> Option<&Article> {
        self.articles.iter().find(|a| a.id == id)
    }

    pub fn passages(&self) -> &[Passage] {
        &self.passages
    }

    /// The whole section a passage belongs to (every passage of its article under the same
    /// heading, in order), cut at a paragraph to at most `max_chars`. An article's introduction
    /// is followed by its first section, where the steps usually are.
    pub fn section_text(&self, index: usize, max_chars: usize) -> String {
        let passage = &self.passages[index];
        let same = |p: &Passage| p.article_id == passage.article_id && p.heading == passage.heading;
        let mut start = index;
        while start > 0 && same(&self.passages[start - 1]) {
            start -= 1;
        }
        let mut end = index + 1;
        while end < self.passages.len() && same(&self.passages[end]) {
            end += 1;
        }
        let mut parts: Vec<String> = self.passages[start..end].iter().map(|p| p.text.clone()).collect();
        if let Some(heading) = &passage.heading {
            parts.insert(0, heading.clone());
        } else if let Some(next) = self.passages.get(end).filter(|p| p.article_id == passage.article_id) {
            let heading = next.heading.clone();
            let mut follow = end;
            while follow < self.passages.len()
                && self.passages[follow].article_id == passage.article_id
                && self.passages[follow].heading == heading
            {
                if follow == end {
                    parts.extend(heading.clone());
                }
                parts.push(self.passages[follow].text.clone());
                follow += 1;
            }
        }
        cut_at_paragraph(&parts.join("\n\n"), max_chars)
    }

    pub fn passage(&self, index: usize) -> &Passage {
        &self.passages[index]
    }

    pub fn similarity(&self, passage: usize, query: &[f32]) -> f32 {
        kernels::dot(&self.dense[passage * self.dims..(passage + 1) * self.dims], query)
    }

    fn bm25(&self, query: &str, k: usize, filter: &Filter) -> anyhow::Result<Vec<(usize, f32)>> {
        let searcher = self.reader.searcher();
        let parser = QueryParser::for_index(&self.index, vec![self.fields.text]);
        let (parsed, _) = parser.parse_query_lenient(query);
        // Filtered after retrieval: a margin for filtered-out passages (a smaller top-k lets
        // block-max WAND skip more documents).
        let top = searcher.search(&parsed, &TopDocs::with_limit(k + k / 4 + 10).order_by_score())?;
        let mut hits = Vec::new();
        // Passage ids come from the fast-field column: no stored document is decompressed.
        let mut columns = HashMap::new();
        for (score, address) in top {
            let column = match columns.entry(address.segment_ord) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(searcher.segment_reader(address.segment_ord).fast_fields().u64("passage")?)
                }
            };
            let Some(passage) = column.first(address.doc_id) else { continue };
            let passage = passage as usize;
            if filter.allows(&self.passages[passage]) {
                hits.push((passage, score));
            }
            if hits.len() == k {
                break;
            }
        }
        Ok(hits)
    }

    /// Exact dot-product search over every passage (see ARCHITECTURE.md for when an ANN index
    /// would take over): an int8 scan picks candidates, f32 rescoring orders them exactly.
    fn dense_search(&self, query: &[f32], k: usize, filter: &Filter) -> Vec<(usize, f32)> {
        let dims = self.dims;
        let mut query_i8 = vec![0i8; dims];
        let query_scale = kernels::quantize_i8(query, &mut query_i8);
        let mut dots = vec![0i32; self.passages.len()];
        kernels::dot_i8_rows(&self.dense_i8, &query_i8, &mut dots);
        let mut scored: Vec<(usize, f32)> = dots
            .iter()
            .enumerate()
            .filter(|&(i, _)| filter.allows(&self.passages[i]))
            .map(|(i, &dot)| (i, dot as f32 * self.dense_scales[i] * query_scale))
            .collect();
        // Quantisation moves scores by ~1e-3: a margin of candidates keeps the exact top k.
        let candidates = (k + RESCORE_MARGIN).min(scored.len());
        if candidates == 0 {
            return Vec::new();
        }
        scored.select_nth_unstable_by(candidates - 1, |a, b| b.1.total_cmp(&a.1));
        scored.truncate(candidates);
        for (passage, score) in &mut scored {
            *score = self.similarity(*passage, query);
        }
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(k);
        scored
    }

    /// `query_embedding` must be the normalised embedding of `query` (same encoder).
    pub fn search(
        &self,
        query: &str,
        query_embedding: &[f32],
        mode: Mode,
        k: usize,
        filter: &Filter,
    ) -> anyhow::Result<Vec<Hit>> {
        self.search_weighted(query, query_embedding, mode, k, filter, HYBRID_DENSE_WEIGHT)
    }

    /// As `search`, with the hybrid fusion's dense weight given (for tuning and evaluation).
    pub fn search_weighted(
        &self,
        query: &str,
        query_embedding: &[f32],
        mode: Mode,
        k: usize,
        filter: &Filter,
        dense_weight: f32,
    ) -> anyhow::Result<Vec<Hit>> {
        let depth = k.max(50);
        // Hybrid runs the two retrievers one after the other: a thread per query cost more in
        // the tail (p99) than the overlap saved, and a busy server has no idle core to give.
        let bm25 = if mode == Mode::Dense { Vec::new() } else { self.bm25(query, depth, filter)? };
        let dense = if mode == Mode::Bm25 { Vec::new() } else { self.dense_search(query_embedding, depth, filter) };
        let mut fused: HashMap<usize, Hit> = HashMap::new();
        // A single-mode search keeps that mode's raw score; hybrid sums weighted reciprocal ranks.
        let lists = [(&bm25, Mode::Bm25, 1.0 - dense_weight), (&dense, Mode::Dense, dense_weight)];
        for (list, list_mode, weight) in lists {
            for (rank, &(passage, score)) in list.iter().enumerate() {
                let hit = fused.entry(passage).or_insert(Hit {
                    passage,
                    score: 0.0,
                    similarity: 0.0,
                    bm25_rank: None,
                    dense_rank: None,
                });
                match list_mode {
                    Mode::Bm25 => hit.bm25_rank = Some(rank + 1),
                    _ => hit.dense_rank = Some(rank + 1),
                }
                hit.score += if mode == list_mode { score } else { 2.0 * weight / (RRF_K + rank as f32 + 1.0) };
            }
        }
        let mut hits: Vec<Hit> = fused.into_values().collect();
        for hit in &mut hits {
            hit.similarity = self.similarity(hit.passage, query_embedding);
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.passage.cmp(&b.passage)));
        hits.truncate(k);
        Ok(hits)
    }

    /// Highlighted snippet (HTML `<b>` around query terms) of a passage, from tantivy.
    pub fn snippet(&self, query: &str, passage: usize) -> String {
        let searcher = self.reader.searcher();
        let parser = QueryParser::for_index(&self.index, vec![self.fields.text]);
        let (parsed, _) = parser.parse_query_lenient(query);
        match SnippetGenerator::create(&searcher, &*parsed, self.fields.text) {
            Ok(mut generator) => {
                generator.set_max_num_chars(240);
                let snippet = generator.snippet(&self.passages[passage].text);
                if snippet.fragment().is_empty() {
                    self.passages[passage].text.chars().take(240).collect()
                } else {
                    snippet.to_html()
                }
            }
            Err(_) => self.passages[passage].text.chars().take(240).collect(),
        }
    }
}

/// `text` cut at the last paragraph (else sentence) break within `max_chars`, marked when cut.
fn cut_at_paragraph(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let limit = text.char_indices().nth(max_chars).map_or(text.len(), |(i, _)| i);
    let head = &text[..limit];
    let cut =
        head.rfind("\n\n").or_else(|| head.rfind("\n")).or_else(|| head.rfind(". ").map(|i| i + 1)).unwrap_or(limit);
    format!("{}\n\n(...)", head[..cut].trim_end())
}
