//! bf16 matrix products on Intel AMX (Advanced Matrix Extensions, Xeon 4th generation and later)
//! for the no-gradient paths: `c[m x n] = bf16(a[m x k]) · bf16(w[n x k])ᵀ` with f32 accumulation
//! and an f32 result.
//!
//! The weight operand is packed once ([`PackedBf16`]: rounded to bf16 and laid out in the AMX
//! "VNNI" tile format, K pairs interleaved), the activations are rounded to bf16 per call. Each
//! product of two bf16 numbers is exact in f32, so the result equals an f32 product of the rounded
//! operands up to the order of the f32 sums; [`reference`] computes exactly that with the f32
//! matrix-product kernel and is what the tests compare against (and what runs where AMX is absent).
//!
//! Tiles: C accumulators tmm0..tmm3 (a 32 x 32 block of the result), A in tmm4/tmm5 (16 rows x 32
//! bf16 each), B in tmm6/tmm7 (16 K-pairs x 16 columns each). Threads split the columns; every
//! thread loads its own tile configuration.

use std::sync::OnceLock;

/// Rows and columns of a result block (two tiles each way).
const BLOCK: usize = 32;
/// K elements per tile step (16 pairs of bf16 = 64 bytes a row).
const KSTEP: usize = 32;

/// Round to bf16 (round to nearest even; NaN stays NaN, quieted), as bits. Branch-free, so the
/// loops around it vectorise.
#[inline(always)]
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    if nan {
        ((b >> 16) as u16) | 0x40
    } else {
        rounded
    }
}

/// The f32 value of bf16 bits.
#[inline(always)]
fn bf16_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Round every element of `x` to bf16 and back (what the AMX path does to its operands).
pub fn round_bf16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16_f32(bf16_bits(v))).collect()
}

fn up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// One cache line of bf16 values: tile rows must not straddle cache lines (a misaligned tile
/// load costs two lines a row).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; 32]);

/// A 64-byte aligned, zeroed buffer of `len` bf16 values (`len` a multiple of 32).
fn lines(len: usize) -> Vec<Line> {
    debug_assert_eq!(len % 32, 0);
    vec![Line([0; 32]); len / 32]
}

fn flat(l: &[Line]) -> &[u16] {
    // SAFETY: Line is 32 u16 with no padding (repr(C), size 64).
    unsafe { std::slice::from_raw_parts(l.as_ptr() as *const u16, l.len() * 32) }
}

fn flat_mut(l: &mut [Line]) -> &mut [u16] {
    // SAFETY: as in `flat`; the borrow is unique.
    unsafe { std::slice::from_raw_parts_mut(l.as_mut_ptr() as *mut u16, l.len() * 32) }
}

/// A weight `[n, k]` (row-major, the layout of `nn.Linear`) as the B operand of AMX products:
/// bf16, K padded to 32 and N to 32 with zeros, one 1 KiB tile per (16 columns, 32 K) in
/// column-block-major order, each tile row holding 16 columns x one K pair.
#[derive(Debug, Clone)]
pub struct PackedBf16 {
    n: usize,
    k: usize,
    tiles: Vec<Line>,
}

impl PackedBf16 {
    /// Pack `w` (`n` rows of `k`).
    pub fn pack(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(
            w.len(),
            n * k,
            "PackedBf16::pack: {} elements, not {n}x{k}",
            w.len()
        );
        let (np, kp) = (up(n, BLOCK), up(k, KSTEP));
        let kt = kp / KSTEP;
        use rayon::prelude::*;
        let mut buf = lines(np * kp);
        // one 16-column strip (kt tiles of 512 values) per task
        if kt == 0 {
            return Self { n, k, tiles: buf };
        }
        flat_mut(&mut buf)
            .par_chunks_mut(kt * 512)
            .enumerate()
            .for_each(|(cb, strip)| {
                for col in cb * 16..n.min(cb * 16 + 16) {
                    let c = col % 16;
                    for (kk, &v) in w[col * k..(col + 1) * k].iter().enumerate() {
                        let (tb, r, p) = (kk / KSTEP, (kk % KSTEP) / 2, kk % 2);
                        strip[tb * 512 + r * 32 + c * 2 + p] = bf16_bits(v);
                    }
                }
            });
        Self { n, k, tiles: buf }
    }

    /// The weight back as f32 `[n, k]` (the bf16 values).
    pub fn unpack(&self) -> Vec<f32> {
        let kt = up(self.k, KSTEP) / KSTEP;
        let tiles = flat(&self.tiles);
        let mut w = vec![0f32; self.n * self.k];
        for col in 0..self.n {
            for kk in 0..self.k {
                let (cb, c) = (col / 16, col % 16);
                let (tb, r, p) = (kk / KSTEP, (kk % KSTEP) / 2, kk % 2);
                w[col * self.k + kk] = bf16_f32(tiles[(cb * kt + tb) * 512 + r * 32 + c * 2 + p]);
            }
        }
        w
    }
}

/// `c = bf16(a) · w_bf16ᵀ` computed with the f32 kernel on the rounded operands: the numbers AMX
/// produces up to the order of the f32 sums (the fallback where AMX is absent, and the oracle).
pub fn reference(m: usize, a: &[f32], w: &PackedBf16, c: &mut [f32]) {
    let ar = round_bf16(a);
    crate::cpu::gemm::sgemm_into(
        m,
        w.n,
        w.k,
        &ar,
        crate::cpu::gemm::Op::N,
        &w.unpack(),
        crate::cpu::gemm::Op::T,
        c,
    );
}

/// Whether this process can run AMX bf16 products (CPU support and the kernel's permission to
/// use the tile state, requested once).
pub fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(imp::init)
}

/// `c[m x n] = bf16(a[m x k]) · wᵀ` on AMX, on all of rayon's threads (the caller checks
/// [`available`]; without AMX this computes [`reference`]).
pub fn matmul(m: usize, a: &[f32], w: &PackedBf16, c: &mut [f32]) {
    assert_eq!(
        a.len(),
        m * w.k,
        "amx::matmul: a has {} elements, not {m}x{}",
        a.len(),
        w.k
    );
    assert_eq!(
        c.len(),
        m * w.n,
        "amx::matmul: c has {} elements, not {m}x{}",
        c.len(),
        w.n
    );
    if m == 0 || w.n == 0 {
        return;
    }
    if w.k == 0 {
        c.fill(0.0); // an empty sum
        return;
    }
    if !available() {
        return reference(m, a, w, c);
    }
    imp::matmul(m, a, w, c);
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use super::{bf16_bits, up, PackedBf16, BLOCK, KSTEP};
    use crate::cpu::gemm::SendPtr;
    use std::arch::asm;
    use std::cell::RefCell;

    /// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: Linux hands out the 8 KiB tile
    /// state only to processes that ask for it.
    fn request_tile_permission() -> bool {
        const SYS_ARCH_PRCTL: usize = 158;
        const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
        const XFEATURE_XTILEDATA: usize = 18;
        let ret: isize;
        // SAFETY: a plain syscall with integer arguments; it touches no memory of ours.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") SYS_ARCH_PRCTL as isize => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret == 0
    }

    pub(super) fn init() -> bool {
        if std::env::var_os("HRM_NO_AMX").is_some() || !crate::cpu::simd_enabled() {
            return false;
        }
        // CPUID leaf 7: EDX bit 22 = AMX-BF16, bit 24 = AMX-TILE; OSXSAVE must manage the state.
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let has = (leaf7.edx >> 22) & 1 == 1 && (leaf7.edx >> 24) & 1 == 1;
        // the activation rounding is compiled for AVX-512 F/BW (a VM may hide one, not the other)
        let avx512 = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw");
        has && avx512 && request_tile_permission()
    }

    /// The 64-byte tile configuration: palette 1, tmm0..tmm7 all 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    fn config() -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1; // palette
        for t in 0..8 {
            c[16 + 2 * t] = 64; // bytes per row (low byte of a u16)
            c[48 + t] = 16; // rows
        }
        TileConfig(c)
    }

    thread_local! {
        /// The calling thread's bf16 activation buffer (tile order, 64-byte aligned).
        static A_BUF: RefCell<Vec<super::Line>> = const { RefCell::new(Vec::new()) };
    }

    /// Round `src` to bf16 into `dst`: [`bf16_bits`] compiled for AVX-512 (every CPU with AMX
    /// has it; [`init`] checks).
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn round_row(src: &[f32], dst: &mut [u16]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = bf16_bits(s);
        }
    }

    /// Round `a` `[m, k]` to bf16 in A-tile order: for every 16 rows, `kp / 32` tiles of 16 rows
    /// x 32 values (1 KiB, contiguous), zero padded to `mp` rows and `kp` columns; in parallel.
    fn convert(a: &[f32], m: usize, k: usize, kp: usize, out: &mut [u16]) {
        use rayon::prelude::*;
        let kt = kp / KSTEP;
        out.fill(0);
        let fill = |(rt, tiles): (usize, &mut [u16])| {
            for i in 0..16 {
                let row = rt * 16 + i;
                if row >= m {
                    break;
                }
                let src = &a[row * k..(row + 1) * k];
                for t in 0..kt {
                    let lo = t * KSTEP;
                    let hi = (lo + KSTEP).min(k);
                    let dst = &mut tiles[t * 512 + i * 32..t * 512 + i * 32 + (hi - lo)];
                    // SAFETY: AMX (checked by the caller) implies AVX-512 F/BW.
                    unsafe { round_row(&src[lo..hi], dst) };
                }
            }
        };
        if m * k >= 1 << 16 {
            out.par_chunks_mut(kt * 512).enumerate().for_each(fill);
        } else {
            out.chunks_mut(kt * 512).enumerate().for_each(fill);
        }
    }

    pub(super) fn matmul(m: usize, a: &[f32], w: &PackedBf16, c: &mut [f32]) {
        let (n, k) = (w.n, w.k);
        let (mp, kp, np) = (up(m, BLOCK), up(k, KSTEP), up(n, BLOCK));
        // the bf16 activations, in a buffer kept by the calling thread between calls
        let mut buf = A_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        if buf.len() < mp * kp / 32 {
            buf = super::lines(mp * kp);
        }
        let ab_all = super::flat_mut(&mut buf);
        convert(a, m, k, kp, &mut ab_all[..mp * kp]);
        let ab = &*ab_all;
        let cp = SendPtr(c.as_mut_ptr());
        crate::cpu::gemm::split_blocks(np / BLOCK, m * n * k, |b0, b1| {
            // SAFETY: AMX is available (checked by the caller); the pointers cover the padded
            // operands and the result, and this task writes only columns [32*b0, 32*b1).
            unsafe { kernel(ab, w, cp, m, n, mp, kp, b0, b1) };
        });
        A_BUF.with(|b| *b.borrow_mut() = buf);
    }

    /// One 32 x 32 result block in a single asm block (the tile registers hold the sums from
    /// the first tile product to the stores, so no compiler-visible code runs in between):
    /// `dst[32 x 32] (row stride ld floats) = A rows (a0: rows 0-15, a1: rows 16-31, tile order)
    /// · B columns (b_lo: 0-15, b_hi: 16-31)` over `kt` steps of 32.
    ///
    /// # Safety
    /// AMX enabled and configured (16 x 64-byte tiles); `kt >= 1`; each operand pointer addresses
    /// `kt` consecutive 1 KiB tiles; `dst` 32 rows of 32 writable floats at stride `ld`.
    #[inline(always)]
    unsafe fn block32(
        a0: *const u16,
        a1: *const u16,
        b_lo: *const u16,
        b_hi: *const u16,
        kt: usize,
        dst: *mut f32,
        ld: usize,
    ) {
        // SAFETY: the caller's contract.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "2:",
                "tileloadd tmm4, [{a0} + {s}*1]",
                "tileloadd tmm5, [{a1} + {s}*1]",
                "tileloadd tmm6, [{b0} + {s}*1]",
                "tileloadd tmm7, [{b1} + {s}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a0}, 1024",
                "add {a1}, 1024",
                "add {b0}, 1024",
                "add {b1}, 1024",
                "dec {kt}",
                "jnz 2b",
                "tilestored [{p0} + {ld}*1], tmm0",
                "tilestored [{p0} + {ld}*1 + 64], tmm1",
                "tilestored [{p1} + {ld}*1], tmm2",
                "tilestored [{p1} + {ld}*1 + 64], tmm3",
                a0 = inout(reg) a0 => _,
                a1 = inout(reg) a1 => _,
                b0 = inout(reg) b_lo => _,
                b1 = inout(reg) b_hi => _,
                kt = inout(reg) kt => _,
                s = in(reg) 64usize,
                p0 = in(reg) dst,
                p1 = in(reg) dst.add(16 * ld),
                ld = in(reg) ld * 4,
                out("tmm0") _,
                out("tmm1") _,
                out("tmm2") _,
                out("tmm3") _,
                out("tmm4") _,
                out("tmm5") _,
                out("tmm6") _,
                out("tmm7") _,
                options(nostack),
            );
        }
    }

    /// Result columns `[32*b0, 32*b1)` for all rows.
    ///
    /// # Safety
    /// AMX must be enabled for this process; `ab` is `[mp, kp]`, `w` packed for `n` x `k`, and
    /// `c.0` points to `m * n` f32 that no other thread writes in these columns.
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel(
        ab: &[u16],
        w: &PackedBf16,
        c: SendPtr<f32>,
        m: usize,
        n: usize,
        mp: usize,
        kp: usize,
        b0: usize,
        b1: usize,
    ) {
        let cfg = config();
        let kt = kp / KSTEP;
        // rows of activations processed per pass over the columns (kept in L2)
        let a_stride = kp * 2; // bytes per row
        let m_chunk = (1 << 18) / a_stride.max(1) / BLOCK * BLOCK;
        let m_chunk = m_chunk.max(BLOCK);
        // a result block on the edges (rows past m or columns past n)
        let mut edge = [0f32; BLOCK * BLOCK];
        let ep = edge.as_mut_ptr();
        let wt = super::flat(&w.tiles).as_ptr();
        // SAFETY: (whole block) the configuration is a valid palette-1 layout; all tile
        // loads read inside `ab` / `w.tiles` (padded sizes) and stores write either the
        // 32 x 32 edge buffer or rows/columns inside `c` (full blocks only).
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack));
            let mut i0 = 0;
            while i0 < mp {
                let i1 = (i0 + m_chunk).min(mp);
                for cb in b0..b1 {
                    let b_lo = wt.add((2 * cb) * kt * 512);
                    let b_hi = wt.add((2 * cb + 1) * kt * 512);
                    let mut r = i0;
                    while r < i1 {
                        let col = cb * BLOCK;
                        let full = r + BLOCK <= m && col + BLOCK <= n;
                        let (dst, ld) = if full {
                            (c.0.add(r * n + col), n)
                        } else {
                            (ep, BLOCK)
                        };
                        block32(
                            ab.as_ptr().add(r * kp),
                            ab.as_ptr().add((r + 16) * kp),
                            b_lo,
                            b_hi,
                            kt,
                            dst,
                            ld,
                        );
                        if !full {
                            for i in 0..BLOCK.min(m.saturating_sub(r)) {
                                for j in 0..BLOCK.min(n.saturating_sub(col)) {
                                    *c.0.add((r + i) * n + col + j) = *ep.add(i * BLOCK + j);
                                }
                            }
                        }
                        r += BLOCK;
                    }
                }
                i0 = i1;
            }
            asm!("tilerelease", options(nostack));
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod imp {
    use super::PackedBf16;
    pub(super) fn init() -> bool {
        false
    }
    pub(super) fn matmul(m: usize, a: &[f32], w: &PackedBf16, c: &mut [f32]) {
        super::reference(m, a, w, c)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic test values in [-1, 1] (a multiplicative hash of the index).
    pub(crate) fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let x = (i as u32)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed.wrapping_mul(40503));
                ((x >> 8) % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn bf16_rounding_is_to_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0)
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3*2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even (up)
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(-2.0), 0xc000);
        assert!(bf16_f32(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(bf16_f32(bf16_bits(f32::INFINITY)), f32::INFINITY);
    }

    #[test]
    fn packing_round_trips_the_rounded_weight() {
        let (n, k) = (40, 70); // both padded
        let w = data(n * k, 3);
        assert_eq!(PackedBf16::pack(&w, n, k).unpack(), round_bf16(&w));
    }

    /// AMX against the f32 product of the rounded operands, on shapes with every kind of edge
    /// (rows not a multiple of 16 or 32, columns and K not multiples of 32) and the model's own.
    #[test]
    fn amx_matches_the_product_of_the_rounded_operands() {
        if !available() {
            // not silent: the test still checks the fallback below against the reference
            eprintln!("AMX is not available on this CPU: checking the fallback path only");
        }
        for &(m, n, k) in &[
            (1, 32, 32),
            (82, 1536, 512),
            (82, 512, 1536),
            (33, 40, 70),
            (100, 96, 64),
            (300, 64, 1000),
        ] {
            let a = data(m * k, 1);
            let w = PackedBf16::pack(&data(n * k, 2), n, k);
            let mut got = vec![f32::NAN; m * n];
            matmul(m, &a, &w, &mut got);
            let mut want = vec![0f32; m * n];
            reference(m, &a, &w, &mut want);
            for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                // the same exact products summed in another order: f32 rounding of k terms
                let tol = 1e-6 * (k as f32) + 1e-6 * r.abs();
                assert!((g - r).abs() <= tol, "{m}x{n}x{k} [{i}]: {g} vs {r}");
            }
        }
    }
}
