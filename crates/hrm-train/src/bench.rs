//! Speed measurements of `hrm bench`: training steps, eval segments and batch-1 solves of a model
//! preset, timed the way the PyTorch peer's `bench` / `bench-eval` time them.
//!
//! - train: one optimizer step = one ACT segment for the whole batch (gradient segment + the
//!   no-grad Q-target segment + backward + SignSGD + AdamATan2), the carry kept across steps;
//! - eval: one eval ACT segment (a fresh rollout every `halt_max_steps` segments);
//! - solve: one full rollout (`halt_max_steps` segments) of batch 1, i.e. `hrm solve` without
//!   the process start and the checkpoint load.
//!
//! The model uses the reference initialisation (seed 0) and four synthetic batches of random
//! Sudoku-like rows (labels 2..V-1, inputs = label or 1 = blank), as the peer does. On a GPU
//! each step ends with a device synchronisation, so the time is the step's, not its launch's.

use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Device;
use hrm_data::Batch;
use hrm_model::config::{Arch, ForwardDtype, ModelConfig};
use hrm_model::loss::LossType;
use hrm_model::train::{forward_backward, Optimizers};
use hrm_model::{Engine, Hrm, Kernels};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The peer's model presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The reference Sudoku model (hidden 512, 4+4 layers, seq 81).
    Sudoku,
    /// The reference Maze model (seq 900, vocab 6).
    Maze,
    /// hidden 64, 4 heads, 2+2 layers, seq 81.
    Tiny,
}

impl Preset {
    /// The preset's model config for batches of `batch` rows.
    pub fn config(self, batch: usize) -> ModelConfig {
        match self {
            Preset::Sudoku => ModelConfig::sudoku(batch),
            Preset::Maze => ModelConfig::maze(batch),
            Preset::Tiny => ModelConfig::tiny(batch),
        }
    }
}

/// What to time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchMode {
    /// Training steps.
    Train,
    /// Eval segments.
    Eval,
    /// Whole batch-1 rollouts.
    Solve,
}

/// The preset's config as `arch` ([`ModelConfig::with_arch`]; `mlp_t` for TRM), with an `HxL`
/// cycles override (e.g. `4x4`) and the forward in bf16 when `bf16_forward` (parameters and
/// optimizer stay f32).
pub fn bench_config(
    preset: Preset,
    batch: usize,
    cycles: Option<&str>,
    bf16_forward: bool,
    (arch, mlp_t): (Arch, bool),
) -> Result<ModelConfig> {
    if mlp_t && arch != Arch::Trm {
        bail!("--mlp-t is TRM's (add --arch trm)");
    }
    let mut cfg = preset.config(batch).with_arch(arch, mlp_t);
    if let Some(c) = cycles {
        let Some((h, l)) = c.split_once('x') else {
            bail!("--cycles expects HxL, e.g. 2x2")
        };
        cfg.h_cycles = h.parse()?;
        cfg.l_cycles = l.parse()?;
    }
    cfg.validate()?;
    if bf16_forward {
        cfg.forward_dtype = ForwardDtype::BF16;
    }
    Ok(cfg)
}

/// A randomly initialised model, the kernels of its no-gradient calls and the random generator
/// its steps go on with.
pub struct Bench {
    /// The model (reference initialisation, seed 0).
    pub model: Hrm,
    kernels: Kernels,
    device: Device,
    rng: ChaCha8Rng,
}

/// Timed steps of [`Bench::run`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Median wall-clock seconds of a timed step.
    pub median_s: f64,
    /// CPU seconds (user + system) of this process per timed step, where known.
    pub cpu_s_per_step: Option<f64>,
}

impl Bench {
    /// The model of `cfg` on `device`, with the matrix products of the mode to time (`None`: the
    /// model is only written out): `bf16` selects bf16 block products on AMX or AVX512-BF16 for
    /// an f32 model (eval and solve; training in bf16 is `forward_dtype = bfloat16`);
    /// otherwise solve gets the small-batch f32 kernel, as `hrm solve` does for its one puzzle.
    pub fn new(
        cfg: &ModelConfig,
        device: &Device,
        bf16: bool,
        mode: Option<BenchMode>,
    ) -> Result<Bench> {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let model = Hrm::new(cfg, device, &mut rng)?;
        let kernels = if bf16 {
            if mode == Some(BenchMode::Train) {
                bail!(
                    "--bf16 (bf16 block products of an f32 model) is for eval and solve; train in \
                     bf16 with --dtype bfloat16"
                );
            }
            // refused here, before anything runs, where the CPU has no bf16 unit
            Engine::new(&model, Kernels::Bf16).map_err(|e| anyhow::anyhow!("--bf16: {e}"))?;
            Kernels::Bf16
        } else if mode == Some(BenchMode::Solve) {
            // as `hrm solve` does for its one puzzle (where the small-batch kernel runs)
            Kernels::PackedF32
        } else {
            Kernels::Plain
        };
        Ok(Bench {
            model,
            kernels,
            device: device.clone(),
            rng,
        })
    }

    /// Run `warmup` untimed then `steps` timed steps of `mode`; `on_step(i, seconds)` is called
    /// after every step (`i < warmup`: a warm-up step).
    pub fn run(
        &mut self,
        mode: BenchMode,
        warmup: usize,
        steps: usize,
        mut on_step: impl FnMut(usize, f64),
    ) -> Result<Timing> {
        let (model, rng) = (&self.model, &mut self.rng);
        let engine = Engine::new(model, self.kernels)?;
        let cfg = &model.cfg;
        let batch = cfg.batch_size;
        let mut data_rng = ChaCha8Rng::seed_from_u64(1);
        let batches: Vec<Batch> = (0..4)
            .map(|_| Batch::random(batch, cfg.seq_len, cfg.vocab_size, 0.6, None, &mut data_rng))
            .collect();
        let mut opt = Optimizers::new(model, (0.9, 0.95), 1.0, 1.0);
        let mut carry = None;
        let mut times = Vec::new();
        let mut cpu_start = None;
        for i in 0..warmup + steps {
            if i == warmup {
                cpu_start = cpu_seconds();
            }
            let b = &batches[i % batches.len()];
            let t0 = Instant::now();
            match mode {
                BenchMode::Train => {
                    let c = match carry.take() {
                        Some(c) => c,
                        None => model.initial_carry(b)?,
                    };
                    let step = forward_backward(model, &c, b, LossType::Stablemax, batch, rng)?;
                    opt.step(model, &step.grads, 1e-4, 1e-4)?;
                    carry = Some(step.carry);
                }
                BenchMode::Eval => {
                    let c = match carry.take() {
                        Some(c) if i % cfg.halt_max_steps != 0 => c,
                        _ => model.initial_carry(b)?,
                    };
                    let (c, out) = engine.act_step(&c, b, &mut ())?;
                    hrm_model::to_host_f32(&out.logits)?; // include the host copy
                    carry = Some(c);
                }
                BenchMode::Solve => {
                    let mut c = model.initial_carry(b)?;
                    for _ in 0..cfg.halt_max_steps {
                        let (next, out) = engine.act_step(&c, b, &mut ())?;
                        hrm_model::to_host_f32(&out.logits)?;
                        c = next;
                    }
                }
            }
            // a GPU step is done when its kernels are, not when they are queued
            self.device.synchronize()?;
            let dt = t0.elapsed().as_secs_f64();
            on_step(i, dt);
            if i >= warmup {
                times.push(dt);
            }
        }
        let Some(median_s) = median(&mut times) else {
            bail!("--steps must be at least 1")
        };
        Ok(Timing {
            median_s,
            cpu_s_per_step: cpu_start
                .zip(cpu_seconds())
                .map(|(a0, a1)| (a1 - a0) / steps as f64),
        })
    }
}

/// The median (the mean of the middle two for an even count); `None` when empty.
fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(|x, y| x.total_cmp(y));
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// CPU seconds (user + system) this process has used so far (Linux `/proc/self/stat`).
pub fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // fields after the parenthesised command name; utime and stime are the 12th and 13th of them
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn cycles_override_and_its_error() {
        let c = bench_config(Preset::Tiny, 2, Some("3x5"), true, (Arch::Hrm, false)).unwrap();
        assert_eq!((c.h_cycles, c.l_cycles, c.batch_size), (3, 5, 2));
        assert_eq!(c.forward_dtype, ForwardDtype::BF16);
        let e = bench_config(Preset::Tiny, 2, Some("3"), false, (Arch::Hrm, false)).unwrap_err();
        assert!(e.to_string().contains("HxL"), "{e}");
    }

    #[test]
    fn a_tiny_training_step_is_timed() {
        let cfg = bench_config(Preset::Tiny, 2, Some("1x1"), false, (Arch::Hrm, false)).unwrap();
        let mut b = Bench::new(&cfg, &Device::Cpu, false, Some(BenchMode::Train)).unwrap();
        let mut seen = Vec::new();
        let t = b.run(BenchMode::Train, 1, 1, |i, _| seen.push(i)).unwrap();
        assert_eq!(seen, vec![0, 1]);
        assert!(t.median_s > 0.0);
        // every architecture trains under the bench
        for arch in [
            (Arch::Trm, false),
            (Arch::Trm, true),
            (Arch::Transformer, false),
        ] {
            let cfg = bench_config(Preset::Tiny, 2, None, false, arch).unwrap();
            assert_eq!((cfg.arch, cfg.mlp_t), arch);
            let mut b = Bench::new(&cfg, &Device::Cpu, false, Some(BenchMode::Train)).unwrap();
            assert!(b.run(BenchMode::Train, 0, 1, |_, _| {}).unwrap().median_s > 0.0);
        }
        let e = bench_config(Preset::Tiny, 2, None, false, (Arch::Hrm, true)).unwrap_err();
        assert!(e.to_string().contains("--arch trm"), "{e}");
        let e = b.run(BenchMode::Eval, 0, 0, |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("--steps"), "{e}");
    }
}
