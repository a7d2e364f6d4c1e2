//! Whether the best passage really answers the question: a logistic model over features of the
//! retrieval itself (how close the best passage is, how far ahead of the next article, whether
//! keyword search agrees with the dense one, how many of the question's words the passage holds),
//! fitted on labeled questions over knowledge bases other than the one it serves. Without it the
//! confidence is a fixed curve of the best cosine, which cannot tell a close wrong article from
//! the right one.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::index::{Hit, KbIndex};

/// The features, in the model's order. Chosen by measuring each knowledge base held out: the
/// lead over the next article tells a close wrong article from the right one far better than the
/// cosine alone; word overlap and query length did not carry over from one knowledge base to the
/// other, and are left out.
pub const FEATURES: [&str; 3] = ["best_cosine", "margin_to_next_article", "bm25_reciprocal_rank"];

/// How many features the model reads.
pub const WIDTH: usize = FEATURES.len();

/// What the model reads of one search.
pub fn features(index: &KbIndex, hits: &[Hit]) -> Option<[f32; WIDTH]> {
    let top = hits.iter().max_by(|a, b| a.similarity.total_cmp(&b.similarity))?;
    let article = &index.passage(top.passage).article_id;
    let runner_up = hits
        .iter()
        .filter(|h| &index.passage(h.passage).article_id != article)
        .map(|h| h.similarity)
        .fold(0.0f32, f32::max);
    let reciprocal = top.bm25_rank.map_or(0.0, |r| 1.0 / r as f32);
    Some([top.similarity, top.similarity - runner_up, reciprocal])
}

/// A fitted model (a JSON file beside the policy, `models/answerability.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Answerability {
    pub features: Vec<String>,
    /// Standardisation: `(x - mean) / scale` before the weights.
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    pub weights: Vec<f32>,
    pub bias: f32,
    /// What it was fitted on, and how (for the card).
    #[serde(default)]
    pub fitted_on: serde_json::Value,
}

impl Answerability {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let model: Self = serde_json::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
        anyhow::ensure!(
            model.features == FEATURES
                && model.mean.len() == FEATURES.len()
                && model.scale.len() == FEATURES.len()
                && model.weights.len() == FEATURES.len(),
            "{}: the model's features are not this tierline's ({})",
            path.display(),
            FEATURES.join(", ")
        );
        Ok(model)
    }

    /// P(the best passage answers the question).
    pub fn probability(&self, x: &[f32; WIDTH]) -> f32 {
        let z: f32 = x
            .iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(&self.weights)
            .map(|(((x, m), s), w)| w * (x - m) / s)
            .sum::<f32>()
            + self.bias;
        1.0 / (1.0 + (-z).exp())
    }

    /// Fits by gradient descent on the log loss with a small L2 penalty. `rows` are feature
    /// vectors with whether the cited article was right.
    pub fn fit(rows: &[([f32; WIDTH], bool)], fitted_on: serde_json::Value) -> anyhow::Result<Self> {
        anyhow::ensure!(rows.iter().any(|r| r.1) && rows.iter().any(|r| !r.1), "fitting needs right and wrong answers");
        let n = rows.len() as f32;
        let mut mean = vec![0.0f32; WIDTH];
        for (x, _) in rows {
            for (m, v) in mean.iter_mut().zip(x) {
                *m += v / n;
            }
        }
        let mut scale = vec![0.0f32; WIDTH];
        for (x, _) in rows {
            for ((s, v), m) in scale.iter_mut().zip(x).zip(&mean) {
                *s += (v - m).powi(2) / n;
            }
        }
        let scale: Vec<f32> = scale.into_iter().map(|v| v.sqrt().max(1e-6)).collect();
        let standardised: Vec<([f32; WIDTH], f32)> = rows
            .iter()
            .map(|(x, y)| {
                let mut z = [0.0f32; WIDTH];
                for i in 0..WIDTH {
                    z[i] = (x[i] - mean[i]) / scale[i];
                }
                (z, if *y { 1.0 } else { 0.0 })
            })
            .collect();
        let (mut weights, mut bias) = ([0.0f32; WIDTH], 0.0f32);
        let (rate, l2) = (0.5f32, 1e-3f32);
        for _ in 0..3000 {
            let mut gradient = [0.0f32; WIDTH];
            let mut bias_gradient = 0.0f32;
            for (x, y) in &standardised {
                let z: f32 = x.iter().zip(&weights).map(|(a, b)| a * b).sum::<f32>() + bias;
                let error = 1.0 / (1.0 + (-z).exp()) - y;
                for i in 0..WIDTH {
                    gradient[i] += error * x[i] / n;
                }
                bias_gradient += error / n;
            }
            for i in 0..WIDTH {
                weights[i] -= rate * (gradient[i] + l2 * weights[i]);
            }
            bias -= rate * bias_gradient;
        }
        Ok(Self {
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
            mean,
            scale,
            weights: weights.to_vec(),
            bias,
            fitted_on,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fitted_model_separates_what_it_was_shown_and_round_trips() {
        // Right answers: close and well ahead of the next article; wrong ones: close but level.
        let mut rows = Vec::new();
        for i in 0..50 {
            let jitter = i as f32 / 500.0;
            rows.push(([0.7 + jitter, 0.2, 1.0], true));
            rows.push(([0.65 + jitter, 0.01, 0.2], false));
        }
        let model = Answerability::fit(&rows, serde_json::Value::Null).unwrap();
        assert!(model.probability(&rows[0].0) > 0.9 && model.probability(&rows[1].0) < 0.1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, serde_json::to_string(&model).unwrap()).unwrap();
        assert_eq!(Answerability::load(&path).unwrap(), model);
    }
}
