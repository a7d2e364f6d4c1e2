//! Element-wise and row-wise kernels: GELU, residual + LayerNorm.

use super::{math, multiversion, parallel_for, sum, team, SharedOut};

/// Rows handled by one parallel task: enough work to amortise the task.
const MIN_ROWS_PER_TASK: usize = 8;
/// Below this many elements, waking pool threads costs more than the work (batch-1 profiles
/// showed ~14% of the time in the scheduler).
const PARALLEL_THRESHOLD: usize = 64 * 1024;
/// The same inside a team, where a region costs a few atomic operations, not a wake-up.
const TEAM_PARALLEL_THRESHOLD: usize = 8 * 1024;

/// Elements handled by one parallel task in element-wise kernels.
const MIN_ELEMENTS_PER_TASK: usize = 4096;

fn parallel_pays(elements: usize) -> bool {
    elements >= if team::leading() { TEAM_PARALLEL_THRESHOLD } else { PARALLEL_THRESHOLD }
}

/// Runs `f(index, chunk)` over consecutive chunks of `chunk_len` elements of `x`, in parallel.
fn for_each_chunk(x: &mut [f32], chunk_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let len = x.len();
    let out = SharedOut::new(x);
    parallel_for(len.div_ceil(chunk_len), |index| {
        let start = index * chunk_len;
        let end = (start + chunk_len).min(len);
        // SAFETY: the chunks are disjoint ranges inside `x`, which outlives the call.
        let chunk = unsafe { std::slice::from_raw_parts_mut(out.get().add(start), end - start) };
        f(index, chunk);
    });
}

/// `x = gelu(x)` in place (exact erf form). The bias was already fused into the matmul.
pub fn gelu(x: &mut [f32]) {
    if !parallel_pays(x.len()) {
        return gelu_chunk(x);
    }
    for_each_chunk(x, MIN_ELEMENTS_PER_TASK, |_, chunk| gelu_chunk(chunk));
}

multiversion!(fn gelu_chunk(chunk: &mut [f32]) => gelu_chunk_body);

#[inline(always)]
fn gelu_chunk_body(chunk: &mut [f32]) {
    for value in chunk.iter_mut() {
        *value = math::gelu_erf(*value);
    }
}

/// `x = LayerNorm(x + residual) * gamma + beta`, row by row, in place.
pub fn add_layer_norm(x: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let width = gamma.len();
    assert_eq!(x.len(), residual.len());
    assert_eq!(x.len() % width, 0, "matrix width must match gamma");
    let rows = |x: &mut [f32], residual: &[f32]| {
        for (row, res) in x.chunks_mut(width).zip(residual.chunks(width)) {
            add_layer_norm_row(row, res, gamma, beta, eps);
        }
    };
    if !parallel_pays(x.len()) {
        return rows(x, residual);
    }
    let chunk_len = width * MIN_ROWS_PER_TASK;
    for_each_chunk(x, chunk_len, |index, chunk| rows(chunk, &residual[index * chunk_len..][..chunk.len()]));
}

/// `x = LayerNorm(x) * gamma + beta`, row by row, in place.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let width = gamma.len();
    assert_eq!(x.len() % width, 0, "matrix width must match gamma");
    let rows = |x: &mut [f32]| x.chunks_mut(width).for_each(|row| normalize_row(row, gamma, beta, eps));
    if !parallel_pays(x.len()) {
        return rows(x);
    }
    for_each_chunk(x, width * MIN_ROWS_PER_TASK, |_, chunk| rows(chunk));
}

multiversion!(fn add_layer_norm_row(row: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) => add_layer_norm_row_body);
multiversion!(fn normalize_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) => normalize_row_body);

#[inline(always)]
fn add_layer_norm_row_body(row: &mut [f32], residual: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
    for (value, r) in row.iter_mut().zip(residual) {
        *value += r;
    }
    normalize_row_body(row, gamma, beta, eps);
}

#[inline(always)]
fn normalize_row_body(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    // Two-pass variance: the one-pass form loses precision on rows with a large mean.
    let mut acc = [0.0f32; super::LANES];
    let chunks = row.len() / super::LANES * super::LANES;
    for chunk in row[..chunks].chunks_exact(super::LANES) {
        for lane in 0..super::LANES {
            let d = chunk[lane] - mean;
            acc[lane] += d * d;
        }
    }
    let tail: f32 = row[chunks..].iter().map(|v| (v - mean) * (v - mean)).sum();
    let variance = (acc.iter().sum::<f32>() + tail) / n;
    let inv_std = 1.0 / (variance + eps).sqrt();
    for ((value, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *value = (*value - mean) * inv_std * g + b;
    }
}
