//! f32 products with a weight packed once, for the small batches of inference (`hrm solve`: one
//! puzzle = 82 rows): `c[m x n] = a[m x k] · w[n x k]ᵀ`.
//!
//! A general-purpose kernel packs its operands on every call and blocks for large matrices; with
//! a few dozen rows that overhead and the thin row blocks dominate (the `gemm` crate reaches
//! 50-180 GFLOP/s on these shapes on 2 cores). Here the weight is laid out once in panels of 32
//! columns (`[k][32]`, zero padded), and an AVX-512 micro-kernel keeps a 12 x 32 block of the
//! result in 24 registers over the whole reduction, broadcasting the activations straight from
//! their rows. Threads split the panels. Callers use it where [`fast`] says so (AVX-512, at most
//! [`MAX_ROWS`] rows: for large `m` the `gemm` crate's cache blocking wins); elsewhere it still
//! computes the right numbers, panel by panel through [`crate::cpu::gemm`].
//!
//! Each result is the same sum as the plain definition in a fixed order (k ascending, one fused
//! multiply-add per term), so results do not depend on the thread count.

/// Columns per panel (two 16-lane registers).
const NR: usize = 32;
/// Rows of the register block.
const MR: usize = 12;
/// Reduction steps per pass over the row blocks: a 32 x 128 slice of the panel (16 KiB) stays in
/// L1 while every row block uses it.
const KC: usize = 128;
/// Above this many rows the `gemm` crate's cache blocking wins.
pub const MAX_ROWS: usize = 512;

/// A weight `[n, k]` (row-major, `nn.Linear`'s layout) in panels of 32 output columns.
#[derive(Debug, Clone)]
pub struct PackedF32 {
    n: usize,
    k: usize,
    /// `[ceil(n/32)][k][32]`.
    panels: Vec<f32>,
}

impl PackedF32 {
    /// Pack `w` (`n` rows of `k`).
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(
            w.len(),
            n * k,
            "PackedF32::pack: {} elements, not {n}x{k}",
            w.len()
        );
        use rayon::prelude::*;
        let np = n.div_ceil(NR);
        let mut panels = vec![0f32; np * k * NR];
        if k > 0 {
            panels
                .par_chunks_mut(k * NR)
                .enumerate()
                .for_each(|(p, panel)| {
                    for col in p * NR..(n.min((p + 1) * NR)) {
                        let c = col % NR;
                        for (kk, &v) in w[col * k..(col + 1) * k].iter().enumerate() {
                            panel[kk * NR + c] = v;
                        }
                    }
                });
        }
        Self { n, k, panels }
    }
}

thread_local! {
    /// The calling thread's re-laid activations, kept between calls.
    static A_PACK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether [`matmul`] runs its own kernel for `m` rows on this CPU.
pub fn fast(m: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        m <= MAX_ROWS && crate::cpu::simd_enabled() && is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = m;
        false
    }
}

/// `c[m x n] = a[m x k] · wᵀ` (overwrites `c`).
pub fn matmul(m: usize, a: &[f32], w: &PackedF32, c: &mut [f32]) {
    let (n, k) = (w.n, w.k);
    assert_eq!(a.len(), m * k, "packed::matmul: a is not {m}x{k}");
    assert_eq!(c.len(), m * n, "packed::matmul: c is not {m}x{n}");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0); // an empty sum
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if fast(m) {
            let cp = crate::cpu::gemm::SendPtr(c.as_mut_ptr());
            // the activations re-laid per block of 12 rows as [k][12] (rows padded with zeros):
            // the kernel then broadcasts from one pointer at fixed offsets
            let mut ap = A_PACK.with(|b| std::mem::take(&mut *b.borrow_mut()));
            let blocks = m.div_ceil(MR);
            ap.clear();
            ap.resize(blocks * k * MR, 0.0);
            for r in 0..m {
                let (blk, i) = (r / MR, r % MR);
                let dst = &mut ap[blk * k * MR..(blk + 1) * k * MR];
                for (kk, &v) in a[r * k..(r + 1) * k].iter().enumerate() {
                    dst[kk * MR + i] = v;
                }
            }
            let apr = &ap[..];
            crate::cpu::gemm::split_blocks(n.div_ceil(NR), m * n * k, |p0, p1| {
                let cp = &cp; // the whole wrapper (Sync), not its raw field
                for p in p0..p1 {
                    let panel = &w.panels[p * k * NR..(p + 1) * k * NR];
                    let cols = NR.min(n - p * NR);
                    let mut k0 = 0;
                    while k0 < k {
                        let k1 = (k0 + KC).min(k);
                        let mut r = 0;
                        while r < m {
                            let rows = MR.min(m - r);
                            // SAFETY: AVX-512 was detected; the re-laid block at r holds k x 12,
                            // the panel k x 32, and this task alone reads and writes columns
                            // [32p, 32p + cols) of rows r..r+rows of c (m x n), which hold the
                            // partial sums over 0..k0 when k0 > 0.
                            unsafe {
                                micro(
                                    rows,
                                    Job {
                                        k0,
                                        k1,
                                        a: apr.as_ptr().add(r * k),
                                        b: panel.as_ptr(),
                                        c: cp.0.add(r * n + p * NR),
                                        ldc: n,
                                        cols,
                                    },
                                )
                            };
                            r += rows;
                        }
                        k0 = k1;
                    }
                }
            });
            A_PACK.with(|b| *b.borrow_mut() = ap);
            return;
        }
    }
    for p in 0..n.div_ceil(NR) {
        let cols = NR.min(n - p * NR);
        let panel = crate::cpu::gemm::Mat {
            ptr: w.panels[p * k * NR..].as_ptr(),
            rs: NR as isize,
            cs: 1,
        };
        // SAFETY: a is m x k, the panel k x 32 (cols <= 32 read), c m x n with these columns.
        unsafe {
            crate::cpu::gemm::gemm_generic(
                m,
                cols,
                k,
                c.as_mut_ptr().add(p * NR),
                n as isize,
                1,
                false,
                crate::cpu::gemm::Mat::rows(a, k),
                panel,
                1,
            )
        };
    }
}

/// One register block's work: reduction range `k0..k1` of the re-laid activation rows `a`
/// (`[k][12]`) against the panel `b` (`k x 32`) into `c` (row stride `ldc`, `cols` valid
/// columns), continuing the partial sums in `c` when `k0 > 0`.
#[derive(Clone, Copy)]
struct Job {
    k0: usize,
    k1: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
}

/// Dispatch a block of `rows <= 12` rows to the kernel instantiated for that height.
///
/// # Safety
/// AVX-512F; the job's pointers address `rows` re-laid rows, the panel, and `rows` rows of the
/// result with at least `cols` writable columns (holding the sums over `0..k0` if `k0 > 0`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn micro(rows: usize, job: Job) {
    // SAFETY (every arm): the caller's contract, for the row count of the arm.
    unsafe {
        match rows {
            12 => block::<12>(job),
            11 => block::<11>(job),
            10 => block::<10>(job),
            9 => block::<9>(job),
            8 => block::<8>(job),
            7 => block::<7>(job),
            6 => block::<6>(job),
            5 => block::<5>(job),
            4 => block::<4>(job),
            3 => block::<3>(job),
            2 => block::<2>(job),
            _ => block::<1>(job),
        }
    }
}

/// `R x 32` block of the result, in 2R registers.
///
/// # Safety
/// As [`micro`] with `rows = R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn block<const R: usize>(job: Job) {
    let Job {
        k0,
        k1,
        a,
        b,
        c,
        ldc,
        cols,
    } = job;
    use std::arch::x86_64::*;
    // SAFETY: every read is inside the caller's rows / panel, every write inside its block.
    unsafe {
        let lo: __mmask16 = if cols >= 16 {
            0xffff
        } else {
            ((1u32 << cols) - 1) as u16
        };
        let hi: __mmask16 = if cols >= 32 {
            0xffff
        } else if cols > 16 {
            ((1u32 << (cols - 16)) - 1) as u16
        } else {
            0
        };
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        if k0 > 0 {
            for i in 0..R {
                let row = c.add(i * ldc);
                acc[i][0] = _mm512_maskz_loadu_ps(lo, row);
                if hi != 0 {
                    acc[i][1] = _mm512_maskz_loadu_ps(hi, row.add(16));
                }
            }
        }
        for kk in k0..k1 {
            // the weights stream from memory: ask for them 32 steps (4 KiB) ahead
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((kk + 32) * NR) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add((kk + 32) * NR + 16) as *const i8);
            let b0 = _mm512_loadu_ps(b.add(kk * NR));
            let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
            for i in 0..R {
                let ai = _mm512_set1_ps(*a.add(kk * MR + i));
                acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
            }
        }
        for i in 0..R {
            let row = c.add(i * ldc);
            _mm512_mask_storeu_ps(row, lo, acc[i][0]);
            if hi != 0 {
                // (the pointer exists only where the columns do)
                _mm512_mask_storeu_ps(row.add(16), hi, acc[i][1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cpu::bf16::tests::data;

    /// Against an f64 product, on shapes with every edge (rows not a multiple of 12, columns
    /// not of 32 or under 16) and the model's own; and through the large-`m` fallback.
    #[test]
    fn packed_matmul_matches_the_definition() {
        for &(m, n, k) in &[
            (1, 32, 32),
            (82, 1536, 512),
            (82, 512, 1536),
            (13, 40, 70),
            (25, 7, 3),
            (100, 17, 64),
            (600, 48, 20),
            (3, 5, 0),
        ] {
            let a = data(m * k, 1);
            let wv = data(n * k, 2);
            let w = PackedF32::pack(&wv, n, k);
            let mut got = vec![f32::NAN; m * n];
            matmul(m, &a, &w, &mut got);
            for i in 0..m {
                for j in 0..n {
                    let terms = (0..k).map(|l| (a[i * k + l], wv[j * k + l]));
                    let g = got[i * n + j];
                    if fast(m) {
                        // the kernel's documented order: k ascending, one fused multiply-add each
                        let want = terms.fold(0f32, |acc, (x, y)| x.mul_add(y, acc));
                        assert_eq!(g, want, "{m}x{n}x{k} [{i},{j}]");
                    } else {
                        // the gemm crate sums in its own order: within the f32 summation bound
                        let (want, mag) = terms.fold((0f64, 0f64), |(s, t), (x, y)| {
                            (s + x as f64 * y as f64, t + (x as f64 * y as f64).abs())
                        });
                        let tol = 2.0 * (k as f64).sqrt() * f32::EPSILON as f64 * mag;
                        assert!((g as f64 - want).abs() <= tol, "{m}x{n}x{k} [{i},{j}]");
                    }
                }
            }
        }
    }
}
