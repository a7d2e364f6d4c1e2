//! Dense layer `y = x W^T + b` on gemm (candle's CPU matmul engine), with the bias fused into the
//! product and the weight stored pre-transposed for gemm's packing.

use gemm::Parallelism;
use rayon::prelude::*;

use super::SharedOut;

pub struct PackedLinear {
    /// `W^T`, row-major `[in_dim, out_dim]`.
    weight_t: Vec<f32>,
    bias: Vec<f32>,
    in_dim: usize,
    out_dim: usize,
}

impl PackedLinear {
    /// `weight` is PyTorch's row-major `[out_dim, in_dim]`.
    pub fn new(weight: &[f32], bias: Vec<f32>, out_dim: usize, in_dim: usize) -> Self {
        assert_eq!(weight.len(), out_dim * in_dim, "weight shape");
        assert_eq!(bias.len(), out_dim, "bias shape");
        let mut weight_t = vec![0.0; in_dim * out_dim];
        for o in 0..out_dim {
            for i in 0..in_dim {
                weight_t[i * out_dim + o] = weight[o * in_dim + i];
            }
        }
        Self { weight_t, bias, in_dim, out_dim }
    }

    /// Stacks several layers that read the same input (Q, K, V) into one wider product.
    pub fn concat(parts: &[PackedLinear]) -> Self {
        let in_dim = parts[0].in_dim;
        assert!(parts.iter().all(|p| p.in_dim == in_dim), "inputs must match");
        let out_dim: usize = parts.iter().map(|p| p.out_dim).sum();
        let mut weight_t = Vec::with_capacity(in_dim * out_dim);
        for i in 0..in_dim {
            for part in parts {
                weight_t.extend_from_slice(&part.weight_t[i * part.out_dim..(i + 1) * part.out_dim]);
            }
        }
        let bias = parts.iter().flat_map(|p| p.bias.iter().copied()).collect();
        Self { weight_t, bias, in_dim, out_dim }
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// `out[rows, out_dim] = x[rows, in_dim] W^T + b`; `out` is resized, its buffer reused.
    pub fn forward(&self, x: &[f32], rows: usize, out: &mut Vec<f32>, threads: usize) {
        assert_eq!(x.len(), rows * self.in_dim, "input shape");
        out.clear();
        out.reserve(rows * self.out_dim);
        for _ in 0..rows {
            out.extend_from_slice(&self.bias);
        }
        if rows == 0 {
            return;
        }
        if threads > 1 && rows < SMALL_BATCH_ROWS {
            // A short batch (one text is ~36 rows) gives gemm's own row-wise parallelism too
            // little to split: each thread takes a slice of the output columns instead.
            let columns = self.out_dim.div_ceil(threads).next_multiple_of(16);
            let dst = SharedOut::new(out);
            (0..self.out_dim.div_ceil(columns)).into_par_iter().for_each(|part| {
                let first = part * columns;
                let width = columns.min(self.out_dim - first);
                // SAFETY: each part writes its own column range of `out`.
                unsafe { self.gemm_columns(x, rows, dst, first, width, Parallelism::None) };
            });
            return;
        }
        let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
        // SAFETY: `out` holds rows x out_dim values and no one else writes it.
        unsafe { self.gemm_columns(x, rows, SharedOut::new(out), 0, self.out_dim, parallelism) };
    }

    /// `out[:, first..first + width] += x W^T[:, first..first + width]`.
    ///
    /// # Safety
    /// `out` points to `[rows, out_dim]` values, and no other thread writes these columns.
    unsafe fn gemm_columns(
        &self,
        x: &[f32],
        rows: usize,
        out: SharedOut,
        first: usize,
        width: usize,
        parallelism: Parallelism,
    ) {
        // SAFETY: all three matrices are row-major with the strides given and the lengths checked
        // by `forward`; dst does not alias the inputs.
        unsafe {
            gemm::gemm(
                rows,
                width,
                self.in_dim,
                out.get().add(first),
                1,
                self.out_dim as isize,
                true,
                x.as_ptr(),
                1,
                self.in_dim as isize,
                self.weight_t.as_ptr().add(first),
                1,
                self.out_dim as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}

/// Below this many rows, threads split the output columns rather than gemm splitting rows.
const SMALL_BATCH_ROWS: usize = 128;
