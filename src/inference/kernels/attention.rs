//! Multi-head self-attention over packed sequences: each sequence attends only to its own real
//! tokens, so no work is spent on padding and no mask is materialised.

use rayon::prelude::*;

use super::{dot, math, max, multiversion};

/// One sequence inside the packed token matrix: rows `start..start + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqSpan {
    pub start: usize,
    pub len: usize,
}

/// Raw output pointer shared by tasks that write disjoint (row, head) blocks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a distinct set of elements (its sequence's rows x its head's columns).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `qkv` is `[tokens, 3 * hidden]` (queries, keys, values side by side, heads contiguous inside
/// each); writes the attention context `[tokens, hidden]` into `out`.
pub fn attention_varlen(qkv: &[f32], spans: &[SeqSpan], num_heads: usize, head_dim: usize, out: &mut [f32]) {
    let hidden = num_heads * head_dim;
    let tokens = spans.last().map_or(0, |s| s.start + s.len);
    assert_eq!(qkv.len(), tokens * 3 * hidden, "qkv must be [tokens, 3 * hidden]");
    assert_eq!(out.len(), tokens * hidden, "out must be [tokens, hidden]");
    let out_ptr = OutPtr(out.as_mut_ptr());
    let scale = 1.0 / (head_dim as f32).sqrt();
    (0..spans.len() * num_heads).into_par_iter().for_each_init(Scratch::default, |scratch, task| {
        let span = spans[task / num_heads];
        let head = task % num_heads;
        let out_ptr = out_ptr;
        attend_one_head(qkv, span, head, num_heads, head_dim, scale, scratch, out_ptr.0);
    });
}

#[derive(Default)]
struct Scratch {
    keys: Vec<f32>,
    values: Vec<f32>,
    scores: Vec<f32>,
    context: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn attend_one_head(
    qkv: &[f32],
    span: SeqSpan,
    head: usize,
    num_heads: usize,
    head_dim: usize,
    scale: f32,
    scratch: &mut Scratch,
    out: *mut f32,
) {
    let hidden = num_heads * head_dim;
    let row_width = 3 * hidden;
    let (q_col, k_col, v_col) = (head * head_dim, hidden + head * head_dim, 2 * hidden + head * head_dim);
    // Gather this head's keys and values contiguously: the inner loops then stream memory.
    scratch.keys.clear();
    scratch.values.clear();
    for row in span.start..span.start + span.len {
        let base = row * row_width;
        scratch.keys.extend_from_slice(&qkv[base + k_col..base + k_col + head_dim]);
        scratch.values.extend_from_slice(&qkv[base + v_col..base + v_col + head_dim]);
    }
    scratch.scores.resize(span.len, 0.0);
    scratch.context.resize(head_dim, 0.0);
    for i in 0..span.len {
        let q_base = (span.start + i) * row_width + q_col;
        let query = &qkv[q_base..q_base + head_dim];
        attend_row(query, &scratch.keys, &scratch.values, scale, &mut scratch.scores, &mut scratch.context);
        // SAFETY: row `span.start + i`, columns of `head`: written by this task only, in bounds
        // by the length checks in `attention_varlen`.
        unsafe {
            let dst = out.add((span.start + i) * hidden + head * head_dim);
            std::ptr::copy_nonoverlapping(scratch.context.as_ptr(), dst, head_dim);
        }
    }
}

multiversion!(fn attend_row(query: &[f32], keys: &[f32], values: &[f32], scale: f32, scores: &mut [f32], context: &mut [f32]) => attend_row_body);

/// Softmax(q . K^T * scale) . V for one query row.
#[inline(always)]
fn attend_row_body(query: &[f32], keys: &[f32], values: &[f32], scale: f32, scores: &mut [f32], context: &mut [f32]) {
    let head_dim = query.len();
    for (score, key) in scores.iter_mut().zip(keys.chunks_exact(head_dim)) {
        *score = dot(query, key) * scale;
    }
    let peak = max(scores);
    let mut total = 0.0;
    for score in scores.iter_mut() {
        *score = math::exp(*score - peak);
        total += *score;
    }
    let inv_total = 1.0 / total;
    context.fill(0.0);
    for (weight, value) in scores.iter().zip(values.chunks_exact(head_dim)) {
        let weight = weight * inv_total;
        for (c, v) in context.iter_mut().zip(value) {
            *c += weight * v;
        }
    }
}
