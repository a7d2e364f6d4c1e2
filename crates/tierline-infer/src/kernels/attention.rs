//! Multi-head self-attention over packed sequences: each sequence attends only to its own real
//! tokens, so no work is spent on padding and no mask is materialised.

use std::cell::RefCell;

use super::{math, max, multiversion, parallel_for, SharedOut, LANES};

/// One sequence inside the packed token matrix: rows `start..start + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqSpan {
    pub start: usize,
    pub len: usize,
}

/// `qkv` is `[tokens, 3 * hidden]` (queries, keys, values side by side, heads contiguous inside
/// each); writes the attention context `[tokens, hidden]` into `out`.
pub fn attention_varlen(qkv: &[f32], spans: &[SeqSpan], num_heads: usize, head_dim: usize, out: &mut [f32]) {
    let hidden = num_heads * head_dim;
    let tokens = spans.last().map_or(0, |s| s.start + s.len);
    assert_eq!(qkv.len(), tokens * 3 * hidden, "qkv must be [tokens, 3 * hidden]");
    assert_eq!(out.len(), tokens * hidden, "out must be [tokens, hidden]");
    let out_ptr = SharedOut::new(out);
    let scale = 1.0 / (head_dim as f32).sqrt();
    parallel_for(spans.len() * num_heads, |task| {
        let span = spans[task / num_heads];
        let head = task % num_heads;
        SCRATCH.with_borrow_mut(|scratch| {
            attend_one_head(qkv, span, head, num_heads, head_dim, scale, scratch, out_ptr.get())
        });
    });
}

thread_local! {
    /// Per-thread buffers, reused across tasks and passes.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[derive(Default)]
struct Scratch {
    /// Keys transposed, `[head_dim, len]`: scores for one query are then a sum of scaled rows,
    /// vectorised across key positions with no horizontal reductions.
    keys_t: Vec<f32>,
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
    // Gather this head's keys (transposed, rows padded with zeros to whole vectors) and values.
    let len = span.len;
    let padded = len.div_ceil(LANES) * LANES;
    scratch.keys_t.clear();
    scratch.keys_t.resize(head_dim * padded, 0.0);
    scratch.values.clear();
    for (j, row) in (span.start..span.start + len).enumerate() {
        let base = row * row_width;
        for (c, &key) in qkv[base + k_col..base + k_col + head_dim].iter().enumerate() {
            scratch.keys_t[c * padded + j] = key;
        }
        scratch.values.extend_from_slice(&qkv[base + v_col..base + v_col + head_dim]);
    }
    scratch.scores.resize(padded, 0.0);
    scratch.context.resize(head_dim, 0.0);
    for i in 0..span.len {
        let q_base = (span.start + i) * row_width + q_col;
        let query = &qkv[q_base..q_base + head_dim];
        attend_row(query, &scratch.keys_t, &scratch.values, scale, &mut scratch.scores, &mut scratch.context);
        // SAFETY: row `span.start + i`, columns of `head`: written by this task only, in bounds
        // by the length checks in `attention_varlen`.
        unsafe {
            let dst = out.add((span.start + i) * hidden + head * head_dim);
            std::ptr::copy_nonoverlapping(scratch.context.as_ptr(), dst, head_dim);
        }
    }
}

multiversion!(fn attend_row(query: &[f32], keys_t: &[f32], values: &[f32], scale: f32, scores: &mut [f32], context: &mut [f32]) => attend_row_body);

/// Softmax(q . K^T * scale) . V for one query row. `keys_t` is `[head_dim, padded]` and
/// `scores` has `padded` slots, a multiple of `LANES`; only the first `values.len() / head_dim`
/// positions are real. Both products keep a 16-lane accumulator in registers: one load per
/// multiply-add, no stores in the inner loop.
#[inline(always)]
fn attend_row_body(query: &[f32], keys_t: &[f32], values: &[f32], scale: f32, scores: &mut [f32], context: &mut [f32]) {
    let head_dim = query.len();
    let padded = scores.len();
    let len = values.len() / head_dim;
    for (block, out) in scores.chunks_exact_mut(LANES).enumerate() {
        let mut acc = [0.0f32; LANES];
        for (c, &q) in query.iter().enumerate() {
            let keys = &keys_t[c * padded + block * LANES..c * padded + (block + 1) * LANES];
            for lane in 0..LANES {
                acc[lane] += q * keys[lane];
            }
        }
        for lane in 0..LANES {
            out[lane] = acc[lane] * scale;
        }
    }
    let scores = &mut scores[..len];
    let peak = max(scores);
    // Exponentials first, then the sum: a running `total +=` in the same loop is a strict
    // sequential reduction that keeps the compiler from vectorising the exponentials.
    for score in scores.iter_mut() {
        *score = math::exp(*score - peak);
    }
    let inv_total = 1.0 / super::sum(scores);
    let whole = head_dim / LANES * LANES;
    for (block, out) in context[..whole].chunks_exact_mut(LANES).enumerate() {
        let mut acc = [0.0f32; LANES];
        for (weight, value) in scores.iter().zip(values.chunks_exact(head_dim)) {
            let v = &value[block * LANES..(block + 1) * LANES];
            for lane in 0..LANES {
                acc[lane] += weight * v[lane];
            }
        }
        for lane in 0..LANES {
            out[lane] = acc[lane] * inv_total;
        }
    }
    for c in whole..head_dim {
        let mut acc = 0.0;
        for (weight, value) in scores.iter().zip(values.chunks_exact(head_dim)) {
            acc += weight * value[c];
        }
        context[c] = acc * inv_total;
    }
}
