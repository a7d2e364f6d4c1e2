//! Classification metrics: accuracy, macro-F1, per-class precision/recall, confusion matrix,
//! expected calibration error with its reliability bins, and AUROC.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ClassMetrics {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    pub mean_confidence: f64,
    pub accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SingleLabelReport {
    pub examples: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]`, in label order.
    pub confusion: Vec<Vec<usize>>,
    pub expected_calibration_error: f64,
    pub reliability: Vec<ReliabilityBin>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MultiLabelReport {
    pub examples: usize,
    /// Every label of the example right.
    pub subset_accuracy: f64,
    pub micro_f1: f64,
    pub macro_f1: f64,
    pub per_class: Vec<ClassMetrics>,
    pub expected_calibration_error: f64,
    pub reliability: Vec<ReliabilityBin>,
}

fn f1(precision: f64, recall: f64) -> f64 {
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// `probs[i]` are the class probabilities of example i; `truth[i]` its class index.
pub fn single_label(labels: &[String], probs: &[Vec<f32>], truth: &[usize]) -> SingleLabelReport {
    let classes = labels.len();
    let mut confusion = vec![vec![0usize; classes]; classes];
    let mut confidences = Vec::with_capacity(truth.len());
    for (p, &t) in probs.iter().zip(truth) {
        let (predicted, confidence) = argmax(p);
        confusion[t][predicted] += 1;
        confidences.push((confidence as f64, predicted == t));
    }
    let per_class: Vec<ClassMetrics> = (0..classes)
        .map(|c| {
            let tp = confusion[c][c];
            let predicted: usize = (0..classes).map(|t| confusion[t][c]).sum();
            let support: usize = confusion[c].iter().sum();
            let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
            ClassMetrics { label: labels[c].clone(), precision, recall, f1: f1(precision, recall), support }
        })
        .collect();
    let present: Vec<&ClassMetrics> = per_class.iter().filter(|m| m.support > 0).collect();
    let macro_f1 = present.iter().map(|m| m.f1).sum::<f64>() / present.len().max(1) as f64;
    let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
    let (ece, reliability) = calibration(&confidences, 10);
    SingleLabelReport {
        examples: truth.len(),
        accuracy: ratio(correct, truth.len()),
        macro_f1,
        per_class,
        confusion,
        expected_calibration_error: ece,
        reliability,
    }
}

/// `probs[i][c]` independent probabilities, `truth[i][c]` the gold labels, `thresholds[c]` the
/// decision thresholds.
pub fn multi_label(labels: &[String], probs: &[Vec<f32>], truth: &[Vec<bool>], thresholds: &[f32]) -> MultiLabelReport {
    let classes = labels.len();
    let (mut tp, mut fp, mut fn_) = (vec![0usize; classes], vec![0usize; classes], vec![0usize; classes]);
    let mut exact = 0;
    let mut confidences = Vec::new();
    for (p, t) in probs.iter().zip(truth) {
        let mut all_right = true;
        for c in 0..classes {
            let predicted = p[c] >= thresholds[c];
            match (predicted, t[c]) {
                (true, true) => tp[c] += 1,
                (true, false) => fp[c] += 1,
                (false, true) => fn_[c] += 1,
                (false, false) => {}
            }
            all_right &= predicted == t[c];
            // Calibration of each label's probability as a binary forecast.
            confidences.push((p[c] as f64, t[c]));
        }
        exact += all_right as usize;
    }
    let per_class: Vec<ClassMetrics> = (0..classes)
        .map(|c| {
            let (precision, recall) = (ratio(tp[c], tp[c] + fp[c]), ratio(tp[c], tp[c] + fn_[c]));
            ClassMetrics {
                label: labels[c].clone(),
                precision,
                recall,
                f1: f1(precision, recall),
                support: tp[c] + fn_[c],
            }
        })
        .collect();
    let (stp, sfp, sfn) = (tp.iter().sum::<usize>(), fp.iter().sum::<usize>(), fn_.iter().sum::<usize>());
    let micro_f1 = f1(ratio(stp, stp + sfp), ratio(stp, stp + sfn));
    let macro_f1 = per_class.iter().map(|m| m.f1).sum::<f64>() / classes.max(1) as f64;
    let (ece, reliability) = calibration(&confidences, 10);
    MultiLabelReport {
        examples: truth.len(),
        subset_accuracy: ratio(exact, truth.len()),
        micro_f1,
        macro_f1,
        per_class,
        expected_calibration_error: ece,
        reliability,
    }
}

pub fn argmax(values: &[f32]) -> (usize, f32) {
    values
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, v)| if v > best.1 { (i, v) } else { best })
}

/// ECE over `(confidence, outcome)` pairs in equal-width bins: top-1 confidence and whether it
/// was right, or a label's probability and whether the label applies.
pub fn calibration(samples: &[(f64, bool)], bins: usize) -> (f64, Vec<ReliabilityBin>) {
    let mut sums = vec![(0usize, 0.0f64, 0.0f64); bins];
    for &(confidence, outcome) in samples {
        let index = ((confidence * bins as f64) as usize).min(bins - 1);
        sums[index].0 += 1;
        sums[index].1 += confidence;
        sums[index].2 += outcome as u8 as f64;
    }
    let total = samples.len().max(1) as f64;
    let mut ece = 0.0;
    let reliability = sums
        .iter()
        .enumerate()
        .map(|(i, &(count, conf, acc))| {
            let (mean_confidence, accuracy) =
                if count == 0 { (0.0, 0.0) } else { (conf / count as f64, acc / count as f64) };
            ece += count as f64 / total * (mean_confidence - accuracy).abs();
            ReliabilityBin {
                lower: i as f64 / bins as f64,
                upper: (i + 1) as f64 / bins as f64,
                count,
                mean_confidence,
                accuracy,
            }
        })
        .collect();
    (ece, reliability)
}

/// Area under the ROC curve of `scores` for `positive` labels (Mann-Whitney, ties counted half).
pub fn auroc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let mut pairs: Vec<(f32, bool)> = scores.iter().copied().zip(positive.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let positives = positive.iter().filter(|&&p| p).count();
    let negatives = positive.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        let average_rank = (i + j + 1) as f64 / 2.0;
        rank_sum += pairs[i..j].iter().filter(|p| p.1).count() as f64 * average_rank;
        i = j;
    }
    Some((rank_sum - (positives * (positives + 1)) as f64 / 2.0) / (positives * negatives) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_label_metrics_by_hand() {
        let labels: Vec<String> = ["a", "b"].map(String::from).to_vec();
        // truth a,a,b,b ; predicted a,b,b,b
        let probs = vec![vec![0.9, 0.1], vec![0.4, 0.6], vec![0.2, 0.8], vec![0.3, 0.7]];
        let report = single_label(&labels, &probs, &[0, 0, 1, 1]);
        assert_eq!(report.confusion, vec![vec![1, 1], vec![0, 2]]);
        assert!((report.accuracy - 0.75).abs() < 1e-12);
        let (a, b) = (&report.per_class[0], &report.per_class[1]);
        assert!((a.precision - 1.0).abs() < 1e-12 && (a.recall - 0.5).abs() < 1e-12);
        assert!((b.precision - 2.0 / 3.0).abs() < 1e-12 && (b.recall - 1.0).abs() < 1e-12);
        assert!((report.macro_f1 - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn auroc_extremes_and_ties() {
        assert_eq!(auroc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]), Some(1.0));
        assert_eq!(auroc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]), Some(0.0));
        assert_eq!(auroc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(auroc(&[0.5], &[true]), None);
    }

    #[test]
    fn perfectly_calibrated_bins_have_zero_ece() {
        let samples: Vec<(f64, bool)> =
            (0..10).map(|i| (0.75, i != 3)).chain((0..10).map(|i| (0.15, !(1..=8).contains(&i)))).collect();
        // bin 0.7-0.8: 9/10 correct vs 0.75 conf; bin 0.1-0.2: 2/10 correct vs 0.15 conf
        let (ece, bins) = calibration(&samples, 10);
        assert!((ece - (0.5 * 0.15 + 0.5 * 0.05)).abs() < 1e-12, "{ece}");
        assert_eq!(bins.iter().map(|b| b.count).sum::<usize>(), 20);
    }
}
