//! Helpers shared by the integration tests of this crate.
#![allow(dead_code)] // each test file uses some of them

use candle_core::Tensor;
use hrm_model::{Batch, ModelConfig};
use rand::{Rng, SeedableRng};

/// A random Sudoku-like batch: labels in 2..V, 40% of the inputs blank (token 1), random puzzle
/// ids.
pub fn batch(cfg: &ModelConfig, rng: &mut impl Rng) -> Batch {
    let ids = cfg.num_puzzle_identifiers as i32;
    Batch::random(
        cfg.batch_size,
        cfg.seq_len,
        cfg.vocab_size,
        0.4,
        Some(ids),
        rng,
    )
}

/// [`batch`] from a fresh generator seeded with `seed`.
pub fn seeded_batch(cfg: &ModelConfig, seed: u64) -> Batch {
    batch(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
}

/// A tensor's values on the host, f32.
pub fn host(t: &Tensor) -> Vec<f32> {
    hrm_model::to_host_f32(t).unwrap()
}

/// max |x| over a tensor.
pub fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
