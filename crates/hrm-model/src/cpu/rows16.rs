//! bf16 activations in the form both bf16 units read, rows of K pairs (`[mp, kp]` bf16,
//! row-major, zero padded, 64-byte aligned), and the products on them: the activations are
//! rounded once per call from f32 rows or from the columns of a transposed operand, then
//! [`crate::cpu::amx`] loads them as tiles at the row stride and [`crate::cpu::dpbf16`]
//! broadcasts their pairs. A product writes an f32 result, or applies a SwiGLU gate to each
//! block of it while it is in cache and rounds that for the next product ([`glu`], for
//! [`crate::cpu::mlp16`]).

use std::cell::RefCell;

#[cfg(target_arch = "x86_64")]
use super::bf16::transpose16;
use super::bf16::{
    avx512, bf16_bits, halves_mut, interleave, lines, round_into, up, words, words_mut, Kernel,
    Line, PackedBf16, BLOCK, KSTEP,
};
use super::gemm::SendPtr;
use super::{amx, dpbf16};

thread_local! {
    /// The calling thread's bf16 activations (rows of K pairs), kept between calls.
    static A_BUF: RefCell<Vec<Line>> = const { RefCell::new(Vec::new()) };
}

/// The f32 activations of a product: rows `[m, k]`, or the columns `first..first + m` of a
/// matrix stored `[k, ld]` (the transposed operand of dw: `dyᵀ` read from `dy`).
#[derive(Clone, Copy)]
pub(super) enum Rows<'a> {
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
            let dst = halves_mut(dst);
            if row < m {
                round_into(&a[row * k..(row + 1) * k], &mut dst[..k]);
                dst[k..].fill(0);
            } else {
                dst.fill(0);
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

/// [`columns_block`] with AVX-512: the pairs gathered (the rounding loop compiled for AVX-512),
/// then the 16 x 16 pairs transposed in registers ([`transpose16`]).
///
/// # Safety
/// The CPU has AVX-512 F/BW; as [`columns_block`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn columns_avx512(b: Block, dst: *mut u32, pairs: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the CPU has AVX-512 F (the caller's contract).
    let v = unsafe { transpose16(&b.gather()) };
    for (i, v) in v.iter().enumerate().take(b.nr) {
        // SAFETY: row i of the destination holds 16 writable u32 (the caller's contract).
        unsafe { _mm512_storeu_si512(dst.add(i * pairs) as *mut _, *v) };
    }
}

/// Rows of the activations in `kernel`'s form for `m` rows: whole row blocks (AMX: 32, two
/// tiles; AVX512-BF16: one micro-tile).
pub(super) fn rows_padded(kernel: Kernel, m: usize) -> usize {
    match kernel {
        Kernel::Amx => up(m, BLOCK),
        _ => up(m, dpbf16::MR),
    }
}

/// `c = bf16(a) · wᵀ` on `kernel` (AMX or AVX512-BF16, available; the caller checked the
/// shapes, `m, n, k > 0`).
pub(super) fn matmul(kernel: Kernel, m: usize, a: &[f32], w: &PackedBf16, c: &mut [f32]) {
    assert!(
        c.len() >= m * w.n,
        "rows16::matmul: the result is smaller than {m}x{}",
        w.n
    );
    // SAFETY: c holds the m x n result (checked); the rest is the caller's check.
    unsafe { product_into(kernel, m, Rows::Plain(a), w, SendPtr(c.as_mut_ptr())) }
}

/// `c = a · wᵀ` for activations already rounded into pairs: [`rows_padded`]`(kernel, m)` rows
/// of `up(w.k, KSTEP) / 2` pairs in 64-byte aligned lines, as [`glu`] writes them (the caller
/// checked the shapes, `m, n, k > 0`).
pub(super) fn matmul_pairs(kernel: Kernel, m: usize, a: &[Line], w: &PackedBf16, c: &mut [f32]) {
    let len = rows_padded(kernel, m) * up(w.k, KSTEP) / 2;
    assert!(
        a.len() * 16 >= len && c.len() >= m * w.n,
        "rows16::matmul_pairs: operands smaller than their shapes"
    );
    run(
        kernel,
        m,
        &words(a)[..len],
        w,
        Sink::F32(SendPtr(c.as_mut_ptr())),
    )
}

/// The SwiGLU gate on the product `r = bf16(a) · wᵀ`, whose columns come in 32-column blocks of
/// 16 gate columns then the same 16 up columns: for block `cb`, `out[row, 16cb + j] =
/// bf16(silu(r[row, 32cb + j]) · r[row, 32cb + 16 + j])` ([`crate::cpu::kernels::swiglu`]), for
/// all [`rows_padded`]`(kernel, m)` rows (zero rows of `a` give zeros), in rows of `ld` bf16.
/// The gate is applied to each block of the result while it is in cache; no f32 result is
/// stored. (The caller checked the shapes, `m, n, k > 0`.)
pub(super) fn glu(kernel: Kernel, m: usize, a: &[f32], w: &PackedBf16, out: &mut [u16], ld: usize) {
    assert!(
        w.n.is_multiple_of(BLOCK) && ld >= w.n / 2 && out.len() >= rows_padded(kernel, m) * ld,
        "rows16::glu: the output is smaller than the gate's columns"
    );
    let out = SendPtr(out.as_mut_ptr());
    product(kernel, m, Rows::Plain(a), w, Sink::Glu { out, ld })
}

/// `c = bf16(a) · wᵀ` on `kernel` into the `m x w.n` f32 at `c`, initialised or not (every one
/// is written).
///
/// # Safety
/// `kernel` available, `m, w.n, w.k > 0`, `a` holds its `m x w.k` values (the columns of a
/// transposed operand inside it), and `c` addresses `m * w.n` writable f32.
pub(super) unsafe fn product_into(
    kernel: Kernel,
    m: usize,
    a: Rows,
    w: &PackedBf16,
    c: SendPtr<f32>,
) {
    if let Rows::Columns { t, ld, first } = a {
        debug_assert!(
            first + m <= ld && t.len() >= w.k * ld,
            "columns outside the operand"
        );
    }
    product(kernel, m, a, w, Sink::F32(c))
}

/// Where a product's results go.
#[derive(Clone, Copy)]
pub(super) enum Sink {
    /// `c [m, n]` f32 (the pointer addresses `m * n` writable f32).
    F32(SendPtr<f32>),
    /// The SwiGLU gate of [`glu`] (the pointer addresses `rows_padded(m) * ld` writable bf16).
    Glu { out: SendPtr<u16>, ld: usize },
}

/// The product of f32 activations: rounded into the calling thread's buffer, then [`run`].
fn product(kernel: Kernel, m: usize, a: Rows, w: &PackedBf16, sink: Sink) {
    let (mp, kp) = (rows_padded(kernel, m), up(w.k, KSTEP));
    let mut buf = A_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
    if buf.len() * 32 < mp * kp {
        buf = lines(mp * kp);
    }
    let ab = &mut words_mut(&mut buf)[..mp * kp / 2];
    convert(a, m, w.k, kp, ab);
    run(kernel, m, ab, w, sink);
    A_BUF.with(|b| *b.borrow_mut() = buf);
}

/// The product of activations `ab` in `kernel`'s form ([`rows_padded`] rows of pairs) on all
/// threads, each task taking a range of the 32-column panels.
fn run(kernel: Kernel, m: usize, ab: &[u32], w: &PackedBf16, sink: Sink) {
    let (kp, np) = (up(w.k, KSTEP), up(w.n, BLOCK));
    debug_assert_eq!(ab.len() % (kp / 2), 0);
    debug_assert_eq!(ab.len() / (kp / 2), rows_padded(kernel, m));
    crate::cpu::gemm::split_blocks(np / BLOCK, m * w.n * w.k, |b0, b1| match kernel {
        // SAFETY: the kernel is available (the caller's check); `ab` holds its padded rows of
        // kp bf16, the packing np x kp, and this task writes only the columns of blocks
        // [b0, b1) of `sink`.
        Kernel::Amx => unsafe { amx::panels(ab, w, sink, m, kp, b0, b1) },
        Kernel::Avx512Bf16 => unsafe { dpbf16::panels(ab, w, sink, m, kp, b0, b1) },
        Kernel::Reference => unreachable!("rows16: the reference kernel reads f32 rows"),
    });
}

/// The SwiGLU gate of a block `t` of the result (rows of 16 gate then 16 up values), rounded to
/// bf16: its rows of 16 values at `dst`, row stride `ld`.
///
/// # Safety
/// AVX-512 F/BW/VL and FMA (every CPU with AMX or AVX512-BF16 has them); `dst` addresses
/// `t.len() / 32` rows of 16 writable u16 at stride `ld`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
pub(super) unsafe fn gate(t: &[f32], dst: *mut u16, ld: usize) {
    for (i, row) in t.chunks_exact(BLOCK).enumerate() {
        let mut v = [0u16; 16];
        for (j, o) in v.iter_mut().enumerate() {
            *o = bf16_bits(crate::cpu::kernels::swiglu(row[j], row[16 + j]));
        }
        // SAFETY: row i of the destination holds 16 writable u16 (the caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), dst.add(i * ld), 16) };
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
            let mp = rows_padded(Kernel::Avx512Bf16, m);
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

    /// [`glu`] on every bf16 unit this CPU has equals the same unit's f32 product followed by
    /// the gate, bit for bit, on every padded row: rows below and not a multiple of a row block,
    /// odd K, several column blocks, and a row stride wider than the gated columns.
    #[test]
    fn the_gate_on_each_unit_equals_product_then_gate() {
        use crate::cpu::bf16::{tests::data, Kernel};
        let units = [
            (Kernel::Amx, amx::available()),
            (Kernel::Avx512Bf16, dpbf16::available()),
        ];
        for &(unit, _) in units.iter().filter(|u| u.1) {
            for &(m, k, n) in &[(1, 1, 32), (5, 33, 64), (13, 70, 96), (40, 512, 128)] {
                let a = data(m * k, 3);
                let w = PackedBf16::pack(&data(n * k, 4), n, k);
                let mut r = vec![f32::NAN; m * n];
                matmul(unit, m, &a, &w, &mut r);
                let (ld, mp) = (n / 2 + 5, rows_padded(unit, m));
                let mut got = vec![0xdead_u16; mp * ld];
                glu(unit, m, &a, &w, &mut got, ld);
                for row in 0..mp {
                    for c in 0..n / 2 {
                        let (cb, j) = (c / 16, c % 16);
                        let want = if row < m {
                            let (g, u) = (r[row * n + 32 * cb + j], r[row * n + 32 * cb + 16 + j]);
                            bf16_bits(crate::cpu::kernels::swiglu(g, u))
                        } else {
                            0
                        };
                        let at = got[row * ld + c];
                        assert_eq!(at, want, "{unit:?} {m}x{k}x{n}: row {row} column {c}");
                    }
                }
            }
        }
    }
}
