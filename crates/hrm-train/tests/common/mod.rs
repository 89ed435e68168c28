//! Helpers shared by the integration tests: the presets in `configs/`, a small Sudoku dataset
//! made on the spot, the tiny training run's config and options, and a run folder's listing.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};

use hrm_data::sudoku::{build_sudoku, SudokuBuildOptions};
use hrm_data::sudoku_gen::{generate_sudoku_csv, SudokuGenerateOptions};
use hrm_train::config::{ConfigError, TrainConfig};
use hrm_train::trainer::TrainOptions;

/// The repository's `configs/` folder.
pub fn configs_dir() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("configs")
}

/// `configs/<name>`.
pub fn preset(name: &str) -> PathBuf {
    configs_dir().join(name)
}

/// Load `configs/<name>` with `overrides`.
pub fn load(name: &str, overrides: &[&str]) -> Result<TrainConfig, ConfigError> {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    TrainConfig::load(&preset(name), &o)
}

/// A small Sudoku dataset made here (no shared data needed): 48 generated puzzles, no
/// augmentation, under `<dir>/data`.
pub fn dataset(dir: &Path) -> PathBuf {
    let csv = dir.join("csv");
    let mut g = SudokuGenerateOptions::new(csv.clone(), Vec::new(), 3);
    g.from_scratch = Some(48);
    generate_sudoku_csv(&g).unwrap();
    let data = dir.join("data");
    build_sudoku(&SudokuBuildOptions {
        input_dir: csv,
        output_dir: data.clone(),
        subsample_size: None,
        min_difficulty: None,
        num_aug: 1,
        seed: 0,
        force: false,
    })
    .unwrap();
    data
}

/// `configs/tiny.toml` on `data`: 4 epochs with an evaluation (of 16 test examples) every 2, a
/// checkpoint every 3 steps, no exploration; then `extra` overrides.
pub fn tiny_run_config(data: &Path, extra: &[&str]) -> TrainConfig {
    let data_path = format!("data_path={}", data.display());
    let mut overrides = vec![
        data_path.as_str(),
        "epochs=4",
        "eval_interval=2",
        "eval_max_examples=16",
        "checkpoint_interval=3",
        "arch.halt_exploration_prob=0",
    ];
    overrides.extend_from_slice(extra);
    load("tiny.toml", &overrides).unwrap()
}

/// Options of a test run: in `run_dir`, silent, stopping after `stop_after` steps if given.
pub fn quiet(run_dir: &Path, stop_after: Option<u64>) -> TrainOptions {
    TrainOptions {
        run_dir: Some(run_dir.to_path_buf()),
        stop_after,
        quiet: true,
        ..Default::default()
    }
}

/// The file names of a run folder, sorted; event files (whose names carry a time stamp and the
/// host name) as `events.out.tfevents`.
pub fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .map(|n| {
            if n.starts_with("events.out.tfevents.") {
                "events.out.tfevents".into()
            } else {
                n
            }
        })
        .collect();
    v.sort();
    v
}
