//! One recording of a no-gradient rollout, per puzzle: every segment's answer, the answer after
//! every H cycle, the Q logits and the forward residual of every module call.
//!
//! [`trace_rollout`] drives [`Engine::rollout`] with an [`Observer`] that sees z_L / z_H after
//! every module call (in call order: per H cycle, `L_cycles` L calls then one H call). Used by
//! `hrm analyze` (per-segment answers, convergence), `hrm solve --trace/--html` and `hrm serve`.
//! [`record_rollout`] also keeps the final carry and, on request, the trajectory of every call's
//! state (for the PCA of `hrm analyze`).

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use hrm_data::Batch;
use hrm_model::cpu::gemm;
use hrm_model::loss::argmax;
use hrm_model::model::{Event, Observer};
use hrm_model::{to_host_f32, Carry, Engine, Hrm};

/// One puzzle's rollout, segment by segment.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PuzzleTrace {
    /// Every segment run, in order.
    pub segments: Vec<SegmentTrace>,
    /// 1-based segment at which learned halting stops (the model's own ACT rule in evaluation:
    /// q_halt > q_continue), None if it never halts within the segments run.
    pub halted_at: Option<usize>,
}

/// One segment of a puzzle's rollout.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegmentTrace {
    /// Argmax answer tokens `[seq_len]` after this segment.
    pub answer: Vec<i32>,
    /// Argmax of the output head applied to z_H after each H cycle, `[H_cycles][seq_len]`
    /// (the last equals `answer`).
    pub h_cycle_answers: Vec<Vec<i32>>,
    /// Positions whose answer token differs from the previous segment's (segment 1: from the
    /// input tokens).
    pub changed: Vec<usize>,
    /// Q-halt logit.
    pub q_halt: f32,
    /// Q-continue logit.
    pub q_continue: f32,
    /// Forward residual ||z_t - z_(t-1)|| / ||z_(t-1)|| of every H call `[H_cycles]` and every
    /// L call `[H_cycles * L_cycles]` of this segment (the first call of a segment compares with
    /// the carry it started from). Norms run over the whole state of the puzzle (every position,
    /// the puzzle-embedding prefix included, times the hidden size).
    pub residual_h: Vec<f32>,
    /// See `residual_h`.
    pub residual_l: Vec<f32>,
}

/// Runs `segments` segments (no early stop) and returns one trace per batch row
/// (rows beyond `batch.effective_size` are padding and are dropped).
pub fn trace_rollout(engine: &Engine, batch: &Batch, segments: usize) -> Result<Vec<PuzzleTrace>> {
    Ok(record_rollout(engine, batch, segments, false, None)?.traces)
}

/// A rollout's traces with the final carry and, when asked, every call's state.
#[derive(Debug)]
pub struct Recording {
    /// One trace per real row.
    pub traces: Vec<PuzzleTrace>,
    /// The carry after the last segment (every batch row, padding included).
    pub carry: Carry,
    /// When asked: per real row, the mean over positions of z_L `[D]` after every L call, in
    /// call order over the whole rollout.
    pub trajectory_l: Option<Vec<Vec<Vec<f32>>>>,
    /// The same for z_H after every H call.
    pub trajectory_h: Option<Vec<Vec<Vec<f32>>>>,
    /// When asked: (z_H, z_L) `[B, S, D]` on the host after segment `states_at`.
    pub states: Option<(Vec<f32>, Vec<f32>)>,
}

/// [`trace_rollout`] keeping the final carry, the trajectories when `trajectories`, and the
/// states after segment `states_at` (1-based) when given.
pub fn record_rollout(
    engine: &Engine,
    batch: &Batch,
    segments: usize,
    trajectories: bool,
    states_at: Option<usize>,
) -> Result<Recording> {
    let model = engine.model();
    let cfg = &model.cfg;
    let (v, l) = (cfg.vocab_size, cfg.seq_len);
    // z_H and z_L updates per segment (HRM and TRM: H_cycles and H_cycles x L_cycles; the
    // baseline: one and none)
    let schedule = cfg.schedule();
    let hc = schedule.iter().filter(|c| c.h).count();
    let l_calls = schedule.len() - hc;
    if batch.seq_len != l {
        bail!(
            "the batch has sequences of {} tokens but the model takes {l}",
            batch.seq_len
        );
    }
    let rows = batch.effective_size.min(batch.batch_size);
    let mut rec = Recorder::new(model, batch.batch_size, trajectories)?;
    let mut outs: Vec<(Vec<i32>, Vec<f32>, Vec<f32>)> = Vec::with_capacity(segments);
    let mut states = None;
    let (carry, _) = engine.rollout(batch, segments, &mut rec, |k, c, s| {
        if Some(k) == states_at {
            states = Some((to_host_f32(&c.z_h)?, to_host_f32(&c.z_l)?));
        }
        let answers = s.logits.chunks(v).map(|r| argmax(r) as i32).collect();
        outs.push((answers, s.q_halt.clone(), s.q_continue.clone()));
        Ok(true)
    })?;
    if let Some(e) = rec.error.take() {
        return Err(e.context("recording the rollout"));
    }
    if rec.h_calls.len() != segments * hc || rec.l_calls.len() != segments * l_calls {
        bail!(
            "internal: {} H and {} L calls seen for {segments} segments of {hc} H and {l_calls} \
             L calls",
            rec.h_calls.len(),
            rec.l_calls.len()
        );
    }
    let mut traces = Vec::with_capacity(rows);
    for r in 0..rows {
        let mut prev: Vec<i32> = batch.inputs[r * l..(r + 1) * l].to_vec();
        let mut segs = Vec::with_capacity(segments);
        let mut halted_at = None;
        for (k, (answers, qh, qc)) in outs.iter().enumerate() {
            let answer = answers[r * l..(r + 1) * l].to_vec();
            let mut h_cycle_answers: Vec<Vec<i32>> = (0..hc)
                .map(|n| rec.h_calls[k * hc + n].answers[r * l..(r + 1) * l].to_vec())
                .collect();
            // the last H call's z_H is the one the heads read
            if let Some(last) = h_cycle_answers.last_mut() {
                *last = answer.clone();
            }
            let changed = (0..l).filter(|&i| answer[i] != prev[i]).collect();
            if halted_at.is_none() && qh[r] > qc[r] {
                halted_at = Some(k + 1);
            }
            segs.push(SegmentTrace {
                h_cycle_answers,
                changed,
                q_halt: qh[r],
                q_continue: qc[r],
                residual_h: (0..hc)
                    .map(|n| rec.h_calls[k * hc + n].residual[r])
                    .collect(),
                residual_l: (0..l_calls)
                    .map(|n| rec.l_calls[k * l_calls + n].residual[r])
                    .collect(),
                answer: answer.clone(),
            });
            prev = answer;
        }
        traces.push(PuzzleTrace {
            segments: segs,
            halted_at,
        });
    }
    let take = |calls: &[Call]| -> Vec<Vec<Vec<f32>>> {
        (0..rows)
            .map(|r| calls.iter().map(|c| c.mean[r].clone()).collect())
            .collect()
    };
    Ok(Recording {
        trajectory_l: trajectories.then(|| take(&rec.l_calls)),
        trajectory_h: trajectories.then(|| take(&rec.h_calls)),
        traces,
        carry,
        states,
    })
}

/// What is kept of one module call, per batch row.
#[derive(Debug, Default)]
struct Call {
    residual: Vec<f32>,
    /// H calls: the head's argmax `[B * seq_len]`.
    answers: Vec<i32>,
    /// With trajectories: the mean over positions `[B][D]`.
    mean: Vec<Vec<f32>>,
}

/// The observer: the previous state of each module, the output head, the calls seen.
struct Recorder {
    b: usize,
    s: usize,
    d: usize,
    /// Puzzle-embedding prefix positions, answer length, vocabulary.
    p: usize,
    l: usize,
    v: usize,
    lm_head: Vec<f32>,
    prev_h: Vec<f32>,
    prev_l: Vec<f32>,
    trajectories: bool,
    h_calls: Vec<Call>,
    l_calls: Vec<Call>,
    error: Option<anyhow::Error>,
}

impl Recorder {
    fn new(model: &Hrm, b: usize, trajectories: bool) -> Result<Self> {
        let cfg = &model.cfg;
        let (s, d) = (cfg.full_seq_len(), cfg.hidden_size);
        let sd = model.state_dict();
        let get = |key: &str| -> Result<Vec<f32>> {
            let t = sd
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, t)| t)
                .with_context(|| format!("the model has no tensor `{key}`"))?;
            Ok(to_host_f32(t)?)
        };
        // a fresh rollout starts every row from the init vectors (the reset of halted rows)
        let tile = |init: Vec<f32>| init.repeat(b * s);
        Ok(Self {
            b,
            s,
            d,
            p: cfg.puzzle_emb_len(),
            l: cfg.seq_len,
            v: cfg.vocab_size,
            lm_head: get("inner.lm_head.weight")?,
            prev_h: tile(get("inner.H_init")?),
            // the baseline has no z_L (and no L call to compare with it)
            prev_l: if cfg.has_z_l() {
                tile(get("inner.L_init")?)
            } else {
                Vec::new()
            },
            trajectories,
            h_calls: Vec::new(),
            l_calls: Vec::new(),
            error: None,
        })
    }

    fn record(&mut self, h_level: bool, t: &Tensor) -> Result<()> {
        let z = to_host_f32(t)?;
        let (b, s, d) = (self.b, self.s, self.d);
        if z.len() != b * s * d {
            bail!(
                "a module output of {} values, expected {b}x{s}x{d}",
                z.len()
            );
        }
        let prev = if h_level {
            &mut self.prev_h
        } else {
            &mut self.prev_l
        };
        let n = s * d;
        let residual = (0..b)
            .map(|r| {
                let (mut num, mut den) = (0f64, 0f64);
                for (&a, &p) in z[r * n..(r + 1) * n].iter().zip(&prev[r * n..(r + 1) * n]) {
                    num += ((a - p) as f64).powi(2);
                    den += (p as f64).powi(2);
                }
                (num.sqrt() / den.sqrt().max(f64::MIN_POSITIVE)) as f32
            })
            .collect();
        let mean = if self.trajectories {
            (0..b)
                .map(|r| {
                    let mut m = vec![0f32; d];
                    for row in z[r * n..(r + 1) * n].chunks(d) {
                        for (a, &x) in m.iter_mut().zip(row) {
                            *a += x / s as f32;
                        }
                    }
                    m
                })
                .collect()
        } else {
            Vec::new()
        };
        let answers = if h_level {
            let (p, l, v) = (self.p, self.l, self.v);
            let mut answers = Vec::with_capacity(b * l);
            for r in 0..b {
                let rows = &z[(r * s + p) * d..(r * s + p + l) * d];
                let logits = gemm::sgemm(l, v, d, rows, gemm::Op::N, &self.lm_head, gemm::Op::T);
                answers.extend(logits.chunks(v).map(|x| argmax(x) as i32));
            }
            answers
        } else {
            Vec::new()
        };
        *prev = z;
        let call = Call {
            residual,
            answers,
            mean,
        };
        if h_level {
            self.h_calls.push(call);
        } else {
            self.l_calls.push(call);
        }
        Ok(())
    }
}

impl Observer for Recorder {
    fn wants(&self, event: &Event) -> bool {
        matches!(event, Event::Module { .. })
    }

    fn observe(&mut self, event: Event, t: &Tensor) {
        if self.error.is_some() {
            return;
        }
        if let Event::Module { h_level } = event {
            if let Err(e) = self.record(h_level, t) {
                self.error = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use hrm_model::model::Trace;
    use hrm_model::ModelConfig;
    use rand::SeedableRng;

    /// A tiny model of 2 H x 3 L cycles.
    fn model(seed: u64) -> Hrm {
        let mut cfg = ModelConfig::tiny(3);
        (cfg.h_cycles, cfg.l_cycles) = (2, 3);
        Hrm::new(
            &cfg,
            &Device::Cpu,
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed),
        )
        .unwrap()
    }

    fn batch(m: &Hrm, effective: usize) -> Batch {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let c = &m.cfg;
        let mut b = Batch::random(c.batch_size, c.seq_len, c.vocab_size, 0.5, None, &mut rng);
        b.effective_size = effective;
        b
    }

    fn rel(a: &[f32], p: &[f32]) -> f32 {
        let num: f64 = a.iter().zip(p).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let den: f64 = p.iter().map(|&y| (y as f64).powi(2)).sum();
        (num.sqrt() / den.sqrt()) as f32
    }

    /// The trace against an independent computation: the parity `Trace` of the model's own
    /// candle path records every call's state, from which the residuals follow directly; the
    /// answers and Q logits match the engine's rollout.
    #[test]
    fn trace_matches_a_direct_per_call_computation() {
        let m = model(3);
        let (hc, lc, segments) = (m.cfg.h_cycles, m.cfg.l_cycles, 3);
        let b = batch(&m, 2);
        let engine = Engine::plain(&m);
        let traces = trace_rollout(&engine, &b, segments).unwrap();
        assert_eq!(traces.len(), 2, "padding rows are dropped");

        let mut calls = Trace::default();
        Engine::candle(&m)
            .rollout(&b, segments, &mut calls, |_, _, _| Ok(true))
            .unwrap();
        let states: Vec<(bool, Vec<f32>)> = calls
            .entries
            .iter()
            .filter(|(n, _)| n.starts_with("call") && !n.contains("layer"))
            .map(|(n, t)| (n.ends_with(".H"), to_host_f32(t).unwrap()))
            .collect();
        assert_eq!(states.len(), segments * hc * (lc + 1));
        let sd = m.state_dict();
        let init = |k: &str| {
            let t = &sd.iter().find(|(n, _)| n == k).unwrap().1;
            to_host_f32(t).unwrap()
        };
        let (s, d) = (m.cfg.full_seq_len(), m.cfg.hidden_size);
        let n = s * d;
        // every segment's argmax answers and Q logits, straight from the engine's rollout
        let v = m.cfg.vocab_size;
        let mut steps: Vec<(Vec<i32>, Vec<f32>, Vec<f32>)> = Vec::new();
        engine
            .rollout(&b, segments, &mut (), |_, _, s| {
                let answers = s.logits.chunks(v).map(|r| argmax(r) as i32).collect();
                steps.push((answers, s.q_halt.clone(), s.q_continue.clone()));
                Ok(true)
            })
            .unwrap();
        for (r, tr) in traces.iter().enumerate() {
            let mut prev_h = init("inner.H_init").repeat(s);
            let mut prev_l = init("inner.L_init").repeat(s);
            let (mut want_h, mut want_l) = (Vec::new(), Vec::new());
            for (h, z) in &states {
                let row = z[r * n..(r + 1) * n].to_vec();
                let prev = if *h { &mut prev_h } else { &mut prev_l };
                let res = rel(&row, prev);
                if *h {
                    want_h.push(res)
                } else {
                    want_l.push(res)
                }
                *prev = row;
            }
            let got_h: Vec<f32> = tr
                .segments
                .iter()
                .flat_map(|s| s.residual_h.clone())
                .collect();
            let got_l: Vec<f32> = tr
                .segments
                .iter()
                .flat_map(|s| s.residual_l.clone())
                .collect();
            assert_eq!(got_h.len(), segments * hc);
            assert_eq!(got_l.len(), segments * hc * lc);
            for (g, w) in got_h.iter().chain(&got_l).zip(want_h.iter().chain(&want_l)) {
                assert!((g - w).abs() <= 1e-4 * (1.0 + w), "residual {g} vs {w}");
                assert!(*w > 0.0);
            }
            let l = m.cfg.seq_len;
            // the answer after every H cycle: the output head on that call's z_H (candle ops)
            let lm = sd
                .iter()
                .find(|(n, _)| n == "inner.lm_head.weight")
                .unwrap();
            let p = m.cfg.puzzle_emb_len();
            let h_answers: Vec<Vec<i32>> = states
                .iter()
                .filter(|(h, _)| *h)
                .map(|(_, z)| {
                    let zr = Tensor::from_slice(
                        &z[r * n + p * d..r * n + (p + l) * d],
                        (l, d),
                        &Device::Cpu,
                    )
                    .unwrap();
                    let logits = zr.matmul(&lm.1.t().unwrap()).unwrap();
                    let logits = logits.to_vec2::<f32>().unwrap();
                    logits.iter().map(|x| argmax(x) as i32).collect()
                })
                .collect();
            let got: Vec<Vec<i32>> = tr
                .segments
                .iter()
                .flat_map(|s| s.h_cycle_answers.clone())
                .collect();
            assert_eq!(got, h_answers);
            let mut prev = b.inputs[r * l..(r + 1) * l].to_vec();
            for (k, seg) in tr.segments.iter().enumerate() {
                assert_eq!(seg.answer, steps[k].0[r * l..(r + 1) * l]);
                assert_eq!(seg.q_halt, steps[k].1[r]);
                assert_eq!(seg.q_continue, steps[k].2[r]);
                assert_eq!(seg.h_cycle_answers.len(), hc);
                assert_eq!(seg.h_cycle_answers.last(), Some(&seg.answer));
                let changed: Vec<usize> = (0..l).filter(|&i| seg.answer[i] != prev[i]).collect();
                assert_eq!(seg.changed, changed);
                prev = seg.answer.clone();
            }
            let first = tr
                .segments
                .iter()
                .position(|s| s.q_halt > s.q_continue)
                .map(|i| i + 1);
            assert_eq!(tr.halted_at, first);
        }
    }

    /// The trajectories have one point per call, the last H point is the mean of the final
    /// carry's z_H, and a batch of another sequence length is refused.
    #[test]
    fn recording_keeps_trajectories_and_the_carry() {
        let m = model(5);
        let b = batch(&m, 3);
        let rec = record_rollout(&Engine::plain(&m), &b, 2, true, Some(2)).unwrap();
        let (hc, lc) = (m.cfg.h_cycles, m.cfg.l_cycles);
        let th = rec.trajectory_h.unwrap();
        let tl = rec.trajectory_l.unwrap();
        assert_eq!(th.len(), 3);
        assert!(th.iter().all(|t| t.len() == 2 * hc));
        assert!(tl.iter().all(|t| t.len() == 2 * hc * lc));
        let zh = to_host_f32(&rec.carry.z_h).unwrap();
        let (s, d) = (m.cfg.full_seq_len(), m.cfg.hidden_size);
        let mean: Vec<f32> = (0..d)
            .map(|j| (0..s).map(|i| zh[i * d + j]).sum::<f32>() / s as f32)
            .collect();
        let last = th[0].last().unwrap();
        for (a, b) in mean.iter().zip(last) {
            assert!((a - b).abs() < 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
        }
        assert_eq!(rec.states.unwrap().0, zh);
        let e =
            record_rollout(&Engine::plain(&m), &Batch::zeros(3, 5), 1, false, None).unwrap_err();
        assert!(e.to_string().contains("5 tokens"), "{e}");
    }
}
