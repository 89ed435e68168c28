//! Metric sinks of a run: `metrics.jsonl` (the source of truth) and TensorBoard event files.
//!
//! Replaces the reference's `wandb.log(metrics, step=train_state.step)` calls in
//! sapientinc/HRM:pretrain.py `launch`. Key names keep the reference's: training metrics are
//! `train/<metric>` (`train/lm_loss`, `train/accuracy`, `train/exact_accuracy`, `train/steps`,
//! `train/lr`, ...), evaluation metrics are `eval/<set>/<metric>` (one explicit scheme where the
//! reference nests per-set dicts).
//!
//! `metrics.jsonl` holds one JSON object per logging event:
//! `{"step": 1200, "time": 73.41, "train/lm_loss": 0.412, ...}` with `time` in seconds since the
//! start of the run (continued across resumes). Non-finite values are written as `null` (JSON has
//! no NaN); [`check_finite`] is what stops a run on them. Each line is written with one `write`
//! call and flushed, so a crash leaves at most one partial last line, which
//! [`MetricsLog::open_append`] drops.
//!
//! A run resumed from the checkpoint of step N keeps the records up to step N and writes none
//! of step N's metrics again: a kill between the evaluation of step N and its checkpoint makes
//! the resumed run evaluate step N a second time, and its metrics are already in the log.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hrm_data::fsio::write_atomic;

use crate::tfevents::{EventWriter, TfEventsError};

/// File name of the JSON-lines metrics log inside a run folder.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Errors of the metric sinks; each names the file (and line) or the step and metric.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Reading or writing a metrics file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A complete line of an existing `metrics.jsonl` is not a metrics record.
    #[error(
        "{path}:{line}: {problem} (the file is not a metrics log written by hrm; move it away)"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// The TensorBoard writer failed.
    #[error(transparent)]
    TfEvents(#[from] TfEventsError),
    /// A metric is NaN or infinite (see [`check_finite`]).
    #[error(
        "step {step}: `{key}` is {value} — stopping the run (try a lower `lr`, a longer \
         `lr_warmup_steps`, or `arch.forward_dtype = \"float32\"`)"
    )]
    NonFinite {
        /// The optimizer step at which it happened.
        step: u64,
        /// The offending metric, e.g. `train/lm_loss`.
        key: String,
        /// The value (NaN, inf or -inf).
        value: f64,
    },
}

/// Result type of this module.
pub type Result<T> = std::result::Result<T, SinkError>;

/// Fail with [`SinkError::NonFinite`] naming the first (in iteration order) metric that is NaN
/// or infinite. The trainer calls it on the train metrics of every step and on the metrics
/// of every evaluation.
pub fn check_finite<'a, I>(step: u64, metrics: I) -> Result<()>
where
    I: IntoIterator<Item = (&'a str, f64)>,
{
    for (key, value) in metrics {
        if !value.is_finite() {
            return Err(SinkError::NonFinite {
                step,
                key: key.to_string(),
                value,
            });
        }
    }
    Ok(())
}

/// One line of `metrics.jsonl`, parsed back.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRecord {
    /// Optimizer step.
    pub step: u64,
    /// Seconds since the start of the run.
    pub time: f64,
    /// Every other key; `None` where the file holds `null` (a non-finite value).
    pub values: BTreeMap<String, Option<f64>>,
}

/// Render one record as a JSON line (with the trailing newline). Key order: `step`, `time`,
/// then the metrics in the order given.
fn render_line<'a>(step: u64, time: f64, metrics: impl Iterator<Item = (&'a str, f64)>) -> String {
    let num = |v: f64| {
        if v.is_finite() {
            serde_json::Value::from(v).to_string()
        } else {
            "null".to_string()
        }
    };
    let mut line = format!("{{\"step\": {step}, \"time\": {}", num(time));
    for (k, v) in metrics {
        line.push_str(", ");
        line.push_str(&serde_json::Value::from(k).to_string());
        line.push_str(": ");
        line.push_str(&num(v));
    }
    line.push_str("}\n");
    line
}

/// Parse one line of `metrics.jsonl`.
fn parse_line(text: &str) -> std::result::Result<MetricsRecord, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    let obj = value.as_object().ok_or("not a JSON object")?;
    let step = obj
        .get("step")
        .and_then(|v| v.as_u64())
        .ok_or("no integer `step` field")?;
    let time = obj
        .get("time")
        .and_then(|v| v.as_f64())
        .ok_or("no number `time` field")?;
    let mut values = BTreeMap::new();
    for (k, v) in obj {
        if k == "step" || k == "time" {
            continue;
        }
        let v = match v {
            serde_json::Value::Null => None,
            v => Some(v.as_f64().ok_or_else(|| format!("`{k}` is not a number"))?),
        };
        values.insert(k.clone(), v);
    }
    Ok(MetricsRecord { step, time, values })
}

/// Read every complete record of a `metrics.jsonl` (a partial last line, left by a crash, is
/// ignored; a malformed complete line is an error naming the line).
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsRecord>> {
    let text = std::fs::read_to_string(path).map_err(|source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in complete_lines(&text).enumerate() {
        let rec = parse_line(line).map_err(|problem| SinkError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
            problem,
        })?;
        out.push(rec);
    }
    Ok(out)
}

/// The newline-terminated lines of `text` (without the newline); blank lines are skipped.
fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete.lines().filter(|l| !l.trim().is_empty())
}

/// Appends one JSON object per logging event to `metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    /// After a resume: the step resumed from and the metric keys the log already holds for it.
    resumed: Option<(u64, BTreeSet<String>)>,
}

impl MetricsLog {
    /// Create (or truncate) the log at `path` for a new run.
    pub fn create(path: &Path) -> Result<MetricsLog> {
        let file = File::create(path).map_err(|source| SinkError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
            resumed: None,
        })
    }

    /// Reopen the log of a run resumed at `resume_step`: lines with `step > resume_step` (logged
    /// after the checkpoint the run resumes from) and a partial last line are removed first, so
    /// the final log equals that of an uninterrupted run. Returns the log and the `time` of the
    /// last kept record (0 if none), from which the resumed run's clock continues. A missing file
    /// is created. The keys already logged at `resume_step` are remembered
    /// ([`MetricsLog::already_logged`]).
    pub fn open_append(path: &Path, resume_step: u64) -> Result<(MetricsLog, f64)> {
        let mut last_time = 0.0;
        let mut at_resume_step = BTreeSet::new();
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|source| SinkError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let mut kept = String::with_capacity(text.len());
            for (i, line) in complete_lines(&text).enumerate() {
                let rec = parse_line(line).map_err(|problem| SinkError::Malformed {
                    path: path.to_path_buf(),
                    line: i + 1,
                    problem,
                })?;
                if rec.step == resume_step {
                    at_resume_step.extend(rec.values.into_keys());
                }
                if rec.step <= resume_step {
                    kept.push_str(line);
                    kept.push('\n');
                    last_time = rec.time;
                }
            }
            if kept != text {
                write_atomic(path, kept.as_bytes()).map_err(|source| SinkError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
        }
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SinkError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok((
            MetricsLog {
                path: path.to_path_buf(),
                file,
                resumed: Some((resume_step, at_resume_step)),
            },
            last_time,
        ))
    }

    /// Whether the log held `key` at `step` when it was reopened for a resume from `step`.
    pub fn already_logged(&self, step: u64, key: &str) -> bool {
        self.resumed
            .as_ref()
            .is_some_and(|(s, keys)| *s == step && keys.contains(key))
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record `{"step", "time", metrics...}` and flush it.
    pub fn log<'a, I>(&mut self, step: u64, time: f64, metrics: I) -> Result<()>
    where
        I: IntoIterator<Item = (&'a str, f64)>,
    {
        let line = render_line(step, time, metrics.into_iter());
        // One write call per line: a crash cannot interleave two records.
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|source| SinkError::Io {
                path: self.path.clone(),
                source,
            })?;
        hrm_data::fsio::crash_point("a metrics record");
        Ok(())
    }
}

/// Fans each logging event out to `metrics.jsonl` and a TensorBoard event file in the run folder,
/// stamping records with the run clock.
pub struct Sinks {
    jsonl: MetricsLog,
    tensorboard: EventWriter,
    start: Instant,
    /// Seconds of run time before this process started (non-zero after a resume).
    time_offset: f64,
}

impl Sinks {
    /// Sinks of a new run in `run_dir`: a fresh `metrics.jsonl` and a new event file.
    pub fn create(run_dir: &Path) -> Result<Sinks> {
        let jsonl = MetricsLog::create(&run_dir.join(METRICS_FILE))?;
        let tensorboard = EventWriter::create(run_dir)?;
        Ok(Sinks {
            jsonl,
            tensorboard,
            start: Instant::now(),
            time_offset: 0.0,
        })
    }

    /// Sinks of a run resumed at `resume_step`: `metrics.jsonl` is cut back to `resume_step`
    /// (see [`MetricsLog::open_append`]) and a new event file starts with a `SessionLog START`
    /// at `resume_step + 1`, so TensorBoard drops the old files' events past the checkpoint.
    pub fn open_append(run_dir: &Path, resume_step: u64) -> Result<Sinks> {
        let (jsonl, time_offset) =
            MetricsLog::open_append(&run_dir.join(METRICS_FILE), resume_step)?;
        let mut tensorboard = EventWriter::create(run_dir)?;
        tensorboard.add_session_start(resume_step + 1)?;
        tensorboard.flush()?;
        Ok(Sinks {
            jsonl,
            tensorboard,
            start: Instant::now(),
            time_offset,
        })
    }

    /// Seconds since the start of the run (including the time before a resume).
    pub fn elapsed(&self) -> f64 {
        self.time_offset + self.start.elapsed().as_secs_f64()
    }

    /// Log `metrics` at `step` to both sinks and flush them. After a resume, metrics of the
    /// resumed step that the log already holds are left out (nothing is written if none is
    /// left).
    pub fn log<'a, I>(&mut self, step: u64, metrics: I) -> Result<()>
    where
        I: IntoIterator<Item = (&'a str, f64)>,
    {
        let given: Vec<(&str, f64)> = metrics.into_iter().collect();
        let metrics: Vec<(&str, f64)> = given
            .iter()
            .copied()
            .filter(|(k, _)| !self.jsonl.already_logged(step, k))
            .collect();
        if metrics.is_empty() && !given.is_empty() {
            return Ok(());
        }
        let time = self.elapsed();
        self.jsonl.log(step, time, metrics.iter().copied())?;
        // TensorBoard cannot show a NaN usefully either; skip it there (the jsonl keeps `null`).
        self.tensorboard
            .add_scalars(step, metrics.iter().copied().filter(|(_, v)| v.is_finite()))?;
        self.tensorboard.flush()?;
        Ok(())
    }

    /// Path of `metrics.jsonl`.
    pub fn metrics_path(&self) -> &Path {
        self.jsonl.path()
    }

    /// Path of the TensorBoard event file this process writes.
    pub fn event_file(&self) -> &Path {
        self.tensorboard.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tfevents::{event_files, read_events};

    #[test]
    fn line_format() {
        let line = render_line(
            3,
            1.5,
            [("train/lm_loss", 0.25), ("train/x", f64::NAN)].into_iter(),
        );
        assert_eq!(
            line,
            "{\"step\": 3, \"time\": 1.5, \"train/lm_loss\": 0.25, \"train/x\": null}\n"
        );
        let rec = parse_line(line.trim_end()).unwrap();
        assert_eq!(rec.step, 3);
        assert_eq!(rec.values["train/lm_loss"], Some(0.25));
        assert_eq!(rec.values["train/x"], None);
    }

    #[test]
    fn round_trip_and_resume_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut sinks = Sinks::create(dir.path()).unwrap();
        for step in 1..=6u64 {
            let loss = 1.0 / step as f64;
            sinks
                .log(step, [("train/lm_loss", loss), ("train/lr", 1e-4)])
                .unwrap();
        }
        sinks.log(6, [("eval/all/exact_accuracy", 0.5)]).unwrap();
        let path = sinks.metrics_path().to_path_buf();
        drop(sinks);

        let recs = read_metrics(&path).unwrap();
        assert_eq!(recs.len(), 7);
        assert_eq!(recs[2].step, 3);
        assert_eq!(recs[2].values["train/lm_loss"], Some(1.0 / 3.0));
        assert_eq!(recs[6].values["eval/all/exact_accuracy"], Some(0.5));
        assert!(recs.windows(2).all(|w| w[0].time <= w[1].time));

        // Simulate a crash mid-write after step 6, then resume from the checkpoint at step 4.
        let mut f = File::options().append(true).open(&path).unwrap();
        f.write_all(b"{\"step\": 7, \"ti").unwrap();
        drop(f);
        let mut sinks = Sinks::open_append(dir.path(), 4).unwrap();
        assert!(sinks.elapsed() >= recs[3].time);
        for step in 5..=6u64 {
            let loss = 1.0 / step as f64;
            sinks
                .log(step, [("train/lm_loss", loss), ("train/lr", 1e-4)])
                .unwrap();
        }
        drop(sinks);

        // The resumed log has the same steps and values as the uninterrupted one (minus eval).
        let resumed = read_metrics(&path).unwrap();
        let steps: Vec<u64> = resumed.iter().map(|r| r.step).collect();
        assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
        for (a, b) in resumed.iter().zip(&recs) {
            assert_eq!(a.values, b.values);
        }
        assert!(resumed.windows(2).all(|w| w[0].time <= w[1].time));

        // Two event files: the second starts with a session START at the resumed step + 1.
        let files = event_files(dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        let second = files
            .iter()
            .map(|f| read_events(f).unwrap())
            .find(|evs| evs.iter().any(|e| e.session_status.is_some()))
            .unwrap();
        assert_eq!(second[1].session_status, Some(1));
        assert_eq!(second[1].step, 5);
        assert_eq!(second[2].scalars[0].tag, "train/lm_loss");
    }

    #[test]
    fn metrics_of_the_resumed_step_are_not_written_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut sinks = Sinks::create(dir.path()).unwrap();
        for step in 1..=4u64 {
            sinks.log(step, [("train/lm_loss", 1.0)]).unwrap();
        }
        // the evaluation of step 4 was logged, then the run was killed before its checkpoint
        sinks.log(4, [("eval/all/accuracy", 0.5)]).unwrap();
        drop(sinks);
        let mut sinks = Sinks::open_append(dir.path(), 4).unwrap();
        // the resumed run evaluates step 4 again: that record is not written a second time
        sinks.log(4, [("eval/all/accuracy", 0.5)]).unwrap();
        // a metric of step 4 the log lacked is written, and every later step
        sinks
            .log(4, [("eval/all/accuracy", 0.5), ("eval/all/count", 16.0)])
            .unwrap();
        sinks.log(5, [("train/lm_loss", 1.0)]).unwrap();
        let path = sinks.metrics_path().to_path_buf();
        drop(sinks);
        let recs = read_metrics(&path).unwrap();
        let keys: Vec<(u64, Vec<&str>)> = recs
            .iter()
            .map(|r| (r.step, r.values.keys().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            keys[3..],
            [
                (4, vec!["train/lm_loss"]),
                (4, vec!["eval/all/accuracy"]),
                (4, vec!["eval/all/count"]),
                (5, vec!["train/lm_loss"]),
            ]
        );
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        std::fs::write(&path, "{\"step\": 1, \"time\": 0.1}\nnot json\n").unwrap();
        let err = MetricsLog::open_append(&path, 5).err().unwrap().to_string();
        assert!(err.contains("metrics.jsonl:2:"), "{err}");
        assert!(err.contains("not valid JSON"), "{err}");
    }

    #[test]
    fn non_finite_metric_is_named() {
        check_finite(3, [("train/lm_loss", 1.0)]).unwrap();
        let err = check_finite(1200, [("train/accuracy", 0.5), ("train/lm_loss", f64::NAN)])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("step 1200: `train/lm_loss` is NaN"),
            "{err}"
        );
        let err = check_finite(7, [("train/q_halt_loss", f64::INFINITY)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`train/q_halt_loss` is inf"), "{err}");
    }
}
