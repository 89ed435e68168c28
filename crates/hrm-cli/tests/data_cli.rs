//! End-to-end tests of `hrm data sudoku-generate` and `hrm data sudoku` (the built binary):
//! successful runs on the shared tdoku lists, and malformed inputs that must exit non-zero with
//! one clear `error:` line naming the file and line, no panic, and no output folder left.

mod common;

use std::path::Path;

use common::{build, entries, p, plain, shared_dir, stderr, stdout};

#[test]
fn generate_then_build() {
    let Some(shared) = shared_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("csv");
    let tdoku = shared.join("data/sudoku/tdoku");
    let o = plain(&[
        "data",
        "sudoku-generate",
        "--inputs",
        p(&tdoku),
        "--limit",
        "20",
        "--from-scratch",
        "3",
        "--output-dir",
        p(&csv),
        "--seed",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("puzzles6_forum_hardest_1106") && out.contains("scratch"),
        "{out}"
    );
    // Plain progress lines (stderr is not a terminal here).
    assert!(
        stderr(&o).contains("sudoku-generate: solving and rating: 83/83 (100%)"),
        "{}",
        stderr(&o)
    );
    let train = std::fs::read_to_string(csv.join("train.csv")).unwrap();
    assert!(train.starts_with("source,question,answer,rating\n"));

    let ds = tmp.path().join("ds");
    let extra = ["--subsample-size", "10", "--num-aug", "2", "--seed", "4"];
    let o = build("sudoku", &csv, &ds, &extra);
    assert!(o.status.success(), "{}", stderr(&o));
    let meta = std::fs::read_to_string(ds.join("train/dataset.json")).unwrap();
    assert!(meta.contains("\"total_groups\": 10"), "{meta}");
    assert!(ds.join("test/all__inputs.npy").is_file());

    // A second run without --force refuses and leaves the dataset alone.
    let o = build("sudoku", &csv, &ds, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("already exists (pass --force"),
        "{}",
        stderr(&o)
    );
    assert!(ds.join("train/dataset.json").is_file());
}

/// Runs `hrm data sudoku` on `train_body` (appended to a valid header) and expects failure.
fn failing_build(root: &Path, train_body: &str) -> String {
    let input = root.join("in");
    std::fs::create_dir_all(&input).unwrap();
    let header = "source,question,answer,rating\n";
    std::fs::write(input.join("train.csv"), format!("{header}{train_body}")).unwrap();
    std::fs::write(input.join("test.csv"), header).unwrap();
    let o = build("sudoku", &input, &root.join("out"), &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    // Plain progress lines may come first; the error is the last line, printed once.
    assert!(
        err.trim_end()
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("error: "),
        "{err}"
    );
    assert_eq!(err.matches("error: ").count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let left: Vec<String> = entries(root).into_iter().filter(|n| n != "in").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    err
}

const Q: &str = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79";
const A: &str = "534678912672195348198342567859761423426853791713924856961537284287419635345286179";

#[test]
fn malformed_inputs_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let e = failing_build(tmp.path(), &format!("s,{Q},{A},1\ns,{Q},{A}\n"));
    assert!(
        e.contains("train.csv: line 3: expected 4 comma-separated fields, found 3"),
        "{e}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let e = failing_build(tmp.path(), &format!("s,{}.,{A},1\n", Q));
    assert!(
        e.contains("train.csv: line 2: question has 82 characters, expected 81"),
        "{e}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let e = failing_build(
        tmp.path(),
        &format!("s,{},{A},1\n", Q.replacen('5', "?", 1)),
    );
    assert!(
        e.contains("train.csv: line 2: question character 1 is '?'"),
        "{e}"
    );

    // The test split is empty: a clear error instead of an empty dataset.
    let tmp = tempfile::tempdir().unwrap();
    let e = failing_build(tmp.path(), &format!("s,{Q},{A},1\n"));
    assert!(e.contains("test.csv: rows: no puzzles left"), "{e}");
}

#[test]
fn missing_folder_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let out = tmp.path().join("out");
    let o = build("sudoku", &missing, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("nope: not found"), "{e}");
    assert!(!out.exists());

    std::fs::create_dir_all(&missing).unwrap();
    std::fs::write(missing.join("test.csv"), "source,question,answer,rating\n").unwrap();
    let o = build("sudoku", &missing, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("train.csv: not found"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());

    let o = plain(&[
        "data",
        "sudoku-generate",
        "--inputs",
        p(&tmp.path().join("no-list")),
        "--output-dir",
        p(&out),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no-list: not found"), "{}", stderr(&o));
    assert!(!out.exists());
}
