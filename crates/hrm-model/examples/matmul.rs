//! Throughput of the matrix products of one Sudoku-size block (batch 32 x 82 positions):
//! `cargo run --release --example matmul -p hrm-model`.
use candle_core::{Device, Tensor};
use std::time::Instant;

fn main() -> candle_core::Result<()> {
    let n = 32 * 82;
    for (k, m, name) in [
        (512, 1536, "qkv"),
        (512, 512, "o"),
        (512, 3072, "gate_up"),
        (1536, 512, "down"),
    ] {
        let x = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu)?;
        let mut best = f64::MAX;
        for _ in 0..8 {
            let t = Instant::now();
            let _y = x.matmul(&w.t()?)?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        let gf = 2.0 * (n * k * m) as f64 / best / 1e9;
        println!(
            "{name:8} [{n}x{k}] x [{k}x{m}]: {:.1} ms, {gf:.0} GFLOP/s",
            best * 1e3
        );
    }
    Ok(())
}
