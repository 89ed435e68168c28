//! The ACT loss head: LM cross-entropy (stablemax or softmax), Q-halt and Q-continue BCE losses, the
//! raw metric sums, and the gradients of the loss with respect to the model's outputs.
//!
//! Mirrors sapientinc/HRM:models/losses.py (`s`, `log_stablemax`, `stablemax_cross_entropy`,
//! `softmax_cross_entropy`, `ACTLossHead.forward`); docs/model.md, "Losses and metrics".
//!
//! The loss is a simple function of the logits and the two Q logits, so it is evaluated on the
//! host in f64 (the reference computes stablemax in f64), together with its exact gradient: the
//! training step then back-propagates that gradient into the network (see [`crate::train`]). This
//! is the fused "stablemax loss" kernel: one pass over the logits for value, metrics and gradient.

use serde::{Deserialize, Serialize};

use crate::model::Carry;
use crate::{Error, Result};

/// Label id that is ignored by the loss and the metrics (the data loader maps the dataset's
/// ignore id to it).
pub use hrm_data::sampler::IGNORE_LABEL_ID;

/// The LM loss (reference key `arch.loss.loss_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum LossType {
    /// Stablemax cross-entropy in f64 (the default for the small-sample runs).
    #[default]
    #[serde(rename = "stablemax_cross_entropy")]
    Stablemax,
    /// Ordinary softmax cross-entropy in f32 (the "Full Sudoku-Hard" run).
    #[serde(rename = "softmax_cross_entropy")]
    Softmax,
}

/// Raw metric sums of one ACT step, as `ACTLossHead` returns them (not normalised).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LossMetrics {
    /// Halted rows with at least one label.
    pub count: f64,
    /// Σ over those rows of (correct tokens / labelled tokens).
    pub accuracy: f64,
    /// Rows entirely correct (among the counted rows).
    pub exact_accuracy: f64,
    /// Rows where (q_halt >= 0) == (row entirely correct).
    pub q_halt_accuracy: f64,
    /// Σ of the segment counts at halting.
    pub steps: f64,
    /// Σ_b mean-over-tokens LM loss (all rows).
    pub lm_loss: f64,
    /// Σ_b BCE(q_halt, row correct) (all rows).
    pub q_halt_loss: f64,
    /// Σ_b BCE(q_continue, target) (training with ACT only).
    pub q_continue_loss: Option<f64>,
}

impl LossMetrics {
    /// `(name, value)` pairs with the reference's metric names.
    pub fn entries(&self) -> Vec<(&'static str, f64)> {
        let mut v = vec![
            ("count", self.count),
            ("accuracy", self.accuracy),
            ("exact_accuracy", self.exact_accuracy),
            ("q_halt_accuracy", self.q_halt_accuracy),
            ("steps", self.steps),
            ("lm_loss", self.lm_loss),
            ("q_halt_loss", self.q_halt_loss),
        ];
        if let Some(q) = self.q_continue_loss {
            v.push(("q_continue_loss", q));
        }
        v
    }
}

/// Gradients of `scale * total` with respect to the model outputs.
#[derive(Debug, Clone)]
pub struct OutputGrads {
    /// d/d logits `[B * L * V]`.
    pub logits: Vec<f32>,
    /// d/d q_halt `[B]`.
    pub q_halt: Vec<f32>,
    /// d/d q_continue `[B]` (zero without a target).
    pub q_continue: Vec<f32>,
}

/// What the loss head returns.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// `lm_loss + 0.5 * (q_halt_loss + q_continue_loss)`, f64 (before the 1/global-batch scale).
    pub total: f64,
    /// The raw metric sums.
    pub metrics: LossMetrics,
    /// Output gradients when requested.
    pub grads: Option<OutputGrads>,
    /// Per-row: every labelled token correct.
    pub seq_correct: Vec<bool>,
    /// Per-row argmax predictions `[B * L]`.
    pub predictions: Vec<i32>,
}

/// Host copies of one step's outputs.
#[derive(Debug, Clone)]
pub struct HostOutputs<'a> {
    /// Logits `[B * L * V]` as f32.
    pub logits: &'a [f32],
    /// Q-halt logits `[B]`.
    pub q_halt: &'a [f32],
    /// Q-continue logits `[B]`.
    pub q_continue: &'a [f32],
    /// Q-continue targets `[B]` if computed.
    pub target_q_continue: Option<&'a [f32]>,
}

/// stablemax's s(x): x + 1 for x >= 0, 1 / (1 - x + 1e-30) for x < 0; and its derivative.
#[inline]
fn s_and_ds(x: f64) -> (f64, f64) {
    if x < 0.0 {
        let s = 1.0 / (1.0 - x + 1e-30);
        (s, s * s)
    } else {
        (x + 1.0, 1.0)
    }
}

/// BCE with logits, numerically stable, and its derivative sigmoid(x) - y.
#[inline]
fn bce_with_logits(x: f64, y: f64) -> (f64, f64) {
    let loss = x.max(0.0) - x * y + (-x.abs()).exp().ln_1p();
    let sig = 1.0 / (1.0 + (-x).exp());
    (loss, sig - y)
}

/// Per-token loss and (optionally) d loss / d logits for one position's `V` logits.
fn token_loss(kind: LossType, row: &[f32], label: usize, grad: Option<(&mut [f32], f64)>) -> f64 {
    match kind {
        LossType::Stablemax => {
            let mut sum = 0f64;
            for &x in row {
                sum += s_and_ds(x as f64).0;
            }
            let (sy, _) = s_and_ds(row[label] as f64);
            let loss = -(sy / sum).ln();
            if let Some((g, scale)) = grad {
                // d/dx_v [log Σ s - log s_y] = s'(x_v)/Σs - [v = y] s'(x_y)/s_y
                for (v, (&x, gv)) in row.iter().zip(g.iter_mut()).enumerate() {
                    let (sv, dsv) = s_and_ds(x as f64);
                    let mut d = dsv / sum;
                    if v == label {
                        d -= dsv / sv;
                    }
                    *gv = (d * scale) as f32;
                }
            }
            loss
        }
        LossType::Softmax => {
            let mx = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
            let sum: f64 = row.iter().map(|&x| (x as f64 - mx).exp()).sum();
            let loss = -(row[label] as f64 - mx - sum.ln());
            if let Some((g, scale)) = grad {
                for (v, (&x, gv)) in row.iter().zip(g.iter_mut()).enumerate() {
                    let p = (x as f64 - mx).exp() / sum;
                    *gv = ((p - if v == label { 1.0 } else { 0.0 }) * scale) as f32;
                }
            }
            loss
        }
    }
}

/// Index of the largest value of `row`, ties to the lowest index (torch.argmax on a CPU row).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (k, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = k;
        }
    }
    best
}

/// The ACT loss head on the carry *after* the step (its `halted`, `steps` and `data.labels`) and
/// the step's outputs. With `grad_scale = Some(s)` it also returns the gradients of `s * total`
/// (the reference back-propagates `total / global_batch_size`).
pub fn act_loss(
    carry: &Carry,
    out: &HostOutputs,
    vocab_size: usize,
    kind: LossType,
    grad_scale: Option<f64>,
) -> Result<LossOutput> {
    let labels = &carry.data.labels;
    let (b, l, v) = (carry.data.batch_size, carry.data.seq_len, vocab_size);
    if out.logits.len() != b * l * v || out.q_halt.len() != b || out.q_continue.len() != b {
        return Err(Error::msg(format!(
            "loss: outputs have {} logits / {} q values for B={b}, L={l}, V={v}",
            out.logits.len(),
            out.q_halt.len()
        )));
    }
    let mut grads = grad_scale.map(|_| OutputGrads {
        logits: vec![0f32; b * l * v],
        q_halt: vec![0f32; b],
        q_continue: vec![0f32; b],
    });
    let mut m = LossMetrics::default();
    let mut seq_correct = vec![false; b];
    let mut predictions = vec![0i32; b * l];
    for r in 0..b {
        let mut n_valid = 0usize;
        let mut n_correct = 0usize;
        for t in 0..l {
            let lab = labels[r * l + t];
            let row = &out.logits[(r * l + t) * v..(r * l + t + 1) * v];
            let best = argmax(row);
            predictions[r * l + t] = best as i32;
            if lab == IGNORE_LABEL_ID {
                continue;
            }
            if lab < 0 || lab as usize >= v {
                return Err(Error::msg(format!(
                    "label {lab} at row {r}, position {t} is outside [0, {v}) and is not the \
                     ignore id {IGNORE_LABEL_ID}"
                )));
            }
            n_valid += 1;
            if best == lab as usize {
                n_correct += 1;
            }
        }
        let div = n_valid.max(1) as f64;
        // LM loss: mean over labelled tokens of the row, summed over rows
        let mut row_loss = 0f64;
        for t in 0..l {
            let lab = labels[r * l + t];
            if lab == IGNORE_LABEL_ID {
                continue;
            }
            let idx = (r * l + t) * v;
            let row = &out.logits[idx..idx + v];
            let g = match (&mut grads, grad_scale) {
                (Some(gr), Some(s)) => Some((&mut gr.logits[idx..idx + v], s / div)),
                _ => None,
            };
            row_loss += token_loss(kind, row, lab as usize, g) / div;
        }
        m.lm_loss += row_loss;
        let correct = n_correct == n_valid; // an all-ignored row counts as correct
        seq_correct[r] = correct;
        let (qh_loss, qh_grad) = bce_with_logits(out.q_halt[r] as f64, correct as u8 as f64);
        m.q_halt_loss += qh_loss;
        if let (Some(gr), Some(s)) = (&mut grads, grad_scale) {
            gr.q_halt[r] = (0.5 * s * qh_grad) as f32;
        }
        if let Some(tq) = out.target_q_continue {
            let (qc_loss, qc_grad) = bce_with_logits(out.q_continue[r] as f64, tq[r] as f64);
            *m.q_continue_loss.get_or_insert(0.0) += qc_loss;
            if let (Some(gr), Some(s)) = (&mut grads, grad_scale) {
                gr.q_continue[r] = (0.5 * s * qc_grad) as f32;
            }
        }
        // metrics over halted rows that have labels
        if carry.halted[r] && n_valid > 0 {
            m.count += 1.0;
            // the reference sums (correct as f32) / divisor in f32
            let per = 1.0f32 / n_valid as f32;
            let mut acc = 0f32;
            for _ in 0..n_correct {
                acc += per;
            }
            m.accuracy += acc as f64;
            m.exact_accuracy += correct as u8 as f64;
            m.q_halt_accuracy += ((out.q_halt[r] >= 0.0) == correct) as u8 as f64;
            m.steps += carry.steps[r] as f64;
        }
    }
    // the reference adds the f32 BCE sums (summed in f32) to the f64 LM loss
    let q_sum = m.q_halt_loss as f32 + m.q_continue_loss.map(|x| x as f32).unwrap_or(0.0);
    let total = m.lm_loss + (0.5 * q_sum) as f64;
    Ok(LossOutput {
        total,
        metrics: m,
        grads,
        seq_correct,
        predictions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loss_of(row: &[f32], label: usize) -> f64 {
        token_loss(LossType::Stablemax, row, label, None)
    }

    #[test]
    fn stablemax_matches_the_spec_vectors() {
        assert!((loss_of(&[2.0, -1.0, 0.5], 0) - 0.510_825_623_8).abs() < 1e-9);
        assert!((loss_of(&[0.0, 0.0, 0.0, 0.0], 3) - 1.386_294_361_1).abs() < 1e-9);
        assert!((loss_of(&[-3.0, -1.0, 4.0], 1) - 2.442_347_035_4).abs() < 1e-9);
    }

    #[test]
    fn token_gradients_match_finite_differences() {
        for kind in [LossType::Stablemax, LossType::Softmax] {
            let row = [0.7f32, -1.3, 2.1, -0.2, 0.05];
            let mut g = vec![0f32; 5];
            token_loss(kind, &row, 3, Some((&mut g, 1.0)));
            for v in 0..5 {
                let h = 1e-3f32;
                let mut a = row;
                a[v] += h;
                let mut b2 = row;
                b2[v] -= h;
                let num = (token_loss(kind, &a, 3, None) - token_loss(kind, &b2, 3, None))
                    / (2.0 * h as f64);
                assert!(
                    (num - g[v] as f64).abs() < 1e-4,
                    "{kind:?} v={v}: {num} vs {}",
                    g[v]
                );
            }
        }
    }

    #[test]
    fn bce_is_stable_and_correct() {
        let (l, g) = bce_with_logits(0.0, 1.0);
        assert!((l - std::f64::consts::LN_2).abs() < 1e-12);
        assert!((g + 0.5).abs() < 1e-12);
        let (l, _) = bce_with_logits(-1000.0, 0.0);
        assert!(l.abs() < 1e-12);
        let (l, _) = bce_with_logits(-1000.0, 1.0);
        assert!((l - 1000.0).abs() < 1e-9);
    }
}
