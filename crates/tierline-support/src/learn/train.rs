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
use tierline_infer::heads::{activate, Activation};

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

/// `settings.ensemble` members (seeds `seed`, `seed+1`...) averaged into one head. The average
/// of logits of one-hidden-layer heads is itself a one-hidden-layer head (hidden layers stacked,
/// output weights divided by the member count), so the result serves like any head; temperature
/// and thresholds are fitted again on the merged head's dev logits.
pub fn train_ensemble(
    shape: &HeadShape,
    settings: &TrainSettings,
    train_split: &Split,
    dev: &Split,
    progress: bool,
) -> anyhow::Result<(TrainOutcome, Vec<usize>)> {
    let members = settings.ensemble.max(1);
    anyhow::ensure!(members == 1 || shape.hidden.len() <= 1, "an ensemble merges heads with at most one hidden layer");
    let mut outcomes = Vec::with_capacity(members);
    for member in 0..members {
        let member_settings = TrainSettings { seed: settings.seed + member as u64, ..settings.clone() };
        let outcome = train(shape, &member_settings, train_split, dev, progress)?;
        if progress && members > 1 {
            eprintln!(
                "member {}/{members}: best dev {:.4} at epoch {}",
                member + 1,
                outcome.best_dev_score,
                outcome.best_epoch
            );
        }
        outcomes.push(outcome);
    }
    let (mut tensors, hidden) = if members == 1 {
        (outcomes[0].tensors.clone(), shape.hidden.to_vec())
    } else {
        (merge(&outcomes, shape.hidden.len(), members)?, shape.hidden.iter().map(|h| h * members).collect())
    };
    let x_dev = to_tensor(dev.embeddings, dev.examples.len(), shape.dims)?;
    if settings.balance_on_dev && !shape.multi_label {
        let logits = merged_logits(&tensors, hidden.len(), &x_dev)?.to_vec2::<f32>()?;
        let offsets = balancing_offsets(&logits, dev.examples, shape.labels);
        let name = format!("layer{}.bias", hidden.len());
        let bias = (&tensors[&name] + Tensor::from_vec(offsets.clone(), shape.labels, &Device::Cpu)?)?;
        tensors.insert(name, bias);
        if progress {
            eprintln!("label offsets fitted on dev for macro-F1: {offsets:?}");
        }
    }
    let dev_logits = merged_logits(&tensors, hidden.len(), &x_dev)?;
    let activation = if shape.multi_label { Activation::Sigmoid } else { Activation::Softmax };
    let probs = activate(&dev_logits, activation, 1.0)?.to_vec2::<f32>()?;
    let best_dev_score = dev_score(&probs, dev.examples, shape.labels, shape.multi_label);
    let temperature = fit_temperature(&dev_logits, dev.examples, shape.labels, shape.multi_label)?;
    let thresholds = if shape.multi_label {
        let probs = activate(&dev_logits, Activation::Sigmoid, temperature)?.to_vec2::<f32>()?;
        fit_thresholds(&probs, dev.examples, shape.labels)
    } else {
        Vec::new()
    };
    let outcome = TrainOutcome {
        tensors,
        temperature,
        thresholds,
        epochs_run: outcomes.iter().map(|o| o.epochs_run).sum(),
        best_epoch: outcomes.iter().map(|o| o.best_epoch).max().unwrap_or(0),
        best_dev_score,
    };
    Ok((outcome, hidden))
}

/// Per-label logit offsets (the first label fixed at 0) that maximise dev macro-F1, by
/// coordinate ascent over a grid: class weighting balances the loss, this balances the decision.
fn balancing_offsets(logits: &[Vec<f32>], examples: &[Example], labels: usize) -> Vec<f32> {
    let macro_f1 = |offsets: &[f32]| -> f64 {
        let shifted: Vec<Vec<f32>> = logits
            .iter()
            .map(|row| {
                let mut one_hot = vec![0.0; labels];
                let best = row
                    .iter()
                    .zip(offsets)
                    .map(|(z, o)| z + o)
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map_or(0, |(i, _)| i);
                one_hot[best] = 1.0;
                one_hot
            })
            .collect();
        dev_score(&shifted, examples, labels, false)
    };
    let mut offsets = vec![0.0f32; labels];
    let mut best = macro_f1(&offsets);
    for _round in 0..3 {
        for label in 1..labels {
            for step in -40..=40 {
                let mut candidate = offsets.clone();
                candidate[label] = step as f32 * 0.05;
                let score = macro_f1(&candidate);
                if score > best + 1e-9 {
                    (best, offsets) = (score, candidate);
                }
            }
        }
    }
    offsets
}

/// Stacks members' hidden layers and averages their outputs: `layer0` rows concatenated,
/// `layer1` columns concatenated and divided by the member count, output biases averaged.
fn merge(outcomes: &[TrainOutcome], hidden_layers: usize, members: usize) -> anyhow::Result<HashMap<String, Tensor>> {
    let get = |o: &TrainOutcome, name: &str| -> anyhow::Result<Tensor> {
        o.tensors.get(name).cloned().ok_or_else(|| anyhow::anyhow!("member lacks {name}"))
    };
    let scale = 1.0 / members as f64;
    let all = |name: &str| outcomes.iter().map(|o| get(o, name)).collect::<anyhow::Result<Vec<_>>>();
    let mut merged = HashMap::new();
    if hidden_layers == 0 {
        for name in ["layer0.weight", "layer0.bias"] {
            merged.insert(name.to_string(), (Tensor::stack(&all(name)?, 0)?.sum(0)? * scale)?);
        }
        return Ok(merged);
    }
    merged.insert("layer0.weight".into(), Tensor::cat(&all("layer0.weight")?, 0)?);
    merged.insert("layer0.bias".into(), Tensor::cat(&all("layer0.bias")?, 0)?);
    merged.insert("layer1.weight".into(), (Tensor::cat(&all("layer1.weight")?, 1)? * scale)?);
    merged.insert("layer1.bias".into(), (Tensor::stack(&all("layer1.bias")?, 0)?.sum(0)? * scale)?);
    Ok(merged)
}

fn merged_logits(tensors: &HashMap<String, Tensor>, hidden_layers: usize, x: &Tensor) -> anyhow::Result<Tensor> {
    let layer = |i: usize, x: &Tensor| -> anyhow::Result<Tensor> {
        let weight = &tensors[&format!("layer{i}.weight")];
        let bias = &tensors[&format!("layer{i}.bias")];
        Ok(x.matmul(&weight.t()?)?.broadcast_add(bias)?)
    };
    let mut x = x.clone();
    for i in 0..hidden_layers {
        x = layer(i, &x)?.relu()?;
    }
    layer(hidden_layers, &x)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two separable blobs in 6 dimensions, labels 0/1/2 by the sign pattern.
    fn data(n: usize, seed: u64) -> (Vec<f32>, Vec<Example>) {
        let mut rng = SeededRng::new(seed);
        let mut x = Vec::new();
        let mut examples = Vec::new();
        for i in 0..n {
            let label = i % 3;
            for d in 0..6 {
                let centre = if d % 3 == label { 1.0 } else { 0.0 };
                x.push(centre + (rng.next_f64() as f32 - 0.5) * 0.6);
            }
            examples.push(Example { text: String::new(), labels: vec![label], source: "s".into() });
        }
        (x, examples)
    }

    #[test]
    fn an_ensemble_merges_into_one_head_whose_logits_are_the_members_mean() {
        let (train_x, train_rows) = data(90, 1);
        let (dev_x, dev_rows) = data(30, 2);
        let shape = HeadShape { dims: 6, hidden: &[4], labels: 3, multi_label: false };
        let settings = TrainSettings { epochs: 20, ensemble: 3, ..TrainSettings::default() };
        let train_split = Split { embeddings: &train_x, examples: &train_rows };
        let dev = Split { embeddings: &dev_x, examples: &dev_rows };
        let (merged, hidden) = train_ensemble(&shape, &settings, &train_split, &dev, false).unwrap();
        assert_eq!(hidden, [12]);
        assert_eq!(merged.tensors["layer0.weight"].dims(), [12, 6]);
        assert_eq!(merged.tensors["layer1.weight"].dims(), [3, 12]);

        let x = to_tensor(&dev_x, dev_rows.len(), 6).unwrap();
        let mut mean = Tensor::zeros((dev_rows.len(), 3), DType::F32, &Device::Cpu).unwrap();
        for member in 0..3 {
            let member_settings = TrainSettings { seed: settings.seed + member, ..settings.clone() };
            let outcome = train(&shape, &member_settings, &train_split, &dev, false).unwrap();
            mean = (mean + merged_logits(&outcome.tensors, 1, &x).unwrap()).unwrap();
        }
        let mean = (mean / 3.0).unwrap();
        let merged_logits = merged_logits(&merged.tensors, 1, &x).unwrap();
        let diff = (mean - merged_logits).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "merged logits differ from the members' mean by {diff}");
    }
}
