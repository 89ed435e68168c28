//! ARC scoring (the reference's arc_eval.ipynb): ground truth, voting, pass@K, submission JSON.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;

use super::canvas::crop;
use super::grid::{parse_puzzle_name, Augmentation, Grid};
use super::tasks::ArcTask;
use crate::error::{DataError, Result};
use crate::format;
/// The K of pass@K that the reference reports.
pub const PASS_AT_K: [usize; 5] = [1, 2, 10, 100, 1000];
/// One held-out test input of a task, with its answer when known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArcTestCase {
    /// Task id.
    pub task_id: String,
    /// Position among the task's test inputs (0-based, file order).
    pub index: usize,
    /// The input grid.
    pub input: Grid,
    /// The expected output (`None` for hidden test sets: ranking only, no score).
    pub answer: Option<Grid>,
}

/// One model prediction on a test-split row.
#[derive(Clone, Debug, PartialEq)]
pub struct ArcPrediction {
    /// The row's puzzle name (from `identifiers.json`), e.g. `007bbfc7_t3_0947382615`.
    pub puzzle_name: String,
    /// The row's input tokens (900).
    pub input: Vec<u8>,
    /// The argmax output tokens (900).
    pub predicted: Vec<u8>,
    /// The Q-halt logit at the final segment (confidence = sigmoid of it).
    pub q_halt_logit: f32,
}

/// A distinct candidate answer of one test input.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RankedAnswer {
    /// The answer grid (augmentation undone).
    pub grid: Grid,
    /// Number of predictions that gave it.
    pub votes: usize,
    /// Mean sigmoid(q_halt_logit) of those predictions.
    pub mean_confidence: f64,
}

/// The ranked answers of one test input.
#[derive(Clone, Debug, PartialEq)]
pub struct TestRanking {
    /// The test case.
    pub case: ArcTestCase,
    /// Candidates, best first: more votes first, then higher mean confidence, then first seen.
    pub ranked: Vec<RankedAnswer>,
    /// 0-based rank of the true answer among `ranked` (when known and present).
    pub correct_rank: Option<usize>,
}

/// Result of [`vote`].
#[derive(Clone, Debug, PartialEq)]
pub struct VoteReport {
    /// The K values scored.
    pub ks: Vec<usize>,
    /// Tasks solved at each K (every test input's answer within the top K).
    pub solved: Vec<usize>,
    /// Tasks scored (those whose every test input has a known answer).
    pub scored_tasks: usize,
    /// Rankings, grouped by task in the order the cases were given.
    pub tests: Vec<TestRanking>,
    /// Predictions used.
    pub predictions: usize,
}

impl VoteReport {
    /// pass@K as a fraction (None if K was not scored or no task was scored).
    pub fn pass_at(&self, k: usize) -> Option<f64> {
        let i = self.ks.iter().position(|&x| x == k)?;
        (self.scored_tasks > 0).then(|| self.solved[i] as f64 / self.scored_tasks as f64)
    }
}

/// Why predictions cannot be voted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoteError {
    /// A prediction's task has no test case.
    #[error("prediction {row} ({name}): task {task:?} has no test inputs in the ground truth")]
    UnknownTask {
        /// Row of the prediction.
        row: usize,
        /// Its puzzle name.
        name: String,
        /// Its task id.
        task: String,
    },
    /// A prediction's (de-augmented) input matches none of its task's test inputs.
    #[error(
        "prediction {row} ({name}): after undoing the augmentation its input matches none of \
         the task's test inputs (predictions from another dataset?)"
    )]
    InputMismatch {
        /// Row of the prediction.
        row: usize,
        /// Its puzzle name.
        name: String,
    },
    /// Two test inputs of a task are identical, so votes cannot be assigned.
    #[error("task {task}: test inputs {first} and {second} are identical")]
    DuplicateInput {
        /// Task id.
        task: String,
        /// First index.
        first: usize,
        /// Second index.
        second: usize,
    },
}

/// Votes over predictions (docs/data.md, "ARC", scoring steps 4-6): each prediction's input and
/// output are cropped and de-augmented, matched to its task's test input, and counted; answers
/// are ranked by (votes, mean confidence) descending, ties kept in first-seen order (Python's
/// stable `sorted(reverse=True)`); a task is solved at K when every test input's answer is in its
/// top K. A test input without predictions has no candidates (not solved).
///
/// Callers drop padding rows (puzzle identifier 0) first, as step 1 of the notebook does.
pub fn vote(
    cases: &[ArcTestCase],
    predictions: &[ArcPrediction],
    ks: &[usize],
) -> std::result::Result<VoteReport, VoteError> {
    // Candidate accumulators per case: (grid, votes, confidence sum), in first-seen order.
    let mut acc: Vec<Vec<(Grid, usize, f64)>> = vec![Vec::new(); cases.len()];
    // Position of each distinct answer in `acc[case]` (thousands of votes per test input).
    let mut slot: Vec<HashMap<Grid, usize>> = vec![HashMap::new(); cases.len()];
    let mut lookup: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in cases.iter().enumerate() {
        let list = lookup.entry(&c.task_id).or_default();
        if let Some(&j) = list.iter().find(|&&j| cases[j].input == c.input) {
            return Err(VoteError::DuplicateInput {
                task: c.task_id.clone(),
                first: cases[j].index,
                second: c.index,
            });
        }
        list.push(i);
    }
    for (row, p) in predictions.iter().enumerate() {
        let (task, aug) = parse_puzzle_name(&p.puzzle_name);
        let aug = aug.unwrap_or_else(Augmentation::identity);
        let Some(candidates) = lookup.get(task) else {
            return Err(VoteError::UnknownTask {
                row,
                name: p.puzzle_name.clone(),
                task: task.to_string(),
            });
        };
        let input = aug.invert(&crop(&p.input));
        let Some(&case) = candidates.iter().find(|&&i| cases[i].input == input) else {
            return Err(VoteError::InputMismatch {
                row,
                name: p.puzzle_name.clone(),
            });
        };
        let answer = aug.invert(&crop(&p.predicted));
        let confidence = 1.0 / (1.0 + (-f64::from(p.q_halt_logit)).exp());
        match slot[case].get(&answer) {
            Some(&k) => {
                acc[case][k].1 += 1;
                acc[case][k].2 += confidence;
            }
            None => {
                slot[case].insert(answer.clone(), acc[case].len());
                acc[case].push((answer, 1, confidence));
            }
        }
    }
    let mut tests = Vec::with_capacity(cases.len());
    for (case, entries) in cases.iter().zip(acc) {
        let mut ranked: Vec<RankedAnswer> = entries
            .into_iter()
            .map(|(grid, votes, sum)| RankedAnswer {
                grid,
                votes,
                mean_confidence: sum / votes as f64,
            })
            .collect();
        // Stable sort, descending by (votes, mean confidence).
        ranked.sort_by(|a, b| {
            b.votes.cmp(&a.votes).then(
                b.mean_confidence
                    .partial_cmp(&a.mean_confidence)
                    .unwrap_or(std::cmp::Ordering::Equal),
            )
        });
        let correct_rank = case
            .answer
            .as_ref()
            .and_then(|ans| ranked.iter().position(|r| r.grid == *ans));
        tests.push(TestRanking {
            case: case.clone(),
            ranked,
            correct_rank,
        });
    }
    // Per task: solved at K iff every test input has its answer within the top K.
    let mut solved = vec![0usize; ks.len()];
    let mut scored_tasks = 0;
    let mut order: Vec<&str> = Vec::new();
    for c in cases {
        if !order.contains(&c.task_id.as_str()) {
            order.push(&c.task_id);
        }
    }
    for task in order {
        let tests_of: Vec<&TestRanking> = tests.iter().filter(|t| t.case.task_id == task).collect();
        if tests_of.iter().any(|t| t.case.answer.is_none()) {
            continue;
        }
        scored_tasks += 1;
        for (i, &k) in ks.iter().enumerate() {
            if tests_of
                .iter()
                .all(|t| t.correct_rank.is_some_and(|r| r < k))
            {
                solved[i] += 1;
            }
        }
    }
    Ok(VoteReport {
        ks: ks.to_vec(),
        solved,
        scored_tasks,
        tests,
        predictions: predictions.len(),
    })
}

/// The ground truth of a built test split (docs/data.md, "ARC", scoring step 3): every example of
/// a puzzle whose name is an original task id, cropped; in file order, indexed per task.
pub fn test_cases_from_split(
    split: &format::SplitData,
    identifiers: &[String],
) -> Result<Vec<ArcTestCase>> {
    let mut cases = Vec::new();
    let mut per_task: HashMap<String, usize> = HashMap::new();
    for set in &split.sets {
        for p in 0..set.num_puzzles() {
            let id = set.puzzle_identifiers[p];
            let name = usize::try_from(id)
                .ok()
                .and_then(|i| identifiers.get(i))
                .ok_or_else(|| {
                    DataError::field(
                        split.dataset_dir.join(format::IDENTIFIERS_FILE),
                        format!("[{id}]"),
                        "puzzle identifier of the test split is missing from identifiers.json",
                    )
                })?;
            if id == 0 || parse_puzzle_name(name).1.is_some() {
                continue;
            }
            for e in set.puzzle_examples(p) {
                let index = per_task.entry(name.clone()).or_insert(0);
                cases.push(ArcTestCase {
                    task_id: name.clone(),
                    index: *index,
                    input: crop(set.inputs.row(e)),
                    answer: Some(crop(set.labels.row(e))),
                });
                *index += 1;
            }
        }
    }
    Ok(cases)
}

/// The test cases of held-out tasks read from task files (for scoring without a built split).
pub fn test_cases_from_tasks(tasks: &[ArcTask]) -> Vec<ArcTestCase> {
    tasks
        .iter()
        .filter(|t| t.held_out)
        .flat_map(|t| {
            t.test.iter().enumerate().map(|(index, p)| ArcTestCase {
                task_id: t.id.clone(),
                index,
                input: p.input.clone(),
                answer: Some(p.output.clone()),
            })
        })
        .collect()
}

/// #[derive(Serialize)] helper for one submission entry.
#[derive(Serialize)]
struct Attempts<'a> {
    attempt_1: &'a Grid,
    attempt_2: &'a Grid,
}

/// The ARC-Prize submission: `{"<task_id>": [{"attempt_1": grid, "attempt_2": grid}, ...]}`,
/// one entry per test input in index order; attempts are the top two ranked non-empty answers
/// (the first repeated if there is only one, `[[0]]` if there is none).
pub fn submission_json(report: &VoteReport) -> serde_json::Value {
    let fallback = Grid {
        h: 1,
        w: 1,
        cells: vec![0],
    };
    let mut by_task: std::collections::BTreeMap<&str, Vec<&TestRanking>> = Default::default();
    for t in &report.tests {
        by_task.entry(&t.case.task_id).or_default().push(t);
    }
    let mut out = serde_json::Map::new();
    for (task, mut tests) in by_task {
        tests.sort_by_key(|t| t.case.index);
        let entries: Vec<serde_json::Value> = tests
            .iter()
            .map(|t| {
                let mut top = t.ranked.iter().map(|r| &r.grid).filter(|g| g.h > 0);
                let first = top.next().unwrap_or(&fallback);
                let second = top.next().unwrap_or(first);
                serde_json::to_value(Attempts {
                    attempt_1: first,
                    attempt_2: second,
                })
                .unwrap_or(serde_json::Value::Null)
            })
            .collect();
        out.insert(task.to_string(), serde_json::Value::Array(entries));
    }
    serde_json::Value::Object(out)
}

/// Writes [`submission_json`] to `path`.
pub fn write_submission(path: &Path, report: &VoteReport) -> Result<()> {
    let text = serde_json::to_string(&submission_json(report)).map_err(|err| DataError::Json {
        path: path.to_path_buf(),
        err,
    })?;
    std::fs::write(path, text).map_err(|e| DataError::io(path, e))
}

impl fmt::Display for VoteReport {
    /// `pass@1 12.50% | pass@2 15.00% | ...` over the scored tasks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .ks
            .iter()
            .zip(&self.solved)
            .map(|(k, s)| {
                let pct = if self.scored_tasks == 0 {
                    0.0
                } else {
                    100.0 * *s as f64 / self.scored_tasks as f64
                };
                format!("pass@{k} {pct:.2}% ({s}/{})", self.scored_tasks)
            })
            .collect();
        f.write_str(&parts.join(" | "))
    }
}
#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::arc::test_util::g;
    use crate::arc::{encode_grid, puzzle_name, ColorMap};
    use crate::dihedral::Dihedral;

    /// A prediction row for `case` seen through augmentation `aug`, predicting `answer`.
    fn pred(task: &str, input: &Grid, aug: &Augmentation, answer: &Grid, q: f32) -> ArcPrediction {
        let name = if *aug == Augmentation::identity() {
            task.to_string()
        } else {
            puzzle_name(task, Some(aug))
        };
        ArcPrediction {
            puzzle_name: name,
            input: encode_grid(&aug.apply(input), 0, 0).unwrap(),
            predicted: encode_grid(&aug.apply(answer), 0, 0).unwrap(),
            q_halt_logit: q,
        }
    }

    #[test]
    fn vote_ranks_by_count_then_confidence_and_scores_pass_at_k() {
        let (in_a0, in_a1, in_b) = (g(&[&[1, 2]]), g(&[&[3], &[4]]), g(&[&[5, 6], &[7, 8]]));
        let (ans_a0, ans_a1, ans_b) = (g(&[&[2, 1]]), g(&[&[4, 3]]), g(&[&[8]]));
        let wrong = g(&[&[9, 9]]);
        let case = |task: &str, index, input: &Grid, answer: &Grid| ArcTestCase {
            task_id: task.into(),
            index,
            input: input.clone(),
            answer: Some(answer.clone()),
        };
        let cases = vec![
            case("task_a", 0, &in_a0, &ans_a0),
            case("task_a", 1, &in_a1, &ans_a1),
            case("b", 0, &in_b, &ans_b),
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut aug = || Augmentation {
            transform: Dihedral::from_id(rng.random_range(0..8)).unwrap(),
            colors: ColorMap::random(&mut rng),
        };
        let id = Augmentation::identity();
        let preds = vec![
            // task_a / 0: right answer twice (through augmentations), wrong once -> rank 0.
            pred("task_a", &in_a0, &aug(), &ans_a0, 0.0),
            pred("task_a", &in_a0, &aug(), &ans_a0, 0.0),
            pred("task_a", &in_a0, &id, &wrong, 5.0),
            // task_a / 1: right and wrong once each; wrong is more confident -> rank 1.
            pred("task_a", &in_a1, &aug(), &ans_a1, -1.0),
            pred("task_a", &in_a1, &aug(), &wrong, 1.0),
            // b / 0: only wrong answers -> unsolved at every K.
            pred("b", &in_b, &aug(), &wrong, 0.0),
        ];
        let report = vote(&cases, &preds, &PASS_AT_K).unwrap();
        let ranks: Vec<Option<usize>> = report.tests.iter().map(|t| t.correct_rank).collect();
        assert_eq!(ranks, vec![Some(0), Some(1), None]);
        assert_eq!(report.tests[0].ranked[0].votes, 2);
        assert!((report.tests[0].ranked[0].mean_confidence - 0.5).abs() < 1e-12);
        // task_a needs both inputs: solved at K >= 2 only; b never.
        assert_eq!(report.solved, vec![0, 1, 1, 1, 1]);
        assert_eq!(report.scored_tasks, 2);
        assert_eq!(report.pass_at(2), Some(0.5));
        assert_eq!(report.pass_at(1), Some(0.0));
        assert_eq!(report.pass_at(3), None);
        assert!(report
            .to_string()
            .starts_with("pass@1 0.00% (0/2) | pass@2 50.00% (1/2)"));

        // Equal votes and confidence: first seen wins (Python's stable sort).
        let tie = vec![
            pred("b", &in_b, &id, &wrong, 0.0),
            pred("b", &in_b, &id, &ans_b, 0.0),
        ];
        let r = vote(&cases[2..], &tie, &[1, 2]).unwrap();
        assert_eq!(r.tests[0].correct_rank, Some(1));
        assert_eq!(r.solved, vec![0, 1]);

        // Submission: top two per test input, in index order.
        let sub = submission_json(&report);
        assert_eq!(sub["task_a"][0]["attempt_1"], serde_json::json!([[2, 1]]));
        assert_eq!(sub["task_a"][0]["attempt_2"], serde_json::json!([[9, 9]]));
        assert_eq!(sub["task_a"][1]["attempt_1"], serde_json::json!([[9, 9]]));
        assert_eq!(sub["task_a"][1]["attempt_2"], serde_json::json!([[4, 3]]));
        assert_eq!(sub["b"][0]["attempt_2"], serde_json::json!([[9, 9]]));
    }

    #[test]
    fn vote_rejects_unmatched_predictions() {
        let input = g(&[&[1, 2]]);
        let cases = vec![ArcTestCase {
            task_id: "t".into(),
            index: 0,
            input: input.clone(),
            answer: None,
        }];
        let id = Augmentation::identity();
        let stranger = pred("u", &input, &id, &input, 0.0);
        assert!(matches!(
            vote(&cases, &[stranger], &[1]),
            Err(VoteError::UnknownTask { .. })
        ));
        let other_input = pred("t", &g(&[&[3]]), &id, &input, 0.0);
        assert!(matches!(
            vote(&cases, &[other_input], &[1]),
            Err(VoteError::InputMismatch { row: 0, .. })
        ));
        let twice = vec![
            cases[0].clone(),
            ArcTestCase {
                index: 1,
                ..cases[0].clone()
            },
        ];
        assert!(matches!(
            vote(&twice, &[], &[1]),
            Err(VoteError::DuplicateInput { .. })
        ));
        // Unknown answers: ranked but not scored; an empty ranking submits [[0]].
        let r = vote(&cases, &[], &[1]).unwrap();
        assert_eq!(r.scored_tasks, 0);
        assert_eq!(r.pass_at(1), None);
        assert_eq!(
            submission_json(&r)["t"][0]["attempt_1"],
            serde_json::json!([[0]])
        );
    }
}
