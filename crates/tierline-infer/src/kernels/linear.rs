//! Dense layer `y = x W^T + b`: a micro-kernel over weights packed once into panels of 16
//! output columns (AVX2 + FMA), or gemm (candle's CPU matmul engine) with the bias fused into the
//! product.
//!
//! Why the panels: gemm packs the weight into its own layout on every call. At batch 32 that
//! cost is spread over a thousand rows; at one text (~20 rows) it is a second pass over every
//! weight, and the layer is memory-bound. The pre-packed panels are read once per call, and the
//! 6-row tiles keep twelve FMA accumulators busy whatever the batch.

use gemm::Parallelism;

use std::sync::OnceLock;

use super::{for_each_block, SharedOut, SimdLevel, PANEL, TILE_ROWS};

pub struct PackedLinear {
    /// `[panels][in_dim][PANEL]`: for each input, the weights of a panel's 16 columns side by
    /// side, as the micro-kernel loads them. Zero padded to whole panels.
    panels: Vec<f32>,
    /// `W^T`, row-major `[in_dim, out_dim]`: gemm's input, made from the panels the first time
    /// gemm runs, so a machine that never takes that path never holds the weights twice.
    weight_t: OnceLock<Vec<f32>>,
    bias: Vec<f32>,
    /// `bias` zero padded to whole panels.
    padded_bias: Vec<f32>,
    in_dim: usize,
    out_dim: usize,
}

/// Which path a forward pass takes; `Auto` picks by batch size and CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinearPath {
    Auto,
    Gemm,
    Panels,
}

impl LinearPath {
    /// With AVX2 the panels, at every batch size: on an AVX-512 Xeon they matched gemm's
    /// AVX-512 kernels at batch 32 and were twice as fast at one text (README, "Batch 1").
    /// Without AVX2, gemm.
    fn choose(self) -> Self {
        let panels = cfg!(target_arch = "x86_64") && super::simd_level() != SimdLevel::Baseline;
        match self {
            LinearPath::Auto | LinearPath::Panels if panels => LinearPath::Panels,
            _ => LinearPath::Gemm,
        }
    }
}

/// Where weight `(input, output)` sits in the panel layout.
fn panel_index(input: usize, output: usize, in_dim: usize) -> usize {
    ((output / PANEL) * in_dim + input) * PANEL + output % PANEL
}

fn pad_to_panels(bias: &[f32]) -> Vec<f32> {
    let mut padded = bias.to_vec();
    padded.resize(bias.len().div_ceil(PANEL) * PANEL, 0.0);
    padded
}

impl PackedLinear {
    /// `weight` is PyTorch's row-major `[out_dim, in_dim]`.
    pub fn new(weight: &[f32], bias: Vec<f32>, out_dim: usize, in_dim: usize) -> Self {
        assert_eq!(weight.len(), out_dim * in_dim, "weight shape");
        assert_eq!(bias.len(), out_dim, "bias shape");
        let mut panels = vec![0.0; out_dim.div_ceil(PANEL) * in_dim * PANEL];
        for o in 0..out_dim {
            for i in 0..in_dim {
                panels[panel_index(i, o, in_dim)] = weight[o * in_dim + i];
            }
        }
        let padded_bias = pad_to_panels(&bias);
        Self { panels, weight_t: OnceLock::new(), bias, padded_bias, in_dim, out_dim }
    }

    /// Stacks several layers that read the same input (Q, K, V) into one wider product.
    pub fn concat(parts: &[PackedLinear]) -> Self {
        let in_dim = parts[0].in_dim;
        assert!(parts.iter().all(|p| p.in_dim == in_dim), "inputs must match");
        let out_dim: usize = parts.iter().map(|p| p.out_dim).sum();
        let mut panels = vec![0.0; out_dim.div_ceil(PANEL) * in_dim * PANEL];
        // Columns move between panels when a part's width is not a multiple of PANEL.
        let mut target = 0;
        for part in parts {
            for o in 0..part.out_dim {
                for i in 0..in_dim {
                    panels[panel_index(i, target, in_dim)] = part.panels[panel_index(i, o, in_dim)];
                }
                target += 1;
            }
        }
        let bias: Vec<f32> = parts.iter().flat_map(|p| p.bias.iter().copied()).collect();
        let padded_bias = pad_to_panels(&bias);
        Self { panels, weight_t: OnceLock::new(), bias, padded_bias, in_dim, out_dim }
    }

    fn weight_t(&self) -> &[f32] {
        self.weight_t.get_or_init(|| {
            let mut weight_t = vec![0.0; self.in_dim * self.out_dim];
            for i in 0..self.in_dim {
                for o in 0..self.out_dim {
                    weight_t[i * self.out_dim + o] = self.panels[panel_index(i, o, self.in_dim)];
                }
            }
            weight_t
        })
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// `out[rows, out_dim] = x[rows, in_dim] W^T + b`; `out` is resized, its buffer reused.
    pub fn forward(&self, x: &[f32], rows: usize, out: &mut Vec<f32>, threads: usize) {
        self.forward_with(LinearPath::Auto, x, rows, out, threads);
    }

    pub(crate) fn forward_with(&self, path: LinearPath, x: &[f32], rows: usize, out: &mut Vec<f32>, threads: usize) {
        assert_eq!(x.len(), rows * self.in_dim, "input shape");
        if path.choose() == LinearPath::Panels {
            self.forward_panels(x, rows, out, threads);
            return;
        }
        out.clear();
        out.reserve(rows * self.out_dim);
        for _ in 0..rows {
            out.extend_from_slice(&self.bias);
        }
        if rows == 0 {
            return;
        }
        let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
        // SAFETY: `out` holds rows x out_dim values and no one else writes it.
        unsafe { self.gemm(x, rows, SharedOut::new(out), parallelism) };
    }

    /// The short-batch path: tasks are (row chunk, panel range) rectangles of the output, so
    /// that one text still keeps every thread busy.
    fn forward_panels(&self, x: &[f32], rows: usize, out: &mut Vec<f32>, threads: usize) {
        out.clear();
        out.resize(rows * self.out_dim, 0.0);
        if rows == 0 {
            return;
        }
        let output = SharedOut::new(out);
        for_each_block(rows, self.out_dim.div_ceil(PANEL), threads, |row_range, panel_range| {
            // SAFETY: the blocks are disjoint rectangles of `out`, which outlives the call.
            unsafe { self.run_panels(x, row_range, panel_range, output) };
        });
    }

    /// Computes output rows `row_range` x the columns of panels `panel_range`.
    ///
    /// # Safety
    /// The micro-kernel's CPU features are present; `out` points to a `[rows, out_dim]` buffer
    /// and no other task writes the same rectangle.
    unsafe fn run_panels(
        &self,
        x: &[f32],
        row_range: std::ops::Range<usize>,
        panel_range: std::ops::Range<usize>,
        out: SharedOut,
    ) {
        let panel_len = self.in_dim * PANEL;
        for panel in panel_range {
            let first_column = panel * PANEL;
            let mut row = row_range.start;
            while row < row_range.end {
                let tile_rows = TILE_ROWS.min(row_range.end - row);
                let tile = Tile {
                    x: &x[row * self.in_dim..(row + tile_rows) * self.in_dim],
                    in_dim: self.in_dim,
                    weights: &self.panels[panel * panel_len..(panel + 1) * panel_len],
                    bias: &self.padded_bias[first_column..first_column + PANEL],
                    // SAFETY: `row` and `first_column` are inside the output.
                    out: unsafe { out.get().add(row * self.out_dim + first_column) },
                    out_stride: self.out_dim,
                    columns: PANEL.min(self.out_dim - first_column),
                };
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the caller checked the features; the tile is inside `out`.
                unsafe {
                    avx2::tile(&tile, tile_rows)
                };
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (tile, tile_rows);
                row += tile_rows;
            }
        }
    }

    /// `out[rows, out_dim] += x W^T`.
    ///
    /// # Safety
    /// `out` points to `[rows, out_dim]` values, and no other thread writes them.
    unsafe fn gemm(&self, x: &[f32], rows: usize, out: SharedOut, parallelism: Parallelism) {
        let weight_t = self.weight_t();
        // SAFETY: all three matrices are row-major with the strides given and the lengths checked
        // by `forward`; dst does not alias the inputs.
        unsafe {
            gemm::gemm(
                rows,
                self.out_dim,
                self.in_dim,
                out.get(),
                1,
                self.out_dim as isize,
                true,
                x.as_ptr(),
                1,
                self.in_dim as isize,
                weight_t.as_ptr(),
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

/// One micro-tile: up to TILE_ROWS rows of activations times one weight panel.
struct Tile<'a> {
    x: &'a [f32],
    in_dim: usize,
    weights: &'a [f32],
    bias: &'a [f32],
    out: *mut f32,
    out_stride: usize,
    columns: usize,
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Tile, PANEL};

    /// # Safety
    /// AVX2 and FMA are present; `tile.out` is valid for `rows` rows of `tile.columns` values.
    pub(super) unsafe fn tile(tile: &Tile, rows: usize) {
        unsafe {
            match rows {
                6 => tile_rows::<6>(tile),
                5 => tile_rows::<5>(tile),
                4 => tile_rows::<4>(tile),
                3 => tile_rows::<3>(tile),
                2 => tile_rows::<2>(tile),
                _ => tile_rows::<1>(tile),
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_rows<const R: usize>(tile: &Tile) {
        let in_dim = tile.in_dim;
        debug_assert!(tile.x.len() >= R * in_dim && tile.weights.len() == in_dim * PANEL);
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let weights = tile.weights.as_ptr();
        let x = tile.x.as_ptr();
        for i in 0..in_dim {
            // SAFETY: `i < in_dim`: the panel's 16 weights of input i and each row's value i are
            // inside the slices.
            unsafe {
                let low = _mm256_loadu_ps(weights.add(i * PANEL));
                let high = _mm256_loadu_ps(weights.add(i * PANEL + 8));
                for (r, sums) in acc.iter_mut().enumerate() {
                    let value = _mm256_broadcast_ss(&*x.add(r * in_dim + i));
                    sums[0] = _mm256_fmadd_ps(value, low, sums[0]);
                    sums[1] = _mm256_fmadd_ps(value, high, sums[1]);
                }
            }
        }
        // SAFETY: the bias slice holds PANEL values.
        let (bias_low, bias_high) =
            unsafe { (_mm256_loadu_ps(tile.bias.as_ptr()), _mm256_loadu_ps(tile.bias.as_ptr().add(8))) };
        for (r, sums) in acc.iter().enumerate() {
            let low = _mm256_add_ps(sums[0], bias_low);
            let high = _mm256_add_ps(sums[1], bias_high);
            // SAFETY: row r < R is inside the output, `tile.columns` values wide.
            unsafe { super::super::store_panel_row(tile.out.add(r * tile.out_stride), low, high, tile.columns) };
        }
    }
}
