//! Progress reporting for long data jobs: an indicatif bar on a terminal, log lines otherwise.
//!
//! Mirrors the `tqdm(...)` wrappers of sapientinc/HRM:dataset/build_*_dataset.py. tqdm draws a bar
//! on a terminal and garbles log files; here, when stderr is not a terminal (CI, `nohup`, pipes)
//! we print `label: 12000/50000 (24%)` lines at most every ~2 s, plus one final line from
//! [`Progress::finish`]. `HRM_PROGRESS=off|plain|bar` overrides the detection.
//!
//! A `Progress` is `Sync`: rayon workers may call [`Progress::inc`] concurrently.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// An indicatif bar on stderr.
    Bar,
    /// Plain `label: done/total (pct%)` lines on stderr, throttled.
    Plain,
    /// Nothing.
    Off,
}

impl ProgressMode {
    /// `HRM_PROGRESS` if set to `bar`, `plain` or `off`; else `Bar` when stderr is a terminal and
    /// `Plain` otherwise.
    pub fn detect() -> ProgressMode {
        match std::env::var("HRM_PROGRESS").ok().as_deref() {
            Some("bar") => ProgressMode::Bar,
            Some("plain") => ProgressMode::Plain,
            Some("off") => ProgressMode::Off,
            _ if std::io::stderr().is_terminal() => ProgressMode::Bar,
            _ => ProgressMode::Plain,
        }
    }
}

/// Minimum time between two plain progress lines.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(2);

/// A progress counter for one phase of a job (`total` units of work).
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: u64,
    done: AtomicU64,
    mode: ProgressMode,
    bar: Option<indicatif::ProgressBar>,
    last_line: Mutex<Instant>,
    finished: AtomicBool,
}

impl Progress {
    /// A counter shown according to [`ProgressMode::detect`].
    pub fn new(label: impl Into<String>, total: u64) -> Progress {
        Progress::with_mode(label, total, ProgressMode::detect())
    }

    /// A counter shown in the given mode.
    pub fn with_mode(label: impl Into<String>, total: u64, mode: ProgressMode) -> Progress {
        let label = label.into();
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            let style = indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({percent}%) eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(label.clone());
            bar
        });
        Progress {
            label,
            total,
            done: AtomicU64::new(0),
            mode,
            bar,
            last_line: Mutex::new(Instant::now()),
            finished: AtomicBool::new(false),
        }
    }

    /// A counter that shows nothing (for tests and library callers that want silence).
    pub fn hidden(total: u64) -> Progress {
        Progress::with_mode("", total, ProgressMode::Off)
    }

    /// The plain-text line for `done` units: `label: 12000/50000 (24%)`.
    pub fn line(&self, done: u64) -> String {
        let pct = (done.min(self.total) * 100)
            .checked_div(self.total)
            .unwrap_or(100);
        format!("{}: {done}/{} ({pct}%)", self.label, self.total)
    }

    /// Units done so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Adds `n` units of work.
    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        match self.mode {
            ProgressMode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.inc(n);
                }
            }
            ProgressMode::Plain => {
                // Throttle: only the thread that wins the lock and sees the interval elapsed
                // prints; others skip without waiting.
                if let Ok(mut last) = self.last_line.try_lock() {
                    if last.elapsed() >= PLAIN_INTERVAL && done < self.total {
                        *last = Instant::now();
                        eprintln!("{}", self.line(done));
                    }
                }
            }
            ProgressMode::Off => {}
        }
    }

    /// Ends the phase: completes the bar or prints the final plain line (once).
    pub fn finish(&self) {
        if self.finished.swap(true, Ordering::Relaxed) {
            return;
        }
        match self.mode {
            ProgressMode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.finish();
                }
            }
            ProgressMode::Plain => eprintln!("{}", self.line(self.done())),
            ProgressMode::Off => {}
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // A bar left unfinished (error path) is cleared instead of staying half-drawn.
        if !self.finished.load(Ordering::Relaxed) {
            if let Some(bar) = &self.bar {
                bar.abandon();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_format() {
        let p = Progress::with_mode("sudoku train", 50_000, ProgressMode::Off);
        assert_eq!(p.line(12_000), "sudoku train: 12000/50000 (24%)");
        assert_eq!(p.line(50_000), "sudoku train: 50000/50000 (100%)");
        let z = Progress::with_mode("empty", 0, ProgressMode::Off);
        assert_eq!(z.line(0), "empty: 0/0 (100%)");
    }

    #[test]
    fn counts_across_threads() {
        let p = Progress::with_mode("t", 4000, ProgressMode::Plain);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        p.inc(1);
                    }
                });
            }
        });
        assert_eq!(p.done(), 4000);
        p.finish();
        p.finish();
    }
}
