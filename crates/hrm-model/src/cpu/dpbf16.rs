//! The AVX512-BF16 kernel of the bf16 products ([`crate::cpu::bf16`]), for CPUs without AMX
//! (AMD Zen 4 and later, Intel Cooper Lake): `c[m x n] = a[m x k] · wᵀ` with `a` in bf16 rows of
//! K pairs ([`crate::cpu::rows16`]), `w` packed by [`PackedBf16::pack`] and f32 accumulation.
//!
//! `vdpbf16ps` multiplies 16 pairs of bf16 and adds both products to 16 f32 sums: one packed line
//! (16 columns x one K pair) against one pair of an activation row, broadcast. A micro-tile keeps
//! [`MR`] rows x 32 columns of the result in 24 registers over the whole reduction. Threads split
//! the 32-column panels, and rows are taken in chunks that stay in L2 across the panels.

use std::sync::OnceLock;

use super::bf16::{avx512, PackedBf16, BLOCK};
use super::rows16::Sink;

/// Rows of a micro-tile (2 x [`MR`] accumulators + 2 weight lines + 1 broadcast of 32 registers).
pub(super) const MR: usize = 12;

/// Whether this CPU runs AVX512-BF16 (off with `HRM_NO_SIMD`).
pub(super) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            // (VL and FMA for the SwiGLU gate's loop; every AVX512-BF16 CPU has them)
            avx512()
                && is_x86_feature_detected!("avx512bf16")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// Result columns `[32*b0, 32*b1)` for all rows (with [`Sink::Glu`]: their gated columns
/// `[16*b0, 16*b1)`).
///
/// # Safety
/// AVX512-BF16 available; `ab` is `[up(m, MR), kp]` bf16 in pairs, `w` packed with K padded to
/// `kp`, and `sink` addresses its buffer (see [`Sink`]), which no other thread writes in these
/// columns.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn panels(
    ab: &[u32],
    w: &PackedBf16,
    sink: Sink,
    m: usize,
    kp: usize,
    b0: usize,
    b1: usize,
) {
    let n = w.n;
    let pairs = kp / 2;
    let mp = ab.len() / pairs;
    // rows of activations per pass over the panels: 256 KiB of them, kept in L2
    let chunk = ((1 << 18) / (kp * 2)).max(MR) / MR * MR;
    let lines = super::bf16::flat(&w.tiles).as_ptr();
    let mut edge = [0f32; MR * BLOCK];
    let mut i0 = 0;
    while i0 < mp {
        let i1 = (i0 + chunk).min(mp);
        for cb in b0..b1 {
            let col = cb * BLOCK;
            // SAFETY: strips 2cb and 2cb + 1 exist (N is padded to 32), kp * 16 values each.
            let (lo, hi) = unsafe {
                (
                    lines.add(2 * cb * kp * 16),
                    lines.add((2 * cb + 1) * kp * 16),
                )
            };
            let mut r = i0;
            while r < i1 {
                let a = ab[r * pairs..].as_ptr();
                let c = match sink {
                    Sink::F32(c) => c,
                    Sink::Glu { out, ld } => {
                        // SAFETY: the edge buffer is MR x 32 at stride 32; rows r..r + MR of the
                        // output exist (it has up(m, MR) rows) and columns 16cb..16cb + 16 are
                        // this task's.
                        unsafe {
                            tile(a, pairs, lo, hi, edge.as_mut_ptr(), BLOCK);
                            super::rows16::gate(&edge, out.0.add(r * ld + cb * 16), ld);
                        }
                        r += MR;
                        continue;
                    }
                };
                let full = r + MR <= m && col + BLOCK <= n;
                if full {
                    // SAFETY: MR rows x 32 columns inside `c` at row stride n; operands padded.
                    unsafe { tile(a, pairs, lo, hi, c.0.add(r * n + col), n) };
                } else {
                    // SAFETY: the edge buffer is MR x 32 at stride 32.
                    unsafe { tile(a, pairs, lo, hi, edge.as_mut_ptr(), BLOCK) };
                    for i in 0..MR.min(m.saturating_sub(r)) {
                        for j in 0..BLOCK.min(n - col) {
                            // SAFETY: (r + i, col + j) is inside m x n.
                            unsafe { *c.0.add((r + i) * n + col + j) = edge[i * BLOCK + j] };
                        }
                    }
                }
                r += MR;
            }
        }
        i0 = i1;
    }
}

/// One micro-tile: `dst[MR x 32] (row stride ld) = a[MR rows of pairs] · [lo | hi]` over `pairs`
/// K pairs.
///
/// # Safety
/// AVX512-BF16 available; `a` addresses MR rows of `pairs` u32 (row stride `pairs`), `lo` and
/// `hi` `pairs` lines of 32 u16 each, `dst` MR rows of 32 writable f32 at stride `ld`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn tile(
    a: *const u32,
    pairs: usize,
    lo: *const u16,
    hi: *const u16,
    dst: *mut f32,
    ld: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 2 * MR];
    for p in 0..pairs {
        // SAFETY: (whole loop) inside the operands by the caller's contract; __m512i and
        // __m512bh are both 64 bytes of plain bits.
        unsafe {
            let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(lo.add(p * 32) as *const _));
            let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(hi.add(p * 32) as *const _));
            for i in 0..MR {
                let x: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*a.add(i * pairs + p) as i32));
                acc[2 * i] = _mm512_dpbf16_ps(acc[2 * i], x, w0);
                acc[2 * i + 1] = _mm512_dpbf16_ps(acc[2 * i + 1], x, w1);
            }
        }
    }
    for i in 0..MR {
        // SAFETY: row i of the destination holds 32 floats.
        unsafe {
            _mm512_storeu_ps(dst.add(i * ld), acc[2 * i]);
            _mm512_storeu_ps(dst.add(i * ld + 16), acc[2 * i + 1]);
        }
    }
}

/// Never called off x86_64, where [`available`] is false.
///
/// # Safety
/// None needed; it panics.
#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn panels(
    _: &[u32],
    _: &PackedBf16,
    _: Sink,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
) {
    unreachable!("AVX512-BF16 is never available off x86_64")
}
