//! The optimizers' shared arithmetic (a leaf: the CPU, device and CUDA paths all use it): the
//! Adam state, the per-step scalars and the AdamATan2 element update.

use serde::{Deserialize, Serialize};

/// Moments and step count of one parameter tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamState {
    /// First moment, same size as the parameter.
    pub m: Vec<f32>,
    /// Second moment.
    pub v: Vec<f32>,
    /// Steps taken (the reference keeps it as an f32 scalar per tensor).
    pub t: u64,
}

/// The per-step scalars, computed in f64 and rounded to f32 as the kernel's launcher does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamScalars {
    pub(crate) step_size: f32,
    pub(crate) wd_alpha: f32,
    pub(crate) c2: f32,
    pub(crate) a1: f32,
    pub(crate) a2: f32,
}

/// atan2(y, x) for x >= 0 (the AdamATan2 denominator sqrt(v)/c2 is never negative), branch-free
/// so that the update loop vectorises: Cephes' atanf range reduction and polynomial (relative
/// error < 2e-7, i.e. within ~2 ulp of `f32::atan2`; tested below).
#[inline(always)]
pub(crate) fn atan2_nonneg_x(y: f32, x: f32) -> f32 {
    use std::f32::consts::{FRAC_PI_2, FRAC_PI_4};
    let ay = y.abs();
    // t = |y| / x in [0, inf]; y = 0 (with x = 0 too) gives 0
    let t = if ay == 0.0 { 0.0 } else { ay / x };
    let big = t > 2.414_213_6; // tan(3pi/8)
    let mid = t > 0.414_213_57; // tan(pi/8)
    let (y0, z) = if big {
        (FRAC_PI_2, -1.0 / t)
    } else if mid {
        (FRAC_PI_4, (t - 1.0) / (t + 1.0))
    } else {
        (0.0, t)
    };
    let zz = z * z;
    let poly = ((8.053_744_5e-2 * zz - 1.387_768_6e-1) * zz + 1.997_771_1e-1) * zz - 3.333_295e-1;
    let r = y0 + (poly * zz * z + z);
    r.copysign(y)
}

/// The AdamATan2 0.0.3 update of one contiguous chunk (see the module docs for the formula).
#[inline(always)]
pub(crate) fn adam_chunk_body(
    p: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    k: AdamScalars,
) {
    let n = p.len().min(m.len()).min(v.len()).min(g.len());
    let (p, m, v, g) = (&mut p[..n], &mut m[..n], &mut v[..n], &g[..n]);
    for i in 0..n {
        let gi = g[i];
        let mut pi = p[i] * k.wd_alpha;
        let mi = k.a1.mul_add(gi, (-k.a1).mul_add(m[i], m[i]));
        let vi = k.a2.mul_add(gi * gi, (-k.a2).mul_add(v[i], v[i]));
        pi = (-k.step_size).mul_add(atan2_nonneg_x(mi, vi.sqrt() / k.c2), pi);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
    }
}

/// [`adam_chunk_body`] compiled with hardware FMA and AVX-512 (so `mul_add` is one fused
/// instruction and the loop vectorises; the fused result is the same as the software `fmaf`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn adam_chunk_avx512(
    p: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    k: AdamScalars,
) {
    adam_chunk_body(p, m, v, g, k)
}

/// The same with AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn adam_chunk_avx2(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: AdamScalars) {
    adam_chunk_body(p, m, v, g, k)
}

/// One chunk of the update with the best instruction set this CPU has.
pub(crate) fn adam_chunk(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: AdamScalars) {
    #[cfg(target_arch = "x86_64")]
    {
        if !crate::cpu::simd_enabled() {
            return adam_chunk_body(p, m, v, g, k);
        }
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("fma")
        {
            // SAFETY: the features were detected at run time.
            return unsafe { adam_chunk_avx512(p, m, v, g, k) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the features were detected at run time.
            return unsafe { adam_chunk_avx2(p, m, v, g, k) };
        }
    }
    adam_chunk_body(p, m, v, g, k)
}
