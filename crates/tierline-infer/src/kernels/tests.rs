//! Each fused kernel against candle's generic ops on random inputs, odd sizes included.

use candle_core::{Device, Tensor, D};

use super::*;

/// Deterministic pseudo-normal values (xorshift, sum of four uniforms), shifted by `mean`.
fn random(shape: &[usize], mean: f64) -> Vec<f32> {
    let len: usize = shape.iter().product();
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (len as u64).wrapping_mul(31) ^ mean.to_bits();
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..len).map(|_| ((0..4).map(|_| uniform()).sum::<f64>() - 2.0) * 1.7 + mean).map(|v| v as f32).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn gelu_matches_candle_gelu_erf() {
    for len in [1, 7, 16, 33, 4097, 10_001] {
        let input = random(&[len], 0.0);
        let mut ours: Vec<f32> = input.iter().map(|v| v * 4.0).collect();
        let theirs =
            Tensor::from_vec(ours.clone(), len, &Device::Cpu).unwrap().gelu_erf().unwrap().to_vec1::<f32>().unwrap();
        gelu(&mut ours);
        assert!(max_abs_diff(&ours, &theirs) < 2e-6, "len {len}: {}", max_abs_diff(&ours, &theirs));
    }
}

#[test]
fn add_layer_norm_matches_candle() {
    for (rows, width) in [(1, 1), (3, 5), (17, 384), (9, 31), (2, 1000)] {
        let x = random(&[rows, width], 0.5);
        let residual = random(&[rows, width], -0.5);
        let gamma = random(&[width], 1.0);
        let beta = random(&[width], 0.0);
        let sum = Tensor::from_vec(
            x.iter().zip(&residual).map(|(a, b)| a + b).collect::<Vec<_>>(),
            (rows, width),
            &Device::Cpu,
        )
        .unwrap();
        let g = Tensor::from_vec(gamma.clone(), width, &Device::Cpu).unwrap();
        let b = Tensor::from_vec(beta.clone(), width, &Device::Cpu).unwrap();
        let theirs =
            candle_nn::ops::layer_norm(&sum, &g, &b, 1e-12).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut ours = x.clone();
        add_layer_norm(&mut ours, &residual, &gamma, &beta, 1e-12);
        if width > 1 {
            assert!(max_abs_diff(&ours, &theirs) < 1e-4, "{rows}x{width}: {}", max_abs_diff(&ours, &theirs));
        }
    }
}

#[test]
fn packed_linear_matches_candle_matmul() {
    for (rows, in_dim, out_dim) in [(1, 3, 5), (7, 384, 1152), (33, 17, 9), (64, 384, 1536)] {
        let x = random(&[rows, in_dim], 0.0);
        let w = random(&[out_dim, in_dim], 0.1);
        let b = random(&[out_dim], 0.2);
        let xt = Tensor::from_vec(x.clone(), (rows, in_dim), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(w.clone(), (out_dim, in_dim), &Device::Cpu).unwrap();
        let bt = Tensor::from_vec(b.clone(), out_dim, &Device::Cpu).unwrap();
        let theirs = xt
            .matmul(&wt.t().unwrap())
            .unwrap()
            .broadcast_add(&bt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let layer = PackedLinear::new(&w, b, out_dim, in_dim);
        let mut ours = Vec::new();
        for threads in [1, 2] {
            layer.forward(&x, rows, &mut ours, threads);
            assert!(max_abs_diff(&ours, &theirs) < 1e-3, "{rows}x{in_dim}x{out_dim}: {}", max_abs_diff(&ours, &theirs));
        }
    }
}

#[test]
fn prepacked_panels_agree_with_gemm_for_odd_shapes() {
    use super::linear::LinearPath;
    // Partial panels, a partial last tile, a row count over one task's chunk, one row.
    for (rows, in_dim, out_dim) in
        [(1, 3, 5), (7, 17, 33), (13, 384, 1152), (50, 1536, 384), (130, 31, 16), (25, 9, 50)]
    {
        let x = random(&[rows, in_dim], 0.0);
        let layer = PackedLinear::new(&random(&[out_dim, in_dim], 0.1), random(&[out_dim], 0.2), out_dim, in_dim);
        let mut gemm = Vec::new();
        layer.forward_with(LinearPath::Gemm, &x, rows, &mut gemm, 1);
        // The widest kernel the CPU has (AVX-512 where present) and the AVX2 one.
        for (path, threads) in
            [LinearPath::Panels, LinearPath::PanelsAvx2].into_iter().flat_map(|p| [(p, 1), (p, 2), (p, 3)])
        {
            let mut panels = vec![f32::NAN; 3];
            layer.forward_with(path, &x, rows, &mut panels, threads);
            // Only the order of the sums differs: relative to the largest output.
            let scale = gemm.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let diff = max_abs_diff(&panels, &gemm) / scale;
            assert!(diff < 1e-5, "{rows}x{in_dim}x{out_dim}, {path:?}, {threads} threads: {diff}");
        }
    }
}

#[test]
fn concatenated_linear_equals_its_parts() {
    let (rows, in_dim) = (5, 11);
    let x = random(&[rows, in_dim], 0.0);
    let parts: Vec<PackedLinear> = [3, 4]
        .iter()
        .map(|&out| PackedLinear::new(&random(&[out, in_dim], 0.3), random(&[out], 0.0), out, in_dim))
        .collect();
    let (mut a, mut b, mut ab) = (Vec::new(), Vec::new(), Vec::new());
    parts[0].forward(&x, rows, &mut a, 1);
    parts[1].forward(&x, rows, &mut b, 1);
    PackedLinear::concat(&parts).forward(&x, rows, &mut ab, 1);
    for r in 0..rows {
        assert_eq!(&ab[r * 7..r * 7 + 3], &a[r * 3..r * 3 + 3]);
        assert_eq!(&ab[r * 7 + 3..r * 7 + 7], &b[r * 4..r * 4 + 4]);
    }
}

/// Padded multi-head attention with candle ops, as candle-transformers' BERT computes it.
fn reference_attention(qkv: &[f32], lengths: &[usize], heads: usize, head_dim: usize) -> Vec<f32> {
    let hidden = heads * head_dim;
    let mut out = Vec::new();
    let mut start = 0;
    for &len in lengths {
        let rows = Tensor::from_vec(
            qkv[start * 3 * hidden..(start + len) * 3 * hidden].to_vec(),
            (len, 3 * hidden),
            &Device::Cpu,
        )
        .unwrap();
        let split = |i: usize| {
            rows.narrow(1, i * hidden, hidden)
                .unwrap()
                .reshape((len, heads, head_dim))
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (q, k, v) = (split(0), split(1), split(2));
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (head_dim as f64).sqrt()).unwrap();
        let probs = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        let context =
            probs.matmul(&v).unwrap().transpose(0, 1).unwrap().contiguous().unwrap().reshape((len, hidden)).unwrap();
        out.extend(context.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        start += len;
    }
    out
}

#[test]
fn varlen_attention_matches_padded_reference() {
    for (lengths, heads, head_dim) in
        [(vec![1], 1, 1), (vec![5, 1, 13], 3, 7), (vec![36, 9, 64], 12, 32), (vec![257], 2, 17)]
    {
        let tokens: usize = lengths.iter().sum();
        let hidden = heads * head_dim;
        let qkv: Vec<f32> = random(&[tokens, 3 * hidden], 0.0).iter().map(|v| v * 2.0).collect();
        let mut spans = Vec::new();
        let mut start = 0;
        for &len in &lengths {
            spans.push(SeqSpan { start, len });
            start += len;
        }
        let mut ours = vec![0.0; tokens * hidden];
        attention_varlen(&qkv, &spans, heads, head_dim, &mut ours);
        let theirs = reference_attention(&qkv, &lengths, heads, head_dim);
        assert!(max_abs_diff(&ours, &theirs) < 1e-5, "{lengths:?}: {}", max_abs_diff(&ours, &theirs));
    }
}

#[test]
fn every_simd_level_gives_the_same_result() {
    // The dispatcher picks one level per process; the portable bodies are what each compiles.
    let input = random(&[1001], 0.0);
    let mut via_dispatch = input.clone();
    gelu(&mut via_dispatch);
    let portable: Vec<f32> = input.iter().map(|&v| math::gelu_erf(v)).collect();
    assert!(max_abs_diff(&via_dispatch, &portable) < 1e-6);
}

#[test]
fn int8_dot_is_exact_and_quantised_cosine_stays_close_for_odd_sizes() {
    for len in [1usize, 7, 31, 33, 384, 1000] {
        let a = random(&[len], 0.0);
        let b = random(&[len], 0.0);
        let (mut qa, mut qb) = (vec![0i8; len], vec![0i8; len]);
        let (sa, sb) = (super::quantize_i8(&a, &mut qa), super::quantize_i8(&b, &mut qb));
        let exact: i32 = qa.iter().zip(&qb).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum();
        assert_eq!(super::dot_i8(&qa, &qb), exact, "len {len}");
        let approx = exact as f32 * sa * sb;
        let reference = super::dot(&a, &b);
        let norm = super::dot(&a, &a).sqrt() * super::dot(&b, &b).sqrt();
        assert!((approx - reference).abs() / norm < 0.02, "len {len}: {approx} vs {reference}");
    }
    let mut zeros = [1i8; 4];
    assert_eq!(super::quantize_i8(&[0.0; 4], &mut zeros), 0.0);
    assert_eq!(zeros, [0; 4]);
}

#[test]
fn int8_row_scan_matches_one_dot_per_row_for_odd_sizes() {
    for dims in [1usize, 15, 16, 17, 31, 32, 48, 384, 1000] {
        let rows = 5;
        let mut matrix = vec![0i8; rows * dims];
        for (r, row) in matrix.chunks_exact_mut(dims).enumerate() {
            super::quantize_i8(&random(&[dims], r as f64), row);
        }
        let mut query = vec![0i8; dims];
        super::quantize_i8(&random(&[dims], 9.0), &mut query);
        // The extremes: -127 * -127 in every lane must not overflow the pairwise sums.
        matrix[..dims].fill(-127);
        query[0] = -127;
        let mut scores = vec![0i32; rows];
        super::dot_i8_rows(&matrix, &query, &mut scores);
        let expected: Vec<i32> = matrix.chunks_exact(dims).map(|row| super::dot_i8(row, &query)).collect();
        assert_eq!(scores, expected, "dims {dims}");
    }
}

#[test]
fn quantized_linear_simd_kernel_equals_the_portable_one_bit_for_bit() {
    use super::quantized::Kernel;
    // Odd widths (partial panels, an odd input), a row count above one task's chunk, one row.
    for (rows, in_dim, out_dim) in [(1, 3, 5), (7, 17, 33), (13, 384, 1152), (50, 1536, 384), (97, 31, 16)] {
        let x = random(&[rows, in_dim], 0.0);
        let layer = QuantizedLinear::new(&random(&[out_dim, in_dim], 0.1), random(&[out_dim], 0.2), out_dim, in_dim);
        let mut scratch = QuantScratch::default();
        let mut portable = Vec::new();
        layer.forward_with(Kernel::Portable, &x, rows, &mut portable, 1, &mut scratch);
        for threads in [1, 2, 3] {
            let mut best = Vec::new();
            layer.forward_with(Kernel::Best, &x, rows, &mut best, threads, &mut scratch);
            assert_eq!(best, portable, "{rows}x{in_dim}x{out_dim}, {threads} threads");
        }
    }
}

#[test]
fn quantized_linear_stays_close_to_f32() {
    for (rows, in_dim, out_dim) in [(1, 3, 5), (9, 384, 1536), (40, 1536, 384), (5, 33, 17)] {
        let x = random(&[rows, in_dim], 0.0);
        let w = random(&[out_dim, in_dim], 0.0);
        let b = random(&[out_dim], 0.2);
        let mut exact = Vec::new();
        PackedLinear::new(&w, b.clone(), out_dim, in_dim).forward(&x, rows, &mut exact, 1);
        let mut approx = Vec::new();
        QuantizedLinear::new(&w, b, out_dim, in_dim).forward(&x, rows, &mut approx, 2, &mut QuantScratch::default());
        for (r, (e, a)) in exact.chunks_exact(out_dim).zip(approx.chunks_exact(out_dim)).enumerate() {
            let cosine = dot(e, a) / (dot(e, e).sqrt() * dot(a, a).sqrt());
            assert!(cosine > 0.999, "{rows}x{in_dim}x{out_dim} row {r}: cosine {cosine}");
        }
    }
}

#[test]
fn quantized_concatenation_equals_its_parts_and_zero_rows_stay_zero() {
    let (rows, in_dim) = (4, 9);
    let mut x = random(&[rows, in_dim], 0.0);
    x[..in_dim].fill(0.0);
    let parts: Vec<QuantizedLinear> = [3, 20]
        .iter()
        .map(|&out| QuantizedLinear::new(&random(&[out, in_dim], 0.3), random(&[out], 0.0), out, in_dim))
        .collect();
    let mut scratch = QuantScratch::default();
    let (mut a, mut b, mut ab) = (Vec::new(), Vec::new(), Vec::new());
    parts[0].forward(&x, rows, &mut a, 1, &mut scratch);
    parts[1].forward(&x, rows, &mut b, 1, &mut scratch);
    QuantizedLinear::concat(&parts).forward(&x, rows, &mut ab, 1, &mut scratch);
    for r in 0..rows {
        assert_eq!(&ab[r * 23..r * 23 + 3], &a[r * 3..r * 3 + 3]);
        assert_eq!(&ab[r * 23 + 3..r * 23 + 23], &b[r * 20..r * 20 + 20]);
    }
    // A zero input row gives exactly the bias.
    let bias: Vec<f32> = random(&[3], 0.0);
    let layer = QuantizedLinear::new(&random(&[3, in_dim], 0.3), bias.clone(), 3, in_dim);
    layer.forward(&x, rows, &mut a, 1, &mut scratch);
    assert_eq!(&a[..3], &bias[..]);
}
