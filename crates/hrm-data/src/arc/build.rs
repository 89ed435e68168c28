//! The ARC builder: task folders -> train/test splits of augmented, encoded task variants.

use std::fmt;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::augment::{encode_task, EncodedTask};
use super::canvas::{PAD, SEQ_LEN, VOCAB_SIZE};
use super::tasks::discover_tasks;
use crate::error::{DataError, Result};
use crate::format::{self, DatasetMetadata, SetWriter, StagingDir, BLANK_IDENTIFIER};
use crate::progress::Progress;
/// Options of `hrm data arc`.
#[derive(Clone, Debug)]
pub struct ArcBuildOptions {
    /// Folders of task JSON files (searched recursively); test pairs of tasks under a folder
    /// named `evaluation` are held out.
    pub dataset_dirs: Vec<PathBuf>,
    /// Extra folders whose tasks' test pairs are all held out.
    pub eval_dirs: Vec<PathBuf>,
    /// Dataset folder to create.
    pub output_dir: PathBuf,
    /// Augmented variants per task (reference default 1000).
    pub num_aug: usize,
    /// Seed (reference default 42).
    pub seed: u64,
    /// Also hold out the test pairs of this seeded fraction of the tasks that the folder rule
    /// keeps for training (0 = off; for sets without an `evaluation` folder such as Mini-ARC).
    pub test_from_train_fraction: f64,
    /// Replace an existing output folder.
    pub force: bool,
}

impl ArcBuildOptions {
    /// Reference defaults (`num_aug` 1000, seed 42) for the given folders.
    pub fn new(dataset_dirs: Vec<PathBuf>, output_dir: PathBuf) -> ArcBuildOptions {
        ArcBuildOptions {
            dataset_dirs,
            eval_dirs: Vec::new(),
            output_dir,
            num_aug: 1000,
            seed: 42,
            test_from_train_fraction: 0.0,
            force: false,
        }
    }
}

/// Counts of one written split.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArcSplitReport {
    /// Groups (original tasks).
    pub groups: usize,
    /// Puzzles (task variants).
    pub puzzles: usize,
    /// Examples (pairs).
    pub examples: usize,
}

/// What [`build_arc`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ArcBuildReport {
    /// The dataset folder.
    pub output_dir: PathBuf,
    /// Tasks read.
    pub tasks: usize,
    /// Tasks whose test pairs are in the test split.
    pub held_out_tasks: usize,
    /// Puzzle identifiers including `<blank>`.
    pub num_identifiers: usize,
    /// The train split.
    pub train: ArcSplitReport,
    /// The test split.
    pub test: ArcSplitReport,
    /// Tasks that got fewer than `num_aug` augmented variants: (task id, variants incl. the
    /// original).
    pub short_tasks: Vec<(String, usize)>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl fmt::Display for ArcBuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {}: {} tasks ({} with held-out test pairs), {} puzzle identifiers",
            self.output_dir.display(),
            self.tasks,
            self.held_out_tasks,
            self.num_identifiers
        )?;
        for (name, s) in [("train", &self.train), ("test", &self.test)] {
            let mean = s.examples as f64 / s.puzzles.max(1) as f64;
            writeln!(
                f,
                "  {name:<5} groups {:>6}  puzzles {:>9}  examples {:>10}  ({mean:.3} per puzzle)",
                s.groups, s.puzzles, s.examples
            )?;
        }
        if let Some((id, n)) = self.short_tasks.first() {
            writeln!(
                f,
                "  {} tasks got fewer augmented variants than requested (e.g. {id}: {n} \
                 including the original)",
                self.short_tasks.len()
            )?;
        }
        write!(f, "  took {:.1} s", self.seconds)
    }
}

/// Stream id of the hold-out draw (task streams are `0..tasks`).
const HOLDOUT_STREAM: u64 = u64::MAX;

/// Tasks encoded in parallel before being written in order (bounds memory: a task with 1000
/// variants of 5 pairs is ~9 MB of tokens).
const CHUNK_TASKS: usize = 16;

/// Builds an ARC dataset folder (rules: the [`crate::arc`] docs and docs/data.md, "ARC"). The
/// `.npy` files are streamed, so memory stays bounded for `--num-aug 1000`. Written atomically.
pub fn build_arc(opts: &ArcBuildOptions) -> Result<ArcBuildReport> {
    let f = opts.test_from_train_fraction;
    if !(0.0..1.0).contains(&f) {
        return Err(DataError::option(
            "--test-from-train-fraction",
            "must be in [0, 1)",
        ));
    }
    if opts.dataset_dirs.is_empty() && opts.eval_dirs.is_empty() {
        return Err(DataError::option(
            "--dataset-dirs",
            "give at least one folder",
        ));
    }
    let t0 = std::time::Instant::now();
    let staging = StagingDir::create(&opts.output_dir, opts.force)?;
    let mut tasks = discover_tasks(&opts.dataset_dirs, &opts.eval_dirs)?;
    if f > 0.0 {
        let mut candidates: Vec<usize> = (0..tasks.len()).filter(|&i| !tasks[i].held_out).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        rng.set_stream(HOLDOUT_STREAM);
        candidates.shuffle(&mut rng);
        let n = (f * candidates.len() as f64).round() as usize;
        for &i in &candidates[..n] {
            tasks[i].held_out = true;
        }
    }
    let held_out_tasks = tasks.iter().filter(|t| t.held_out).count();
    if held_out_tasks == 0 {
        return Err(DataError::option(
            "--dataset-dirs",
            "no task is held out for the test split: none of the folders has an `evaluation` \
             folder; pass --eval-dirs DIR or --test-from-train-fraction F (e.g. 0.1)",
        ));
    }

    let mut train_w = SetWriter::create(&staging.path().join("train"), "all", SEQ_LEN, VOCAB_SIZE)?;
    let mut test_w = SetWriter::create(&staging.path().join("test"), "all", SEQ_LEN, VOCAB_SIZE)?;
    let mut names = vec![BLANK_IDENTIFIER.to_string()];
    let mut short_tasks = Vec::new();
    let progress = Progress::new("arc tasks", tasks.len() as u64);
    for (chunk_idx, chunk) in tasks.chunks(CHUNK_TASKS).enumerate() {
        let base = chunk_idx * CHUNK_TASKS;
        let encoded: Vec<EncodedTask> = chunk
            .par_iter()
            .enumerate()
            .map(|(i, t)| encode_task(t, opts.num_aug, opts.seed, (base + i) as u64))
            .collect::<Result<_>>()?;
        for (task, enc) in chunk.iter().zip(encoded) {
            if enc.names.len() < opts.num_aug + 1 {
                short_tasks.push((task.id.clone(), enc.names.len()));
            }
            // Identifiers: one per variant, in task then variant order; the test split reuses
            // the train split's identifier of the same name (the reference's name -> id map).
            let first_id = names.len();
            names.extend(enc.names);
            for (v, (inputs, labels)) in enc.train.puzzles.iter().enumerate() {
                train_w.push_examples(inputs, labels)?;
                train_w.end_puzzle(identifier(first_id + v, &task.path)?)?;
            }
            train_w.end_group()?;
            if let Some(test) = enc.test {
                for (v, (inputs, labels)) in test.puzzles.iter().enumerate() {
                    test_w.push_examples(inputs, labels)?;
                    test_w.end_puzzle(identifier(first_id + v, &task.path)?)?;
                }
                test_w.end_group()?;
            }
            progress.inc(1);
        }
    }
    progress.finish();
    let mut reports = Vec::new();
    for (split, writer) in [("train", train_w), ("test", test_w)] {
        let stats = writer.finish()?;
        let metadata = DatasetMetadata {
            pad_id: i64::from(PAD),
            ignore_label_id: Some(i64::from(PAD)),
            blank_identifier_id: 0,
            vocab_size: VOCAB_SIZE,
            seq_len: SEQ_LEN,
            num_puzzle_identifiers: names.len(),
            total_groups: stats.groups,
            mean_puzzle_examples: stats.mean_puzzle_examples(),
            sets: vec!["all".to_string()],
        };
        format::write_metadata(&staging.path().join(split), &metadata)?;
        reports.push(ArcSplitReport {
            groups: stats.groups,
            puzzles: stats.puzzles,
            examples: stats.examples,
        });
    }
    format::write_identifiers(staging.path(), &names)?;
    let output_dir = staging.commit()?;
    let test = reports.pop().unwrap_or_default();
    let train = reports.pop().unwrap_or_default();
    Ok(ArcBuildReport {
        output_dir,
        tasks: tasks.len(),
        held_out_tasks,
        num_identifiers: names.len(),
        train,
        test,
        short_tasks,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// A puzzle identifier as the reference's int32.
fn identifier(id: usize, path: &Path) -> Result<i32> {
    i32::try_from(id).map_err(|_| {
        DataError::item(
            path,
            "puzzle identifiers",
            "more than 2^31-1 puzzle identifiers",
        )
    })
}
