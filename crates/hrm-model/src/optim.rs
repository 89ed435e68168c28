//! Optimizers: AdamATan2 for every `nn.Parameter`, SignSGD for the sparse puzzle-embedding table.
//!
//! - AdamATan2 follows the `adam-atan2` 0.0.3 CUDA kernel the reference installs (spec §4.2,
//!   fixture README §5): decoupled decay first, lerp-form moments written as fused multiply-adds,
//!   no epsilon, the first-moment bias correction outside the atan2 and the second-moment one
//!   inside. Per element, in f32:
//!   `p *= 1 - lr*wd; m = fma(a1, g, fma(-a1, m, m)); v = fma(a2, g*g, fma(-a2, v, v));`
//!   `p = fma(-lr/(1-b1^t), atan2(m, sqrt(v)/sqrt(1-b2^t)), p)`.
//! - SignSGD mirrors sapientinc/HRM:models/sparse_embedding.py
//!   (`CastedSparseEmbeddingSignSGD_Distributed`): the gradients of duplicate ids are summed, then
//!   only the touched rows move: `w = w (1 - lr wd) - lr sign(g)` (lazy decay).

use std::sync::Mutex;

use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Moments and step count of one parameter tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamState {
    /// First moment, same size as the parameter.
    pub m: Vec<f32>,
    /// Second moment.
    pub v: Vec<f32>,
    /// Steps taken (the reference keeps it as an f32 scalar per tensor).
    pub t: u64,
}

/// AdamATan2 (adam-atan2 0.0.3) over a fixed list of parameter tensors.
#[derive(Debug, Clone)]
pub struct AdamAtan2 {
    /// (beta1, beta2), e.g. (0.9, 0.95).
    pub betas: (f64, f64),
    /// Decoupled weight decay, applied to every parameter (q_head bias included).
    pub weight_decay: f64,
    /// One state per parameter, in the order given to [`AdamAtan2::new`].
    pub states: Vec<AdamState>,
}

/// The per-step scalars, computed in f64 and rounded to f32 as the kernel's launcher does.
#[derive(Debug, Clone, Copy)]
struct AdamScalars {
    step_size: f32,
    wd_alpha: f32,
    c2: f32,
    a1: f32,
    a2: f32,
}

struct AdamUpdate<'a> {
    state: Mutex<&'a mut AdamState>,
    k: AdamScalars,
}

impl InplaceOp2 for AdamUpdate<'_> {
    fn name(&self) -> &'static str {
        "hrm-adam-atan2"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (a, b) = l1
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("adam: parameter not contiguous".into()))?;
        let p = match s1 {
            CpuStorage::F32(v) => &mut v[a..b],
            _ => candle_core::bail!("adam: parameters must be f32"),
        };
        let (ga, gb) = l2
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("adam: gradient not contiguous".into()))?;
        let g = &s2.as_slice::<f32>()?[ga..gb];
        let mut st = self
            .state
            .lock()
            .map_err(|_| candle_core::Error::Msg("adam lock".into()))?;
        let st = &mut **st;
        if st.m.len() != p.len() || g.len() != p.len() {
            candle_core::bail!("adam: state/gradient size mismatch")
        }
        let k = self.k;
        const CHUNK: usize = 1 << 14;
        p.par_chunks_mut(CHUNK)
            .zip(st.m.par_chunks_mut(CHUNK))
            .zip(st.v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| {
                for i in 0..p.len() {
                    let gi = g[i];
                    let mut pi = p[i] * k.wd_alpha;
                    let mi = k.a1.mul_add(gi, (-k.a1).mul_add(m[i], m[i]));
                    let vi = k.a2.mul_add(gi * gi, (-k.a2).mul_add(v[i], v[i]));
                    pi = (-k.step_size).mul_add(mi.atan2(vi.sqrt() / k.c2), pi);
                    p[i] = pi;
                    m[i] = mi;
                    v[i] = vi;
                }
            });
        Ok(())
    }
}

impl AdamAtan2 {
    /// Fresh state (zero moments, t = 0) for tensors of the given element counts.
    pub fn new(sizes: &[usize], betas: (f64, f64), weight_decay: f64) -> Self {
        let states = sizes
            .iter()
            .map(|&n| AdamState {
                m: vec![0.0; n],
                v: vec![0.0; n],
                t: 0,
            })
            .collect();
        Self {
            betas,
            weight_decay,
            states,
        }
    }

    /// One step on `params` (same order as at construction) with learning rate `lr`. A parameter
    /// whose gradient is `None` is skipped entirely (no decay, no step count), as in PyTorch.
    pub fn step(&mut self, params: &[&Var], grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        if params.len() != self.states.len() || grads.len() != params.len() {
            return Err(Error::msg(format!(
                "AdamATan2: {} states, {} parameters, {} gradients",
                self.states.len(),
                params.len(),
                grads.len()
            )));
        }
        let (b1, b2) = self.betas;
        for ((p, g), st) in params.iter().zip(grads).zip(self.states.iter_mut()) {
            let Some(g) = g else { continue };
            st.t += 1;
            let t = st.t as f64;
            let k = AdamScalars {
                step_size: (lr / (1.0 - b1.powf(t))) as f32,
                wd_alpha: (1.0 - lr * self.weight_decay) as f32,
                c2: (1.0 - b2.powf(t)).sqrt() as f32,
                a1: (1.0 - b1) as f32,
                a2: (1.0 - b2) as f32,
            };
            let g = g.to_dtype(DType::F32)?.contiguous()?;
            p.as_tensor().inplace_op2(
                &g,
                &AdamUpdate {
                    state: Mutex::new(st),
                    k,
                },
            )?;
        }
        Ok(())
    }
}

/// Writes whole rows of a 2-D f32 table in place.
struct RowWrite {
    width: usize,
    rows: Vec<(usize, Vec<f32>)>,
}

impl InplaceOp1 for RowWrite {
    fn name(&self) -> &'static str {
        "hrm-row-write"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("row write: table not contiguous".into()))?;
        let w = match s {
            CpuStorage::F32(v) => &mut v[a..b],
            _ => candle_core::bail!("row write: table must be f32"),
        };
        for (r, vals) in &self.rows {
            w[r * self.width..(r + 1) * self.width].copy_from_slice(vals);
        }
        Ok(())
    }
}

/// SignSGD with decoupled, lazy weight decay for the puzzle-embedding table.
#[derive(Debug, Clone, Copy)]
pub struct SignSgd {
    /// Decoupled weight decay of the touched rows.
    pub weight_decay: f64,
}

impl SignSgd {
    /// Update the rows of `table` `[N, Dp]` named by `ids` with the per-row gradients `grad`
    /// `[B, Dp]` (row b belongs to `ids[b]`; duplicates are summed in increasing b).
    pub fn step(&self, table: &Var, ids: &[i32], grad: &Tensor, lr: f64) -> Result<()> {
        let (n, dp) = table.as_tensor().dims2()?;
        let (b, gdp) = grad.dims2()?;
        if b != ids.len() || gdp != dp {
            return Err(Error::msg(format!(
                "SignSGD: gradient [{b}, {gdp}] for {} ids and a table of width {dp}",
                ids.len()
            )));
        }
        let g = grad.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        // unique ids in increasing order (torch.unique sorts), gradient sums per id
        let mut uniq: Vec<usize> = Vec::new();
        for &id in ids {
            if id < 0 || id as usize >= n {
                return Err(Error::msg(format!(
                    "SignSGD: id {id} outside the table [0, {n})"
                )));
            }
            uniq.push(id as usize);
        }
        uniq.sort_unstable();
        uniq.dedup();
        let table_host = table.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let neg_lr = (-lr) as f32;
        let rows = uniq
            .iter()
            .map(|&u| {
                let mut sum = vec![0f32; dp];
                for (bi, &id) in ids.iter().enumerate() {
                    if id as usize == u {
                        for j in 0..dp {
                            sum[j] += g[bi * dp + j];
                        }
                    }
                }
                let row: Vec<f32> = (0..dp)
                    .map(|j| {
                        let s = if sum[j] > 0.0 {
                            1.0
                        } else if sum[j] < 0.0 {
                            -1.0
                        } else {
                            0.0
                        };
                        table_host[u * dp + j] * decay + neg_lr * s
                    })
                    .collect();
                (u, row)
            })
            .collect();
        table
            .as_tensor()
            .inplace_op1(&RowWrite { width: dp, rows })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adam_atan2_matches_the_spec_scalar_vector() {
        // p0 = 1, lr 1e-2, betas (0.9, 0.95), wd 0.1, grads 0.5, -0.2, 0.1, 0 (spec §4.2, f64
        // reference values; f32 arithmetic agrees to ~1e-7)
        let p = Var::from_vec(vec![1f32], 1, &Device::Cpu).unwrap();
        let mut opt = AdamAtan2::new(&[1], (0.9, 0.95), 0.1);
        let expect = [
            0.989_033_134_751,
            0.984_561_228_645,
            0.979_718_664_756,
            0.975_538_759_633,
        ];
        for (g, e) in [0.5f32, -0.2, 0.1, 0.0].iter().zip(expect) {
            let gt = Tensor::from_vec(vec![*g], 1, &Device::Cpu).unwrap();
            opt.step(&[&p], &[Some(gt)], 1e-2).unwrap();
            let v = p.as_tensor().to_vec1::<f32>().unwrap()[0] as f64;
            assert!((v - e).abs() < 2e-7, "{v} vs {e}");
        }
        assert_eq!(opt.states[0].t, 4);
    }

    #[test]
    fn adam_zero_gradient_only_decays() {
        let p = Var::from_vec(vec![2f32, -3.0], 2, &Device::Cpu).unwrap();
        let mut opt = AdamAtan2::new(&[2], (0.9, 0.95), 0.5);
        let g = Tensor::from_vec(vec![0f32, 0.0], 2, &Device::Cpu).unwrap();
        opt.step(&[&p], &[Some(g)], 0.1).unwrap();
        let d = (1.0 - 0.1 * 0.5) as f32;
        assert_eq!(
            p.as_tensor().to_vec1::<f32>().unwrap(),
            vec![2.0 * d, -3.0 * d]
        );
        // a skipped parameter keeps its state
        opt.step(&[&p], &[None], 0.1).unwrap();
        assert_eq!(opt.states[0].t, 1);
    }

    #[test]
    fn signsgd_sums_duplicates_and_decays_lazily() {
        // spec §10.2: w = 0.3, lr 1e-2, wd 0.1, g = -0.7 -> 0.3097
        let table =
            Var::from_vec(vec![0.3f32, 1.0, 5.0, 5.0, -1.0, 2.0], (3, 2), &Device::Cpu).unwrap();
        let g = Tensor::from_vec(
            vec![-0.7f32, 0.2, 0.0, 0.0, 0.3, -0.1],
            (3, 2),
            &Device::Cpu,
        )
        .unwrap();
        SignSgd { weight_decay: 0.1 }
            .step(&table, &[0, 2, 0], &g, 1e-2)
            .unwrap();
        let w = table.as_tensor().to_vec2::<f32>().unwrap();
        let d = (1.0 - 1e-2 * 0.1) as f32;
        // row 0: grads summed (-0.7+0.3, 0.2-0.1) -> signs (-1, +1)
        assert!((w[0][0] - 0.3097).abs() < 1e-6);
        assert_eq!(w[0][1], 1.0 * d - 0.01);
        // row 1 untouched (no decay)
        assert_eq!(w[1], vec![5.0, 5.0]);
        // row 2: zero gradient -> decay only
        assert_eq!(w[2], vec![-d, 2.0 * d]);
    }
}
