//! bf16 matrix products with f32 accumulation and an f32 result, `c[m x n] = bf16(a[m x k]) ·
//! bf16(w[n x k])ᵀ`: the weight packed once ([`PackedBf16`]) for the no-gradient paths, or both
//! operands packed per call ([`gemm`]) for the products of a bf16 training step.
//!
//! Three kernels compute them, chosen at run time ([`kernel`]): Intel AMX tiles
//! ([`crate::cpu::amx`]), AVX512-BF16 dot products ([`crate::cpu::dpbf16`]: AMD Zen 4 and later,
//! Intel Cooper Lake and Sapphire Rapids), and else [`reference`], the f32 product of the rounded
//! operands. Each product of two bf16 numbers is exact in f32, so every kernel gives the
//! reference's numbers up to the order of the f32 sums; the tests compare against it.
//!
//! The packed layout is AMX's "VNNI" tile format: per strip of 16 columns, K in pairs, each pair
//! row one 64-byte line of 16 columns x 2 values. One line is one AVX512-BF16 operand, so both
//! kernels read the same packing.

use std::mem::MaybeUninit;
use std::sync::OnceLock;

use crate::cpu::gemm::{self, Mat};

/// Rows and columns of a result block (two tiles each way).
pub(super) const BLOCK: usize = 32;
/// K elements per tile step (16 pairs of bf16 = 64 bytes a row).
pub(super) const KSTEP: usize = 32;

/// Round to bf16 (round to nearest even; NaN stays NaN, quieted), as bits. Branch-free, so the
/// loops around it vectorise.
#[inline(always)]
pub(super) fn bf16_bits(x: f32) -> u16 {
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

/// Round every element of `x` to bf16 and back (what every kernel does to its operands).
pub fn round_bf16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16_f32(bf16_bits(v))).collect()
}

pub(super) fn up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

/// One cache line of bf16 values: tile rows must not straddle cache lines (a misaligned tile
/// load costs two lines a row).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Line(pub(super) [u16; 32]);

/// A 64-byte aligned, zeroed buffer of `len` bf16 values (`len` a multiple of 32).
pub(super) fn lines(len: usize) -> Vec<Line> {
    debug_assert_eq!(len % 32, 0);
    vec![Line([0; 32]); len / 32]
}

/// Zeroes the lines of `l` and returns them as initialised.
fn zeroed(l: &mut [MaybeUninit<Line>]) -> &mut [Line] {
    crate::cpu::init_from(l, |_| Line([0; 32]))
}

pub(super) fn flat(l: &[Line]) -> &[u16] {
    // SAFETY: Line is 32 u16 with no padding (repr(C), size 64).
    unsafe { std::slice::from_raw_parts(l.as_ptr() as *const u16, l.len() * 32) }
}

pub(super) fn flat_mut(l: &mut [Line]) -> &mut [u16] {
    // SAFETY: as in `flat`; the borrow is unique.
    unsafe { std::slice::from_raw_parts_mut(l.as_mut_ptr() as *mut u16, l.len() * 32) }
}

/// Lines as their K pairs (16 `u32` a line, the first value of a pair in the low half).
pub(super) fn words(l: &[Line]) -> &[u32] {
    // SAFETY: Line is 64 bytes aligned to 64 with no padding; every bit pattern is a valid u32.
    unsafe { std::slice::from_raw_parts(l.as_ptr() as *const u32, l.len() * 16) }
}

/// [`words`], mutable.
pub(super) fn words_mut(l: &mut [Line]) -> &mut [u32] {
    // SAFETY: Line is 64 bytes aligned to 64 with no padding; every bit pattern is a valid u32.
    unsafe { std::slice::from_raw_parts_mut(l.as_mut_ptr() as *mut u32, l.len() * 16) }
}

/// Rows of K pairs (a `u32` each, the first value in the low half) as their bf16 values.
pub(super) fn halves_mut(p: &mut [u32]) -> &mut [u16] {
    // SAFETY: a u32 slice read as twice as many u16 (alignment 4 >= 2, no padding).
    unsafe { std::slice::from_raw_parts_mut(p.as_mut_ptr() as *mut u16, p.len() * 2) }
}

/// Round `src` to bf16 into `dst` (as many as `dst` holds): [`bf16_bits`], compiled for
/// AVX-512 where the CPU has it (every CPU with AMX or AVX512-BF16 does).
pub(super) fn round_into(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw")]
        unsafe fn wide(src: &[f32], dst: &mut [u16]) {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = bf16_bits(s);
            }
        }
        if avx512() {
            // SAFETY: the CPU has AVX-512 F/BW.
            return unsafe { wide(src, dst) };
        }
    }
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = bf16_bits(s);
    }
}

/// A weight `[n, k]` (row-major, the layout of `nn.Linear`) as the B operand of AMX products:
/// bf16, K padded to 32 and N to 32 with zeros, one 1 KiB tile per (16 columns, 32 K) in
/// column-block-major order, each tile row holding 16 columns x one K pair.
#[derive(Debug, Clone)]
pub struct PackedBf16 {
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) tiles: Vec<Line>,
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
        // SAFETY: `w` holds the n x k elements the view addresses.
        unsafe { Self::pack_view(Mat::rows(w, k), n, k) }
    }

    /// Pack the `n x k` matrix that `w` views (element `(col, kk)` at `w.ptr + col*rs + kk*cs`):
    /// a transposed operand packs without a copy. In parallel, one 16-column strip per task.
    /// The two layouts of the products ([`strip_rows`]: a weight `[n, k]`, `cs = 1`;
    /// [`strip_cols`]: a stored `[k, n]` read transposed, `rs = 1`) have loops the compiler
    /// vectorises (AVX-512 where the CPU has it); other views take the element-wise loop.
    ///
    /// # Safety
    /// The view must address `n x k` readable f32.
    pub unsafe fn pack_view(w: Mat<f32>, n: usize, k: usize) -> Self {
        // SAFETY: strip cb's columns 16cb .. 16cb + cols lie inside the n x k view.
        unsafe { Self::pack_strips(w, n, k, |cb| (cb * 16, n.saturating_sub(cb * 16).min(16))) }
    }

    /// Pack an `n x k` operand whose 16-column strip `cb` is the `cols` columns of the view `w`
    /// from column `first`, `(first, cols) = strip(cb)` (`cols` < 16 leaves the rest of the strip
    /// zero; 0 for a padding strip): [`PackedBf16::pack_view`] when the strips are the view's
    /// columns in order, or a weight whose columns the packing reorders
    /// ([`crate::cpu::mlp16::PackedMlp::pack`]) without a reordered copy.
    ///
    /// # Safety
    /// For every strip, the view's columns `first..first + cols` and every kk < k must be
    /// readable f32.
    pub(super) unsafe fn pack_strips(
        w: Mat<f32>,
        n: usize,
        k: usize,
        strip_of: impl Fn(usize) -> (usize, usize) + Sync,
    ) -> Self {
        let (np, kp) = (up(n, BLOCK), up(k, KSTEP));
        let len = np * kp / 32;
        if kp == 0 {
            return Self {
                n,
                k,
                tiles: Vec::new(),
            };
        }
        // no zero fill of the whole buffer first (on the calling thread, through memory): each
        // task writes every line of its strip (a weight's rows, through whole 16 x 16 tiles of
        // pairs), or zeroes the lines it fills in part while they are in its cache (the
        // padding stays zero)
        let mut buf = Vec::<Line>::with_capacity(len);
        let src = gemm::SendPtr(w.ptr as *mut f32);
        let wide = avx512();
        let fill = |(cb, strip): (usize, &mut [MaybeUninit<Line>])| {
            let src = &src; // the whole SendPtr (a raw pointer alone is not Sync)
            let (c0, cols) = strip_of(cb);
            if cols == 0 {
                zeroed(strip);
                return; // a padding strip (N is padded to 32)
            }
            // SAFETY: (whole closure) the strip's columns [c0, c0 + cols) and every kk < k lie
            // inside the view (the caller's contract); `strip` is kp / 2 lines.
            let first = unsafe { src.0.offset(c0 as isize * w.rs) };
            let view = Mat {
                ptr: first as *const f32,
                rs: w.rs,
                cs: w.cs,
            };
            match (w.cs == 1, wide) {
                #[cfg(target_arch = "x86_64")]
                (true, true) => unsafe { strip_rows_avx512(view, cols, k, strip) },
                (true, _) => unsafe { strip_rows(view, cols, k, strip) },
                _ => {
                    let strip = flat_mut(zeroed(strip));
                    for kk in 0..k {
                        let line = &mut strip[(kk / 2) * 32 + kk % 2..];
                        for col in 0..cols {
                            let v = unsafe {
                                *view.ptr.offset(col as isize * w.rs + kk as isize * w.cs)
                            };
                            line[col * 2] = bf16_bits(v);
                        }
                    }
                }
            }
        };
        let par = n * k >= 1 << 15;
        if w.rs == 1 && w.cs != 1 {
            // a transposed operand (K rows contiguous along the columns) goes by K tiles: a
            // task reads 32 K rows left to right, strip after strip (going down all of K per
            // strip would touch a new page every K row or two), and fills that tile of each
            // strip
            let dst = gemm::SendPtr(buf.spare_capacity_mut().as_mut_ptr());
            let tile = |t: usize| {
                let (src, dst) = (&src, &dst); // the whole SendPtrs (raw pointers are not Sync)
                let (k0, kt) = (t * KSTEP, KSTEP.min(k - t * KSTEP));
                for cb in 0..np / 16 {
                    // SAFETY: lines cb * kp / 2 + 16t .. + 16 of `buf`'s capacity are this
                    // tile's alone.
                    let lines = zeroed(unsafe {
                        std::slice::from_raw_parts_mut(
                            dst.0.add(cb * kp / 2 + t * KSTEP / 2),
                            KSTEP / 2,
                        )
                    });
                    let (c0, cols) = strip_of(cb);
                    if cols == 0 {
                        continue;
                    }
                    // SAFETY: the strip's columns [c0, c0 + cols) of K rows k0 .. k0 + kt lie
                    // inside the view (the caller's contract).
                    unsafe {
                        let view = Mat {
                            ptr: src.0.offset(c0 as isize + k0 as isize * w.cs) as *const f32,
                            rs: 1,
                            cs: w.cs,
                        };
                        #[cfg(target_arch = "x86_64")]
                        if wide {
                            strip_cols_avx512(view, cols, kt, lines);
                            continue;
                        }
                        strip_cols(view, cols, kt, lines);
                    }
                }
            };
            let tiles = 0..kp / KSTEP;
            if par {
                use rayon::prelude::*;
                tiles.into_par_iter().for_each(tile);
            } else {
                tiles.for_each(tile);
            }
        } else if par {
            use rayon::prelude::*;
            buf.spare_capacity_mut()[..len]
                .par_chunks_mut(kp / 2)
                .enumerate()
                .for_each(fill);
        } else {
            buf.spare_capacity_mut()[..len]
                .chunks_mut(kp / 2)
                .enumerate()
                .for_each(fill);
        }
        // SAFETY: the strips (or the K tiles of every strip) cover all `len` lines, each written
        // whole by its task (a weight's rows) or zeroed before it was filled.
        unsafe { buf.set_len(len) };
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

/// One K pair of the packing as the u32 of a line: the first value in the low half.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) as u32 | (bf16_bits(hi) as u32) << 16
}

/// A line as its 16 pairs (a line is 64 bytes: 16 u32, as aligned as u16).
#[inline(always)]
fn pairs_mut(l: &mut Line) -> &mut [u32; 16] {
    // SAFETY: Line is 64 bytes aligned to 64 with no padding; every bit pattern is a valid u32.
    unsafe { &mut *(l as *mut Line as *mut [u32; 16]) }
}

/// Whether the packing loops run compiled for AVX-512 (off with `HRM_NO_SIMD`).
pub(super) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX512: OnceLock<bool> = OnceLock::new();
        *AVX512.get_or_init(|| {
            crate::cpu::simd_enabled()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// One 16-column strip of a view whose rows are contiguous (`cs = 1`: a weight `[n, k]`):
/// per K tile of 32, each column's 32 values rounded into 16 pairs (contiguous reads), then the
/// 16 x 16 pairs transposed into the tile's 16 lines. Every line is written (zeros past `cols`
/// and past K), so `strip` needs no zero fill first.
///
/// # Safety
/// `w` addresses `cols` rows of `k` readable f32 (row stride `w.rs`); `strip` is `up(k, 32) / 2`
/// lines.
#[inline(always)]
unsafe fn strip_rows(w: Mat<f32>, cols: usize, k: usize, strip: &mut [MaybeUninit<Line>]) {
    for (t, tile) in strip.chunks_mut(KSTEP / 2).enumerate() {
        // SAFETY: the caller's contract.
        let tmp = unsafe { rows_tile(w, cols, k, t) };
        for (p, line) in tile.iter_mut().enumerate() {
            let mut pairs = [0u32; 16];
            for (c, row) in tmp.iter().enumerate() {
                pairs[c] = row[p];
            }
            // SAFETY: a line is 64 bytes, the 16 pairs.
            unsafe { (line.as_mut_ptr() as *mut [u32; 16]).write(pairs) };
        }
    }
}

/// K tile `t` of a [`strip_rows`] strip, `[column][pair]`: each of the `cols` columns' values
/// `32 t ..` rounded into its 16 pairs (contiguous reads), zeros past K and past `cols`.
///
/// # Safety
/// As [`strip_rows`], `t < up(k, 32) / 32`.
#[inline(always)]
unsafe fn rows_tile(w: Mat<f32>, cols: usize, k: usize, t: usize) -> [[u32; 16]; 16] {
    let (k0, kt) = (t * KSTEP, KSTEP.min(k - t * KSTEP));
    let mut tmp = [[0u32; 16]; 16];
    for (c, row) in tmp.iter_mut().enumerate().take(cols) {
        // SAFETY: row c's values k0 .. k0 + kt are inside the view.
        let x = unsafe { std::slice::from_raw_parts(w.ptr.offset(c as isize * w.rs).add(k0), kt) };
        for (h, &v) in halves_mut(row).iter_mut().zip(x) {
            *h = bf16_bits(v);
        }
    }
    tmp
}

/// One 16-column strip of a view whose columns are contiguous (`rs = 1`: a stored `[k, n]` read
/// as its `n x k` transpose): each line is the strip's 16 values of two consecutive K rows,
/// interleaved. Columns past `cols` stay zero.
///
/// # Safety
/// `w` addresses `k` rows (stride `w.cs`) of `cols` readable f32; `strip` is `up(k, 32) / 2`
/// lines.
#[inline(always)]
unsafe fn strip_cols(w: Mat<f32>, cols: usize, k: usize, strip: &mut [Line]) {
    // SAFETY: K row kk's `cols` values are inside the view.
    let row =
        |kk: usize| unsafe { std::slice::from_raw_parts(w.ptr.offset(kk as isize * w.cs), cols) };
    for (p, line) in strip.iter_mut().enumerate().take(k.div_ceil(2)) {
        let hi = (2 * p + 1 < k).then(|| row(2 * p + 1));
        interleave(row(2 * p), hi, &mut pairs_mut(line)[..cols]);
    }
}

/// `dst[i] = pair(lo[i], hi[i])`: two K rows into pairs (the second row zero past an odd K).
#[inline(always)]
pub(super) fn interleave(lo: &[f32], hi: Option<&[f32]>, dst: &mut [u32]) {
    match hi {
        Some(hi) => {
            for ((d, &a), &b) in dst.iter_mut().zip(lo).zip(hi) {
                *d = pair(a, b);
            }
        }
        None => {
            for (d, &a) in dst.iter_mut().zip(lo) {
                *d = pair(a, 0.0);
            }
        }
    }
}

/// [`strip_rows`] with AVX-512: per K tile, each column's values rounded into its 16 pairs (the
/// rounding loop compiled for AVX-512), then the 16 x 16 pairs transposed in registers
/// ([`transpose16`]) into the tile's 16 lines.
///
/// # Safety
/// As [`strip_rows`], on a CPU with AVX-512 F/BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn strip_rows_avx512(w: Mat<f32>, cols: usize, k: usize, strip: &mut [MaybeUninit<Line>]) {
    use std::arch::x86_64::*;
    for (t, tile) in strip.chunks_mut(KSTEP / 2).enumerate() {
        // SAFETY: (whole block) the caller's contract; the CPU has AVX-512 F/BW, and each line
        // is 64 bytes.
        unsafe {
            let tmp = rows_tile(w, cols, k, t);
            for (line, v) in tile.iter_mut().zip(transpose16(&tmp)) {
                _mm512_storeu_si512(line.as_mut_ptr() as *mut _, v);
            }
        }
    }
}

/// The lane indices of [`transpose16`]: for step `s` = 8, 4, 2, 1, the
/// `_mm512_permutex2var_epi32` selections that give rows r and r + s (r & s == 0) their swapped
/// off-diagonal s-blocks.
#[cfg(target_arch = "x86_64")]
const TRANSPOSE: [([i32; 16], [i32; 16]); 4] = {
    let mut t = [([0; 16], [0; 16]); 4];
    let mut step = 0;
    while step < 4 {
        let s = 8 >> step;
        let mut c = 0;
        while c < 16 {
            let keep = c & s == 0;
            t[step].0[c] = if keep { c } else { 16 + c - s } as i32;
            t[step].1[c] = if keep { c + s } else { 16 + c } as i32;
            c += 1;
        }
        step += 1;
    }
    t
};

/// The transpose of a 16 x 16 block of pairs in registers: row `i` of the result is column `i`
/// of `tmp`.
///
/// # Safety
/// The CPU has AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn transpose16(tmp: &[[u32; 16]; 16]) -> [std::arch::x86_64::__m512i; 16] {
    use std::arch::x86_64::*;
    // SAFETY: (all loads) 16 u32 / i32 each.
    let mut v = tmp.map(|row| unsafe { _mm512_loadu_si512(row.as_ptr() as *const _) });
    for (step, (lo, hi)) in TRANSPOSE.iter().enumerate() {
        let s = 8 >> step;
        // SAFETY: 16 i32 each.
        let (lo, hi) = unsafe {
            (
                _mm512_loadu_si512(lo.as_ptr() as *const _),
                _mm512_loadu_si512(hi.as_ptr() as *const _),
            )
        };
        for r in (0..16).filter(|r| r & s == 0) {
            let (a, b) = (v[r], v[r + s]);
            v[r] = _mm512_permutex2var_epi32(a, lo, b);
            v[r + s] = _mm512_permutex2var_epi32(a, hi, b);
        }
    }
    v
}

/// [`strip_cols`] compiled for AVX-512.
///
/// # Safety
/// As [`strip_cols`], on a CPU with AVX-512 F/BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn strip_cols_avx512(w: Mat<f32>, cols: usize, k: usize, strip: &mut [Line]) {
    unsafe { strip_cols(w, cols, k, strip) }
}

/// `c = bf16(a) · w_bf16ᵀ` computed with the f32 kernel on the rounded operands: the numbers every
/// kernel produces up to the order of the f32 sums (the fallback where no bf16 unit is, and the
/// oracle of the tests).
pub fn reference(m: usize, a: &[f32], w: &PackedBf16, c: &mut [f32]) {
    let ar = round_bf16(a);
    gemm::sgemm_into(m, w.n, w.k, &ar, gemm::Op::N, &w.unpack(), gemm::Op::T, c);
}

/// The kernel that computes the bf16 products in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Intel AMX tiles.
    Amx,
    /// AVX512-BF16 dot products (`HRM_NO_AMX` selects it on a CPU that has both).
    Avx512Bf16,
    /// The f32 product of the rounded operands ([`reference`]): no bf16 unit, or `HRM_NO_SIMD`.
    Reference,
}

impl Kernel {
    /// A short name for reports (`amx`, `avx512-bf16`, `reference`).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "amx",
            Kernel::Avx512Bf16 => "avx512-bf16",
            Kernel::Reference => "reference",
        }
    }
}

/// The kernel of this CPU (AMX, else AVX512-BF16, else the reference), decided once.
pub fn kernel() -> Kernel {
    static K: OnceLock<Kernel> = OnceLock::new();
    *K.get_or_init(|| {
        if crate::cpu::amx::available() {
            Kernel::Amx
        } else if crate::cpu::dpbf16::available() {
            Kernel::Avx512Bf16
        } else {
            Kernel::Reference
        }
    })
}

/// The bf16 units the kernels run on, for messages where a CPU has neither.
pub const UNITS: &str =
    "Intel AMX (Xeon 4th generation or newer, under Linux) or AVX512-BF16 (AMD \
                         Zen 4 or newer, Intel Cooper Lake)";

/// Whether this CPU has a bf16 unit the products run on (AMX or AVX512-BF16).
pub fn available() -> bool {
    kernel() != Kernel::Reference
}

/// `c[m x n] = bf16(a[m x k]) · wᵀ` on the [`kernel`] of this CPU, on all of rayon's threads.
pub fn matmul(m: usize, a: &[f32], w: &PackedBf16, c: &mut [f32]) {
    assert_eq!(
        a.len(),
        m * w.k,
        "bf16::matmul: a has {} elements, not {m}x{}",
        a.len(),
        w.k
    );
    assert_eq!(
        c.len(),
        m * w.n,
        "bf16::matmul: c has {} elements, not {m}x{}",
        c.len(),
        w.n
    );
    if empty(m, w, c) {
        return;
    }
    match kernel() {
        Kernel::Reference => reference(m, a, w, c),
        unit => crate::cpu::rows16::matmul(unit, m, a, w, c),
    }
}

/// Whether the product `[m x k] · [k x n]` has nothing to multiply (then `c` is done: untouched
/// when it is empty, zeros for an empty sum).
fn empty(m: usize, w: &PackedBf16, c: &mut [f32]) -> bool {
    if m == 0 || w.n == 0 {
        return true;
    }
    if w.k == 0 {
        c.fill(0.0);
        return true;
    }
    false
}

/// Rows of the result per pass of a product whose `a` is transposed: a multiple of every
/// kernel's row block (12, 32), so that the bf16 copy of them stays small (dw of a training step:
/// m = 3,072 rows of k = 2,624 would be 16 MB).
const CHUNK: usize = 384;

/// `c = op(a) · op(b)` (`[m x k] · [k x n]` into `[m x n]`, overwritten; contiguous row-major
/// operands as [`gemm::sgemm_into`] takes them) with bf16 operands and f32 accumulation: the
/// products of a bf16 training step. `b` is packed per call (`n x k` reads, against `m x n x k`
/// multiply-adds), `a` is rounded per call (a transposed `a` rounded and transposed in one pass).
#[allow(clippy::too_many_arguments)]
pub fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    ta: gemm::Op,
    b: &[f32],
    tb: gemm::Op,
    c: &mut [f32],
) {
    assert_eq!(c.len(), m * n, "bf16::gemm: c is not {m}x{n}");
    // SAFETY: c holds the m x n result, which the call overwrites.
    unsafe { gemm_raw((m, n, k), (a, ta), (b, tb), c.as_mut_ptr()) }
}

/// [`gemm_into`] into a new `m x n` buffer, with no zero fill first (every path writes every
/// element of the result).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    ta: gemm::Op,
    b: &[f32],
    tb: gemm::Op,
) -> Vec<f32> {
    let mut c = Vec::<f32>::with_capacity(m * n);
    // SAFETY: the buffer has room for m x n f32, and gemm_raw writes every one of them before
    // the length is set.
    unsafe {
        gemm_raw((m, n, k), (a, ta), (b, tb), c.as_mut_ptr());
        c.set_len(m * n);
    }
    c
}

/// [`gemm_into`] into the `m x n` f32 at `c`, initialised or not: every one is written (zeros
/// for an empty sum; the reference kernel's f32 product of the rounded operands; AMX or
/// AVX512-BF16 by [`gemm_unit`]).
///
/// # Safety
/// `c` addresses `m * n` writable f32.
unsafe fn gemm_raw(
    (m, n, k): (usize, usize, usize),
    (a, ta): (&[f32], gemm::Op),
    (b, tb): (&[f32], gemm::Op),
    c: *mut f32,
) {
    for (x, rows, cols) in [(a, m, k), (b, k, n)] {
        assert_eq!(
            x.len(),
            rows * cols,
            "bf16::gemm: operand of {} elements, not {rows}x{cols}",
            x.len()
        );
    }
    if m * n == 0 {
        return;
    }
    // SAFETY: (whole block) c addresses m x n f32 (the caller's contract); zero bits are 0.0.
    unsafe {
        if k == 0 {
            std::ptr::write_bytes(c, 0, m * n);
        } else if kernel() == Kernel::Reference {
            gemm::sgemm_raw(m, n, k, &round_bf16(a), ta, &round_bf16(b), tb, c);
        } else {
            gemm_unit((m, n, k), (a, ta), (b, tb), gemm::SendPtr(c));
        }
    }
}

/// [`gemm_into`] on AMX or AVX512-BF16 into `c`.
///
/// # Safety
/// The operands checked, `m, n, k > 0`, [`kernel`] not the reference, and `c` addresses `m * n`
/// writable f32 (initialised or not: every one is written).
unsafe fn gemm_unit(
    (m, n, k): (usize, usize, usize),
    (a, ta): (&[f32], gemm::Op),
    (b, tb): (&[f32], gemm::Op),
    c: gemm::SendPtr<f32>,
) {
    use crate::cpu::rows16::{self, Rows};
    // the n x k transpose of op(b), as the packing reads it
    let bt = match tb {
        gemm::Op::N => Mat::rows(b, n).t(),
        gemm::Op::T => Mat::rows(b, k),
    };
    // SAFETY: `bt` views the n x k elements of `b` (checked by the caller).
    let w = unsafe { PackedBf16::pack_view(bt, n, k) };
    let unit = kernel();
    match ta {
        // SAFETY: c addresses the m x n result (the caller's contract).
        gemm::Op::N => unsafe { rows16::product_into(unit, m, Rows::Plain(a), &w, c) },
        gemm::Op::T => {
            // a is stored [k, m]: [`CHUNK`] rows of the result at a time
            for c0 in (0..m).step_by(CHUNK) {
                let rows = Rows::Columns {
                    t: a,
                    ld: m,
                    first: c0,
                };
                // SAFETY: rows c0 .. c0 + mc of the result lie inside c.
                unsafe {
                    let out = gemm::SendPtr(c.0.add(c0 * n));
                    rows16::product_into(unit, CHUNK.min(m - c0), rows, &w, out)
                }
            }
        }
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

    /// Shapes with every kind of edge (rows below a micro-tile or a tile, rows not a multiple of
    /// 12, 16 or 32; columns and K not multiples of 32, odd K, K = 1), the model's own, and a
    /// weight of several of the AMX kernel's 1 MiB panels per thread (K = 1,000: 16 column blocks
    /// a panel) ending in a partial one.
    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 32, 32),
        (1, 1, 1),
        (5, 17, 3),
        (11, 33, 31),
        (13, 40, 70),
        (33, 40, 70),
        (82, 1536, 512),
        (82, 512, 1536),
        (100, 96, 64),
        (300, 64, 1000),
        (2624, 128, 129),
        (37, 2100, 1000),
    ];

    /// Values exact in bf16 whose products and sums of up to 2^16 terms are exact in f32
    /// (multiples of 1/8 in [-1, 1]): every summation order gives the same bits.
    fn exact_data(len: usize, seed: u32) -> Vec<f32> {
        data(len, seed)
            .iter()
            .map(|x| (x * 8.0).round() / 8.0)
            .collect()
    }

    /// `got` equals `want` bit for bit where the operands were [`exact_data`]; on [`data`] (which
    /// needs rounding) within the bound of an f32 sum of k terms against the f64 sum, `want64`:
    /// `k * eps * sum |a_i b_i|` (`mag`).
    fn check(
        what: &str,
        (m, n, k): (usize, usize, usize),
        got: &[f32],
        want64: &[f64],
        mag: &[f64],
    ) {
        for (i, ((g, r), s)) in got.iter().zip(want64).zip(mag).enumerate() {
            let tol = k as f64 * f32::EPSILON as f64 * s;
            assert!(
                (*g as f64 - r).abs() <= tol,
                "{what} {m}x{n}x{k} [{i}]: {g} vs {r} (tolerance {tol:e})"
            );
        }
    }

    /// The f64 product of the rounded operands and the magnitude sum |a_i||w_i| of every result.
    fn oracle(m: usize, a: &[f32], w: &PackedBf16) -> (Vec<f64>, Vec<f64>) {
        let (ar, wr) = (round_bf16(a), w.unpack());
        let (n, k) = (w.n, w.k);
        let mut c = vec![0f64; m * n];
        let mut mag = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for t in 0..k {
                    let p = ar[i * k + t] as f64 * wr[j * k + t] as f64;
                    c[i * n + j] += p;
                    mag[i * n + j] += p.abs();
                }
            }
        }
        (c, mag)
    }

    /// Every kernel this CPU has (AMX, AVX512-BF16, called directly, whatever the dispatch
    /// picks; on rows, on the columns of a transposed operand and on rows already rounded into
    /// pairs) and the dispatch itself against the f32 product of the rounded operands.
    #[test]
    fn every_kernel_matches_the_product_of_the_rounded_operands() {
        use crate::cpu::rows16;
        let units: [(&str, Kernel, bool); 2] = [
            ("amx", Kernel::Amx, crate::cpu::amx::available()),
            (
                "avx512-bf16",
                Kernel::Avx512Bf16,
                crate::cpu::dpbf16::available(),
            ),
        ];
        // not silent: the kernel in use is named, and the dispatch is checked in any case
        eprintln!(
            "bf16 kernel: {}; amx {}, avx512-bf16 {}",
            kernel().name(),
            units[0].2,
            units[1].2
        );
        for &(m, n, k) in SHAPES {
            for exact in [true, false] {
                let gen = if exact { exact_data } else { data };
                let a = gen(m * k, 1);
                let w = PackedBf16::pack(&gen(n * k, 2), n, k);
                let mut want = vec![0f32; m * n];
                reference(m, &a, &w, &mut want);
                let (want64, mag) = oracle(m, &a, &w);
                let mut got = vec![f32::NAN; m * n];
                matmul(m, &a, &w, &mut got);
                let mut outcomes = vec![("dispatch".to_string(), got)];
                // the operand transposed (stored [k, ld], its rows at a column offset), and
                // already rounded into rows of pairs
                let (ld, first) = (m + 3, 2);
                let mut t = vec![7.0f32; k * ld];
                for i in 0..m {
                    for j in 0..k {
                        t[j * ld + first + i] = a[i * k + j];
                    }
                }
                let kp = up(k, KSTEP);
                for &(name, unit, _) in units.iter().filter(|u| u.2) {
                    let mut got = vec![f32::NAN; m * n];
                    rows16::matmul(unit, m, &a, &w, &mut got);
                    outcomes.push((name.to_string(), got));
                    let mut got = vec![f32::NAN; m * n];
                    let rows = rows16::Rows::Columns { t: &t, ld, first };
                    let c = gemm::SendPtr(got.as_mut_ptr());
                    // SAFETY: the unit is available, the shapes non-empty, `got` m x n.
                    unsafe { rows16::product_into(unit, m, rows, &w, c) };
                    outcomes.push((format!("{name} columns"), got));
                    let mut pairs = lines(rows16::rows_padded(unit, m) * kp);
                    for (i, row) in flat_mut(&mut pairs).chunks_mut(kp).take(m).enumerate() {
                        round_into(&a[i * k..(i + 1) * k], row);
                    }
                    let mut got = vec![f32::NAN; m * n];
                    rows16::matmul_pairs(unit, m, &pairs, &w, &mut got);
                    outcomes.push((format!("{name} pairs"), got));
                }
                for (name, got) in &outcomes {
                    if exact {
                        assert_eq!(got, &want, "{name} {m}x{n}x{k}: exact data, other numbers");
                    } else {
                        check(name, (m, n, k), got, &want64, &mag);
                    }
                }
            }
        }
    }

    /// The training products: every transpose of either operand, packed per call, against the
    /// f32 product of the rounded operands.
    #[test]
    fn gemm_takes_either_operand_transposed() {
        use crate::cpu::gemm::Op;
        for &(m, n, k) in &[
            (13, 40, 70),
            (1, 17, 3),
            (82, 64, 128),
            (64, 128, 2624),
            (777, 33, 45),
            (32, 40, 70), // a transposed a's last 16-row block is all padding
            (5, 3, 1),
            (400, 20, 33),
        ] {
            let (a, b) = (exact_data(m * k, 4), exact_data(k * n, 5));
            for (ta, tb) in [
                (Op::N, Op::N),
                (Op::N, Op::T),
                (Op::T, Op::N),
                (Op::T, Op::T),
            ] {
                let want = crate::cpu::gemm::sgemm(m, n, k, &a, ta, &b, tb);
                let mut got = vec![f32::NAN; m * n];
                super::gemm_into(m, n, k, &a, ta, &b, tb, &mut got);
                assert_eq!(got, want, "gemm {ta:?} {tb:?} {m}x{n}x{k}");
            }
            // operands that need rounding (b as a weight [n, k]): the product of the rounded ones
            let (a, b) = (data(m * k, 4), data(n * k, 5));
            let mut got = vec![f32::NAN; m * n];
            super::gemm_into(m, n, k, &a, Op::N, &b, Op::T, &mut got);
            let (want, mag) = oracle(m, &a, &PackedBf16::pack(&b, n, k));
            check("gemm N T", (m, n, k), &got, &want, &mag);
            // and with a transposed (stored [k, m], the dw product's dyᵀ)
            let mut at = vec![0f32; k * m];
            for i in 0..m {
                for j in 0..k {
                    at[j * m + i] = a[i * k + j];
                }
            }
            let mut got_t = vec![f32::NAN; m * n];
            super::gemm_into(m, n, k, &at, Op::T, &b, Op::T, &mut got_t);
            check("gemm T T", (m, n, k), &got_t, &want, &mag);
        }
    }

    /// Both fast layouts and the element-wise loop pack every shape to the rounded weight:
    /// strips narrower than 16 columns, K below, at and past a tile, odd K; NaN stays NaN, and
    /// infinities, -0 and subnormals round as [`bf16_bits`] rounds them.
    #[test]
    fn every_packing_layout_gives_the_rounded_weight() {
        for &(n, k) in &[
            (1, 1),
            (5, 3),
            (16, 32),
            (17, 33),
            (37, 45),
            (40, 70),
            (64, 129),
            (70, 600), // n * k >= 2^15: the parallel loops
        ] {
            let mut w = data(n * k, 7);
            for (i, x) in [f32::NEG_INFINITY, -0.0, 1e-40, -3e-39, f32::INFINITY]
                .into_iter()
                .enumerate()
            {
                w[(i * 13) % (n * k)] = x;
            }
            w[n * k / 2] = f32::NAN;
            let mut wt = vec![0f32; n * k]; // [k, n]
            for i in 0..n {
                for j in 0..k {
                    wt[j * n + i] = w[i * k + j];
                }
            }
            // a view with neither stride 1: every other element of a doubled buffer
            let doubled: Vec<f32> = w.iter().flat_map(|&x| [x, -7.0]).collect();
            let strided = Mat {
                ptr: doubled.as_ptr(),
                rs: 2 * k as isize,
                cs: 2,
            };
            // SAFETY: each view addresses the n x k elements of its buffer.
            let packs = unsafe {
                [
                    ("rows", PackedBf16::pack_view(Mat::rows(&w, k), n, k)),
                    ("cols", PackedBf16::pack_view(Mat::rows(&wt, n).t(), n, k)),
                    ("strided", PackedBf16::pack_view(strided, n, k)),
                ]
            };
            let want: Vec<u32> = round_bf16(&w).iter().map(|x| x.to_bits()).collect();
            for (name, p) in &packs {
                let got: Vec<u32> = p.unpack().iter().map(|x| x.to_bits()).collect();
                assert_eq!(got, want, "{name} {n}x{k}");
                // the padding is zero
                let live = flat(&p.tiles).iter().filter(|&&h| h != 0).count();
                let nonzero = round_bf16(&w).iter().filter(|x| x.to_bits() != 0).count();
                assert_eq!(live, nonzero, "{name} {n}x{k}: padding written");
            }
        }
    }

    /// A transposed view packs to the same bits as the transposed copy.
    #[test]
    fn packing_a_view_equals_packing_a_copy() {
        let (n, k) = (37, 45);
        let wt = data(k * n, 6); // [k, n]: the transpose of the weight
        let mut w = vec![0f32; n * k];
        for i in 0..n {
            for j in 0..k {
                w[i * k + j] = wt[j * n + i];
            }
        }
        // SAFETY: the view addresses the n x k transpose of `wt`'s k x n elements.
        let view = unsafe { PackedBf16::pack_view(Mat::rows(&wt, n).t(), n, k) };
        assert_eq!(view.unpack(), PackedBf16::pack(&w, n, k).unpack());
        assert_eq!(view.unpack(), round_bf16(&w));
    }
}
