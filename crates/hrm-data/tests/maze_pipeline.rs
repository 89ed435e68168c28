//! End-to-end Maze pipeline: `maze-generate` (the recipe of docs/data.md, "Maze-Hard", on small
//! mazes) -> Maze-Hard CSVs -> `build_maze` (sapientinc/HRM:dataset/build_maze_dataset.py) ->
//! `load_split`, plus the malformed-input errors of the builder.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use hrm_data::dihedral::Dihedral;
use hrm_data::error::DataError;
use hrm_data::format::{load_split, read_identifiers};
use hrm_data::maze::{
    build_maze, check_path, check_path_grids, generate_maze_csvs, read_maze_csv, GoalSampling,
    MazeBuildOptions, MazeGenerateOptions, MazeGrid,
};

mod common;
use common::{entries, CSV_HEADER};

fn generate_options(out: &Path, seed: u64) -> MazeGenerateOptions {
    MazeGenerateOptions {
        output_dir: out.to_path_buf(),
        seed,
        size: 12,
        train_count: 60,
        test_count: 40,
        min_walls: None,
        max_walls: None,
        min_path: Some(15),
        sampling: GoalSampling::Exact,
        max_candidates: None,
        force: false,
    }
}

fn build_options(input: &Path, out: &Path) -> MazeBuildOptions {
    MazeBuildOptions {
        input_dir: input.to_path_buf(),
        output_dir: out.to_path_buf(),
        aug: false,
        subsample_size: None,
        seed: 0,
        force: false,
    }
}

fn read(p: PathBuf) -> Vec<u8> {
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn generated_mazes_are_hard_valid_disjoint_and_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let report = generate_maze_csvs(&generate_options(&a, 5)).unwrap();
    assert_eq!((report.train, report.test), (60, 40));
    assert_eq!(report.path_lengths.values().sum::<usize>(), 100);
    assert!(report.to_string().contains("accepted L > 15"), "{report}");

    let train = read_maze_csv(&a.join("train.csv")).unwrap();
    let test = read_maze_csv(&a.join("test.csv")).unwrap();
    assert_eq!((train.len(), test.len()), (60, 40));
    let mut layouts = HashSet::new();
    for (split, rows) in [("train", &train), ("test", &test)] {
        for r in rows.iter() {
            let v = check_path_grids(&r.question, &r.answer);
            assert!(v.valid && v.optimal, "{split} line {}: {v:?}", r.line);
            assert!(
                v.shortest.unwrap() > 15,
                "{split} line {}: L = {:?}",
                r.line,
                v.shortest
            );
            // Train and test never share a wall layout (nor does any pair of mazes).
            assert!(
                layouts.insert(r.question.passable()),
                "{split} line {}",
                r.line
            );
        }
    }
    // The rating column is the shortest path length.
    let csv = String::from_utf8(read(a.join("train.csv"))).unwrap();
    let first = csv.lines().nth(1).unwrap();
    let rating: usize = first.rsplit(',').next().unwrap().parse().unwrap();
    assert_eq!(
        Some(rating),
        check_path_grids(&train[0].question, &train[0].answer).shortest
    );

    // Same seed: byte-identical files; another seed: different mazes.
    let b = tmp.path().join("b");
    generate_maze_csvs(&generate_options(&b, 5)).unwrap();
    for f in ["train.csv", "test.csv", "generation.json"] {
        assert_eq!(read(a.join(f)), read(b.join(f)), "{f}");
    }
    let c = tmp.path().join("c");
    generate_maze_csvs(&generate_options(&c, 6)).unwrap();
    assert_ne!(read(a.join("train.csv")), read(c.join("train.csv")));
    assert_eq!(entries(tmp.path()), vec!["a", "b", "c"]);
}

#[test]
fn far_goal_sampling_also_respects_the_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("far");
    let opts = MazeGenerateOptions {
        sampling: GoalSampling::FarGoal,
        size: 10,
        min_path: Some(20),
        ..generate_options(&out, 1)
    };
    let report = generate_maze_csvs(&opts).unwrap();
    assert!(report.path_lengths.keys().all(|&l| l > 20));
    for r in read_maze_csv(&out.join("test.csv")).unwrap() {
        assert_eq!(r.question.side(), 10);
        assert!(check_path_grids(&r.question, &r.answer).optimal);
    }
}

#[test]
fn builder_writes_the_reference_layout_with_dihedral_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let csvs = tmp.path().join("csv");
    generate_maze_csvs(&generate_options(&csvs, 9)).unwrap();
    let out = tmp.path().join("maze-aug");
    let report = build_maze(&MazeBuildOptions {
        aug: true,
        ..build_options(&csvs, &out)
    })
    .unwrap();
    assert_eq!(report.side, 12);
    assert_eq!(
        (
            report.train.mazes,
            report.train.puzzles,
            report.train.groups
        ),
        (60, 480, 60)
    );
    assert_eq!(
        (report.test.mazes, report.test.puzzles, report.test.groups),
        (40, 40, 40)
    );
    assert_eq!(report.train.optimal_labels, 60);
    assert_eq!(read_identifiers(&out).unwrap(), vec!["<blank>".to_string()]);

    let train = load_split(&out, "train").unwrap();
    let m = &train.metadata;
    assert_eq!(
        (m.vocab_size, m.seq_len, m.num_puzzle_identifiers),
        (6, 144, 1)
    );
    assert_eq!(
        (m.pad_id, m.ignore_label_id, m.blank_identifier_id),
        (0, Some(0), 0)
    );
    assert_eq!((m.total_groups, m.mean_puzzle_examples), (60, 1.0));
    let set = &train.sets[0];
    assert_eq!(
        (set.num_examples(), set.num_puzzles(), set.num_groups()),
        (480, 480, 60)
    );
    assert!(set.puzzle_identifiers.iter().all(|&id| id == 0));
    let originals = read_maze_csv(&csvs.join("train.csv")).unwrap();
    for g in 0..set.num_groups() {
        let puzzles = set.group_puzzles(g);
        assert_eq!(puzzles.len(), 8);
        for (t, p) in Dihedral::ALL.into_iter().zip(puzzles) {
            let e = set.puzzle_examples(p);
            assert_eq!(e.len(), 1);
            let (x, y) = (set.inputs.row(e.start), set.labels.row(e.start));
            // Variant t of group g is transform t of the g-th CSV maze, and still optimal.
            assert_eq!(
                x,
                originals[g].question.transformed(t).to_tokens().as_slice()
            );
            assert_eq!(y, originals[g].answer.transformed(t).to_tokens().as_slice());
            assert!(check_path(x, y).optimal, "group {g} variant {t}");
        }
    }
    // The test split is never augmented.
    let test = load_split(&out, "test").unwrap();
    assert_eq!(test.sets[0].num_puzzles(), 40);
    assert_eq!(test.metadata.total_groups, 40);

    // Subsample: seeded, in file order, reproducible byte for byte.
    let s1 = tmp.path().join("sub1");
    let s2 = tmp.path().join("sub2");
    for s in [&s1, &s2] {
        let r = build_maze(&MazeBuildOptions {
            subsample_size: Some(10),
            seed: 3,
            ..build_options(&csvs, s)
        })
        .unwrap();
        assert_eq!(r.train.groups, 10);
    }
    for f in ["all__inputs.npy", "all__labels.npy", "dataset.json"] {
        assert_eq!(
            read(s1.join("train").join(f)),
            read(s2.join("train").join(f)),
            "{f}"
        );
    }
    let sub = load_split(&s1, "train").unwrap();
    let rows: Vec<Vec<u8>> = originals.iter().map(|r| r.question.to_tokens()).collect();
    let mut last = None;
    for e in 0..sub.num_examples() {
        let pos = rows
            .iter()
            .position(|r| r.as_slice() == sub.sets[0].inputs.row(e))
            .unwrap();
        assert!(last < Some(pos), "subsample keeps file order");
        last = Some(pos);
    }
}

/// Writes a CSV folder with a valid test.csv and `train` as train.csv's body.
fn csv_folder(root: &Path, train_body: &str) -> PathBuf {
    common::csv_folder(
        &root.join("bad-input"),
        &format!("{CSV_HEADER}{train_body}"),
        &format!("{CSV_HEADER}x,S  G,So G,3\n"),
    )
}

#[test]
fn malformed_csv_rows_are_reported_by_file_and_line_and_leave_no_output() {
    let cases = [
        (
            "x,S  G,So G,3\nx,S  G,So G\n",
            "line 3",
            "expected 4 comma-separated fields",
        ),
        (
            "x,S  G,So G,3\nx,S G,SoG,2\n",
            "line 3",
            "length 3 is not N*N",
        ),
        ("x,S  G,So G,3\nx,S  x,SooG,3\n", "line 3", "not one of"),
        ("x,SS G,SSoG,3\n", "line 2", "2 `S` cells"),
        ("x,S#  G,SooG,3\n", "line 2", "length 5"),
        ("x,S#  ,S#oo,3\n", "line 2", "0 `G` cells"),
        (
            "x,S #G,So#G,3\nx,S# G,SooG,3\n",
            "line 3",
            "answer has 'o' at row 0, col 1",
        ),
        (
            "x,S  G,So G,2\nx,S       G,SoooooooG,8\n",
            "line 3",
            "maze is 3x3 but line 2 is 2x2",
        ),
        ("", "line 2", "no maze rows"),
    ];
    for (body, line, msg) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let input = csv_folder(tmp.path(), body);
        let out = tmp.path().join("out");
        let err = build_maze(&build_options(&input, &out))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.csv") && err.contains(line),
            "{body:?}: {err}"
        );
        assert!(err.contains(msg), "{body:?}: {err}");
        // Nothing that could look like a dataset is left behind.
        assert_eq!(entries(tmp.path()), vec!["bad-input"], "{body:?}");
    }
    // A good train.csv with a broken header in test.csv.
    let tmp = tempfile::tempdir().unwrap();
    let input = csv_folder(tmp.path(), "x,S  G,So G,3\n");
    std::fs::write(input.join("test.csv"), "src,q,a,r\nx,S  G,So G,3\n").unwrap();
    let err = build_maze(&build_options(&input, &tmp.path().join("o"))).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("test.csv: line 1: expected the header"),
        "{msg}"
    );
    assert_eq!(entries(tmp.path()), vec!["bad-input"]);
}

#[test]
fn missing_inputs_and_existing_outputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = build_maze(&build_options(
        &tmp.path().join("nope"),
        &tmp.path().join("o"),
    ));
    assert!(matches!(err, Err(DataError::NotFound { .. })), "{err:?}");
    let input = csv_folder(tmp.path(), "x,S  G,So G,3\n");
    std::fs::remove_file(input.join("test.csv")).unwrap();
    let err = build_maze(&build_options(&input, &tmp.path().join("o"))).unwrap_err();
    assert!(matches!(&err, DataError::NotFound { path, .. } if path.ends_with("test.csv")));
    assert_eq!(entries(tmp.path()), vec!["bad-input"]);

    // An existing output is kept unless --force.
    std::fs::write(
        input.join("test.csv"),
        format!("{CSV_HEADER}x,S  G,So G,3\n"),
    )
    .unwrap();
    let out = tmp.path().join("o");
    build_maze(&build_options(&input, &out)).unwrap();
    let err = build_maze(&build_options(&input, &out)).unwrap_err();
    assert!(matches!(err, DataError::OutputExists { .. }), "{err:?}");
    build_maze(&MazeBuildOptions {
        force: true,
        ..build_options(&input, &out)
    })
    .unwrap();
    assert_eq!(entries(tmp.path()), vec!["bad-input", "o"]);
    // A tiny dataset still loads and its label is the optimal path.
    let split = load_split(&out, "train").unwrap();
    let q = MazeGrid::parse("S  G").unwrap().to_tokens();
    assert_eq!(split.sets[0].inputs.row(0), q.as_slice());
    assert!(check_path(&q, split.sets[0].labels.row(0)).optimal);
}

#[test]
fn impossible_generator_settings_fail_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("gen");
    let opts = MazeGenerateOptions {
        size: 5,
        min_path: Some(30),
        ..generate_options(&out, 0)
    };
    let err = generate_maze_csvs(&opts).unwrap_err().to_string();
    assert!(err.contains("--min-path"), "{err}");
    assert!(entries(tmp.path()).is_empty());
}
