//! Small CPU math kernels shared by the fused ops and the inference path: a vectorisable `exp`,
//! the scaled row softmax of attention, and in-place residual + RMSNorm / SwiGLU on host
//! buffers.
//!
//! The f32 loops are written branch-free and compiled a second time with AVX-512 (or AVX2) + FMA
//! enabled, selected at run time, so that they vectorise on the machines that have those units
//! and still run everywhere.

/// e^x in f32 with the scheme of Cephes' `expf` (x = n ln2 + r, |r| <= ln2/2, a degree-6
/// polynomial for e^r, then the exponent bits): within ~1.5 ulp of the exact value (tested
/// below), like the vectorised `exp` PyTorch uses on CPU (1 ulp). Branch-free, so the loops
/// around it vectorise. Inputs are clamped to [-87.3, 88]: below, ~1e-38 instead of 0 (harmless
/// in a softmax, whose sum is >= 1, and in a sigmoid).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.336_55, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let mut p: f32 = 1.987_569_1e-4;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 5e-1); // Cephes' 5.0000001e-1 rounds to exactly 0.5 in f32
    let y = p.mul_add(r * r, r) + 1.0;
    // 2^n from n's bits: n is a whole number in [-126, 127], so n + 1.5 * 2^23 is exact and its
    // low mantissa bits are n (the value of `((n as i32 + 127) as u32) << 23`, but the loops
    // vectorise: `as i32` saturates and checks for NaN element by element)
    let biased = (n + 12_582_912.0).to_bits().wrapping_sub(0x4b40_0000 - 127);
    y * f32::from_bits(biased << 23)
}

/// Largest element, reduced over 16 independent lanes (so the loop vectorises).
#[inline(always)]
fn max_lanes(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let n = x.len() / 16 * 16;
    for c in x[..n].chunks_exact(16) {
        for k in 0..16 {
            acc[k] = acc[k].max(c[k]);
        }
    }
    let mut m = acc.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for &v in &x[n..] {
        m = m.max(v);
    }
    m
}

/// `row = softmax(row * scale)` (max-subtracted), the body compiled per instruction set: every
/// loop is either element-wise or a 16-lane reduction, so all of them vectorise. Three passes
/// over the row: the maximum of the unscaled values (for `scale > 0`, `max(x) * scale` is
/// `max(x * scale)` exactly: rounding is monotonic), the exponentials with their sum over 16
/// independent lanes (a fixed order, so results do not depend on the machine), and the
/// normalisation.
#[inline(always)]
fn softmax_row_body(row: &mut [f32], scale: f32) {
    let (mx, scale) = if scale > 0.0 {
        (max_lanes(row) * scale, scale)
    } else {
        for x in row.iter_mut() {
            *x *= scale;
        }
        (max_lanes(row), 1.0)
    };
    let mut acc = [0f32; 16];
    let n = row.len() / 16 * 16;
    for c in row[..n].chunks_exact_mut(16) {
        for k in 0..16 {
            let e = exp_f32(c[k] * scale - mx);
            c[k] = e;
            acc[k] += e;
        }
    }
    let mut sum = 0f32;
    for a in acc {
        sum += a;
    }
    for x in &mut row[n..] {
        let e = exp_f32(*x * scale - mx);
        *x = e;
        sum += e;
    }
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// silu(g) * u, the SwiGLU gate of one element, with [`exp_f32`] (every SwiGLU of the CPU paths
/// computes it with this expression, so they agree bit for bit).
#[inline(always)]
pub fn swiglu(g: f32, u: f32) -> f32 {
    g / (1.0 + exp_f32(-g)) * u
}

/// [`swiglu`] element-wise.
#[inline(always)]
fn swiglu_row_body(g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, &gi), &ui) in out.iter_mut().zip(g).zip(u) {
        *o = swiglu(gi, ui);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn swiglu_avx512(g: &[f32], u: &[f32], out: &mut [f32]) {
    swiglu_row_body(g, u, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_avx2(g: &[f32], u: &[f32], out: &mut [f32]) {
    swiglu_row_body(g, u, out)
}

/// `out = silu(g) * u` with the best instruction set of this CPU.
pub fn swiglu_row(g: &[f32], u: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: the features were detected at run time.
            return unsafe { swiglu_avx512(g, u, out) };
        }
        if has_avx2() {
            // SAFETY: the features were detected at run time.
            return unsafe { swiglu_avx2(g, u, out) };
        }
    }
    swiglu_row_body(g, u, out)
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
    crate::cpu::simd_enabled()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("fma")
}

/// Whether this CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    crate::cpu::simd_enabled()
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
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
    fn exp_is_within_two_ulp() {
        let mut worst_ulps = 0f64;
        for i in 0..400_000 {
            let x = -87.0 + 175.0 * (i as f32 / 400_000.0);
            let (a, b) = (exp_f32(x) as f64, (x as f64).exp());
            let ulp = (b as f32).abs() * f32::EPSILON;
            worst_ulps = worst_ulps.max((a - b).abs() / ulp as f64);
        }
        assert!(worst_ulps <= 2.0, "worst error {worst_ulps} ulp");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-200.0) < 1e-37);
    }

    /// [`exp_f32`] with 2^n from the integer cast, as it was first written: the exponent trick
    /// must give its bits for every input.
    fn exp_by_cast(x: f32) -> f32 {
        let x = x.clamp(-87.336_55, 88.0);
        let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
        let r = n.mul_add(2.121_944_4e-4, n.mul_add(-0.693_359_4, x));
        let mut p: f32 = 1.987_569_1e-4;
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            5e-1,
        ] {
            p = p.mul_add(r, c);
        }
        let y = p.mul_add(r * r, r) + 1.0;
        y * f32::from_bits(((n as i32 + 127) as u32) << 23)
    }

    #[test]
    fn exp_equals_the_integer_cast_form_bit_for_bit() {
        let mut x = -200.0f32;
        while x < 200.0 {
            assert_eq!(exp_f32(x).to_bits(), exp_by_cast(x).to_bits(), "x = {x}");
            x += 0.000_731;
        }
        for x in [
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            0.0,
            -0.0,
            1e-40,
        ] {
            assert_eq!(exp_f32(x).to_bits(), exp_by_cast(x).to_bits(), "x = {x}");
        }
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn swiglu_row_matches_the_definition() {
        let g: Vec<f32> = (0..100).map(|i| (i as f32 - 50.0) / 7.0).collect();
        let u: Vec<f32> = (0..100).map(|i| (i as f32 * 0.3).sin()).collect();
        let mut out = vec![0f32; 100];
        swiglu_row(&g, &u, &mut out);
        for i in 0..100 {
            let (gi, ui) = (g[i] as f64, u[i] as f64);
            let want = gi / (1.0 + (-gi).exp()) * ui;
            assert!(
                (out[i] as f64 - want).abs() <= 2e-7 * want.abs().max(1e-6),
                "{i}"
            );
        }
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

    /// The three-pass softmax gives the bits of the plain form (scale every value, take the
    /// maximum, exponentiate, sum over 16 lanes in order, normalise), on rows below, at and past
    /// one 16-lane chunk, with -inf entries (masked scores), a positive and a negative scale.
    #[test]
    fn softmax_rows_equal_the_four_pass_form_bit_for_bit() {
        for &width in &[1usize, 7, 16, 17, 82, 100] {
            for &scale in &[0.125f32, 1.0, -0.5] {
                let mut p: Vec<f32> = (0..4 * width)
                    .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.731)
                    .collect();
                p[width / 2] = f32::NEG_INFINITY;
                let mut want = p.clone();
                for row in want.chunks_mut(width) {
                    row.iter_mut().for_each(|x| *x *= scale);
                    let mx = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                    row.iter_mut().for_each(|x| *x = exp_f32(*x - mx));
                    let n = width / 16 * 16;
                    let mut acc = [0f32; 16];
                    for c in row[..n].chunks_exact(16) {
                        for k in 0..16 {
                            acc[k] += c[k];
                        }
                    }
                    let mut sum = 0f32;
                    for a in acc {
                        sum += a;
                    }
                    for &x in &row[n..] {
                        sum += x;
                    }
                    let inv = 1.0 / sum;
                    row.iter_mut().for_each(|x| *x *= inv);
                }
                softmax_rows(&mut p, width, scale);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&p), bits(&want), "width {width} scale {scale}");
            }
        }
    }
}
