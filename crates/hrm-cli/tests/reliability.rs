//! Reliability of the run lifecycle, as a user meets it: one process per run folder (the lock),
//! a run killed before its first checkpoint restarts, stale temporary files and staging folders
//! are removed, interrupts exit with the shell's codes (130 / 143).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    configs, entries, hrm, p, send_signal, spawn_piped, stopped_step, tiny_sudoku_dataset,
};

/// A small Sudoku dataset from random minimal puzzles (no shared data needed).
fn dataset(dir: &Path) -> PathBuf {
    tiny_sudoku_dataset(dir)
}

fn train_args(data: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "train".into(),
        configs().join("tiny.toml").display().to_string(),
        format!("data_path={}", p(data)),
        "epochs=4".into(),
        "eval_interval=2".into(),
        "--quiet".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn output(args: &[String]) -> (Option<i32>, String, String) {
    let o = hrm().args(args).output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn wait_for(path: &Path) {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Steps of metrics.jsonl, in file order.
fn metric_steps(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| common::json(l)["step"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_run_folder_is_locked_while_its_run_lives() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let r = dir.path().join("r");
    let mut args = train_args(&data, &["epochs=400", "eval_interval=200"]);
    args.extend(["--run-dir".into(), p(&r).into()]);
    let child = spawn_piped(&args);
    wait_for(&r.join("metrics.jsonl"));
    let want = format!(
        "run folder {} is in use by another hrm process (pid {}); wait for it or use another \
         --run-dir",
        r.display(),
        child.id()
    );
    // a second fresh run and a resume of the same folder are both refused, nothing touched
    let (code, _, err) = output(&args);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&want), "{err}");
    let resume: Vec<String> = ["train", "--resume", p(&r), "--quiet"]
        .map(String::from)
        .into();
    let (code, _, err) = output(&resume);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&want), "{err}");
    // SIGTERM: checkpoint, summary line, exit 143; then the folder is free for a resume
    send_signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(143), "{stdout}");
    let step = stopped_step(&stdout);
    let mut resume = resume;
    resume.extend(["--stop-after".into(), (step + 1).to_string()]);
    let (code, stdout, err) = output(&resume);
    // --stop-after is a normal finish: exit 0
    assert_eq!(code, Some(0), "{stdout}{err}");
    assert!(r.join(format!("step_{}.safetensors", step + 1)).exists());
}

#[test]
fn a_run_killed_before_its_first_checkpoint_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let r = dir.path().join("r");
    let mut args = train_args(&data, &["--stop-after", "3"]);
    args.extend(["--run-dir".into(), p(&r).into()]);
    let kill_before_first_checkpoint = || {
        for e in entries(&r) {
            if e.starts_with("step_") {
                std::fs::remove_file(r.join(e)).unwrap();
            }
        }
        assert!(r.join("config.toml").exists() && r.join("metrics.jsonl").exists());
    };
    let (code, _, err) = output(&args);
    assert_eq!(code, Some(0), "{err}");
    kill_before_first_checkpoint();
    // stale temp files of a dead pid go at the next start; a live pid's (init's) stay
    let dead = format!(".step_3.safetensors.tmp-{}", u32::MAX - 1);
    let old_style = format!("step_3.state.safetensors.tmp-{}", u32::MAX - 1);
    let live = ".metrics.jsonl.tmp-1".to_string();
    for n in [&dead, &old_style, &live] {
        std::fs::write(r.join(n), b"partial").unwrap();
    }

    // --resume starts it from step 0 with its recorded config, and says so
    let resume: Vec<String> = ["train", "--resume", p(&r), "--stop-after", "2"]
        .map(String::from)
        .into();
    let (code, stdout, err) = output(&resume);
    assert_eq!(code, Some(0), "{stdout}{err}");
    assert!(
        stdout.contains("no checkpoint yet") && stdout.contains("from step 0"),
        "{stdout}"
    );
    let steps = metric_steps(&r);
    assert_eq!(
        steps.iter().max(),
        Some(&2),
        "partial metrics truncated: {steps:?}"
    );
    assert_eq!(steps.iter().filter(|&&s| s == 1).count(), 1, "{steps:?}");
    assert!(r.join("step_2.safetensors").exists());
    let names = entries(&r);
    assert!(
        !names.contains(&dead) && !names.contains(&old_style),
        "{names:?}"
    );
    assert!(names.contains(&live), "{names:?}");

    // a fresh `hrm train --run-dir` on such a folder also restarts cleanly
    kill_before_first_checkpoint();
    let (code, _, err) = output(&args);
    assert_eq!(code, Some(0), "{err}");
    let steps = metric_steps(&r);
    assert_eq!(steps.iter().max(), Some(&3), "{steps:?}");
    assert_eq!(steps.iter().filter(|&&s| s == 1).count(), 1, "{steps:?}");
    // a folder with a checkpoint is still refused
    let (code, _, err) = output(&args);
    assert_eq!(code, Some(1));
    assert!(err.contains("already holds a run (step_"), "{err}");
}

#[test]
fn an_interrupt_before_the_loop_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dataset(dir.path());
    let r = dir.path().join("r");
    let cfg = hrm_train::config::TrainConfig::load(
        &configs().join("tiny.toml"),
        &[format!("data_path={}", p(&data))],
    )
    .unwrap();
    let opts = hrm_train::trainer::TrainOptions {
        run_dir: Some(r.clone()),
        stop: Arc::new(AtomicBool::new(true)),
        quiet: true,
        ..Default::default()
    };
    let e = hrm_train::trainer::train(cfg, &opts).unwrap_err();
    assert!(e.is::<hrm_train::trainer::Interrupted>(), "{e:#}");
    assert!(!r.exists() || entries(&r) == [".lock"], "{:?}", entries(&r));
}

#[test]
fn an_interrupted_dataset_build_leaves_no_staging_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("csv");
    // a stale staging folder of a dead process goes at the next build
    let stale = dir.path().join(format!("csv.tmp-{}", u32::MAX - 1));
    std::fs::create_dir_all(&stale).unwrap();
    for sig in ["-INT", "-TERM"] {
        let child = hrm()
            .args(["data", "sudoku-generate", "--output-dir", p(&out)])
            .args(["--from-scratch", "1000000", "--seed", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let staging = dir.path().join(format!("csv.tmp-{}", child.id()));
        wait_for(&staging);
        assert!(
            !stale.exists(),
            "stale staging folder of a dead pid removed"
        );
        send_signal(&child, sig);
        let o = child.wait_with_output().unwrap();
        let want = if sig == "-INT" { 130 } else { 143 };
        assert_eq!(
            o.status.code(),
            Some(want),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!staging.exists(), "{sig}: staging folder removed");
        assert!(!out.exists());
    }
}

#[test]
fn eval_batch_size_zero_names_the_flag() {
    let (code, _, err) = output(
        &[
            "eval",
            "--checkpoint",
            "missing.safetensors",
            "--data",
            "missing",
            "--batch-size",
            "0",
        ]
        .map(String::from),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--batch-size must be at least 1"), "{err}");
    assert!(!err.contains("global_batch_size"), "{err}");
}

#[test]
fn an_io_error_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let line = common::one_line_error(&["train", p(&missing)], "missing.toml");
    assert_eq!(
        line,
        format!(
            "error: cannot read config file {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    let ckpt = dir.path().join("missing.safetensors");
    let line = common::one_line_error(
        &["eval", "--checkpoint", p(&ckpt), "--data", p(dir.path())],
        "missing.safetensors",
    );
    assert_eq!(line.matches("(os error 2)").count(), 1, "{line}");
}
