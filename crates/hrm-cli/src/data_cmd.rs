//! `hrm data <subcommand>`: the dataset builders and generators of `hrm-data`.
//!
//! Mirrors the command lines of sapientinc/HRM:dataset/build_{sudoku,maze,arc}_dataset.py (same
//! kebab-case flags: `--output-dir`, `--subsample-size`, `--num-aug`, `--min-difficulty`,
//! `--aug`, `--dataset-dirs`, `--seed`), reading local CSVs (`--input-dir`) or those of a Hugging
//! Face Hub dataset repo (`--hub REPO [--revision R]`, fetched into the Hub cache), plus
//! generators for the datasets that only exist on Hugging Face (`sudoku-generate`,
//! `maze-generate`).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use hrm_data::sudoku::{build_sudoku, SudokuBuildOptions};
use hrm_data::sudoku_gen::{generate_sudoku_csv, SudokuGenerateOptions};
use hrm_train::hub::{Hub, RepoKind, RepoRef};

/// The `hrm data` subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Build a Sudoku dataset from Sudoku-Extreme CSVs (a folder with train.csv and test.csv,
    /// header source,question,answer,rating), like dataset/build_sudoku_dataset.py.
    Sudoku(SudokuArgs),
    /// Write Sudoku-Extreme-format CSVs (train.csv, test.csv) from puzzle lists such as the tdoku
    /// lists, and/or random minimal puzzles: random symmetry, unique solution, rating.
    SudokuGenerate(SudokuGenerateArgs),
    // Maze / ARC subcommands (helper "mazearc") go below this line.
    /// Build a Maze dataset from Maze-Hard CSVs (a folder with train.csv and test.csv, header
    /// source,question,answer,rating, N*N chars of `# SGo`), like dataset/build_maze_dataset.py.
    Maze(MazeArgs),
    /// Write Maze-Hard-format CSVs of random-wall mazes whose shortest path is longer than a
    /// bound (default: 30x30, 270..=450 walls, L > 110, 1000 + 1000), labelled with one fixed
    /// shortest path.
    MazeGenerate(MazeGenerateArgs),
    /// Build an ARC dataset from task JSON folders (ARC-AGI-1 + ConceptARC, ARC-AGI-2,
    /// Mini-ARC), with dihedral / colour / translation augmentation, like
    /// dataset/build_arc_dataset.py.
    Arc(ArcArgs),
}

/// Where `hrm data sudoku` / `maze` read train.csv and test.csv.
#[derive(Debug, Args)]
pub struct CsvSource {
    /// Folder holding train.csv and test.csv.
    #[arg(long, required_unless_present = "hub", conflicts_with = "hub")]
    pub input_dir: Option<PathBuf>,
    /// A Hugging Face Hub dataset repo holding train.csv and test.csv (e.g.
    /// sapientinc/sudoku-extreme, sapientinc/maze-30x30-hard-1k), fetched into the Hub cache
    /// ($HF_HOME; HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE=1 apply) and built like --input-dir.
    #[arg(long)]
    pub hub: Option<String>,
    /// The --hub repo's branch, tag or commit [default: main].
    #[arg(long, requires = "hub", conflicts_with = "input_dir")]
    pub revision: Option<String>,
}

impl CsvSource {
    /// The folder to build from: --input-dir, or the snapshot of the --hub repo in the cache.
    fn dir(self) -> Result<PathBuf> {
        match (self.input_dir, self.hub) {
            (Some(d), _) => Ok(d),
            (None, Some(repo)) => {
                let repo = RepoRef::new(RepoKind::Dataset, &repo, self.revision.as_deref())?;
                Hub::from_env()?.fetch_all(&repo, &["train.csv", "test.csv"])
            }
            (None, None) => anyhow::bail!("pass --input-dir DIR or --hub REPO"),
        }
    }
}

/// Flags of `hrm data sudoku`.
#[derive(Debug, Args)]
pub struct SudokuArgs {
    /// The CSVs.
    #[command(flatten)]
    pub source: CsvSource,
    /// Dataset folder to create (train/, test/, identifiers.json).
    #[arg(long, default_value = "data/sudoku-extreme-full")]
    pub output_dir: PathBuf,
    /// Keep this many training puzzles, drawn uniformly without replacement (seeded).
    #[arg(long)]
    pub subsample_size: Option<usize>,
    /// Keep only rows with rating >= N (both splits).
    #[arg(long)]
    pub min_difficulty: Option<u32>,
    /// Shuffled copies per training puzzle (digit relabel, transpose, band/stack and
    /// row/column permutations); the test split is never augmented.
    #[arg(long, default_value_t = 0)]
    pub num_aug: usize,
    /// Seed of the subsample and the augmentations (same seed = byte-identical output).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace the output folder if it exists (only once the new one is complete).
    #[arg(long)]
    pub force: bool,
}

/// Flags of `hrm data sudoku-generate`.
#[derive(Debug, Args)]
pub struct SudokuGenerateArgs {
    /// Folder to create (train.csv, test.csv, generation.json).
    #[arg(long)]
    pub output_dir: PathBuf,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Puzzle-list files or folders (a folder expands to its `puzzles*` files). Default: the
    /// tdoku lists in $HRM_SHARED_DIR/data/sudoku/tdoku or ../shared/data/sudoku/tdoku, unless
    /// --from-scratch is given.
    #[arg(long, num_args = 1..)]
    pub inputs: Vec<PathBuf>,
    /// Fraction of each list that goes to test.csv (split by original puzzle).
    #[arg(long, default_value_t = 0.1)]
    pub test_fraction: f64,
    /// Use at most the first N puzzles of each list.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Also generate N random minimal puzzles (source `scratch`).
    #[arg(long)]
    pub from_scratch: Option<usize>,
    /// Hill-climb moves per from-scratch puzzle to make it harder (0 = none).
    #[arg(long, default_value_t = 0)]
    pub hill_climb_steps: usize,
    /// From-scratch puzzles with exactly N blanks (unique solution) instead of minimal ones:
    /// easier puzzles for small models and CPU runs.
    #[arg(long, requires = "from_scratch")]
    pub blanks: Option<usize>,
    /// Replace the output folder if it exists (only once the new one is complete).
    #[arg(long)]
    pub force: bool,
}

/// Flags of `hrm data maze`.
#[derive(Debug, Args)]
pub struct MazeArgs {
    /// The CSVs.
    #[command(flatten)]
    pub source: CsvSource,
    /// Dataset folder to create (train/, test/, identifiers.json).
    #[arg(long, default_value = "data/maze-30x30-hard-1k")]
    pub output_dir: PathBuf,
    /// Add the 8 dihedral variants of every training maze (one group per maze); off in the
    /// paper. The test split is never augmented.
    #[arg(long)]
    pub aug: bool,
    /// Keep this many training mazes, drawn without replacement (seeded).
    #[arg(long)]
    pub subsample_size: Option<usize>,
    /// Seed of the subsample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Replace the output folder if it exists (only once the new one is complete).
    #[arg(long)]
    pub force: bool,
}

/// Flags of `hrm data maze-generate`.
#[derive(Debug, Args)]
pub struct MazeGenerateArgs {
    /// Folder to create (train.csv, test.csv, generation.json).
    #[arg(long)]
    pub output_dir: PathBuf,
    /// Seed: candidate i uses ChaCha8 stream i of it (same seed = byte-identical CSVs).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Grid side N (N x N cells, no border).
    #[arg(long, default_value_t = 30)]
    pub size: usize,
    /// Mazes in train.csv.
    #[arg(long, default_value_t = 1000)]
    pub train_count: usize,
    /// Mazes in test.csv (never sharing a wall layout with train).
    #[arg(long, default_value_t = 1000)]
    pub test_count: usize,
    /// Fewest walls [default: floor(N*N/10)*3, 270 for 30x30].
    #[arg(long)]
    pub min_walls: Option<usize>,
    /// Most walls [default: floor(N*N/10)*5, 450 for 30x30].
    #[arg(long)]
    pub max_walls: Option<usize>,
    /// Keep mazes whose shortest path has MORE moves than this [default: 110 for 30x30,
    /// floor(110*N*N/900) otherwise, e.g. 17 for 12x12].
    #[arg(long)]
    pub min_path: Option<usize>,
    /// Goal sampling: `exact` (S and G uniform, reject unless L > min-path) or `far-goal`
    /// (G uniform among cells farther than min-path from S; ~100x faster, reweights layouts).
    #[arg(long, default_value = "exact")]
    pub sampling: hrm_data::maze::GoalSampling,
    /// Give up after this many candidates [default: 2e10].
    #[arg(long)]
    pub max_candidates: Option<u64>,
    /// Replace the output folder if it exists (only once the new one is complete).
    #[arg(long)]
    pub force: bool,
}

/// Flags of `hrm data arc`.
#[derive(Debug, Args)]
pub struct ArcArgs {
    /// Folders of task JSON files, searched recursively (ARC-1: ../shared/data/arc/ARC-AGI-1
    /// ../shared/data/arc/ConceptARC/corpus; ARC-2: ../shared/data/arc/ARC-AGI-2). Test pairs of
    /// tasks under a folder named `evaluation` go to the test split, all other pairs to train.
    #[arg(long, num_args = 1.., required = true)]
    pub dataset_dirs: Vec<PathBuf>,
    /// Extra task folders whose test pairs all go to the test split.
    #[arg(long, num_args = 1..)]
    pub eval_dirs: Vec<PathBuf>,
    /// Dataset folder to create (train/, test/, identifiers.json).
    #[arg(long)]
    pub output_dir: PathBuf,
    /// Augmented variants per task (random dihedral transform + colour permutation, duplicates
    /// rejected, at most 5x as many attempts).
    #[arg(long, default_value_t = 1000)]
    pub num_aug: usize,
    /// Seed of the augmentations, translations and hold-out draw.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Hold out the test pairs of this (seeded) fraction of the tasks that would otherwise be
    /// all-train, e.g. 0.2 for Mini-ARC, which has no `evaluation` folder.
    #[arg(long, default_value_t = 0.0)]
    pub test_from_train_fraction: f64,
    /// Replace the output folder if it exists (only once the new one is complete).
    #[arg(long)]
    pub force: bool,
}

/// The default puzzle-list folder: `$HRM_SHARED_DIR/data/sudoku/tdoku`, else
/// `../shared/data/sudoku/tdoku` (relative to the current folder).
fn default_tdoku_dir() -> PathBuf {
    let shared = std::env::var_os("HRM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared"));
    shared.join("data").join("sudoku").join("tdoku")
}

/// Runs one `hrm data` subcommand.
pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Sudoku(a) => {
            let report = build_sudoku(&SudokuBuildOptions {
                input_dir: a.source.dir()?,
                output_dir: a.output_dir,
                subsample_size: a.subsample_size,
                min_difficulty: a.min_difficulty,
                num_aug: a.num_aug,
                seed: a.seed,
                force: a.force,
            })?;
            println!("{report}");
        }
        DataCommand::SudokuGenerate(a) => {
            let inputs = if a.inputs.is_empty() && a.from_scratch.is_none() {
                vec![default_tdoku_dir()]
            } else {
                a.inputs
            };
            let report = generate_sudoku_csv(&SudokuGenerateOptions {
                output_dir: a.output_dir,
                seed: a.seed,
                inputs,
                test_fraction: a.test_fraction,
                limit: a.limit,
                from_scratch: a.from_scratch,
                hill_climb_steps: a.hill_climb_steps,
                blanks: a.blanks,
                force: a.force,
            })?;
            println!("{report}");
        }
        DataCommand::Maze(a) => {
            let report = hrm_data::maze::build_maze(&hrm_data::maze::MazeBuildOptions {
                input_dir: a.source.dir()?,
                output_dir: a.output_dir,
                aug: a.aug,
                subsample_size: a.subsample_size,
                seed: a.seed,
                force: a.force,
            })?;
            println!("{report}");
        }
        DataCommand::MazeGenerate(a) => {
            let opts = hrm_data::maze::MazeGenerateOptions {
                output_dir: a.output_dir,
                seed: a.seed,
                size: a.size,
                train_count: a.train_count,
                test_count: a.test_count,
                min_walls: a.min_walls,
                max_walls: a.max_walls,
                min_path: a.min_path,
                sampling: a.sampling,
                max_candidates: a.max_candidates,
                force: a.force,
            };
            println!("{}", hrm_data::maze::generate_maze_csvs(&opts)?);
        }
        DataCommand::Arc(a) => {
            let report = hrm_data::arc::build_arc(&hrm_data::arc::ArcBuildOptions {
                dataset_dirs: a.dataset_dirs,
                eval_dirs: a.eval_dirs,
                output_dir: a.output_dir,
                num_aug: a.num_aug,
                seed: a.seed,
                test_from_train_fraction: a.test_from_train_fraction,
                force: a.force,
            })?;
            println!("{report}");
        }
    }
    Ok(())
}
