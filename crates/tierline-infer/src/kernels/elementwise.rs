//! Element-wise and row-wise kernels: GELU, residual + LayerNorm.

use rayon::prelude::*;

use super::{math, multiversion, sum};

/// Rows handled by one rayon task: enough work to amortise the task.
const MIN_ROWS_PER_TASK: usize = 8;
/// Below this many elements, waking pool threads costs more than the work (batch-1 profiles
/// showed ~14% of the time in the scheduler).
const PARALLEL_THRESHOLD: usize = 64 * 1024;

/// Elements handled by one rayon task in element-wise kernels.
const MIN_ELEMENTS_PER_TASK: usize = 4096;

/// `x = gelu(x)` in place (exact erf form). The bias was already fused into the matmul.
pub fn gelu(x: &mut [f32]) {
    if x.len() < PARALLEL_THRESHOLD {
        return gelu_chunk(x);
    }
    x.par_chunks_mut(MIN_ELEMENTS_PER_TASK).for_each(gelu_chunk);
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
    if x.len() < PARALLEL_THRESHOLD {
        for (row, res) in x.chunks_mut(width).zip(residual.chunks(width)) {
            add_layer_norm_row(row, res, gamma, beta, eps);
        }
        return;
    }
    x.par_chunks_mut(width)
        .zip(residual.par_chunks(width))
        .with_min_len(MIN_ROWS_PER_TASK)
        .for_each(|(row, res)| add_layer_norm_row(row, res, gamma, beta, eps));
}

/// `x = LayerNorm(x) * gamma + beta`, row by row, in place.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let width = gamma.len();
    assert_eq!(x.len() % width, 0, "matrix width must match gamma");
    x.par_chunks_mut(width).with_min_len(MIN_ROWS_PER_TASK).for_each(|row| normalize_row(row, gamma, beta, eps));
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
