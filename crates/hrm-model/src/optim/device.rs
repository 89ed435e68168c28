//! AdamATan2 with its moments resident on the parameter's device (the GPU path of
//! [`crate::optim::AdamAtan2`]).
//!
//! Mirrors the adam-atan2 0.0.3 CUDA kernel that sapientinc/HRM:pretrain.py uses. The host path
//! in [`crate::optim`] updates parameter and moments in one fused pass over host memory; on a
//! GPU the moments must stay on the device (copying 2 x 4 bytes per parameter each way every step
//! would cost more than the step itself), and candle's in-place ops mutate one tensor each, so
//! the same arithmetic runs as three in-place passes:
//!
//! 1. `m = fma(a1, g, fma(-a1, m, m))` (in place on m, reading g),
//! 2. `v = fma(a2, g*g, fma(-a2, v, v))` (in place on v, reading g),
//! 3. `p = fma(-step_size, atan2(m, sqrt(v) / c2), p * wd_alpha)` (in place on p, reading m, v).
//!
//! Every op has a CPU implementation with the host path's exact expressions (so the device path
//! is tested here, bit for bit against the fused host path) and, under the `cuda` feature, a CUDA
//! one (`kernels/optim.cu`, see [`crate::cuda`]).

use candle_core::{CpuStorage, DType, Device, InplaceOp2, InplaceOp3, Layout, Tensor};

use super::arith::{atan2_nonneg_x, AdamScalars, AdamState};
use crate::{Error, Result};

/// The first and second moments of one parameter, as f32 tensors on the parameter's device.
#[derive(Debug)]
pub(crate) struct DeviceMoments {
    m: Tensor,
    v: Tensor,
}

impl Clone for DeviceMoments {
    /// A deep copy: the moments are updated in place, so two optimizers must never share them.
    fn clone(&self) -> Self {
        // Only device out-of-memory can fail here; like a failed host allocation when cloning a
        // Vec, that is not recoverable.
        let copy = |t: &Tensor| {
            t.copy()
                .expect("out of device memory while copying optimizer moments")
        };
        Self {
            m: copy(&self.m),
            v: copy(&self.v),
        }
    }
}

impl DeviceMoments {
    /// Copy a host state's moments to `device`.
    pub(crate) fn upload(st: &AdamState, device: &Device) -> Result<Self> {
        Ok(Self {
            m: Tensor::from_slice(&st.m, st.m.len(), device)?,
            v: Tensor::from_slice(&st.v, st.v.len(), device)?,
        })
    }

    /// Elements per moment.
    pub(crate) fn len(&self) -> usize {
        self.m.elem_count()
    }

    /// The moments on the host `(m, v)`.
    pub(crate) fn download(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        Ok((self.m.to_vec1::<f32>()?, self.v.to_vec1::<f32>()?))
    }

    /// One AdamATan2 step of the f32 parameter `p` with the contiguous f32 gradient `g`.
    pub(crate) fn step(&self, p: &Tensor, g: &Tensor, k: AdamScalars) -> Result<()> {
        let n = self.len();
        if p.elem_count() != n || g.elem_count() != n {
            return Err(Error::msg(format!(
                "AdamATan2: parameter of {} elements, gradient of {}, moments of {n}",
                p.elem_count(),
                g.elem_count()
            )));
        }
        if p.dtype() != DType::F32 || g.dtype() != DType::F32 {
            return Err(Error::msg(
                "AdamATan2: parameters and gradients must be f32",
            ));
        }
        let g = g.flatten_all()?;
        self.m.inplace_op2(
            &g,
            &Moment {
                coef: k.a1,
                square: false,
            },
        )?;
        self.v.inplace_op2(
            &g,
            &Moment {
                coef: k.a2,
                square: true,
            },
        )?;
        p.flatten_all()?
            .inplace_op3(&self.m, &self.v, &ParamUpdate(k))?;
        Ok(())
    }
}

/// Contiguous element range of a layout, or an error naming the op.
fn range(l: &Layout, what: &str) -> candle_core::Result<(usize, usize)> {
    l.contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: tensor not contiguous")))
}

/// `x = fma(c, g, fma(-c, x, x))` with `g` or `g*g`: one moment of AdamATan2 in place.
struct Moment {
    coef: f32,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "hrm-adam-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (a, b) = range(l1, self.name())?;
        let (ga, gb) = range(l2, self.name())?;
        let x = match s1 {
            CpuStorage::F32(v) => &mut v[a..b],
            _ => candle_core::bail!("adam moment: f32 only"),
        };
        let g = &s2.as_slice::<f32>()?[ga..gb];
        if g.len() != x.len() {
            candle_core::bail!("adam moment: {} gradients for {} moments", g.len(), x.len())
        }
        let c = self.coef;
        for (xi, &gi) in x.iter_mut().zip(g) {
            // the host path's expressions: a1.mul_add(g, (-a1).mul_add(m, m)) and
            // a2.mul_add(g * g, (-a2).mul_add(v, v))
            let src = if self.square { gi * gi } else { gi };
            *xi = c.mul_add(src, (-c).mul_add(*xi, *xi));
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (a, b) = range(l1, self.name())?;
        let (ga, gb) = range(l2, self.name())?;
        crate::cuda::adam_moment(s1, (a, b), s2, (ga, gb), self.coef, self.square)
    }
}

/// `p = fma(-step_size, atan2(m, sqrt(v) / c2), p * wd_alpha)` in place on p.
struct ParamUpdate(AdamScalars);

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "hrm-adam-param"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let (a, b) = range(l1, self.name())?;
        let (ma, mb) = range(l2, self.name())?;
        let (va, vb) = range(l3, self.name())?;
        let p = match s1 {
            CpuStorage::F32(v) => &mut v[a..b],
            _ => candle_core::bail!("adam param: f32 only"),
        };
        let m = &s2.as_slice::<f32>()?[ma..mb];
        let v = &s3.as_slice::<f32>()?[va..vb];
        if m.len() != p.len() || v.len() != p.len() {
            candle_core::bail!("adam param: moment sizes differ from the parameter's")
        }
        let k = self.0;
        for i in 0..p.len() {
            let decayed = p[i] * k.wd_alpha;
            p[i] = (-k.step_size).mul_add(atan2_nonneg_x(m[i], v[i].sqrt() / k.c2), decayed);
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let p = range(l1, self.name())?;
        let m = range(l2, self.name())?;
        let v = range(l3, self.name())?;
        crate::cuda::adam_param(s1, p, s2, m, s3, v, self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::AdamAtan2;
    use candle_core::Var;
    use rand::{Rng, SeedableRng};

    fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| rng.random_range(-1.0f32..1.0) * scale)
            .collect()
    }

    /// The three-pass device path gives bit-identical parameters and moments to the fused host
    /// pass (both run here on the CPU: the device path is forced by uploading the moments).
    #[test]
    fn device_path_matches_the_host_path_bit_for_bit() {
        let shapes = [vec![7usize, 5], vec![3], vec![1000]];
        let params = |seed: u64| -> Vec<Var> {
            shapes
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let n = s.iter().product();
                    Var::from_vec(
                        rand_vec(n, seed + i as u64, 1.0),
                        s.as_slice(),
                        &Device::Cpu,
                    )
                    .unwrap()
                })
                .collect()
        };
        let (host_p, dev_p) = (params(1), params(1));
        let sizes: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
        let mut host = AdamAtan2::new(&sizes, (0.9, 0.95), 0.1);
        let mut dev = host.clone();
        for j in 0..sizes.len() {
            dev.use_device_moments(j, &Device::Cpu).unwrap();
        }
        for step in 0..6u64 {
            // gradients with exact zeros and tiny values (atan2 near 0 and near +-pi/2)
            let grads: Vec<Option<Tensor>> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let n: usize = s.iter().product();
                    let mut g = rand_vec(n, 100 + 10 * step + i as u64, 1e-3);
                    for (k, x) in g.iter_mut().enumerate() {
                        if k % 7 == 0 {
                            *x = 0.0;
                        } else if k % 11 == 0 {
                            *x *= 1e-6;
                        }
                    }
                    // parameter 1 gets no gradient in one step: skipped, no decay, no count
                    (!(i == 1 && step == 3))
                        .then(|| Tensor::from_vec(g, s.as_slice(), &Device::Cpu).unwrap())
                })
                .collect();
            let hv: Vec<&Var> = host_p.iter().collect();
            let dv: Vec<&Var> = dev_p.iter().collect();
            host.step(&hv, &grads, 3e-3).unwrap();
            dev.step(&dv, &grads, 3e-3).unwrap();
        }
        for (a, b) in host_p.iter().zip(&dev_p) {
            let (a, b) = (
                a.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
                b.as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
            );
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "parameters differ"
            );
        }
        // moments: on the "device" until synced; host_states reads them without moving them
        assert!(dev.states.iter().all(|s| s.m.is_empty()));
        let seen = dev.host_states().unwrap().into_owned();
        assert_eq!(seen, host.states);
        dev.sync_to_host().unwrap();
        assert_eq!(dev.states, host.states);
        assert_eq!(dev.states[1].t, 5);
    }

    #[test]
    fn cloned_device_moments_are_independent() {
        let st = AdamState {
            m: vec![1.0, 2.0],
            v: vec![3.0, 4.0],
            t: 0,
        };
        let a = DeviceMoments::upload(&st, &Device::Cpu).unwrap();
        let b = a.clone();
        let p = Var::from_vec(vec![1f32, 1.0], 2, &Device::Cpu).unwrap();
        let g = Tensor::from_vec(vec![0.5f32, -0.5], 2, &Device::Cpu).unwrap();
        let k = AdamScalars {
            step_size: 0.1,
            wd_alpha: 1.0,
            c2: 1.0,
            a1: 0.1,
            a2: 0.05,
        };
        a.step(p.as_tensor(), &g, k).unwrap();
        assert_eq!(b.download().unwrap(), (vec![1.0, 2.0], vec![3.0, 4.0]));
        assert_ne!(a.download().unwrap().0, vec![1.0, 2.0]);
    }
}
