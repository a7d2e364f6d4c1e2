//! Int8-weight dense layer `y = x W^T + b`: weights quantised once per output channel to int8,
//! activations quantised per row at each call to 16-bit integers, products summed exactly in
//! i32 and rescaled once per output.
//!
//! On AVX2 the inner loop is `vpmaddwd`: sixteen 16-bit products summed pairwise into eight i32
//! lanes per instruction, twice the multiply-adds of an f32 FMA on the same register width. The
//! int8 weights are widened to i16 as they are loaded, so memory traffic stays int8; since the
//! multiply is 16-bit anyway, activations keep more than 8 bits at no cost. Integer sums are exact
//! (the activation range is capped so that no sum can overflow), so the AVX2 kernel and the
//! portable one agree bit for bit, which the tests check.

use super::{for_each_block, SharedOut, PANEL, TILE_ROWS};

/// Largest quantised weight magnitude (symmetric int8, -128 unused).
const QMAX: f32 = 127.0;
/// Largest quantised activation magnitude. `vpmaddwd` multiplies 16-bit values whatever their
/// range, so activations keep up to 15 bits where int8 would lose short texts' accuracy (cosine
/// 0.989 to f32 on "hi" with 8 bits); capped so that no i32 sum can overflow.
fn activation_qmax(in_dim: usize) -> f32 {
    let padded = in_dim.div_ceil(2) * 2;
    (i32::MAX as f32 / (QMAX * padded as f32)).floor().min(i16::MAX as f32)
}

/// Per-call buffers for quantised activations; kept by the caller so that no call allocates.
#[derive(Default)]
pub struct QuantScratch {
    values: Vec<i16>,
    scales: Vec<f32>,
}

pub struct QuantizedLinear {
    /// `[panels][pairs][PANEL columns][2 inputs]` int8: for each pair of inputs the 16 columns of
    /// a panel, each column's two weights side by side as `vpmaddwd` multiplies them. Zero padded
    /// to whole panels and whole pairs.
    packed: Vec<i8>,
    /// Per output column (padded): `w ~ q * scale`.
    scales: Vec<f32>,
    /// Padded to whole panels.
    bias: Vec<f32>,
    in_dim: usize,
    out_dim: usize,
    pairs: usize,
    panels: usize,
}

/// Which inner kernel runs; the portable one is the reference the tests compare against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    Best,
    Portable,
}

impl QuantizedLinear {
    /// `weight` is PyTorch's row-major `[out_dim, in_dim]`.
    pub fn new(weight: &[f32], bias: Vec<f32>, out_dim: usize, in_dim: usize) -> Self {
        assert_eq!(weight.len(), out_dim * in_dim, "weight shape");
        assert_eq!(bias.len(), out_dim, "bias shape");
        let pairs = in_dim.div_ceil(2);
        let panels = out_dim.div_ceil(PANEL);
        let mut packed = vec![0i8; panels * pairs * PANEL * 2];
        let mut scales = vec![0.0f32; panels * PANEL];
        let mut row = vec![0i8; in_dim];
        for o in 0..out_dim {
            scales[o] = super::quantize_i8(&weight[o * in_dim..(o + 1) * in_dim], &mut row);
            let (panel, column) = (o / PANEL, o % PANEL);
            for (i, &q) in row.iter().enumerate() {
                let (pair, half) = (i / 2, i % 2);
                packed[((panel * pairs + pair) * PANEL + column) * 2 + half] = q;
            }
        }
        let mut padded_bias = bias;
        padded_bias.resize(panels * PANEL, 0.0);
        Self { packed, scales, bias: padded_bias, in_dim, out_dim, pairs, panels }
    }

    /// Stacks several layers that read the same input (Q, K, V) into one wider product.
    pub fn concat(parts: &[QuantizedLinear]) -> Self {
        let in_dim = parts[0].in_dim;
        assert!(parts.iter().all(|p| p.in_dim == in_dim), "inputs must match");
        let out_dim: usize = parts.iter().map(|p| p.out_dim).sum();
        let (pairs, panels) = (in_dim.div_ceil(2), out_dim.div_ceil(PANEL));
        let mut merged = Self {
            packed: vec![0i8; panels * pairs * PANEL * 2],
            scales: vec![0.0; panels * PANEL],
            bias: vec![0.0; panels * PANEL],
            in_dim,
            out_dim,
            pairs,
            panels,
        };
        // Columns move between panels when a part's width is not a multiple of PANEL, so copy
        // column by column from each part's packing.
        let mut target = 0;
        for part in parts {
            for o in 0..part.out_dim {
                let (from_panel, from_column) = (o / PANEL, o % PANEL);
                let (to_panel, to_column) = (target / PANEL, target % PANEL);
                for pair in 0..merged.pairs {
                    let from = ((from_panel * part.pairs + pair) * PANEL + from_column) * 2;
                    let to = ((to_panel * merged.pairs + pair) * PANEL + to_column) * 2;
                    merged.packed[to..to + 2].copy_from_slice(&part.packed[from..from + 2]);
                }
                merged.scales[target] = part.scales[o];
                merged.bias[target] = part.bias[o];
                target += 1;
            }
        }
        merged
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// `out[rows, out_dim] = x[rows, in_dim] W^T + b`; `out` is resized, its buffer reused.
    pub fn forward(&self, x: &[f32], rows: usize, out: &mut Vec<f32>, threads: usize, scratch: &mut QuantScratch) {
        self.forward_with(Kernel::Best, x, rows, out, threads, scratch);
    }

    pub(crate) fn forward_with(
        &self,
        kernel: Kernel,
        x: &[f32],
        rows: usize,
        out: &mut Vec<f32>,
        threads: usize,
        scratch: &mut QuantScratch,
    ) {
        assert_eq!(x.len(), rows * self.in_dim, "input shape");
        out.clear();
        out.resize(rows * self.out_dim, 0.0);
        if rows == 0 {
            return;
        }
        quantize_rows(x, self.in_dim, 2 * self.pairs, activation_qmax(self.in_dim), scratch);
        let kernel = match kernel {
            Kernel::Best if avx2_available() => Kernel::Best,
            _ => Kernel::Portable,
        };

        let output = SharedOut::new(out);
        let scratch = &*scratch;
        for_each_block(rows, self.panels, threads, |row_range, panel_range| {
            // SAFETY: the blocks are disjoint rectangles of `out`, which outlives the call.
            unsafe { self.run_block(kernel, scratch, row_range, panel_range, output) };
        });
    }

    /// Computes output rows `row_range` x columns of panels `panel_range`.
    ///
    /// # Safety
    /// `out` points to a `[rows, out_dim]` buffer and no other task writes the same rectangle.
    unsafe fn run_block(
        &self,
        kernel: Kernel,
        scratch: &QuantScratch,
        row_range: std::ops::Range<usize>,
        panel_range: std::ops::Range<usize>,
        out: SharedOut,
    ) {
        let stride = 2 * self.pairs;
        for panel in panel_range {
            let weights = &self.packed[panel * self.pairs * PANEL * 2..(panel + 1) * self.pairs * PANEL * 2];
            let first_column = panel * PANEL;
            let columns = PANEL.min(self.out_dim - first_column);
            let mut row = row_range.start;
            while row < row_range.end {
                let tile_rows = TILE_ROWS.min(row_range.end - row);
                let tile = Tile {
                    activations: &scratch.values[row * stride..(row + tile_rows) * stride],
                    stride,
                    row_scales: &scratch.scales[row..row + tile_rows],
                    weights,
                    col_scales: &self.scales[first_column..first_column + PANEL],
                    bias: &self.bias[first_column..first_column + PANEL],
                    out: unsafe { out.get().add(row * self.out_dim + first_column) },
                    out_stride: self.out_dim,
                    columns,
                };
                match kernel {
                    #[cfg(target_arch = "x86_64")]
                    Kernel::Best => unsafe { avx2::tile(&tile, tile_rows) },
                    _ => unsafe { tile_portable(&tile, tile_rows) },
                }
                row += tile_rows;
            }
        }
    }
}

/// One micro-tile: up to TILE_ROWS rows of quantised activations times one weight panel.
struct Tile<'a> {
    activations: &'a [i16],
    stride: usize,
    row_scales: &'a [f32],
    weights: &'a [i8],
    col_scales: &'a [f32],
    bias: &'a [f32],
    out: *mut f32,
    out_stride: usize,
    columns: usize,
}

fn avx2_available() -> bool {
    cfg!(target_arch = "x86_64") && super::simd_level() != super::SimdLevel::Baseline
}

/// The reference kernel: the same integer sums and the same float epilogue as the AVX2 one.
///
/// # Safety
/// `tile.out` is valid for `rows` rows of `tile.columns` values at `tile.out_stride`.
unsafe fn tile_portable(tile: &Tile, rows: usize) {
    let pairs = tile.weights.len() / (PANEL * 2);
    for r in 0..rows {
        let activations = &tile.activations[r * tile.stride..(r + 1) * tile.stride];
        let mut acc = [0i32; PANEL];
        for pair in 0..pairs {
            let (a0, a1) = (i32::from(activations[2 * pair]), i32::from(activations[2 * pair + 1]));
            let w = &tile.weights[pair * PANEL * 2..(pair + 1) * PANEL * 2];
            for (column, sum) in acc.iter_mut().enumerate() {
                *sum += a0 * i32::from(w[2 * column]) + a1 * i32::from(w[2 * column + 1]);
            }
        }
        for (column, &sum) in acc.iter().enumerate().take(tile.columns) {
            let scale = tile.col_scales[column] * tile.row_scales[r];
            let value = sum as f32 * scale + tile.bias[column];
            unsafe { *tile.out.add(r * tile.out_stride + column) = value };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Tile, PANEL};

    /// # Safety
    /// AVX2 is present; `tile.out` is valid for `rows` rows of `tile.columns` values.
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

    #[target_feature(enable = "avx2")]
    unsafe fn tile_rows<const R: usize>(tile: &Tile) {
        let pairs = tile.weights.len() / (PANEL * 2);
        debug_assert!(tile.activations.len() >= R * tile.stride && tile.row_scales.len() >= R);
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        let weights = tile.weights.as_ptr();
        let activations = tile.activations.as_ptr();
        for pair in 0..pairs {
            // SAFETY: `pair < pairs`, so the 32 bytes of this pair and each row's 2 values are
            // inside the slices.
            unsafe {
                let w = weights.add(pair * PANEL * 2);
                let low = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.cast()));
                let high = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.add(16).cast()));
                for (r, sums) in acc.iter_mut().enumerate() {
                    let both = activations.add(r * tile.stride + 2 * pair).cast::<i32>().read_unaligned();
                    let broadcast = _mm256_set1_epi32(both);
                    sums[0] = _mm256_add_epi32(sums[0], _mm256_madd_epi16(broadcast, low));
                    sums[1] = _mm256_add_epi32(sums[1], _mm256_madd_epi16(broadcast, high));
                }
            }
        }
        // SAFETY: the scale and bias slices hold PANEL values.
        let (scale_low, scale_high, bias_low, bias_high) = unsafe {
            (
                _mm256_loadu_ps(tile.col_scales.as_ptr()),
                _mm256_loadu_ps(tile.col_scales.as_ptr().add(8)),
                _mm256_loadu_ps(tile.bias.as_ptr()),
                _mm256_loadu_ps(tile.bias.as_ptr().add(8)),
            )
        };
        for (r, sums) in acc.iter().enumerate() {
            let row_scale = _mm256_set1_ps(tile.row_scales[r]);
            let low = _mm256_add_ps(
                _mm256_mul_ps(_mm256_cvtepi32_ps(sums[0]), _mm256_mul_ps(scale_low, row_scale)),
                bias_low,
            );
            let high = _mm256_add_ps(
                _mm256_mul_ps(_mm256_cvtepi32_ps(sums[1]), _mm256_mul_ps(scale_high, row_scale)),
                bias_high,
            );
            // SAFETY: row r < R is inside the output, `tile.columns` values wide.
            unsafe { super::super::store_panel_row(tile.out.add(r * tile.out_stride), low, high, tile.columns) };
        }
    }
}

super::multiversion!(fn quantize_rows(x: &[f32], in_dim: usize, stride: usize, qmax: f32, scratch: &mut QuantScratch) => quantize_rows_body);

/// Quantises each row of `x` to i16 values in [-qmax, qmax], rows padded with zeros to
/// `stride`, with one scale per row.
#[inline(always)]
fn quantize_rows_body(x: &[f32], in_dim: usize, stride: usize, qmax: f32, scratch: &mut QuantScratch) {
    let rows = x.len() / in_dim;
    scratch.values.clear();
    scratch.values.resize(rows * stride, 0);
    scratch.scales.clear();
    for (row, out) in x.chunks_exact(in_dim).zip(scratch.values.chunks_exact_mut(stride)) {
        let mut lanes = [0.0f32; super::LANES];
        let whole = in_dim / super::LANES * super::LANES;
        for chunk in row[..whole].chunks_exact(super::LANES) {
            for lane in 0..super::LANES {
                lanes[lane] = lanes[lane].max(chunk[lane].abs());
            }
        }
        let max = row[whole..].iter().fold(lanes.iter().copied().fold(0.0f32, f32::max), |m, v| m.max(v.abs()));
        if max == 0.0 {
            scratch.scales.push(0.0);
            continue;
        }
        let inverse = qmax / max;
        for (q, v) in out.iter_mut().zip(row) {
            *q = (v * inverse).round_ties_even() as i16;
        }
        scratch.scales.push(max / qmax);
    }
}
