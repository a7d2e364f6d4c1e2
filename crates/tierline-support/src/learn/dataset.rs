//! Labeled texts from JSONL or CSV files with configurable text and label columns. A label cell
//! may hold one label (string) or several (JSON array / `|`-separated in CSV) for multi-label data.

use std::path::Path;

use anyhow::{bail, Context};

#[derive(Debug, Clone, PartialEq)]
pub struct LabeledText {
    pub text: String,
    /// One label for single-label data; zero or more for multi-label data.
    pub labels: Vec<String>,
    /// The row's `id` field, when it has one (JSONL only).
    pub id: Option<String>,
}

pub fn load(path: &Path, text_field: &str, label_field: &str) -> anyhow::Result<Vec<LabeledText>> {
    load_with_subject(path, text_field, label_field, None)
}

/// As `load`; with `subject_field`, a row's subject (when present) is put before its text on a
/// line of its own, the way an e-mail ticket is read.
pub fn load_with_subject(
    path: &Path,
    text_field: &str,
    label_field: &str,
    subject_field: Option<&str>,
) -> anyhow::Result<Vec<LabeledText>> {
    if !path.exists() {
        bail!(
            "data file {} does not exist (the shared training data lives in ../shared/data; pass --data DIR)",
            path.display()
        );
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => load_csv(path, text_field, label_field),
        _ => load_jsonl(path, text_field, label_field, subject_field),
    }
}

fn load_jsonl(
    path: &Path,
    text_field: &str,
    label_field: &str,
    subject_field: Option<&str>,
) -> anyhow::Result<Vec<LabeledText>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}: invalid JSON", path.display(), number + 1))?;
        let text = value
            .get(text_field)
            .and_then(|v| v.as_str())
            .with_context(|| format!("{}:{}: no string field `{text_field}`", path.display(), number + 1))?;
        let labels = match value.get(label_field) {
            Some(serde_json::Value::String(label)) => vec![label.clone()],
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
            }
            Some(serde_json::Value::Number(n)) => vec![n.to_string()],
            _ => bail!("{}:{}: no label field `{label_field}`", path.display(), number + 1),
        };
        let subject =
            subject_field.and_then(|field| value.get(field)).and_then(|v| v.as_str()).filter(|s| !s.trim().is_empty());
        let text = match subject {
            Some(subject) => format!("{subject}\n{text}"),
            None => text.to_string(),
        };
        let id = value.get("id").and_then(|v| v.as_str()).map(String::from);
        rows.push(LabeledText { text, labels, id });
    }
    Ok(rows)
}

fn load_csv(path: &Path, text_field: &str, label_field: &str) -> anyhow::Result<Vec<LabeledText>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).with_context(|| {
            format!(
                "{}: no column `{name}` (columns: {})",
                path.display(),
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })
    };
    let (text_col, label_col) = (column(text_field)?, column(label_field)?);
    let mut rows = Vec::new();
    for (number, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: row {}", path.display(), number + 2))?;
        let labels = record
            .get(label_col)
            .unwrap_or("")
            .split('|')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        rows.push(LabeledText { text: record.get(text_col).unwrap_or("").to_string(), labels, id: None });
    }
    Ok(rows)
}

/// Deterministic generator for shuffles, splits and initial weights (xorshift64*).
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_jsonl_and_csv_with_single_and_multi_labels() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("d.jsonl");
        std::fs::write(&jsonl, "{\"t\": \"a\", \"l\": \"x\"}\n\n{\"t\": \"b\", \"l\": [\"y\", \"z\"]}\n").unwrap();
        let rows = load(&jsonl, "t", "l").unwrap();
        assert_eq!(rows[0].labels, vec!["x"]);
        assert_eq!(rows[1].labels, vec!["y", "z"]);
        let csv = dir.path().join("d.csv");
        std::fs::write(&csv, "body,label\n\"hello, world\",x|y\nbye,\n").unwrap();
        let rows = load(&csv, "body", "label").unwrap();
        assert_eq!(
            rows[0],
            LabeledText { text: "hello, world".into(), labels: vec!["x".into(), "y".into()], id: None }
        );
        assert!(rows[1].labels.is_empty());
        let err = load(&csv, "text", "label").unwrap_err().to_string();
        assert!(err.contains("no column `text`"), "{err}");
        let err = load(&dir.path().join("missing.jsonl"), "t", "l").unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn seeded_shuffles_repeat() {
        let mut a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        SeededRng::new(7).shuffle(&mut a);
        SeededRng::new(7).shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..50).collect::<Vec<_>>());
    }
}
