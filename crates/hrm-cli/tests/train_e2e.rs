//! End to end, as a user runs it: `hrm data` -> `hrm train` (tiny preset) -> `hrm eval` ->
//! `hrm solve`; exact resume after SIGKILL and after Ctrl-C; one-line errors for bad configs.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use candle_core::Device;
use common::{
    configs, final_tensors, generated_dataset, hrm, json, metrics, ok, one_line_error, send_signal,
    spawn_piped, stopped_step, tiny_sudoku_dataset,
};
use hrm_model::checkpoint::read_safetensors;

/// A small Sudoku dataset from random minimal puzzles (no shared data needed).
fn dataset(dir: &Path) -> PathBuf {
    tiny_sudoku_dataset(dir)
}

fn tiny_args<'a>(data: &'a str, run_dir: &'a str, extra: &[&'a str]) -> Vec<String> {
    common::tiny_train_args(data, run_dir, extra)
}

#[test]
fn data_train_eval_solve() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let run_dir = dir.path().join("run");
    let args = tiny_args(data.to_str().unwrap(), run_dir.to_str().unwrap(), &[]);
    let out = ok(&args);
    assert!(out.contains("finished at step"), "{out}");
    for f in ["config.toml", "metrics.jsonl", "run.json"] {
        assert!(run_dir.join(f).exists(), "{f} missing");
    }
    let m = metrics(&run_dir);
    assert!(m
        .iter()
        .any(|(_, kv)| kv.iter().any(|(k, _)| k == "eval/all/exact_accuracy")));
    assert!(m
        .iter()
        .any(|(_, kv)| kv.iter().any(|(k, _)| k == "train/lm_loss")));
    let (ckpt, _) = final_tensors(&run_dir);
    let ckpt = run_dir.join(format!("{ckpt}.safetensors"));
    let report = ok(&[
        "eval",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    let v = json(&report);
    let acc = v["metrics"]["all"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(v["metrics"]["all"]["count"].as_f64().unwrap(), 12.0);
    assert!(v["sudoku"]["valid_solution_rate"].as_f64().is_some());
    // a run folder stands for its newest checkpoint
    let learned = ok(&[
        "eval",
        "--checkpoint",
        run_dir.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--halting",
        "learned",
        "--halt-max-steps",
        "6",
    ]);
    let v = json(&learned);
    assert_eq!(v["checkpoint"].as_str().unwrap(), ckpt.to_str().unwrap());
    let segs = v["mean_segments"].as_f64().unwrap();
    assert!((1.0..=6.0).contains(&segs), "{segs}");
    let puzzle =
        "4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......";
    let out = ok(&[
        "solve",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "sudoku",
        puzzle,
    ]);
    assert!(
        out.contains("verified:") && out.contains("segments:"),
        "{out}"
    );
    assert_eq!(
        out.lines()
            .take(9)
            .filter(|l| l.split(' ').count() == 9)
            .count(),
        9,
        "{out}"
    );
}

#[test]
fn killed_and_resumed_run_equals_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let d = data.to_str().unwrap();
    // the uninterrupted run
    let a = dir.path().join("a");
    let args = tiny_args(d, a.to_str().unwrap(), &[]);
    ok(&args);
    // a run stopped at step 7 (mid-iteration, with a checkpoint) and resumed
    let b = dir.path().join("b");
    let args = tiny_args(d, b.to_str().unwrap(), &["--stop-after", "7"]);
    let out = ok(&args);
    assert!(out.contains("stopped at step 7"), "{out}");
    ok(&["train", "--resume", b.to_str().unwrap(), "--quiet"]);
    // a run killed with SIGKILL at an arbitrary moment after its first checkpoint, resumed
    let c = dir.path().join("c");
    let args = tiny_args(d, c.to_str().unwrap(), &[]);
    let mut child = hrm()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !c.join("step_10.safetensors").exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // (if the run happened to finish first, resuming it is a no-op)
    ok(&["train", "--resume", c.to_str().unwrap(), "--quiet"]);
    let (ref_step, ref_tensors) = final_tensors(&a);
    let ref_metrics = metrics(&a);
    for run_dir in [&b, &c] {
        let (step, tensors) = final_tensors(run_dir);
        assert_eq!(step, ref_step);
        assert_eq!(tensors.len(), ref_tensors.len());
        for (k, v) in &ref_tensors {
            assert!(
                tensors[k] == *v,
                "{}: tensor {k} differs after resume",
                run_dir.display()
            );
        }
        assert_eq!(
            metrics(run_dir),
            ref_metrics,
            "{}: metrics differ",
            run_dir.display()
        );
    }
}

#[test]
fn ema_run_saves_the_average_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let d = data.to_str().unwrap();
    let ema = ["ema=true", "ema_rate=0.9"];
    let a = dir.path().join("a");
    let args = tiny_args(d, a.to_str().unwrap(), &ema);
    ok(&args);
    let b = dir.path().join("b");
    let mut extra = ema.to_vec();
    extra.extend(["--stop-after", "7"]);
    let args = tiny_args(d, b.to_str().unwrap(), &extra);
    let out = ok(&args);
    assert!(out.contains("stopped at step 7"), "{out}");
    ok(&["train", "--resume", b.to_str().unwrap(), "--quiet"]);
    let (step, averaged) = final_tensors(&a);
    let (step_b, averaged_b) = final_tensors(&b);
    assert_eq!(step, step_b);
    assert_eq!(averaged, averaged_b, "averaged weights differ after resume");
    assert_eq!(metrics(&a), metrics(&b), "metrics differ after resume");
    // the model file holds the average, the state file the raw weights, and they differ
    let raw_of = |run_dir: &Path| -> HashMap<String, Vec<f32>> {
        let f = read_safetensors(
            &run_dir.join(format!("{step}.state.safetensors")),
            &Device::Cpu,
        )
        .unwrap();
        f.tensors
            .into_iter()
            .filter_map(|(k, t)| {
                let name = k.strip_prefix("ema.raw.")?.to_string();
                Some((name, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            })
            .collect()
    };
    let raw = raw_of(&a);
    assert_eq!(raw, raw_of(&b), "raw weights differ after resume");
    // every trained parameter (the model file also holds the puzzle table and the init states)
    assert!(!raw.is_empty() && raw.keys().all(|k| averaged.contains_key(k)));
    let differ = raw.iter().any(|(k, v)| {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        averaged[k] != bytes
    });
    assert!(differ, "the saved model is not the moving average");
    // evaluating the saved model reproduces the run's last evaluation: both use the average
    let report = ok(&[
        "eval",
        "--checkpoint",
        a.to_str().unwrap(),
        "--data",
        d,
        "--max-examples",
        "64",
        "--batch-size",
        "16",
    ]);
    let v = json(&report);
    let text = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    let last_eval: serde_json::Value = text
        .lines()
        .map(json)
        .rfind(|r| r.get("eval/all/accuracy").is_some())
        .expect("an evaluation line");
    for key in ["accuracy", "exact_accuracy", "count"] {
        assert_eq!(
            v["metrics"]["all"][key].as_f64(),
            last_eval[format!("eval/all/{key}")].as_f64(),
            "{key}"
        );
    }
    // resuming with EMA switched off is refused in one line
    one_line_error(
        &["train", "--resume", a.to_str().unwrap(), "ema=false"],
        "ema",
    );
}

/// `hrm solve arc`: a model trained on a two-task ARC dataset (tasks written here, the held-out
/// test pairs in an `evaluation` folder) answers one task's test input from all its variants.
#[test]
fn solve_arc_votes_over_the_task_variants() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = dir.path().join("tasks");
    let eval = tasks.join("evaluation");
    std::fs::create_dir_all(&eval).unwrap();
    let copy = r#"{"train": [{"input": [[1, 2], [3, 4]], "output": [[1, 2], [3, 4]]},
        {"input": [[0, 5, 5]], "output": [[0, 5, 5]]}],
        "test": [{"input": [[6, 7], [8, 9]], "output": [[6, 7], [8, 9]]}]}"#;
    let flip = r#"{"train": [{"input": [[1, 2]], "output": [[2, 1]]},
        {"input": [[3, 0, 4]], "output": [[4, 0, 3]]}],
        "test": [{"input": [[5, 6]], "output": [[6, 5]]}, {"input": [[7, 8, 9]], "output": [[9, 8, 7]]}]}"#;
    std::fs::write(eval.join("copy.json"), copy).unwrap();
    std::fs::write(eval.join("flip.json"), flip).unwrap();
    let data = dir.path().join("data");
    ok(&[
        "data",
        "arc",
        "--dataset-dirs",
        tasks.to_str().unwrap(),
        "--output-dir",
        data.to_str().unwrap(),
        "--num-aug",
        "3",
    ]);
    let run_dir = dir.path().join("run");
    let tiny = configs().join("tiny.toml");
    ok(&[
        "train",
        tiny.to_str().unwrap(),
        &format!("data_path={}", data.display()),
        "epochs=2",
        "eval_interval=2",
        "--run-dir",
        run_dir.to_str().unwrap(),
        "--quiet",
    ]);
    let (r, d) = (run_dir.to_str().unwrap(), data.to_str().unwrap());
    let flip_task = eval.join("flip.json");
    let f = flip_task.to_str().unwrap();
    let out = ok(&[
        "solve",
        "--checkpoint",
        r,
        "arc",
        f,
        "--data",
        d,
        "--top",
        "100",
    ]);
    // the original and three augmentations, for each of the two test inputs
    assert!(
        out.contains("task flip: 2 test input(s), 4 variant(s) each"),
        "{out}"
    );
    for i in 0..2 {
        assert!(out.contains(&format!("test input {i} (")), "{out}");
    }
    let votes: usize = out
        .lines()
        .filter(|l| l.starts_with("answer "))
        .map(|l| {
            let v = l.split(": ").nth(1).unwrap().split(' ').next().unwrap();
            v.parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(
        votes, 8,
        "every variant of both test inputs votes once:\n{out}"
    );
    assert_eq!(out.matches("correct: ").count(), 2, "{out}");
    assert!(out.contains("solved: pass@1 "), "{out}");
    // --max-variants limits the rows
    let out = ok(&[
        "solve",
        "--checkpoint",
        r,
        "arc",
        f,
        "--data",
        d,
        "--max-variants",
        "2",
    ]);
    assert!(out.contains("2 variant(s) each"), "{out}");
    // a task file without the expected outputs (as in hidden test sets): answers, no score
    let hidden = dir.path().join("hidden.json");
    std::fs::write(
        &hidden,
        r#"{"name": "flip", "train": [], "test": [{"input": [[5, 6]]}]}"#,
    )
    .unwrap();
    let out = ok(&[
        "solve",
        "--checkpoint",
        r,
        "arc",
        hidden.to_str().unwrap(),
        "--data",
        d,
    ]);
    assert!(out.contains("task flip: 1 test input(s)"), "{out}");
    assert!(out.contains("correct: unknown"), "{out}");
    assert!(out.contains("solved: unknown"), "{out}");
    // one-line errors: no dataset, a task the model never saw, no checkpoint
    one_line_error(&["solve", "--checkpoint", r, "arc", f], "--data");
    let other = dir.path().join("other.json");
    std::fs::write(&other, copy).unwrap();
    one_line_error(
        &[
            "solve",
            "--checkpoint",
            r,
            "arc",
            other.to_str().unwrap(),
            "--data",
            d,
        ],
        "task `other` is not in",
    );
    one_line_error(&["solve", "arc", f, "--data", d], "--checkpoint");
}

#[test]
fn ctrl_c_writes_a_checkpoint_and_exits_130() {
    // SIGINT, as Ctrl-C sends
    interrupt_writes_a_checkpoint("-INT");
}

#[test]
fn sigterm_writes_a_checkpoint_and_exits_143() {
    // SIGTERM, as `timeout`, `kill` and cluster schedulers send
    interrupt_writes_a_checkpoint("-TERM");
}

fn interrupt_writes_a_checkpoint(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let r = dir.path().join("r");
    let args = tiny_args(
        data.to_str().unwrap(),
        r.to_str().unwrap(),
        &["epochs=40", "eval_interval=20"],
    );
    let child = spawn_piped(&args);
    let t0 = Instant::now();
    while !r.join("step_5.safetensors").exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    send_signal(&child, signal);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // an interrupted run exits as shells report a signal: 128 + 2 (SIGINT), 128 + 15 (SIGTERM)
    let want = if signal == "-INT" { 130 } else { 143 };
    assert_eq!(
        out.status.code(),
        Some(want),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let step = stopped_step(&stdout);
    assert!(r.join(format!("step_{step}.safetensors")).exists());
    assert!(r.join(format!("step_{step}.state.safetensors")).exists());
}

#[test]
fn bad_configs_give_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let tiny = configs().join("tiny.toml");
    let (t, d) = (
        tiny.to_str().unwrap(),
        format!("data_path={}", data.display()),
    );
    let rd = dir.path().join("x");
    let rd = rd.to_str().unwrap();
    one_line_error(&["train", t, &d, "lr_typo=1", "--run-dir", rd], "lr_typo");
    one_line_error(&["train", t, &d, "epochs=abc", "--run-dir", rd], "epochs");
    one_line_error(
        &["train", t, &d, "arch.num_heads=3", "--run-dir", rd],
        "num_heads",
    );
    one_line_error(
        &["train", t, "data_path=/nonexistent/data", "--run-dir", rd],
        "/nonexistent/data",
    );
    // a checkpoint evaluated on data of another shape
    let run_dir = dir.path().join("run");
    let args = tiny_args(
        data.to_str().unwrap(),
        run_dir.to_str().unwrap(),
        &["--stop-after", "1"],
    );
    ok(&args);
    let ckpt = run_dir.join("step_1.safetensors");
    let maze = [
        "--size",
        "6",
        "--min-path",
        "4",
        "--train-count",
        "8",
        "--test-count",
        "4",
        "--seed",
        "1",
    ];
    let (_, maze_data) = generated_dataset(&dir.path().join("maze"), "maze", &maze, &[]);
    one_line_error(
        &[
            "eval",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--data",
            maze_data.to_str().unwrap(),
        ],
        "seq_len",
    );
    // resuming with a changed architecture
    one_line_error(
        &[
            "train",
            "--resume",
            run_dir.to_str().unwrap(),
            "arch.hidden_size=128",
        ],
        "hidden_size",
    );
}
