//! Data-parallel training over N ranks (one process per GPU, or N threads on the CPU).
//!
//! Mirrors what sapientinc/HRM:pretrain.py does under `torchrun` with the NCCL backend, and
//! models/sparse_embedding.py `CastedSparseEmbeddingSignSGD_Distributed`:
//!
//! - every rank builds the same model (same seed) and the same sampler, and trains on rows
//!   `[rank*B/N, (rank+1)*B/N)` of each global batch of B examples;
//! - each rank back-propagates `loss / B` (the GLOBAL batch size) on its rows, then the parameter
//!   gradients are summed over ranks (all-reduce), which gives exactly the gradient of the global
//!   batch's loss;
//! - the puzzle-embedding SignSGD all-gathers the ids and the per-row gradients of every rank
//!   (rank-major, i.e. in global batch order), so every rank applies the identical sparse update;
//! - AdamATan2 then runs on identical gradients on every rank: the weights stay identical
//!   without ever being broadcast;
//! - the loss-head metric sums are all-reduced for logging (together with the Ctrl-C flag, so
//!   that all ranks stop at the same step); rank 0 alone writes logs and checkpoints.
//!
//! Differences from the reference, each deliberate: the ACT exploration RNG of a rank is derived
//! from `(seed, rank, step)` at every step (so a resumed data-parallel run is exact without
//! saving N generator states); a checkpoint holds the carry of the whole global batch (gathered
//! from all ranks), so a run can resume on any number of ranks; evaluation runs on rank 0 only
//! while the other ranks wait (the reference splits the test set over ranks and reduces).
//!
//! The communication sits behind [`Collective`]: [`SingleProcess`] is the world of one rank (a
//! plain `hrm train`: every sum and gather is the identity, so the trainer has one code path),
//! [`LocalGroup`] connects N threads of one process (used by the tests and available for CPU
//! runs), and, with the `nccl` feature, `NcclCollective` connects N processes on N GPUs through
//! NCCL (cudarc's bindings), which `hrm train --gpus N` launches.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use hrm_model::loss::{LossMetrics, LossType};
use hrm_model::train::{forward_backward, Grads, TrainStep};
use hrm_model::{Batch, Carry, Hrm};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Environment variable with this process's rank (set by the `--gpus` launcher).
pub const ENV_RANK: &str = "HRM_RANK";
/// Environment variable with the number of ranks.
pub const ENV_WORLD_SIZE: &str = "HRM_WORLD_SIZE";
/// Environment variable with the rendezvous folder (where rank 0 publishes the NCCL id).
pub const ENV_RENDEZVOUS: &str = "HRM_DIST_DIR";

/// Collective communication between the ranks of a data-parallel run. Every rank must call the
/// same operations in the same order with tensors of the same shapes.
pub trait Collective {
    /// This rank, in `0..world_size`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Element-wise sum over ranks of an f32 tensor (same shape everywhere); the result is on
    /// the tensor's device and identical on every rank.
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor>;
    /// Concatenation along dimension 0 of every rank's f32 tensor, in rank order.
    fn all_gather(&self, t: &Tensor) -> Result<Tensor>;
    /// Sum over ranks of host f64 values, in place (metric sums and flags).
    fn all_reduce_sum_f64(&self, v: &mut [f64]) -> Result<()>;
    /// Concatenation of every rank's i32 values (same length everywhere), in rank order.
    fn all_gather_i32(&self, v: &[i32]) -> Result<Vec<i32>>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
}

// =============================================================================================
// One process: the world of one rank.

/// The collective of a run without data parallelism: rank 0 of 1, whose sums and gathers return
/// their input and whose barrier returns at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }

    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.clone())
    }

    fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }

    fn all_gather_i32(&self, v: &[i32]) -> Result<Vec<i32>> {
        Ok(v.to_vec())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

// =============================================================================================
// In-process group: N ranks in N threads.

/// One contribution to an exchange.
#[derive(Debug, Clone)]
enum Payload {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
}

#[derive(Debug)]
struct GroupState {
    slots: Vec<Option<Payload>>,
    arrived: usize,
    generation: u64,
    /// Set when a rank leaves (its handle is dropped, e.g. while unwinding from an error): the
    /// others then fail instead of waiting forever.
    aborted: Option<String>,
}

#[derive(Debug)]
struct GroupShared {
    n: usize,
    state: Mutex<GroupState>,
    cv: Condvar,
}

/// Factory of the handles of an in-process group of ranks (one per thread).
#[derive(Debug)]
pub struct LocalGroup;

impl LocalGroup {
    /// Handles for ranks `0..n`; move handle `r` into the thread that runs rank `r`.
    pub fn ranks(n: usize) -> Vec<LocalCollective> {
        let shared = Arc::new(GroupShared {
            n,
            state: Mutex::new(GroupState {
                slots: vec![None; n],
                arrived: 0,
                generation: 0,
                aborted: None,
            }),
            cv: Condvar::new(),
        });
        (0..n)
            .map(|rank| LocalCollective {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }
}

/// One rank of a [`LocalGroup`]. Values are exchanged through shared memory; sums are taken in
/// rank order, so every rank gets the bit-identical result.
#[derive(Debug)]
pub struct LocalCollective {
    rank: usize,
    shared: Arc<GroupShared>,
}

impl LocalCollective {
    fn lock(&self) -> Result<MutexGuard<'_, GroupState>> {
        self.shared
            .state
            .lock()
            .map_err(|_| anyhow!("rank {}: the process group's lock is poisoned", self.rank))
    }

    /// Generation-counting barrier that fails when a rank has left.
    fn wait(&self) -> Result<()> {
        let mut s = self.lock()?;
        if let Some(why) = &s.aborted {
            bail!("rank {}: {why}", self.rank);
        }
        let gen = s.generation;
        s.arrived += 1;
        if s.arrived == self.shared.n {
            s.arrived = 0;
            s.generation += 1;
            self.shared.cv.notify_all();
            return Ok(());
        }
        while s.generation == gen && s.aborted.is_none() {
            s =
                self.shared.cv.wait(s).map_err(|_| {
                    anyhow!("rank {}: the process group's lock is poisoned", self.rank)
                })?;
        }
        if s.generation == gen {
            bail!(
                "rank {}: {}",
                self.rank,
                s.aborted.clone().unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Every rank's payload, in rank order.
    fn exchange(&self, p: Payload) -> Result<Vec<Payload>> {
        self.lock()?.slots[self.rank] = Some(p);
        self.wait()?; // all written
        let all = self
            .lock()?
            .slots
            .iter()
            .enumerate()
            .map(|(r, s)| {
                s.clone()
                    .ok_or_else(|| anyhow!("rank {r} contributed nothing"))
            })
            .collect::<Result<Vec<_>>>()?;
        self.wait()?; // all read: the slots may be reused
        Ok(all)
    }
}

impl Drop for LocalCollective {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.state.lock() {
            if s.aborted.is_none() {
                s.aborted = Some(format!("rank {} left the group", self.rank));
            }
            self.shared.cv.notify_all();
        }
    }
}

impl Collective for LocalCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.n
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        let all = self.exchange(Payload::F32(hrm_model::to_host_f32(t)?))?;
        let mut acc: Option<Vec<f32>> = None;
        for (r, p) in all.into_iter().enumerate() {
            let Payload::F32(v) = p else {
                bail!("all_reduce_sum: rank {r} sent a different kind of value")
            };
            match acc.as_mut() {
                None => acc = Some(v),
                Some(a) if a.len() == v.len() => a.iter_mut().zip(&v).for_each(|(x, y)| *x += y),
                Some(a) => bail!(
                    "all_reduce_sum: rank {r} sent {} values, rank 0 {}",
                    v.len(),
                    a.len()
                ),
            }
        }
        let acc = acc.unwrap_or_default();
        Ok(Tensor::from_vec(acc, t.shape(), t.device())?)
    }

    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let all = self.exchange(Payload::F32(hrm_model::to_host_f32(t)?))?;
        let mut out = Vec::new();
        for (r, p) in all.into_iter().enumerate() {
            let Payload::F32(v) = p else {
                bail!("all_gather: rank {r} sent a different kind of value")
            };
            if v.len() != t.elem_count() {
                bail!(
                    "all_gather: rank {r} sent {} values, this rank {}",
                    v.len(),
                    t.elem_count()
                );
            }
            out.extend(v);
        }
        let mut dims = t.dims().to_vec();
        if dims.is_empty() {
            dims.push(1);
        }
        dims[0] *= self.shared.n;
        Ok(Tensor::from_vec(out, dims, t.device())?)
    }

    fn all_reduce_sum_f64(&self, v: &mut [f64]) -> Result<()> {
        let all = self.exchange(Payload::F64(v.to_vec()))?;
        v.iter_mut().for_each(|x| *x = 0.0);
        for (r, p) in all.into_iter().enumerate() {
            let Payload::F64(w) = p else {
                bail!("all_reduce_sum_f64: rank {r} sent a different kind of value")
            };
            if w.len() != v.len() {
                bail!(
                    "all_reduce_sum_f64: rank {r} sent {} values, this rank {}",
                    w.len(),
                    v.len()
                );
            }
            v.iter_mut().zip(&w).for_each(|(x, y)| *x += y);
        }
        Ok(())
    }

    fn all_gather_i32(&self, v: &[i32]) -> Result<Vec<i32>> {
        let all = self.exchange(Payload::I32(v.to_vec()))?;
        let mut out = Vec::with_capacity(v.len() * self.shared.n);
        for (r, p) in all.into_iter().enumerate() {
            let Payload::I32(w) = p else {
                bail!("all_gather_i32: rank {r} sent a different kind of value")
            };
            if w.len() != v.len() {
                bail!(
                    "all_gather_i32: rank {r} sent {} values, this rank {}",
                    w.len(),
                    v.len()
                );
            }
            out.extend(w);
        }
        Ok(out)
    }

    fn barrier(&self) -> Result<()> {
        self.wait()
    }
}

// =============================================================================================
// The data-parallel parts of a training step.

/// A rank's view of a run: its [`Collective`], its device and the run-wide stop flag. A run
/// without data parallelism is the one rank of [`Dist::single`].
pub struct Dist {
    coll: Box<dyn Collective>,
    device: Option<Device>,
    stop: std::cell::Cell<bool>,
    /// [`Dist::single`]: the step draws from the run's own exploration generator and reads the
    /// stop flag when asked, as a run without a group always has.
    single: bool,
}

impl std::fmt::Debug for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dist(rank {} of {})", self.rank(), self.world_size())
    }
}

/// Metric sums exchanged every step: the stop flag, the total loss, then the metrics.
const N_REDUCED: usize = 11;

impl Dist {
    /// Wrap a collective; the rank trains on the device its config names.
    pub fn new(coll: Box<dyn Collective>) -> Self {
        Self {
            coll,
            device: None,
            stop: std::cell::Cell::new(false),
            single: false,
        }
    }

    /// The one rank of a run without data parallelism ([`SingleProcess`]), on the device its
    /// config names.
    pub fn single() -> Self {
        Self {
            single: true,
            ..Self::new(Box::new(SingleProcess))
        }
    }

    /// Train on `device` (the one the collective was connected on), whatever the config says.
    pub fn with_device(mut self, device: Device) -> Self {
        self.device = Some(device);
        self
    }

    /// The device given by [`Dist::with_device`].
    pub fn device(&self) -> Option<&Device> {
        self.device.as_ref()
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.coll.rank()
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.coll.world_size()
    }

    /// Rank 0 writes the run folder, logs and checkpoints.
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// The collective.
    pub fn collective(&self) -> &dyn Collective {
        self.coll.as_ref()
    }

    /// This rank's rows of a global batch (the batch itself in a world of one).
    pub fn local_batch(&self, global: Batch) -> Result<Batch> {
        if self.world_size() == 1 {
            return Ok(global);
        }
        Ok(global.local_slice(self.rank(), self.world_size())?)
    }

    /// The ACT exploration generator of this rank for optimizer step `step`: a pure function of
    /// `(seed, rank, step)`, so that a resumed run draws what the uninterrupted one would have.
    pub fn step_rng(&self, seed: u64, step: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6872_6d2d_6470_0000);
        rng.set_stream(((self.rank() as u64) << 48) | (step & ((1 << 48) - 1)));
        rng
    }

    /// The generator the ACT exploration of optimizer step `step` draws from: a single process
    /// continues the run's own `run_rng` (which its checkpoints save), a rank of a group takes
    /// [`Dist::step_rng`].
    pub fn exploration_rng<'a>(
        &self,
        run_rng: &'a mut ChaCha8Rng,
        seed: u64,
        step: u64,
    ) -> Box<dyn RngCore + 'a> {
        if self.single {
            Box::new(run_rng)
        } else {
            Box::new(self.step_rng(seed, step))
        }
    }

    /// Whether the run stops after this step, given this rank's stop flag `local` now: a single
    /// process follows its own flag; the ranks of a group stop if any of them had its flag up
    /// when the last step's sums were exchanged ([`Dist::forward_backward`]), so that all of them
    /// stop at the same step.
    pub fn stop_requested(&self, local: bool) -> bool {
        if self.single {
            local
        } else {
            self.stop.get()
        }
    }

    /// [`forward_backward`] of this rank's rows, then the exchange that turns it into the global
    /// batch's step: gradients summed over ranks, puzzle ids and rows gathered, the loss and
    /// metric sums (and `stop`, this rank's Ctrl-C flag) summed. The returned step's `grads`,
    /// `loss.total` and `loss.metrics` are the global ones; `carry` and `out` stay this rank's.
    /// A single process has nothing to exchange: its step is the global one.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_backward(
        &self,
        model: &Hrm,
        carry: &Carry,
        local: &Batch,
        loss_type: LossType,
        global_batch_size: usize,
        rng: &mut dyn RngCore,
        stop: bool,
    ) -> Result<TrainStep> {
        let mut ts = forward_backward(model, carry, local, loss_type, global_batch_size, rng)?;
        if self.single {
            return Ok(ts);
        }
        ts.grads = reduce_grads(&ts.grads, self.collective())?;
        let m = &ts.loss.metrics;
        let mut v: [f64; N_REDUCED] = [
            stop as u8 as f64,
            ts.loss.total,
            m.count,
            m.accuracy,
            m.exact_accuracy,
            m.q_halt_accuracy,
            m.steps,
            m.lm_loss,
            m.q_halt_loss,
            m.q_continue_loss.unwrap_or(0.0),
            m.q_continue_loss.is_some() as u8 as f64,
        ];
        self.coll.all_reduce_sum_f64(&mut v)?;
        let n = self.world_size() as f64;
        if v[10] != 0.0 && v[10] != n {
            bail!("ranks disagree on whether the Q-continue loss exists");
        }
        self.stop.set(v[0] > 0.0);
        ts.loss.total = v[1];
        ts.loss.metrics = LossMetrics {
            count: v[2],
            accuracy: v[3],
            exact_accuracy: v[4],
            q_halt_accuracy: v[5],
            steps: v[6],
            lm_loss: v[7],
            q_halt_loss: v[8],
            q_continue_loss: (v[10] != 0.0).then_some(v[9]),
        };
        Ok(ts)
    }

    /// The carry of the whole global batch (rows of rank 0, then rank 1, ...), on every rank.
    pub fn gather_carry(&self, c: &Carry) -> Result<Carry> {
        if self.world_size() == 1 {
            return Ok(c.clone());
        }
        let coll = self.collective();
        let gather_z = |z: &Tensor| -> Result<Tensor> {
            // bf16 -> f32 -> bf16 is exact
            Ok(coll
                .all_gather(&z.to_dtype(DType::F32)?)?
                .to_dtype(z.dtype())?)
        };
        let i32s = |v: &[u32]| -> Vec<i32> { v.iter().map(|&x| x as i32).collect() };
        let steps = coll.all_gather_i32(&i32s(&c.steps))?;
        let halted: Vec<i32> = c.halted.iter().map(|&h| h as i32).collect();
        let halted = coll.all_gather_i32(&halted)?;
        let d = &c.data;
        Ok(Carry {
            z_h: gather_z(&c.z_h)?,
            z_l: gather_z(&c.z_l)?,
            steps: steps.into_iter().map(|s| s as u32).collect(),
            halted: halted.into_iter().map(|h| h != 0).collect(),
            data: Batch {
                inputs: coll.all_gather_i32(&d.inputs)?,
                labels: coll.all_gather_i32(&d.labels)?,
                puzzle_identifiers: coll.all_gather_i32(&d.puzzle_identifiers)?,
                batch_size: d.batch_size * self.world_size(),
                seq_len: d.seq_len,
                effective_size: d.batch_size * self.world_size(),
                set_name: String::new(),
            },
        })
    }

    /// This rank's rows of a global-batch carry (e.g. one loaded from a checkpoint).
    pub fn local_carry(&self, c: &Carry) -> Result<Carry> {
        let n = self.world_size();
        if n == 1 {
            return Ok(c.clone());
        }
        let b = c.data.batch_size;
        if !b.is_multiple_of(n) {
            bail!("the saved carry has {b} rows, which do not split over {n} ranks");
        }
        let lb = b / n;
        let (r0, r1) = (self.rank() * lb, (self.rank() + 1) * lb);
        let l = c.data.seq_len;
        Ok(Carry {
            z_h: c.z_h.narrow(0, r0, lb)?.contiguous()?,
            z_l: c.z_l.narrow(0, r0, lb)?.contiguous()?,
            steps: c.steps[r0..r1].to_vec(),
            halted: c.halted[r0..r1].to_vec(),
            data: Batch {
                inputs: c.data.inputs[r0 * l..r1 * l].to_vec(),
                labels: c.data.labels[r0 * l..r1 * l].to_vec(),
                puzzle_identifiers: c.data.puzzle_identifiers[r0..r1].to_vec(),
                batch_size: lb,
                seq_len: l,
                effective_size: lb,
                set_name: String::new(),
            },
        })
    }

    /// Rank 0's `path` on every rank (e.g. the run folder rank 0 created).
    pub fn share_path(&self, path: Option<&Path>) -> Result<PathBuf> {
        let coll = self.collective();
        // the length first, so that every rank sends the same number of values
        let bytes: Vec<i32> = match (self.is_main(), path) {
            (true, Some(p)) => p
                .to_str()
                .with_context(|| format!("{}: the path is not UTF-8", p.display()))?
                .bytes()
                .map(i32::from)
                .collect(),
            (true, None) => bail!("rank 0 has no path to share"),
            (false, _) => Vec::new(),
        };
        let lens = coll.all_gather_i32(&[bytes.len() as i32])?;
        let len = lens[0].max(0) as usize;
        let mut mine = bytes;
        mine.resize(len, 0);
        let all = coll.all_gather_i32(&mine)?;
        let text: Vec<u8> = all[..len].iter().map(|&b| b as u8).collect();
        Ok(PathBuf::from(
            String::from_utf8(text).context("the shared path is not UTF-8")?,
        ))
    }

    /// Wait for every rank.
    pub fn barrier(&self) -> Result<()> {
        self.coll.barrier()
    }
}

/// Sum the parameter gradients over ranks (one flat all-reduce) and gather the puzzle-embedding
/// ids and rows of every rank (the reference's `CastedSparseEmbeddingSignSGD_Distributed`).
pub fn reduce_grads(g: &Grads, coll: &dyn Collective) -> Result<Grads> {
    // every parameter's gradient, flattened and concatenated: one collective for all of them
    let present: Vec<&Tensor> = g.params.iter().flatten().collect();
    let params = if present.is_empty() {
        g.params.clone()
    } else {
        let flat: Vec<Tensor> = present
            .iter()
            .map(|t| t.to_dtype(DType::F32)?.flatten_all())
            .collect::<candle_core::Result<_>>()?;
        let summed = coll.all_reduce_sum(&Tensor::cat(&flat, 0)?)?;
        let mut off = 0;
        let mut out = Vec::with_capacity(g.params.len());
        for p in &g.params {
            out.push(match p {
                None => None,
                Some(t) => {
                    let n = t.elem_count();
                    let piece = summed.narrow(0, off, n)?.reshape(t.shape())?;
                    off += n;
                    Some(piece)
                }
            });
        }
        out
    };
    let puzzle = match &g.puzzle {
        None => None,
        Some((ids, rows)) => {
            let all_ids = coll.all_gather_i32(ids)?;
            let all_rows = coll.all_gather(&rows.to_dtype(DType::F32)?)?;
            Some((all_ids, all_rows))
        }
    };
    Ok(Grads { params, puzzle })
}

/// How this process takes part in a data-parallel run, from the launcher's environment
/// (`HRM_RANK`, `HRM_WORLD_SIZE`, `HRM_DIST_DIR`); None when not launched as a rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankEnv {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// Rendezvous folder shared by the ranks.
    pub rendezvous: PathBuf,
}

impl RankEnv {
    /// Read the launcher's variables; errors name the variable at fault.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var_os(k))
    }

    /// [`RankEnv::from_env`] with the variables looked up by `get`.
    pub fn from_vars(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<Option<Self>> {
        let Some(ws) = get(ENV_WORLD_SIZE) else {
            return Ok(None);
        };
        let parse = |name: &str, v: Option<std::ffi::OsString>| -> Result<usize> {
            let v = v.with_context(|| format!("{ENV_WORLD_SIZE} is set but {name} is not"))?;
            v.to_str()
                .and_then(|s| s.trim().parse().ok())
                .with_context(|| format!("{name} = {v:?} is not a non-negative integer"))
        };
        let world_size = parse(ENV_WORLD_SIZE, Some(ws))?;
        let rank = parse(ENV_RANK, get(ENV_RANK))?;
        if world_size == 0 || rank >= world_size {
            bail!("{ENV_RANK} = {rank} must be below {ENV_WORLD_SIZE} = {world_size} (> 0)");
        }
        let rendezvous = get(ENV_RENDEZVOUS)
            .map(PathBuf::from)
            .with_context(|| format!("{ENV_WORLD_SIZE} is set but {ENV_RENDEZVOUS} is not"))?;
        Ok(Some(Self {
            rank,
            world_size,
            rendezvous,
        }))
    }

    /// The collective for this rank on `device`: NCCL on a CUDA device (feature `nccl`).
    pub fn connect(&self, device: &Device) -> Result<Box<dyn Collective>> {
        #[cfg(feature = "nccl")]
        if device.is_cuda() {
            let c = nccl::NcclCollective::new(
                device,
                self.rank,
                self.world_size,
                &self.rendezvous,
                std::time::Duration::from_secs(300),
            )?;
            return Ok(Box::new(c));
        }
        let _ = device;
        bail!(
            "data-parallel runs across processes need CUDA devices and a build with \
             `--features nccl` (this binary has {}); for CPU data parallelism use threads \
             (hrm_train::dist::LocalGroup)",
            if cfg!(feature = "nccl") {
                "NCCL, but the device is not a GPU"
            } else {
                "no NCCL"
            }
        )
    }
}

#[cfg(feature = "nccl")]
pub mod nccl {
    //! [`super::Collective`] over NCCL: one process per GPU; rank 0 creates the unique id and
    //! publishes it as a file in the rendezvous folder (written to a temporary name, then
    //! renamed), the other ranks wait for the file.

    use std::path::Path;
    use std::time::{Duration, Instant};

    use anyhow::{anyhow, bail, Context, Result};
    use candle_core::cuda_backend::cudarc::nccl::{Comm, Id, ReduceOp};
    use candle_core::cuda_backend::CudaDevice;
    use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};

    use super::Collective;

    /// The rendezvous file with the NCCL unique id.
    const ID_FILE: &str = "nccl-unique-id";

    /// A rank of an NCCL communicator on its GPU (collectives run on candle's stream).
    pub struct NcclCollective {
        comm: Comm,
        device: Device,
        cuda: CudaDevice,
        rank: usize,
        world_size: usize,
    }

    fn nccl_err(
        what: &str,
    ) -> impl FnOnce(candle_core::cuda_backend::cudarc::nccl::result::NcclError) -> anyhow::Error + '_
    {
        move |e| anyhow!("NCCL {what}: {e:?}")
    }

    impl NcclCollective {
        /// Join the communicator of `world_size` ranks as `rank` on `device` (`cuda:N`); waits
        /// up to `timeout` for rank 0's id in `rendezvous`.
        pub fn new(
            device: &Device,
            rank: usize,
            world_size: usize,
            rendezvous: &Path,
            timeout: Duration,
        ) -> Result<Self> {
            let Device::Cuda(cuda) = device else {
                bail!("NCCL needs a CUDA device, got {device:?}");
            };
            let path = rendezvous.join(ID_FILE);
            let id = if rank == 0 {
                let id = Id::new().map_err(nccl_err("unique id"))?;
                let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
                hrm_data::fsio::write_atomic(&path, &bytes)
                    .with_context(|| format!("publishing {}", path.display()))?;
                id
            } else {
                let t0 = Instant::now();
                let bytes = loop {
                    match std::fs::read(&path) {
                        Ok(b) if b.len() == 128 => break b,
                        Ok(b) => bail!("{}: {} bytes, expected 128", path.display(), b.len()),
                        Err(_) if t0.elapsed() < timeout => {
                            std::thread::sleep(Duration::from_millis(50))
                        }
                        Err(e) => bail!(
                            "rank {rank}: rank 0 did not publish {} within {:?} ({e})",
                            path.display(),
                            timeout
                        ),
                    }
                };
                let mut internal = [0 as std::ffi::c_char; 128];
                for (d, s) in internal.iter_mut().zip(&bytes) {
                    *d = *s as std::ffi::c_char;
                }
                Id::uninit(internal)
            };
            let comm = Comm::from_rank(cuda.cuda_stream(), rank, world_size, id)
                .map_err(nccl_err("communicator init"))?;
            Ok(Self {
                comm,
                device: device.clone(),
                cuda: cuda.clone(),
                rank,
                world_size,
            })
        }

        fn on_device(&self, t: &Tensor) -> Result<Tensor> {
            Ok(t.to_device(&self.device)?
                .to_dtype(DType::F32)?
                .contiguous()?)
        }
    }

    /// The collectives as candle ops, so that they read candle's device buffers directly.
    struct Op<'a> {
        comm: &'a Comm,
        gather: bool,
    }

    impl CustomOp1 for Op<'_> {
        fn name(&self) -> &'static str {
            if self.gather {
                "nccl-all-gather"
            } else {
                "nccl-all-reduce"
            }
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            candle_core::bail!("{}: NCCL works on CUDA tensors only", self.name())
        }

        fn cuda_fwd(
            &self,
            s: &CudaStorage,
            l: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let (a, b) = l
                .contiguous_offsets()
                .ok_or_else(|| candle_core::Error::Msg("nccl: input not contiguous".into()))?;
            let src = s.as_cuda_slice::<f32>()?.slice(a..b);
            let n = b - a;
            let world = self.comm.world_size();
            let (len, shape) = if self.gather {
                let mut dims = l.dims().to_vec();
                if dims.is_empty() {
                    dims.push(1);
                }
                dims[0] *= world;
                (n * world, Shape::from(dims))
            } else {
                (n, l.shape().clone())
            };
            let mut out = s.device.alloc_zeros::<f32>(len)?;
            let r = if self.gather {
                self.comm.all_gather(&src, &mut out)
            } else {
                self.comm.all_reduce(&src, &mut out, &ReduceOp::Sum)
            };
            r.map_err(|e| candle_core::Error::Msg(format!("{}: {e:?}", self.name())))?;
            Ok((CudaStorage::wrap_cuda_slice(out, s.device.clone()), shape))
        }
    }

    impl Collective for NcclCollective {
        fn rank(&self) -> usize {
            self.rank
        }

        fn world_size(&self) -> usize {
            self.world_size
        }

        fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
            let x = self.on_device(t)?;
            let op = Op {
                comm: &self.comm,
                gather: false,
            };
            Ok(x.apply_op1_no_bwd(&op)?.to_device(t.device())?)
        }

        fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
            let x = self.on_device(t)?;
            let op = Op {
                comm: &self.comm,
                gather: true,
            };
            Ok(x.apply_op1_no_bwd(&op)?.to_device(t.device())?)
        }

        fn all_reduce_sum_f64(&self, v: &mut [f64]) -> Result<()> {
            if v.is_empty() {
                return Ok(());
            }
            let stream = self.cuda.cuda_stream();
            let src = stream
                .clone_htod(v)
                .map_err(|e| anyhow!("NCCL upload: {e:?}"))?;
            let mut out = stream
                .alloc_zeros::<f64>(v.len())
                .map_err(|e| anyhow!("NCCL alloc: {e:?}"))?;
            self.comm
                .all_reduce(&src, &mut out, &ReduceOp::Sum)
                .map_err(nccl_err("all-reduce"))?;
            stream
                .memcpy_dtoh(&out, v)
                .map_err(|e| anyhow!("NCCL download: {e:?}"))?;
            stream
                .synchronize()
                .map_err(|e| anyhow!("NCCL sync: {e:?}"))?;
            Ok(())
        }

        fn all_gather_i32(&self, v: &[i32]) -> Result<Vec<i32>> {
            if v.is_empty() {
                return Ok(Vec::new());
            }
            let stream = self.cuda.cuda_stream();
            let src = stream
                .clone_htod(v)
                .map_err(|e| anyhow!("NCCL upload: {e:?}"))?;
            let mut out = stream
                .alloc_zeros::<i32>(v.len() * self.world_size)
                .map_err(|e| anyhow!("NCCL alloc: {e:?}"))?;
            self.comm
                .all_gather(&src, &mut out)
                .map_err(nccl_err("all-gather"))?;
            stream
                .clone_dtoh(&out)
                .map_err(|e| anyhow!("NCCL download: {e:?}"))
        }

        fn barrier(&self) -> Result<()> {
            // an all-reduce of one value is a barrier
            let mut x = [0f64];
            self.all_reduce_sum_f64(&mut x)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T: Send + 'static>(
        n: usize,
        f: impl Fn(LocalCollective) -> Result<T> + Send + Sync + 'static,
    ) -> Vec<Result<T>> {
        let f = Arc::new(f);
        let handles: Vec<_> = LocalGroup::ranks(n)
            .into_iter()
            .map(|c| {
                let f = f.clone();
                std::thread::spawn(move || f(c))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread"))
            .collect()
    }

    #[test]
    fn local_collectives_sum_and_gather_in_rank_order() {
        let out = run(3, |c| {
            let r = c.rank() as f32;
            let t = Tensor::from_vec(vec![r, 10.0 * r], 2, &Device::Cpu)?;
            let s = c.all_reduce_sum(&t)?.to_vec1::<f32>()?;
            let g = c.all_gather(&Tensor::from_vec(vec![r; 4], (2, 2), &Device::Cpu)?)?;
            let mut f = [1.5, r as f64];
            c.all_reduce_sum_f64(&mut f)?;
            let ids = c.all_gather_i32(&[c.rank() as i32, 7])?;
            c.barrier()?;
            Ok((
                s,
                g.dims().to_vec(),
                g.flatten_all()?.to_vec1::<f32>()?,
                f,
                ids,
            ))
        });
        for o in out {
            let (s, dims, g, f, ids) = o.unwrap();
            assert_eq!(s, vec![3.0, 30.0]);
            assert_eq!(dims, vec![6, 2]);
            assert_eq!(g, vec![0., 0., 0., 0., 1., 1., 1., 1., 2., 2., 2., 2.]);
            assert_eq!(f, [4.5, 3.0]);
            assert_eq!(ids, vec![0, 7, 1, 7, 2, 7]);
        }
    }

    #[test]
    fn a_rank_that_leaves_fails_the_others_instead_of_hanging() {
        let out = run(3, |c| {
            if c.rank() == 1 {
                bail!("rank 1 failed before the collective");
            }
            c.barrier()
        });
        assert!(out[1]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("rank 1 failed"));
        for r in [0, 2] {
            let e = out[r].as_ref().unwrap_err().to_string();
            assert!(e.contains("rank 1 left the group"), "{e}");
        }
    }

    #[test]
    fn mismatched_contributions_are_errors() {
        let out = run(2, |c| {
            let n = 2 + c.rank();
            c.all_gather_i32(&vec![0; n])
        });
        for o in out {
            assert!(o.unwrap_err().to_string().contains("sent"));
        }
    }

    #[test]
    fn the_rank_env_is_validated() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        assert_eq!(RankEnv::from_vars(vars(&[])).unwrap(), None);
        let ok = RankEnv::from_vars(vars(&[
            (ENV_WORLD_SIZE, "4"),
            (ENV_RANK, "3"),
            (ENV_RENDEZVOUS, "/tmp/x"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((ok.rank, ok.world_size), (3, 4));
        let e = RankEnv::from_vars(vars(&[(ENV_WORLD_SIZE, "2"), (ENV_RANK, "2")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be below"), "{e}");
        let e = RankEnv::from_vars(vars(&[(ENV_WORLD_SIZE, "two")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HRM_WORLD_SIZE") && e.contains("integer"), "{e}");
        let e = RankEnv::from_vars(vars(&[(ENV_WORLD_SIZE, "2"), (ENV_RANK, "0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(ENV_RENDEZVOUS), "{e}");
    }

    #[test]
    fn carries_gather_to_the_global_batch_and_slice_back() {
        use hrm_model::Batch;
        let out = run(2, |c| {
            let d = Dist::new(Box::new(c));
            let r = d.rank();
            let z = Tensor::from_vec(vec![r as f32; 2 * 3 * 4], (2, 3, 4), &Device::Cpu)?
                .to_dtype(DType::BF16)?;
            let carry = Carry {
                z_h: z.clone(),
                z_l: (z + 1.0)?,
                steps: vec![r as u32, 5],
                halted: vec![r == 0, true],
                data: Batch {
                    inputs: vec![r as i32; 6],
                    labels: vec![-100; 6],
                    puzzle_identifiers: vec![r as i32 + 1; 2],
                    batch_size: 2,
                    seq_len: 3,
                    effective_size: 2,
                    set_name: String::new(),
                },
            };
            let g = d.gather_carry(&carry)?;
            let back = d.local_carry(&g)?;
            Ok((carry, g, back))
        });
        for o in out {
            let (mine, g, back) = o.unwrap();
            assert_eq!(g.z_h.dims(), &[4, 3, 4]);
            assert_eq!(g.z_h.dtype(), DType::BF16);
            assert_eq!(g.steps, vec![0, 5, 1, 5]);
            assert_eq!(g.halted, vec![true, true, false, true]);
            assert_eq!(g.data.puzzle_identifiers, vec![1, 1, 2, 2]);
            assert_eq!(g.data.batch_size, 4);
            assert_eq!(back.data, mine.data);
            assert_eq!((back.steps, back.halted), (mine.steps, mine.halted));
            let same = |a: &Tensor, b: &Tensor| hrm_model::parity::max_abs_diff(a, b).unwrap();
            assert_eq!(same(&back.z_h, &mine.z_h), 0.0);
            assert_eq!(same(&back.z_l, &mine.z_l), 0.0);
        }
    }

    #[test]
    fn a_single_process_exchanges_nothing() {
        let d = Dist::single();
        assert_eq!((d.rank(), d.world_size(), d.is_main()), (0, 1, true));
        let t = Tensor::from_vec(vec![1f32, -2.0, 3.5], 3, &Device::Cpu).unwrap();
        let c = d.collective();
        assert_eq!(
            c.all_reduce_sum(&t).unwrap().to_vec1::<f32>().unwrap(),
            [1.0, -2.0, 3.5]
        );
        assert_eq!(
            c.all_gather(&t).unwrap().to_vec1::<f32>().unwrap(),
            [1.0, -2.0, 3.5]
        );
        let mut v = [0.5, 2.0];
        c.all_reduce_sum_f64(&mut v).unwrap();
        assert_eq!(v, [0.5, 2.0]);
        assert_eq!(c.all_gather_i32(&[4, 5]).unwrap(), [4, 5]);
        d.barrier().unwrap();
        let p = PathBuf::from("runs/Sudoku é/run-1");
        assert_eq!(d.share_path(Some(&p)).unwrap(), p);
        // its own stop flag, read when asked; its own generator, continued
        assert!(d.stop_requested(true) && !d.stop_requested(false));
        let mut run_rng = ChaCha8Rng::seed_from_u64(3);
        let mut expected = run_rng.clone();
        let drawn = d.exploration_rng(&mut run_rng, 0, 7).next_u64();
        assert_eq!(drawn, expected.next_u64());
        assert_eq!(run_rng.next_u64(), expected.next_u64());
    }

    #[test]
    fn rank_zero_shares_its_path() {
        let out = run(3, |c| {
            let d = Dist::new(Box::new(c));
            let p = d.is_main().then(|| PathBuf::from("runs/Sudoku é/run-1"));
            d.share_path(p.as_deref())
        });
        for o in out {
            assert_eq!(o.unwrap(), PathBuf::from("runs/Sudoku é/run-1"));
        }
    }
}
