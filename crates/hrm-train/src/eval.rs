//! Evaluation: run every test example through `halt_max_steps` ACT segments (or fewer, with
//! learned halting) and reduce the loss head's metrics per set.
//!
//! Mirrors sapientinc/HRM:pretrain.py `evaluate` (fresh carry per batch, metrics of the final
//! segment, sums per set divided by the summed `count`) and its saved outputs
//! ([`Predictions::tensors`]).
//! Additions: `max_examples` (evaluate a prefix of the test split, for CPU runs), an inference-time
//! `halt_max_steps`, and learned halting (a row stops at the first segment where
//! q_halt > q_continue; its prediction is taken there and the mean segments used is reported).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Tensor};
use hrm_data::format::SplitData;
use hrm_data::sampler::{TestIterator, IGNORE_LABEL_ID};
use hrm_model::infer::HostSegment;
use hrm_model::loss::{act_loss, HostOutputs, LossType};
use hrm_model::Engine;

use crate::config::SAVE_OUTPUT_KEYS;

/// How to evaluate.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// Segments per example (default: the model's `halt_max_steps`).
    pub halt_max_steps: Option<usize>,
    /// Stop each row at its first segment with q_halt > q_continue.
    pub learned_halting: bool,
    /// Evaluate only the first N test examples (in split order).
    pub max_examples: Option<usize>,
    /// Keep per-example inputs, labels, predictions and Q values (for task scoring and saving).
    pub keep_predictions: bool,
    /// Also keep the logits (`[N, L, V]`; large).
    pub keep_logits: bool,
}

/// Per-example outputs kept for task-specific scoring (maze validity, ARC voting, saving).
#[derive(Debug, Clone, Default)]
pub struct Predictions {
    /// Set name of each example.
    pub set_names: Vec<String>,
    /// Inputs `[N * L]`.
    pub inputs: Vec<i32>,
    /// Labels `[N * L]` (-100 = ignored).
    pub labels: Vec<i32>,
    /// Puzzle identifier per example `[N]`.
    pub puzzle_identifiers: Vec<i32>,
    /// Argmax predictions `[N * L]`.
    pub predictions: Vec<i32>,
    /// Q-halt logit at the segment the prediction was taken from `[N]`.
    pub q_halt: Vec<f32>,
    /// Q-continue logit at that segment `[N]`.
    pub q_continue: Vec<f32>,
    /// Segments used per example `[N]`.
    pub segments: Vec<u32>,
    /// Logits `[N * L * V]` (only with `keep_logits`).
    pub logits: Vec<f32>,
    /// Tokens per example L.
    pub seq_len: usize,
}

impl Predictions {
    /// The tensors named in `keys` (the `eval_save_outputs` names, [`SAVE_OUTPUT_KEYS`]), as
    /// the reference's pretrain.py `evaluate` saves them, concatenated over the batches, one row
    /// per evaluated example (no padding rows), in the order of [`SAVE_OUTPUT_KEYS`]: `inputs`
    /// and `labels` i32 `[N, L]`, `puzzle_identifiers` i32 `[N]`, `logits` f32 `[N, L, V]`
    /// (kept with [`EvalOptions::keep_logits`]), `q_halt_logits` and `q_continue_logits` f32
    /// `[N]`. `vocab_size` is V.
    pub fn tensors(&self, keys: &[String], vocab_size: usize) -> Result<Vec<(String, Tensor)>> {
        let (n, l) = (self.puzzle_identifiers.len(), self.seq_len);
        let cpu = &Device::Cpu;
        let mut out = Vec::new();
        for &key in SAVE_OUTPUT_KEYS
            .iter()
            .filter(|k| keys.iter().any(|x| x == *k))
        {
            let t = match key {
                "inputs" => Tensor::from_slice(&self.inputs, (n, l), cpu)?,
                "labels" => Tensor::from_slice(&self.labels, (n, l), cpu)?,
                "puzzle_identifiers" => Tensor::from_slice(&self.puzzle_identifiers, n, cpu)?,
                "logits" => {
                    ensure!(
                        self.logits.len() == n * l * vocab_size,
                        "{} logits kept for {n} examples of {l} tokens and {vocab_size} classes \
                         (evaluate with keep_logits)",
                        self.logits.len()
                    );
                    Tensor::from_slice(&self.logits, (n, l, vocab_size), cpu)?
                }
                "q_halt_logits" => Tensor::from_slice(&self.q_halt, n, cpu)?,
                "q_continue_logits" => Tensor::from_slice(&self.q_continue, n, cpu)?,
                other => bail!("`{other}` is not an evaluation output"),
            };
            out.push((key.to_string(), t));
        }
        Ok(out)
    }
}

/// The result of an evaluation.
#[derive(Debug, Clone, Default)]
pub struct EvalOutput {
    /// Per set: metric name -> value (every metric divided by the set's `count`, as the
    /// reference does), plus `count` itself (the number of examples evaluated).
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
    /// Mean segments used per example over all sets.
    pub mean_segments: f64,
    /// Per-example outputs if requested.
    pub predictions: Option<Predictions>,
}

impl EvalOutput {
    /// Flattened `eval/<set>/<metric>` keys (for metrics.jsonl / TensorBoard).
    pub fn flat(&self) -> Vec<(String, f64)> {
        let mut v = Vec::new();
        for (set, m) in &self.metrics {
            for (k, x) in m {
                v.push((format!("eval/{set}/{k}"), *x));
            }
        }
        v
    }
}

/// Evaluate `engine`'s model on every set of `split` in batches of `batch_size`.
pub fn evaluate(
    engine: &Engine,
    split: Arc<SplitData>,
    batch_size: usize,
    loss_type: LossType,
    opts: &EvalOptions,
) -> Result<EvalOutput> {
    let model = engine.model();
    // a batch larger than the data only adds padding rows, each a full row of activations
    // (`--batch-size 100000000` would allocate tens of GB for nothing): cap it at the data
    let largest = split
        .sets
        .iter()
        .map(|s| s.num_examples())
        .max()
        .unwrap_or(1);
    let wanted = opts.max_examples.unwrap_or(usize::MAX).min(largest).max(1);
    let batch_size = batch_size.min(wanted);
    let segments = opts.halt_max_steps.unwrap_or(model.cfg.halt_max_steps);
    anyhow::ensure!(segments >= 1, "halt_max_steps must be at least 1");
    let vocab = model.cfg.vocab_size;
    let mut sums: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut preds = (opts.keep_predictions || opts.keep_logits).then(Predictions::default);
    let (mut seg_total, mut seg_rows) = (0f64, 0usize);
    let mut seen = 0usize;
    for b in TestIterator::new(split, batch_size)? {
        if opts.max_examples.is_some_and(|m| seen >= m) {
            break;
        }
        let mut batch = b.clone();
        let l = batch.seq_len;
        // rows past the real examples (padding) or past max_examples count for nothing
        let mut real = b.effective_size.min(batch.batch_size);
        if let Some(m) = opts.max_examples {
            real = real.min(m - seen);
        }
        for r in real..batch.batch_size {
            batch.labels[r * l..(r + 1) * l].fill(IGNORE_LABEL_ID);
        }
        seen += real;
        // the rollout runs `segments` segments for every row, whatever the model's own
        // halt_max_steps (inference-time scaling)
        let bsz = batch.batch_size;
        let mut frozen: Vec<Option<(u32, Vec<f32>, f32, f32)>> = vec![None; bsz];
        let (mut carry, last) = engine.rollout(&batch, segments, &mut (), |k, _, host| {
            if opts.learned_halting {
                for r in 0..bsz {
                    if frozen[r].is_none() && host.q_halt[r] > host.q_continue[r] {
                        let lg = host.logits[r * l * vocab..(r + 1) * l * vocab].to_vec();
                        frozen[r] = Some((k as u32, lg, host.q_halt[r], host.q_continue[r]));
                    }
                }
            }
            Ok(!(opts.learned_halting && frozen.iter().take(real).all(Option::is_some)))
        })?;
        // final per-row outputs: frozen (learned halting) or the last segment's
        let HostSegment {
            mut logits,
            q_halt: mut qh,
            q_continue: mut qc,
        } = last.context("no segment ran")?;
        let mut used = vec![segments as u32; bsz];
        let ran = carry.steps.first().copied().unwrap_or(segments as u32);
        for r in 0..bsz {
            used[r] = ran;
            if let Some((k, lg, h, q)) = &frozen[r] {
                logits[r * l * vocab..(r + 1) * l * vocab].copy_from_slice(lg);
                qh[r] = *h;
                qc[r] = *q;
                used[r] = *k;
            }
        }
        carry.halted = vec![true; bsz];
        carry.steps = used.clone();
        let out = HostOutputs {
            logits: &logits,
            q_halt: &qh,
            q_continue: &qc,
            target_q_continue: None,
        };
        let loss = act_loss(&carry, &out, vocab, loss_type, None)?;
        let set = sums.entry(b.set_name.clone()).or_default();
        for (k, v) in loss.metrics.entries() {
            *set.entry(k.to_string()).or_default() += v;
        }
        for r in 0..real {
            seg_total += used[r] as f64;
            seg_rows += 1;
        }
        if let Some(p) = preds.as_mut() {
            p.seq_len = l;
            for r in 0..real {
                p.set_names.push(b.set_name.clone());
                p.inputs
                    .extend_from_slice(&batch.inputs[r * l..(r + 1) * l]);
                p.labels.extend_from_slice(&b.labels[r * l..(r + 1) * l]);
                p.puzzle_identifiers.push(batch.puzzle_identifiers[r]);
                p.predictions
                    .extend_from_slice(&loss.predictions[r * l..(r + 1) * l]);
                p.q_halt.push(qh[r]);
                p.q_continue.push(qc[r]);
                p.segments.push(used[r]);
                if opts.keep_logits {
                    p.logits
                        .extend_from_slice(&logits[r * l * vocab..(r + 1) * l * vocab]);
                }
            }
        }
    }
    let metrics = sums
        .into_iter()
        .map(|(set, m)| {
            let count = m.get("count").copied().unwrap_or(0.0);
            let div = count.max(1.0);
            let mut out: BTreeMap<String, f64> = m.into_iter().map(|(k, v)| (k, v / div)).collect();
            out.insert("count".into(), count);
            (set, out)
        })
        .collect();
    Ok(EvalOutput {
        metrics,
        mean_segments: if seg_rows > 0 {
            seg_total / seg_rows as f64
        } else {
            0.0
        },
        predictions: preds,
    })
}
