//! Kill anywhere, resume, and nothing differs: a tiny run is stopped dead (no destructors, no
//! clean-up, as `kill -9` leaves it) at every crash point it passes, i.e. after every change of
//! its files on disk: each atomic write's temporary file and rename (config, run record,
//! checkpoint state and model files), each metrics record, each file a prune removes. Each such
//! run is resumed (and the first resume is itself killed at the same point where it gets that
//! far); the run then ends bit-identical to an uninterrupted one, with no stray files. A full disk
//! (a size-limited file, `ulimit -f`) fails a checkpoint with a one-line error, leaves no
//! temporary file, and loses nothing already written.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use common::{configs, entries, final_tensors, hrm, metrics, outcome, p, tiny_sudoku_dataset};

/// The run every case repeats: 12 steps, a checkpoint after each of its 2 evaluations, the older
/// one pruned (`checkpoint_keep=1`), few metrics records.
fn train_args(data: &Path, run: &Path) -> Vec<String> {
    [
        "train",
        &configs().join("tiny.toml").display().to_string(),
        &format!("data_path={}", p(data)),
        "epochs=2",
        "eval_interval=1",
        "log_interval=1000",
        "checkpoint_keep=1",
        "--run-dir",
        p(run),
        "--quiet",
    ]
    .map(String::from)
    .into()
}

fn resume_args(run: &Path) -> Vec<String> {
    ["train", "--resume", p(run), "--quiet"]
        .map(String::from)
        .into()
}

/// `hrm ARGS`, aborted at its `crash`-th crash point when given.
fn run(args: &[String], crash: Option<usize>) -> Output {
    let mut cmd = hrm();
    cmd.args(args).env_remove("HRM_CRASH_POINT");
    if let Some(n) = crash {
        cmd.env("HRM_CRASH_POINT", n.to_string());
    }
    cmd.output().unwrap()
}

/// Whether `o` is a run stopped at a crash point (SIGABRT, and the point named on stderr).
fn crashed(o: &Output, n: usize) -> bool {
    if o.status.success() {
        return false;
    }
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.signal(), Some(6), "not a crash-point abort: {err}");
    assert!(
        err.contains(&format!("HRM_CRASH_POINT={n}: aborting after ")),
        "{err}"
    );
    true
}

/// A run folder's file names, the TensorBoard event files (one per process, named by time and
/// pid) counted as one.
fn files(run: &Path) -> BTreeSet<String> {
    entries(run)
        .into_iter()
        .map(|n| {
            if n.starts_with("events.out.tfevents.") {
                "events.out.tfevents.*".to_string()
            } else {
                n
            }
        })
        .collect()
}

/// A safetensors file's content, whatever the order its header was written in: the metadata and
/// every tensor's dtype, shape and bytes by name.
type Content = (
    serde_json::Value,
    BTreeMap<String, (serde_json::Value, Vec<u8>)>,
);

fn safetensors_content(path: &Path) -> Content {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    let metadata = header.remove("__metadata__").unwrap_or_default();
    let tensors = header
        .into_iter()
        .map(|(name, mut info)| {
            let offsets = info["data_offsets"].take();
            let (a, b) = (offsets[0].as_u64().unwrap(), offsets[1].as_u64().unwrap());
            (name, (info, data[a as usize..b as usize].to_vec()))
        })
        .collect();
    (metadata, tensors)
}

/// What the uninterrupted run leaves, to compare every recovered run with.
struct Reference {
    step: String,
    tensors: std::collections::HashMap<String, Vec<u8>>,
    state: Content,
    metrics: Vec<(u64, Vec<(String, String)>)>,
    files: BTreeSet<String>,
}

impl Reference {
    fn of(run: &Path) -> Reference {
        let (step, tensors) = final_tensors(run);
        Reference {
            state: safetensors_content(&run.join(format!("{step}.state.safetensors"))),
            step,
            tensors,
            metrics: metrics(run),
            files: files(run),
        }
    }

    /// Panics unless `run` ended exactly as the reference did.
    fn check(&self, run: &Path, what: &str) {
        let got = Reference::of(run);
        assert_eq!(got.files, self.files, "{what}: other files");
        assert_eq!(got.step, self.step, "{what}: other final step");
        assert!(got.tensors == self.tensors, "{what}: weights differ");
        assert!(
            got.state == self.state,
            "{what}: optimizer/RNG/carry state differs"
        );
        assert_eq!(got.metrics, self.metrics, "{what}: metrics differ");
    }
}

/// A scratch folder, a tiny dataset in it, and the uninterrupted run's [`Reference`].
fn uninterrupted() -> (tempfile::TempDir, std::path::PathBuf, Reference) {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_sudoku_dataset(&dir.path().join("ds"));
    let reference = dir.path().join("reference");
    let o = run(&train_args(&data, &reference), None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (dir, data, Reference::of(&reference))
}

#[test]
fn killed_at_every_crash_point_resume_ends_bit_identical() {
    let (dir, data, want) = uninterrupted();
    assert!(want.files.contains("config.toml") && want.files.contains("step_12.safetensors"));

    // crash point n = 1, 2, ... until a run passes fewer than n points and finishes; two workers
    let next = AtomicUsize::new(1);
    let past_the_end = AtomicBool::new(false);
    let walked = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !past_the_end.load(Ordering::SeqCst) {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    assert!(n < 200, "more crash points than a 12-step run can have");
                    let r = dir.path().join(format!("crash-{n}"));
                    let first = run(&train_args(&data, &r), Some(n));
                    if !crashed(&first, n) {
                        past_the_end.store(true, Ordering::SeqCst);
                        want.check(&r, &format!("a run past its last crash point ({n})"));
                        continue;
                    }
                    let site = String::from_utf8_lossy(&first.stderr).into_owned();
                    // recovery as a user does it: `--resume`; a folder killed before its config
                    // was written holds no run yet, so the original command starts it afresh
                    let recover = || {
                        if r.join("config.toml").exists() {
                            resume_args(&r)
                        } else {
                            train_args(&data, &r)
                        }
                    };
                    let second = run(&recover(), Some(n));
                    if crashed(&second, n) {
                        let last = run(&recover(), None);
                        let (code, out, err) = outcome(&last);
                        assert_eq!(code, 0, "crash point {n} twice ({site}): {out}{err}");
                    }
                    want.check(&r, &format!("killed at crash point {n}: {site}"));
                    walked.lock().unwrap().push((n, site));
                    std::fs::remove_dir_all(&r).unwrap();
                }
            });
        }
    });
    let walked = walked.into_inner().unwrap();
    // every point of the run was walked (29 today): config, run record, 2 checkpoints x (state,
    // model) x (temp file, rename), the metrics records, the prune
    let last = walked.iter().map(|(n, _)| *n).max().unwrap();
    assert_eq!(walked.len(), last, "crash points skipped");
    for site in [
        "renaming to",
        "config.toml",
        "step_6.state.safetensors.tmp-",
        "step_12.safetensors.tmp-",
        "a metrics record",
        "pruning",
    ] {
        assert!(
            walked.iter().any(|(_, s)| s.contains(site)),
            "no crash point at `{site}`: {walked:?}"
        );
    }
}

/// `hrm ARGS` with the file size limited to `kib` KiB (`ulimit -f`) and SIGXFSZ ignored, so a
/// write past the limit fails with EFBIG as a write to a full disk fails with ENOSPC.
fn with_file_limit(kib: u64, args: &[String]) -> (i32, String, String) {
    let script = format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\"");
    let o = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_hrm"))
        .args(args)
        .output()
        .unwrap();
    outcome(&o)
}

#[test]
fn a_full_disk_fails_the_checkpoint_cleanly_and_loses_nothing() {
    let (dir, data, want) = uninterrupted();

    // the tiny model's state file (~1.7 MB) does not fit under 1000 KiB: the first checkpoint fails
    let r = dir.path().join("full");
    let (code, out, err) = with_file_limit(1000, &train_args(&data, &r));
    assert_eq!(code, 1, "{out}{err}");
    let state = r.join("step_6.state.safetensors");
    let line = format!(
        "error: writing {}: File too large (os error 27)",
        state.display()
    );
    assert_eq!(
        err.trim_end(),
        line,
        "one line naming the file, the cause once"
    );
    let names = entries(&r);
    assert!(
        !names
            .iter()
            .any(|n| n.contains(".tmp-") || n.starts_with("step_")),
        "partial files left: {names:?}"
    );
    assert!(names.contains(&"config.toml".to_string()), "{names:?}");
    // with space again, the run resumes from its recorded config and ends as the reference
    let (code, out, err) = outcome(&run(&resume_args(&r), None));
    assert_eq!(code, 0, "{out}{err}");
    want.check(&r, "after a full disk");

    // a dataset build on a full disk: the error names the file; no output or staging folder
    let csv = dir.path().join("ds").join("csv");
    let out_dir = dir.path().join("built");
    let build: Vec<String> = ["data", "sudoku", "--input-dir", p(&csv), "--output-dir"]
        .into_iter()
        .chain([p(&out_dir), "--num-aug", "2"])
        .map(String::from)
        .collect();
    let (code, _, err) = with_file_limit(8, &build);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("File too large (os error 27)") && err.contains(".npy"),
        "{err}"
    );
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    let left: Vec<String> = entries(dir.path())
        .into_iter()
        .filter(|n| n.starts_with("built"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
