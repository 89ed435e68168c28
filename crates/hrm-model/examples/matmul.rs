//! Throughput of the matrix products of one Sudoku-size block (batch 32 x 82 positions; `HRM_M=82`
//! for one puzzle) through the backend this build selected (`gemm` crate, or a system BLAS with
//! `--features blas`), next to candle's own matmul, our small-batch f32 kernel and the bf16
//! kernel (AMX or AVX512-BF16), forward and backward shapes; first the f32 FMA peak of one core (an AVX-512 loop with
//! 24 independent accumulators), the ceiling every f32 figure is measured against:
//! `cargo run --release --example matmul -p hrm-model [--features blas]`.
use std::time::Instant;

use candle_core::{Device, Tensor};
use hrm_model::cpu::gemm::{sgemm, Op};

fn best<F: FnMut()>(mut f: F) -> f64 {
    f();
    (0..8)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

/// GFLOP/s of one core running independent AVX-512 fused multiply-adds (no memory traffic; 12
/// accumulators in named registers, more than latency x ports).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_peak() -> f64 {
    use std::arch::x86_64::*;
    let (x, y) = (_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(1e-7));
    let one = _mm512_set1_ps(1.0);
    let (mut a0, mut a1, mut a2, mut a3, mut a4, mut a5) = (one, one, one, one, one, one);
    let (mut a6, mut a7, mut a8, mut a9, mut a10, mut a11) = (one, one, one, one, one, one);
    let iters = 40_000_000u64;
    let t = Instant::now();
    for _ in 0..iters {
        macro_rules! fma {
            ($($a:ident),*) => { $( $a = _mm512_fmadd_ps($a, x, y); )* };
        }
        fma!(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11);
    }
    let s = t.elapsed().as_secs_f64();
    let all = [a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11];
    let sum: f32 = all.iter().map(|&a| _mm512_reduce_add_ps(a)).sum();
    std::hint::black_box(sum);
    (iters * 12 * 32) as f64 / s / 1e9
}

fn main() -> candle_core::Result<()> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was detected.
        let peak = unsafe { fma_peak() };
        println!("f32 FMA peak of one core (AVX-512): {peak:.0} GFLOP/s");
    }
    let backend = if cfg!(feature = "blas") {
        "blas"
    } else {
        "gemm crate"
    };
    let n: usize = std::env::var("HRM_M")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32 * 82);
    for (k, m, name) in [
        (512, 1536, "qkv"),
        (512, 512, "o"),
        (512, 3072, "gate_up"),
        (1536, 512, "down"),
    ] {
        let x = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let (xv, wv) = (
            x.flatten_all()?.to_vec1::<f32>()?,
            w.flatten_all()?.to_vec1::<f32>()?,
        );
        let flops = 2.0 * (n * k * m) as f64 / 1e9;
        let ours = best(|| {
            sgemm(n, m, k, &xv, Op::N, &wv, Op::T);
        });
        let candle = best(|| {
            x.matmul(&w.t().unwrap()).unwrap();
        });
        let dy = Tensor::randn(0f32, 1.0, (n, m), &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let dx = best(|| {
            sgemm(n, k, m, &dy, Op::N, &wv, Op::N);
        });
        let dw = best(|| {
            sgemm(m, k, n, &dy, Op::T, &xv, Op::N);
        });
        let pf = hrm_model::cpu::packed::PackedF32::pack(&wv, m, k);
        let mut cf = vec![0f32; n * m];
        let tp = best(|| hrm_model::cpu::packed::matmul(n, &xv, &pf, &mut cf));
        println!(
            "{name:8} f32 packed (own kernel: {}): {:.2} ms ({:.0} GFLOP/s)",
            hrm_model::cpu::packed::fast(n),
            tp * 1e3,
            flops / tp
        );
        let packed = hrm_model::cpu::bf16::PackedBf16::pack(&wv, m, k);
        let mut cb = vec![0f32; n * m];
        let tb = best(|| hrm_model::cpu::bf16::matmul(n, &xv, &packed, &mut cb));
        println!(
            "{name:8} bf16 ({}): {:.2} ms ({:.0} GFLOP/s)",
            hrm_model::cpu::bf16::kernel().name(),
            tb * 1e3,
            flops / tb
        );
        // a bf16 training step's three products, each packing its operands per call
        use hrm_model::cpu::bf16::gemm_into as bgemm;
        let (mut c1, mut c2, mut c3) = (vec![0f32; n * m], vec![0f32; n * k], vec![0f32; m * k]);
        let fw = best(|| bgemm(n, m, k, &xv, Op::N, &wv, Op::T, &mut c1));
        let bdx = best(|| bgemm(n, k, m, &dy, Op::N, &wv, Op::N, &mut c2));
        let bdw = best(|| bgemm(m, k, n, &dy, Op::T, &xv, Op::N, &mut c3));
        println!(
            "{name:8} bf16 training products: forward {:.1} ms ({:.0} GFLOP/s), dx {:.1} ms ({:.0}), dw {:.1} ms ({:.0})",
            fw * 1e3,
            flops / fw,
            bdx * 1e3,
            flops / bdx,
            bdw * 1e3,
            flops / bdw
        );
        println!(
            "{name:8} backward: dx {:.1} ms ({:.0} GFLOP/s), dw {:.1} ms ({:.0} GFLOP/s)",
            dx * 1e3,
            flops / dx,
            dw * 1e3,
            flops / dw
        );
        println!(
            "{name:8} [{n}x{k}]x[{k}x{m}]: {backend} {:.1} ms ({:.0} GFLOP/s), candle matmul {:.1} ms ({:.0} GFLOP/s)",
            ours * 1e3,
            flops / ours,
            candle * 1e3,
            flops / candle
        );
    }
    Ok(())
}
