//! Evaluating a head on labeled examples whose embeddings are known.

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::metrics::{self, MultiLabelReport, SingleLabelReport};
use super::recipe::Example;
use tierline_infer::heads::{Activation, ClassifierHead, Head};

/// The label that stands for "not a support request"; its probability is the out-of-scope score.
pub use tierline_infer::heads::OUT_OF_SCOPE_LABEL;

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Report {
    Single(SingleLabelReport),
    Multi(MultiLabelReport),
}

#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub name: String,
    #[serde(flatten)]
    pub report: Report,
    /// AUROC of P(`other`) for telling out-of-scope texts from support texts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_scope_auroc: Option<f64>,
}

impl Evaluation {
    /// The headline number: macro-F1 (single-label) or micro-F1 (multi-label).
    pub fn headline(&self) -> f64 {
        match &self.report {
            Report::Single(r) => r.macro_f1,
            Report::Multi(r) => r.micro_f1,
        }
    }
}

pub fn head_probabilities(head: &ClassifierHead, embeddings: &[f32], rows: usize) -> anyhow::Result<Vec<Vec<f32>>> {
    let dims = head.input_dimensions();
    let x = Tensor::from_slice(embeddings, (rows, dims), &Device::Cpu)?;
    Ok(head.scores(&x)?.to_vec2::<f32>()?)
}

pub fn evaluate(
    name: &str,
    head: &ClassifierHead,
    embeddings: &[f32],
    examples: &[Example],
) -> anyhow::Result<Evaluation> {
    let probs = head_probabilities(head, embeddings, examples.len())?;
    let card = head.card();
    Ok(evaluate_probabilities(name, &card.labels, head.activation(), &card.thresholds, &probs, examples))
}

/// Metrics from any model's probabilities (a head, or a sequence-classification checkpoint).
pub fn evaluate_probabilities(
    name: &str,
    labels: &[String],
    activation: Activation,
    thresholds: &[f32],
    probs: &[Vec<f32>],
    examples: &[Example],
) -> Evaluation {
    let report = match activation {
        Activation::Softmax => {
            let truth: Vec<usize> = examples.iter().map(|e| e.labels[0]).collect();
            Report::Single(metrics::single_label(labels, probs, &truth))
        }
        Activation::Sigmoid => {
            let truth: Vec<Vec<bool>> =
                examples.iter().map(|e| (0..labels.len()).map(|l| e.labels.contains(&l)).collect()).collect();
            let thresholds = if thresholds.is_empty() { vec![0.5; labels.len()] } else { thresholds.to_vec() };
            Report::Multi(metrics::multi_label(labels, probs, &truth, &thresholds))
        }
    };
    let out_of_scope_auroc = labels.iter().position(|l| l == OUT_OF_SCOPE_LABEL).and_then(|other| {
        let scores: Vec<f32> = probs.iter().map(|p| p[other]).collect();
        let positive: Vec<bool> = examples.iter().map(|e| e.labels.contains(&other)).collect();
        metrics::auroc(&scores, &positive)
    });
    Evaluation { name: name.to_string(), report, out_of_scope_auroc }
}

/// Plain-text report for people.
pub fn render(evaluation: &Evaluation, labels: &[String]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "== {}", evaluation.name);
    match &evaluation.report {
        Report::Single(r) => {
            let _ = writeln!(
                out,
                "examples {}  accuracy {:.4}  macro-F1 {:.4}  ECE {:.4}",
                r.examples, r.accuracy, r.macro_f1, r.expected_calibration_error
            );
            per_class(&mut out, &r.per_class);
            let width = labels.iter().map(|l| l.len()).max().unwrap_or(5).max(5);
            let _ = write!(out, "confusion (rows: true, columns: predicted)\n{:>width$}", "");
            for (i, _) in labels.iter().enumerate() {
                let _ = write!(out, " {:>5}", i);
            }
            out.push('\n');
            for (i, row) in r.confusion.iter().enumerate() {
                let _ = write!(out, "{:>width$}", format!("{i} {}", labels[i]));
                for count in row {
                    let _ = write!(out, " {count:>5}");
                }
                out.push('\n');
            }
        }
        Report::Multi(r) => {
            let _ = writeln!(
                out,
                "examples {}  subset accuracy {:.4}  micro-F1 {:.4}  macro-F1 {:.4}  ECE {:.4}",
                r.examples, r.subset_accuracy, r.micro_f1, r.macro_f1, r.expected_calibration_error
            );
            per_class(&mut out, &r.per_class);
        }
    }
    if let Some(auroc) = evaluation.out_of_scope_auroc {
        let _ = writeln!(out, "out-of-scope AUROC (P(other)) {auroc:.4}");
    }
    out
}

fn per_class(out: &mut String, classes: &[metrics::ClassMetrics]) {
    use std::fmt::Write;
    let _ = writeln!(out, "{:<20} {:>9} {:>9} {:>9} {:>8}", "label", "precision", "recall", "F1", "support");
    for m in classes {
        let _ = writeln!(out, "{:<20} {:>9.4} {:>9.4} {:>9.4} {:>8}", m.label, m.precision, m.recall, m.f1, m.support);
    }
}
