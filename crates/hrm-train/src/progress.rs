//! Training progress display: a bar on a terminal, plain log lines otherwise.
//!
//! Replaces the reference's rank-0 `tqdm.tqdm(total=train_state.total_steps)` bar
//! (sapientinc/HRM:pretrain.py `launch`). When stderr is a terminal an indicatif bar shows the
//! step, loss, accuracy, exact accuracy, steps/s and ETA; otherwise (CI, `nohup`, a pipe) a plain
//! nanoGPT-style line is printed to stdout every `log_interval` steps:
//! `step 1200/26041 | lm_loss 0.412 | acc 0.81 | exact 0.31 | steps 7.2 | lr 7.0e-05 | 5.1 it/s | eta 1h02m`.
//! Messages go through [`TrainProgress::println`], which suspends the bar so it is not torn.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// An indicatif bar on stderr (chosen when stderr is a terminal).
    Bar,
    /// A plain line on stdout every `log_interval` steps.
    Plain,
    /// Nothing (tests, or a caller that logs by itself).
    Silent,
}

impl ProgressMode {
    /// `Bar` when stderr is a terminal (and `TERM` is not `dumb`), else `Plain`.
    pub fn detect() -> ProgressMode {
        let dumb = std::env::var("TERM").map(|t| t == "dumb").unwrap_or(false);
        if std::io::stderr().is_terminal() && !dumb {
            ProgressMode::Bar
        } else {
            ProgressMode::Plain
        }
    }
}

/// Progress of a training run from `start_step` to `total_steps`.
pub struct TrainProgress {
    total: u64,
    start_step: u64,
    log_interval: u64,
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    started: Instant,
}

impl TrainProgress {
    /// Progress for a run that will end at `total_steps` and (re)starts at `start_step` (0 for a
    /// new run, the checkpoint's step on resume). The mode is [`ProgressMode::detect`]ed and the
    /// log interval is 100 steps; see [`TrainProgress::with_log_interval`] and
    /// [`TrainProgress::with_mode`].
    pub fn new(total_steps: u64, start_step: u64) -> TrainProgress {
        TrainProgress {
            total: total_steps,
            start_step,
            log_interval: 100,
            mode: ProgressMode::Plain,
            bar: None,
            started: Instant::now(),
        }
        .with_mode(ProgressMode::detect())
    }

    /// Print a plain line every `n` steps (the config's `log_interval`; 0 is treated as 1).
    pub fn with_log_interval(mut self, n: u64) -> TrainProgress {
        self.log_interval = n.max(1);
        self
    }

    /// Force a display mode.
    pub fn with_mode(mut self, mode: ProgressMode) -> TrainProgress {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        self.mode = mode;
        if mode == ProgressMode::Bar {
            let bar = ProgressBar::with_draw_target(Some(self.total), ProgressDrawTarget::stderr());
            // The template is a literal; if indicatif ever rejects it, fall back to its default.
            let style = ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_position(self.start_step);
            self.bar = Some(bar);
        }
        self
    }

    /// The display mode in use.
    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    /// Report that `step` finished with `metrics` (keys with or without the `train/` prefix:
    /// `lm_loss`, `accuracy`, `exact_accuracy`, `steps`, `lr` are shown when present).
    pub fn update<'a, I>(&mut self, step: u64, metrics: I)
    where
        I: IntoIterator<Item = (&'a str, f64)>,
    {
        let metrics: Vec<(&str, f64)> = metrics.into_iter().collect();
        let done = step.saturating_sub(self.start_step);
        let elapsed = self.started.elapsed();
        let rate =
            (done > 0 && elapsed > Duration::ZERO).then(|| done as f64 / elapsed.as_secs_f64());
        match self.mode {
            ProgressMode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.set_position(step.min(self.total));
                    bar.set_message(format_metrics(&metrics, rate, step, self.total));
                }
            }
            ProgressMode::Plain => {
                if self.should_log(step) {
                    println!("{}", format_log_line(step, self.total, &metrics, rate));
                }
            }
            ProgressMode::Silent => {}
        }
    }

    /// Whether a plain line is due at `step`: every `log_interval` steps, the first step of
    /// this process (so a run shows it is alive) and the last step.
    pub fn should_log(&self, step: u64) -> bool {
        step.is_multiple_of(self.log_interval) || step == self.start_step + 1 || step == self.total
    }

    /// Print a message line (evaluation results, checkpoint notices) without tearing the bar.
    pub fn println(&self, msg: &str) {
        match (&self.bar, self.mode) {
            (_, ProgressMode::Silent) => {}
            (Some(bar), _) => bar.suspend(|| println!("{msg}")),
            (None, _) => println!("{msg}"),
        }
    }

    /// Remove the bar (call at the end of training).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for TrainProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Value of metric `name` given with or without the `train/` prefix.
fn metric(metrics: &[(&str, f64)], name: &str) -> Option<f64> {
    metrics
        .iter()
        .find(|(k, _)| *k == name || k.strip_prefix("train/") == Some(name))
        .map(|(_, v)| *v)
}

/// `7.0e-05`: one decimal, two-digit signed exponent (Python's `%.1e`).
pub fn format_sci(v: f64) -> String {
    let s = format!("{v:.1e}");
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// `42s`, `12m05s`, `1h02m`.
pub fn format_eta(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        return "?".into();
    }
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The metric part of a progress line: `lm_loss 0.412 | acc 0.81 | ... | 5.1 it/s | eta 1h02m`.
fn format_metrics(metrics: &[(&str, f64)], rate: Option<f64>, step: u64, total: u64) -> String {
    let mut parts = Vec::new();
    if let Some(v) = metric(metrics, "lm_loss") {
        parts.push(format!("lm_loss {v:.3}"));
    }
    if let Some(v) = metric(metrics, "accuracy") {
        parts.push(format!("acc {v:.2}"));
    }
    if let Some(v) = metric(metrics, "exact_accuracy") {
        parts.push(format!("exact {v:.2}"));
    }
    if let Some(v) = metric(metrics, "steps") {
        parts.push(format!("steps {v:.1}"));
    }
    if let Some(v) = metric(metrics, "lr") {
        parts.push(format!("lr {}", format_sci(v)));
    }
    if let Some(r) = rate {
        parts.push(format!("{r:.1} it/s"));
        if r > 0.0 {
            parts.push(format!(
                "eta {}",
                format_eta(total.saturating_sub(step) as f64 / r)
            ));
        }
    }
    parts.join(" | ")
}

/// A full plain log line: `step 1200/26041 | lm_loss 0.412 | ... | 5.1 it/s | eta 1h02m`.
pub fn format_log_line(
    step: u64,
    total: u64,
    metrics: &[(&str, f64)],
    rate: Option<f64>,
) -> String {
    let rest = format_metrics(metrics, rate, step, total);
    if rest.is_empty() {
        format!("step {step}/{total}")
    } else {
        format!("step {step}/{total} | {rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_line_matches_the_documented_format() {
        let m = [
            ("train/lm_loss", 0.41234),
            ("train/accuracy", 0.8123),
            ("train/exact_accuracy", 0.3111),
            ("train/steps", 7.24),
            ("train/lr", 7e-5),
            ("train/count", 768.0),
        ];
        // 24841 steps left at 5.1 it/s = 4871 s = 1h21m.
        let line = format_log_line(1200, 26041, &m, Some(5.1));
        assert_eq!(
            line,
            "step 1200/26041 | lm_loss 0.412 | acc 0.81 | exact 0.31 | steps 7.2 | lr 7.0e-05 \
             | 5.1 it/s | eta 1h21m"
        );
        assert_eq!(format_log_line(1, 10, &[], None), "step 1/10");
        assert_eq!(
            format_log_line(1, 10, &[("lm_loss", 2.0)], None),
            "step 1/10 | lm_loss 2.000"
        );
    }

    #[test]
    fn number_formats() {
        assert_eq!(format_sci(7e-5), "7.0e-05");
        assert_eq!(format_sci(1e-2), "1.0e-02");
        assert_eq!(format_sci(123.0), "1.2e+02");
        assert_eq!(format_eta(42.4), "42s");
        assert_eq!(format_eta(725.0), "12m05s");
        assert_eq!(format_eta(3720.0), "1h02m");
        assert_eq!(format_eta(f64::INFINITY), "?");
    }

    #[test]
    fn plain_cadence() {
        let p = TrainProgress::new(1000, 200)
            .with_mode(ProgressMode::Silent)
            .with_log_interval(50);
        assert!(p.should_log(201)); // first step after a resume
        assert!(!p.should_log(202));
        assert!(p.should_log(250));
        assert!(p.should_log(1000));
        assert!(!p.should_log(999));
        let mut p = p;
        p.update(201, [("train/lm_loss", 1.0)]);
        p.println("silent mode prints nothing");
        p.finish();
    }
}
