//! End-to-end Sudoku pipeline on the shared tdoku lists: `sudoku::generator` (Option A of
//! docs/data.md, "Sudoku-Extreme") -> CSVs -> `build_sudoku` (mirrors
//! sapientinc/HRM:dataset/build_sudoku_dataset.py) -> `load_split` -> sampler (puzzle_dataset.py).

use std::path::PathBuf;
use std::sync::Arc;

use hrm_data::csv::CsvReader;
use hrm_data::format::load_split;
use hrm_data::sampler::{TestIterator, TrainSampler};
use hrm_data::sudoku::generator::{generate_sudoku_csv, SudokuGenerateOptions};
use hrm_data::sudoku::solver::analyze;
use hrm_data::sudoku::{
    build_sudoku, givens_agree, is_valid_solution, parse_grid, SudokuBuildOptions,
};

mod common;
use common::{csv_folder, shared_data, sudoku_options, A, CSV_HEADER, Q};

const LISTS: [&str; 4] = [
    "puzzles2_17_clue",
    "puzzles3_magictour_top1465",
    "puzzles5_forum_hardest_1905_11+",
    "puzzles6_forum_hardest_1106",
];

fn decode(tokens: &[u8]) -> [u8; 81] {
    let mut g = [0u8; 81];
    for (o, &t) in g.iter_mut().zip(tokens) {
        *o = t - 1;
    }
    g
}

#[test]
fn generate_build_load_sample() {
    let Some(tdoku) = shared_data("data/sudoku/tdoku") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let csv_dir = tmp.path().join("sudoku-gen");
    let mut opts = SudokuGenerateOptions::new(csv_dir.clone(), vec![tdoku.clone()], 1234);
    opts.limit = Some(200);
    let report = generate_sudoku_csv(&opts).unwrap();
    eprintln!("{report}");

    // Sources in list order, 200 each, 10% test per list.
    let names: Vec<&str> = report.sources.iter().map(|s| s.source.as_str()).collect();
    assert_eq!(names, LISTS);
    for s in &report.sources {
        assert_eq!(s.read, 200);
        assert_eq!(
            s.not_unique, 0,
            "{}: every tdoku puzzle is unique",
            s.source
        );
        assert_eq!(s.train + s.test + s.duplicates, 200);
        assert_eq!(s.test, ((200 - s.duplicates) as f64 * 0.1).round() as usize);
    }
    // Ratings rise from the 17-clue list to the hardest list.
    let means: Vec<f64> = report.sources.iter().map(|s| s.mean_rating).collect();
    assert!(
        means[0] < means[1] && means[1] < means[2] && means[2] < means[3],
        "mean ratings must rise 17_clue < magictour < 11+ < 1106: {means:?}"
    );

    // Every written row: valid answer, givens agree, exactly one solution (= the answer), and
    // the rating is the documented guess count of that exact question.
    let mut rows = 0;
    for split in ["train", "test"] {
        let path = csv_dir.join(format!("{split}.csv"));
        let mut r = CsvReader::open(&path, "").unwrap();
        r.expect_header(&["source", "question", "answer", "rating"])
            .unwrap();
        while let Some(rec) = r.next_record().unwrap() {
            let q = parse_grid(&rec.fields[1], true).unwrap();
            let a = parse_grid(&rec.fields[2], false).unwrap();
            assert!(is_valid_solution(&a));
            assert!(givens_agree(&q, &a));
            let an = analyze(&q, 2);
            assert_eq!(an.solutions, 1, "line {}", rec.line);
            assert_eq!(an.solution, Some(a));
            assert_eq!(rec.fields[3], an.guesses.to_string());
            assert!(LISTS.contains(&rec.fields[0].as_str()));
            rows += 1;
        }
    }
    assert_eq!(rows, report.train_rows + report.test_rows);
    assert!(csv_dir.join("generation.json").is_file());

    // Same seed => byte-identical files (smaller run to keep the test fast).
    let small = |dir: PathBuf| {
        let mut o = SudokuGenerateOptions::new(dir, vec![tdoku.clone()], 7);
        o.limit = Some(25);
        o.from_scratch = Some(4);
        o.hill_climb_steps = 5;
        generate_sudoku_csv(&o).unwrap()
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    // One run on a single thread, one on three: the output must not depend on scheduling.
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    pool(1).install(|| small(a.clone()));
    pool(3).install(|| small(b.clone()));
    for f in ["train.csv", "test.csv", "generation.json"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between two runs with the same seed (1 vs 3 threads)"
        );
    }

    // Build the dataset from the generated CSVs: 100 of the train rows x (1 + 3 augmentations).
    let ds = tmp.path().join("sudoku-ds");
    let build = |out: PathBuf| {
        build_sudoku(&SudokuBuildOptions {
            subsample_size: Some(100),
            num_aug: 3,
            seed: 5,
            ..sudoku_options(csv_dir.clone(), out)
        })
        .unwrap()
    };
    let br = build(ds.clone());
    eprintln!("{br}");
    assert_eq!(br.splits[0].groups, 100);
    assert_eq!(br.splits[0].examples, 400);
    assert_eq!(br.splits[1].groups, report.test_rows);
    let ds2 = tmp.path().join("sudoku-ds2");
    build(ds2.clone());
    for f in [
        "identifiers.json",
        "train/dataset.json",
        "train/all__inputs.npy",
        "train/all__labels.npy",
        "train/all__puzzle_indices.npy",
        "train/all__group_indices.npy",
        "train/all__puzzle_identifiers.npy",
        "test/all__inputs.npy",
    ] {
        assert_eq!(
            std::fs::read(ds.join(f)).unwrap(),
            std::fs::read(ds2.join(f)).unwrap(),
            "{f} differs between two builds with the same seed"
        );
    }

    // Load it back and check every example: valid solution, consistent givens, and each group
    // is one board with its augmentations (same blank count).
    let train = Arc::new(load_split(&ds, "train").unwrap());
    let set = &train.sets[0];
    assert_eq!(train.metadata.total_groups, 100);
    assert_eq!(set.num_examples(), 400);
    for g in 0..set.num_groups() {
        let puzzles = set.group_puzzles(g);
        assert_eq!(puzzles.len(), 4);
        let blanks = |p: usize| {
            let ex = set.puzzle_examples(p);
            assert_eq!(ex.len(), 1);
            set.inputs.row(ex.start).iter().filter(|&&t| t == 1).count()
        };
        let b0 = blanks(puzzles.start);
        for p in puzzles.clone() {
            assert_eq!(blanks(p), b0);
            let ex = set.puzzle_examples(p).start;
            let (q, a) = (decode(set.inputs.row(ex)), decode(set.labels.row(ex)));
            assert!(is_valid_solution(&a));
            assert!(givens_agree(&q, &a));
        }
    }
    let test = Arc::new(load_split(&ds, "test").unwrap());
    assert_eq!(test.sets[0].num_groups(), report.test_rows);

    // Sampler over the real split: full batches of valid boards, no label ignored (Sudoku
    // labels are 2..=10), identifiers all 0; test iterator covers the test split in order.
    let mut s = TrainSampler::new(train.clone(), 32, 2, 9).unwrap();
    s.start_iteration(1);
    let mut n = 0;
    while let Some(b) = s.next_batch() {
        n += 1;
        assert_eq!(b.inputs.len(), 32 * 81);
        assert!(b.labels.iter().all(|&l| (2..=10).contains(&l)));
        assert!(b.puzzle_identifiers.iter().all(|&i| i == 0));
    }
    assert_eq!(n, s.batches_per_iteration_estimate());
    let batches: Vec<_> = TestIterator::new(test.clone(), 16).unwrap().collect();
    let tset = &test.sets[0];
    let mut row = 0;
    for b in &batches {
        for r in 0..b.effective_size {
            let toks: Vec<i32> = tset.inputs.row(row).iter().map(|&t| t as i32).collect();
            assert_eq!(&b.inputs[r * 81..(r + 1) * 81], &toks[..]);
            row += 1;
        }
        assert!(b.inputs[b.effective_size * 81..].iter().all(|&t| t == 0));
    }
    assert_eq!(row, tset.num_examples());
}

#[test]
fn min_difficulty_filters_both_splits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = CSV_HEADER.to_string();
    for r in 0..10 {
        text.push_str(&format!("s,{Q},{A},{r}\n"));
    }
    let input = csv_folder(&tmp.path().join("in"), &text, &text);
    let report = build_sudoku(&SudokuBuildOptions {
        min_difficulty: Some(7),
        ..sudoku_options(input, tmp.path().join("out"))
    })
    .unwrap();
    assert_eq!(report.splits[0].groups, 3);
    assert_eq!(report.splits[1].groups, 3);
}
