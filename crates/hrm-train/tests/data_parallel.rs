//! Data parallelism on the CPU: N ranks in N threads connected by the in-process collective
//! (`hrm_train::dist::LocalGroup`) against one process with the whole batch.
//!
//! What must hold (sapientinc/HRM:pretrain.py under torchrun; models/sparse_embedding.py's
//! distributed SignSGD):
//! - one rank through the collective is the single-process step, bit for bit;
//! - 2 ranks x B/2 rows give the weights of 1 rank x B rows after K steps, up to float
//!   summation order (tolerance derived below);
//! - the trainer with 2 ranks writes one run folder (rank 0's) whose checkpoints resume exactly,
//!   on 2 ranks.
//!
//! Tolerance: the two runs compute the same gradients with a different float summation order
//! (each rank sums its B/2 rows inside its matrix products, then the two partial sums are added;
//! one process sums all B rows at once), so gradients differ by a few f32 ulps relative to their
//! size (~1e-7 relative). AdamATan2 maps a gradient to an update of at most
//! `lr * pi/2 / (1 - beta1^t)` through atan2, which is 1-Lipschitz in the gradient ratio, so
//! such a perturbation moves an update by ~lr * 1e-7 and the weights by orders of magnitude
//! less than 1e-6 over a few steps; forward differences compound that only mildly at these
//! sizes. The one exception is an element whose first moment is within rounding of zero: its
//! update can flip sign (2 * lr * pi/2 at most). We therefore require (a) 99.9% of the elements
//! within 1e-6, and (b) every element within the largest divergence AdamATan2 allows.

mod common;

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use hrm_model::config::ModelConfig;
use hrm_model::loss::LossType;
use hrm_model::train::{forward_backward, Optimizers, TrainStep};
use hrm_model::{Batch, Carry, Hrm};
use hrm_train::config::TrainConfig;
use hrm_train::dist::{Dist, LocalGroup};
use hrm_train::trainer::{resume_dist, train, train_dist, TrainOptions};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use common::{dataset, files, quiet, tiny_run_config};

const LR: f64 = 1e-3;
const PUZZLE_LR: f64 = 1e-2;
const BETAS: (f64, f64) = (0.9, 0.95);

fn model_cfg(batch: usize) -> ModelConfig {
    ModelConfig {
        hidden_size: 32,
        num_heads: 2,
        h_layers: 1,
        l_layers: 1,
        h_cycles: 1,
        l_cycles: 2,
        puzzle_emb_ndim: 32,
        num_puzzle_identifiers: 5,
        halt_max_steps: 2,
        halt_exploration_prob: 0.0,
        ..ModelConfig::tiny(batch)
    }
}

/// K global batches of B rows; puzzle ids repeat so that SignSGD sums duplicates across ranks.
fn batches(b: usize, k: usize) -> Vec<Batch> {
    let cfg = model_cfg(b);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    (0..k)
        .map(|_| Batch::random(b, cfg.seq_len, cfg.vocab_size, 0.5, Some(5), &mut rng))
        .collect()
}

fn slice(b: &Batch, rank: usize, n: usize) -> Batch {
    let lb = b.batch_size / n;
    let l = b.seq_len;
    Batch {
        inputs: b.inputs[rank * lb * l..(rank + 1) * lb * l].to_vec(),
        labels: b.labels[rank * lb * l..(rank + 1) * lb * l].to_vec(),
        puzzle_identifiers: b.puzzle_identifiers[rank * lb..(rank + 1) * lb].to_vec(),
        batch_size: lb,
        seq_len: l,
        effective_size: lb,
        set_name: String::new(),
    }
}

/// The state dict (every tensor, puzzle table included) on the host, and the loss per step.
type Outcome = (Vec<(String, Vec<f32>)>, Vec<f64>);

fn state(model: &Hrm) -> Vec<(String, Vec<f32>)> {
    model
        .state_dict()
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

/// K steps of the model of `rows` rows per step (the same seed everywhere) over `data`, each
/// batch's gradients from `step`; the weights after them and the loss of every step.
fn steps(
    data: impl IntoIterator<Item = Batch>,
    rows: usize,
    mut step: impl FnMut(&Hrm, &Carry, &Batch, &mut ChaCha8Rng) -> TrainStep,
) -> Outcome {
    let model = Hrm::new(
        &model_cfg(rows),
        &Device::Cpu,
        &mut ChaCha8Rng::seed_from_u64(5),
    )
    .unwrap();
    let mut opt = Optimizers::new(&model, BETAS, 0.1, 0.1);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut carry: Option<Carry> = None;
    let mut losses = Vec::new();
    for batch in data {
        let c = carry
            .take()
            .unwrap_or_else(|| model.initial_carry(&batch).unwrap());
        let ts = step(&model, &c, &batch, &mut rng);
        opt.step(&model, &ts.grads, LR, PUZZLE_LR).unwrap();
        losses.push(ts.loss.total);
        carry = Some(ts.carry);
    }
    (state(&model), losses)
}

/// K steps of one process on the whole batches.
fn single(data: &[Batch]) -> Outcome {
    let b = data[0].batch_size;
    steps(data.iter().cloned(), b, |model, c, batch, rng| {
        forward_backward(model, c, batch, LossType::Stablemax, b, rng).unwrap()
    })
}

/// K steps of `n` ranks (threads), each on its slice; returns every rank's outcome.
fn ranks(data: Arc<Vec<Batch>>, n: usize) -> Vec<Outcome> {
    let handles: Vec<_> = LocalGroup::ranks(n)
        .into_iter()
        .map(|c| {
            let data = data.clone();
            std::thread::spawn(move || {
                let d = Dist::new(Box::new(c));
                let gb = data[0].batch_size;
                let local = data.iter().map(|b| slice(b, d.rank(), n));
                steps(local, gb / n, |model, c, batch, rng| {
                    d.forward_backward(model, c, batch, LossType::Stablemax, gb, rng, false)
                        .unwrap()
                })
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Largest possible difference of one element after `k` AdamATan2 steps at `LR` whatever the
/// gradients (each step moves it by at most lr * pi/2 / (1 - beta1^t), in either direction), plus
/// the SignSGD bound for the puzzle table.
fn divergence_bound(k: usize) -> f64 {
    let adam: f64 = (1..=k)
        .map(|t| std::f64::consts::PI * LR / (1.0 - BETAS.0.powi(t as i32)))
        .sum();
    adam.max(2.0 * PUZZLE_LR * k as f64)
}

fn assert_close(a: &Outcome, b: &Outcome, k: usize) {
    let bound = divergence_bound(k);
    let (mut total, mut loose, mut worst) = (0usize, 0usize, 0f64);
    for ((name, x), (name2, y)) in a.0.iter().zip(&b.0) {
        assert_eq!(name, name2);
        for (p, q) in x.iter().zip(y) {
            let d = (p - q).abs() as f64;
            assert!(
                d <= bound,
                "{name}: {p} vs {q} differ by {d} > bound {bound}"
            );
            total += 1;
            if d > 1e-6 {
                loose += 1;
            }
            worst = worst.max(d);
        }
    }
    assert!(
        loose * 1000 <= total,
        "{loose} of {total} elements differ by more than 1e-6 (worst {worst})"
    );
    for (s, (la, lb)) in a.1.iter().zip(&b.1).enumerate() {
        assert!(
            (la - lb).abs() <= 1e-5 * la.abs().max(1.0),
            "step {s}: loss {la} vs {lb}"
        );
    }
    eprintln!("max weight difference {worst:.3e} ({loose} of {total} elements above 1e-6)");
}

#[test]
fn one_rank_through_the_collective_is_the_single_process_step_bit_for_bit() {
    let data = batches(6, 4);
    let one = single(&data);
    let mut r = ranks(Arc::new(data), 1);
    let r = r.remove(0);
    assert_eq!(one.0, r.0);
    assert_eq!(one.1, r.1);
}

#[test]
fn two_ranks_with_half_batches_train_like_one_with_the_whole_batch() {
    let k = 5;
    let data = batches(8, k);
    let one = single(&data);
    let two = ranks(Arc::new(data), 2);
    // the ranks agree exactly with each other (identical reduced gradients, identical updates)
    assert_eq!(two[0].0, two[1].0, "the ranks' weights diverged");
    assert_eq!(two[0].1, two[1].1);
    assert_close(&one, &two[0], k);
}

// ---------------------------------------------------------------------------------------------
// The trainer with ranks.

/// Run `n` ranks of the trainer (threads); `resume` continues the run folder instead.
fn train_ranks(cfg: &TrainConfig, run_dir: &Path, n: usize, stop_after: Option<u64>, resume: bool) {
    let handles: Vec<_> = LocalGroup::ranks(n)
        .into_iter()
        .map(|c| {
            let cfg = cfg.clone();
            let run_dir = run_dir.to_path_buf();
            std::thread::spawn(move || {
                let d = Dist::new(Box::new(c));
                let main = d.is_main();
                // rank 0 alone is told the folder; the others learn it from rank 0
                let opts = quiet(&run_dir, stop_after);
                let opts = TrainOptions {
                    run_dir: main.then_some(run_dir.clone()),
                    ..opts
                };
                if resume {
                    resume_dist(&run_dir, &[], &opts, d).map(|s| s.step)
                } else {
                    train_dist(cfg, &opts, d).map(|s| s.step)
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("rank thread").expect("rank failed");
    }
}

fn final_weights(run_dir: &Path) -> Vec<(String, Vec<f32>)> {
    let ckpt = hrm_train::rundir::RunDir::open(run_dir)
        .unwrap()
        .latest_checkpoint()
        .unwrap()
        .expect("a checkpoint");
    let path = &ckpt.path;
    let f = hrm_model::checkpoint::read_safetensors(path, &Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = f
        .tensors
        .iter()
        .map(|(k, t): (&String, &Tensor)| {
            (
                k.clone(),
                t.to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn the_trainer_on_two_ranks_matches_one_process_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let cfg = tiny_run_config(&data, &[]);

    let single_dir = tmp.path().join("single");
    let s = train(cfg.clone(), &quiet(&single_dir, None)).unwrap();
    let steps = s.step as usize;
    assert!(steps >= 6, "only {steps} steps");

    let dp_dir = tmp.path().join("dp");
    train_ranks(&cfg, &dp_dir, 2, None, false);
    // one run folder with the same files as the single-process run (rank 1 wrote nothing)
    assert_eq!(files(&dp_dir), files(&single_dir));
    let (w1, w2) = (final_weights(&single_dir), final_weights(&dp_dir));
    assert_close(&(w1, Vec::new()), &(w2.clone(), Vec::new()), steps);
    let m = std::fs::read_to_string(dp_dir.join("metrics.jsonl")).unwrap();
    assert!(
        m.contains("\"train/lm_loss\"") && m.contains("eval/"),
        "{m}"
    );

    // stop after 4 steps (checkpoint with the gathered carry), resume on 2 ranks: exactly the
    // uninterrupted 2-rank run
    let cut_dir = tmp.path().join("cut");
    train_ranks(&cfg, &cut_dir, 2, Some(4), false);
    train_ranks(&cfg, &cut_dir, 2, None, true);
    assert_eq!(
        final_weights(&cut_dir),
        w2,
        "the resumed 2-rank run differs"
    );
}
