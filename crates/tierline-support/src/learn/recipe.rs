//! A head's recipe (`models/heads/<name>/recipe.toml`): where its data comes from, how source
//! labels map onto the head's labels, the architecture and the training settings. One recipe,
//! one command: `tierline train --recipe models/heads/<name>/recipe.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use super::dataset::{self, LabeledText, SeededRng};
use tierline_infer::heads::HeadInput;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    pub task: String,
    /// The head's labels, in output order.
    pub labels: Vec<String>,
    #[serde(default)]
    pub multi_label: bool,
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// What the head reads from the encoder pass (`embedding` or `layer-pools`).
    #[serde(default)]
    pub input: HeadInput,
    #[serde(default)]
    pub train: TrainSettings,
    pub sources: Vec<Source>,
    /// Extra evaluation sets from other sources, never trained on; reported in the card.
    #[serde(default)]
    pub evaluations: Vec<Source>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    pub epochs: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    /// Epochs without improvement on dev before stopping.
    pub patience: usize,
    pub seed: u64,
    pub dev_fraction: f64,
    pub test_fraction: f64,
    /// Weight classes by inverse frequency (single-label) / positives by neg:pos (multi-label).
    pub class_weights: bool,
    /// Members trained with seeds `seed, seed+1, ...` and averaged. Averaged logits of heads
    /// with at most one hidden layer are exactly one wider head, so serving costs one head.
    pub ensemble: usize,
    /// Single-label: shift each label's logit (fitted on dev) to maximise macro-F1 rather than
    /// accuracy, so minority labels are not drowned by the majority.
    pub balance_on_dev: bool,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            epochs: 60,
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            batch_size: 128,
            patience: 6,
            seed: 13,
            dev_fraction: 0.1,
            test_fraction: 0.15,
            class_weights: true,
            ensemble: 1,
            balance_on_dev: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Short name, reported with metrics.
    pub name: String,
    /// Data file: relative to `--data` (shared data), or to the recipe's folder when `local`.
    pub file: PathBuf,
    #[serde(default)]
    pub local: bool,
    #[serde(default = "default_text")]
    pub text: String,
    #[serde(default = "default_label")]
    pub label: String,
    /// Source label -> head label (or several: `["frustrated", "anger"]`); `"skip"` drops the
    /// row. Without a map, labels pass through. Rows without any label are kept as all-negative
    /// examples of a multi-label head.
    #[serde(default)]
    pub map: BTreeMap<String, Targets>,
    /// A TOML file (relative to the recipe) holding the map at `[datasets.<mapping_key>.labels]`.
    #[serde(default)]
    pub mapping_file: Option<PathBuf>,
    #[serde(default)]
    pub mapping_key: Option<String>,
    /// Multi-label: keep only these source labels (others are ignored, not errors).
    #[serde(default)]
    pub keep_only_mapped: bool,
    /// Random subsample of at most this many rows (seeded).
    #[serde(default)]
    pub sample: Option<usize>,
    /// Extra training data only: none of it goes to dev or test, and the other sources split
    /// exactly as they would without it, so held-out figures stay comparable.
    #[serde(default)]
    pub train_only: bool,
    /// A field put before the text on its own line when present (an e-mail's subject).
    #[serde(default)]
    pub subject: Option<String>,
    /// A file (relative to the recipe) of row ids, one per line (`#` comments), left out: a
    /// held-out evaluation set that training must never see.
    #[serde(default)]
    pub exclude_ids: Option<PathBuf>,
}

/// One head label, or several for one source label.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Targets {
    One(String),
    Many(Vec<String>),
}

impl Targets {
    fn labels(&self) -> Vec<&str> {
        match self {
            Targets::One(label) => vec![label.as_str()],
            Targets::Many(labels) => labels.iter().map(String::as_str).collect(),
        }
    }
}

fn default_text() -> String {
    "text".into()
}
fn default_label() -> String {
    "label".into()
}

/// Rows of one source, labels mapped to head label indices.
#[derive(Debug, Clone)]
pub struct Example {
    pub text: String,
    /// Indices into `Recipe::labels`: exactly one for single-label heads.
    pub labels: Vec<usize>,
    pub source: String,
}

impl Recipe {
    pub fn load(path: &Path) -> anyhow::Result<(Self, PathBuf)> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read recipe {}", path.display()))?;
        let recipe: Recipe = toml::from_str(&text).with_context(|| format!("invalid recipe {}", path.display()))?;
        if recipe.labels.len() < 2 && !recipe.multi_label {
            bail!("{}: a single-label head needs at least two labels", path.display());
        }
        Ok((recipe, path.parent().unwrap_or(Path::new(".")).to_path_buf()))
    }

    /// Loads a source's rows with labels mapped onto this head's labels.
    pub fn examples(&self, source: &Source, recipe_dir: &Path, data_dir: &Path) -> anyhow::Result<Vec<Example>> {
        let path = if source.local { recipe_dir.join(&source.file) } else { data_dir.join(&source.file) };
        let mut rows = dataset::load_with_subject(&path, &source.text, &source.label, source.subject.as_deref())?;
        if let Some(file) = &source.exclude_ids {
            let excluded = read_ids(&recipe_dir.join(file))?;
            rows.retain(|row| row.id.as_ref().is_none_or(|id| !excluded.contains(id)));
        }
        let map = self.source_map(source, recipe_dir)?;
        let index: BTreeMap<&str, usize> = self.labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
        let mut examples = Vec::with_capacity(rows.len());
        for LabeledText { text, labels, .. } in rows {
            let mut mapped = Vec::new();
            let mut skip = false;
            for label in &labels {
                let targets = match map.get(label) {
                    Some(targets) => targets.labels(),
                    None if source.keep_only_mapped => continue,
                    None if map.is_empty() => vec![label.as_str()],
                    None => bail!("{}: source label `{label}` is not in the map (map it, or to \"skip\")", source.name),
                };
                for target in targets {
                    if target == "skip" {
                        skip = true;
                        continue;
                    }
                    let Some(&i) = index.get(target) else {
                        bail!("{}: label `{target}` is not one of the head's labels {:?}", source.name, self.labels);
                    };
                    if !mapped.contains(&i) {
                        mapped.push(i);
                    }
                }
            }
            if skip || text.trim().is_empty() || (!self.multi_label && mapped.len() != 1) {
                continue;
            }
            examples.push(Example { text, labels: mapped, source: source.name.clone() });
        }
        if let Some(limit) = source.sample {
            let mut rng = SeededRng::new(self.train.seed ^ 0x5A17);
            rng.shuffle(&mut examples);
            examples.truncate(limit);
        }
        Ok(examples)
    }

    fn source_map(&self, source: &Source, recipe_dir: &Path) -> anyhow::Result<BTreeMap<String, Targets>> {
        let mut map = source.map.clone();
        if let Some(file) = &source.mapping_file {
            let key = source.mapping_key.as_deref().context("`mapping_file` needs `mapping_key`")?;
            let path = recipe_dir.join(file);
            let table: toml::Table = toml::from_str(
                &std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?,
            )?;
            let labels = table
                .get("datasets")
                .and_then(|d| d.get(key))
                .and_then(|d| d.get("labels"))
                .and_then(|l| l.as_table())
                .with_context(|| format!("{}: no [datasets.{key}.labels]", path.display()))?;
            for (from, to) in labels {
                let to = to.as_str().with_context(|| format!("{}: `{from}` must map to a string", path.display()))?;
                map.insert(from.clone(), Targets::One(to.to_string()));
            }
        }
        Ok(map)
    }
}

/// Ids listed one per line in `path`; blank lines and `#` comments are ignored.
pub fn read_ids(path: &Path) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read id list {}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect())
}

/// Train / dev / test split, per source so every source is represented in each part.
pub struct Splits {
    pub train: Vec<Example>,
    pub dev: Vec<Example>,
    pub test: Vec<Example>,
}

impl Recipe {
    /// Train / dev / test splits of `examples`, honouring the sources' `train_only`.
    pub fn split(&self, examples: Vec<Example>) -> Splits {
        let extra: std::collections::BTreeSet<&str> =
            self.sources.iter().filter(|s| s.train_only).map(|s| s.name.as_str()).collect();
        let (extra_rows, rows): (Vec<Example>, Vec<Example>) =
            examples.into_iter().partition(|e| extra.contains(e.source.as_str()));
        let mut splits = split(rows, &self.train);
        splits.train.extend(extra_rows);
        splits
    }
}

pub fn split(mut examples: Vec<Example>, settings: &TrainSettings) -> Splits {
    let mut rng = SeededRng::new(settings.seed);
    rng.shuffle(&mut examples);
    let mut by_source: BTreeMap<String, Vec<Example>> = BTreeMap::new();
    for example in examples {
        by_source.entry(example.source.clone()).or_default().push(example);
    }
    let (mut train, mut dev, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for (_, rows) in by_source {
        let n = rows.len();
        let n_test = (n as f64 * settings.test_fraction).round() as usize;
        let n_dev = (n as f64 * settings.dev_fraction).round() as usize;
        for (i, row) in rows.into_iter().enumerate() {
            if i < n_test {
                test.push(row);
            } else if i < n_test + n_dev {
                dev.push(row);
            } else {
                train.push(row);
            }
        }
    }
    Splits { train, dev, test }
}
