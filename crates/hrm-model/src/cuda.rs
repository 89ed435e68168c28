//! CUDA-only pieces of hrm-model (feature `cuda`): the launchers of the optimizer kernels in
//! `kernels/optim.cu` (compiled to PTX by build.rs, loaded once per device through candle's
//! `CudaDevice::get_or_load_custom_func`), and switches of candle's CUDA backend.
//!
//! The kernels are the GPU side of [`crate::optim_device`] (AdamATan2 as in the adam-atan2
//! 0.0.3 kernel that sapientinc/HRM:pretrain.py uses); everything else of the model runs on
//! candle's own CUDA kernels and cuBLAS.

use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CudaStorage, Result};

use crate::optim::arith::AdamScalars;

/// Module name under which the PTX is cached per device.
const MODULE: &str = "hrm_optim";
/// The optimizer kernels, as PTX.
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/optim.ptx"));

/// Keep f32 matrix products in full f32 (no TF32 tensor-core rounding): candle's default, set
/// explicitly where results are compared with the reference (parity, the bf16-vs-f32 check).
pub fn exact_f32_matmuls() {
    candle_core::cuda::set_gemm_reduced_precision_f32(false);
}

/// Launch shape for the grid-stride kernels: 256 threads per block, enough blocks to cover `n`
/// (capped; the loops stride over the rest).
fn launch_cfg(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 1 << 16) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        candle_core::bail!("{what}: {got} elements where {want} are expected")
    }
    Ok(())
}

/// One Adam moment in place on `x[a..b]`: `x = fma(c, g, fma(-c, x, x))`, with `g*g` for the
/// second moment (`square`).
pub(crate) fn adam_moment(
    x: &mut CudaStorage,
    (a, b): (usize, usize),
    g: &CudaStorage,
    (ga, gb): (usize, usize),
    coef: f32,
    square: bool,
) -> Result<()> {
    let n = b - a;
    check_len("adam moment gradient", gb - ga, n)?;
    if n == 0 {
        return Ok(());
    }
    let name = if square {
        "hrm_adam_second_moment"
    } else {
        "hrm_adam_first_moment"
    };
    let func = x.device.get_or_load_custom_func(name, MODULE, PTX)?;
    let g = g.as_cuda_slice::<f32>()?.slice(ga..gb);
    let x = x.as_cuda_slice_mut::<f32>()?;
    let mut x = x.slice_mut(a..b);
    let n64 = n as u64;
    let mut builder = func.builder();
    builder.arg(&mut x);
    builder.arg(&g);
    builder.arg(&coef);
    builder.arg(&n64);
    // SAFETY: the kernel reads n elements of g and writes n elements of x, both in bounds.
    unsafe { builder.launch(launch_cfg(n)) }.w()?;
    Ok(())
}

/// The AdamATan2 parameter update in place on `p[pa..pb]` from the updated moments.
pub(crate) fn adam_param(
    p: &mut CudaStorage,
    (pa, pb): (usize, usize),
    m: &CudaStorage,
    (ma, mb): (usize, usize),
    v: &CudaStorage,
    (va, vb): (usize, usize),
    k: AdamScalars,
) -> Result<()> {
    let n = pb - pa;
    check_len("adam first moment", mb - ma, n)?;
    check_len("adam second moment", vb - va, n)?;
    if n == 0 {
        return Ok(());
    }
    let func = p
        .device
        .get_or_load_custom_func("hrm_adam_param", MODULE, PTX)?;
    let m = m.as_cuda_slice::<f32>()?.slice(ma..mb);
    let v = v.as_cuda_slice::<f32>()?.slice(va..vb);
    let p = p.as_cuda_slice_mut::<f32>()?;
    let mut p = p.slice_mut(pa..pb);
    let n64 = n as u64;
    let mut builder = func.builder();
    builder.arg(&mut p);
    builder.arg(&m);
    builder.arg(&v);
    builder.arg(&k.wd_alpha);
    builder.arg(&k.step_size);
    builder.arg(&k.c2);
    builder.arg(&n64);
    // SAFETY: the kernel reads n elements of m and v and updates n elements of p, in bounds.
    unsafe { builder.launch(launch_cfg(n)) }.w()?;
    Ok(())
}
