//! Learning-rate schedule and step budget of the reference trainer.
//!
//! Mirrors sapientinc/HRM:pretrain.py `cosine_schedule_with_warmup_lr_lambda` (with its default
//! `num_cycles = 0.5`, i.e. half a cosine from the end of warm-up to the last step) and the
//! `total_steps` estimate of `init_train_state` (docs/training.md, "The learning-rate schedule"
//! and "The step budget"). Both are pure functions so the
//! trainer, the tests and any plotting script agree on the exact numbers.

/// Learning rate at `step` (1-based: the first optimizer step is `step = 1`).
///
/// Linear warm-up `base_lr * step / warmup` while `step < warmup`, then a half cosine from
/// `base_lr` down to `base_lr * min_ratio` at `step = total`:
/// `base_lr * (r + max(0, (1 - r) * 0.5 * (1 + cos(pi * progress))))`,
/// `progress = (step - warmup) / (total - warmup)`. With the reference default `min_ratio = 1`
/// this is warm-up then constant. Like the reference, the denominators are clamped to at least 1
/// (so `warmup = 0` or `total <= warmup` never divide by zero), and `progress` is not clamped:
/// past `total` the cosine rises again, but the trainer never steps past `total`.
pub fn cosine_schedule_with_warmup(
    step: u64,
    base_lr: f64,
    warmup: u64,
    total: u64,
    min_ratio: f64,
) -> f64 {
    if step < warmup {
        return base_lr * step as f64 / warmup.max(1) as f64;
    }
    // Signed arithmetic as in Python: `total - warmup` may be negative for a tiny run.
    let denom = (total as i128 - warmup as i128).max(1) as f64;
    let progress = (step - warmup) as f64 / denom;
    // num_cycles = 0.5 => cos(pi * 0.5 * 2 * progress) = cos(pi * progress).
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    base_lr * (min_ratio + ((1.0 - min_ratio) * cosine).max(0.0))
}

/// The reference's step budget:
/// `int(epochs * total_groups * mean_puzzle_examples / global_batch_size)`.
///
/// `epochs * total_groups` is an exact integer product in Python, then promoted to float for the
/// multiplication by `mean_puzzle_examples`; `int()` truncates towards zero. The same order of
/// operations is kept so the result is bit-identical (Sudoku-1k: 20000 * 1000 * 1.0 / 768 ->
/// 26041). It is an estimate of the number of full batches: the trainer stops stepping past it.
/// A `global_batch_size` of 0 gives 0 (the config loader rejects it before this is called).
pub fn total_steps(
    epochs: u64,
    total_groups: u64,
    mean_puzzle_examples: f64,
    global_batch_size: u64,
) -> u64 {
    if global_batch_size == 0 {
        return 0;
    }
    let examples = (epochs as u128 * total_groups as u128) as f64 * mean_puzzle_examples;
    let steps = examples / global_batch_size as f64;
    // `as u64` truncates towards zero and saturates (NaN -> 0), matching int() for finite input.
    steps as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-300)
    }

    #[test]
    fn warmup_then_constant_spec_example() {
        // docs/training.md, "The learning-rate schedule": eta0 = 1e-4, W = 2000, min ratio 1.
        let lr = |s| cosine_schedule_with_warmup(s, 1e-4, 2000, 26041, 1.0);
        assert!(close(lr(1), 5e-8), "{}", lr(1));
        assert!(close(lr(1000), 5e-5), "{}", lr(1000));
        assert!(close(lr(2000), 1e-4));
        assert!(close(lr(2001), 1e-4));
        assert!(close(lr(26041), 1e-4));
        assert_eq!(lr(0), 0.0);
    }

    #[test]
    fn cosine_with_min_ratio_spec_example() {
        // docs/training.md, "The learning-rate schedule": r = 0.1, eta0 = 3e-4, W = 2000,
        // Tot = 1e5.
        let lr = |s| cosine_schedule_with_warmup(s, 3e-4, 2000, 100_000, 0.1);
        assert!(close(lr(51_000), 1.65e-4), "{}", lr(51_000));
        assert!(close(lr(100_000), 3e-5), "{}", lr(100_000));
        assert!(close(lr(2000), 3e-4));
        // Monotone non-increasing after warm-up.
        let mut prev = f64::INFINITY;
        for s in (2000..=100_000).step_by(997) {
            let v = lr(s);
            assert!(v <= prev);
            prev = v;
        }
    }

    #[test]
    fn degenerate_denominators_do_not_divide_by_zero() {
        // warmup 0: the first step already runs at the full rate.
        assert_eq!(cosine_schedule_with_warmup(1, 1e-3, 0, 10, 1.0), 1e-3);
        // total <= warmup: progress denominator clamps to 1, value stays finite.
        let v = cosine_schedule_with_warmup(5, 1e-3, 5, 3, 0.0);
        assert!(close(v, 1e-3));
    }

    #[test]
    fn total_steps_matches_reference_runs() {
        // docs/training.md, "The step budget": Sudoku-Extreme 1k (1000 groups, 1 example per
        // puzzle on average).
        assert_eq!(total_steps(20_000, 1000, 1.0, 768), 26_041);
        assert_eq!(total_steps(20_000, 1000, 1.0, 384), 52_083);
        // Truncation, not rounding: 10 * 3 * 1.9 / 4 = 14.25 -> 14; 10*1*0.99/1 = 9.9 -> 9.
        assert_eq!(total_steps(10, 3, 1.9, 4), 14);
        assert_eq!(total_steps(10, 1, 0.99, 1), 9);
        assert_eq!(total_steps(10, 1, 1.0, 0), 0);
    }
}
