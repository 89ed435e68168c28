//! End-to-end ARC pipeline on the shared task folders: `build_arc`
//! (sapientinc/HRM:dataset/build_arc_dataset.py) -> `load_split` -> decode / crop / inverse
//! augmentation (arc_eval.ipynb) -> `vote`, plus the malformed-input errors of the builder.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use hrm_data::arc::{
    build_arc, crop, decode_grid, discover_tasks, encode_grid, parse_puzzle_name,
    test_cases_from_split, vote, ArcBuildOptions, ArcPrediction, ArcTask, Augmentation, Pair,
    PASS_AT_K, SEQ_LEN,
};
use hrm_data::error::DataError;
use hrm_data::format::{load_split, read_identifiers, SplitData};

mod common;
use common::{entries, shared_data, shared_dir};

fn options(dirs: Vec<PathBuf>, out: &Path, num_aug: usize) -> ArcBuildOptions {
    ArcBuildOptions {
        num_aug,
        ..ArcBuildOptions::new(dirs, out.to_path_buf())
    }
}

/// Every check that ties a built dataset back to its task files:
/// * counts: groups = tasks (train) / held-out tasks (test), puzzles = variants, examples =
///   variants x pairs routed to the split, `mean_puzzle_examples` and `num_puzzle_identifiers`;
/// * identifiers: unique per train puzzle, `identifiers.json[id]` is the puzzle's name, a test
///   puzzle has the identifier of the train puzzle of the same name;
/// * encoding: every row is exactly `encode_grid` of its decoded grid at its offset (PAD
///   elsewhere, the EOS frame), test rows at (0, 0);
/// * decoding + crop + inverse augmentation recovers each original grid exactly.
fn check_dataset(out: &Path, tasks: &[ArcTask], num_aug: usize) {
    let names = read_identifiers(out).unwrap();
    assert_eq!(names[0], "<blank>");
    let by_id: HashMap<&str, &ArcTask> = tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    let train = load_split(out, "train").unwrap();
    let test = load_split(out, "test").unwrap();
    let mut train_ids: HashMap<String, i32> = HashMap::new();
    for (split, data) in [("train", &train), ("test", &test)] {
        let m = &data.metadata;
        assert_eq!(
            (m.vocab_size, m.seq_len, m.pad_id, m.ignore_label_id),
            (12, 900, 0, Some(0))
        );
        assert_eq!(m.num_puzzle_identifiers, names.len());
        let set = &data.sets[0];
        let held: Vec<&ArcTask> = tasks
            .iter()
            .filter(|t| split == "train" || t.held_out)
            .collect();
        assert_eq!(set.num_groups(), held.len(), "{split} groups");
        assert_eq!(m.total_groups, held.len());
        let mean = set.num_examples() as f64 / set.num_puzzles() as f64;
        assert!((m.mean_puzzle_examples - mean).abs() < 1e-12);
        for g in 0..set.num_groups() {
            let puzzles = set.group_puzzles(g);
            assert!(puzzles.len() <= num_aug + 1);
            let first = &names[set.puzzle_identifiers[puzzles.start] as usize];
            let task = by_id[first.as_str()];
            assert_eq!(task.id, held[g].id, "{split} group {g} follows task order");
            let pairs: Vec<&Pair> = if split == "test" {
                task.test.iter().collect()
            } else if task.held_out {
                task.train.iter().collect()
            } else {
                task.train.iter().chain(&task.test).collect()
            };
            for (v, p) in puzzles.enumerate() {
                let id = set.puzzle_identifiers[p];
                let name = &names[id as usize];
                let (base, aug) = parse_puzzle_name(name);
                assert_eq!(base, task.id);
                assert_eq!(aug.is_none(), v == 0, "{name}: the original comes first");
                let aug = aug.unwrap_or_else(Augmentation::identity);
                if split == "train" {
                    assert!(train_ids.insert(name.clone(), id).is_none(), "{name} twice");
                } else {
                    assert_eq!(train_ids.get(name), Some(&id), "{name}: test id = train id");
                }
                let ex = set.puzzle_examples(p);
                assert_eq!(ex.len(), pairs.len(), "{name}");
                let mut at_origin = 0;
                for (e, pair) in ex.zip(&pairs) {
                    let (x, y) = (set.inputs.row(e), set.labels.row(e));
                    let first_cell = x.iter().position(|&t| t != 0).unwrap();
                    let (r0, c0) = (first_cell / 30, first_cell % 30);
                    let (gx, gy) = (decode_grid(x), decode_grid(y));
                    // The exact canvas: grid, EOS frame, PAD everywhere else.
                    assert_eq!(
                        x,
                        encode_grid(&gx, r0, c0).unwrap().as_slice(),
                        "{name} input"
                    );
                    assert_eq!(
                        y,
                        encode_grid(&gy, r0, c0).unwrap().as_slice(),
                        "{name} label"
                    );
                    assert_eq!(aug.invert(&gx), pair.input, "{name}");
                    assert_eq!(aug.invert(&gy), pair.output, "{name}");
                    at_origin += usize::from((r0, c0) == (0, 0));
                    if split == "test" {
                        assert_eq!((r0, c0), (0, 0), "{name}: test rows are not translated");
                        assert_eq!(aug.invert(&crop(x)), pair.input);
                    }
                }
                assert!(
                    at_origin >= 1,
                    "{name}: one pair per variant stays at (0, 0)"
                );
            }
        }
    }
    assert_eq!(
        train_ids.len() + 1,
        names.len(),
        "one identifier per train puzzle"
    );
}

/// A perfect model's predictions on the test split (its labels), with confidence 0.
fn perfect_predictions(test: &SplitData, names: &[String]) -> Vec<ArcPrediction> {
    let set = &test.sets[0];
    (0..set.num_examples())
        .map(|e| ArcPrediction {
            puzzle_name: names[set.puzzle_identifiers[set.puzzle_of_example(e)] as usize].clone(),
            input: set.inputs.row(e).to_vec(),
            predicted: set.labels.row(e).to_vec(),
            q_halt_logit: 0.0,
        })
        .collect()
}

#[test]
fn mini_arc_with_a_held_out_fraction() {
    let Some(mini) = shared_data("data/arc/Mini-ARC") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mini");
    let opts = ArcBuildOptions {
        test_from_train_fraction: 0.2,
        ..options(vec![mini.clone()], &out, 2)
    };
    let report = build_arc(&opts).unwrap();
    assert_eq!(report.tasks, 149);
    assert_eq!(report.held_out_tasks, 30); // round(0.2 * 149)
    assert_eq!(report.train.groups, 149);
    assert_eq!(report.test.groups, 30);

    // The same hold-out as the builder's, read back from the split.
    let mut tasks = discover_tasks(&[mini], &[]).unwrap();
    let test = load_split(&out, "test").unwrap();
    let names = read_identifiers(&out).unwrap();
    let held: HashSet<&str> = test.sets[0]
        .puzzle_identifiers
        .iter()
        .map(|&id| parse_puzzle_name(&names[id as usize]).0)
        .collect();
    assert_eq!(held.len(), 30);
    for t in &mut tasks {
        t.held_out = held.contains(t.id.as_str());
    }
    check_dataset(&out, &tasks, 2);

    // Reproducible byte for byte.
    let again = tmp.path().join("again");
    build_arc(&ArcBuildOptions {
        output_dir: again.clone(),
        ..opts.clone()
    })
    .unwrap();
    for f in [
        "identifiers.json",
        "train/all__inputs.npy",
        "train/all__labels.npy",
        "train/all__puzzle_identifiers.npy",
        "test/all__inputs.npy",
        "test/dataset.json",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap()
        );
    }

    // A perfect model solves every held-out task at K = 1 after voting over all variants.
    let cases = test_cases_from_split(&test, &names).unwrap();
    assert_eq!(cases.len(), 30); // Mini-ARC tasks have one test input each
    let report = vote(&cases, &perfect_predictions(&test, &names), &PASS_AT_K).unwrap();
    assert_eq!(report.scored_tasks, 30);
    assert_eq!(report.pass_at(1), Some(1.0));
    assert!(report.tests.iter().all(|t| t.ranked[0].votes == 3));
}

#[test]
fn arc_agi_2_evaluation_folder_is_held_out() {
    let Some(eval) = shared_data("data/arc/ARC-AGI-2/evaluation") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("arc2-eval");
    let report = build_arc(&options(vec![eval.clone()], &out, 2)).unwrap();
    let tasks = discover_tasks(&[eval], &[]).unwrap();
    assert_eq!(tasks.len(), 120);
    assert!(
        tasks.iter().all(|t| t.held_out),
        "the folder itself is named `evaluation`"
    );
    assert_eq!((report.tasks, report.held_out_tasks), (120, 120));
    let pairs = |f: fn(&ArcTask) -> usize| tasks.iter().map(f).sum::<usize>();
    assert_eq!(pairs(|t| t.train.len()), 359);
    assert_eq!(pairs(|t| t.test.len()), 167);
    // Every ARC-AGI-2 evaluation task has enough colours for 2 distinct variants.
    assert!(report.short_tasks.is_empty(), "{:?}", report.short_tasks);
    assert_eq!(
        (report.train.puzzles, report.train.examples),
        (360, 3 * 359)
    );
    assert_eq!((report.test.puzzles, report.test.examples), (360, 3 * 167));
    assert_eq!(report.num_identifiers, 361);
    check_dataset(&out, &tasks, 2);

    // Vote: a perfect model passes everything; corrupting every prediction of one task's
    // original (un-augmented) rows leaves the augmented majority in charge.
    let test = load_split(&out, "test").unwrap();
    let names = read_identifiers(&out).unwrap();
    let cases = test_cases_from_split(&test, &names).unwrap();
    assert_eq!(cases.len(), 167);
    let mut preds = perfect_predictions(&test, &names);
    let victim = preds[0].puzzle_name.clone();
    for p in preds.iter_mut().filter(|p| p.puzzle_name == victim) {
        p.predicted = vec![0; SEQ_LEN]; // crops to an empty grid
        p.q_halt_logit = 9.0;
    }
    let report = vote(&cases, &preds, &PASS_AT_K).unwrap();
    assert_eq!(report.pass_at(1), Some(1.0));
    // Drop the augmented rows of that task: now the wrong answer wins at K = 1 only.
    preds.retain(|p| parse_puzzle_name(&p.puzzle_name).0 != victim || p.puzzle_name == victim);
    let report = vote(&cases, &preds, &PASS_AT_K).unwrap();
    assert_eq!(report.solved[0], 119);
    assert_eq!(report.solved[1], 119, "the true answer was never predicted");
}

#[test]
fn arc_1_counts_match_the_spec() {
    let Some(shared) = shared_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dirs = vec![
        shared.join("data/arc/ARC-AGI-1"),
        shared.join("data/arc/ConceptARC/corpus"),
    ];
    let out = tmp.path().join("arc1");
    // num_aug 0: the originals only (the counts of docs/data.md, "ARC", derived from the
    // pinned dataset commits).
    let report = build_arc(&options(dirs, &out, 0)).unwrap();
    assert_eq!((report.tasks, report.held_out_tasks), (960, 400));
    assert_eq!(
        (
            report.train.groups,
            report.train.puzzles,
            report.train.examples
        ),
        (960, 960, 3988)
    );
    assert_eq!(
        (
            report.test.groups,
            report.test.puzzles,
            report.test.examples
        ),
        (400, 400, 419)
    );
    assert_eq!(report.num_identifiers, 961);
    let names = read_identifiers(&out).unwrap();
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), 961);
}

/// Writes `tasks` (file name -> JSON text) into a fresh folder.
fn task_folder(root: &Path, tasks: &[(&str, &str)]) -> PathBuf {
    let dir = root.join("tasks").join("evaluation");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in tasks {
        std::fs::write(dir.join(name), text).unwrap();
    }
    root.join("tasks")
}

const GOOD: &str = r#"{"train": [{"input": [[1, 2], [3, 4]], "output": [[5]]}],
 "test": [{"input": [[1]], "output": [[2, 3]]}]}"#;

#[test]
fn malformed_tasks_are_reported_and_leave_no_output() {
    let ragged = r#"{"train": [{"input": [[1, 2], [3, 4]], "output": [[5]]},
                    {"input": [[1, 2], [3]], "output": [[5]]}],
         "test": [{"input": [[1]], "output": [[2]]}]}"#;
    let colour = r#"{"train": [{"input": [[1, 2], [3, 4]], "output": [[5]]}],
         "test": [{"input": [[1]], "output": [[2, 10]]}]}"#;
    let syntax = "{\"train\": [\n{\"input\": [[1]], \"output\": [[1]]},\n]}";
    let cases = [
        (
            ragged,
            "b.json",
            "task b, train pair 1, input, row 1",
            "rectangular",
        ),
        (
            colour,
            "b.json",
            "task b, test pair 0, output, row 0, col 1",
            "colour 10",
        ),
        (syntax, "b.json", "line 3", "invalid JSON"),
    ];
    for (bad, file, location, msg) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let dir = task_folder(tmp.path(), &[("a.json", GOOD), ("b.json", bad)]);
        let out = tmp.path().join("out");
        let err = build_arc(&options(vec![dir], &out, 2))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(file) && err.contains(location) && err.contains(msg),
            "{err}"
        );
        assert_eq!(
            entries(tmp.path()),
            vec!["tasks"],
            "no output left for {file}"
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // Missing folder.
    let err = build_arc(&options(vec![tmp.path().join("nope")], &out, 2)).unwrap_err();
    assert!(
        matches!(&err, DataError::NotFound { path, .. } if path.ends_with("nope")),
        "{err}"
    );
    // No task files.
    std::fs::create_dir_all(tmp.path().join("empty")).unwrap();
    let err = build_arc(&options(vec![tmp.path().join("empty")], &out, 2)).unwrap_err();
    assert!(err.to_string().contains("no ARC task files"), "{err}");
    // Nothing held out (no `evaluation` folder, no fraction): a clear hint.
    let flat = tmp.path().join("flat");
    std::fs::create_dir_all(&flat).unwrap();
    std::fs::write(flat.join("a.json"), GOOD).unwrap();
    let err = build_arc(&options(vec![flat.clone()], &out, 2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--test-from-train-fraction"), "{err}");
    // The same folder given twice: duplicate task ids.
    let err = build_arc(&ArcBuildOptions {
        eval_dirs: vec![flat.clone()],
        ..options(vec![flat.clone()], &out, 2)
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("task a") && err.contains("same task id"),
        "{err}"
    );
    assert_eq!(entries(tmp.path()), vec!["empty", "flat"]);

    // --eval-dirs holds a flat folder out; bad options are rejected.
    let ok = build_arc(&ArcBuildOptions {
        eval_dirs: vec![flat.clone()],
        ..options(vec![], &out, 2)
    })
    .unwrap();
    assert_eq!((ok.tasks, ok.held_out_tasks, ok.test.examples), (1, 1, 3));
    let err = build_arc(&ArcBuildOptions {
        test_from_train_fraction: 1.0,
        force: true,
        ..options(vec![flat], &out, 2)
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("--test-from-train-fraction"),
        "{err}"
    );
    assert_eq!(entries(tmp.path()), vec!["empty", "flat", "out"]);
}
