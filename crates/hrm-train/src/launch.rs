//! `hrm train` as one process or as N data-parallel ranks: the config an invocation means, and
//! the launcher that replaces `torchrun --nproc-per-node N` (start N copies of the binary, rank r
//! on `cuda:r` with the rank environment of [`crate::dist`], wait for them, and stop the others
//! if one fails).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::config::{DeviceSpec, TrainConfig};
use crate::dist::{Dist, RankEnv, ENV_RANK, ENV_RENDEZVOUS, ENV_WORLD_SIZE};
use crate::rundir::RunDir;
use crate::trainer::{
    device_for, resume, resume_dist, train, train_dist, TrainOptions, TrainSummary,
};

/// What `hrm train` was asked to do: a config file and `key=value` overrides, or (with `resume`)
/// a run folder to continue and overrides only.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// The positional arguments: the config file first (unless resuming), then overrides.
    pub args: Vec<String>,
    /// The run folder to continue from its newest checkpoint.
    pub resume: Option<PathBuf>,
}

impl Invocation {
    /// The config file and the overrides of a new run.
    pub fn config_and_overrides(&self) -> Result<(PathBuf, Vec<String>)> {
        match self.args.split_first() {
            Some((f, rest)) if !f.contains('=') => Ok((PathBuf::from(f), rest.to_vec())),
            _ => bail!(
                "hrm train needs a config file first, e.g. `hrm train configs/tiny.toml \
                 data_path=...`"
            ),
        }
    }

    /// The config this invocation will train with.
    pub fn config(&self) -> Result<TrainConfig> {
        match &self.resume {
            Some(dir) => {
                let run = RunDir::open(dir)?;
                if self.args.is_empty() {
                    Ok(run.load_config()?)
                } else {
                    Ok(TrainConfig::load(&run.config_path(), &self.args)?)
                }
            }
            None => {
                let (file, overrides) = self.config_and_overrides()?;
                Ok(TrainConfig::load(&file, &overrides)?)
            }
        }
    }

    /// Train (or resume) in this process alone.
    pub fn run(&self, opts: &TrainOptions) -> Result<TrainSummary> {
        match &self.resume {
            Some(dir) => resume(dir, &self.args, opts),
            None => train(self.config()?, opts),
        }
    }

    /// Train as rank `env.rank` of a group started by [`launch_ranks`]: the rank's device,
    /// joined to the NCCL group.
    pub fn run_rank(&self, env: &RankEnv, opts: &TrainOptions) -> Result<TrainSummary> {
        let r = env.rank;
        let cfg = self.config().with_context(|| format!("rank {r}"))?;
        let device = device_for(&cfg).with_context(|| format!("rank {r}"))?;
        let coll = env
            .connect(&device)
            .with_context(|| format!("rank {r}: joining the NCCL group"))?;
        let dist = Dist::new(coll).with_device(device);
        let summary = match &self.resume {
            Some(dir) => resume_dist(dir, &self.args, opts, dist),
            None => train_dist(cfg, opts, dist),
        };
        summary.with_context(|| format!("rank {r} of {}", env.world_size))
    }
}

/// Whether `inv` can run on `n` GPUs: a build with NCCL, a config that trains on a GPU, and a
/// batch that `n` ranks can split.
pub fn check_launch(inv: &Invocation, n: usize) -> Result<()> {
    if !cfg!(feature = "nccl") {
        bail!(
            "--gpus {n}: this `hrm` was built without NCCL; build with `--features nccl` \
             (see the README's GPU section)"
        );
    }
    let cfg = inv.config()?;
    if cfg.device_spec()? == DeviceSpec::Cpu {
        bail!("--gpus {n}: the config trains on `device = \"cpu\"`; set device=cuda");
    }
    cfg.check_world_size(n)?;
    Ok(())
}

/// Start `n` ranks of the executable `exe`, rank r with the arguments `rank_args(r)` and the
/// rank environment (rank, world size, a fresh rendezvous folder), and wait for all of them.
/// When one fails, the others would wait for it forever inside NCCL: they are stopped, and the
/// error names the rank. A rank that exits with an interrupt's code ([`INTERRUPT_EXIT_CODES`]:
/// it stopped on Ctrl-C / SIGTERM after its checkpoint) has not failed: the others, stopping at
/// the same step, are waited for, and that code is returned (None when every rank finished).
pub fn launch_ranks(
    exe: &Path,
    n: usize,
    rank_args: impl Fn(usize) -> Vec<OsString>,
) -> Result<Option<i32>> {
    let rendezvous = std::env::temp_dir().join(format!("hrm-dist-{}", std::process::id()));
    std::fs::create_dir_all(&rendezvous)
        .with_context(|| format!("creating {}", rendezvous.display()))?;
    let mut children: Vec<Option<Child>> = Vec::with_capacity(n);
    for r in 0..n {
        let child = Command::new(exe)
            .args(rank_args(r))
            .env(ENV_RANK, r.to_string())
            .env(ENV_WORLD_SIZE, n.to_string())
            .env(ENV_RENDEZVOUS, &rendezvous)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting rank {r} ({})", exe.display()))?;
        children.push(Some(child));
    }
    let (failure, interrupted) = wait_all(&mut children);
    let _ = std::fs::remove_dir_all(&rendezvous);
    match failure {
        Some(f) => bail!("data-parallel training failed: {f} (the other ranks were stopped)"),
        None => Ok(interrupted),
    }
}

/// The exit codes of `hrm train` stopped by SIGHUP, SIGINT or SIGTERM (128 + the signal).
pub const INTERRUPT_EXIT_CODES: [i32; 3] = [129, 130, 143];

/// Wait for every child; once one has failed, kill the rest. Returns the first failure and the
/// first interrupt exit code.
fn wait_all(children: &mut [Option<Child>]) -> (Option<String>, Option<i32>) {
    let mut failure: Option<String> = None;
    let mut interrupted: Option<i32> = None;
    loop {
        let mut running = 0;
        for (r, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            match child.try_wait() {
                Ok(Some(status)) => {
                    let code = status.code().filter(|c| INTERRUPT_EXIT_CODES.contains(c));
                    if code.is_some() {
                        interrupted = interrupted.or(code);
                    } else if !status.success() && failure.is_none() {
                        failure = Some(format!("rank {r} exited with {status}"));
                    }
                    *slot = None;
                }
                Ok(None) => running += 1,
                Err(e) => {
                    failure.get_or_insert(format!("waiting for rank {r}: {e}"));
                    *slot = None;
                }
            }
        }
        if running == 0 {
            return (failure, interrupted);
        }
        if failure.is_some() {
            for child in children.iter_mut().flatten() {
                let _ = child.kill();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_run_needs_a_config_file_first() {
        let inv = Invocation {
            args: vec!["data_path=x".into()],
            resume: None,
        };
        let e = inv.config_and_overrides().unwrap_err().to_string();
        assert!(e.contains("needs a config file first"), "{e}");
        let inv = Invocation {
            args: vec!["c.toml".into(), "epochs=2".into()],
            resume: None,
        };
        let (f, o) = inv.config_and_overrides().unwrap();
        assert_eq!(
            (f, o),
            (PathBuf::from("c.toml"), vec!["epochs=2".to_string()])
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_failing_rank_stops_the_others() {
        let t0 = std::time::Instant::now();
        let sh = Path::new("/bin/sh");
        let e = launch_ranks(sh, 2, |r| {
            let script = if r == 0 { "sleep 30" } else { "exit 3" };
            vec!["-c".into(), script.into()]
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("rank 1 exited with"), "{e}");
        assert!(t0.elapsed().as_secs() < 20, "rank 0 was not stopped");
        assert_eq!(
            launch_ranks(sh, 2, |_| vec!["-c".into(), "exit 0".into()]).unwrap(),
            None
        );
        // ranks stopped by an interrupt after their checkpoint: not a failure, the code passes on
        let code = launch_ranks(sh, 2, |r| {
            let script = if r == 0 {
                "exit 143"
            } else {
                "sleep 1; exit 143"
            };
            vec!["-c".into(), script.into()]
        })
        .unwrap();
        assert_eq!(code, Some(143));
    }
}
