//! Head training with candle autograd: seeded initialisation, AdamW, class weighting, early
//! stopping on the dev split, then temperature scaling (and per-label thresholds for multi-label
//! heads) fitted on dev.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use indicatif::{ProgressBar, ProgressStyle};

use super::dataset::SeededRng;
use super::metrics;
use super::recipe::{Example, TrainSettings};
use crate::inference::heads::{activate, Activation};

/// Embeddings `[n, dims]` with their examples.
pub struct Split<'a> {
    pub embeddings: &'a [f32],
    pub examples: &'a [Example],
}

pub struct TrainOutcome {
    /// `layer{i}.weight` `[out, in]` and `layer{i}.bias`.
    pub tensors: HashMap<String, Tensor>,
    pub temperature: f32,
    pub thresholds: Vec<f32>,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub best_dev_score: f64,
}

pub struct HeadShape<'a> {
    pub dims: usize,
    pub hidden: &'a [usize],
    pub labels: usize,
    pub multi_label: bool,
}

fn to_tensor(values: &[f32], rows: usize, dims: usize) -> candle_core::Result<Tensor> {
    Tensor::from_slice(values, (rows, dims), &Device::Cpu)
}

fn targets_multi_hot(examples: &[Example], labels: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; examples.len() * labels];
    for (i, example) in examples.iter().enumerate() {
        for &l in &example.labels {
            y[i * labels + l] = 1.0;
        }
    }
    y
}

struct Model {
    layers: Vec<(Var, Var)>,
}

impl Model {
    fn new(shape: &HeadShape, rng: &mut SeededRng) -> candle_core::Result<Self> {
        let mut layers = Vec::new();
        let mut in_dim = shape.dims;
        for out_dim in shape.hidden.iter().copied().chain([shape.labels]) {
            // PyTorch's default: U(-1/sqrt(in), 1/sqrt(in)).
            let bound = 1.0 / (in_dim as f64).sqrt();
            let weight: Vec<f32> =
                (0..out_dim * in_dim).map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32).collect();
            let w = Var::from_tensor(&Tensor::from_vec(weight, (out_dim, in_dim), &Device::Cpu)?)?;
            let b = Var::from_tensor(&Tensor::zeros(out_dim, DType::F32, &Device::Cpu)?)?;
            layers.push((w, b));
            in_dim = out_dim;
        }
        Ok(Self { layers })
    }

    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        let last = self.layers.len() - 1;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            x = x.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?;
            if i < last {
                x = x.relu()?;
            }
        }
        Ok(x)
    }

    fn vars(&self) -> Vec<Var> {
        self.layers.iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect()
    }

    fn snapshot(&self) -> candle_core::Result<HashMap<String, Tensor>> {
        let mut tensors = HashMap::new();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            tensors.insert(format!("layer{i}.weight"), w.as_tensor().copy()?);
            tensors.insert(format!("layer{i}.bias"), b.as_tensor().copy()?);
        }
        Ok(tensors)
    }

    fn restore(&self, tensors: &HashMap<String, Tensor>) -> candle_core::Result<()> {
        for (i, (w, b)) in self.layers.iter().enumerate() {
            w.set(&tensors[&format!("layer{i}.weight")])?;
            b.set(&tensors[&format!("layer{i}.bias")])?;
        }
        Ok(())
    }
}

/// Single-label: weighted cross-entropy. Multi-label: weighted binary cross-entropy on logits.
fn loss(logits: &Tensor, targets: &Tensor, weights: &Tensor, multi_label: bool) -> candle_core::Result<Tensor> {
    if !multi_label {
        let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        let picked = log_probs.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
        let sample_weights = weights.index_select(targets, 0)?;
        return (picked * &sample_weights)?.sum_all()?.neg()? / sample_weights.sum_all()?.to_scalar::<f32>()? as f64;
    }
    // max(x, 0) - x*y + log(1 + exp(-|x|)), positives weighted by `weights[label]`.
    let bce = ((logits.relu()? - (logits * targets)?)? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    let positive_boost = targets.broadcast_mul(&(weights - 1.0)?.unsqueeze(0)?)?;
    (bce * (positive_boost + 1.0)?)?.mean_all()
}

fn dev_score(probs: &[Vec<f32>], examples: &[Example], labels: usize, multi_label: bool) -> f64 {
    let names: Vec<String> = (0..labels).map(|i| i.to_string()).collect();
    if multi_label {
        let truth: Vec<Vec<bool>> =
            examples.iter().map(|e| (0..labels).map(|l| e.labels.contains(&l)).collect()).collect();
        metrics::multi_label(&names, probs, &truth, &vec![0.5; labels]).micro_f1
    } else {
        let truth: Vec<usize> = examples.iter().map(|e| e.labels[0]).collect();
        metrics::single_label(&names, probs, &truth).macro_f1
    }
}

pub fn train(
    shape: &HeadShape,
    settings: &TrainSettings,
    train: &Split,
    dev: &Split,
    progress: bool,
) -> anyhow::Result<TrainOutcome> {
    let (n, labels) = (train.examples.len(), shape.labels);
    anyhow::ensure!(n > 0 && !dev.examples.is_empty(), "training needs examples in both the train and dev splits");
    let mut rng = SeededRng::new(settings.seed);
    let model = Model::new(shape, &mut rng)?;
    let mut optimizer = AdamW::new(
        model.vars(),
        ParamsAdamW { lr: settings.learning_rate, weight_decay: settings.weight_decay, ..Default::default() },
    )?;
    let x_train = to_tensor(train.embeddings, n, shape.dims)?;
    let x_dev = to_tensor(dev.embeddings, dev.examples.len(), shape.dims)?;

    // Class weights: inverse frequency for single-label (balanced), neg/pos for multi-label.
    let mut counts = vec![0usize; labels];
    for example in train.examples {
        for &l in &example.labels {
            counts[l] += 1;
        }
    }
    let weights: Vec<f32> = counts
        .iter()
        .map(|&c| match (settings.class_weights, shape.multi_label) {
            (false, _) => 1.0,
            (true, false) => (n as f32 / (labels as f32 * c.max(1) as f32)).clamp(0.05, 20.0),
            (true, true) => ((n - c) as f32 / c.max(1) as f32).clamp(1.0, 10.0),
        })
        .collect();
    let weights = Tensor::from_vec(weights, labels, &Device::Cpu)?;
    let y_train_single: Vec<u32> =
        train.examples.iter().map(|e| e.labels.first().copied().unwrap_or(0) as u32).collect();
    let y_train_multi = targets_multi_hot(train.examples, labels);

    let bar = if progress { ProgressBar::new(settings.epochs as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("training {bar:40} epoch {pos}/{len} {msg}").expect("static template"));
    let mut order: Vec<u32> = (0..n as u32).collect();
    let (mut best_score, mut best_epoch, mut best) = (f64::NEG_INFINITY, 0, model.snapshot()?);
    let mut epochs_run = 0;
    for epoch in 1..=settings.epochs {
        epochs_run = epoch;
        rng.shuffle(&mut order);
        for batch in order.chunks(settings.batch_size.max(1)) {
            let index = Tensor::from_slice(batch, batch.len(), &Device::Cpu)?;
            let x = x_train.index_select(&index, 0)?;
            let targets = if shape.multi_label {
                let rows: Vec<f32> = batch
                    .iter()
                    .flat_map(|&i| y_train_multi[i as usize * labels..(i as usize + 1) * labels].iter().copied())
                    .collect();
                Tensor::from_vec(rows, (batch.len(), labels), &Device::Cpu)?
            } else {
                let rows: Vec<u32> = batch.iter().map(|&i| y_train_single[i as usize]).collect();
                Tensor::from_vec(rows, batch.len(), &Device::Cpu)?
            };
            let loss = loss(&model.logits(&x)?, &targets, &weights, shape.multi_label)?;
            optimizer.backward_step(&loss)?;
        }
        let activation = if shape.multi_label { Activation::Sigmoid } else { Activation::Softmax };
        let probs = activate(&model.logits(&x_dev)?, activation, 1.0)?.to_vec2::<f32>()?;
        let score = dev_score(&probs, dev.examples, labels, shape.multi_label);
        if score > best_score {
            (best_score, best_epoch, best) = (score, epoch, model.snapshot()?);
        }
        bar.set_message(format!("dev {:.4} (best {:.4} at {})", score, best_score, best_epoch));
        bar.inc(1);
        if epoch - best_epoch >= settings.patience {
            break;
        }
    }
    bar.finish_and_clear();
    model.restore(&best)?;

    let dev_logits = model.logits(&x_dev)?;
    let temperature = fit_temperature(&dev_logits, dev.examples, labels, shape.multi_label)?;
    let thresholds = if shape.multi_label {
        let probs = activate(&dev_logits, Activation::Sigmoid, temperature)?.to_vec2::<f32>()?;
        fit_thresholds(&probs, dev.examples, labels)
    } else {
        Vec::new()
    };
    Ok(TrainOutcome { tensors: best, temperature, thresholds, epochs_run, best_epoch, best_dev_score: best_score })
}

/// The temperature minimising the dev negative log-likelihood (grid search: one parameter).
fn fit_temperature(logits: &Tensor, examples: &[Example], labels: usize, multi_label: bool) -> anyhow::Result<f32> {
    let logits = logits.to_vec2::<f32>()?;
    let nll = |t: f32| -> f64 {
        let mut total = 0.0f64;
        for (row, example) in logits.iter().zip(examples) {
            if multi_label {
                for (l, &z) in row.iter().enumerate() {
                    let p = (1.0 / (1.0 + (-(z / t) as f64).exp())).clamp(1e-7, 1.0 - 1e-7);
                    total -= if example.labels.contains(&l) { p.ln() } else { (1.0 - p).ln() };
                }
            } else {
                let scaled: Vec<f64> = row.iter().map(|&z| (z / t) as f64).collect();
                let peak = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let log_sum = scaled.iter().map(|z| (z - peak).exp()).sum::<f64>().ln() + peak;
                total -= scaled[example.labels[0]] - log_sum;
            }
        }
        total
    };
    let _ = labels;
    let mut best = (1.0f32, nll(1.0));
    let mut t = 0.25f32;
    while t <= 6.0 {
        let value = nll(t);
        if value < best.1 {
            best = (t, value);
        }
        t += 0.01;
    }
    Ok(best.0)
}

/// Per label, the threshold that maximises F1 on dev.
fn fit_thresholds(probs: &[Vec<f32>], examples: &[Example], labels: usize) -> Vec<f32> {
    (0..labels)
        .map(|l| {
            let mut best = (0.5f32, -1.0f64);
            for step in 5..=95 {
                let threshold = step as f32 / 100.0;
                let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
                for (p, example) in probs.iter().zip(examples) {
                    match (p[l] >= threshold, example.labels.contains(&l)) {
                        (true, true) => tp += 1,
                        (true, false) => fp += 1,
                        (false, true) => fn_ += 1,
                        _ => {}
                    }
                }
                let f1 = if tp == 0 { 0.0 } else { 2.0 * tp as f64 / (2 * tp + fp + fn_) as f64 };
                if f1 > best.1 {
                    best = (threshold, f1);
                }
            }
            best.0
        })
        .collect()
}
