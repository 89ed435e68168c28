//! End-to-end tests of `hrm data maze-generate`, `hrm data maze` and `hrm data arc` (the built
//! binary): successful runs, and malformed inputs that must exit non-zero with one clear
//! `error:` line naming the file and line / task, no panic, and no output folder left.

mod common;

use std::process::Output;

use common::{build, entries, p, plain, shared_dir, stderr, stdout};

/// Exit code 1, one `error:` line naming `file` and `location`, and no panic.
fn assert_clean_failure(o: &Output, file: &str, location: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert!(line.contains(file) && line.contains(location), "{err}");
}

#[test]
fn maze_generate_then_build() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("csv");
    let o = plain(&[
        "data",
        "maze-generate",
        "--output-dir",
        p(&csv),
        "--seed",
        "3",
        "--size",
        "10",
        "--min-path",
        "14",
        "--train-count",
        "30",
        "--test-count",
        "20",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("accepted L > 14"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("maze-generate: 50/50 (100%)"),
        "{}",
        stderr(&o)
    );
    let out = tmp.path().join("maze");
    let o = build("maze", &csv, &out, &["--aug"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("labels valid+optimal 30/30"), "{text}");
    assert!(text.contains("puzzles     240"), "{text}");
    for f in [
        "identifiers.json",
        "train/dataset.json",
        "test/all__labels.npy",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
}

#[test]
fn maze_errors_exit_non_zero_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let header = "source,question,answer,rating\n";
    std::fs::write(
        input.join("train.csv"),
        format!("{header}x,S  G,So G,2\nx,S  G,S#oG,2\n"),
    )
    .unwrap();
    std::fs::write(input.join("test.csv"), format!("{header}x,S  G,So G,2\n")).unwrap();
    let out = tmp.path().join("out");
    let o = build("maze", &input, &out, &[]);
    assert_clean_failure(&o, "train.csv", "line 3");
    let o = build("maze", &tmp.path().join("nope"), &out, &[]);
    assert_clean_failure(&o, "nope", "not found");
    let o = plain(&[
        "data",
        "maze-generate",
        "--output-dir",
        p(&out),
        "--size",
        "4",
        "--min-path",
        "30",
    ]);
    assert_clean_failure(&o, "--min-path", "no path");
    assert_eq!(entries(tmp.path()), vec!["in"]);
}

/// A one-pair task whose train input is `input` (JSON rows).
fn task_json(input: &str) -> String {
    format!(
        r#"{{"train": [{{"input": {input}, "output": [[1]]}}],
            "test": [{{"input": [[1]], "output": [[1]]}}]}}"#
    )
}

#[test]
fn arc_build_and_errors() {
    let Some(shared) = shared_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mini");
    let mini = shared.join("data/arc/Mini-ARC");
    let extra = ["--num-aug", "1", "--test-from-train-fraction", "0.1"];
    let o = build("arc", &mini, &out, &extra);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("149 tasks (15 with held-out test pairs)"),
        "{}",
        stdout(&o)
    );
    assert!(out.join("test/dataset.json").is_file());

    // Colour 10 in a task: exit 1, the file and the cell named, nothing left.
    let bad = tmp.path().join("bad/evaluation");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("t1.json"), task_json("[[1, 10]]")).unwrap();
    let out2 = tmp.path().join("out2");
    let o = build("arc", &bad, &out2, &[]);
    assert_clean_failure(&o, "t1.json", "task t1, train pair 0, input, row 0, col 1");
    // Ragged grid.
    std::fs::write(bad.join("t1.json"), task_json("[[1, 2], [1]]")).unwrap();
    let o = build("arc", &bad, &out2, &[]);
    assert_clean_failure(&o, "t1.json", "row 1");
    // Missing folder.
    let o = build("arc", &tmp.path().join("nope"), &out2, &[]);
    assert_clean_failure(&o, "nope", "not found");
    assert_eq!(entries(tmp.path()), vec!["bad", "mini"]);
}
