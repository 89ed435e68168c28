//! The ACT wrapper (the reference's `HierarchicalReasoningModel_ACTV1`): the carry between
//! segments, halted rows restarting on new data, halting and its Q-learning target.

use candle_core::{Tensor, Var};
use rand::{Rng, RngCore};

use super::observe::{Event, Observer};
use super::{Hrm, Segment};
use crate::config::ModelConfig;
use crate::{Batch, Error, Result};

/// Train or eval behaviour of the ACT wrapper (halting, exploration, Q target, sparse embedding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Gradient through the calls the schedule marks (HRM: the last L and H); Q-halting with
    /// exploration; the extra no-gradient forward for the Q-continue target where the model
    /// learns one.
    Train,
    /// No gradient anywhere; every row runs exactly `halt_max_steps` segments.
    Eval,
}

/// The recurrent state carried between ACT steps (the reference's `..ACTV1Carry`).
#[derive(Debug, Clone)]
pub struct Carry {
    /// High-level state `[B, S, D]` (detached).
    pub z_h: Tensor,
    /// Low-level state `[B, S, D]` (detached).
    pub z_l: Tensor,
    /// Segments done in the current episode, per row.
    pub steps: Vec<u32>,
    /// Whether the row's episode ended (it restarts on the next batch row).
    pub halted: Vec<bool>,
    /// The example each row is working on.
    pub data: Batch,
}

/// What one ACT step produces besides the new carry.
#[derive(Debug)]
pub struct StepOutput {
    /// LM logits `[B, L, V]` in the forward dtype (part of the autograd graph in train mode).
    pub logits: Tensor,
    /// Q-halt logits `[B]`, f32.
    pub q_halt: Tensor,
    /// Q-continue logits `[B]`, f32.
    pub q_continue: Tensor,
    /// Bootstrapped Q-continue target `[B]` (train mode with `halt_max_steps > 1`).
    pub target_q_continue: Option<Vec<f32>>,
    /// The per-row copy of the puzzle-embedding rows that received the gradient (train mode),
    /// with the ids it was read from (the reference's `local_weights` / `local_ids`).
    pub puzzle_local: Option<(Var, Vec<i32>)>,
}

impl Hrm {
    /// A fresh carry for `batch`'s shape: every row halted, so the first step loads every row.
    pub fn initial_carry(&self, batch: &Batch) -> Result<Carry> {
        let (b, s, d) = (
            batch.batch_size,
            self.cfg.full_seq_len(),
            self.cfg.hidden_size,
        );
        let z = Tensor::zeros((b, s, d), self.fdt, &self.device)?;
        // the baseline has no z_L: an empty [B, 0, D] keeps the carry's shape uniform
        let s_l = if self.cfg.has_z_l() { s } else { 0 };
        Ok(Carry {
            z_h: z,
            z_l: Tensor::zeros((b, s_l, d), self.fdt, &self.device)?,
            steps: vec![0; b],
            halted: vec![true; b],
            data: Batch::zeros(b, batch.seq_len),
        })
    }

    /// Rows of `init` `[D]` where `halted`, else the carry's rows (no `init`: the carry, the
    /// baseline's empty z_L).
    fn reset_rows(&self, init: Option<&Var>, z: &Tensor, halted: &[bool]) -> Result<Tensor> {
        let Some(init) = init else {
            return Ok(z.clone());
        };
        let init = init.as_detached_tensor().to_dtype(self.fdt)?;
        let init = init
            .reshape((1, 1, self.cfg.hidden_size))?
            .broadcast_as(z.shape())?;
        if halted.iter().all(|&h| h) {
            return Ok(init.contiguous()?);
        }
        if !halted.iter().any(|&h| h) {
            return Ok(z.clone());
        }
        let mask: Vec<u8> = halted.iter().map(|&h| h as u8).collect();
        let mask =
            Tensor::from_vec(mask, (halted.len(), 1, 1), &self.device)?.broadcast_as(z.shape())?;
        Ok(mask.where_cond(&init, z)?)
    }

    fn ids_tensor(&self, ids: &[i32], shape: (usize, usize)) -> Result<Tensor> {
        let v: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        Ok(Tensor::from_vec(v, shape, &self.device)?)
    }
}

/// What runs the no-gradient calls of a segment: the inference engine
/// ([`crate::infer::Engine`]), which may use host kernels instead of this crate's candle path.
pub trait NoGradCalls {
    /// The model.
    fn model(&self) -> &Hrm;
    /// A segment's calls but the last L and the last H, without gradient.
    fn cycles(
        &self,
        z_h: &Tensor,
        z_l: &Tensor,
        x: &Tensor,
        obs: &mut dyn Observer,
    ) -> Result<(Tensor, Tensor)>;
    /// A whole segment without gradient, heads included.
    fn segment(
        &self,
        z_h: &Tensor,
        z_l: &Tensor,
        x: &Tensor,
        obs: &mut dyn Observer,
    ) -> Result<Segment>;
    /// Hand scratch memory back before a backward pass.
    fn release_workspace(&self);
}

/// One ACT step (one segment for every row): halted rows restart on their row of `batch`, the
/// others continue their own example and ignore `batch`'s row at their index; `engine` runs the
/// no-gradient calls. The entry points are `Hrm::act_step` (training or evaluation, on a plain
/// engine it builds itself, so no inference-only kernel can take part in a gradient step) and
/// `Engine::act_step` (evaluation with the engine's kernels).
pub(crate) fn step(
    engine: &dyn NoGradCalls,
    carry: &Carry,
    batch: &Batch,
    mode: Mode,
    rng: &mut dyn RngCore,
    obs: &mut dyn Observer,
) -> Result<(Carry, StepOutput)> {
    let model = engine.model();
    let cfg = &model.cfg;
    check_batch(batch, cfg)?;
    let b = batch.batch_size;
    if carry.halted.len() != b {
        return Err(Error::msg(format!(
            "carry has {} rows but the batch has {b}",
            carry.halted.len()
        )));
    }
    // 1. reset halted rows
    let w = &model.weights;
    let z_h = model.reset_rows(Some(&w.h_init), &carry.z_h, &carry.halted)?;
    let z_l = model.reset_rows(w.l_init.as_ref(), &carry.z_l, &carry.halted)?;
    let mut steps: Vec<u32> = carry
        .steps
        .iter()
        .zip(&carry.halted)
        .map(|(&s, &h)| if h { 0 } else { s })
        .collect();
    let mut data = carry.data.clone();
    for (i, &h) in carry.halted.iter().enumerate() {
        if h {
            data.copy_row(batch, i);
        }
    }
    // 2. the segment
    let inputs = model.ids_tensor(&data.inputs, (b, data.seq_len))?;
    let mut puzzle_local = None;
    let rows = match &w.puzzle_emb {
        Some(table) => {
            let ids = model
                .ids_tensor(&data.puzzle_identifiers, (b, 1))?
                .flatten_all()?;
            let rows = table.as_detached_tensor().index_select(&ids, 0)?;
            if mode == Mode::Train {
                // the reference's `local_weights`: a leaf copy of the rows that gets the grad
                let local = Var::from_tensor(&rows)?;
                let t = local.as_tensor().clone();
                puzzle_local = Some((local, data.puzzle_identifiers.clone()));
                Some(t)
            } else {
                Some(rows)
            }
        }
        None => None,
    };
    let x = model.input_embeddings(&inputs, rows.as_ref())?;
    if obs.wants(&Event::InputEmbeddings) {
        obs.observe(Event::InputEmbeddings, &x);
    }
    let Segment {
        z_h,
        z_l,
        logits,
        q,
    } = match mode {
        Mode::Train => {
            let (z_h, z_l) = engine.cycles(&z_h, &z_l, &x, obs)?;
            // the gradient calls and their backward come next: hand the scratch buffers back
            // to the allocator for them (peak memory of a training step)
            engine.release_workspace();
            model.segment_last(z_h, z_l, &x, true, obs)?
        }
        Mode::Eval => engine.segment(&z_h, &z_l, &x, obs)?,
    };
    let q_halt = q.narrow(1, 0, 1)?.squeeze(1)?;
    let q_continue = q.narrow(1, 1, 1)?.squeeze(1)?;
    // 3. step counting and halting (no gradient)
    for s in steps.iter_mut() {
        *s += 1;
    }
    let m = cfg.halt_max_steps as u32;
    let is_last: Vec<bool> = steps.iter().map(|&s| s >= m).collect();
    let mut halted = is_last.clone();
    let mut target_q_continue = None;
    if mode == Mode::Train && cfg.adaptive_halting() {
        let qh = q_halt.detach().to_vec1::<f32>()?;
        let qc = q_continue.detach().to_vec1::<f32>()?;
        let alone = cfg.halts_on_q_halt_alone();
        for i in 0..b {
            // TRM's no_ACT_continue: the halt logit alone (a sigmoid above 1/2)
            let q = if alone { qh[i] > 0.0 } else { qh[i] > qc[i] };
            halted[i] = halted[i] || q;
        }
        // exploration: a minimum segment count redrawn every step (prob eps, uniform 2..=M)
        for i in 0..b {
            let r: f32 = rng.random();
            let k: u32 = rng.random_range(2..=m.max(2));
            let min_steps = if (r as f64) < cfg.halt_exploration_prob {
                k
            } else {
                0
            };
            halted[i] = halted[i] && steps[i] >= min_steps;
        }
        // Q-learning target from one more no-gradient segment on the new carry (no replay
        // buffer or target network: many parallel rows stand in for them, as in PQN); TRM with
        // no_ACT_continue and the baseline learn no Q-continue
        if cfg.learns_q_continue() {
            let q2 = engine.segment(&z_h, &z_l, &x.detach(), &mut ())?.q;
            // the backward comes next: hand the scratch buffers back to the allocator for it
            engine.release_workspace();
            let q2 = q2.to_vec2::<f32>()?;
            target_q_continue = Some(
                (0..b)
                    .map(|i| {
                        let v = if is_last[i] {
                            q2[i][0]
                        } else {
                            q2[i][0].max(q2[i][1])
                        };
                        sigmoid_f32(v)
                    })
                    .collect(),
            );
        }
    }
    let new_carry = Carry {
        z_h,
        z_l,
        steps,
        halted,
        data,
    };
    Ok((
        new_carry,
        StepOutput {
            logits,
            q_halt,
            q_continue,
            target_q_continue,
            puzzle_local,
        },
    ))
}

/// A batch fits the model: its seq_len, array lengths, token ids and puzzle identifiers.
fn check_batch(batch: &Batch, cfg: &ModelConfig) -> Result<()> {
    let (b, l) = (batch.batch_size, batch.seq_len);
    if l != cfg.seq_len {
        return Err(Error::msg(format!(
            "batch seq_len {l} does not match the model's seq_len {}",
            cfg.seq_len
        )));
    }
    if batch.inputs.len() != b * l
        || batch.labels.len() != b * l
        || batch.puzzle_identifiers.len() != b
    {
        return Err(Error::msg(format!(
            "batch arrays have lengths {}/{}/{} but B = {b}, L = {l}",
            batch.inputs.len(),
            batch.labels.len(),
            batch.puzzle_identifiers.len()
        )));
    }
    if let Some(&t) = batch
        .inputs
        .iter()
        .find(|&&t| t < 0 || t as usize >= cfg.vocab_size)
    {
        return Err(Error::msg(format!(
            "input token {t} outside the vocabulary [0, {})",
            cfg.vocab_size
        )));
    }
    if cfg.puzzle_emb_ndim > 0 {
        if let Some(&p) = batch
            .puzzle_identifiers
            .iter()
            .find(|&&p| p < 0 || p as usize >= cfg.num_puzzle_identifiers)
        {
            return Err(Error::msg(format!(
                "puzzle identifier {p} outside [0, {})",
                cfg.num_puzzle_identifiers
            )));
        }
    }
    Ok(())
}

/// torch.sigmoid on an f32 value.
fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
