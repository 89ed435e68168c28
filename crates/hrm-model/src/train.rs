//! One training step and one evaluation step of the HRM, on top of [`crate::model`],
//! [`crate::loss`] and [`crate::optim`].
//!
//! Mirrors the body of sapientinc/HRM:pretrain.py `train_batch` (forward of the loss head,
//! backward of `loss / global_batch_size`, SignSGD then AdamATan2) for one rank.
//!
//! The backward pass starts from the loss head's exact output gradients (computed on the host in
//! f64, [`crate::loss::act_loss`]): candle back-propagates the surrogate
//! `Σ logits·G_logits + Σ q_halt·G_halt + Σ q_continue·G_continue` whose gradient with respect to
//! every parameter equals that of `total / global_batch_size`.

use candle_core::{DType, Tensor, Var};
use rand::RngCore;

use crate::infer::Engine;
use crate::loss::{act_loss, HostOutputs, LossOutput, LossType};
use crate::model::{Carry, Hrm, Mode, Observer};
use crate::optim::{AdamAtan2, SignSgd};
use crate::to_host_f32;
use crate::Batch;
use crate::{Error, Result};

/// Gradients of one training step.
#[derive(Debug)]
pub struct Grads {
    /// One entry per [`Hrm::parameters`] (None if the parameter took no part in the step).
    pub params: Vec<Option<Tensor>>,
    /// The puzzle-embedding rows' gradient `[B, Dp]` and the ids they belong to.
    pub puzzle: Option<(Vec<i32>, Tensor)>,
}

/// Host copies of a step's outputs.
#[derive(Debug, Clone)]
pub struct StepHost {
    /// Logits `[B * L * V]`.
    pub logits: Vec<f32>,
    /// Q-halt logits `[B]`.
    pub q_halt: Vec<f32>,
    /// Q-continue logits `[B]`.
    pub q_continue: Vec<f32>,
    /// Q-continue targets `[B]` (train with ACT).
    pub target_q_continue: Option<Vec<f32>>,
}

impl StepHost {
    fn outputs(&self) -> HostOutputs<'_> {
        HostOutputs {
            logits: &self.logits,
            q_halt: &self.q_halt,
            q_continue: &self.q_continue,
            target_q_continue: self.target_q_continue.as_deref(),
        }
    }
}

/// Everything one training step produces.
#[derive(Debug)]
pub struct TrainStep {
    /// The carry after the step.
    pub carry: Carry,
    /// Total loss (f64, before the 1/global-batch scale) and the raw metric sums.
    pub loss: LossOutput,
    /// Parameter and puzzle-row gradients of `total / global_batch_size`.
    pub grads: Grads,
    /// The step's outputs on the host.
    pub out: StepHost,
}

/// Forward (one ACT step in train mode), loss and backward.
pub fn forward_backward(
    model: &Hrm,
    carry: &Carry,
    batch: &Batch,
    loss_type: LossType,
    global_batch_size: usize,
    rng: &mut dyn RngCore,
) -> Result<TrainStep> {
    if global_batch_size == 0 {
        return Err(Error::msg("global_batch_size must be positive"));
    }
    let (carry, out) = model.act_step(carry, batch, Mode::Train, rng)?;
    let host = StepHost {
        logits: to_host_f32(&out.logits)?,
        q_halt: to_host_f32(&out.q_halt)?,
        q_continue: to_host_f32(&out.q_continue)?,
        target_q_continue: out.target_q_continue.clone(),
    };
    // the reference multiplies by the reciprocal as a python double
    let scale = 1.0 / global_batch_size as f64;
    let loss = act_loss(
        &carry,
        &host.outputs(),
        model.cfg.vocab_size,
        loss_type,
        Some(scale),
    )?;
    let g = loss
        .grads
        .as_ref()
        .ok_or_else(|| Error::msg("loss gradients missing"))?;
    let dev = model.device();
    let seed = |vals: &[f32], like: &Tensor| -> Result<Tensor> {
        Ok(Tensor::from_slice(vals, like.shape(), dev)?.to_dtype(like.dtype())?)
    };
    // the logits term is in the forward dtype (bf16 on GPUs): its value is summed in f32 (only
    // its gradient, the seed, matters) so that it adds to the f32 Q terms
    let surrogate = (out
        .logits
        .mul(&seed(&g.logits, &out.logits)?)?
        .sum_all()?
        .to_dtype(DType::F32)?
        + out.q_halt.mul(&seed(&g.q_halt, &out.q_halt)?)?.sum_all()?)?;
    let surrogate = if host.target_q_continue.is_some() {
        (surrogate
            + out
                .q_continue
                .mul(&seed(&g.q_continue, &out.q_continue)?)?
                .sum_all()?)?
    } else {
        surrogate
    };
    let store = surrogate.backward()?;
    let params = model
        .parameters()
        .iter()
        .map(|(_, v)| store.get(v.as_tensor()).cloned())
        .collect();
    let puzzle = match &out.puzzle_local {
        Some((local, ids)) => {
            let grad = store
                .get(local.as_tensor())
                .cloned()
                .ok_or_else(|| Error::msg("the puzzle-embedding rows received no gradient"))?;
            Some((ids.clone(), grad))
        }
        None => None,
    };
    Ok(TrainStep {
        carry,
        loss,
        grads: Grads { params, puzzle },
        out: host,
    })
}

/// One ACT step in eval mode on `engine` with the loss head's metrics (no gradients); `obs`
/// sees the forward's intermediate tensors (`&mut ()` for none).
pub fn eval_step(
    engine: &Engine,
    carry: &Carry,
    batch: &Batch,
    loss_type: LossType,
    obs: &mut dyn Observer,
) -> Result<(Carry, LossOutput, StepHost)> {
    let model = engine.model();
    let (carry, out) = engine.act_step(carry, batch, obs)?;
    let host = StepHost {
        logits: to_host_f32(&out.logits)?,
        q_halt: to_host_f32(&out.q_halt)?,
        q_continue: to_host_f32(&out.q_continue)?,
        target_q_continue: None,
    };
    let loss = act_loss(
        &carry,
        &host.outputs(),
        model.cfg.vocab_size,
        loss_type,
        None,
    )?;
    Ok((carry, loss, host))
}

/// The two optimizers of a run: SignSGD on the puzzle table, AdamATan2 on every parameter.
#[derive(Debug, Clone)]
pub struct Optimizers {
    /// AdamATan2 over [`Hrm::parameters`].
    pub adam: AdamAtan2,
    /// SignSGD for the puzzle-embedding table.
    pub sign: SignSgd,
}

impl Optimizers {
    /// Fresh optimizer states for `model`.
    pub fn new(
        model: &Hrm,
        betas: (f64, f64),
        weight_decay: f64,
        puzzle_emb_weight_decay: f64,
    ) -> Self {
        let sizes: Vec<usize> = model
            .parameters()
            .iter()
            .map(|(_, v)| v.elem_count())
            .collect();
        Self {
            adam: AdamAtan2::new(&sizes, betas, weight_decay),
            sign: SignSgd {
                weight_decay: puzzle_emb_weight_decay,
            },
        }
    }

    /// Apply a step's gradients: SignSGD first (rate `puzzle_lr`), then AdamATan2 (rate `lr`), as
    /// the reference's training loop orders them.
    pub fn step(&mut self, model: &Hrm, grads: &Grads, lr: f64, puzzle_lr: f64) -> Result<()> {
        if let (Some(table), Some((ids, g))) = (&model.weights.puzzle_emb, &grads.puzzle) {
            self.sign.step(table, ids, g, puzzle_lr)?;
        }
        let params: Vec<(String, &Var)> = model.parameters();
        let vars: Vec<&Var> = params.iter().map(|(_, v)| *v).collect();
        self.adam.step(&vars, &grads.params, lr)
    }
}
