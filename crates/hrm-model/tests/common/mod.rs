//! Helpers shared by the integration tests of this crate.

use hrm_model::{Batch, ModelConfig};
use rand::Rng;

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
