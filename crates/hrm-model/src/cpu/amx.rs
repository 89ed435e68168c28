//! The Intel AMX kernel of the bf16 products ([`crate::cpu::bf16`]): Xeon 4th generation and
//! later, under Linux. `c[m x n] = bf16(a[m x k]) · wᵀ` with `w` packed by
//! [`PackedBf16::pack`], f32 accumulation in the tile registers.
//!
//! Tiles: C accumulators tmm0..tmm3 (a 32 x 32 block of the result), A in tmm4/tmm5 (16 rows x 32
//! bf16 each), B in tmm6/tmm7 (16 K-pairs x 16 columns each). Threads split the columns; every
//! thread loads its own tile configuration.

/// Whether this process can run AMX bf16 products (CPU support and the kernel's permission to
/// use the tile state, requested once; off with `HRM_NO_AMX` or `HRM_NO_SIMD`).
pub(super) fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(imp::init)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(super) use imp::matmul;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use crate::cpu::bf16::{flat, flat_mut, lines, round_into, up, Line, PackedBf16, BLOCK, KSTEP};
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

    pub(in crate::cpu) fn init() -> bool {
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
        static A_BUF: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
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
                    round_into(&src[lo..hi], dst);
                }
            }
        };
        if m * k >= 1 << 16 {
            out.par_chunks_mut(kt * 512).enumerate().for_each(fill);
        } else {
            out.chunks_mut(kt * 512).enumerate().for_each(fill);
        }
    }

    pub(in crate::cpu) fn matmul(m: usize, a: &[f32], w: &PackedBf16, c: &mut [f32]) {
        let (n, k) = (w.n, w.k);
        let (mp, kp, np) = (up(m, BLOCK), up(k, KSTEP), up(n, BLOCK));
        // the bf16 activations, in a buffer kept by the calling thread between calls
        let mut buf = A_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        if buf.len() < mp * kp / 32 {
            buf = lines(mp * kp);
        }
        let ab_all = flat_mut(&mut buf);
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
        let wt = flat(&w.tiles).as_ptr();
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
    pub(in crate::cpu) fn init() -> bool {
        false
    }
}

/// Never called where [`available`] is false.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub(super) fn matmul(m: usize, a: &[f32], w: &super::bf16::PackedBf16, c: &mut [f32]) {
    super::bf16::reference(m, a, w, c)
}
