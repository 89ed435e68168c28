//! Optimizers: AdamATan2 for every `nn.Parameter`, SignSGD for the sparse puzzle-embedding table.
//!
//! - AdamATan2 follows the `adam-atan2` 0.0.3 CUDA kernel the reference installs
//!   (docs/model.md, "Optimizers"): decoupled decay first, lerp-form moments written as fused multiply-adds,
//!   no epsilon, the first-moment bias correction outside the atan2 and the second-moment one
//!   inside. Per element, in f32:
//!   `p *= 1 - lr*wd; m = fma(a1, g, fma(-a1, m, m)); v = fma(a2, g*g, fma(-a2, v, v));`
//!   `p = fma(-lr/(1-b1^t), atan2(m, sqrt(v)/sqrt(1-b2^t)), p)`.
//! - SignSGD mirrors sapientinc/HRM:models/sparse_embedding.py
//!   (`CastedSparseEmbeddingSignSGD_Distributed`): the gradients of duplicate ids are summed, then
//!   only the touched rows move: `w = w (1 - lr wd) - lr sign(g)` (lazy decay).
//!
//! On a GPU the Adam moments live on the device (`device`) and SignSGD reads and
//! writes only the touched rows of the table.

use std::borrow::Cow;
use std::sync::Mutex;

use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Tensor, Var};
use rayon::prelude::*;

pub(crate) mod arith;
mod device;

use arith::adam_chunk;
use arith::AdamScalars;
pub use arith::AdamState;
use device::DeviceMoments;

use crate::{Error, Result};

/// AdamATan2 (adam-atan2 0.0.3) over a fixed list of parameter tensors.
#[derive(Debug, Clone)]
pub struct AdamAtan2 {
    /// (beta1, beta2), e.g. (0.9, 0.95).
    pub betas: (f64, f64),
    /// Decoupled weight decay, applied to every parameter (q_head bias included).
    pub weight_decay: f64,
    /// One state per parameter, in the order given to [`AdamAtan2::new`]. For a parameter on a
    /// GPU the moments move to the device at its first step and `m`/`v` here are left empty
    /// (never stale); read them with [`AdamAtan2::host_states`] or bring them back with
    /// [`AdamAtan2::sync_to_host`]. Non-empty host moments are authoritative: the next step
    /// uploads them (so states loaded from a checkpoint take effect).
    pub states: Vec<AdamState>,
    /// Device-resident moments per parameter (None: the host `states` hold them).
    device: Vec<Option<DeviceMoments>>,
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
            .for_each(|(((p, m), v), g)| adam_chunk(p, m, v, g, k));
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
            device: vec![None; sizes.len()],
            states,
        }
    }

    /// Move parameter `j`'s moments to `device` now (otherwise this happens at its first step
    /// on a non-CPU device). On the CPU this selects the device path, which is how tests here
    /// exercise the GPU's bookkeeping (checkpoints of device-resident moments, ...).
    pub fn use_device_moments(&mut self, j: usize, device: &candle_core::Device) -> Result<()> {
        let st = &mut self.states[j];
        self.device[j] = Some(DeviceMoments::upload(st, device)?);
        st.m = Vec::new();
        st.v = Vec::new();
        Ok(())
    }

    /// The states with host moments (downloaded copies where the moments live on a device),
    /// e.g. for a checkpoint; leaves the optimizer as it is.
    pub fn host_states(&self) -> Result<Cow<'_, [AdamState]>> {
        if self.device.iter().all(Option::is_none) {
            return Ok(Cow::Borrowed(&self.states));
        }
        let mut out = self.states.clone();
        for (st, d) in out.iter_mut().zip(&self.device) {
            if let Some(d) = d {
                (st.m, st.v) = d.download()?;
            }
        }
        Ok(Cow::Owned(out))
    }

    /// Bring device-resident moments back into `states` (the next step uploads them again).
    pub fn sync_to_host(&mut self) -> Result<()> {
        for (st, d) in self.states.iter_mut().zip(self.device.iter_mut()) {
            if let Some(moments) = d.take() {
                (st.m, st.v) = moments.download()?;
            }
        }
        Ok(())
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
        if self.device.len() != self.states.len() {
            // `states` was replaced wholesale (checkpoint loading): no device copies are current
            self.device = vec![None; self.states.len()];
        }
        let (b1, b2) = self.betas;
        for (j, ((p, g), st)) in params
            .iter()
            .zip(grads)
            .zip(self.states.iter_mut())
            .enumerate()
        {
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
            if !p.as_tensor().device().is_cpu() || self.device[j].is_some() {
                // device path: fresh host moments (first step, or loaded) go up first
                if !st.m.is_empty() || self.device[j].is_none() {
                    if st.m.len() != p.elem_count() {
                        return Err(Error::msg(format!(
                            "AdamATan2: parameter {j} has {} elements but its state {}",
                            p.elem_count(),
                            st.m.len()
                        )));
                    }
                    self.device[j] = Some(DeviceMoments::upload(st, p.as_tensor().device())?);
                    st.m = Vec::new();
                    st.v = Vec::new();
                }
                if let Some(d) = &self.device[j] {
                    d.step(p.as_tensor(), &g, k)?;
                }
                continue;
            }
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
        let rows_only = !table.as_tensor().device().is_cpu();
        self.step_rows(table, ids, grad, lr, rows_only)
    }

    /// [`SignSgd::step`]; with `rows_only` the touched rows are gathered, updated on the host and
    /// scattered back (any device), else the table is read and written in place (CPU).
    fn step_rows(
        &self,
        table: &Var,
        ids: &[i32],
        grad: &Tensor,
        lr: f64,
        rows_only: bool,
    ) -> Result<()> {
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
        // the current rows: on the CPU read in place from the whole table; on a GPU only the
        // touched rows come to the host (row k of `table_host` is table row uniq[k])
        let table_host = if !rows_only {
            table.as_tensor().flatten_all()?.to_vec1::<f32>()?
        } else {
            let idx: Vec<u32> = uniq.iter().map(|&u| u as u32).collect();
            let idx = Tensor::from_vec(idx, uniq.len(), table.as_tensor().device())?;
            table
                .as_tensor()
                .index_select(&idx, 0)?
                .flatten_all()?
                .to_vec1::<f32>()?
        };
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let neg_lr = (-lr) as f32;
        let rows: Vec<(usize, Vec<f32>)> = uniq
            .iter()
            .enumerate()
            .map(|(k, &u)| {
                let base = if rows_only { k * dp } else { u * dp };
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
                        table_host[base + j] * decay + neg_lr * s
                    })
                    .collect();
                (u, row)
            })
            .collect();
        if !rows_only {
            table
                .as_tensor()
                .inplace_op1(&RowWrite { width: dp, rows })?;
        } else {
            // scatter the new rows back: index [U, Dp] (row u everywhere in row k), values [U, Dp]
            let dev = table.as_tensor().device();
            let idx: Vec<u32> = rows
                .iter()
                .flat_map(|(u, _)| std::iter::repeat_n(*u as u32, dp))
                .collect();
            let vals: Vec<f32> = rows.iter().flat_map(|(_, r)| r.iter().copied()).collect();
            let idx = Tensor::from_vec(idx, (rows.len(), dp), dev)?;
            let vals = Tensor::from_vec(vals, (rows.len(), dp), dev)?;
            table.as_tensor().scatter_set(&idx, &vals, 0)?;
        }
        Ok(())
    }
}

/// Exponential moving average of the parameters (TRM's `EMAHelper`, not in the HRM reference):
/// a shadow copy that follows the weights, `shadow = rate * shadow + (1 - rate) * param` after
/// every optimizer step, in f32. Evaluation and the saved model use the shadow; the training
/// run keeps stepping the raw weights.
#[derive(Debug, Clone)]
pub struct Ema {
    /// Decay per step (TRM's default 0.999).
    pub rate: f64,
    /// One tensor per parameter, in the order given to [`Ema::new`].
    pub shadow: Vec<Tensor>,
}

impl Ema {
    /// A shadow equal to the current weights.
    pub fn new(vars: &[&Var], rate: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&rate) {
            return Err(Error::msg(format!("EMA rate {rate} must lie in [0, 1)")));
        }
        let shadow = vars
            .iter()
            .map(|v| Ok(v.as_detached_tensor().copy()?))
            .collect::<Result<_>>()?;
        Ok(Self { rate, shadow })
    }

    /// Fold the current weights into the shadow.
    pub fn update(&mut self, vars: &[&Var]) -> Result<()> {
        self.check(vars)?;
        for (s, v) in self.shadow.iter_mut().zip(vars) {
            // detached: the shadow must not record an autograd graph through the variables
            let w = v.as_detached_tensor();
            *s = (s.affine(self.rate, 0.0)? + w.affine(1.0 - self.rate, 0.0)?)?;
        }
        Ok(())
    }

    /// Exchange the weights and the shadow: afterwards the model holds the averaged weights and
    /// the shadow the raw ones. Calling it again restores both.
    pub fn swap(&mut self, vars: &[&Var]) -> Result<()> {
        self.check(vars)?;
        for (s, v) in self.shadow.iter_mut().zip(vars) {
            let raw = v.as_detached_tensor().copy()?;
            v.set(s)?;
            *s = raw;
        }
        Ok(())
    }

    fn check(&self, vars: &[&Var]) -> Result<()> {
        if vars.len() != self.shadow.len()
            || vars
                .iter()
                .zip(&self.shadow)
                .any(|(v, s)| v.shape() != s.shape())
        {
            return Err(Error::msg(
                "EMA shadow does not match the model's parameters",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::arith::{adam_chunk_body, atan2_nonneg_x};
    use super::*;
    use candle_core::Device;

    #[test]
    fn adam_atan2_matches_the_spec_scalar_vector() {
        // p0 = 1, lr 1e-2, betas (0.9, 0.95), wd 0.1, grads 0.5, -0.2, 0.1, 0 (docs/model.md, "Optimizers"; f64
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
    fn fast_atan2_matches_libm() {
        let mut worst = 0f64;
        for i in 0..20_000 {
            let x = (i as f32 * 0.37).sin().abs() * 10f32.powi(i % 13 - 6);
            for y in [
                x * 3.1,
                -x * 0.2,
                x * 0.999,
                -x * 1.001,
                x * 40.0,
                1e-30,
                -7.5,
                0.0,
            ] {
                let (a, b) = (atan2_nonneg_x(y, x) as f64, (y as f64).atan2(x as f64));
                let err = (a - b).abs();
                worst = worst.max(err);
                assert!(
                    err <= 3e-7 * b.abs().max(1e-30) || err < 1e-37,
                    "atan2({y}, {x}) = {a} vs {b}"
                );
            }
        }
        assert_eq!(atan2_nonneg_x(0.0, 0.0), 0.0);
        assert_eq!(atan2_nonneg_x(2.0, 0.0), std::f32::consts::FRAC_PI_2);
        assert!(worst < 1e-6);
    }

    #[test]
    fn simd_update_equals_scalar_update() {
        let n = 1000;
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 77.0)
            .collect();
        let k = AdamScalars {
            step_size: 0.01,
            wd_alpha: 0.999,
            c2: 0.2236,
            a1: 0.1,
            a2: 0.05,
        };
        let mut a = (vec![0.5f32; n], vec![0.01f32; n], vec![0.002f32; n]);
        let mut b = a.clone();
        adam_chunk(&mut a.0, &mut a.1, &mut a.2, &g, k);
        adam_chunk_body(&mut b.0, &mut b.1, &mut b.2, &g, k);
        assert_eq!(
            a, b,
            "the dispatched kernel must equal the portable one bit for bit"
        );
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
    fn signsgd_row_gather_path_matches_the_in_place_path() {
        // the GPU path (gather the touched rows, scatter them back) run on the CPU
        let vals: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin()).collect();
        let a = Var::from_vec(vals.clone(), (8, 5), &Device::Cpu).unwrap();
        let b = Var::from_vec(vals, (8, 5), &Device::Cpu).unwrap();
        let g: Vec<f32> = (0..30).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect();
        let g = Tensor::from_vec(g, (6, 5), &Device::Cpu).unwrap();
        let ids = [3, 0, 3, 7, 0, 5];
        let opt = SignSgd { weight_decay: 0.3 };
        opt.step_rows(&a, &ids, &g, 0.02, false).unwrap();
        opt.step_rows(&b, &ids, &g, 0.02, true).unwrap();
        let (a, b) = (
            a.as_tensor().to_vec2::<f32>().unwrap(),
            b.as_tensor().to_vec2::<f32>().unwrap(),
        );
        assert_eq!(a, b);
    }

    #[test]
    fn signsgd_sums_duplicates_and_decays_lazily() {
        // docs/model.md, "Optimizers": w = 0.3, lr 1e-2, wd 0.1, g = -0.7 -> 0.3097
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

    #[test]
    fn ema_follows_the_weights_and_swaps_back() {
        let p = Var::from_vec(vec![1f32, -2.0], 2, &Device::Cpu).unwrap();
        let mut ema = Ema::new(&[&p], 0.9).unwrap();
        p.set(&Tensor::new(&[3f32, 0.0], &Device::Cpu).unwrap())
            .unwrap();
        ema.update(&[&p]).unwrap();
        // 0.9 * 1 + 0.1 * 3, 0.9 * -2 + 0.1 * 0
        let s = ema.shadow[0].to_vec1::<f32>().unwrap();
        assert!(
            (s[0] - 1.2).abs() < 1e-6 && (s[1] + 1.8).abs() < 1e-6,
            "{s:?}"
        );
        // no autograd graph hangs off the shadow (it would grow with every step)
        assert!(!ema.shadow[0].track_op());
        ema.swap(&[&p]).unwrap();
        assert!(!ema.shadow[0].track_op());
        assert_eq!(p.as_tensor().to_vec1::<f32>().unwrap(), s);
        assert_eq!(ema.shadow[0].to_vec1::<f32>().unwrap(), vec![3.0, 0.0]);
        ema.swap(&[&p]).unwrap();
        assert_eq!(p.as_tensor().to_vec1::<f32>().unwrap(), vec![3.0, 0.0]);
        assert_eq!(ema.shadow[0].to_vec1::<f32>().unwrap(), s);
        assert!(Ema::new(&[&p], 1.0).is_err());
        let q = Var::from_vec(vec![1f32], 1, &Device::Cpu).unwrap();
        assert!(ema.update(&[&q]).is_err());
    }
}
