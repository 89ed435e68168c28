//! Fused operations of the HRM block, as candle custom ops with hand-written backward passes.
//!
//! Three kernels cover everything in a block that is not a matrix product
//! (mirrors sapientinc/HRM:models/layers.py `Attention.forward`, `SwiGLU.forward`, `rms_norm`,
//! `apply_rotary_pos_emb` and the residual adds of `HierarchicalReasoningModel_ACTV1Block`):
//!
//! - [`attention`]: `qkv [B, S, 3D] -> out [B, S, D]`: split into heads, rotate-half RoPE on q and
//!   k (fp32 tables), non-causal softmax attention with scale 1/sqrt(Dh), merge heads. The backward
//!   pass recomputes the attention probabilities from q and k (as FlashAttention does) instead of
//!   keeping a `[B, H, S, S]` tensor alive in the graph.
//! - [`add_rms_norm`]: `rms_norm(a + b)`, the post-norm residual of the block, parameter-free,
//!   computed in fp32 (f64 accumulation of the mean square).
//! - [`swiglu`]: `gate_up [.., 2I] -> silu(gate) * up [.., I]`.
//!
//! candle's own fused `softmax_last_dim`, `candle_nn::RmsNorm` and `rotary_emb::rope` silently drop
//! gradients, which is why these exist. Each kernel runs on CPU as a custom op (f32, bf16 via an
//! fp32 compute copy, and f64 so that finite-difference tests are precise); on other devices the
//! same maths runs as composed, differentiable candle ops (`*_composed`), which also serve as a
//! second opinion in the tests.
//!
//! Shape legend: B batch, S sequence (puzzle prefix included), H heads, Dh head dim, D = H*Dh,
//! I SwiGLU inner width.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use half::bf16;
use rayon::prelude::*;

use crate::cpu::gemm::{self, SendPtr};
use crate::cpu::init_from;

// ------------------------------------------------------------------------------------------------
// Element type plumbing
// ------------------------------------------------------------------------------------------------

/// The float types our kernels compute in (bf16 inputs are computed in f32).
pub(crate) trait Real:
    num_traits::Float + Send + Sync + Copy + std::iter::Sum + std::fmt::Debug + 'static
{
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// `op(a) · op(b)` for contiguous row-major operands on all threads ([`gemm::sgemm`]).
    fn matmul(
        m: usize,
        n: usize,
        k: usize,
        a: &[Self],
        ta: gemm::Op,
        b: &[Self],
        tb: gemm::Op,
    ) -> Vec<Self>;
    /// `out = silu(g) * u` element-wise (silu(x) = x * sigmoid(x)).
    fn swiglu_row(g: &[Self], u: &[Self], out: &mut [Self]) {
        for ((o, &gi), &ui) in out.iter_mut().zip(g).zip(u) {
            *o = gi * sigmoid(gi) * ui;
        }
    }
    /// Softmax of each `width`-long row of `p` after scaling by `scale`, max-subtracted.
    fn softmax_rows(p: &mut [Self], width: usize, scale: Self) {
        for row in p.chunks_mut(width) {
            let mut mx = Self::neg_infinity();
            for x in row.iter_mut() {
                *x = *x * scale;
                mx = mx.max(*x);
            }
            let mut sum = Self::zero();
            for x in row.iter_mut() {
                *x = (*x - mx).exp();
                sum = sum + *x;
            }
            let inv = Self::one() / sum;
            for x in row.iter_mut() {
                *x = *x * inv;
            }
        }
    }
}
impl Real for f32 {
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn matmul(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        ta: gemm::Op,
        b: &[f32],
        tb: gemm::Op,
    ) -> Vec<f32> {
        gemm::sgemm(m, n, k, a, ta, b, tb)
    }
    fn softmax_rows(p: &mut [f32], width: usize, scale: f32) {
        crate::cpu::kernels::softmax_rows(p, width, scale)
    }
    fn swiglu_row(g: &[f32], u: &[f32], out: &mut [f32]) {
        crate::cpu::kernels::swiglu_row(g, u, out)
    }
}
impl Real for f64 {
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn matmul(
        m: usize,
        n: usize,
        k: usize,
        a: &[f64],
        ta: gemm::Op,
        b: &[f64],
        tb: gemm::Op,
    ) -> Vec<f64> {
        gemm::dgemm(m, n, k, a, ta, b, tb)
    }
}

/// A contiguous view (borrowed when possible) of a storage as `T`.
fn contiguous<'a, T: candle_core::WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
) -> Result<Cow<'a, [T]>> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(Cow::Borrowed(&data[a..b])),
        None => Ok(Cow::Owned(
            strided_offsets(l).into_iter().map(|i| data[i]).collect(),
        )),
    }
}

/// Storage offsets of every element of a (possibly strided) layout, in row-major order.
fn strided_offsets(l: &Layout) -> Vec<usize> {
    let dims = l.dims();
    let stride = l.stride();
    let n: usize = dims.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..n {
        out.push(l.start_offset() + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>());
        for d in (0..dims.len()).rev() {
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// Input of a custom op in its compute type: f32/f64 as they are, bf16 widened to f32.
enum Input<'a> {
    F32(Cow<'a, [f32]>),
    F64(Cow<'a, [f64]>),
}

fn input<'a>(s: &'a CpuStorage, l: &Layout) -> Result<(Input<'a>, DType)> {
    Ok(match s.dtype() {
        DType::F32 => (Input::F32(contiguous::<f32>(s, l)?), DType::F32),
        DType::F64 => (Input::F64(contiguous::<f64>(s, l)?), DType::F64),
        DType::BF16 => {
            let v = contiguous::<bf16>(s, l)?;
            (
                Input::F32(Cow::Owned(v.iter().map(|x| x.to_f32()).collect())),
                DType::BF16,
            )
        }
        dt => candle_core::bail!("hrm ops support f32, bf16 and f64, got {dt:?}"),
    })
}

/// Wrap an f32/f64 result into a storage of the requested dtype.
fn output_f32(v: Vec<f32>, dtype: DType) -> CpuStorage {
    match dtype {
        DType::BF16 => CpuStorage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        _ => CpuStorage::F32(v),
    }
}

/// A new `len`-element buffer written chunk by chunk in parallel, `fill(index, chunk)` for each
/// `chunk` elements, with no zero fill of the whole buffer first (one on the calling thread
/// alone, through memory, that the kernels then overwrite).
///
/// # Safety
/// `fill` writes every element of the chunk it is given.
unsafe fn par_written<T: Send>(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync,
) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| fill(i, c));
    // SAFETY: the chunks cover the first `len` elements, and `fill` wrote each one (the
    // caller's contract).
    unsafe { v.set_len(len) };
    v
}

/// [`par_written`] for kernels that take an initialised chunk: each task zeroes its chunk
/// (while it is in its cache) and hands it to `fill`.
fn par_filled<T: Real>(len: usize, chunk: usize, fill: impl Fn(usize, &mut [T]) + Sync) -> Vec<T> {
    // SAFETY: `init_from` writes every element of the chunk.
    unsafe { par_written(len, chunk, |i, c| fill(i, init_from(c, |_| T::zero()))) }
}

/// `len` zeros, zeroed in parallel (a buffer that tasks write in pieces other than chunks).
fn par_zeros<T: Real>(len: usize) -> Vec<T> {
    par_filled(len, 1 << 16, |_, _| ())
}

fn same_dtype(a: DType, b: DType, op: &str) -> Result<()> {
    if a != b {
        candle_core::bail!("{op}: dtype mismatch {a:?} vs {b:?}")
    }
    Ok(())
}

/// Dot product with 8 independent accumulators (lets the compiler vectorise the reduction).
#[inline]
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let n = a.len() / 8 * 8;
    for (ca, cb) in a[..n].chunks_exact(8).zip(b[..n].chunks_exact(8)) {
        for k in 0..8 {
            acc[k] = acc[k] + ca[k] * cb[k];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for i in n..a.len() {
        s = s + a[i] * b[i];
    }
    s
}

// ------------------------------------------------------------------------------------------------
// Linear (CastedLinear without bias)
// ------------------------------------------------------------------------------------------------

/// How the CPU ops multiply f32 matrices: in f32, or with both operands rounded to bf16 and f32
/// accumulation (a bf16 forward on the CPU: f32 activations and master weights, bf16 products on
/// AMX or AVX512-BF16, [`crate::cpu::bf16`]). f64 products stay f64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Products {
    /// f32 products ([`gemm::sgemm`]).
    #[default]
    F32,
    /// bf16 operands, f32 sums ([`crate::cpu::bf16::gemm_into`]).
    Bf16,
}

impl Products {
    /// `op(a) · op(b)` for contiguous row-major f32 operands on all threads.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_into(
        self,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        ta: gemm::Op,
        b: &[f32],
        tb: gemm::Op,
        c: &mut [f32],
    ) {
        match self {
            Products::F32 => gemm::sgemm_into(m, n, k, a, ta, b, tb, c),
            Products::Bf16 => crate::cpu::bf16::gemm_into(m, n, k, a, ta, b, tb, c),
        }
    }

    /// [`Products::matmul_into`] into a new `m x n` buffer.
    fn product(
        self,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        ta: gemm::Op,
        b: &[f32],
        tb: gemm::Op,
    ) -> Vec<f32> {
        match self {
            // (no zero-filled buffer first: both write every element)
            Products::F32 => gemm::sgemm(m, n, k, a, ta, b, tb),
            Products::Bf16 => crate::cpu::bf16::gemm(m, n, k, a, ta, b, tb),
        }
    }
}

/// `x [.., K] · w^T` with `w [M, K]` -> `[.., M]`, the reference's `CastedLinear` (no bias), with
/// its backward `dx = dy · w`, `dw = dy^T · x`. The products go through [`gemm::sgemm`] (the
/// `gemm` crate, or a system BLAS with the `blas` feature), or with [`Products::Bf16`] through the
/// bf16 kernels (all three products: forward and both backward), into freshly allocated outputs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Linear(pub Products);

/// Rows N and width K of `x`, rows M of `w`, after checking that the shapes fit.
fn linear_dims(lx: &Layout, lw: &Layout) -> Result<(usize, usize, usize)> {
    let (xd, wd) = (lx.dims(), lw.dims());
    let k = *xd.last().unwrap_or(&0);
    if wd.len() != 2 || wd[1] != k {
        candle_core::bail!(
            "linear: x {:?} does not fit w {:?} (expects w [M, {k}])",
            xd,
            wd
        )
    }
    let n = lx.shape().elem_count().checked_div(k).unwrap_or(0);
    Ok((n, k, wd[0]))
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "hrm-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, k, m) = linear_dims(l1, l2)?;
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().expect("checked rank") = m;
        let (x, dt) = input(s1, l1)?;
        let (w, dt2) = input(s2, l2)?;
        same_dtype(dt, dt2, "linear")?;
        let out = match (x, w) {
            (Input::F32(x), Input::F32(w)) => output_f32(
                self.0.product(n, m, k, &x, gemm::Op::N, &w, gemm::Op::T),
                dt,
            ),
            (Input::F64(x), Input::F64(w)) => {
                CpuStorage::F64(f64::matmul(n, m, k, &x, gemm::Op::N, &w, gemm::Op::T))
            }
            _ => candle_core::bail!("linear: mixed dtypes"),
        };
        Ok((out, Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.to_dtype(x.dtype())?;
        let dx = dy.apply_op2_no_bwd(w, &LinearBwd(Grad::Input, self.0))?;
        let dw = dy.apply_op2_no_bwd(x, &LinearBwd(Grad::Weight, self.0))?;
        Ok((Some(dx), Some(dw)))
    }
}

/// The products of [`Linear`]'s backward pass: which gradient, in which precision.
#[derive(Debug, Clone, Copy)]
struct LinearBwd(Grad, Products);

/// The two products of [`Linear`]'s backward pass.
#[derive(Debug, Clone, Copy)]
enum Grad {
    /// `(dy [N, M], w [M, K]) -> dx [N, K] = dy · w`.
    Input,
    /// `(dy [N, M], x [N, K]) -> dw [M, K] = dy^T · x`.
    Weight,
}

impl CustomOp2 for LinearBwd {
    fn name(&self) -> &'static str {
        "hrm-linear-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let m = *l1.dims().last().unwrap_or(&0);
        let n = l1.shape().elem_count().checked_div(m).unwrap_or(0);
        let (g, dt) = input(s1, l1)?;
        let (o, dt2) = input(s2, l2)?;
        same_dtype(dt, dt2, "linear backward")?;
        let (rows, cols, shape) = match self.0 {
            Grad::Input => {
                let k = *l2.dims().last().unwrap_or(&0);
                let mut dims = l1.dims().to_vec();
                *dims.last_mut().expect("rank >= 1") = k;
                (n, k, Shape::from(dims))
            }
            Grad::Weight => {
                let k = *l2.dims().last().unwrap_or(&0);
                (m, k, Shape::from((m, k)))
            }
        };
        // the same two products in f32 (either precision) or f64
        let (ta, tb, inner) = match self.0 {
            Grad::Input => (gemm::Op::N, gemm::Op::N, m),
            Grad::Weight => (gemm::Op::T, gemm::Op::N, n),
        };
        let out = match (g, o) {
            (Input::F32(g), Input::F32(o)) => {
                output_f32(self.1.product(rows, cols, inner, &g, ta, &o, tb), dt)
            }
            (Input::F64(g), Input::F64(o)) => {
                CpuStorage::F64(f64::matmul(rows, cols, inner, &g, ta, &o, tb))
            }
            _ => candle_core::bail!("linear backward: mixed dtypes"),
        };
        Ok((out, shape))
    }
}

/// `x [.., K] · w^T`: the custom op on CPU (products in precision `p`), candle's matmul
/// elsewhere.
pub fn linear(x: &Tensor, w: &Tensor, p: Products) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.apply_op2(w, Linear(p))
    } else {
        linear_composed(x, w)
    }
}

/// [`Linear`] as composed, differentiable candle ops (any device).
pub fn linear_composed(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().unwrap_or(&0);
    let rows = x.elem_count() / k.max(1);
    let x2 = x.contiguous()?.reshape((rows, k))?;
    let y = x2.matmul(&w.t()?)?;
    let mut od = dims;
    *od.last_mut().expect("rank >= 1") = w.dim(0)?;
    y.reshape(od)
}

/// `f(x) · wᵀ` without keeping `f(x)`: the attention or SwiGLU op followed by the projection that
/// reads its output, for the gradient path. The forward runs `f` and [`Linear`] exactly as the two
/// ops would (same kernels, same numbers, bf16 rounding of `f(x)` included); the backward
/// recomputes `f(x)` from `x` instead of holding it in the graph from the forward to the backward.
/// That drops the attention output (`[N, D]`) and the SwiGLU output (`[N, I]`) of every gradient
/// layer from the peak memory of a training step (21.5 MB per layer for the Sudoku preset at
/// batch 32), for the price of recomputing them (attention: ~2% of the layer's products).
#[derive(Debug, Clone)]
pub struct ThenLinear<F>(pub F, pub Products);

impl<F: CustomOp1 + Clone + Send + Sync> CustomOp2 for ThenLinear<F> {
    fn name(&self) -> &'static str {
        "hrm-then-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (h, shape) = self.0.cpu_fwd(s1, l1)?;
        Linear(self.1).cpu_fwd(&h, &Layout::contiguous(shape), s2, l2)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let h = x.apply_op1_no_bwd(&self.0)?;
        let (dh, dw) = Linear(self.1).bwd(&h, w, res, dy)?;
        let dh = dh.ok_or_else(|| candle_core::Error::Msg("then-linear: no dh".into()))?;
        Ok((self.0.bwd(x, &h, &dh)?, dw))
    }
}

/// A fused CPU op with its twin of composed candle ops for the other devices.
pub trait Fused: CustomOp1 + Clone + Send + Sync + 'static {
    /// The same function as differentiable candle ops (any device).
    fn composed(&self, x: &Tensor) -> Result<Tensor>;

    /// The fused op on the CPU, the composed ops elsewhere.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() {
            x.apply_op1(self.clone())
        } else {
            self.composed(x)
        }
    }
}

/// `f(x) · wᵀ` for `f` = [`Attention`] or [`SwiGlu`]: [`ThenLinear`] on the CPU, the two ops
/// (composed) elsewhere.
pub fn then_linear<F: Fused>(x: &Tensor, f: &F, w: &Tensor, p: Products) -> Result<Tensor> {
    if x.device().is_cpu() {
        x.apply_op2(w, ThenLinear(f.clone(), p))
    } else {
        linear(&f.composed(x)?, w, p)
    }
}

/// `f(x · w1ᵀ) · w2ᵀ` holding only `x`: a block's attention (`f` = [`Attention`] between the qkv
/// and output projections) or MLP (`f` = [`SwiGlu`] between the gate-up and down projections) as
/// one op of the gradient path. The forward runs [`Linear`] and [`ThenLinear`] exactly as the
/// separate ops would (same kernels, same numbers); the backward recomputes `x · w1ᵀ` from `x`
/// instead of holding it in the graph, so neither the qkv (`[N, 3D]`) nor the gate-up (`[N, 2I]`)
/// result of a gradient layer stays alive from the forward to the backward (48.4 MB a layer for
/// the Sudoku preset at batch 32), for one more product a projection pair. [`linear_then_linear`]
/// uses it for bf16 products, where that product costs no measurable time (the step moves
/// less memory), and not for f32, where it costs about 7% of a training step.
#[derive(Debug, Clone)]
pub struct LinearThenLinear<F>(pub F, pub Products);

impl<F: CustomOp1 + Clone + Send + Sync> candle_core::CustomOp3 for LinearThenLinear<F> {
    fn name(&self) -> &'static str {
        "hrm-linear-then-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, shape) = Linear(self.1).cpu_fwd(s1, l1, s2, l2)?;
        ThenLinear(self.0.clone(), self.1).cpu_fwd(&y, &Layout::contiguous(shape), s3, l3)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w1: &Tensor,
        w2: &Tensor,
        res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let y = x.apply_op2_no_bwd(w1, &Linear(self.1))?;
        let (dy1, dw2) = ThenLinear(self.0.clone(), self.1).bwd(&y, w2, res, dy)?;
        let dy1 =
            dy1.ok_or_else(|| candle_core::Error::Msg("linear-then-linear: no dy1".into()))?;
        let (dx, dw1) = Linear(self.1).bwd(x, w1, &y, &dy1)?;
        Ok((dx, dw1, dw2))
    }
}

/// `f(x · w1ᵀ) · w2ᵀ`: [`LinearThenLinear`] on the CPU with bf16 products, else [`linear`] then
/// [`then_linear`] (the same numbers).
pub fn linear_then_linear<F: Fused>(
    x: &Tensor,
    w1: &Tensor,
    f: &F,
    w2: &Tensor,
    p: Products,
) -> Result<Tensor> {
    if x.device().is_cpu() && p == Products::Bf16 {
        x.apply_op3(w1, w2, LinearThenLinear(f.clone(), p))
    } else {
        then_linear(&linear(x, w1, p)?, f, w2, p)
    }
}

/// TRM's `mlp_t` mixer with its residual and norm, on `h` `[B, S, D]`: `u = hᵀ [B, D, S]`,
/// `u = rms_norm(u + SwiGLU_t(u))` over the S positions of each (row, channel), back to
/// `[B, S, D]`. `SwiGLU_t(u) = down(silu(gate) * up)` with `gate_up` `[2 I_t, S]` (gate rows
/// first) and `down` `[S, I_t]`. Built from [`linear_then_linear`] with [`SwiGlu`] and
/// [`add_rms_norm`] (so it differentiates through their backward passes); `observe` sees
/// SwiGLU_t(u) `[B, D, S]`.
pub fn mlp_t_block(
    h: &Tensor,
    gate_up: &Tensor,
    down: &Tensor,
    eps: f64,
    p: Products,
    observe: &mut dyn FnMut(&Tensor),
) -> Result<Tensor> {
    let u = h.transpose(1, 2)?.contiguous()?; // [B, D, S]
    let m = linear_then_linear(&u, gate_up, &SwiGlu, down, p)?; // [B, D, S]
    observe(&m);
    add_rms_norm(&u, &m, eps)?.transpose(1, 2)?.contiguous() // [B, S, D]
}

// ------------------------------------------------------------------------------------------------
// RoPE tables
// ------------------------------------------------------------------------------------------------

/// Rotary tables `[S, Dh]`, built in f32 exactly as the reference does: `inv_freq_k =
/// 1 / theta^(2k/Dh)`, angle `t * inv_freq_k` in f32, the Dh/2 angles concatenated with themselves.
#[derive(Debug, Clone)]
pub struct RopeTables {
    /// Positions S (puzzle prefix included; the prefix is position 0).
    pub seq_len: usize,
    /// Head dimension Dh.
    pub head_dim: usize,
    /// cos table, row-major `[S, Dh]`.
    pub cos: Vec<f32>,
    /// sin table, row-major `[S, Dh]`.
    pub sin: Vec<f32>,
}

impl RopeTables {
    /// Build the tables for `seq_len` positions of `head_dim`-wide heads with base `theta`.
    pub fn new(seq_len: usize, head_dim: usize, theta: f64) -> Self {
        let half = head_dim / 2;
        // torch: 1.0 / (base ** (torch.arange(0, dim, 2, dtype=float32) / dim)); the power is
        // evaluated in f32 (a python float base with an f32 tensor exponent gives an f32 result).
        let inv_freq: Vec<f32> = (0..half)
            .map(|k| {
                let e = (2 * k) as f32 / head_dim as f32;
                1.0f32 / (theta as f32).powf(e)
            })
            .collect();
        let mut cos = vec![0f32; seq_len * head_dim];
        let mut sin = vec![0f32; seq_len * head_dim];
        for t in 0..seq_len {
            for k in 0..half {
                let a = t as f32 * inv_freq[k];
                let (s, c) = (a.sin(), a.cos());
                for j in [k, k + half] {
                    cos[t * head_dim + j] = c;
                    sin[t * head_dim + j] = s;
                }
            }
        }
        Self {
            seq_len,
            head_dim,
            cos,
            sin,
        }
    }

    /// The tables as `[S, Dh]` tensors (for the composed path and for checks).
    pub fn tensors(&self, device: &candle_core::Device) -> Result<(Tensor, Tensor)> {
        let shape = (self.seq_len, self.head_dim);
        Ok((
            Tensor::from_slice(&self.cos, shape, device)?,
            Tensor::from_slice(&self.sin, shape, device)?,
        ))
    }
}

/// Ask the CPU to bring `x`'s cache lines into L1 (a hint: no effect on any value).
#[inline(always)]
fn prefetch<T>(x: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(x);
        let p = x.as_ptr() as *const i8;
        for off in (0..bytes).step_by(64) {
            // SAFETY: a prefetch reads nothing architecturally, and p + off lies inside `x`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// Rotate-half RoPE of one head vector `x` into `out`: out_i = x_i c_i - x_{i+h} s_i,
/// out_{i+h} = x_{i+h} c_{i+h} + x_i s_{i+h} (the tables repeat, so c_i = c_{i+h}). Reading the
/// source and writing the destination in one loop is also the gather of a head's rows (a copy
/// first would be a `memcpy` call per 64-value row).
#[inline]
fn rope_apply<T: Real>(x: &[T], cos: &[f32], sin: &[f32], out: &mut [T]) {
    let h = x.len() / 2;
    let (cos, sin, out) = (&cos[..2 * h], &sin[..2 * h], &mut out[..2 * h]);
    for i in 0..h {
        let (a, b) = (x[i], x[i + h]);
        let (ci, si) = (T::from_f64(cos[i] as f64), T::from_f64(sin[i] as f64));
        let (cj, sj) = (
            T::from_f64(cos[i + h] as f64),
            T::from_f64(sin[i + h] as f64),
        );
        // same operation order as `q * cos + rotate_half(q) * sin`
        out[i] = a * ci + (-b) * si;
        out[i + h] = b * cj + a * sj;
    }
}

/// Transpose of [`rope_apply`] (the gradient through the rotation) from `g` into `out`:
/// out = g∘c - R(g∘s).
#[inline]
fn rope_apply_t<T: Real>(g: &[T], cos: &[f32], sin: &[f32], out: &mut [T]) {
    let h = g.len() / 2;
    let (cos, sin, out) = (&cos[..2 * h], &sin[..2 * h], &mut out[..2 * h]);
    for i in 0..h {
        let (a, b) = (g[i], g[i + h]);
        let (ci, si) = (T::from_f64(cos[i] as f64), T::from_f64(sin[i] as f64));
        let (cj, sj) = (
            T::from_f64(cos[i + h] as f64),
            T::from_f64(sin[i + h] as f64),
        );
        out[i] = a * ci + b * sj;
        out[i + h] = b * cj - a * si;
    }
}

// ------------------------------------------------------------------------------------------------
// Attention
// ------------------------------------------------------------------------------------------------

/// Non-causal multi-head attention with RoPE as one op: `qkv [B, S, 3D] -> [B, S, D]`.
#[derive(Debug, Clone)]
pub struct Attention {
    /// Heads H.
    pub num_heads: usize,
    /// Head width Dh.
    pub head_dim: usize,
    /// RoPE tables, or None for learned positions.
    pub rope: Option<Arc<RopeTables>>,
}

/// Per (batch, head) working set: rotated q and k `[S, Dh]` and probabilities `[S, S]`.
struct HeadCtx<T> {
    q: Vec<T>,
    k: Vec<T>,
    p: Vec<T>,
}

impl Attention {
    fn check(&self, l: &Layout) -> Result<(usize, usize)> {
        let dims = l.dims();
        let d = self.num_heads * self.head_dim;
        if dims.len() != 3 || dims[2] != 3 * d {
            candle_core::bail!("attention expects qkv [B, S, {}], got {:?}", 3 * d, dims)
        }
        if let Some(r) = &self.rope {
            if r.seq_len != dims[1] || r.head_dim != self.head_dim {
                candle_core::bail!(
                    "attention: RoPE tables are [{}, {}] but the sequence is [{}, {}]",
                    r.seq_len,
                    r.head_dim,
                    dims[1],
                    self.head_dim
                )
            }
        }
        Ok((dims[0], dims[1]))
    }

    /// Rows ahead of the gather in [`Attention::head_ctx`] whose head values are prefetched.
    const AHEAD: usize = 4;

    /// Gather head `h` of batch row `b` from `qkv` `[B, S, 3D]`, rotate q and k, and compute
    /// P = softmax(q k^T / sqrt(Dh)) row by row (max-subtracted).
    fn head_ctx<T: Real>(&self, qkv: &[T], s: usize, b: usize, h: usize) -> HeadCtx<T> {
        let dh = self.head_dim;
        let d = self.num_heads * dh;
        let mut q = vec![T::zero(); s * dh];
        let mut k = vec![T::zero(); s * dh];
        let row_of = |i: usize| &qkv[(b * s + i) * 3 * d..(b * s + i + 1) * 3 * d];
        for i in 0..s {
            let row = row_of(i);
            if i + Self::AHEAD < s {
                // the head's q, k and v of a row a few ahead: rows lie 3D apart, past what the
                // hardware prefetchers follow, so each row's first loads would wait on memory
                let next = row_of(i + Self::AHEAD);
                for part in 0..3 {
                    prefetch(&next[part * d + h * dh..part * d + (h + 1) * dh]);
                }
            }
            let (qs, ks) = (
                &row[h * dh..(h + 1) * dh],
                &row[d + h * dh..d + (h + 1) * dh],
            );
            let (qi, ki) = (&mut q[i * dh..(i + 1) * dh], &mut k[i * dh..(i + 1) * dh]);
            if let Some(r) = &self.rope {
                let (c, sn) = (&r.cos[i * dh..(i + 1) * dh], &r.sin[i * dh..(i + 1) * dh]);
                rope_apply(qs, c, sn, qi);
                rope_apply(ks, c, sn, ki);
            } else {
                qi.copy_from_slice(qs);
                ki.copy_from_slice(ks);
            }
        }
        let mut p = vec![T::zero(); s * s];
        // scores = q k^T  [S, S]
        // SAFETY: q, k are [S, Dh] and p is [S, S], all owned here.
        unsafe {
            gemm::gemm_generic(
                s,
                s,
                dh,
                p.as_mut_ptr(),
                s as isize,
                1,
                false,
                gemm::Mat::rows(&q, dh),
                gemm::Mat::rows(&k, dh).t(),
                1,
            )
        };
        T::softmax_rows(&mut p, s, T::from_f64(1.0 / (dh as f64).sqrt()));
        HeadCtx { q, k, p }
    }

    /// V of head `h` of batch row `b`, read in place from `qkv` `[B, S, 3D]` as an `[S, Dh]` view.
    fn v_view<T: Real>(&self, qkv: &[T], s: usize, b: usize, h: usize) -> gemm::Mat<T> {
        let (dh, d) = (self.head_dim, self.num_heads * self.head_dim);
        gemm::Mat {
            ptr: qkv[(b * s) * 3 * d + 2 * d + h * dh..].as_ptr(),
            rs: 3 * d as isize,
            cs: 1,
        }
    }

    fn fwd_t<T: Real>(&self, qkv: &[T], b: usize, s: usize) -> Vec<T> {
        let mut out = par_zeros(b * s * self.num_heads * self.head_dim);
        self.forward_into(qkv, b, s, &mut out);
        out
    }

    /// Attention of `qkv [B, S, 3D]` into `out [B, S, D]` (every element is written).
    pub(crate) fn forward_into<T: Real>(&self, qkv: &[T], b: usize, s: usize, out: &mut [T]) {
        let (nh, dh) = (self.num_heads, self.head_dim);
        let d = nh * dh;
        assert_eq!(out.len(), b * s * d, "attention output buffer size");
        let optr = SendPtr(out.as_mut_ptr());
        (0..b * nh).into_par_iter().for_each(|bh| {
            let (bi, h) = (bh / nh, bh % nh);
            let ctx = self.head_ctx(qkv, s, bi, h);
            let v = self.v_view(qkv, s, bi, h);
            let o = optr;
            // out[b, :, head h] = P V, written in place (each task owns its head's columns)
            // SAFETY: rows b*S..(b+1)*S, columns h*Dh..(h+1)*Dh of `out` belong to this task only.
            unsafe {
                gemm::gemm_generic(
                    s,
                    dh,
                    s,
                    o.0.add(bi * s * d + h * dh),
                    d as isize,
                    1,
                    false,
                    gemm::Mat::rows(&ctx.p, s),
                    v,
                    1,
                )
            };
        });
    }

    /// d qkv from d out, recomputing the probabilities.
    fn bwd_t<T: Real>(&self, qkv: &[T], dout: &[T], b: usize, s: usize) -> Vec<T> {
        let (nh, dh) = (self.num_heads, self.head_dim);
        let d = nh * dh;
        let scale = T::from_f64(1.0 / (dh as f64).sqrt());
        let mut dqkv: Vec<T> = par_zeros(b * s * 3 * d);
        let gptr = SendPtr(dqkv.as_mut_ptr());
        (0..b * nh).into_par_iter().for_each(|bh| {
            let (bi, h) = (bh / nh, bh % nh);
            let ctx = self.head_ctx(qkv, s, bi, h);
            let go = gemm::Mat {
                ptr: dout[bi * s * d + h * dh..].as_ptr(),
                rs: d as isize,
                cs: 1,
            };
            let v = self.v_view(qkv, s, bi, h);
            let g = gptr;
            let base = bi * s * 3 * d;
            let p = gemm::Mat::rows(&ctx.p, s);
            // SAFETY: rows b*S..(b+1)*S, the Q/K/V columns of head h of `dqkv` belong to this
            // task only; all other buffers are owned or read-only.
            unsafe {
                // dV = P^T dO, straight into the V slot
                gemm::gemm_generic(
                    s,
                    dh,
                    s,
                    g.0.add(base + 2 * d + h * dh),
                    3 * d as isize,
                    1,
                    false,
                    p.t(),
                    go,
                    1,
                );
            }
            // dP = dO V^T
            let mut ds = vec![T::zero(); s * s];
            // SAFETY: ds is [S, S], owned.
            unsafe {
                gemm::gemm_generic(
                    s,
                    s,
                    dh,
                    ds.as_mut_ptr(),
                    s as isize,
                    1,
                    false,
                    go,
                    v.t(),
                    1,
                )
            };
            // softmax backward: dS = P (dP - rowsum(P dP)), then through the scale
            for (dsr, pr) in ds.chunks_mut(s).zip(ctx.p.chunks(s)) {
                let rowdot = dot(dsr, pr);
                for (x, &pv) in dsr.iter_mut().zip(pr) {
                    *x = pv * (*x - rowdot) * scale;
                }
            }
            let dsm = gemm::Mat::rows(&ds, s);
            let mut dq = vec![T::zero(); s * dh];
            let mut dk = vec![T::zero(); s * dh];
            // SAFETY: dq, dk are [S, Dh], owned.
            unsafe {
                gemm::gemm_generic(
                    s,
                    dh,
                    s,
                    dq.as_mut_ptr(),
                    dh as isize,
                    1,
                    false,
                    dsm,
                    gemm::Mat::rows(&ctx.k, dh),
                    1,
                );
                gemm::gemm_generic(
                    s,
                    dh,
                    s,
                    dk.as_mut_ptr(),
                    dh as isize,
                    1,
                    false,
                    dsm.t(),
                    gemm::Mat::rows(&ctx.q, dh),
                    1,
                );
            }
            for i in 0..s {
                let (dqi, dki) = (&dq[i * dh..(i + 1) * dh], &dk[i * dh..(i + 1) * dh]);
                // SAFETY: as above, this task's columns of row b*S + i (two disjoint runs of Dh).
                let (rq, rk) = unsafe {
                    let row = g.0.add(base + i * 3 * d);
                    (
                        std::slice::from_raw_parts_mut(row.add(h * dh), dh),
                        std::slice::from_raw_parts_mut(row.add(d + h * dh), dh),
                    )
                };
                if let Some(r) = &self.rope {
                    let (c, sn) = (&r.cos[i * dh..(i + 1) * dh], &r.sin[i * dh..(i + 1) * dh]);
                    rope_apply_t(dqi, c, sn, rq);
                    rope_apply_t(dki, c, sn, rk);
                } else {
                    rq.copy_from_slice(dqi);
                    rk.copy_from_slice(dki);
                }
            }
        });
        dqkv
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "hrm-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, sq) = self.check(l)?;
        let shape = Shape::from((b, sq, self.num_heads * self.head_dim));
        let (x, dt) = input(s, l)?;
        let out = match x {
            Input::F32(x) => output_f32(self.fwd_t(&x, b, sq), dt),
            Input::F64(x) => CpuStorage::F64(self.fwd_t(&x, b, sq)),
        };
        Ok((out, shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = grad_res.to_dtype(arg.dtype())?;
        Ok(Some(arg.apply_op2_no_bwd(&g, &AttentionBwd(self.clone()))?))
    }
}

/// `(qkv, d out) -> d qkv` of [`Attention`] (no backward of its own).
struct AttentionBwd(Attention);

impl CustomOp2 for AttentionBwd {
    fn name(&self) -> &'static str {
        "hrm-attention-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, sq) = self.0.check(l1)?;
        let (x, dt) = input(s1, l1)?;
        let (g, dt2) = input(s2, l2)?;
        same_dtype(dt, dt2, "attention backward")?;
        let out = match (x, g) {
            (Input::F32(x), Input::F32(g)) => output_f32(self.0.bwd_t(&x, &g, b, sq), dt),
            (Input::F64(x), Input::F64(g)) => CpuStorage::F64(self.0.bwd_t(&x, &g, b, sq)),
            _ => candle_core::bail!("attention backward: mixed dtypes"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// Attention with RoPE: `qkv [B, S, 3D] -> [B, S, D]`; the fused op on CPU, composed ops elsewhere.
pub fn attention(qkv: &Tensor, op: &Attention) -> Result<Tensor> {
    op.apply(qkv)
}

impl Fused for Attention {
    fn composed(&self, x: &Tensor) -> Result<Tensor> {
        attention_composed(x, self)
    }
}

/// Rotate-half RoPE on `[B, S, H, Dh]` in f32 with `[S, Dh]` tables, as composed candle ops.
pub fn rope_composed(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let dt = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    let h = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, h)?;
    let x2 = x.narrow(D::Minus1, h, h)?;
    let rot = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    let (s, dh) = cos.dims2()?;
    let cos = cos.reshape((1, s, 1, dh))?;
    let sin = sin.reshape((1, s, 1, dh))?;
    x.broadcast_mul(&cos)?
        .add(&rot.broadcast_mul(&sin)?)?
        .to_dtype(dt)
}

/// The same maths as [`Attention`] in differentiable candle ops (any device).
pub fn attention_composed(qkv: &Tensor, op: &Attention) -> Result<Tensor> {
    let (b, s, _) = qkv.dims3()?;
    let (nh, dh) = (op.num_heads, op.head_dim);
    let qkv = qkv.reshape((b, s, 3 * nh, dh))?;
    let mut q = qkv.narrow(2, 0, nh)?;
    let mut k = qkv.narrow(2, nh, nh)?;
    let v = qkv.narrow(2, 2 * nh, nh)?;
    if let Some(r) = &op.rope {
        let (cos, sin) = r.tensors(qkv.device())?;
        q = rope_composed(&q, &cos, &sin)?;
        k = rope_composed(&k, &cos, &sin)?;
    }
    // Scores and softmax in f32 whatever the activation dtype, as FlashAttention (the
    // reference's kernel) keeps them; in bf16 only the probabilities and V enter a bf16 product.
    // Rounding the scores to bf16 first doubles the bf16-vs-f32 drift of a whole segment.
    let dt = qkv.dtype();
    let sdt = if dt == DType::F64 { dt } else { DType::F32 };
    let q = q.transpose(1, 2)?.contiguous()?.to_dtype(sdt)?; // [B, H, S, Dh]
    let k = k.transpose(1, 2)?.contiguous()?.to_dtype(sdt)?;
    let v = v.transpose(1, 2)?.contiguous()?;
    let scores = (q.matmul(&k.t()?)? * (1.0 / (dh as f64).sqrt()))?; // [B, H, S, S]
    let p = softmax_composed(&scores)?.to_dtype(dt)?;
    let o = p.matmul(&v)?; // [B, H, S, Dh]
    o.transpose(1, 2)?.reshape((b, s, nh * dh))
}

/// Softmax over the last dimension from differentiable primitives (max-subtracted, f32 inside).
pub fn softmax_composed(x: &Tensor) -> Result<Tensor> {
    let dt = x.dtype();
    let x = x.to_dtype(if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    })?;
    let mx = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&mx)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&sum)?.to_dtype(dt)
}

// ------------------------------------------------------------------------------------------------
// Residual add + RMSNorm
// ------------------------------------------------------------------------------------------------

/// `sum_j f(j)` for `j < len` in f64, over 8 interleaved partial sums (independent chains that
/// vectorise, where one running sum waits on every add), combined pairwise, then the tail.
#[inline(always)]
fn lane_sum(len: usize, f: impl Fn(usize) -> f64) -> f64 {
    let mut acc = [0f64; 8];
    let whole = len / 8 * 8;
    for j in (0..whole).step_by(8) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(j + l);
        }
    }
    let tail: f64 = (whole..len).map(f).sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `rms_norm(a + b)` over the last dimension: `y = x / sqrt(mean(x^2) + eps)`.
#[derive(Debug, Clone, Copy)]
pub struct AddRmsNorm {
    /// Epsilon inside the square root (1e-5).
    pub eps: f64,
}

/// Rows of [`AddRmsNorm`] per parallel task.
const NORM_ROWS: usize = 64;

impl AddRmsNorm {
    /// Forward over rows of width `d`; returns y. With `round_bf16` the sum is rounded to bf16
    /// first, as the reference's bf16 residual add does before the fp32 norm.
    fn fwd_t<T: Real>(&self, a: &[T], b: &[T], d: usize, round_bf16: bool) -> Vec<T> {
        let fill = |c: usize, ys: &mut [MaybeUninit<T>]| {
            let r0 = c * d * NORM_ROWS;
            let ys = init_from(ys, |i| a[r0 + i]);
            self.rows_inplace(ys, &b[r0..r0 + ys.len()], d, round_bf16)
        };
        // SAFETY: `init_from` writes every element of the chunk.
        unsafe { par_written(a.len(), d * NORM_ROWS, fill) }
    }

    /// `z = rms_norm(z + x)` in place over rows of width `d` (the forward of the op, also used by
    /// the no-gradient inference path so both compute the same numbers).
    pub(crate) fn forward_inplace<T: Real>(
        &self,
        z: &mut [T],
        x: &[T],
        d: usize,
        round_bf16: bool,
    ) {
        z.par_chunks_mut(d * NORM_ROWS)
            .zip(x.par_chunks(d * NORM_ROWS))
            .for_each(|(zs, xs)| self.rows_inplace(zs, xs, d, round_bf16));
    }

    /// [`AddRmsNorm::forward_inplace`] of the rows of `z` on the calling thread.
    fn rows_inplace<T: Real>(&self, z: &mut [T], x: &[T], d: usize, round_bf16: bool) {
        for (zr, xr) in z.chunks_mut(d).zip(x.chunks(d)) {
            for (zj, &xj) in zr.iter_mut().zip(xr) {
                *zj = *zj + xj;
            }
            if round_bf16 {
                for v in zr.iter_mut() {
                    *v = T::from_f64(bf16::from_f64(v.to_f64()).to_f64());
                }
            }
            let ss = lane_sum(d, |j| zr[j].to_f64() * zr[j].to_f64());
            let var = T::from_f64(ss / d as f64);
            let r = T::one() / (var + T::from_f64(self.eps)).sqrt();
            for v in zr.iter_mut() {
                *v = *v * r;
            }
        }
    }

    /// dx = r (g - y mean(g y)), recomputing r from a + b.
    fn bwd_t<T: Real>(&self, a: &[T], b: &[T], g: &[T], d: usize) -> Vec<T> {
        let fill = |c: usize, dxs: &mut [MaybeUninit<T>]| {
            let base = c * d * NORM_ROWS;
            for (r, dxr) in dxs.chunks_mut(d).enumerate() {
                let off = base + r * d;
                let (a, b, g) = (&a[off..off + d], &b[off..off + d], &g[off..off + d]);
                let ss = lane_sum(d, |j| {
                    let x = (a[j] + b[j]).to_f64();
                    x * x
                });
                let rr = 1.0 / (ss / d as f64 + self.eps).sqrt();
                let gy = lane_sum(d, |j| g[j].to_f64() * ((a[j] + b[j]).to_f64() * rr));
                let m = gy / d as f64;
                for j in 0..d {
                    let y = (a[j] + b[j]).to_f64() * rr;
                    dxr[j].write(T::from_f64(rr * (g[j].to_f64() - y * m)));
                }
            }
        };
        // SAFETY: `fill` writes every element of each row of its chunk (j < d).
        unsafe { par_written(a.len(), d * NORM_ROWS, fill) }
    }
}

impl CustomOp2 for AddRmsNorm {
    fn name(&self) -> &'static str {
        "hrm-add-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "add_rms_norm: shapes {:?} and {:?} differ",
                l1.dims(),
                l2.dims()
            )
        }
        let d = *l1.dims().last().unwrap_or(&1);
        let (a, dt) = input(s1, l1)?;
        let (b, dt2) = input(s2, l2)?;
        same_dtype(dt, dt2, "add_rms_norm")?;
        let out = match (a, b) {
            (Input::F32(a), Input::F32(b)) => {
                output_f32(self.fwd_t(&a, &b, d, dt == DType::BF16), dt)
            }
            (Input::F64(a), Input::F64(b)) => CpuStorage::F64(self.fwd_t(&a, &b, d, false)),
            _ => candle_core::bail!("add_rms_norm: mixed dtypes"),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.to_dtype(a.dtype())?;
        let dx = a.apply_op3_no_bwd(b, &g, &AddRmsNormBwd(*self))?;
        Ok((Some(dx.clone()), Some(dx)))
    }
}

/// `(a, b, dy) -> dx` of [`AddRmsNorm`].
struct AddRmsNormBwd(AddRmsNorm);

impl candle_core::CustomOp3 for AddRmsNormBwd {
    fn name(&self) -> &'static str {
        "hrm-add-rms-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let d = *l1.dims().last().unwrap_or(&1);
        let (a, dt) = input(s1, l1)?;
        let (b, _) = input(s2, l2)?;
        let (g, _) = input(s3, l3)?;
        let out = match (a, b, g) {
            (Input::F32(a), Input::F32(b), Input::F32(g)) => {
                output_f32(self.0.bwd_t(&a, &b, &g, d), dt)
            }
            (Input::F64(a), Input::F64(b), Input::F64(g)) => {
                CpuStorage::F64(self.0.bwd_t(&a, &b, &g, d))
            }
            _ => candle_core::bail!("add_rms_norm backward: mixed dtypes"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// `rms_norm(a + b)`: the fused op on CPU, composed ops elsewhere.
pub fn add_rms_norm(a: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if a.device().is_cpu() {
        a.apply_op2(b, AddRmsNorm { eps })
    } else {
        rms_norm_composed(&(a + b)?, eps)
    }
}

/// Parameter-free RMSNorm as composed candle ops (fp32 inside, result in the input dtype).
pub fn rms_norm_composed(x: &Tensor, eps: f64) -> Result<Tensor> {
    let dt = x.dtype();
    let xf = x.to_dtype(if dt == DType::F64 {
        DType::F64
    } else {
        DType::F32
    })?;
    let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let r = (var + eps)?.sqrt()?.recip()?;
    xf.broadcast_mul(&r)?.to_dtype(dt)
}

// ------------------------------------------------------------------------------------------------
// SwiGLU gate
// ------------------------------------------------------------------------------------------------

/// `gate_up [.., 2I] -> silu(gate) * up [.., I]` where gate is the first half of the features.
#[derive(Debug, Clone, Copy)]
pub struct SwiGlu;

#[inline]
fn sigmoid<T: Real>(x: T) -> T {
    T::one() / (T::one() + (-x).exp())
}

impl SwiGlu {
    fn fwd_t<T: Real>(gu: &[T], inner: usize) -> Vec<T> {
        const ROWS: usize = 16;
        par_filled(gu.len() / 2, inner * ROWS, |c, out| {
            Self::forward_into_seq(&gu[c * 2 * inner * ROWS..], inner, out)
        })
    }

    /// `out [rows, I] = silu(gate) * up` from `gu [rows, 2I]`.
    pub(crate) fn forward_into<T: Real>(gu: &[T], inner: usize, out: &mut [T]) {
        out.par_chunks_mut(inner)
            .zip(gu.par_chunks(2 * inner))
            .for_each(|(o, gur)| Self::forward_into_seq(gur, inner, o));
    }

    /// [`SwiGlu::forward_into`] of the rows of `out` on the calling thread (`gu` starts at their
    /// first row and may hold more).
    fn forward_into_seq<T: Real>(gu: &[T], inner: usize, out: &mut [T]) {
        for (o, gur) in out.chunks_mut(inner).zip(gu.chunks(2 * inner)) {
            let (g, u) = gur.split_at(inner);
            T::swiglu_row(g, u, o);
        }
    }

    fn bwd_t<T: Real>(gu: &[T], dout: &[T], inner: usize) -> Vec<T> {
        let fill = |r: usize, dr: &mut [MaybeUninit<T>]| {
            let g = &gu[r * 2 * inner..r * 2 * inner + inner];
            let u = &gu[r * 2 * inner + inner..(r + 1) * 2 * inner];
            let go = &dout[r * inner..(r + 1) * inner];
            let (dg, du) = dr.split_at_mut(inner);
            for i in 0..inner {
                let s = sigmoid(g[i]);
                let silu = g[i] * s;
                // silu'(x) = s (1 + x (1 - s))
                dg[i].write(go[i] * u[i] * s * (T::one() + g[i] * (T::one() - s)));
                du[i].write(go[i] * silu);
            }
        };
        // SAFETY: `fill` writes both halves of its row, i < inner.
        unsafe { par_written(gu.len(), 2 * inner, fill) }
    }
}

impl CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "hrm-swiglu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let mut dims = l.dims().to_vec();
        let last = dims
            .last_mut()
            .ok_or_else(|| candle_core::Error::Msg("swiglu: scalar".into()))?;
        if *last % 2 != 0 {
            candle_core::bail!("swiglu: last dim {} is odd", *last)
        }
        *last /= 2;
        let inner = *last;
        let (x, dt) = input(s, l)?;
        let out = match x {
            Input::F32(x) => output_f32(Self::fwd_t(&x, inner), dt),
            Input::F64(x) => CpuStorage::F64(Self::fwd_t(&x, inner)),
        };
        Ok((out, Shape::from(dims)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let g = grad.to_dtype(arg.dtype())?;
        Ok(Some(arg.apply_op2_no_bwd(&g, &SwiGluBwd)?))
    }
}

/// `(gate_up, d out) -> d gate_up` of [`SwiGlu`].
struct SwiGluBwd;

impl CustomOp2 for SwiGluBwd {
    fn name(&self) -> &'static str {
        "hrm-swiglu-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let inner = l1.dims().last().copied().unwrap_or(0) / 2;
        let (x, dt) = input(s1, l1)?;
        let (g, _) = input(s2, l2)?;
        let out = match (x, g) {
            (Input::F32(x), Input::F32(g)) => output_f32(SwiGlu::bwd_t(&x, &g, inner), dt),
            (Input::F64(x), Input::F64(g)) => CpuStorage::F64(SwiGlu::bwd_t(&x, &g, inner)),
            _ => candle_core::bail!("swiglu backward: mixed dtypes"),
        };
        Ok((out, l1.shape().clone()))
    }
}

/// SwiGLU gate: the fused op on CPU, composed ops elsewhere.
pub fn swiglu(gate_up: &Tensor) -> Result<Tensor> {
    SwiGlu.apply(gate_up)
}

impl Fused for SwiGlu {
    fn composed(&self, x: &Tensor) -> Result<Tensor> {
        swiglu_composed(x)
    }
}

/// SwiGLU gate as composed candle ops.
pub fn swiglu_composed(gate_up: &Tensor) -> Result<Tensor> {
    let inner = gate_up.dim(D::Minus1)? / 2;
    let gate = gate_up.narrow(D::Minus1, 0, inner)?;
    let up = gate_up.narrow(D::Minus1, inner, inner)?;
    gate.silu()?.mul(&up)
}

#[cfg(test)]
mod tests {
    //! Finite-difference gradient checks (in f64, where central differences are accurate to
    //! ~1e-9) for every custom op, and agreement of each fused op with its composed twin.
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    fn rand_t(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.5..1.5)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    /// Checks d<w, f(x)>/dx of `f` by central differences on a few coordinates of each input.
    fn fd_check(inputs: &[Tensor], f: &dyn Fn(&[Tensor]) -> Tensor, tol: f64) {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let out = f(&ts);
        let w = rand_t(out.dims(), 99, DType::F64);
        let loss = out.mul(&w).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let scalar = |xs: &[Tensor]| -> f64 {
            f(xs)
                .mul(&w)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for (k, v) in vars.iter().enumerate() {
            let g = grads
                .get(v.as_tensor())
                .expect("gradient reached the input");
            let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let base = inputs[k].flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for _ in 0..12 {
                let i = rng.random_range(0..base.len());
                let h = 1e-6;
                let eval = |delta: f64| {
                    let mut x = base.clone();
                    x[i] += delta;
                    let mut xs = inputs.to_vec();
                    xs[k] = Tensor::from_vec(x, inputs[k].dims(), &Device::Cpu).unwrap();
                    scalar(&xs)
                };
                let num = (eval(h) - eval(-h)) / (2.0 * h);
                let err = (num - g[i]).abs();
                assert!(
                    err <= tol * (1.0 + num.abs()),
                    "input {k} elem {i}: analytic {} vs numeric {num}",
                    g[i]
                );
            }
        }
    }

    fn attn_op(nh: usize, dh: usize, s: usize, rope: bool) -> Attention {
        Attention {
            num_heads: nh,
            head_dim: dh,
            rope: rope.then(|| Arc::new(RopeTables::new(s, dh, 10000.0))),
        }
    }

    #[test]
    fn attention_gradient_matches_finite_differences() {
        for rope in [true, false] {
            let op = attn_op(3, 4, 5, rope);
            let qkv = rand_t(&[2, 5, 36], 1, DType::F64);
            fd_check(&[qkv], &|x| x[0].apply_op1(op.clone()).unwrap(), 1e-6);
        }
    }

    /// TRM's sequence-mixing block (transpose, SwiGLU across S, norm over S, transpose back):
    /// its gradient with respect to the input and both weights, on an odd shape.
    #[test]
    fn mlp_t_block_gradient_matches_finite_differences() {
        let (b, s, d, it) = (2, 5, 3, 4);
        let h = rand_t(&[b, s, d], 21, DType::F64);
        let gu = rand_t(&[2 * it, s], 22, DType::F64);
        let down = rand_t(&[s, it], 23, DType::F64);
        fd_check(
            &[h, gu, down],
            &|t| mlp_t_block(&t[0], &t[1], &t[2], 1e-5, Products::F32, &mut |_| {}).unwrap(),
            1e-6,
        );
        // and it is the composition it says, against candle's own ops in f64
        let (h, gu, down) = (
            rand_t(&[b, s, d], 24, DType::F64),
            rand_t(&[2 * it, s], 25, DType::F64),
            rand_t(&[s, it], 26, DType::F64),
        );
        let ours = mlp_t_block(&h, &gu, &down, 1e-5, Products::F32, &mut |_| {}).unwrap();
        let u = h.transpose(1, 2).unwrap().contiguous().unwrap();
        let g = linear_composed(&u, &gu).unwrap();
        let m = linear_composed(&swiglu_composed(&g).unwrap(), &down).unwrap();
        let want = rms_norm_composed(&(u + m).unwrap(), 1e-5)
            .unwrap()
            .transpose(1, 2)
            .unwrap();
        let diff = (ours - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(diff < 1e-12, "{diff}");
    }

    #[test]
    fn add_rms_norm_gradient_matches_finite_differences() {
        let a = rand_t(&[3, 4, 16], 2, DType::F64);
        let b = rand_t(&[3, 4, 16], 3, DType::F64);
        fd_check(
            &[a, b],
            &|x| x[0].apply_op2(&x[1], AddRmsNorm { eps: 1e-5 }).unwrap(),
            1e-6,
        );
    }

    #[test]
    fn linear_gradient_matches_finite_differences() {
        let x = rand_t(&[2, 3, 7], 11, DType::F64);
        let w = rand_t(&[5, 7], 12, DType::F64);
        fd_check(
            &[x, w],
            &|t| t[0].apply_op2(&t[1], Linear::default()).unwrap(),
            1e-6,
        );
    }

    #[test]
    fn then_linear_gradient_matches_finite_differences() {
        let w = rand_t(&[6, 12], 15, DType::F64);
        let op = attn_op(3, 4, 5, true);
        let qkv = rand_t(&[2, 5, 36], 16, DType::F64);
        fd_check(
            &[qkv, w.clone()],
            &|t| {
                t[0].apply_op2(&t[1], ThenLinear(op.clone(), Products::F32))
                    .unwrap()
            },
            1e-6,
        );
        let gu = rand_t(&[2, 3, 24], 17, DType::F64);
        fd_check(
            &[gu, w],
            &|t| {
                t[0].apply_op2(&t[1], ThenLinear(SwiGlu, Products::F32))
                    .unwrap()
            },
            1e-6,
        );
    }

    /// The fused op computes exactly what the two ops compute, forward and backward, in f32 and
    /// in bf16 (same kernels in the same order): bit for bit.
    #[test]
    fn then_linear_is_bit_identical_to_the_two_ops() {
        let op = attn_op(4, 8, 6, true);
        for dt in [DType::F32, DType::BF16] {
            let cases: [(
                Tensor,
                Tensor,
                &dyn Fn(&Tensor) -> Tensor,
                Box<dyn CustomOp2Fn>,
            ); 2] = [
                (
                    rand_t(&[2, 6, 96], 18, dt),
                    rand_t(&[10, 32], 19, dt),
                    &|x| x.apply_op1(op.clone()).unwrap(),
                    Box::new(ThenLinear(op.clone(), Products::F32)),
                ),
                (
                    rand_t(&[2, 6, 40], 20, dt),
                    rand_t(&[10, 20], 21, dt),
                    &|x| x.apply_op1(SwiGlu).unwrap(),
                    Box::new(ThenLinear(SwiGlu, Products::F32)),
                ),
            ];
            for (x, w, single, fused) in cases {
                let run = |two: bool| {
                    let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&w).unwrap());
                    let y = if two {
                        single(xv.as_tensor())
                            .apply_op2(wv.as_tensor(), Linear::default())
                            .unwrap()
                    } else {
                        fused.apply(xv.as_tensor(), wv.as_tensor())
                    };
                    let gw = rand_t(y.dims(), 22, dt);
                    let g = y.mul(&gw).unwrap().sum_all().unwrap().backward().unwrap();
                    let flat = |t: &Tensor| crate::to_host_f32(t).unwrap();
                    (
                        flat(&y),
                        flat(g.get(xv.as_tensor()).unwrap()),
                        flat(g.get(wv.as_tensor()).unwrap()),
                    )
                };
                assert_eq!(run(false), run(true), "{dt:?}");
            }
        }
    }

    /// The op that recomputes its first product computes exactly what the three ops compute,
    /// forward and backward, with f32 and with bf16 products: bit for bit.
    #[test]
    fn linear_then_linear_is_bit_identical_to_the_three_ops() {
        fn check<F: Fused>(f: F, d: (usize, usize, usize), p: Products) {
            let (mid, inner, out) = d; // x [2, 6, 16] · w1ᵀ [mid, 16]; f -> inner; w2 [out, inner]
            let x = rand_t(&[2, 6, 16], 23, DType::F32);
            let w1 = rand_t(&[mid, 16], 24, DType::F32);
            let w2 = rand_t(&[out, inner], 25, DType::F32);
            let run = |three: bool| {
                let v = [&x, &w1, &w2].map(|t| Var::from_tensor(t).unwrap());
                let [xv, w1v, w2v] = v.each_ref().map(|v| v.as_tensor());
                let y = if three {
                    let y1 = xv.apply_op2(w1v, Linear(p)).unwrap();
                    y1.apply_op2(w2v, ThenLinear(f.clone(), p)).unwrap()
                } else {
                    xv.apply_op3(w1v, w2v, LinearThenLinear(f.clone(), p))
                        .unwrap()
                };
                let gw = rand_t(y.dims(), 26, DType::F32);
                let g = y.mul(&gw).unwrap().sum_all().unwrap().backward().unwrap();
                let flat = |t: &Tensor| -> Vec<u32> {
                    crate::to_host_f32(t)
                        .unwrap()
                        .iter()
                        .map(|v| v.to_bits())
                        .collect()
                };
                let mut all = vec![flat(&y)];
                all.extend([xv, w1v, w2v].map(|t| flat(g.get(t).unwrap())));
                all
            };
            assert_eq!(run(false), run(true), "{} {p:?}", f.name());
        }
        for p in [Products::F32, Products::Bf16] {
            check(attn_op(4, 8, 6, true), (96, 32, 10), p);
            check(SwiGlu, (40, 20, 10), p);
        }
    }

    #[test]
    fn linear_then_linear_gradient_matches_finite_differences() {
        let (x, w1) = (
            rand_t(&[2, 5, 7], 27, DType::F64),
            rand_t(&[36, 7], 28, DType::F64),
        );
        let w2 = rand_t(&[6, 12], 29, DType::F64);
        let op = attn_op(3, 4, 5, true);
        fd_check(
            &[x.clone(), w1, w2.clone()],
            &|t| {
                t[0].apply_op3(&t[1], &t[2], LinearThenLinear(op.clone(), Products::F32))
                    .unwrap()
            },
            1e-6,
        );
        let w1 = rand_t(&[24, 7], 30, DType::F64);
        fd_check(
            &[x, w1, w2],
            &|t| {
                t[0].apply_op3(&t[1], &t[2], LinearThenLinear(SwiGlu, Products::F32))
                    .unwrap()
            },
            1e-6,
        );
    }

    /// Object-safe application of a [`CustomOp2`] (the test above mixes two op types).
    trait CustomOp2Fn {
        fn apply(&self, a: &Tensor, b: &Tensor) -> Tensor;
    }

    impl<F: CustomOp1 + Clone + Send + Sync + 'static> CustomOp2Fn for ThenLinear<F> {
        fn apply(&self, a: &Tensor, b: &Tensor) -> Tensor {
            a.apply_op2(b, self.clone()).unwrap()
        }
    }

    #[test]
    fn swiglu_gradient_matches_finite_differences() {
        let gu = rand_t(&[2, 3, 20], 4, DType::F64);
        fd_check(&[gu], &|x| x[0].apply_op1(SwiGlu).unwrap(), 1e-6);
    }

    /// Forward values and input gradients of fused vs composed, in f32.
    fn agree(fused: &dyn Fn(&Tensor) -> Tensor, composed: &dyn Fn(&Tensor) -> Tensor, x: Tensor) {
        let v1 = Var::from_tensor(&x).unwrap();
        let v2 = Var::from_tensor(&x).unwrap();
        let y1 = fused(v1.as_tensor());
        let y2 = composed(v2.as_tensor());
        let w = rand_t(y1.dims(), 5, DType::F32);
        let d = crate::parity::max_abs_diff(&y1, &y2).unwrap();
        assert!(d < 2e-6, "forward differs by {d}");
        let g1 = y1.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = y2.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let (g1, g2) = (
            g1.get(v1.as_tensor()).unwrap(),
            g2.get(v2.as_tensor()).unwrap(),
        );
        let d = (g1 - g2)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "gradient differs by {d}");
    }

    /// Outputs and input gradients of `f` (inputs as f32 variables, upstream gradient `r`).
    fn value_and_grads(
        f: &dyn Fn(&[Tensor], Products) -> Tensor,
        inputs: &[Tensor],
        p: Products,
    ) -> (Vec<f32>, Vec<Vec<f32>>) {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts, p);
        let r = rand_t(y.dims(), 99, DType::F32);
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let host = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let grads = vars.iter().map(|v| host(g.get(v).unwrap())).collect();
        (host(&y), grads)
    }

    /// Every op with matrix products, with bf16 products against f32 products on odd shapes:
    /// the forward within 1% relative error (L2; bf16 keeps 8 significant bits, 0.4% for one
    /// rounded operand, two per product), every input gradient at cosine >= 0.999, and the bf16
    /// products did change the numbers.
    #[test]
    fn bf16_products_follow_f32_products() {
        let op = attn_op(4, 8, 7, true);
        let cases: Vec<(
            &str,
            Vec<Tensor>,
            Box<dyn Fn(&[Tensor], Products) -> Tensor>,
        )> = vec![
            (
                "linear",
                vec![
                    rand_t(&[3, 7, 45], 30, DType::F32),
                    rand_t(&[37, 45], 31, DType::F32),
                ],
                Box::new(|t, p| linear(&t[0], &t[1], p).unwrap()),
            ),
            (
                "attention then o_proj",
                vec![
                    rand_t(&[3, 7, 96], 32, DType::F32),
                    rand_t(&[20, 32], 33, DType::F32),
                ],
                Box::new(move |t, p| then_linear(&t[0], &op, &t[1], p).unwrap()),
            ),
            (
                "swiglu then down_proj",
                vec![
                    rand_t(&[3, 7, 58], 34, DType::F32),
                    rand_t(&[33, 29], 35, DType::F32),
                ],
                Box::new(|t, p| then_linear(&t[0], &SwiGlu, &t[1], p).unwrap()),
            ),
            (
                "mlp_t block",
                vec![
                    rand_t(&[2, 13, 24], 36, DType::F32),
                    rand_t(&[2 * 9, 13], 37, DType::F32),
                    rand_t(&[13, 9], 38, DType::F32),
                ],
                Box::new(|t, p| mlp_t_block(&t[0], &t[1], &t[2], 1e-5, p, &mut |_| {}).unwrap()),
            ),
        ];
        for (name, inputs, f) in cases {
            let (y32, g32) = value_and_grads(&*f, &inputs, Products::F32);
            let (y16, g16) = value_and_grads(&*f, &inputs, Products::Bf16);
            let norm = |v: &mut dyn Iterator<Item = f32>| {
                v.map(|x| (x as f64).powi(2)).sum::<f64>().sqrt()
            };
            let rel = norm(&mut y32.iter().zip(&y16).map(|(a, b)| a - b))
                / norm(&mut y32.iter().copied());
            eprintln!("{name}: forward relative error (L2) {rel:.2e}");
            assert!(rel > 0.0, "{name}: bf16 products changed nothing");
            assert!(rel <= 1e-2, "{name}: forward relative error {rel}");
            for (i, (a, b)) in g16.iter().zip(&g32).enumerate() {
                let cos = crate::parity::cosine(a, b);
                eprintln!("{name}: input {i} gradient cosine {cos:.6}");
                assert!(cos >= 0.999, "{name}: input {i} gradient cosine {cos}");
            }
        }
    }

    #[test]
    fn linear_agrees_with_candle_matmul() {
        let w = rand_t(&[48, 32], 13, DType::F32);
        agree(
            &|x| linear(x, &w, Products::F32).unwrap(),
            &|x| linear_composed(x, &w).unwrap(),
            rand_t(&[3, 10, 32], 14, DType::F32),
        );
    }

    #[test]
    fn fused_ops_agree_with_composed_ops() {
        let op = attn_op(4, 16, 10, true);
        agree(
            &|x| attention(x, &op).unwrap(),
            &|x| attention_composed(x, &op).unwrap(),
            rand_t(&[3, 10, 192], 6, DType::F32),
        );
        agree(
            &|x| swiglu(x).unwrap(),
            &|x| swiglu_composed(x).unwrap(),
            rand_t(&[3, 10, 64], 7, DType::F32),
        );
        let b = rand_t(&[3, 10, 32], 9, DType::F32);
        agree(
            &|x| add_rms_norm(x, &b, 1e-5).unwrap(),
            &|x| rms_norm_composed(&(x + &b).unwrap(), 1e-5).unwrap(),
            rand_t(&[3, 10, 32], 8, DType::F32),
        );
    }

    #[test]
    fn rope_tables_follow_the_reference_formula() {
        let r = RopeTables::new(82, 16, 10000.0);
        // position 1, k = 1: angle = 1 / 10000^(2/16)
        let a = 1.0f32 / 10000f32.powf(2.0 / 16.0);
        assert_eq!(r.cos[16 + 1], a.cos());
        assert_eq!(r.sin[16 + 1 + 8], a.sin());
        assert_eq!(r.cos[0], 1.0);
    }

    #[test]
    fn bf16_inputs_run_in_f32_and_return_bf16() {
        let x = rand_t(&[2, 3, 8], 10, DType::BF16);
        let y = swiglu(&x).unwrap();
        assert_eq!(y.dtype(), DType::BF16);
        let y32 = swiglu(&x.to_dtype(DType::F32).unwrap()).unwrap();
        let d = (y.to_dtype(DType::F32).unwrap() - y32)
            .unwrap()
            .abs()
            .unwrap();
        assert!(d.max_all().unwrap().to_scalar::<f32>().unwrap() < 2e-2);
    }
}
