//! The trained model shipped in `models/` (see models/README.md): `hrm solve maze` uses it with
//! no flags, from any working directory, and it still solves fresh mazes of its distribution
//! (generated here with a seed the training data did not use) at the rate measured when it was
//! trained. Sudoku ships no model yet: `hrm solve sudoku` without `--checkpoint` says so in one
//! line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hrm_raw(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hrm"))
        .current_dir(cwd)
        .env_remove("HRM_MODELS")
        .args(args)
        .output()
        .expect("run hrm")
}

fn hrm(cwd: &Path, args: &[&str]) -> String {
    let out = hrm_raw(cwd, args);
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "hrm {args:?} failed:\n{so}\n{se}");
    so
}

fn models() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models"))
}

/// Fresh 6x6 mazes of the maze-cpu preset's distribution (`configs/maze-cpu.toml`), seed 777
/// (the shipped model was trained on seed 3): returns (csv folder, dataset folder).
fn fresh_mazes(dir: &Path) -> (PathBuf, PathBuf) {
    let (csv, data) = (dir.join("csv"), dir.join("data"));
    hrm(
        dir,
        &[
            "data",
            "maze-generate",
            "--output-dir",
            csv.to_str().unwrap(),
            "--size",
            "6",
            "--train-count",
            "1",
            "--test-count",
            "300",
            "--seed",
            "777",
        ],
    );
    hrm(
        dir,
        &[
            "data",
            "maze",
            "--input-dir",
            csv.to_str().unwrap(),
            "--output-dir",
            data.to_str().unwrap(),
        ],
    );
    (csv, data)
}

#[test]
fn maze_model_solves_fresh_mazes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, data) = fresh_mazes(dir.path());
    let model = models().join("maze-cpu.safetensors");
    let json = hrm(
        dir.path(),
        &[
            "eval",
            "--checkpoint",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["metrics"]["all"]["count"].as_f64().unwrap(), 300.0);
    let exact = v["metrics"]["all"]["exact_accuracy"].as_f64().unwrap();
    let optimal = v["maze"]["valid_and_optimal_rate"].as_f64().unwrap();
    assert!(exact >= MIN_MAZE_EXACT, "exact accuracy {exact}");
    assert!(
        optimal >= exact,
        "valid-and-optimal {optimal} < exact {exact}"
    );
}

/// Lower bound for 300 fresh mazes: the rate measured on the 1,000 held-out mazes at training
/// time (models/README.md) minus about three standard errors of a 300-sample rate (~0.07).
const MIN_MAZE_EXACT: f64 = 0.72;

#[test]
fn maze_solves_with_no_flags_from_any_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, _) = fresh_mazes(dir.path());
    let text = std::fs::read_to_string(csv.join("test.csv")).unwrap();
    let mut solved = 0;
    for line in text.lines().skip(1).take(10) {
        let question = line.split(',').nth(1).unwrap();
        assert_eq!(question.len(), 36, "{line}");
        let grid: Vec<String> = question
            .as_bytes()
            .chunks(6)
            .map(|r| String::from_utf8(r.to_vec()).unwrap())
            .collect();
        let file = dir.path().join("maze.txt");
        std::fs::write(&file, grid.join("\n") + "\n").unwrap();
        let out = hrm(dir.path(), &["solve", "maze", file.to_str().unwrap()]);
        assert!(out.contains("segments: 1"), "{out}");
        let answer: Vec<&str> = out.lines().take(6).collect();
        for (a, q) in answer.iter().zip(&grid) {
            assert_eq!(a.len(), 6, "{out}");
            for (ac, qc) in a.chars().zip(q.chars()) {
                // walls, start and goal are copied; only open cells may become path
                assert!(qc == ac || (qc == ' ' && ac == 'o'), "{out}");
            }
        }
        if out.contains("verified: yes") {
            solved += 1;
        }
    }
    assert!(solved >= 6, "only {solved} of 10 fresh mazes solved");
}

#[test]
fn sudoku_without_a_shipped_model_says_how_to_pass_one() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!models().join("sudoku-cpu.safetensors").exists());
    let puzzle =
        "13247569868.1.234549538672137125.96.954631.722.874915351.927486.2681453..49563217";
    let out = hrm_raw(dir.path(), &["solve", "sudoku", puzzle]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("--checkpoint"), "{err}");
}
