//! Branch-free float approximations that the compiler can vectorise (libm's `expf`/`erff` are
//! scalar calls and were ~11% of the encoder's time in GELU).

const LOG2_E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding and subtracting it rounds a float to the nearest integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// e^x, relative error below 2e-7 on [-87, 88]; inputs are clamped to that range.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E + ROUND_MAGIC) - ROUND_MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Cephes expf polynomial for e^r on |r| <= ln(2)/2.
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) << 23) as u32);
    y * scale
}

/// erf(x), absolute error below 2e-7 (Abramowitz & Stegun 7.1.26).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let ax = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * ax);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_7) * t - 0.284_496_74) * t + 0.254_829_6) * t;
    let y = 1.0 - poly * exp(-ax * ax);
    y.copysign(x)
}

/// GELU with the exact (erf) form, as BERT's `hidden_act = "gelu"`.
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let (got, want) = (exp(x), x.exp());
            assert!(((got - want) / want).abs() < 3e-7, "exp({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn erf_and_gelu_match_f64_reference() {
        for i in -1000..=1000 {
            let x = i as f32 / 100.0;
            let want = libm_erf(x as f64);
            // A&S 7.1.26's own bound (1.5e-7) plus a few f32 roundings near 1.0.
            let error = (erf(x) as f64 - want).abs();
            assert!(error < 4e-7, "erf({x}) off by {error}");
            let gelu_want = 0.5 * x as f64 * (1.0 + libm_erf(x as f64 / std::f64::consts::SQRT_2));
            assert!((gelu_erf(x) as f64 - gelu_want).abs() < 2e-6 * (1.0 + x.abs() as f64), "gelu({x})");
        }
    }

    /// erf in f64: Taylor series up to 3 (error < 1e-12 there), asymptotic erfc beyond.
    fn libm_erf(x: f64) -> f64 {
        let ax = x.abs();
        if ax > 3.0 {
            let x2 = ax * ax;
            let erfc = (-x2).exp() / (ax * std::f64::consts::PI.sqrt())
                * (1.0 - 1.0 / (2.0 * x2) + 3.0 / (4.0 * x2 * x2) - 15.0 / (8.0 * x2 * x2 * x2));
            return x.signum() * (1.0 - erfc);
        }
        let mut term = x;
        let mut total = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            total += term / (2 * n + 1) as f64;
            if term.abs() < 1e-17 {
                break;
            }
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }
}
