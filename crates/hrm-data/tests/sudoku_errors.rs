//! Malformed inputs to the Sudoku builder and generator: each gives a typed error naming the
//! file and line (or folder), and leaves no output folder behind (not even a staging one).
//! The reference (sapientinc/HRM:dataset/build_sudoku_dataset.py) only has bare asserts here.

use std::path::{Path, PathBuf};

use hrm_data::sudoku::generator::{generate_sudoku_csv, SudokuGenerateOptions};
use hrm_data::sudoku::{build_sudoku, SudokuBuildOptions};
use hrm_data::DataError;

mod common;
use common::{csv_folder, entries, sudoku_options, A, CSV_HEADER, Q};

fn good_row() -> String {
    format!("src,{Q},{A},3\n")
}

/// A CSV file with one good row.
fn good_csv() -> String {
    format!("{CSV_HEADER}{}", good_row())
}

/// Writes an input folder whose train.csv has `bad_row` as its 4th line (line 1 = header).
fn input_with_bad_train_row(root: &Path, bad_row: &str) -> PathBuf {
    let train = format!(
        "{CSV_HEADER}{}{}{bad_row}\n{}",
        good_row(),
        good_row(),
        good_row()
    );
    csv_folder(&root.join("in"), &train, &good_csv())
}

fn opts(input: PathBuf, out: PathBuf) -> SudokuBuildOptions {
    SudokuBuildOptions {
        num_aug: 2,
        ..sudoku_options(input, out)
    }
}

/// Only the input folder may remain in `root`: no output, no `.tmp-*` staging folder.
fn assert_no_output(root: &Path) {
    let left: Vec<String> = entries(root).into_iter().filter(|n| n != "in").collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A build with `bad_row` in train.csv fails at line 4, leaves no output, and its message
/// contains `expected`.
fn assert_bad_row(bad_row: &str, expected: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let input = input_with_bad_train_row(tmp.path(), bad_row);
    let err = build_sudoku(&opts(input, tmp.path().join("out"))).unwrap_err();
    assert!(matches!(err, DataError::Line { line: 4, .. }), "{err:?}");
    assert_no_output(tmp.path());
    let e = err.to_string();
    assert!(e.contains(expected), "{e}");
}

#[test]
fn bad_csv_row_names_file_and_line() {
    assert_bad_row(
        &format!("src,{Q},{A}"),
        "train.csv: line 4: expected 4 comma-separated fields, found 3",
    );
    assert_bad_row(
        &format!("src,\"{Q},{A},3"),
        "train.csv: line 4: unterminated quoted field",
    );
}

#[test]
fn non_81_char_puzzle() {
    assert_bad_row(
        &format!("src,{},{A},3", &Q[..80]),
        "train.csv: line 4: question has 80 characters, expected 81",
    );
    assert_bad_row(
        &format!("src,{Q},{}9,3", A),
        "train.csv: line 4: answer has 82 characters, expected 81",
    );
}

#[test]
fn invalid_digit() {
    let bad_q = Q.replacen('7', "A", 1);
    assert_bad_row(
        &format!("src,{bad_q},{A},3"),
        "line 4: question character 5 is 'A'",
    );
    let bad_a = A.replacen('4', ".", 1);
    assert_bad_row(
        &format!("src,{Q},{bad_a},3"),
        "line 4: answer character 3 is '.', expected 1-9",
    );
}

#[test]
fn invalid_answer_and_rating() {
    // Swapping two cells of a row breaks the columns.
    let mut a: Vec<char> = A.chars().collect();
    a.swap(0, 1);
    let swapped: String = a.iter().collect();
    assert_bad_row(
        &format!("src,{Q},{swapped},3"),
        "line 4: answer is not a valid Sudoku solution",
    );
    // A valid grid that contradicts a given: relabel 5 <-> 3 everywhere.
    let relabelled: String = A
        .chars()
        .map(|c| match c {
            '5' => '3',
            '3' => '5',
            c => c,
        })
        .collect();
    assert_bad_row(
        &format!("src,{Q},{relabelled},3"),
        "line 4: answer disagrees with the question's given at character 1",
    );
    assert_bad_row(
        &format!("src,{Q},{A},hard"),
        "line 4: rating is \"hard\", expected a non-negative integer",
    );
}

#[test]
fn wrong_header() {
    let tmp = tempfile::tempdir().unwrap();
    let train = format!("puzzle,solution\n{}", good_row());
    let input = csv_folder(&tmp.path().join("in"), &train, &good_csv());
    let e = build_sudoku(&opts(input, tmp.path().join("out")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.csv: line 1: expected the header `source,question,answer,rating`"));
    assert_no_output(tmp.path());
}

#[test]
fn missing_folder_and_missing_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("in");
    let err = build_sudoku(&opts(missing.clone(), tmp.path().join("out"))).unwrap_err();
    assert!(
        matches!(&err, DataError::NotFound { path, .. } if *path == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("not found"));
    assert_no_output(tmp.path());

    std::fs::create_dir_all(&missing).unwrap();
    std::fs::write(missing.join("test.csv"), good_csv()).unwrap();
    let err = build_sudoku(&opts(missing.clone(), tmp.path().join("out"))).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("train.csv: not found") && msg.contains("train.csv and test.csv"),
        "{msg}"
    );
    assert_no_output(tmp.path());
}

#[test]
fn error_in_test_split_removes_the_finished_train_split() {
    let tmp = tempfile::tempdir().unwrap();
    let test = format!("{}src,{Q},{A}\n", good_csv());
    let input = csv_folder(&tmp.path().join("in"), &good_csv(), &test);
    let e = build_sudoku(&opts(input, tmp.path().join("out")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("test.csv: line 3"), "{e}");
    assert_no_output(tmp.path());
}

#[test]
fn existing_output_needs_force() {
    let tmp = tempfile::tempdir().unwrap();
    let input = input_with_bad_train_row(tmp.path(), good_row().trim_end());
    let out = tmp.path().join("out");
    build_sudoku(&opts(input.clone(), out.clone())).unwrap();
    let before = std::fs::read(out.join("train/all__inputs.npy")).unwrap();
    let err = build_sudoku(&opts(input.clone(), out.clone())).unwrap_err();
    assert!(matches!(err, DataError::OutputExists { .. }));
    assert!(err.to_string().contains("--force"));
    let mut o = opts(input, out.clone());
    o.force = true;
    o.num_aug = 5;
    let r = build_sudoku(&o).unwrap();
    assert_eq!(r.splits[0].examples, 4 * 6);
    assert_ne!(
        std::fs::read(out.join("train/all__inputs.npy")).unwrap(),
        before
    );
}

#[test]
fn generator_bad_list_and_missing_input() {
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("puzzles_bad");
    std::fs::write(&list, format!("# c\n{Q}\n{}\n", &Q[..70])).unwrap();
    let out = tmp.path().join("gen");
    let err = generate_sudoku_csv(&SudokuGenerateOptions::new(out.clone(), vec![list], 0))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("puzzles_bad: line 3: puzzle has 70 characters"),
        "{err}"
    );
    assert!(!out.exists());
    let err = generate_sudoku_csv(&SudokuGenerateOptions::new(
        out.clone(),
        vec![tmp.path().join("nope")],
        0,
    ))
    .unwrap_err();
    assert!(matches!(err, DataError::NotFound { .. }), "{err:?}");
    assert!(!out.exists());
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = generate_sudoku_csv(&SudokuGenerateOptions::new(out.clone(), vec![empty], 0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("holds no puzzle lists"), "{err}");
    assert!(!out.exists());
}
