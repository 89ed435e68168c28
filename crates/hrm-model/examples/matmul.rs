//! Throughput of the matrix products of one Sudoku-size block (batch 32 x 82 positions) through
//! the backend this build selected (`gemm` crate, or a system BLAS with `--features blas`), next to
//! candle's own matmul: `cargo run --release --example matmul -p hrm-model [--features blas]`.
use std::time::Instant;

use candle_core::{Device, Tensor};
use hrm_model::gemm::{sgemm, Op};

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

fn main() -> candle_core::Result<()> {
    let backend = if cfg!(feature = "blas") {
        "blas"
    } else {
        "gemm crate"
    };
    let n = 32 * 82;
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
