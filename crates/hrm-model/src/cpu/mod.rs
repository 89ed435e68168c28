//! The CPU kernels: matrix-product glue ([`gemm`]), SIMD loops ([`kernels`]), the small-batch
//! packed f32 kernel ([`packed`]), the bf16 products ([`bf16`], on AMX or AVX512-BF16) and the
//! bf16 SwiGLU MLP built on them ([`mlp16`]), with the one run-time switch that turns every
//! hand-written SIMD path off.
//!
//! Every SIMD path has a portable twin that computes the same numbers (bit for bit for the
//! multiversioned loops of [`kernels`]; the packed and AMX kernels fall back to the general
//! product). `HRM_NO_SIMD` (any value) in the environment selects the portable twins everywhere,
//! as on a CPU without AVX-512 / AVX2 / AMX / AVX512-BF16 or on another architecture: CI runs the test suite a
//! second time with it set. `HRM_NO_AMX` switches off AMX alone (AVX512-BF16 then runs the bf16 products where the CPU has it). The `gemm` crate's own
//! run-time dispatch is not affected.

mod amx;
pub mod bf16;
mod dpbf16;
pub mod gemm;
pub mod kernels;
pub mod mlp16;
pub mod packed;
mod rows16;

/// Whether the hand-written SIMD kernels may run (`HRM_NO_SIMD` unset); read once.
pub fn simd_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("HRM_NO_SIMD").is_none())
}

/// `dst[i] = f(i)` for every element, then `dst` as initialised: how a new buffer's tasks fill
/// their part of it (each in its own cache) instead of one zero fill of the whole buffer first.
pub(crate) fn init_from<T>(
    dst: &mut [std::mem::MaybeUninit<T>],
    f: impl Fn(usize) -> T,
) -> &mut [T] {
    for (i, d) in dst.iter_mut().enumerate() {
        d.write(f(i));
    }
    // SAFETY: every element was just written; MaybeUninit<T> has T's layout.
    unsafe { &mut *(dst as *mut [std::mem::MaybeUninit<T>] as *mut [T]) }
}
