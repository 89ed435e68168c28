//! A SwiGLU MLP, `down(silu(g) * u)` with `[g | u] = x · gate_upᵀ`, in bf16 products whose
//! hidden activation stays in bf16 between the two: on AMX and AVX512-BF16 the gate is applied
//! to the first product's result blocks and rounded for the second, with no f32 round trip
//! through memory. On the reference kernel the same numbers come from the two products and an
//! f32 gate.

use rayon::prelude::*;

use super::bf16::{self, lines, up, Kernel, Line, PackedBf16, KSTEP};
use super::gemm::Mat;
use super::{kernels, rows16};

/// An MLP's two weights packed for [`PackedMlp::forward`]: `gate_up` with its columns reordered
/// into 32-column blocks of 16 gate columns and the same 16 up columns (zero padded to a whole
/// block), so that one micro-tile holds both halves of the gate; `down` as
/// [`PackedBf16::pack`] packs it.
#[derive(Debug, Clone)]
pub struct PackedMlp {
    gate_up: PackedBf16,
    down: PackedBf16,
    inner: usize,
}

/// Scratch buffers of [`PackedMlp::forward`], kept between calls.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The bf16 activation in the kernels' rows of pairs (the fused path).
    pairs: Vec<Line>,
    /// The gate-up product and the f32 activation (the reference kernel).
    gate_up: Vec<f32>,
    act: Vec<f32>,
}

impl PackedMlp {
    /// Pack `gate_up` `[2 * inner, k]` (the gate's rows, then the up rows: the halves the SwiGLU
    /// op splits) and `down` `[n, inner]`.
    pub fn pack(gate_up: &[f32], down: &[f32], inner: usize, k: usize, n: usize) -> Self {
        assert_eq!(
            gate_up.len(),
            2 * inner * k,
            "PackedMlp::pack: gate_up is not {}x{k}",
            2 * inner
        );
        // strip 2b is the gate rows 16b.., strip 2b + 1 the same up rows inner + 16b..
        let strip = |cb: usize| {
            let c = cb / 2 * 16;
            ((cb % 2) * inner + c, inner.saturating_sub(c).min(16))
        };
        // SAFETY: every strip's rows lie inside gate_up's 2 * inner rows of k (checked above).
        let gate_up =
            unsafe { PackedBf16::pack_strips(Mat::rows(gate_up, k), 2 * up(inner, 16), k, strip) };
        Self {
            gate_up,
            down: PackedBf16::pack(down, n, inner),
            inner,
        }
    }

    /// `out [m, n] = down(silu(g) * u)` for `x [m, k]`: the numbers of `bf16::matmul` by the
    /// gate-up weight, the SwiGLU op and `bf16::matmul` by `down`, bit for bit (every product
    /// rounds its operands to bf16 and the gate is [`kernels::swiglu`] in f32 either way).
    pub fn forward(&self, m: usize, x: &[f32], s: &mut Scratch, out: &mut [f32]) {
        let (k, n, inner) = (self.gate_up.k, self.down.n, self.inner);
        assert_eq!(x.len(), m * k, "PackedMlp::forward: x is not {m}x{k}");
        assert_eq!(out.len(), m * n, "PackedMlp::forward: out is not {m}x{n}");
        if m == 0 || n == 0 {
            return;
        }
        let unit = bf16::kernel();
        if unit != Kernel::Reference && k > 0 && inner > 0 {
            self.fused(unit, m, x, s, out)
        } else {
            self.split(m, x, s, out)
        }
    }

    /// [`PackedMlp::forward`] on AMX or AVX512-BF16 (`unit`): the gate applied to the gate-up
    /// product's result blocks, the activation in bf16 rows for the down product.
    fn fused(&self, unit: Kernel, m: usize, x: &[f32], s: &mut Scratch, out: &mut [f32]) {
        let ld = up(self.inner, KSTEP);
        let len = rows16::rows_padded(unit, m) * ld;
        if s.pairs.len() * 32 < len {
            s.pairs = lines(len);
        }
        let rows = &mut bf16::flat_mut(&mut s.pairs)[..len];
        rows16::glu(unit, m, x, &self.gate_up, rows, ld);
        if self.inner < ld {
            // the K padding of `down`: zeros, as the product's own rounding pads (the gate of a
            // padding column is x · 0, which is NaN where x holds an infinity)
            rows.chunks_exact_mut(ld)
                .for_each(|r| r[self.inner..].fill(0));
        }
        rows16::matmul_pairs(unit, m, &s.pairs, &self.down, out);
    }

    /// [`PackedMlp::forward`] on the reference kernel: the two products and an f32 gate.
    fn split(&self, m: usize, x: &[f32], s: &mut Scratch, out: &mut [f32]) {
        let (inner, wide) = (self.inner, self.gate_up.n);
        s.gate_up.resize(m * wide, 0.0);
        s.act.resize(m * inner, 0.0);
        bf16::matmul(m, x, &self.gate_up, &mut s.gate_up);
        s.act
            .par_chunks_mut(inner.max(1))
            .zip(s.gate_up.par_chunks(wide.max(1)))
            .for_each(|(a, r)| {
                for (c0, a) in a.chunks_mut(16).enumerate().map(|(cb, a)| (32 * cb, a)) {
                    let (g, u) = (&r[c0..c0 + a.len()], &r[c0 + 16..c0 + 16 + a.len()]);
                    kernels::swiglu_row(g, u, a);
                }
            });
        bf16::matmul(m, &s.act, &self.down, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::bf16::tests::data;

    /// The MLP on this CPU's kernel (fused on AVX512-BF16), and its split path for the other
    /// kernels, give the unfused products' numbers bit for bit, on shapes with every edge: rows below and not a multiple of a micro-tile, an inner width
    /// below, between and above the 16-column halves and the 32-value K steps, odd K and N.
    #[test]
    fn the_fused_mlp_equals_products_and_gate() {
        for &(m, k, inner, n) in &[
            (1, 1, 1, 1),
            (5, 3, 7, 5),
            (13, 33, 16, 17),
            (12, 64, 17, 32),
            (37, 45, 40, 33),
            (30, 512, 1536, 64),
        ] {
            let x = data(m * k, 1);
            let gu = data(2 * inner * k, 2);
            let dn = data(n * inner, 3);
            let mlp = PackedMlp::pack(&gu, &dn, inner, k, n);
            let mut s = Scratch::default();
            let mut got = vec![f32::NAN; m * n];
            mlp.forward(m, &x, &mut s, &mut got);
            // the other kernels' path as well, on this CPU's products
            let mut split = vec![f32::NAN; m * n];
            mlp.split(m, &x, &mut Scratch::default(), &mut split);
            // the same MLP unfused: the gate-up product, the SwiGLU op, the down product
            let mut r = vec![0f32; m * 2 * inner];
            bf16::matmul(m, &x, &PackedBf16::pack(&gu, 2 * inner, k), &mut r);
            let mut act = vec![0f32; m * inner];
            crate::ops::SwiGlu::forward_into(&r, inner, &mut act);
            let mut want = vec![0f32; m * n];
            bf16::matmul(m, &act, &PackedBf16::pack(&dn, n, inner), &mut want);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "m {m} k {k} inner {inner} n {n}");
            assert_eq!(
                bits(&split),
                bits(&want),
                "split: m {m} k {k} inner {inner} n {n}"
            );
            // a second call on the same scratch (buffers reused, smaller) gives the same
            if m > 1 {
                let mut again = vec![0f32; (m - 1) * n];
                mlp.forward(m - 1, &x[..(m - 1) * k], &mut s, &mut again);
                assert_eq!(bits(&again), bits(&want[..(m - 1) * n]));
            }
        }
    }
}
