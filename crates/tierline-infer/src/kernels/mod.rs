//! Fused CPU kernels for the packed (padding-free) encoder path.
//!
//! Each kernel has one portable body, compiled three times (AVX-512, AVX2+FMA, baseline) and
//! picked at run time, so the binary runs on any x86-64 and uses the widest vectors present.
//! Reductions use lane-wise accumulators because strict IEEE arithmetic forbids the compiler
//! from vectorising a plain `sum += x` loop. The register-blocked micro-kernels (the dense
//! layers' panels, int8, the int8 row scan) are written with AVX2 intrinsics instead: the
//! compiler does not find their blocking by itself.

mod attention;
mod elementwise;
mod linear;
mod math;
mod quantized;
mod team;

pub use attention::{attention_varlen, SeqSpan};
pub use elementwise::{add_layer_norm, gelu, layer_norm};
pub use linear::PackedLinear;
pub use math::{erf, exp, gelu_erf};
pub use quantized::{QuantScratch, QuantizedLinear};
pub use team::{parallel_for, with_team};

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// AVX-512 F/BW/VL/DQ with FMA.
    V4,
    /// AVX2 with FMA.
    V3,
    Baseline,
}

pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(detect_simd_level)
}

#[cfg(target_arch = "x86_64")]
fn detect_simd_level() -> SimdLevel {
    let forced = std::env::var("TIERLINE_SIMD").unwrap_or_default();
    let v4 = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("fma");
    let v3 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    match forced.as_str() {
        "baseline" => SimdLevel::Baseline,
        "v3" if v3 => SimdLevel::V3,
        _ if v4 => SimdLevel::V4,
        _ if v3 => SimdLevel::V3,
        _ => SimdLevel::Baseline,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_simd_level() -> SimdLevel {
    SimdLevel::Baseline
}

/// Defines `$name` that runs the `#[inline(always)]` body `$body` compiled for the best
/// instruction set the CPU has.
macro_rules! multiversion {
    ($vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:path) => {
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? { $body($($arg),*) }
                match $crate::kernels::simd_level() {
                    // SAFETY: the level was detected from the running CPU's features.
                    $crate::kernels::SimdLevel::V4 => return unsafe { v4($($arg),*) },
                    $crate::kernels::SimdLevel::V3 => return unsafe { v3($($arg),*) },
                    $crate::kernels::SimdLevel::Baseline => {}
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// An output buffer shared by parallel tasks that each write their own disjoint part of it.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(*mut f32);
// SAFETY: every user hands each task a distinct set of elements to write.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    pub(crate) fn new(out: &mut [f32]) -> Self {
        Self(out.as_mut_ptr())
    }

    /// Going through a method makes closures capture the whole (Send) wrapper, not the raw field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Output columns per panel of the register-blocked dense kernels (f32 and int8): two AVX2
/// registers of 32-bit lanes.
pub(crate) const PANEL: usize = 16;
/// Rows per micro-tile: 6 rows x 2 registers = 12 accumulators, plus 2 weight and 1 broadcast
/// register, fit AVX2's 16.
pub(crate) const TILE_ROWS: usize = 6;
/// Rows per task: a task's activations (48 x 1536 values at most for BERT-base widths) stay in
/// L2 while every weight panel streams past them.
pub(crate) const ROW_CHUNK: usize = 48;
/// Tasks per thread when a batch has few row chunks: threads that claim the next task when done
/// even out a thread that started late or was preempted.
const TASKS_PER_THREAD: usize = 4;

/// Runs `block(row_range, panel_range)` over rectangles of an output of `rows` rows and `panels`
/// panels that together cover it once: row chunks when the batch is large, panel ranges too when
/// it is small, so that one text still keeps every thread busy.
pub(crate) fn for_each_block(
    rows: usize,
    panels: usize,
    threads: usize,
    block: impl Fn(std::ops::Range<usize>, std::ops::Range<usize>) + Sync,
) {
    let row_chunks = rows.div_ceil(ROW_CHUNK);
    let wanted = threads * TASKS_PER_THREAD;
    let panel_groups = if threads > 1 && row_chunks < wanted { wanted.div_ceil(row_chunks) } else { 1 };
    // Whole pairs of panels, which the AVX-512 kernel takes two at a time.
    let panels_per_group = panels.div_ceil(panel_groups).next_multiple_of(2);
    let tasks = row_chunks * panel_groups;
    let run = |task: usize| {
        let (chunk, group) = (task / panel_groups, task % panel_groups);
        let row_range = chunk * ROW_CHUNK..((chunk + 1) * ROW_CHUNK).min(rows);
        let panel_range = (group * panels_per_group).min(panels)..((group + 1) * panels_per_group).min(panels);
        block(row_range, panel_range);
    };
    if tasks == 1 || threads <= 1 {
        (0..tasks).for_each(run);
    } else {
        parallel_for(tasks, run);
    }
}

/// Stores one output row of a panel (two registers) at `out`: only `columns` values when the
/// panel is partial, through a local buffer.
///
/// # Safety
/// AVX2 is present; `out` is valid for `columns` (at most PANEL) values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn store_panel_row(
    out: *mut f32,
    low: std::arch::x86_64::__m256,
    high: std::arch::x86_64::__m256,
    columns: usize,
) {
    use std::arch::x86_64::_mm256_storeu_ps;
    // SAFETY: the caller guarantees `columns` values at `out`; the buffer holds PANEL.
    unsafe {
        if columns == PANEL {
            _mm256_storeu_ps(out, low);
            _mm256_storeu_ps(out.add(8), high);
        } else {
            let mut row = [0.0f32; PANEL];
            _mm256_storeu_ps(row.as_mut_ptr(), low);
            _mm256_storeu_ps(row.as_mut_ptr().add(8), high);
            std::ptr::copy_nonoverlapping(row.as_ptr(), out, columns);
        }
    }
}

/// Lanes used by the accumulator arrays: one AVX-512 register of f32.
pub(crate) const LANES: usize = 16;

multiversion!(pub fn dot(a: &[f32], b: &[f32]) -> f32 => dot_body);

multiversion!(pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 => dot_i8_body);

/// Integer dot product of int8 vectors (exact: each product fits i16, the sum i32 for any
/// length below 2^17).
#[inline(always)]
fn dot_i8_body(a: &[i8], b: &[i8]) -> i32 {
    const WIDE: usize = 32;
    let len = a.len().min(b.len());
    let mut acc = [0i32; WIDE];
    let chunks = len / WIDE * WIDE;
    for (ca, cb) in a[..chunks].chunks_exact(WIDE).zip(b[..chunks].chunks_exact(WIDE)) {
        for lane in 0..WIDE {
            acc[lane] += i32::from(ca[lane]) * i32::from(cb[lane]);
        }
    }
    acc.iter().sum::<i32>()
        + a[chunks..len].iter().zip(&b[chunks..len]).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum::<i32>()
}

/// `out[r]` = the integer dot product of row `r` of `rows` (`out.len()` rows of `query.len()`
/// values) with `query`: one call scans a whole matrix, with no dispatch per row.
pub fn dot_i8_rows(rows: &[i8], query: &[i8], out: &mut [i32]) {
    let dims = query.len();
    assert_eq!(rows.len(), dims * out.len(), "rows must hold out.len() rows of query.len() values");
    if dims == 0 {
        out.fill(0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if simd_level() != SimdLevel::Baseline {
        // SAFETY: V3 and V4 both mean the running CPU has AVX2.
        unsafe { scan_avx2::dot_i8_rows(rows, query, out) };
        return;
    }
    for (row, score) in rows.chunks_exact(dims).zip(out) {
        *score = dot_i8_body(row, query);
    }
}

#[cfg(target_arch = "x86_64")]
mod scan_avx2 {
    use std::arch::x86_64::*;

    /// Widening each 16 values to i16 and multiply-adding in pairs (`vpmaddwd`) does 16 products
    /// per instruction, where the generic loop widens to i32 and multiplies 8.
    ///
    /// # Safety
    /// AVX2 is present; `rows.len() == query.len() * out.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot_i8_rows(rows: &[i8], query: &[i8], out: &mut [i32]) {
        let dims = query.len();
        let wide = dims / 16 * 16;
        // SAFETY: every load reads 16 values at `i < wide`, inside `query`.
        let widened: Vec<__m256i> = (0..wide)
            .step_by(16)
            .map(|i| unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(query.as_ptr().add(i).cast())) })
            .collect();
        for (row, score) in rows.chunks_exact(dims).zip(out) {
            let (mut even, mut odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            let mut pairs = widened.chunks_exact(2);
            for (j, pair) in pairs.by_ref().enumerate() {
                // SAFETY: block `2j + 1` ends at or before `wide`, inside the row.
                unsafe {
                    let at = row.as_ptr().add(32 * j);
                    let low = _mm256_cvtepi8_epi16(_mm_loadu_si128(at.cast()));
                    let high = _mm256_cvtepi8_epi16(_mm_loadu_si128(at.add(16).cast()));
                    even = _mm256_add_epi32(even, _mm256_madd_epi16(low, pair[0]));
                    odd = _mm256_add_epi32(odd, _mm256_madd_epi16(high, pair[1]));
                }
            }
            if let [last] = pairs.remainder() {
                // SAFETY: the last whole block of 16 ends at `wide`, inside the row.
                unsafe {
                    let low = _mm256_cvtepi8_epi16(_mm_loadu_si128(row.as_ptr().add(wide - 16).cast()));
                    even = _mm256_add_epi32(even, _mm256_madd_epi16(low, *last));
                }
            }
            let sum = _mm256_add_epi32(even, odd);
            let half = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256::<1>(sum));
            let quarter = _mm_add_epi32(half, _mm_unpackhi_epi64(half, half));
            let lanes = _mm_add_epi32(quarter, _mm_shuffle_epi32::<0b01>(quarter));
            let tail: i32 = row[wide..].iter().zip(&query[wide..]).map(|(a, b)| i32::from(*a) * i32::from(*b)).sum();
            *score = _mm_cvtsi128_si32(lanes) + tail;
        }
    }
}

/// Symmetric int8 quantisation of one vector: `x ~ q * scale`.
pub fn quantize_i8(values: &[f32], out: &mut [i8]) -> f32 {
    let max = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if max == 0.0 {
        out.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    for (q, v) in out.iter_mut().zip(values) {
        *q = (v / scale).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// Sum of `a[i] * b[i]` with lane-wise accumulators (vectorisable).
#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    let len = a.len().min(b.len());
    let mut acc = [0.0f32; LANES];
    let chunks = len / LANES * LANES;
    for (ca, cb) in a[..chunks].chunks_exact(LANES).zip(b[..chunks].chunks_exact(LANES)) {
        for lane in 0..LANES {
            acc[lane] += ca[lane] * cb[lane];
        }
    }
    acc.iter().sum::<f32>() + a[chunks..len].iter().zip(&b[chunks..len]).map(|(x, y)| x * y).sum::<f32>()
}

#[inline(always)]
pub(crate) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = a.len() / LANES * LANES;
    for ca in a[..chunks].chunks_exact(LANES) {
        for lane in 0..LANES {
            acc[lane] += ca[lane];
        }
    }
    acc.iter().sum::<f32>() + a[chunks..].iter().sum::<f32>()
}

#[inline(always)]
pub(crate) fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = a.len() / LANES * LANES;
    for ca in a[..chunks].chunks_exact(LANES) {
        for lane in 0..LANES {
            acc[lane] = acc[lane].max(ca[lane]);
        }
    }
    let head = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    a[chunks..].iter().copied().fold(head, f32::max)
}

#[cfg(test)]
mod tests;
