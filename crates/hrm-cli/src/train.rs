//! `hrm train`: the flags, the Ctrl-C handling and the summary line; the run itself is
//! `hrm_train::launch` (the reference's pretrain.py: a config file plus Hydra-style
//! `key=value` overrides).
//!
//! `--gpus N` replaces `torchrun --nproc-per-node N`: this process becomes a launcher that
//! starts N copies of itself, rank r on `cuda:r`, waits for them, and stops the others if one
//! fails.
//!
//! Exit codes: 0 for a finished run (also `--stop-after`), 130 / 143 / 129 (128 + the signal, as
//! shells report it) for a run stopped by SIGINT / SIGTERM / SIGHUP, after its checkpoint and
//! summary line (or before training began, with nothing written), 1 for an error.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use hrm_train::dist::RankEnv;
use hrm_train::launch::{check_launch, launch_ranks, Invocation};
use hrm_train::trainer::{Interrupted, TrainOptions, TrainSummary};

use crate::interrupt::{exit_code, watch};

/// Flags of `hrm train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Config file (TOML; presets in configs/), then `key=value` overrides with the reference's
    /// key names, e.g. `data_path=data/sudoku-extreme-1k-aug-1000 epochs=20000 arch.L_cycles=8`.
    /// With --resume, only overrides.
    pub args: Vec<String>,
    /// Run folder (default: a new folder under runs/).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Continue the run in this folder from its newest checkpoint.
    #[arg(long, conflicts_with = "run_dir")]
    pub resume: Option<PathBuf>,
    /// Stop with a checkpoint after this many optimizer steps (for smoke runs).
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// No progress bar or log lines.
    #[arg(long)]
    pub quiet: bool,
    /// Data-parallel training on N GPUs (`cuda:0` .. `cuda:N-1`, one process each, gradients
    /// summed over NCCL; needs a build with `--features nccl`). The global batch is split evenly.
    #[arg(long, default_value_t = 1)]
    pub gpus: usize,
}

impl TrainArgs {
    fn invocation(&self) -> Invocation {
        Invocation {
            args: self.args.clone(),
            resume: self.resume.clone(),
        }
    }

    /// The command line of rank `r` of `--gpus N`: these flags on `cuda:r`, quiet but rank 0.
    fn rank_args(&self, r: usize) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec!["train".into()];
        v.extend(self.args.iter().map(OsString::from));
        v.push(format!("device=cuda:{r}").into());
        if let Some(d) = &self.run_dir {
            v.extend(["--run-dir".into(), d.into()]);
        }
        if let Some(d) = &self.resume {
            v.extend(["--resume".into(), d.into()]);
        }
        if let Some(s) = self.stop_after {
            v.extend(["--stop-after".into(), s.to_string().into()]);
        }
        if self.quiet || r > 0 {
            v.push("--quiet".into());
        }
        v
    }
}

/// `hrm train --gpus N`: start N ranks of this binary and wait for them; exits with the ranks'
/// interrupt code if they were stopped.
fn launch(a: &TrainArgs) -> Result<()> {
    check_launch(&a.invocation(), a.gpus)?;
    let exe = std::env::current_exe().context("locating the hrm executable")?;
    // the first Ctrl-C reaches every rank (same process group): they agree to stop at the same
    // step and checkpoint; the launcher just keeps waiting for them. A SIGTERM sent to the
    // launcher alone is not forwarded (send it to the process group, like Ctrl-C).
    watch(|_| eprintln!("interrupt: the ranks finish the step and checkpoint"))?;
    if let Some(code) = launch_ranks(&exe, a.gpus, |r| a.rank_args(r))? {
        std::process::exit(code);
    }
    Ok(())
}

/// `finished at step N in DIR` (or `stopped ...`), with the rank count of a data-parallel run.
fn print_summary(summary: &TrainSummary, ranks: Option<usize>) {
    println!(
        "{} at step {} in {}{}",
        if summary.interrupted {
            "stopped"
        } else {
            "finished"
        },
        summary.step,
        summary.run_dir.display(),
        ranks.map(|n| format!(" ({n} ranks)")).unwrap_or_default()
    );
}

/// `hrm train`.
pub fn train_cmd(a: &TrainArgs) -> Result<()> {
    let rank_env = RankEnv::from_env()?;
    if rank_env.is_none() && a.gpus > 1 {
        return launch(a);
    }
    if a.gpus == 0 {
        bail!("--gpus must be at least 1");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let signal = {
        let stop = stop.clone();
        // first interrupt: finish the step, checkpoint, exit; second: exit at once
        watch(move |sig| {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("interrupted twice: exiting without a checkpoint");
                std::process::exit(exit_code(sig));
            }
            eprintln!(
                "interrupt: finishing the step and writing a checkpoint (Ctrl-C again to abort)"
            );
        })?
    };
    let opts = TrainOptions {
        run_dir: a.run_dir.clone(),
        stop,
        stop_after: a.stop_after,
        quiet: a.quiet,
    };
    let inv = a.invocation();
    let (result, ranks, prints) = match rank_env {
        Some(env) => (
            inv.run_rank(&env, &opts),
            Some(env.world_size),
            env.rank == 0,
        ),
        None => (inv.run(&opts), None, true),
    };
    let sig = signal.load(Ordering::SeqCst);
    match result {
        Ok(summary) => {
            if prints {
                print_summary(&summary, ranks);
            }
            if summary.interrupted && sig != 0 {
                std::process::exit(exit_code(sig));
            }
            Ok(())
        }
        Err(e) if e.is::<Interrupted>() && sig != 0 => {
            eprintln!("{e}");
            std::process::exit(exit_code(sig));
        }
        Err(e) => Err(e),
    }
}
