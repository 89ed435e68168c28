//! The Intel AMX kernel of the bf16 products ([`crate::cpu::bf16`]): Xeon 4th generation and
//! later, under Linux. `c[m x n] = a[m x k] · wᵀ` with `a` in bf16 rows of K pairs
//! ([`crate::cpu::rows16`]), `w` packed by [`PackedBf16::pack`], f32 accumulation in the tile
//! registers.
//!
//! Tiles: C accumulators tmm0..tmm3 (a 32 x 32 block of the result), A in tmm4/tmm5 (16 rows x 32
//! bf16 each, loaded from the activation rows at their stride), B in tmm6/tmm7 (16 K-pairs x 16
//! columns each, one packed 1 KiB tile). Threads split the columns; every thread loads its own
//! tile configuration.

/// Whether this process can run AMX bf16 products (CPU support and the kernel's permission to
/// use the tile state, requested once; off with `HRM_NO_AMX` or `HRM_NO_SIMD`).
pub(super) fn available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(imp::init)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(super) use imp::panels;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use crate::cpu::bf16::{flat, PackedBf16, BLOCK, KSTEP};
    use crate::cpu::rows16::{gate, Sink};
    use std::arch::asm;

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
        // the activation rounding is compiled for AVX-512 F/BW, the SwiGLU gate also for VL and
        // FMA (a VM may hide one, not the others)
        let avx512 = is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("fma");
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

    /// One 32 x 32 result block in a single asm block (the tile registers hold the sums from
    /// the first tile product to the stores, so no compiler-visible code runs in between):
    /// `dst[32 x 32] (row stride ld floats) = A rows (a0: rows 0-15, a1: rows 16-31, each row
    /// `sa` bytes after the last) · B columns (b_lo: 0-15, b_hi: 16-31)` over `kt` steps of 32.
    ///
    /// # Safety
    /// AMX enabled and configured (16 x 64-byte tiles); `kt >= 1`; `a0` and `a1` address 16 rows
    /// of `kt * 32` bf16 at stride `sa` bytes, `b_lo` and `b_hi` `kt` consecutive 1 KiB tiles;
    /// `dst` 32 rows of 32 writable floats at stride `ld`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn block32(
        a0: *const u16,
        a1: *const u16,
        sa: usize,
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
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {s}*1]",
                "tileloadd tmm7, [{b1} + {s}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a0}, 64",
                "add {a1}, 64",
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
                sa = in(reg) sa,
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

    /// Bytes of packed weight per panel of [`panels`]: half of the 2 MiB L2 of a core of the
    /// Xeons with AMX, the other half for the activations and the results.
    const PANEL: usize = 1 << 20;

    /// Result columns `[32*b0, 32*b1)` for all rows (with [`Sink::Glu`]: their gated columns
    /// `[16*b0, 16*b1)`), panel by panel of [`PANEL`] bytes of the weight: for each block of 32
    /// rows, every column block of the panel. The rows' A tiles (32 x K, 32 KiB at K = 512) stay
    /// in L1 while the panel's B tiles, contiguous and read in order, stream from L2, where the
    /// panel stays across the row blocks. (With the columns outside, the rows' A tiles, 16
    /// strided lines each, came from L2 once per column block: slower on every block shape,
    /// BENCHMARKS.md.)
    ///
    /// # Safety
    /// AMX available; `ab` is `[up(m, 32), kp]` bf16 in pairs (64-byte aligned, as
    /// [`crate::cpu::rows16`] keeps it), `w` packed with K padded to `kp`, and `sink` addresses
    /// its buffer, which no other thread writes in these columns.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::cpu) unsafe fn panels(
        ab: &[u32],
        w: &PackedBf16,
        sink: Sink,
        m: usize,
        kp: usize,
        b0: usize,
        b1: usize,
    ) {
        let cfg = config();
        let (n, kt) = (w.n, kp / KSTEP);
        let mp = ab.len() / (kp / 2);
        let sa = kp * 2; // bytes per activation row

        // column blocks per panel of PANEL bytes of the weight
        let panel = (PANEL / (BLOCK * sa)).max(1);
        // a result block on the edges (rows past m or columns past n), and a gated block
        let mut edge = [0f32; BLOCK * BLOCK];
        let wt = flat(&w.tiles).as_ptr();
        let a = ab.as_ptr() as *const u16;
        // SAFETY: (whole block) the configuration is a valid palette-1 layout; all tile
        // loads read inside `ab` / `w.tiles` (padded sizes) and stores write either the
        // 32 x 32 edge buffer or rows/columns inside `c` (full blocks only).
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack));
            // the 32 x 32 result block of rows r.., column block cb
            let mut one = |r: usize, cb: usize| {
                let b_lo = wt.add((2 * cb) * kt * 512);
                let b_hi = wt.add((2 * cb + 1) * kt * 512);
                let col = cb * BLOCK;
                let (a0, a1) = (a.add(r * kp), a.add((r + 16) * kp));
                match sink {
                    Sink::Glu { out, ld } => {
                        block32(a0, a1, sa, b_lo, b_hi, kt, edge.as_mut_ptr(), BLOCK);
                        gate(&edge, out.0.add(r * ld + cb * 16), ld);
                    }
                    Sink::F32(c) if r + BLOCK <= m && col + BLOCK <= n => {
                        block32(a0, a1, sa, b_lo, b_hi, kt, c.0.add(r * n + col), n);
                    }
                    Sink::F32(c) => {
                        block32(a0, a1, sa, b_lo, b_hi, kt, edge.as_mut_ptr(), BLOCK);
                        for i in 0..BLOCK.min(m.saturating_sub(r)) {
                            for j in 0..BLOCK.min(n - col) {
                                *c.0.add((r + i) * n + col + j) = edge[i * BLOCK + j];
                            }
                        }
                    }
                }
            };
            for p0 in (b0..b1).step_by(panel) {
                for r in (0..mp).step_by(BLOCK) {
                    for cb in p0..(p0 + panel).min(b1) {
                        one(r, cb);
                    }
                }
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
///
/// # Safety
/// None needed; it panics.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub(super) unsafe fn panels(
    _: &[u32],
    _: &super::bf16::PackedBf16,
    _: super::rows16::Sink,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
) {
    unreachable!("AMX is never available off x86_64 Linux")
}
