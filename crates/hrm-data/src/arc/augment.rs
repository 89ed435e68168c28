//! ARC augmentation (the distinct variants of a task) and the encoding of every variant.

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::canvas::{encode_grid, MAX_GRID_SIZE};
use super::grid::{puzzle_name, Augmentation, ColorMap, Grid};
use super::tasks::{ArcTask, Pair};
use crate::dihedral::Dihedral;
use crate::error::{DataError, Result};
/// Augmentation attempts per requested variant (reference `ARCAugmentRetriesFactor`).
pub const AUGMENT_RETRIES_FACTOR: usize = 5;
/// Canonical content of a task variant for duplicate rejection: every pair (all splits) as
/// `[h_in, w_in, cells.., h_out, w_out, cells..]`, sorted, concatenated. Two variants with the
/// same multiset of pairs are duplicates (the reference's sorted per-pair hashes).
fn variant_key(pairs: &[Pair]) -> Vec<u8> {
    let mut encoded: Vec<Vec<u8>> = pairs
        .iter()
        .map(|p| {
            let mut v = Vec::with_capacity(4 + p.input.cells.len() + p.output.cells.len());
            for g in [&p.input, &p.output] {
                v.push(g.h as u8);
                v.push(g.w as u8);
                v.extend_from_slice(&g.cells);
            }
            v
        })
        .collect();
    encoded.sort_unstable();
    encoded.concat()
}

/// The augmentations of one task: the identity first, then up to `num_aug` distinct variants
/// from at most `AUGMENT_RETRIES_FACTOR * num_aug` random draws (dihedral id uniform in 0..8,
/// then a colour map keeping 0). A draw whose content equals an earlier variant's is rejected.
pub fn task_augmentations(
    task: &ArcTask,
    num_aug: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Augmentation> {
    let all: Vec<Pair> = task.train.iter().chain(&task.test).cloned().collect();
    let mut keys = HashSet::new();
    keys.insert(variant_key(&all));
    let mut augs = vec![Augmentation::identity()];
    for _ in 0..AUGMENT_RETRIES_FACTOR * num_aug {
        if augs.len() > num_aug {
            break;
        }
        let transform = Dihedral::from_id(rng.random_range(0..8u8)).unwrap_or(Dihedral::Identity);
        let colors = ColorMap::random(rng);
        let aug = Augmentation { transform, colors };
        let pairs: Vec<Pair> = all.iter().map(|p| p.augmented(&aug)).collect();
        if keys.insert(variant_key(&pairs)) {
            augs.push(aug);
        }
    }
    augs
}

/// Rows of one split for one task: one entry per variant (puzzle), each holding the
/// concatenated input and label tokens of its pairs.
#[derive(Debug, Default)]
pub(super) struct SplitRows {
    pub(super) puzzles: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Everything the builder writes for one task.
#[derive(Debug)]
pub(super) struct EncodedTask {
    /// Variant names (the original first).
    pub(super) names: Vec<String>,
    pub(super) train: SplitRows,
    /// Present only for held-out tasks.
    pub(super) test: Option<SplitRows>,
}

/// Augments and encodes one task. The RNG is the task's own stream, so tasks can be encoded in
/// parallel with a deterministic result. Train-split pairs are translated (one random pair per
/// variant stays at (0, 0)); test-split pairs sit at (0, 0).
pub(super) fn encode_task(
    task: &ArcTask,
    num_aug: usize,
    seed: u64,
    stream: u64,
) -> Result<EncodedTask> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let augs = task_augmentations(task, num_aug, &mut rng);
    let train_pairs: Vec<&Pair> = if task.held_out {
        task.train.iter().collect()
    } else {
        task.train.iter().chain(&task.test).collect()
    };
    let encode = |g: &Grid, r0: usize, c0: usize| {
        encode_grid(g, r0, c0)
            .map_err(|m| DataError::item(&task.path, format!("task {}", task.id), m))
    };
    let mut names = Vec::with_capacity(augs.len());
    let mut train = SplitRows::default();
    let mut test = task.held_out.then(SplitRows::default);
    for (v, aug) in augs.iter().enumerate() {
        names.push(puzzle_name(&task.id, (v > 0).then_some(aug)));
        // Train split: translated pairs.
        let keep_at_origin = rng.random_range(0..train_pairs.len());
        let (mut inputs, mut labels) = (Vec::new(), Vec::new());
        for (i, p) in train_pairs.iter().enumerate() {
            let p = p.augmented(aug);
            let (r0, c0) = if i == keep_at_origin {
                (0, 0)
            } else {
                let max_h = p.input.h.max(p.output.h);
                let max_w = p.input.w.max(p.output.w);
                (
                    rng.random_range(0..=MAX_GRID_SIZE - max_h),
                    rng.random_range(0..=MAX_GRID_SIZE - max_w),
                )
            };
            inputs.extend(encode(&p.input, r0, c0)?);
            labels.extend(encode(&p.output, r0, c0)?);
        }
        train.puzzles.push((inputs, labels));
        // Test split: untranslated.
        if let Some(test) = test.as_mut() {
            let (mut inputs, mut labels) = (Vec::new(), Vec::new());
            for p in &task.test {
                let p = p.augmented(aug);
                inputs.extend(encode(&p.input, 0, 0)?);
                labels.extend(encode(&p.output, 0, 0)?);
            }
            test.puzzles.push((inputs, labels));
        }
    }
    Ok(EncodedTask { names, train, test })
}
#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::arc::test_util::g;
    use crate::arc::{crop, decode_grid, parse_puzzle_name, PAD, SEQ_LEN};

    fn toy_task(held_out: bool) -> ArcTask {
        ArcTask {
            id: "toy".into(),
            path: PathBuf::from("toy.json"),
            train: vec![
                Pair {
                    input: g(&[&[1, 2, 0], &[0, 3, 0]]),
                    output: g(&[&[3, 2], &[0, 1], &[5, 5]]),
                },
                Pair {
                    input: g(&[&[4]]),
                    output: g(&[&[6, 7, 8, 9]]),
                },
            ],
            test: vec![Pair {
                input: g(&[&[1, 1], &[2, 2]]),
                output: g(&[&[2, 1]]),
            }],
            held_out,
        }
    }

    #[test]
    fn augmentations_are_distinct_and_start_with_the_original() {
        let task = toy_task(true);
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let augs = task_augmentations(&task, 50, &mut rng);
        assert_eq!(augs.len(), 51);
        assert_eq!(augs[0], Augmentation::identity());
        let all: Vec<Pair> = task.train.iter().chain(&task.test).cloned().collect();
        let keys: HashSet<Vec<u8>> = augs
            .iter()
            .map(|a| variant_key(&all.iter().map(|p| p.augmented(a)).collect::<Vec<_>>()))
            .collect();
        assert_eq!(keys.len(), augs.len());

        // All-black grids look the same under every augmentation: only the original survives,
        // after the allowed 5 * num_aug attempts.
        let black = Pair {
            input: Grid::new(2, 2, vec![0; 4]).unwrap(),
            output: Grid::new(2, 2, vec![0; 4]).unwrap(),
        };
        let dull = ArcTask {
            train: vec![black.clone()],
            test: vec![black],
            ..toy_task(false)
        };
        assert_eq!(task_augmentations(&dull, 10, &mut rng).len(), 1);
    }

    #[test]
    fn encoded_task_routes_pairs_and_translates_train_only() {
        for held_out in [true, false] {
            let task = toy_task(held_out);
            let enc = encode_task(&task, 3, 9, 0).unwrap();
            assert_eq!(enc.names.len(), 4);
            assert_eq!(enc.names[0], "toy");
            let train_pairs = if held_out { 2 } else { 3 };
            for (v, (inputs, labels)) in enc.train.puzzles.iter().enumerate() {
                assert_eq!(inputs.len(), train_pairs * SEQ_LEN);
                let (_, aug) = parse_puzzle_name(&enc.names[v]);
                let aug = aug.unwrap_or_else(Augmentation::identity);
                let originals: Vec<&Pair> = task.train.iter().chain(&task.test).collect();
                let mut at_origin = 0;
                for (i, (x, y)) in inputs
                    .chunks(SEQ_LEN)
                    .zip(labels.chunks(SEQ_LEN))
                    .enumerate()
                {
                    assert_eq!(aug.invert(&decode_grid(x)), originals[i].input);
                    assert_eq!(aug.invert(&decode_grid(y)), originals[i].output);
                    at_origin += usize::from(x[0] != PAD && crop(x) == decode_grid(x));
                }
                assert!(at_origin >= 1, "one pair per variant stays at (0, 0)");
            }
            assert_eq!(enc.test.is_some(), held_out);
            if let Some(test) = &enc.test {
                for (v, (inputs, labels)) in test.puzzles.iter().enumerate() {
                    let aug = parse_puzzle_name(&enc.names[v]).1;
                    let aug = aug.unwrap_or_else(Augmentation::identity);
                    assert_eq!(aug.invert(&crop(inputs)), task.test[0].input);
                    assert_eq!(aug.invert(&crop(labels)), task.test[0].output);
                }
            }
            // Deterministic per (seed, stream).
            let again = encode_task(&task, 3, 9, 0).unwrap();
            assert_eq!(again.names, enc.names);
            assert_eq!(again.train.puzzles, enc.train.puzzles);
        }
    }
}
