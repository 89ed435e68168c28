//! Small CPU math kernels shared by the fused ops and the inference path: a vectorisable `exp`,
//! the scaled row softmax of attention, and in-place residual + RMSNorm / SwiGLU on host
//! buffers.
//!
//! The f32 loops are written branch-free and compiled a second time with AVX-512 (or AVX2) + FMA
//! enabled, selected at run time, so that they vectorise on the machines that have those units
//! and still run everywhere.

/// e^x in f32, computed in f64 and rounded once, so the result is the correctly rounded value
/// except in rare ties (the same numbers as libm's `expf` in practice; the tests bound the error
/// at half an f32 ulp plus 1e-12): x = n ln2 + r with |r| <= ln2/2, a degree-11 Taylor polynomial
/// for e^r (truncation error < 1e-14), then the exponent bits. Branch-free, so the loops around it
/// vectorise. Inputs are clamped to [-87.3, 88]: below, ~1e-38 instead of 0 (harmless in a
/// softmax, whose sum is >= 1).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f64 = std::f64::consts::LOG2_E;
    const LN2: f64 = std::f64::consts::LN_2;
    let x = x.clamp(-87.336_55, 88.0) as f64;
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2;
    // Horner on 1/k!, k = 11..0
    let mut p = 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    (p * f64::from_bits(((n as i64 + 1023) as u64) << 52)) as f32
}

/// `row = softmax(row * scale)` (max-subtracted), the body compiled per instruction set.
#[inline(always)]
fn softmax_row_body(row: &mut [f32], scale: f32) {
    let mut mx = f32::NEG_INFINITY;
    for x in row.iter_mut() {
        *x *= scale;
        mx = mx.max(*x);
    }
    let mut sum = 0f32;
    for x in row.iter_mut() {
        *x = exp_f32(*x - mx);
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn softmax_rows_avx512(p: &mut [f32], width: usize, scale: f32) {
    for row in p.chunks_mut(width) {
        softmax_row_body(row, scale);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(p: &mut [f32], width: usize, scale: f32) {
    for row in p.chunks_mut(width) {
        softmax_row_body(row, scale);
    }
}

/// Whether this CPU has AVX-512 (F + VL) and FMA.
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("fma")
}

/// Whether this CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Softmax of every `width`-long row of `p` after scaling by `scale`.
pub fn softmax_rows(p: &mut [f32], width: usize, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the features were detected at run time.
            return unsafe { softmax_rows_avx512(p, width, scale) };
        }
        if has_avx2() {
            // SAFETY: the features were detected at run time.
            return unsafe { softmax_rows_avx2(p, width, scale) };
        }
    }
    for row in p.chunks_mut(width) {
        softmax_row_body(row, scale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_correctly_rounded() {
        let mut worst_ulps = 0f64;
        for i in 0..200_000 {
            let x = -87.0 + 175.0 * (i as f32 / 200_000.0);
            let (a, b) = (exp_f32(x) as f64, (x as f64).exp());
            let ulp = (b as f32).abs() * f32::EPSILON;
            worst_ulps = worst_ulps.max((a - b).abs() / ulp as f64);
        }
        assert!(worst_ulps <= 0.5 + 1e-6, "worst error {worst_ulps} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-200.0) < 1e-37);
    }

    #[test]
    fn softmax_rows_sum_to_one_and_match_the_definition() {
        let mut p: Vec<f32> = (0..3 * 82)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.9)
            .collect();
        let q = p.clone();
        softmax_rows(&mut p, 82, 0.125);
        for (row, src) in p.chunks(82).zip(q.chunks(82)) {
            let mx = src
                .iter()
                .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64 * 0.125));
            let e: Vec<f64> = src.iter().map(|&x| (x as f64 * 0.125 - mx).exp()).collect();
            let s: f64 = e.iter().sum();
            for (a, b) in row.iter().zip(&e) {
                assert!((*a as f64 - b / s).abs() < 1e-7);
            }
        }
    }
}
