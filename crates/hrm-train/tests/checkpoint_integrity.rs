//! Checkpoint integrity of tiny training runs: nothing non-finite is ever checkpointed (the run
//! stops naming the bad tensor and the last good checkpoint), a state file of another run is
//! refused on resume (older states without an identity still load), a kill between an
//! evaluation and its checkpoint does not log that evaluation twice, and resume overrides are
//! recorded in the run's `config.toml`.

mod common;

use std::path::Path;

use candle_core::Device;
use hrm_model::checkpoint::{read_safetensors, safetensors_bytes};
use hrm_train::config::TrainConfig;
use hrm_train::rundir::{Checkpoint, RunDir};
use hrm_train::sinks::{read_metrics, METRICS_FILE};
use hrm_train::trainer::{resume, train};

use common::{dataset, quiet, tiny_run_config};

/// Every tensor of every checkpoint file (model and state) in `run_dir` is finite.
fn assert_checkpoints_finite(run_dir: &Path) {
    for c in RunDir::open(run_dir).unwrap().list_checkpoints().unwrap() {
        let state = hrm_train::state::state_path(&c.path);
        for path in [&c.path, &state] {
            let f = read_safetensors(path, &Device::Cpu).unwrap();
            for (k, t) in &f.tensors {
                if !t.dtype().is_float() {
                    continue;
                }
                let v = t
                    .to_dtype(candle_core::DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert!(
                    v.iter().all(|x| x.is_finite()),
                    "{}: `{k}` is not finite",
                    path.display()
                );
            }
        }
    }
}

/// (step, metrics) of every record of a run's `metrics.jsonl` (the clock left out).
fn records(run_dir: &Path) -> Vec<(u64, Vec<(String, Option<f64>)>)> {
    read_metrics(&run_dir.join(METRICS_FILE))
        .unwrap()
        .into_iter()
        .map(|r| (r.step, r.values.into_iter().collect()))
        .collect()
}

/// Train `cfg` in `run_dir` until it fails: the one-line error, and the newest checkpoint,
/// which is the last good one (every checkpoint is finite) and which the error names.
fn diverge(cfg: TrainConfig, run_dir: &Path) -> (String, Checkpoint) {
    let err = format!("{:#}", train(cfg, &quiet(run_dir, None)).unwrap_err());
    assert!(!err.contains('\n'), "{err}");
    let latest = RunDir::open(run_dir)
        .unwrap()
        .latest_checkpoint()
        .unwrap()
        .expect("a checkpoint before the divergence");
    let named = format!("the last good checkpoint is {}", latest.path.display());
    assert!(err.contains(&named), "{err}");
    assert_checkpoints_finite(run_dir);
    (err, latest)
}

#[test]
fn a_diverging_run_stops_before_checkpointing_non_finite_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let cfg = tiny_run_config(&data, &["lr=100", "checkpoint_interval=1", "epochs=40"]);
    let run_dir = tmp.path().join("run");
    let (err, latest) = diverge(cfg, &run_dir);
    // (the moments overflow before the loss does)
    assert!(
        err.contains(
            "` holds a NaN or infinite value — stopping the run without writing its \
                      checkpoint; "
        ),
        "{err}"
    );
    // the step that failed wrote nothing (neither of its files)
    let failed: u64 = err["step ".len()..err.find(':').unwrap()].parse().unwrap();
    assert!(failed > latest.step, "{err}");
    assert!(!run_dir.join(format!("step_{failed}.safetensors")).exists());
    assert!(!run_dir
        .join(format!("step_{failed}.state.safetensors"))
        .exists());
}

#[test]
fn a_non_finite_evaluation_stops_the_run_before_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    // an evaluation (and a checkpoint) every epoch, no checkpoints in between
    let mut cfg = tiny_run_config(&data, &["lr=100", "epochs=40", "eval_interval=1"]);
    cfg.checkpoint_interval = None;
    let run_dir = tmp.path().join("run");
    let (err, latest) = diverge(cfg, &run_dir);
    assert!(err.contains(": `eval/all/"), "{err}");
    assert!(err.contains("is NaN — stopping the run"), "{err}");
    // the failed evaluation is neither logged nor checkpointed
    let last = records(&run_dir).last().unwrap().0;
    assert!(latest.step < last, "{latest:?} {last}");
    assert!(records(&run_dir)
        .iter()
        .all(|(_, m)| m.iter().all(|(_, v)| v.is_some())));
}

#[test]
fn a_state_file_of_another_run_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    train(tiny_run_config(&data, &["seed=1"]), &quiet(&a, Some(3))).unwrap();
    train(tiny_run_config(&data, &["seed=2"]), &quiet(&b, Some(3))).unwrap();
    let own = a.join("step_3.state.safetensors");
    let kept = std::fs::read(&own).unwrap();
    std::fs::copy(b.join("step_3.state.safetensors"), &own).unwrap();
    let err = format!("{:#}", resume(&a, &[], &quiet(&a, None)).unwrap_err());
    assert!(!err.contains('\n'), "{err}");
    assert!(
        err.contains("step_3.state.safetensors belongs to another run (config hash "),
        "{err}"
    );
    assert!(
        err.contains(", seed 2) than this folder's config (hash "),
        "{err}"
    );
    assert!(err.contains(", seed 1)"), "{err}");

    // a state written before the identity was recorded (none in its metadata) still loads
    std::fs::write(&own, &kept).unwrap();
    let f = read_safetensors(&own, &Device::Cpu).unwrap();
    let mut state: serde_json::Value = serde_json::from_str(&f.metadata["state"]).unwrap();
    assert!(state.as_object_mut().unwrap().remove("identity").is_some());
    let mut meta = f.metadata.clone();
    meta.insert("state".into(), state.to_string());
    let tensors: Vec<_> = f.tensors.into_iter().collect();
    std::fs::write(&own, safetensors_bytes(&tensors, &meta).unwrap()).unwrap();
    let summary = resume(&a, &[], &quiet(&a, None)).unwrap();
    assert!(!summary.interrupted && summary.step > 3);
}

#[test]
fn a_kill_between_an_evaluation_and_its_checkpoint_logs_the_evaluation_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let cfg = tiny_run_config(&data, &[]);
    let full = tmp.path().join("full");
    train(cfg.clone(), &quiet(&full, None)).unwrap();
    let reference = records(&full);
    // the step of the first evaluation (the end of the first iteration)
    let n = reference
        .iter()
        .find(|(_, m)| m.iter().any(|(k, _)| k.starts_with("eval/")))
        .unwrap()
        .0;
    let eval_lines: String = std::fs::read_to_string(full.join(METRICS_FILE))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(&format!("{{\"step\": {n},")) && l.contains("\"eval/"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!eval_lines.is_empty());
    // killed after the evaluation of step n was logged: before its checkpoint's state file was
    // renamed (`before`), or between the state file's rename and the model file's (`between`)
    for case in ["before", "between"] {
        let run = tmp.path().join(case);
        // the checkpoint of step n written before the evaluation (a stop at the iteration's end)
        train(cfg.clone(), &quiet(&run, Some(n))).unwrap();
        let log = run.join(METRICS_FILE);
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str(&eval_lines);
        std::fs::write(&log, text).unwrap();
        if case == "between" {
            let state = format!("step_{n}.state.safetensors");
            std::fs::copy(full.join(&state), run.join(&state)).unwrap();
        }
        resume(&run, &[], &quiet(&run, None)).unwrap();
        let got = records(&run);
        let evals_at = |recs: &[(u64, Vec<(String, Option<f64>)>)], s: u64| {
            recs.iter()
                .filter(|(step, m)| *step == s && m.iter().any(|(k, _)| k.starts_with("eval/")))
                .count()
        };
        assert_eq!(evals_at(&got, n), 1, "{case}: eval records at step {n}");
        assert_eq!(
            got, reference,
            "{case}: metrics differ from the uninterrupted run"
        );
    }
}

#[test]
fn resume_overrides_are_recorded_in_the_run_config() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let run = tmp.path().join("run");
    let cfg = tiny_run_config(&data, &["checkpoint_interval=1"]);
    assert_eq!(cfg.checkpoint_keep, None);
    train(cfg, &quiet(&run, Some(2))).unwrap();
    let overrides = ["checkpoint_keep=1".to_string()];
    resume(&run, &overrides, &quiet(&run, Some(4))).unwrap();
    let dir = RunDir::open(&run).unwrap();
    assert_eq!(dir.load_config().unwrap().checkpoint_keep, Some(1));
    // a later plain resume keeps the override: one checkpoint is left at the end
    let summary = resume(&run, &[], &quiet(&run, None)).unwrap();
    assert!(!summary.interrupted);
    assert_eq!(dir.load_config().unwrap().checkpoint_keep, Some(1));
    let steps: Vec<u64> = dir
        .list_checkpoints()
        .unwrap()
        .iter()
        .map(|c| c.step)
        .collect();
    assert_eq!(steps, [summary.step]);
}
