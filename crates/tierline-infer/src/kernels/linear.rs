//! Dense layer `y = x W^T + b`: a micro-kernel over weights packed once into panels of 16
//! output columns (AVX2 + FMA, or AVX-512 where present), or gemm (candle's CPU matmul engine)
//! with the bias fused into the product.
//!
//! Why the panels: gemm packs the weight into its own layout on every call. At batch 32 that
//! cost is spread over a thousand rows; at one text (~20 rows) it is a second pass over every
//! weight, and the layer is memory-bound. The pre-packed panels are read once per call, and the
//! tiles keep every FMA accumulator busy whatever the batch: 6 rows by one panel with AVX2 (12
//! of 16 registers), 12 rows by two panels with AVX-512 (24 of 32).

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
    /// The panels with the widest micro-kernel the CPU has.
    Panels,
    /// The panels with the AVX2 micro-kernel even where AVX-512 is present (tests both).
    #[cfg_attr(not(test), allow(dead_code))]
    PanelsAvx2,
}

impl LinearPath {
    /// With AVX2 the panels, at every batch size: on an AVX-512 Xeon they matched gemm's
    /// AVX-512 kernels at batch 32 and were twice as fast at one text (README, "Batch 1").
    /// Without AVX2, gemm.
    fn choose(self) -> Self {
        let panels = cfg!(target_arch = "x86_64") && super::simd_level() != SimdLevel::Baseline;
        match self {
            LinearPath::Auto | LinearPath::Panels if panels => LinearPath::Panels,
            LinearPath::PanelsAvx2 if panels => LinearPath::PanelsAvx2,
            _ => LinearPath::Gemm,
        }
    }
}

fn avx512_present() -> bool {
    super::simd_level() == SimdLevel::V4
}

/// Rows per AVX-512 micro-tile: 12 rows x 2 panels = 24 accumulators, plus 2 weight registers
/// and a broadcast, of 32.
const AVX512_TILE_ROWS: usize = 12;

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
        match path.choose() {
            LinearPath::Panels => return self.forward_panels(x, rows, out, threads, avx512_present()),
            LinearPath::PanelsAvx2 => return self.forward_panels(x, rows, out, threads, false),
            _ => {}
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
    fn forward_panels(&self, x: &[f32], rows: usize, out: &mut Vec<f32>, threads: usize, avx512: bool) {
        out.clear();
        out.resize(rows * self.out_dim, 0.0);
        if rows == 0 {
            return;
        }
        let output = SharedOut::new(out);
        for_each_block(rows, self.out_dim.div_ceil(PANEL), threads, |row_range, panel_range| {
            // SAFETY: the blocks are disjoint rectangles of `out`, which outlives the call.
            unsafe { self.run_panels(x, row_range, panel_range, output, avx512) };
        });
    }

    /// Computes output rows `row_range` x the columns of panels `panel_range`.
    ///
    /// # Safety
    /// The micro-kernel's CPU features are present (AVX-512F where `avx512`); `out` points to a
    /// `[rows, out_dim]` buffer and no other task writes the same rectangle.
    unsafe fn run_panels(
        &self,
        x: &[f32],
        row_range: std::ops::Range<usize>,
        panel_range: std::ops::Range<usize>,
        out: SharedOut,
        avx512: bool,
    ) {
        // AVX2: tiles of 6 rows by one panel. AVX-512: up to 12 rows by two panels (24
        // accumulators of 32), so each broadcast activation feeds two FMAs and each weight load
        // twelve; a lone last panel goes alone.
        let (panel_step, max_tile_rows) = if avx512 { (2, AVX512_TILE_ROWS) } else { (1, TILE_ROWS) };
        let mut panel = panel_range.start;
        while panel < panel_range.end {
            let panels = panel..(panel + panel_step).min(panel_range.end);
            let mut row = row_range.start;
            while row < row_range.end {
                let tile_rows = max_tile_rows.min(row_range.end - row);
                let tile = self.tile(x, row, tile_rows, panels.clone(), out);
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the caller checked the features (AVX-512F where `avx512`); the tile is
                // inside `out`.
                unsafe {
                    match (avx512, panels.len()) {
                        (true, 2) => avx512::tile::<2>(&tile, tile_rows),
                        (true, _) => avx512::tile::<1>(&tile, tile_rows),
                        (false, _) => avx2::tile(&tile, tile_rows),
                    }
                };
                #[cfg(not(target_arch = "x86_64"))]
                let _ = tile;
                row += tile_rows;
            }
            panel = panels.end;
        }
    }

    /// The micro-tile of `rows` rows from `first_row` by the consecutive panels `panels`.
    fn tile<'a>(
        &'a self,
        x: &'a [f32],
        first_row: usize,
        rows: usize,
        panels: std::ops::Range<usize>,
        out: SharedOut,
    ) -> Tile<'a> {
        let panel_len = self.in_dim * PANEL;
        let first_column = panels.start * PANEL;
        let end_column = panels.end * PANEL;
        Tile {
            x: &x[first_row * self.in_dim..(first_row + rows) * self.in_dim],
            in_dim: self.in_dim,
            weights: &self.panels[panels.start * panel_len..panels.end * panel_len],
            bias: &self.padded_bias[first_column..end_column],
            // SAFETY: `first_row` and `first_column` are inside the output.
            out: unsafe { out.get().add(first_row * self.out_dim + first_column) },
            out_stride: self.out_dim,
            columns: end_column.min(self.out_dim) - first_column,
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

/// One micro-tile: a few rows of activations times one or more consecutive weight panels.
struct Tile<'a> {
    x: &'a [f32],
    in_dim: usize,
    /// The tile's panels, one after the other (`in_dim * PANEL` values each).
    weights: &'a [f32],
    /// PANEL values per panel.
    bias: &'a [f32],
    out: *mut f32,
    out_stride: usize,
    /// Output columns to store, across all the tile's panels (fewer in a partial last panel).
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

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Tile, PANEL};

    /// # Safety
    /// AVX-512F is present; `tile.weights` holds `P` panels; `tile.out` is valid for `rows` rows
    /// of `tile.columns` values.
    pub(super) unsafe fn tile<const P: usize>(tile: &Tile, rows: usize) {
        unsafe {
            match rows {
                12 => tile_rows::<12, P>(tile),
                11 => tile_rows::<11, P>(tile),
                10 => tile_rows::<10, P>(tile),
                9 => tile_rows::<9, P>(tile),
                8 => tile_rows::<8, P>(tile),
                7 => tile_rows::<7, P>(tile),
                6 => tile_rows::<6, P>(tile),
                5 => tile_rows::<5, P>(tile),
                4 => tile_rows::<4, P>(tile),
                3 => tile_rows::<3, P>(tile),
                2 => tile_rows::<2, P>(tile),
                _ => tile_rows::<1, P>(tile),
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn tile_rows<const R: usize, const P: usize>(tile: &Tile) {
        let in_dim = tile.in_dim;
        let panel_len = in_dim * PANEL;
        debug_assert!(tile.x.len() >= R * in_dim && tile.weights.len() == P * panel_len);
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        let weights = tile.weights.as_ptr();
        let x = tile.x.as_ptr();
        for i in 0..in_dim {
            // SAFETY: `i < in_dim`: each panel's 16 weights of input i and each row's value i
            // are inside the slices.
            unsafe {
                let mut panel_weights = [_mm512_setzero_ps(); P];
                for (p, w) in panel_weights.iter_mut().enumerate() {
                    *w = _mm512_loadu_ps(weights.add(p * panel_len + i * PANEL));
                }
                for (r, sums) in acc.iter_mut().enumerate() {
                    let value = _mm512_set1_ps(*x.add(r * in_dim + i));
                    for (sum, w) in sums.iter_mut().zip(&panel_weights) {
                        *sum = _mm512_fmadd_ps(value, *w, *sum);
                    }
                }
            }
        }
        for p in 0..P {
            let columns = tile.columns.saturating_sub(p * PANEL).min(PANEL);
            let mask: __mmask16 = if columns == PANEL { u16::MAX } else { (1u16 << columns) - 1 };
            // SAFETY: the bias slice holds PANEL values per panel; row r < R is inside the
            // output, and the mask stores only its `columns` values.
            unsafe {
                let bias = _mm512_loadu_ps(tile.bias.as_ptr().add(p * PANEL));
                for (r, sums) in acc.iter().enumerate() {
                    let at = tile.out.add(r * tile.out_stride + p * PANEL);
                    _mm512_mask_storeu_ps(at, mask, _mm512_add_ps(sums[p], bias));
                }
            }
        }
    }
}
