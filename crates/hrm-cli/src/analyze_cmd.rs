//! `hrm analyze`: the flags and the printed summary; the analysis, its figures and the report
//! are `hrm_train::analyze`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use hrm_train::analyze::{analyze, AnalyzeOptions};

/// Flags of `hrm analyze`.
#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// Model checkpoint (safetensors), run folder (its newest checkpoint) or
    /// `hub:OWNER/REPO[@REV][/FILE]` (a reference `.pt` is converted for the dataset).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Dataset folder (its `test` split is analysed).
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder: analysis.json, a PNG and an SVG per figure, report.html.
    #[arg(long)]
    pub out: PathBuf,
    /// Analyse only the first N test examples.
    #[arg(long, default_value_t = 1000)]
    pub max_examples: usize,
    /// The largest inference budget (segments) of the scaling curve; every rollout runs it.
    #[arg(long, default_value_t = 32)]
    pub max_segments: usize,
    /// Puzzles whose per-segment answers the report shows.
    #[arg(long, default_value_t = 4)]
    pub show_puzzles: usize,
    /// Puzzles whose trajectories the PCA figure shows.
    #[arg(long, default_value_t = 16)]
    pub pca_puzzles: usize,
    /// Examples per batch.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `hrm analyze`.
pub fn analyze_cmd(a: &AnalyzeArgs) -> Result<()> {
    let device = crate::device::open_device(&a.device)?;
    let opts = AnalyzeOptions {
        max_examples: a.max_examples,
        max_segments: a.max_segments,
        show_puzzles: a.show_puzzles,
        pca_puzzles: a.pca_puzzles,
        batch_size: a.batch_size,
        progress: std::io::stderr().is_terminal(),
        ..AnalyzeOptions::new(a.checkpoint.clone(), a.data.clone(), a.out.clone())
    };
    let r = analyze(&opts, &device)?;
    let d = &r.dimensionality;
    println!(
        "{} {} test examples, {} segments, {:.1} s",
        r.task, r.examples, r.max_segments, r.seconds
    );
    for p in [&d.per_puzzle, &d.per_token] {
        println!(
            "PR ({}): trained z_H {:.2} z_L {:.2} (H/L {:.2}); untrained z_H {:.2} z_L {:.2} (H/L {:.2})",
            p.samples, p.trained.pr_h, p.trained.pr_l, p.trained.ratio, p.untrained.pr_h,
            p.untrained.pr_l, p.untrained.ratio
        );
    }
    let ad = &r.adaptive;
    let curve: Vec<String> = ad
        .budgets
        .iter()
        .zip(ad.accuracy_fixed.iter().zip(&ad.accuracy_learned))
        .map(|(b, (f, l))| format!("{b}: {f:.3}/{l:.3}"))
        .collect();
    println!("accuracy by budget (fixed/learned): {}", curve.join(", "));
    println!("wrote {}", opts.out.join("report.html").display());
    Ok(())
}
