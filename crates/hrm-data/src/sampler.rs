//! The reference loader's batch sampler (training split) and sequential test iterator.
//!
//! Mirrors sapientinc/HRM:puzzle_dataset.py (`_sample_batch`, `PuzzleDataset._iter_train`,
//! `_iter_test`, `_collate_batch`); the reference's rules are in docs/data.md, "Training
//! sampler".
//!
//! Training, one *iteration* (= `epochs_per_iter` epochs; the reference's `eval_interval`), for
//! each set in `metadata.sets` order:
//! 1. `group_order` = concatenation of `epochs_per_iter` random permutations of the group ids;
//! 2. fill a global batch of `global_batch_size` examples: walk `group_order`; for each group
//!    pick one of its puzzles uniformly, then take `min(#examples, remaining space)` of that
//!    puzzle's examples in random order without replacement; a puzzle cut at the batch boundary
//!    loses its remaining examples (they are not carried to the next batch);
//! 3. a final batch with fewer than `global_batch_size` examples is dropped (drop-last).
//!
//! Differences from the reference, all for determinism and exact resume:
//! * The reference seeds a Philox generator with `seed + k` (k = iterations started so far,
//!   counting from 1) and draws the example subset from NumPy's *global, unseeded* RNG. Here
//!   every draw of iteration `k` and set `s` comes from one `ChaCha8Rng::seed_from_u64(seed)`
//!   on stream `(k << 16) | s`, so the whole stream is a pure function of `(seed, k)`
//!   (bit-exact streams cannot match NumPy's anyway).
//! * A group with no puzzles is skipped (the reference would raise inside `rng.integers`).
//! * Example subsets use a partial Fisher–Yates shuffle; a draw from a single remaining
//!   candidate consumes no randomness (so one-example puzzles, i.e. Sudoku and Maze, cost one
//!   draw per group visit: the puzzle choice, itself skipped for one-puzzle groups).
//!
//! Collation (`_collate_batch`): tokens become i32, labels equal to `ignore_label_id` become
//! [`IGNORE_LABEL_ID`] (-100); short batches (test only) are padded with `pad_id` inputs, -100
//! labels and `blank_identifier_id` puzzle identifiers.
//!
//! Resume: [`SamplerPosition`] = (iteration, batches yielded in it). [`TrainSampler::restore`]
//! replays the iteration's index draws (no token copies) and continues with the exact batch that
//! would have come next.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::format::{SetData, SplitData};

/// Label value the loss ignores (the reference's `IGNORE_LABEL_ID` in models/losses.py).
pub const IGNORE_LABEL_ID: i32 = -100;

/// One batch, collated as the reference does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// `[batch_size * seq_len]` token ids, row-major.
    pub inputs: Vec<i32>,
    /// `[batch_size * seq_len]` target ids; `ignore_label_id` is mapped to -100.
    pub labels: Vec<i32>,
    /// `[batch_size]` puzzle identifier (embedding row) of each example.
    pub puzzle_identifiers: Vec<i32>,
    /// Rows in this batch (global batch size, or the local one after [`Batch::local_slice`]).
    pub batch_size: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// Real (non-padding) rows of the *global* batch (the reference's
    /// `effective_global_batch_size`; equal to the global batch size in training).
    pub effective_size: usize,
    /// The set the batch came from.
    pub set_name: String,
}

impl Batch {
    /// A batch of `batch_size` rows of zeros (the reference's `zeros_like` initial carry data),
    /// all rows real, of no set.
    pub fn zeros(batch_size: usize, seq_len: usize) -> Self {
        Self {
            inputs: vec![0; batch_size * seq_len],
            labels: vec![0; batch_size * seq_len],
            puzzle_identifiers: vec![0; batch_size],
            batch_size,
            seq_len,
            effective_size: batch_size,
            set_name: String::new(),
        }
    }

    /// Random Sudoku-like rows for benchmarks and tests: every label uniform in `2..vocab_size`,
    /// each input the label or, with probability `blank`, token 1; puzzle identifiers uniform in
    /// `0..n` when `identifiers` is `Some(n)`, else all 0. Draws labels, then inputs, then
    /// identifiers from `rng`, in that order.
    pub fn random(
        batch_size: usize,
        seq_len: usize,
        vocab_size: usize,
        blank: f32,
        identifiers: Option<i32>,
        rng: &mut impl Rng,
    ) -> Self {
        let labels: Vec<i32> = (0..batch_size * seq_len)
            .map(|_| rng.random_range(2..vocab_size as i32))
            .collect();
        let inputs = labels
            .iter()
            .map(|&l| if rng.random::<f32>() < blank { 1 } else { l })
            .collect();
        let puzzle_identifiers = match identifiers {
            Some(n) => (0..batch_size).map(|_| rng.random_range(0..n)).collect(),
            None => vec![0; batch_size],
        };
        Self {
            inputs,
            labels,
            puzzle_identifiers,
            ..Self::zeros(batch_size, seq_len)
        }
    }

    /// Copy row `b` of `src` into row `b` of `self` (inputs, labels and puzzle identifier).
    pub fn copy_row(&mut self, src: &Batch, b: usize) {
        let l = self.seq_len;
        self.inputs[b * l..(b + 1) * l].copy_from_slice(&src.inputs[b * l..(b + 1) * l]);
        self.labels[b * l..(b + 1) * l].copy_from_slice(&src.labels[b * l..(b + 1) * l]);
        self.puzzle_identifiers[b] = src.puzzle_identifiers[b];
    }

    /// Rows `[rank*B, (rank+1)*B)` of this global batch, `B = batch_size / world_size`
    /// (data-parallel slicing; `effective_size` stays the global count, as in the reference).
    pub fn local_slice(&self, rank: usize, world_size: usize) -> Result<Batch> {
        if world_size == 0 || !self.batch_size.is_multiple_of(world_size) || rank >= world_size {
            return Err(DataError::option(
                "world_size",
                format!(
                    "global batch size {} must be a multiple of world_size {world_size}, and \
                     rank {rank} < world_size",
                    self.batch_size
                ),
            ));
        }
        let b = self.batch_size / world_size;
        let rows = rank * b..(rank + 1) * b;
        let toks = rows.start * self.seq_len..rows.end * self.seq_len;
        Ok(Batch {
            inputs: self.inputs[toks.clone()].to_vec(),
            labels: self.labels[toks].to_vec(),
            puzzle_identifiers: self.puzzle_identifiers[rows].to_vec(),
            batch_size: b,
            seq_len: self.seq_len,
            effective_size: self.effective_size,
            set_name: self.set_name.clone(),
        })
    }
}

/// Where a [`TrainSampler`] is in its stream (serialise it into checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerPosition {
    /// Iteration passed to [`TrainSampler::start_iteration`].
    pub iteration: u64,
    /// Batches already returned by `next_batch` in that iteration.
    pub batches_yielded: u64,
}

/// Collates example rows of `set` into a batch of `batch_size` rows (padding the rest).
/// `rows[i]` = (example index, puzzle index).
fn collate(
    split: &SplitData,
    set: &SetData,
    rows: &[(usize, usize)],
    batch_size: usize,
    effective_size: usize,
) -> Batch {
    let m = &split.metadata;
    let seq = m.seq_len;
    let ignore = m.ignore_label_id;
    let mut inputs = Vec::with_capacity(batch_size * seq);
    let mut labels = Vec::with_capacity(batch_size * seq);
    let mut puzzle_identifiers = Vec::with_capacity(batch_size);
    for &(ex, pz) in rows {
        inputs.extend(set.inputs.row(ex).iter().map(|&t| t as i32));
        labels.extend(set.labels.row(ex).iter().map(|&t| {
            if Some(t as i64) == ignore {
                IGNORE_LABEL_ID
            } else {
                t as i32
            }
        }));
        puzzle_identifiers.push(set.puzzle_identifiers[pz]);
    }
    // Padding rows (test iterator only). Metadata validation guarantees these fit in i32.
    let pad = batch_size - rows.len();
    inputs.extend(std::iter::repeat_n(m.pad_id as i32, pad * seq));
    labels.extend(std::iter::repeat_n(IGNORE_LABEL_ID, pad * seq));
    puzzle_identifiers.extend(std::iter::repeat_n(m.blank_identifier_id as i32, pad));
    Batch {
        inputs,
        labels,
        puzzle_identifiers,
        batch_size,
        seq_len: seq,
        effective_size,
        set_name: set.name.clone(),
    }
}

/// Per-set state of the current iteration.
#[derive(Debug)]
struct SetCursor {
    set_idx: usize,
    rng: ChaCha8Rng,
    group_order: Vec<u32>,
    start_index: usize,
}

/// The training sampler over all sets of a split (group -> puzzle -> examples, drop-last).
#[derive(Debug)]
pub struct TrainSampler {
    split: Arc<SplitData>,
    global_batch_size: usize,
    epochs_per_iter: usize,
    seed: u64,
    iteration: u64,
    batches_yielded: u64,
    cursor: Option<SetCursor>,
    scratch: Vec<u32>,
}

impl TrainSampler {
    /// A sampler over `split` (all of its sets). Call [`TrainSampler::start_iteration`] before
    /// the first [`TrainSampler::next_batch`]. Fails on a zero batch size or `epochs_per_iter`,
    /// or more than 65536 sets.
    pub fn new(
        split: Arc<SplitData>,
        global_batch_size: usize,
        epochs_per_iter: usize,
        seed: u64,
    ) -> Result<Self> {
        if global_batch_size == 0 {
            return Err(DataError::option("global_batch_size", "must be positive"));
        }
        if epochs_per_iter == 0 {
            return Err(DataError::option("epochs_per_iter", "must be positive"));
        }
        if split.sets.len() > 1 << 16 {
            return Err(DataError::option(
                "sets",
                "more than 65536 sets in one split are not supported",
            ));
        }
        Ok(TrainSampler {
            split,
            global_batch_size,
            epochs_per_iter,
            seed,
            iteration: 0,
            batches_yielded: 0,
            cursor: None,
            scratch: Vec::new(),
        })
    }

    /// The split being sampled.
    pub fn split(&self) -> &Arc<SplitData> {
        &self.split
    }

    /// Global batch size.
    pub fn global_batch_size(&self) -> usize {
        self.global_batch_size
    }

    fn open_set(&self, set_idx: usize) -> SetCursor {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream((self.iteration << 16) | set_idx as u64);
        let groups = self.split.sets[set_idx].num_groups();
        let mut group_order = Vec::with_capacity(groups * self.epochs_per_iter);
        for _ in 0..self.epochs_per_iter {
            let start = group_order.len();
            group_order.extend(0..groups as u32);
            shuffle(&mut group_order[start..], &mut rng);
        }
        SetCursor {
            set_idx,
            rng,
            group_order,
            start_index: 0,
        }
    }

    /// Starts iteration `iteration` (any number; the stream of iteration k depends only on
    /// `(seed, k)`), from its first batch.
    pub fn start_iteration(&mut self, iteration: u64) {
        self.iteration = iteration;
        self.batches_yielded = 0;
        self.cursor = if self.split.sets.is_empty() {
            None
        } else {
            Some(self.open_set(0))
        };
    }

    /// Draws the rows of the next full batch: (example index, puzzle index) pairs, or `None` at
    /// the end of the iteration. Moves to the next set when the current one is exhausted.
    fn draw_rows(&mut self, rows: &mut Vec<(usize, usize)>) -> Option<usize> {
        loop {
            let cursor = self.cursor.as_mut()?;
            let set = &self.split.sets[cursor.set_idx];
            rows.clear();
            while cursor.start_index < cursor.group_order.len()
                && rows.len() < self.global_batch_size
            {
                let g = cursor.group_order[cursor.start_index] as usize;
                cursor.start_index += 1;
                let puzzles = set.group_puzzles(g);
                if puzzles.is_empty() {
                    continue;
                }
                let p = if puzzles.len() == 1 {
                    puzzles.start
                } else {
                    cursor.rng.random_range(puzzles)
                };
                let ex = set.puzzle_examples(p);
                let take = ex.len().min(self.global_batch_size - rows.len());
                // Partial Fisher-Yates: `take` distinct examples in random order.
                self.scratch.clear();
                self.scratch.extend(0..ex.len() as u32);
                for i in 0..take {
                    if ex.len() - i > 1 {
                        let j = cursor.rng.random_range(i..ex.len());
                        self.scratch.swap(i, j);
                    }
                    rows.push((ex.start + self.scratch[i] as usize, p));
                }
            }
            if rows.len() == self.global_batch_size {
                return Some(cursor.set_idx);
            }
            // Drop the partial last batch of this set and move on to the next set.
            let next = cursor.set_idx + 1;
            self.cursor = (next < self.split.sets.len()).then(|| self.open_set(next));
        }
    }

    /// The next global batch, or `None` once the iteration is exhausted (the final partial
    /// batch is dropped). Returns `None` before the first `start_iteration`.
    pub fn next_batch(&mut self) -> Option<Batch> {
        let mut rows = Vec::with_capacity(self.global_batch_size);
        let set_idx = self.draw_rows(&mut rows)?;
        self.batches_yielded += 1;
        let set = &self.split.sets[set_idx];
        Some(collate(
            &self.split,
            set,
            &rows,
            self.global_batch_size,
            self.global_batch_size,
        ))
    }

    /// The current position (iteration, batches yielded in it).
    pub fn position(&self) -> SamplerPosition {
        SamplerPosition {
            iteration: self.iteration,
            batches_yielded: self.batches_yielded,
        }
    }

    /// Restores a position saved by [`TrainSampler::position`]: the next batch is the one that
    /// would have followed. Costs one replay of the index draws, no token copies.
    pub fn restore(&mut self, pos: &SamplerPosition) {
        self.start_iteration(pos.iteration);
        let mut rows = Vec::with_capacity(self.global_batch_size);
        for _ in 0..pos.batches_yielded {
            if self.draw_rows(&mut rows).is_none() {
                break;
            }
            self.batches_yielded += 1;
        }
    }

    /// `floor(epochs_per_iter * total_groups * mean_puzzle_examples / global_batch_size)`, the
    /// reference's estimate (exact for one-example puzzles in a single set).
    pub fn batches_per_iteration_estimate(&self) -> usize {
        let m = &self.split.metadata;
        let examples = self.epochs_per_iter as f64 * m.total_groups as f64 * m.mean_puzzle_examples;
        (examples / self.global_batch_size as f64).floor() as usize
    }

    /// Rows `[rank*B, (rank+1)*B)` of `batch` (see [`Batch::local_slice`]).
    pub fn local_slice(&self, batch: &Batch, rank: usize, world_size: usize) -> Result<Batch> {
        batch.local_slice(rank, world_size)
    }
}

/// Fisher–Yates shuffle with our RNG (written out so the stream does not depend on how a rand
/// version implements `SliceRandom::shuffle`).
fn shuffle(v: &mut [u32], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

/// Sequential iteration over every example of every set in chunks of `global_batch_size`; the
/// last chunk of each set is padded (reference `_iter_test`).
#[derive(Debug)]
pub struct TestIterator {
    split: Arc<SplitData>,
    global_batch_size: usize,
    set_idx: usize,
    start: usize,
}

impl TestIterator {
    /// An iterator over all sets of `split` (typically the test split).
    pub fn new(split: Arc<SplitData>, global_batch_size: usize) -> Result<Self> {
        if global_batch_size == 0 {
            return Err(DataError::option("global_batch_size", "must be positive"));
        }
        Ok(TestIterator {
            split,
            global_batch_size,
            set_idx: 0,
            start: 0,
        })
    }

    /// Number of batches the iterator yields in total.
    pub fn num_batches(&self) -> usize {
        self.split
            .sets
            .iter()
            .map(|s| s.num_examples().div_ceil(self.global_batch_size))
            .sum()
    }
}

impl Iterator for TestIterator {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        loop {
            let set = self.split.sets.get(self.set_idx)?;
            let n = set.num_examples();
            if self.start >= n {
                self.set_idx += 1;
                self.start = 0;
                continue;
            }
            let end = n.min(self.start + self.global_batch_size);
            // Puzzle of each example: one binary search, then walk forward (skipping empty
            // puzzles), as the reference does.
            let mut p = set.puzzle_of_example(self.start);
            let mut rows = Vec::with_capacity(end - self.start);
            for i in self.start..end {
                while p + 1 < set.puzzle_indices.len() && i >= set.puzzle_indices[p + 1] as usize {
                    p += 1;
                }
                rows.push((i, p));
            }
            let batch = collate(
                &self.split,
                set,
                &rows,
                self.global_batch_size,
                end - self.start,
            );
            self.start += self.global_batch_size;
            return Some(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{DatasetMetadata, TokenArray};
    use std::collections::{HashMap, HashSet};
    use std::path::PathBuf;

    /// A split where example i has every input token = i % 7 + 1 and labels = i % 5 (0 = ignore),
    /// with groups of varying puzzle counts and puzzles of varying example counts.
    fn synthetic_split(groups: &[&[usize]], seq: usize) -> SplitData {
        let mut pi = vec![0i32];
        let mut gi = vec![0i32];
        let mut ids = Vec::new();
        let mut n = 0usize;
        for g in groups {
            for &examples in *g {
                n += examples;
                pi.push(n as i32);
                ids.push((ids.len() % 3 + 1) as i32);
            }
            gi.push(ids.len() as i32);
        }
        let inputs: Vec<u8> = (0..n).flat_map(|i| vec![(i % 7 + 1) as u8; seq]).collect();
        let labels: Vec<u8> = (0..n).flat_map(|i| vec![(i % 5) as u8; seq]).collect();
        let puzzles = ids.len();
        SplitData {
            dataset_dir: PathBuf::from("synthetic"),
            split: "train".into(),
            metadata: DatasetMetadata {
                pad_id: 0,
                ignore_label_id: Some(0),
                blank_identifier_id: 0,
                vocab_size: 12,
                seq_len: seq,
                num_puzzle_identifiers: 4,
                total_groups: groups.len(),
                mean_puzzle_examples: n as f64 / puzzles as f64,
                sets: vec!["all".into()],
            },
            sets: vec![SetData {
                name: "all".into(),
                inputs: TokenArray::from_vec(inputs, seq).unwrap(),
                labels: TokenArray::from_vec(labels, seq).unwrap(),
                puzzle_identifiers: ids,
                puzzle_indices: pi,
                group_indices: gi,
            }],
        }
    }

    fn arc_like() -> Arc<SplitData> {
        let groups: Vec<Vec<usize>> = (0..23)
            .map(|g| (0..(g % 4 + 1)).map(|p| (g + p) % 5 + 1).collect())
            .collect();
        let refs: Vec<&[usize]> = groups.iter().map(|v| v.as_slice()).collect();
        Arc::new(synthetic_split(&refs, 3))
    }

    fn drain(s: &mut TrainSampler) -> Vec<Batch> {
        std::iter::from_fn(|| s.next_batch()).collect()
    }

    #[test]
    fn deterministic_and_iteration_dependent() {
        let split = arc_like();
        let mut a = TrainSampler::new(split.clone(), 8, 3, 42).unwrap();
        let mut b = TrainSampler::new(split.clone(), 8, 3, 42).unwrap();
        a.start_iteration(1);
        b.start_iteration(1);
        let (ba, bb) = (drain(&mut a), drain(&mut b));
        assert!(!ba.is_empty());
        assert_eq!(ba, bb);
        b.start_iteration(2);
        assert_ne!(drain(&mut b), ba);
        let mut c = TrainSampler::new(split, 8, 3, 43).unwrap();
        c.start_iteration(1);
        assert_ne!(drain(&mut c), ba);
    }

    #[test]
    fn restore_equals_continuation() {
        let split = arc_like();
        let mut s = TrainSampler::new(split.clone(), 8, 3, 7).unwrap();
        s.start_iteration(5);
        let all = drain(&mut s);
        for k in 0..=all.len() {
            let mut s = TrainSampler::new(split.clone(), 8, 3, 7).unwrap();
            s.start_iteration(5);
            for _ in 0..k {
                s.next_batch().unwrap();
            }
            let pos = s.position();
            assert_eq!(
                pos,
                SamplerPosition {
                    iteration: 5,
                    batches_yielded: k as u64
                }
            );
            let json = serde_json::to_string(&pos).unwrap();
            let mut r = TrainSampler::new(split.clone(), 8, 3, 7).unwrap();
            r.restore(&serde_json::from_str(&json).unwrap());
            assert_eq!(r.position(), pos);
            assert_eq!(drain(&mut r), all[k..].to_vec(), "resume after {k} batches");
        }
    }

    /// Replays the sampler's draws against its own group order and checks every rule of
    /// docs/data.md, "Training sampler": one puzzle of the visited group per visit,
    /// `min(#examples, space)` distinct examples of it, puzzles cut at the batch boundary, full
    /// batches only.
    #[test]
    fn batches_follow_group_puzzle_example_rules() {
        let split = arc_like();
        let set = &split.sets[0];
        let (epochs, bs) = (4, 8);
        let mut s = TrainSampler::new(split.clone(), bs, epochs, 3).unwrap();
        s.start_iteration(1);
        let order = s.open_set(0).group_order;
        let g = set.num_groups();
        assert_eq!(order.len(), g * epochs);
        for e in 0..epochs {
            // Each epoch of the group order is a permutation of all groups.
            let mut seen: Vec<u32> = order[e * g..(e + 1) * g].to_vec();
            seen.sort();
            assert_eq!(seen, (0..g as u32).collect::<Vec<_>>());
        }
        let mut rows = Vec::new();
        let mut visit = 0;
        let mut batches = 0;
        let mut cut_puzzles = 0;
        while s.draw_rows(&mut rows).is_some() {
            batches += 1;
            assert_eq!(rows.len(), bs);
            let mut r = 0;
            while r < bs {
                let group = order[visit] as usize;
                visit += 1;
                let p = rows[r].1;
                assert!(
                    set.group_puzzles(group).contains(&p),
                    "puzzle {p} not in group {group}"
                );
                let size = set.puzzle_examples(p).len();
                let take = size.min(bs - r);
                if take < size {
                    cut_puzzles += 1;
                }
                let exs: HashSet<usize> = rows[r..r + take]
                    .iter()
                    .map(|&(ex, pp)| {
                        assert_eq!(pp, p);
                        assert!(set.puzzle_examples(p).contains(&ex));
                        ex
                    })
                    .collect();
                assert_eq!(
                    exs.len(),
                    take,
                    "an example repeated within one puzzle visit"
                );
                r += take;
            }
        }
        assert!(batches > 5);
        assert!(
            cut_puzzles > 0,
            "the fixture should exercise cutting at the boundary"
        );
        // What is left of the group order could not have filled another batch.
        let left_min: usize = order[visit..]
            .iter()
            .map(|&g| {
                set.group_puzzles(g as usize)
                    .map(|p| set.puzzle_examples(p).len())
                    .min()
                    .unwrap()
            })
            .sum();
        assert!(left_min < bs, "a full batch was dropped");
    }

    #[test]
    fn one_example_puzzles_give_exact_counts_and_group_coverage() {
        // Sudoku-like: 10 groups of 3 one-example puzzles.
        let groups: Vec<&[usize]> = vec![&[1, 1, 1]; 10];
        let split = Arc::new(synthetic_split(&groups, 2));
        let mut s = TrainSampler::new(split.clone(), 4, 2, 0).unwrap();
        assert_eq!(s.batches_per_iteration_estimate(), 5);
        s.start_iteration(0);
        let batches = drain(&mut s);
        assert_eq!(batches.len(), 5); // 20 group visits / 4, exact
        let mut per_group: HashMap<usize, usize> = HashMap::new();
        for b in &batches {
            assert_eq!(b.effective_size, 4);
            assert_eq!(b.batch_size, 4);
            assert_eq!(b.inputs.len(), 8);
            assert_eq!(b.labels.len(), 8);
            assert!(b.puzzle_identifiers.iter().all(|pid| (1..=3).contains(pid)));
        }
        // Each group is visited exactly `epochs` times: count via replayed draws.
        let mut s = TrainSampler::new(split.clone(), 4, 2, 0).unwrap();
        s.start_iteration(0);
        let mut rows = Vec::new();
        while s.draw_rows(&mut rows).is_some() {
            for &(_, p) in &rows {
                *per_group.entry(p / 3).or_default() += 1;
            }
        }
        assert_eq!(per_group.len(), 10);
        assert!(per_group.values().all(|&v| v == 2));
    }

    #[test]
    fn collate_maps_ignore_label() {
        let groups: Vec<&[usize]> = vec![&[1]; 10];
        let split = Arc::new(synthetic_split(&groups, 2));
        let mut s = TrainSampler::new(split, 10, 1, 0).unwrap();
        s.start_iteration(0);
        let b = s.next_batch().unwrap();
        // 10 one-example groups, batch 10, one epoch: every example exactly once.
        let mut inputs: Vec<i32> = (0..10).map(|r| b.inputs[r * 2]).collect();
        inputs.sort();
        assert_eq!(inputs, vec![1, 1, 2, 2, 3, 3, 4, 5, 6, 7]);
        // Labels i % 5: the stored 0 (ignore_label_id) becomes -100, the others are unchanged.
        assert!(!b.labels.contains(&0));
        let mut labels = b.labels.clone();
        labels.sort();
        labels.dedup();
        assert_eq!(labels, vec![-100, 1, 2, 3, 4]);
        assert!(s.next_batch().is_none());
    }

    #[test]
    fn test_iterator_pads_last_batch() {
        let groups: Vec<&[usize]> = vec![&[2, 1], &[3], &[1]];
        let split = Arc::new(synthetic_split(&groups, 2)); // 7 examples, 4 puzzles
        let it = TestIterator::new(split.clone(), 3).unwrap();
        assert_eq!(it.num_batches(), 3);
        let batches: Vec<Batch> = it.collect();
        assert_eq!(batches.len(), 3);
        assert_eq!(
            batches.iter().map(|b| b.effective_size).collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
        let ids: Vec<i32> = batches
            .iter()
            .flat_map(|b| b.puzzle_identifiers.clone())
            .collect();
        // Puzzles own examples [0,2) id 1, [2,3) id 2, [3,6) id 3, [6,7) id 1; then 2 pads (id 0).
        assert_eq!(ids, vec![1, 1, 2, 3, 3, 3, 1, 0, 0]);
        let last = &batches[2];
        assert_eq!(&last.inputs[2..], &[0, 0, 0, 0]);
        assert_eq!(&last.labels[2..], &[-100; 4]);
        // Example 6 has input tokens 6 % 7 + 1.
        assert_eq!(last.inputs[..2], [7, 7]);
        // Rank slicing of the padded batch equals the reference's per-rank padding.
        let l1 = last.local_slice(1, 3).unwrap();
        assert_eq!(l1.batch_size, 1);
        assert_eq!(l1.inputs, vec![0, 0]);
        assert_eq!(l1.puzzle_identifiers, vec![0]);
        assert_eq!(l1.effective_size, 1);
        assert!(last.local_slice(0, 2).is_err());
        assert!(last.local_slice(3, 3).is_err());
    }

    #[test]
    fn rejects_zero_sizes() {
        let split = arc_like();
        assert!(TrainSampler::new(split.clone(), 0, 1, 0).is_err());
        assert!(TrainSampler::new(split.clone(), 1, 0, 0).is_err());
        assert!(TestIterator::new(split, 0).is_err());
    }
}
