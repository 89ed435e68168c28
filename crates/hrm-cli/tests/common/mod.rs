//! Shared helpers of the `hrm` command-line tests: running the built binary, the shared-data
//! folder and the repository's folders, building small datasets, and one-line error checks.
#![allow(dead_code)] // each test file uses some of them

use std::ffi::OsStr;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The built `hrm` binary, as a command to add arguments to.
pub fn hrm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hrm"))
}

/// `hrm` run in `cwd`, without `HRM_MODELS` (so the shipped models are found as a user's
/// command finds them).
pub fn hrm_in(cwd: &Path) -> Command {
    let mut c = hrm();
    c.current_dir(cwd).env_remove("HRM_MODELS");
    c
}

/// Run a command to its end.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().expect("run hrm")
}

/// `hrm ARGS` with plain progress lines on stderr (`HRM_PROGRESS=plain`).
pub fn plain<S: AsRef<OsStr>>(args: &[S]) -> Output {
    output(hrm().args(args).env("HRM_PROGRESS", "plain"))
}

/// A run's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A run's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code (-1 when killed by a signal), stdout and stderr of a finished run.
pub fn outcome(o: &Output) -> (i32, String, String) {
    (o.status.code().unwrap_or(-1), stdout(o), stderr(o))
}

/// `hrm ARGS`: exit code, stdout and stderr.
pub fn run<S: AsRef<OsStr>>(args: &[S]) -> (i32, String, String) {
    outcome(&output(hrm().args(args)))
}

/// Run `cmd`, which must succeed; its stdout.
pub fn succeed(cmd: &mut Command, args: &[impl Debug]) -> String {
    let (code, out, err) = outcome(&output(cmd));
    assert_eq!(code, 0, "hrm {args:?} failed:\n{out}\n{err}");
    out
}

/// `hrm ARGS`, which must succeed; its stdout.
pub fn ok<S: AsRef<OsStr> + Debug>(args: &[S]) -> String {
    succeed(hrm().args(args), args)
}

/// `hrm ARGS` in `cwd` (see [`hrm_in`]), which must succeed; its stdout.
pub fn ok_in<S: AsRef<OsStr> + Debug>(cwd: &Path, args: &[S]) -> String {
    succeed(hrm_in(cwd).args(args), args)
}

/// Parse a command's JSON output.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// `hrm ARGS` must fail with exactly one non-empty stderr line, containing `needle`, and no
/// panic; returns that line.
pub fn one_line_error<S: AsRef<OsStr>>(args: &[S], needle: &str) -> String {
    let (code, out, err) = run(args);
    assert_ne!(code, 0, "expected failure:\n{out}\n{err}");
    assert!(
        !err.contains("panicked"),
        "panic instead of an error:\n{err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{err}");
    assert!(lines[0].contains(needle), "{err}");
    lines[0].to_string()
}

/// A folder of the repository (`configs`, `models`, ...), from this crate's manifest.
pub fn repo_dir(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(name)
}

/// The preset configs (`configs/`).
pub fn configs() -> PathBuf {
    repo_dir("configs")
}

/// The shipped models (`models/`).
pub fn models() -> PathBuf {
    repo_dir("models")
}

/// `sub` of the shared-data folder (see [`hrm_testkit::shared`]).
#[allow(unused_imports)] // not every test file reads the shared folder
pub use hrm_testkit::shared;

/// The shared-data folder itself (see [`shared`]).
pub fn shared_dir() -> Option<PathBuf> {
    shared("")
}

/// A path as a `&str` argument.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The entries of a folder, sorted.
#[allow(unused_imports)] // not every test file lists folders
pub use hrm_testkit::entries;

/// `hrm data <kind> <input flag> INPUT --output-dir OUTPUT EXTRA` with plain progress lines (the
/// input flag is `--dataset-dirs` for `arc`, `--input-dir` otherwise).
pub fn build(kind: &str, input: &Path, output: &Path, extra: &[&str]) -> Output {
    let flag = if kind == "arc" {
        "--dataset-dirs"
    } else {
        "--input-dir"
    };
    let mut args = vec!["data", kind, flag, p(input), "--output-dir", p(output)];
    args.extend_from_slice(extra);
    plain(&args)
}

/// In `dir` (created if needed): `hrm data <kind>-generate --output-dir DIR/csv GENERATE_ARGS`, then `hrm data
/// <kind> --input-dir DIR/csv --output-dir DIR/data BUILD_ARGS`, both run in `dir` and required
/// to succeed; returns (csv folder, dataset folder).
pub fn generated_dataset(
    dir: &Path,
    kind: &str,
    generate_args: &[&str],
    build_args: &[&str],
) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let (csv, data) = (dir.join("csv"), dir.join("data"));
    let generate = format!("{kind}-generate");
    let mut args = vec!["data", &generate, "--output-dir", p(&csv)];
    args.extend_from_slice(generate_args);
    ok_in(dir, &args);
    let mut args = vec![
        "data",
        kind,
        "--input-dir",
        p(&csv),
        "--output-dir",
        p(&data),
    ];
    args.extend_from_slice(build_args);
    ok_in(dir, &args);
    (csv, data)
}

/// `hrm train configs/tiny.toml` on `data` into `run_dir` (4 epochs, evaluations every 2, a
/// checkpoint every 5 steps, quiet), then `extra`.
#[allow(dead_code)] // not every test file trains
pub fn tiny_train_args(data: &str, run_dir: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "train".into(),
        configs().join("tiny.toml").display().to_string(),
        format!("data_path={data}"),
        "epochs=4".into(),
        "eval_interval=2".into(),
        "checkpoint_interval=5".into(),
        "--run-dir".into(),
        run_dir.into(),
        "--quiet".into(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// A small Sudoku dataset from random minimal puzzles in `dir` (no shared data needed).
#[allow(dead_code)] // not every test file trains
pub fn tiny_sudoku_dataset(dir: &Path) -> PathBuf {
    let generate = ["--from-scratch", "120", "--seed", "3"];
    generated_dataset(dir, "sudoku", &generate, &["--num-aug", "2"]).1
}

/// `hrm ARGS` started with its stdout and stderr captured.
#[allow(dead_code)] // not every test file signals a process
pub fn spawn_piped<S: AsRef<OsStr>>(args: &[S]) -> Child {
    hrm()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `kill SIG PID` (`-INT`, `-TERM`, ...) for a child, required to succeed.
#[allow(dead_code)] // not every test file signals a process
pub fn send_signal(child: &Child, sig: &str) {
    let rc = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(rc.success());
}

/// The step of `hrm train`'s summary line `stopped at step N in DIR` in `stdout`.
#[allow(dead_code)] // not every test file stops a run
pub fn stopped_step(stdout: &str) -> u64 {
    assert!(stdout.contains("stopped at step"), "{stdout}");
    stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("stopped at step ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap()
}

/// metrics.jsonl as (step -> all values but `time`), checked to be one line per step and key set.
pub fn metrics(run_dir: &Path) -> Vec<(u64, Vec<(String, String)>)> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let v = json(l);
            let step = v["step"].as_u64().unwrap();
            let mut kv: Vec<(String, String)> = v
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| *k != "time")
                .map(|(k, x)| (k.clone(), x.to_string()))
                .collect();
            kv.sort();
            (step, kv)
        })
        .collect()
}

/// The newest checkpoint of a run folder: `step_N` and every tensor's f32 bytes.
pub fn final_tensors(run_dir: &Path) -> (String, std::collections::HashMap<String, Vec<u8>>) {
    let ckpt = hrm_train::rundir::RunDir::open(run_dir)
        .unwrap()
        .latest_checkpoint()
        .unwrap()
        .expect("a checkpoint");
    (format!("step_{}", ckpt.step), tensor_bytes(&ckpt.path))
}

/// Every tensor of a safetensors file (keys normalised) as its f32 bytes.
pub fn tensor_bytes(path: &Path) -> std::collections::HashMap<String, Vec<u8>> {
    let f = hrm_model::checkpoint::read_safetensors(path, &candle_core::Device::Cpu).unwrap();
    f.tensors
        .into_iter()
        .map(|(k, t)| {
            let t = t.to_dtype(candle_core::DType::F32).unwrap();
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (k, v.iter().flat_map(|x| x.to_le_bytes()).collect())
        })
        .collect()
}

/// Train `args(run, extra)` into `a` uninterrupted and into `b` stopped after step 7 and resumed:
/// the same newest checkpoint, bit for bit, and the same metrics. Returns `a`'s tensors.
#[allow(dead_code)] // not every test file trains
pub fn trains_and_resumes_exactly(
    args: &dyn Fn(&Path, &[&str]) -> Vec<String>,
    a: &Path,
    b: &Path,
    what: &str,
) -> std::collections::HashMap<String, Vec<u8>> {
    ok(&args(a, &[]));
    let out = ok(&args(b, &["--stop-after", "7"]));
    assert!(out.contains("stopped at step 7"), "{what}: {out}");
    ok(&["train", "--resume", b.to_str().unwrap(), "--quiet"]);
    let ((sa, ta), (sb, tb)) = (final_tensors(a), final_tensors(b));
    assert_eq!(sa, sb, "{what}");
    assert!(
        !ta.is_empty() && ta == tb,
        "{what}: weights differ after resume"
    );
    assert_eq!(
        metrics(a),
        metrics(b),
        "{what}: metrics differ after resume"
    );
    ta
}

/// `hrm eval` of the run `run` on `data` counts `count` examples, and `hrm solve` verifies a
/// Sudoku with it.
#[allow(dead_code)] // not every test file trains
pub fn evaluates_and_solves(run: &Path, data: &str, count: f64, what: &str) {
    let report = ok(&[
        "eval",
        "--checkpoint",
        run.to_str().unwrap(),
        "--data",
        data,
    ]);
    let v = json(&report);
    assert_eq!(v["metrics"]["all"]["count"].as_f64(), Some(count), "{what}");
    let puzzle =
        "4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......";
    let out = ok(&[
        "solve",
        "--checkpoint",
        run.to_str().unwrap(),
        "sudoku",
        puzzle,
    ]);
    assert!(out.contains("verified:"), "{what}: {out}");
}
