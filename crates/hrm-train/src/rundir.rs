//! The run folder: resolved config, run facts, metrics, event files and checkpoints.
//!
//! Mirrors the reference's `checkpoints/<project>/<run>/` folder (sapientinc/HRM:pretrain.py
//! `load_synced_config`, `save_train_state`, `save_code_and_config`): project name from the data
//! folder, a two-word run slug (the reference uses `coolname`), the resolved config next to the
//! checkpoints (`all_config.yaml` there, `config.toml` here) and `step_<N>` checkpoint files
//! (`step_<N>.safetensors` here). Instead of copying model source files, `run.json` records the
//! crate version, git commit, rustc version, seed, device and a hash of the train `dataset.json`.
//!
//! Layout: `<run>/config.toml`, `<run>/run.json`, `<run>/metrics.jsonl`,
//! `<run>/events.out.tfevents.*`, `<run>/step_<N>.safetensors` (plus companions
//! `step_<N>.<anything>` the trainer may write, e.g. optimizer state) and, with
//! `eval_save_outputs`, `<run>/step_<N>_eval_outputs.safetensors` (the reference's
//! `step_<N>_all_preds.<rank>`). Every file is written with [`write_atomic`], so a crash never
//! leaves a truncated file under its final name. docs/training.md, "The run folder and resume",
//! says what each file holds.
//!
//! A run holds `<run>/.lock` (an exclusive advisory lock, with the holder's pid inside) from
//! before its first read of the folder to its exit, so two processes never share a run folder;
//! the operating system releases the lock when the process dies. Taking the lock removes the
//! temporary files (`.<name>.tmp-<pid>`, `<name>.tmp-<pid>`) that dead processes left behind.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use hrm_data::fsio::write_atomic;
use hrm_data::fsio::{pid_is_alive, temp_name_pid};

use crate::config::{ConfigError, TrainConfig};

/// Name of the resolved config inside a run folder.
pub const CONFIG_FILE: &str = "config.toml";
/// Name of the run facts file inside a run folder.
pub const RUN_INFO_FILE: &str = "run.json";
/// Folder under which runs without an explicit folder are created.
pub const DEFAULT_RUNS_ROOT: &str = "runs";
/// Name of the lock file inside a run folder.
pub const LOCK_FILE: &str = ".lock";

/// Errors of run-folder handling; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A new run was asked for in a folder that already holds one.
    #[error(
        "{path} already holds a run ({found}); resume it with `hrm train --resume {path}` or \
         choose another --run-dir"
    )]
    AlreadyARun {
        /// The run folder.
        path: PathBuf,
        /// The file that shows it (config.toml or a checkpoint).
        found: String,
    },
    /// Another process holds the run folder's lock.
    #[error(
        "run folder {path} is in use by another hrm process (pid {pid}); wait for it or use \
         another --run-dir"
    )]
    InUse {
        /// The run folder.
        path: PathBuf,
        /// The holder's pid as its lock file says ("unknown" while it is being written).
        pid: String,
    },
    /// A folder to resume is not a run folder.
    #[error("{path} is not a run folder (no {CONFIG_FILE}); give the folder `hrm train` created")]
    NotARun {
        /// The folder.
        path: PathBuf,
    },
    /// The saved config of a run is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `run.json` could not be encoded or decoded.
    #[error("{path}: {problem}")]
    RunInfo {
        /// The run.json file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// Result type of this module.
pub type Result<T> = std::result::Result<T, RunDirError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunDirError + '_ {
    move |source| RunDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A checkpoint file of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The optimizer step it was taken at.
    pub step: u64,
    /// `<run>/step_<step>.safetensors`.
    pub path: PathBuf,
}

/// File name of the checkpoint at `step`.
pub fn checkpoint_file_name(step: u64) -> String {
    format!("step_{step}.safetensors")
}

/// The step of a checkpoint file name `step_<N>.safetensors`, if it is one.
pub fn parse_checkpoint_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step_")?.strip_suffix(".safetensors")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The step `N` of a checkpoint file or of one of its companions: `step_<N>.<anything>`.
fn companion_step(name: &str) -> Option<u64> {
    let (digits, _) = name.strip_prefix("step_")?.split_once('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// File name of the outputs the evaluation at `step` saves (`eval_save_outputs`; the
/// reference's `step_<N>_all_preds.<rank>`). It is neither a checkpoint
/// ([`parse_checkpoint_file_name`] rejects it) nor a companion of the checkpoint at `step`
/// ([`RunDir::prune_checkpoints`] keeps it).
pub fn eval_outputs_file_name(step: u64) -> String {
    format!("step_{step}_eval_outputs.safetensors")
}

/// The step of an [`eval_outputs_file_name`], if `name` is one.
pub fn parse_eval_outputs_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("step_")?
        .strip_suffix("_eval_outputs.safetensors")?
        .parse()
        .ok()
}

// Word lists for run slugs (adjective-noun, as the reference's `coolname.generate_slug(2)`).
const ADJECTIVES: [&str; 48] = [
    "amber", "bold", "brave", "bright", "calm", "clever", "cosmic", "crisp", "curious", "daring",
    "deep", "eager", "early", "fancy", "fast", "fierce", "gentle", "golden", "grand", "happy",
    "hidden", "humble", "jolly", "keen", "lively", "lucky", "mellow", "mighty", "misty", "noble",
    "patient", "polite", "proud", "quick", "quiet", "rapid", "silent", "silver", "smooth",
    "steady", "sunny", "swift", "tidy", "vivid", "warm", "wild", "wise", "witty",
];
const NOUNS: [&str; 48] = [
    "badger", "beacon", "breeze", "canyon", "cedar", "comet", "coral", "crane", "delta", "ember",
    "falcon", "fern", "fjord", "galaxy", "glacier", "harbor", "heron", "island", "jaguar",
    "lagoon", "lantern", "lotus", "maple", "meadow", "meteor", "nebula", "oasis", "orchid",
    "otter", "panda", "pebble", "pine", "quartz", "raven", "reef", "river", "robin", "sparrow",
    "summit", "thistle", "tiger", "tundra", "valley", "walrus", "willow", "wombat", "yak",
    "zephyr",
];

/// A two-word slug (`brave-otter`) drawn with a ChaCha8 stream seeded by `seed`.
pub fn run_slug(seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let a = ADJECTIVES[rng.random_range(0..ADJECTIVES.len())];
    let n = NOUNS[rng.random_range(0..NOUNS.len())];
    format!("{a}-{n}")
}

/// UTC calendar date and time of a Unix time stamp: (year, month, day, hour, minute, second).
fn civil_utc(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// Short UTC time stamp `YYMMDD-HHMM` of a Unix time.
pub fn short_timestamp(secs: u64) -> String {
    let (y, mo, d, h, mi, _) = civil_utc(secs);
    format!("{:02}{mo:02}{d:02}-{h:02}{mi:02}", y.rem_euclid(100))
}

/// The default run name: a two-word slug and a short UTC time stamp, e.g.
/// `brave-otter-261128-1432`. `entropy` seeds the slug (the caller passes time and pid bits).
pub fn default_run_name(unix_secs: u64, entropy: u64) -> String {
    format!("{}-{}", run_slug(entropy), short_timestamp(unix_secs))
}

/// Make a string safe as one path component (spaces and separators become `-`).
fn path_component(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let out = out.trim_matches('.').to_string();
    if out.is_empty() {
        "run".into()
    } else {
        out
    }
}

/// The exclusive lock on a run folder (`<run>/.lock`), held while this value lives.
#[derive(Debug)]
pub struct RunLock {
    file: File,
}

impl RunLock {
    /// Lock `dir` (which must exist) or say which process holds it.
    fn acquire(dir: &Path) -> Result<RunLock> {
        let p = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .map_err(io_err(&p))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let pid = match text.trim() {
                    "" => "unknown".to_string(),
                    t => t.to_string(),
                };
                return Err(RunDirError::InUse {
                    path: dir.to_path_buf(),
                    pid,
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(RunDirError::Io { path: p, source })
            }
        }
        let wrote = (|| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_all()
        })();
        wrote.map_err(io_err(&p))?;
        Ok(RunLock { file })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// A run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
    /// Held by the process that runs in the folder ([`RunDir::create`], [`RunDir::open_locked`]).
    lock: Option<Arc<RunLock>>,
}

impl RunDir {
    /// Create the folder of a new run and record its names in `cfg`.
    ///
    /// The folder is `run_dir` if given (the CLI's `--run-dir`), else `cfg.checkpoint_path`,
    /// else `runs/<project>-<run name>` (a `-2`, `-3`, ... suffix is added if that exists).
    /// Missing `cfg.project_name` / `cfg.run_name` are filled in (project from `data_path`, run
    /// name = slug + time stamp) and `cfg.checkpoint_path` is set to the folder, so the saved
    /// `config.toml` records them, as the reference's `all_config.yaml` does. An explicit
    /// folder may exist if it holds no checkpoint: a run killed before its first checkpoint
    /// starts again there (the trainer calls [`RunDir::clear_unstarted`] when it writes the
    /// new run's files). The folder is locked ([`RunDir::lock`]) before it is inspected.
    pub fn create(run_dir: Option<&Path>, cfg: &mut TrainConfig) -> Result<RunDir> {
        Self::create_under(Path::new(DEFAULT_RUNS_ROOT), run_dir, cfg)
    }

    /// [`RunDir::create`] with automatic folders made under `runs_root` instead of `runs/`.
    pub fn create_under(
        runs_root: &Path,
        run_dir: Option<&Path>,
        cfg: &mut TrainConfig,
    ) -> Result<RunDir> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let entropy = now.as_nanos() as u64 ^ ((std::process::id() as u64) << 32);
        let project = cfg.project_name();
        let run_name = cfg
            .run_name
            .clone()
            .unwrap_or_else(|| default_run_name(now.as_secs(), entropy));
        let explicit = run_dir
            .map(Path::to_path_buf)
            .or_else(|| cfg.checkpoint_path.as_ref().map(PathBuf::from));
        let path = match explicit {
            Some(p) => {
                std::fs::create_dir_all(&p).map_err(io_err(&p))?;
                p
            }
            None => {
                let root = runs_root;
                std::fs::create_dir_all(root).map_err(io_err(root))?;
                let stem = format!("{}-{}", path_component(&project), path_component(&run_name));
                let mut n = 1;
                loop {
                    let candidate = if n == 1 {
                        root.join(&stem)
                    } else {
                        root.join(format!("{stem}-{n}"))
                    };
                    // create_dir (not _all) fails if it exists: no two runs share a folder.
                    match std::fs::create_dir(&candidate) {
                        Ok(()) => break candidate,
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
                        Err(source) => {
                            return Err(RunDirError::Io {
                                path: candidate,
                                source,
                            })
                        }
                    }
                }
            }
        };
        let mut dir = RunDir { path, lock: None };
        dir.lock()?;
        dir.refuse_existing_run()?;
        cfg.project_name = Some(project);
        cfg.run_name = Some(run_name);
        cfg.checkpoint_path = Some(dir.path.to_string_lossy().to_string());
        Ok(dir)
    }

    /// [`RunDirError::AlreadyARun`] if the folder holds a checkpoint.
    fn refuse_existing_run(&self) -> Result<()> {
        match self.list_checkpoints()?.first() {
            Some(c) => Err(RunDirError::AlreadyARun {
                path: self.path.clone(),
                found: checkpoint_file_name(c.step),
            }),
            None => Ok(()),
        }
    }

    /// Remove what a run killed before its first checkpoint left (`run.json`, `metrics.jsonl`,
    /// event files, saved evaluation outputs), so that it starts again from step 0 as if new.
    /// `config.toml` stays: the caller replaces it atomically next, and until then it keeps the
    /// folder resumable (a kill right here must not leave a folder that is no run at all). A
    /// folder holding a checkpoint is [`RunDirError::AlreadyARun`] (nothing removed). Returns
    /// the removed paths.
    pub fn clear_unstarted(&self) -> Result<Vec<PathBuf>> {
        self.refuse_existing_run()?;
        self.remove_entries(|name| {
            let partial = [RUN_INFO_FILE, crate::sinks::METRICS_FILE].contains(&name)
                || name.starts_with("events.out.tfevents.")
                || parse_eval_outputs_file_name(name).is_some();
            partial.then_some(())
        })
    }

    /// Take the folder's exclusive lock for this process (kept by every clone of this value
    /// until the last is dropped, and released by the OS if the process dies), then remove the
    /// temporary files of dead processes ([`RunDir::remove_stale_temp_files`]). Another holder
    /// is [`RunDirError::InUse`], naming its pid.
    pub fn lock(&mut self) -> Result<()> {
        if self.lock.is_none() {
            self.lock = Some(Arc::new(RunLock::acquire(&self.path)?));
            self.remove_stale_temp_files()?;
        }
        Ok(())
    }

    /// Whether this value holds the folder's lock.
    pub fn is_locked(&self) -> bool {
        self.lock.is_some()
    }

    /// Delete the temporary files of interrupted writes (`.<name>.tmp-<pid>` of
    /// [`write_atomic`], older `<name>.tmp-<pid>`) whose process is no longer alive (a live
    /// pid's file is kept). Returns the removed paths.
    pub fn remove_stale_temp_files(&self) -> Result<Vec<PathBuf>> {
        self.remove_entries(|name| {
            temp_name_pid(name)
                .is_some_and(|pid| !pid_is_alive(pid))
                .then_some(())
        })
    }

    /// Delete the files of the folder that `doomed` picks (by name), in the order of the keys it
    /// gives them; each removal is a crash point. Returns the removed paths, sorted.
    fn remove_entries<K: Ord>(&self, doomed: impl Fn(&str) -> Option<K>) -> Result<Vec<PathBuf>> {
        let mut picked = Vec::new();
        for entry in std::fs::read_dir(&self.path).map_err(io_err(&self.path))? {
            let entry = entry.map_err(io_err(&self.path))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(key) = doomed(&name).filter(|_| entry.path().is_file()) {
                picked.push((key, entry.path()));
            }
        }
        picked.sort_by(|a, b| a.0.cmp(&b.0));
        let mut removed = Vec::new();
        for (_, p) in picked {
            std::fs::remove_file(&p).map_err(io_err(&p))?;
            hrm_data::fsio::crash_point(&format!("pruning {}", p.display()));
            removed.push(p);
        }
        removed.sort();
        Ok(removed)
    }

    /// Open the folder of an existing run without locking it (to read it): it must hold
    /// `config.toml`.
    pub fn open(path: &Path) -> Result<RunDir> {
        if !path.join(CONFIG_FILE).is_file() {
            return Err(RunDirError::NotARun {
                path: path.to_path_buf(),
            });
        }
        Ok(RunDir {
            path: path.to_path_buf(),
            lock: None,
        })
    }

    /// [`RunDir::open`] and [`RunDir::lock`]: the folder of a run this process continues.
    pub fn open_locked(path: &Path) -> Result<RunDir> {
        let mut dir = Self::open(path)?;
        dir.lock()?;
        Ok(dir)
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<run>/config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.path.join(CONFIG_FILE)
    }

    /// `<run>/metrics.jsonl`.
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join(crate::sinks::METRICS_FILE)
    }

    /// `<run>/step_<step>.safetensors`.
    pub fn checkpoint_path(&self, step: u64) -> PathBuf {
        self.path.join(checkpoint_file_name(step))
    }

    /// `<run>/step_<step>_eval_outputs.safetensors`.
    pub fn eval_outputs_path(&self, step: u64) -> PathBuf {
        self.path.join(eval_outputs_file_name(step))
    }

    /// Save the resolved config as `config.toml` (atomically).
    pub fn write_config(&self, cfg: &TrainConfig) -> Result<()> {
        let p = self.config_path();
        write_atomic(&p, cfg.to_toml_string().as_bytes()).map_err(io_err(&p))
    }

    /// Load the saved `config.toml` of this run.
    pub fn load_config(&self) -> Result<TrainConfig> {
        Ok(TrainConfig::load(&self.config_path(), &[])?)
    }

    /// Save `run.json` (atomically).
    pub fn write_run_info(&self, info: &RunInfo) -> Result<()> {
        let p = self.path.join(RUN_INFO_FILE);
        let mut text = serde_json::to_string_pretty(info).map_err(|e| RunDirError::RunInfo {
            path: p.clone(),
            problem: e.to_string(),
        })?;
        text.push('\n');
        write_atomic(&p, text.as_bytes()).map_err(io_err(&p))
    }

    /// Read `run.json`.
    pub fn read_run_info(&self) -> Result<RunInfo> {
        let p = self.path.join(RUN_INFO_FILE);
        let text = std::fs::read_to_string(&p).map_err(io_err(&p))?;
        serde_json::from_str(&text).map_err(|e| RunDirError::RunInfo {
            path: p.clone(),
            problem: e.to_string(),
        })
    }

    /// Every `step_<N>.safetensors` of the run, oldest step first. Temporary files of an
    /// interrupted write (`*.tmp-<pid>`) are not checkpoints and are ignored.
    pub fn list_checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let mut out = Vec::new();
        if !self.path.exists() {
            return Ok(out);
        }
        for entry in std::fs::read_dir(&self.path).map_err(io_err(&self.path))? {
            let entry = entry.map_err(io_err(&self.path))?;
            if let Some(step) = parse_checkpoint_file_name(&entry.file_name().to_string_lossy()) {
                out.push(Checkpoint {
                    step,
                    path: entry.path(),
                });
            }
        }
        out.sort_by_key(|c| c.step);
        Ok(out)
    }

    /// The checkpoint with the highest step, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>> {
        Ok(self.list_checkpoints()?.pop())
    }

    /// Keep the newest `keep` checkpoints and delete the older ones together with their
    /// companion files `step_<N>.*` (e.g. optimizer state), and the companions an interrupted
    /// prune or save left without their checkpoint below the newest one. Returns the deleted paths.
    /// `keep = 0` is treated as 1: the newest checkpoint is never deleted. A checkpoint's model
    /// file goes first, so a kill mid-prune leaves at most companions without a checkpoint (which
    /// count for nothing and go at the next prune), never a checkpoint without its state.
    pub fn prune_checkpoints(&self, keep: usize) -> Result<Vec<PathBuf>> {
        let all = self.list_checkpoints()?;
        let Some(newest) = all.last().map(|c| c.step) else {
            return Ok(Vec::new());
        };
        let kept: Vec<u64> = all.iter().rev().take(keep.max(1)).map(|c| c.step).collect();
        // ordered by (step, is not the model file)
        self.remove_entries(|name| {
            // (a temporary file is another writer's business: see remove_stale_temp_files)
            let step = companion_step(name).filter(|_| temp_name_pid(name).is_none())?;
            (step < newest && !kept.contains(&step))
                .then(|| (step, parse_checkpoint_file_name(name).is_none()))
        })
    }
}

/// Facts about a run that the config does not hold: what built it and on what data
/// (`run.json`). Replaces the reference's copies of the model source files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// `hrm-train` crate version.
    pub crate_version: String,
    /// `git rev-parse --short HEAD` at build time, or "unknown".
    pub git_commit: String,
    /// `rustc -V` of the compiler that built the binary, or "unknown".
    pub rustc: String,
    /// The run seed.
    pub seed: u64,
    /// The device (`cpu`, `cuda:0`, ...).
    pub device: String,
    /// The train split's dataset.json path.
    pub train_dataset_json: String,
    /// FNV-1a 64-bit hash (hex) of the train split's dataset.json bytes, or None if unreadable.
    pub train_dataset_json_fnv1a64: Option<String>,
    /// Unix time the run started.
    pub started_unix: u64,
    /// The command line (program arguments), if the caller records it.
    pub command_line: Vec<String>,
}

/// FNV-1a 64-bit hash of bytes (a fingerprint, not a cryptographic hash).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl RunInfo {
    /// Collect the facts for a run of `cfg` started now, with the process's command line.
    pub fn collect(cfg: &TrainConfig) -> RunInfo {
        let dataset_json = Path::new(&cfg.data_path).join("train").join("dataset.json");
        let hash = std::fs::read(&dataset_json)
            .ok()
            .map(|b| format!("{:016x}", fnv1a64(&b)));
        RunInfo {
            crate_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: env!("HRM_GIT_COMMIT").into(),
            rustc: env!("HRM_RUSTC_VERSION").into(),
            seed: cfg.seed,
            device: cfg.device.clone(),
            train_dataset_json: dataset_json.to_string_lossy().to_string(),
            train_dataset_json_fnv1a64: hash,
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            command_line: std::env::args().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_and_timestamp() {
        assert_eq!(civil_utc(0), (1970, 1, 1, 0, 0, 0));
        // 2000-02-29 12:34:56 UTC (leap day).
        assert_eq!(civil_utc(951_827_696), (2000, 2, 29, 12, 34, 56));
        // 2026-11-28 14:32:00 UTC.
        assert_eq!(short_timestamp(1_795_876_320), "261128-1432");
    }

    #[test]
    fn slugs_are_seeded() {
        assert_eq!(run_slug(7), run_slug(7));
        let s = run_slug(7);
        let (a, n) = s.split_once('-').unwrap();
        assert!(ADJECTIVES.contains(&a) && NOUNS.contains(&n), "{s}");
        let distinct: std::collections::BTreeSet<String> = (0..64).map(run_slug).collect();
        assert!(distinct.len() > 30, "{}", distinct.len());
        assert_eq!(
            default_run_name(1_795_876_320, 7),
            format!("{s}-261128-1432")
        );
    }

    #[test]
    fn checkpoint_names() {
        assert_eq!(checkpoint_file_name(26040), "step_26040.safetensors");
        assert_eq!(
            parse_checkpoint_file_name("step_26040.safetensors"),
            Some(26040)
        );
        assert_eq!(parse_checkpoint_file_name("step_.safetensors"), None);
        assert_eq!(
            parse_checkpoint_file_name("step_1.safetensors.tmp-12"),
            None
        );
        assert_eq!(parse_checkpoint_file_name("step_1_all_preds.0"), None);
        assert_eq!(
            eval_outputs_file_name(12),
            "step_12_eval_outputs.safetensors"
        );
        assert_eq!(
            parse_checkpoint_file_name(&eval_outputs_file_name(12)),
            None
        );
        assert_eq!(parse_checkpoint_file_name("step_x1.safetensors"), None);
    }

    #[test]
    fn list_prune_latest() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir {
            path: dir.path().to_path_buf(),
            lock: None,
        };
        assert_eq!(run.latest_checkpoint().unwrap(), None);
        for step in [2604u64, 5208, 7812, 10416] {
            write_atomic(&run.checkpoint_path(step), b"w").unwrap();
            write_atomic(
                &run.path().join(format!("step_{step}.state.safetensors")),
                b"s",
            )
            .unwrap();
        }
        std::fs::write(run.path().join("step_99.safetensors.tmp-1"), b"partial").unwrap();
        std::fs::write(run.path().join("step_2604_all_preds.0"), b"eval").unwrap();
        std::fs::write(run.eval_outputs_path(2604), b"eval").unwrap();
        let steps: Vec<u64> = run
            .list_checkpoints()
            .unwrap()
            .iter()
            .map(|c| c.step)
            .collect();
        assert_eq!(steps, [2604, 5208, 7812, 10416]);
        assert_eq!(run.latest_checkpoint().unwrap().unwrap().step, 10416);

        let removed = run.prune_checkpoints(2).unwrap();
        let names: Vec<String> = removed
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "step_2604.safetensors",
                "step_2604.state.safetensors",
                "step_5208.safetensors",
                "step_5208.state.safetensors"
            ]
        );
        let steps: Vec<u64> = run
            .list_checkpoints()
            .unwrap()
            .iter()
            .map(|c| c.step)
            .collect();
        assert_eq!(steps, [7812, 10416]);
        assert!(run.path().join("step_2604_all_preds.0").exists());
        assert!(run.eval_outputs_path(2604).exists());
        assert!(run.prune_checkpoints(0).unwrap().len() == 2);
        assert_eq!(run.latest_checkpoint().unwrap().unwrap().step, 10416);
        // what a kill mid-prune or mid-save leaves below the newest checkpoint goes at the next
        // prune; a state newer than it (a save killed before its model file) is left alone
        for name in [
            "step_7812.state.safetensors",
            "step_20000.state.safetensors",
        ] {
            write_atomic(&run.path().join(name), b"s").unwrap();
        }
        let removed = run.prune_checkpoints(1).unwrap();
        assert_eq!(removed, [run.path().join("step_7812.state.safetensors")]);
        assert!(run.path().join("step_20000.state.safetensors").exists());
    }

    fn tiny_config() -> TrainConfig {
        let p = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../configs/tiny.toml"
        ));
        TrainConfig::load(p, &["data_path=data/sudoku-tiny".to_string()]).unwrap()
    }

    #[test]
    fn create_open_and_refuse_a_second_run() {
        let root = tempfile::tempdir().unwrap();
        // Automatic folder: runs/<Project>-<slug>-<stamp>, names recorded in the config.
        let mut cfg = tiny_config();
        let run = RunDir::create_under(root.path(), None, &mut cfg).unwrap();
        let name = run
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(name.starts_with("Sudoku-tiny-"), "{name}");
        assert_eq!(cfg.project_name.as_deref(), Some("Sudoku-tiny"));
        assert_eq!(
            format!("Sudoku-tiny-{}", cfg.run_name.as_deref().unwrap()),
            name,
            "folder = project-run"
        );
        assert_eq!(
            cfg.checkpoint_path.as_deref(),
            Some(&*run.path().to_string_lossy())
        );
        // The same names again get a numbered sibling, never a shared folder.
        let mut again = cfg.clone();
        again.checkpoint_path = None;
        let run2 = RunDir::create_under(root.path(), None, &mut again).unwrap();
        assert_eq!(run2.path(), root.path().join(format!("{name}-2")));

        // The saved config loads back, and the run can be reopened.
        run.write_config(&cfg).unwrap();
        let reopened = RunDir::open(run.path()).unwrap();
        assert_eq!(reopened.load_config().unwrap(), cfg);
        let info = RunInfo::collect(&cfg);
        run.write_run_info(&info).unwrap();
        let back = run.read_run_info().unwrap();
        assert_eq!(back, info);
        assert_eq!(back.crate_version, env!("CARGO_PKG_VERSION"));
        assert!(!back.git_commit.is_empty() && !back.rustc.is_empty());
        assert_eq!(back.train_dataset_json_fnv1a64, None); // data/sudoku-tiny does not exist

        // A folder another run holds (here: `run`, alive) is refused, naming the holder.
        let err = RunDir::create_under(root.path(), Some(run.path()), &mut cfg.clone())
            .unwrap_err()
            .to_string();
        let pid = std::process::id();
        assert!(
            err.contains(&format!(
                "run folder {} is in use by another hrm process (pid {pid}); wait for it or use \
                 another --run-dir",
                run.path().display()
            )),
            "{err}"
        );
        let err = RunDir::open_locked(run.path()).unwrap_err().to_string();
        assert!(err.contains("is in use by another hrm process"), "{err}");
        // Once the holder is gone, a run killed before its first checkpoint (config.toml,
        // run.json, metrics, events) starts again there, cleared.
        drop(run);
        let run = RunDir::open(&root.path().join(&name)).unwrap();
        for partial in ["metrics.jsonl", "events.out.tfevents.1.host"] {
            std::fs::write(run.path().join(partial), b"{\"step\":1").unwrap();
        }
        let restarted =
            RunDir::create_under(root.path(), Some(run.path()), &mut cfg.clone()).unwrap();
        assert!(restarted.is_locked());
        assert_eq!(restarted.clear_unstarted().unwrap().len(), 3);
        let mut left: Vec<String> = std::fs::read_dir(run.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        // the config stays until the restart replaces it (atomically)
        assert_eq!(left, [LOCK_FILE, CONFIG_FILE], "partial files cleared");
        drop(restarted);
        // An explicit folder that already holds a checkpoint is refused.
        let ckpt_only = root.path().join("ckpt-only");
        std::fs::create_dir_all(&ckpt_only).unwrap();
        std::fs::write(ckpt_only.join("step_12.safetensors"), b"x").unwrap();
        let err = RunDir::create_under(root.path(), Some(&ckpt_only), &mut cfg.clone())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("already holds a run (step_12.safetensors)"),
            "{err}"
        );
        // An empty existing folder is fine; a missing one is created.
        let empty = root.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        RunDir::create_under(root.path(), Some(&empty), &mut cfg.clone()).unwrap();
        let fresh = root.path().join("a/b/c");
        let mut c2 = cfg.clone();
        RunDir::create_under(root.path(), Some(&fresh), &mut c2).unwrap();
        assert!(fresh.is_dir());
        assert_eq!(
            c2.checkpoint_path.as_deref(),
            Some(&*fresh.to_string_lossy())
        );
        // Opening a folder that is not a run names it.
        let err = RunDir::open(&empty).unwrap_err().to_string();
        assert!(
            err.contains("is not a run folder (no config.toml)"),
            "{err}"
        );
    }

    #[test]
    fn locking_removes_temp_files_of_dead_pids_only() {
        let dir = tempfile::tempdir().unwrap();
        let dead = u32::MAX - 1;
        let me = std::process::id();
        let names = [
            format!(".step_5.safetensors.tmp-{dead}"),
            format!("step_5.state.safetensors.tmp-{dead}"),
            format!(".metrics.jsonl.tmp-{me}"),
            "config.toml".to_string(),
        ];
        for n in &names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let mut run = RunDir::open(dir.path()).unwrap();
        assert!(!run.is_locked());
        run.lock().unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        let mut want = vec![LOCK_FILE.to_string(), names[2].clone(), names[3].clone()];
        if !cfg!(target_os = "linux") {
            want.extend([names[0].clone(), names[1].clone()]); // liveness unknown: kept
        }
        want.sort();
        assert_eq!(left, want);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(),
            format!("{me}\n"),
            "the lock file names its holder"
        );
        // a clone shares the lock; the lock is free once the last holder is gone
        let clone = run.clone();
        drop(run);
        assert!(RunDir::open_locked(dir.path()).is_err());
        drop(clone);
        RunDir::open_locked(dir.path()).unwrap();
    }

    #[test]
    fn fnv_reference_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
