//! The AVX512-BF16 kernel of the bf16 products ([`crate::cpu::bf16`]), for CPUs without AMX
//! (AMD Zen 4 and later, Intel Cooper Lake): `c[m x n] = bf16(a[m x k]) · wᵀ` with `w` packed by
//! [`PackedBf16::pack`] and f32 accumulation.
//!
//! `vdpbf16ps` multiplies 16 pairs of bf16 and adds both products to 16 f32 sums: one packed line
//! (16 columns x one K pair) against one pair of an activation row, broadcast. A micro-tile keeps
//! [`MR`] rows x 32 columns of the result in 24 registers over the whole reduction; the
//! activations are rounded once per call into rows of pairs. Threads split the 32-column panels,
//! and rows are taken in chunks that stay in L2 across the panels. A product can also apply a
//! SwiGLU gate to its micro-tiles and round the result for the next product ([`glu`], for
//! [`crate::cpu::mlp16`]), and take activations already in that form ([`matmul_pairs`]).

use std::cell::RefCell;
use std::sync::OnceLock;

use super::bf16::{
    avx512, bf16_bits, halves_mut, interleave, round_into, up, PackedBf16, BLOCK, KSTEP,
};
use super::gemm::SendPtr;

/// Rows of a micro-tile (2 x [`MR`] accumulators + 2 weight lines + 1 broadcast of 32 registers).
const MR: usize = 12;

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

thread_local! {
    /// The calling thread's bf16 activations (rows of K pairs), kept between calls.
    static A_BUF: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// The f32 activations of a product: rows `[m, k]`, or the columns `first..first + m` of a
/// matrix stored `[k, ld]` (the transposed operand of dw: `dyᵀ` read from `dy`).
#[derive(Clone, Copy)]
enum Rows<'a> {
    Plain(&'a [f32]),
    Columns {
        t: &'a [f32],
        ld: usize,
        first: usize,
    },
}

/// Round the `m` rows of `a` (width `k`) into `out`: `mp` rows of `kp / 2` pairs, zero padded;
/// in parallel when large. Transposed rows go band by band, a band being 16 pairs (32 K rows of
/// `t`): its 16 x 16 blocks are read left to right along those 32 rows (contiguous runs of
/// each row, few pages: reading one column block down all of K would touch a new page every
/// row) and written transposed into the band's 16 pairs of each output row.
fn convert(a: Rows, m: usize, k: usize, kp: usize, out: &mut [u32]) {
    let pairs = kp / 2;
    let par = m * k >= 1 << 16;
    match a {
        Rows::Plain(a) => chunks(out, pairs, par, |row, dst| {
            dst.fill(0);
            if row < m {
                round_into(&a[row * k..(row + 1) * k], &mut halves_mut(dst)[..k]);
            }
        }),
        Rows::Columns { t, ld, first } => {
            let rows = out.len() / pairs;
            let dst = SendPtr(out.as_mut_ptr());
            let band = |p0: usize| {
                let dst = &dst; // the whole SendPtr (a raw pointer alone is not Sync)
                for i0 in (0..rows).step_by(16) {
                    let b = Block {
                        t,
                        ld,
                        c0: first + i0,
                        ni: m.saturating_sub(i0).min(16),
                        nr: (rows - i0).min(16),
                        k,
                        p0,
                    };
                    // SAFETY: rows i0 .. i0 + nr of `out` hold `pairs` u32 each and this band
                    // writes only their pairs p0 .. p0 + 16 (pairs is a multiple of 16).
                    let d = unsafe { dst.0.add(i0 * pairs + p0) };
                    #[cfg(target_arch = "x86_64")]
                    if avx512() {
                        // SAFETY: the CPU has AVX-512 F/BW; `d` as above.
                        unsafe { columns_avx512(b, d, pairs) };
                        continue;
                    }
                    // SAFETY: `d` as above.
                    unsafe { columns_block(b, d, pairs) };
                }
            };
            if par {
                use rayon::prelude::*;
                (0..pairs / 16).into_par_iter().for_each(|b| band(16 * b));
            } else {
                (0..pairs / 16).for_each(|b| band(16 * b));
            }
        }
    }
}

/// `f(index, chunk)` for every `size`-long chunk of `out`, on rayon's threads when `par`.
fn chunks(out: &mut [u32], size: usize, par: bool, f: impl Fn(usize, &mut [u32]) + Sync + Send) {
    use rayon::prelude::*;
    if par {
        out.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// One 16 x 16 block of the transposed operand: output rows `c0 .. c0 + nr` (columns of `t`,
/// `[k, ld]`; those past `ni` are padding, written as zeros), pairs `p0 .. p0 + 16` (zeros past
/// K).
#[derive(Clone, Copy)]
struct Block<'a> {
    t: &'a [f32],
    ld: usize,
    c0: usize,
    ni: usize,
    nr: usize,
    k: usize,
    p0: usize,
}

impl Block<'_> {
    /// The block's pairs rounded and paired along K, `[pair][row]` (zeros past K, past `ni`, and
    /// for a block of padding rows only, whose columns lie outside `t`).
    #[inline(always)]
    fn gather(&self) -> [[u32; 16]; 16] {
        let Block {
            t,
            ld,
            c0,
            ni,
            k,
            p0,
            ..
        } = *self;
        let np = if ni == 0 {
            0
        } else {
            16.min(k.div_ceil(2).saturating_sub(p0))
        };
        let mut tmp = [[0u32; 16]; 16];
        for (dp, block) in tmp.iter_mut().enumerate().take(np) {
            let kk = 2 * (p0 + dp);
            let row = |kk: usize| &t[kk * ld + c0..][..ni];
            interleave(row(kk), (kk + 1 < k).then(|| row(kk + 1)), &mut block[..ni]);
        }
        tmp
    }
}

/// Round and transpose `b` into `nr` rows of 16 pairs at `dst`, row stride `pairs`.
///
/// # Safety
/// `dst + i * pairs` addresses 16 writable u32 for every `i < b.nr`.
#[inline(always)]
unsafe fn columns_block(b: Block, dst: *mut u32, pairs: usize) {
    let tmp = b.gather();
    for i in 0..b.nr {
        let mut line = [0u32; 16];
        for (l, block) in line.iter_mut().zip(&tmp) {
            *l = block[i];
        }
        // SAFETY: row i of the destination holds 16 writable u32 (the caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(line.as_ptr(), dst.add(i * pairs), 16) };
    }
}

/// The lane indices of the register transpose in [`columns_avx512`]: for step `s` = 8, 4, 2, 1,
/// the `_mm512_permutex2var_epi32` selections that give rows r and r + s (r & s == 0) their
/// swapped off-diagonal s-blocks.
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

/// [`columns_block`] with AVX-512: the pairs gathered (the rounding loop compiled for AVX-512),
/// then the 16 x 16 pairs transposed in registers.
///
/// # Safety
/// The CPU has AVX-512 F/BW; as [`columns_block`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn columns_avx512(b: Block, dst: *mut u32, pairs: usize) {
    use std::arch::x86_64::*;
    let tmp = b.gather();
    // SAFETY: (all loads) 16 u32 / i32 each.
    let mut v = tmp.map(|row| unsafe { _mm512_loadu_si512(row.as_ptr() as *const _) });
    for (step, (lo, hi)) in TRANSPOSE.iter().enumerate() {
        let s = 8 >> step;
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
    for (i, v) in v.iter().enumerate().take(b.nr) {
        // SAFETY: row i of the destination holds 16 writable u32 (the caller's contract).
        unsafe { _mm512_storeu_si512(dst.add(i * pairs) as *mut _, *v) };
    }
}

/// Rows of the activations in the kernel's form for `m` rows (a whole number of micro-tiles).
pub(super) fn rows_padded(m: usize) -> usize {
    up(m, MR)
}

/// `c = bf16(a) · wᵀ` (the caller checked [`available`] and the shapes, `m, n, k > 0`).
pub(super) fn matmul(m: usize, a: &[f32], w: &PackedBf16, c: &mut [f32]) {
    product(m, Rows::Plain(a), w, Sink::F32(SendPtr(c.as_mut_ptr())))
}

/// `c = a · wᵀ` for activations already rounded into pairs: [`rows_padded`]`(m)` rows of
/// `up(w.k, KSTEP) / 2` pairs, as [`glu`] writes them (the caller checked [`available`] and the
/// shapes, `m, n, k > 0`).
pub(super) fn matmul_pairs(m: usize, a: &[u32], w: &PackedBf16, c: &mut [f32]) {
    assert!(
        a.len() >= rows_padded(m) * up(w.k, KSTEP) / 2 && c.len() >= m * w.n,
        "dpbf16::matmul_pairs: operands smaller than their shapes"
    );
    let rows = &a[..rows_padded(m) * up(w.k, KSTEP) / 2];
    run(m, rows, w, Sink::F32(SendPtr(c.as_mut_ptr())))
}

/// The SwiGLU gate on the product `r = bf16(a) · wᵀ`, whose columns come in 32-column blocks of
/// 16 gate columns then the same 16 up columns: for block `cb`, `out[row, 16cb + j] =
/// bf16(silu(r[row, 32cb + j]) · r[row, 32cb + 16 + j])` ([`crate::cpu::kernels::swiglu`]), for
/// all [`rows_padded`]`(m)` rows (zero rows of `a` give zeros), in rows of `ld` bf16. The gate is
/// applied to each micro-tile while it is in cache; no f32 result is stored. (The caller checked
/// [`available`] and the shapes, `m, n, k > 0`.)
pub(super) fn glu(m: usize, a: &[f32], w: &PackedBf16, out: &mut [u16], ld: usize) {
    assert!(
        w.n.is_multiple_of(BLOCK) && ld >= w.n / 2 && out.len() >= rows_padded(m) * ld,
        "dpbf16::glu: the output is smaller than the gate's columns"
    );
    let out = SendPtr(out.as_mut_ptr());
    product(m, Rows::Plain(a), w, Sink::Glu { out, ld })
}

/// `c = bf16(A) · wᵀ` where A `[m, w.k]` is the columns `first..first + m` of `t` `[w.k, ld]`
/// (the caller checked [`available`] and the shapes, `m, n, k > 0`): A is rounded and
/// transposed in one pass, with no f32 copy.
pub(super) fn matmul_columns(
    m: usize,
    t: &[f32],
    ld: usize,
    first: usize,
    w: &PackedBf16,
    c: &mut [f32],
) {
    assert!(
        first + m <= ld && t.len() >= w.k * ld,
        "dpbf16: columns outside the operand"
    );
    product(
        m,
        Rows::Columns { t, ld, first },
        w,
        Sink::F32(SendPtr(c.as_mut_ptr())),
    )
}

/// Where a product's results go.
#[derive(Clone, Copy)]
enum Sink {
    /// `c [m, n]` f32 (the pointer addresses `m * n` writable f32).
    F32(SendPtr<f32>),
    /// The SwiGLU gate of [`glu`] (the pointer addresses `rows_padded(m) * ld` writable bf16).
    Glu { out: SendPtr<u16>, ld: usize },
}

/// The product of f32 activations: rounded into the calling thread's buffer, then [`run`].
fn product(m: usize, a: Rows, w: &PackedBf16, sink: Sink) {
    let (mp, kp) = (up(m, MR), up(w.k, KSTEP));
    let mut buf = A_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    buf.resize(mp * kp / 2, 0);
    convert(a, m, w.k, kp, &mut buf[..mp * kp / 2]);
    run(m, &buf[..mp * kp / 2], w, sink);
    A_BUF.with(|b| *b.borrow_mut() = buf);
}

/// The product of activations `ab` in the kernel's form (`up(m, MR)` rows of pairs) on all
/// threads, each task taking a range of the 32-column panels.
#[cfg(target_arch = "x86_64")]
fn run(m: usize, ab: &[u32], w: &PackedBf16, sink: Sink) {
    let (kp, np) = (up(w.k, KSTEP), up(w.n, BLOCK));
    crate::cpu::gemm::split_blocks(np / BLOCK, m * w.n * w.k, |b0, b1| {
        // SAFETY: AVX512-BF16 is available (the caller's check); `ab` holds mp x kp bf16, the
        // packing np x kp, and this task writes only the columns of blocks [b0, b1) of `sink`.
        unsafe { panels(ab, w, sink, m, kp, b0, b1) };
    });
}

#[cfg(not(target_arch = "x86_64"))]
fn run(_: usize, _: &[u32], _: &PackedBf16, _: Sink) {
    unreachable!("AVX512-BF16 is never available off x86_64")
}

/// Result columns `[32*b0, 32*b1)` for all rows (with [`Sink::Glu`]: their gated columns
/// `[16*b0, 16*b1)`).
///
/// # Safety
/// AVX512-BF16 available; `ab` is `[up(m, MR), kp]` bf16 in pairs, `w` packed with K padded to
/// `kp`, and `sink` addresses its buffer (see [`Sink`]), which no other thread writes in these
/// columns.
#[cfg(target_arch = "x86_64")]
unsafe fn panels(
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
                            gate(&edge, out.0.add(r * ld + cb * 16), ld);
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

/// The SwiGLU gate of one micro-tile `t` (MR rows of 16 gate then 16 up values), rounded to
/// bf16: MR rows of 16 values at `dst`, row stride `ld`.
///
/// # Safety
/// [`available`] (AVX-512 F/BW/VL, FMA); `dst` addresses MR rows of 16 writable u16 at stride
/// `ld`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn gate(t: &[f32; MR * BLOCK], dst: *mut u16, ld: usize) {
    for (i, row) in t.chunks_exact(BLOCK).enumerate() {
        let mut v = [0u16; 16];
        for (j, o) in v.iter_mut().enumerate() {
            *o = bf16_bits(crate::cpu::kernels::swiglu(row[j], row[16 + j]));
        }
        // SAFETY: row i of the destination holds 16 writable u16 (the caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), dst.add(i * ld), 16) };
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The transposed operand in the kernel's form equals rounding each element with
    /// [`bf16_bits`] and pairing along K, on both block loops (AVX-512 and scalar), serial and
    /// parallel: odd K, a K that ends inside a band, output rows past `m` (one whole 16-row
    /// block of them at m = 32), a column offset, and NaN, infinities, -0, subnormals and
    /// rounding ties.
    #[test]
    fn transposed_rows_round_and_pair_like_the_scalar_rule() {
        let specials = [
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7f80_0001), // a signalling NaN: quieted, not rounded to infinity
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            1e-40,
            -3e-39,
            f32::from_bits(0x3f80_8000), // a tie: rounds to even (down)
            f32::from_bits(0x3f81_8000), // a tie: rounds to even (up)
            f32::from_bits(0x7f7f_ffff), // rounds to infinity
        ];
        for &(m, k, ld, first) in &[
            (1, 1, 1, 0),
            (5, 3, 9, 2),
            (32, 33, 40, 3),
            (17, 64, 17, 0),
            (200, 700, 230, 21), // m * k >= 2^16: the parallel path
        ] {
            let mut t = super::super::bf16::tests::data(k * ld, 9);
            for (i, &x) in specials.iter().enumerate() {
                t[(i * 37) % (k * ld)] = x;
            }
            let kp = up(k, KSTEP);
            let pairs = kp / 2;
            let mp = rows_padded(m);
            let mut want = vec![0u32; mp * pairs];
            for i in 0..m {
                for kk in 0..k {
                    let h = bf16_bits(t[kk * ld + first + i]) as u32;
                    want[i * pairs + kk / 2] |= h << (16 * (kk % 2));
                }
            }
            let mut got = vec![0xdead_beef_u32; mp * pairs];
            convert(Rows::Columns { t: &t, ld, first }, m, k, kp, &mut got);
            assert_eq!(got, want, "convert {m}x{k} (ld {ld}, first {first})");
            // the scalar loop, block by block
            let mut scalar = vec![0xdead_beef_u32; mp * pairs];
            for p0 in (0..pairs).step_by(16) {
                for i0 in (0..mp).step_by(16) {
                    let b = Block {
                        t: &t,
                        ld,
                        c0: first + i0,
                        ni: m.saturating_sub(i0).min(16),
                        nr: (mp - i0).min(16),
                        k,
                        p0,
                    };
                    // SAFETY: rows i0 .. i0 + nr of `scalar` hold `pairs` u32 from p0 + 16.
                    unsafe { columns_block(b, scalar.as_mut_ptr().add(i0 * pairs + p0), pairs) };
                }
            }
            assert_eq!(scalar, want, "scalar blocks {m}x{k}");
        }
    }
}
