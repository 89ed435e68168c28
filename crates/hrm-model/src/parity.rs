//! Replay of the golden fixtures of the PyTorch references: `hrm-parity-v1` (HRM) and
//! `trm-parity-v1` (TRM; the same layout plus the weight EMA). Each holds parameters, batches, an
//! eval rollout, training steps with gradients and updated parameters, and a trace of the first
//! segment. Format and tolerances: docs/parity-fixtures.md.
//!
//! [`run_fixture`] loads the parameters into an [`Hrm`], runs the eval rollout and every training
//! step with both optimizers (and the EMA where the fixture has one), and compares every stored
//! tensor by group, within the tolerances of the fixture's [`Profile`]:
//!
//! | group | HRM | TRM attention | TRM `mlp_t` |
//! |---|---|---|---|
//! | `trace` (RoPE tables, x̃, every module call of segment 1, first block) | atol 2e-5 | 2e-5 | 2e-4 |
//! | `eval.logits`, `eval.z`, `eval.q` (segment k) | atol 1e-4 (Q 5e-5) | 1e-4 (Q 5e-5) | 2e-4·5^(k−1) |
//! | `train<s>.logits`, `train<s>.q` | atol 5e-5 | 2e-4 | 1e-3 |
//! | `train<s>.target_q` | atol 1e-6 | 5e-5 | 2e-4 |
//! | `train<s>.loss` | rtol 1e-6 | 1e-5 | 5e-5 |
//! | `*.metric_losses` | rtol 1e-5 | 5e-5 | 1e-4 (eval: ×5 per segment after the first) |
//! | `*.metric_accuracy` | atol 1e-6 | 1e-6 | 1e-6 |
//! | `*.metric_counts`, `*.halted/steps` (with `data.*`) | exact | exact | exact |
//! | `train<s>.grads` | max abs diff <= 5e-5 · max abs ref, per tensor | 2e-4 | 5e-4 |
//! | `step<s>.params`, `step<s>.optimizer`, `ema<s>.*` | atol 5e-6 | 1e-5 | 3e-5 |
//!
//! Nothing is special-cased to particular files: every key the format defines is compared when
//! present, for any configuration the format can describe. Only the parameters and the batches
//! are required; a trimmed fixture (some gradients, no step parameters: how large models are
//! kept small) is checked on what it stores, and [`Report::absent`] lists what it lacks.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use serde::Deserialize;

use crate::checkpoint::read_safetensors;
use crate::config::ModelConfig;
use crate::infer::Engine;
use crate::loss::{LossMetrics, LossType};
use crate::model::weights::Slot;
use crate::model::{Carry, Hrm, Trace};
use crate::ops::RopeTables;
use crate::optim::Ema;
use crate::train::{eval_step, forward_backward, Grads, Optimizers};
use crate::Batch;
use crate::{Error, Result};

/// Format tag of HRM parity fixtures.
pub const FORMAT: &str = "hrm-parity-v1";
/// Format tag of TRM parity fixtures.
pub const TRM_FORMAT: &str = "trm-parity-v1";

/// The tolerances of a fixture (module docs): HRM's, TRM's with attention, TRM's with `mlp_t`
/// (whose recursion amplifies f32 rounding by about 5x per segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `hrm-parity-v1`.
    Hrm,
    /// `trm-parity-v1` with attention.
    TrmAttention,
    /// `trm-parity-v1` with `mlp_t`.
    TrmMlpT,
}

impl Profile {
    fn pick(&self, [hrm, att, mlp]: [f64; 3]) -> f64 {
        match self {
            Profile::Hrm => hrm,
            Profile::TrmAttention => att,
            Profile::TrmMlpT => mlp,
        }
    }
    /// Growth per eval segment after the first.
    fn growth(&self, k: usize) -> f64 {
        match self {
            Profile::TrmMlpT => 5f64.powi(k as i32 - 1),
            _ => 1.0,
        }
    }
    fn trace(&self) -> f64 {
        self.pick([2e-5, 2e-5, 2e-4])
    }
    fn eval(&self, k: usize) -> StepTol {
        let g = self.growth(k);
        let z = self.pick([1e-4, 1e-4, 2e-4]) * g;
        StepTol {
            logits: z,
            z,
            q: self.pick([5e-5, 5e-5, 2e-4]) * g,
            target: 0.0,
            metric_loss: self.pick([1e-5, 5e-5, 1e-4]) * g,
        }
    }
    fn train(&self) -> StepTol {
        let t = self.pick([5e-5, 2e-4, 1e-3]);
        StepTol {
            logits: t,
            z: self.pick([1e-4, 2e-4, 1e-3]),
            q: self.pick([5e-5, 2e-4, 1e-3]),
            target: self.pick([1e-6, 5e-5, 2e-4]),
            metric_loss: self.pick([1e-5, 5e-5, 1e-4]),
        }
    }
    fn loss(&self) -> f64 {
        self.pick([1e-6, 1e-5, 5e-5])
    }
    fn grads(&self) -> f64 {
        self.pick([5e-5, 2e-4, 5e-4])
    }
    fn params(&self) -> f64 {
        self.pick([5e-6, 1e-5, 3e-5])
    }
}

/// Tolerances of one step's outputs.
#[derive(Debug, Clone, Copy)]
struct StepTol {
    logits: f64,
    z: f64,
    q: f64,
    target: f64,
    metric_loss: f64,
}

/// The `optim` metadata of a fixture.
#[derive(Debug, Clone, Deserialize)]
pub struct OptimSpec {
    /// AdamATan2 learning rate (constant).
    pub lr: f64,
    /// AdamATan2 weight decay.
    pub weight_decay: f64,
    /// beta1.
    pub beta1: f64,
    /// beta2.
    pub beta2: f64,
    /// SignSGD learning rate.
    pub puzzle_emb_lr: f64,
    /// SignSGD weight decay.
    pub puzzle_emb_weight_decay: f64,
    /// The loss is back-propagated as `loss / global_batch_size`.
    pub global_batch_size: usize,
    /// TRM: an EMA of the weights is kept (`ema<s>.param.*`).
    #[serde(default)]
    pub ema: bool,
    /// TRM: its rate.
    #[serde(default)]
    pub ema_rate: Option<f64>,
}

/// How a group is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Criterion {
    /// max |mine - ref| <= tol.
    Abs(f64),
    /// max |mine - ref| / |ref| <= tol (element-wise, for scalars).
    Rel(f64),
    /// max |mine - ref| <= tol * max |ref|, per tensor.
    RelToMax(f64),
}

/// The comparison result of one group of tensors.
#[derive(Debug, Clone)]
pub struct Group {
    /// Group name, e.g. `train2.grads`.
    pub name: String,
    /// Largest absolute difference seen.
    pub max_abs: f64,
    /// Largest difference relative to the reference tensor's max |value|.
    pub max_rel: f64,
    /// The worst value of the criterion's own measure.
    pub measure: f64,
    /// The criterion.
    pub criterion: Criterion,
    /// Tensors compared.
    pub tensors: usize,
    /// Remarks printed with the group (e.g. explained ill-conditioned elements).
    pub notes: Vec<String>,
}

impl Group {
    /// Whether the group meets its criterion.
    pub fn ok(&self) -> bool {
        let tol = match self.criterion {
            Criterion::Abs(t) | Criterion::Rel(t) | Criterion::RelToMax(t) => t,
        };
        self.measure <= tol
    }
}

/// All groups of one fixture.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Groups in the order they were first compared.
    pub groups: Vec<Group>,
    index: HashMap<String, usize>,
    /// Groups the fixture stores nothing (or only part) of: `(group, keys missing)`, in order.
    pub absent: Vec<(String, usize)>,
}

impl Report {
    /// Note that the fixture lacks a key of `group` (a trimmed fixture).
    fn missing(&mut self, group: &str) {
        match self.absent.iter_mut().find(|(g, _)| g == group) {
            Some((_, n)) => *n += 1,
            None => self.absent.push((group.to_string(), 1)),
        }
    }

    /// Compare `mine` with the fixture's `key` when the fixture has it, else note it absent.
    fn cmp_opt(
        &mut self,
        fx: &Fixture,
        name: &str,
        key: &str,
        mine: &[f64],
        crit: Criterion,
    ) -> Result<()> {
        if fx.tensors.contains_key(key) {
            self.cmp(name, key, mine, &fx.f64s(key)?, crit)
        } else {
            self.missing(name);
            Ok(())
        }
    }

    fn cmp(
        &mut self,
        name: &str,
        key: &str,
        mine: &[f64],
        reference: &[f64],
        crit: Criterion,
    ) -> Result<()> {
        if mine.len() != reference.len() {
            return Err(Error::msg(format!(
                "fixture key `{key}` has {} elements, ours {}",
                reference.len(),
                mine.len()
            )));
        }
        let ref_max = reference.iter().fold(0f64, |m, x| m.max(x.abs()));
        let mut max_abs = 0f64;
        let mut max_elem_rel = 0f64;
        for (a, b) in mine.iter().zip(reference) {
            let d = (a - b).abs();
            let d = if d.is_nan() { f64::INFINITY } else { d };
            max_abs = max_abs.max(d);
            if d > 0.0 {
                max_elem_rel = max_elem_rel.max(d / b.abs().max(f64::MIN_POSITIVE));
            }
        }
        let max_rel = if max_abs == 0.0 {
            0.0
        } else {
            max_abs / ref_max.max(f64::MIN_POSITIVE)
        };
        let measure = match crit {
            Criterion::Abs(_) => max_abs,
            Criterion::Rel(_) => max_elem_rel,
            Criterion::RelToMax(_) => max_rel,
        };
        let i = *self.index.entry(name.to_string()).or_insert_with(|| {
            self.groups.push(Group {
                name: name.to_string(),
                max_abs: 0.0,
                max_rel: 0.0,
                measure: 0.0,
                criterion: crit,
                tensors: 0,
                notes: Vec::new(),
            });
            self.groups.len() - 1
        });
        let g = &mut self.groups[i];
        g.max_abs = g.max_abs.max(max_abs);
        g.max_rel = g.max_rel.max(max_rel);
        g.measure = g.measure.max(measure);
        g.tensors += 1;
        Ok(())
    }

    fn note(&mut self, name: &str, text: String) {
        if let Some(&i) = self.index.get(name) {
            self.groups[i].notes.push(text);
        }
    }

    /// True when every group passes.
    pub fn ok(&self) -> bool {
        self.groups.iter().all(Group::ok)
    }

    /// Worst `max_rel` over all groups.
    pub fn worst_rel(&self) -> f64 {
        self.groups.iter().fold(0f64, |m, g| m.max(g.max_rel))
    }
}

/// A loaded fixture.
pub struct Fixture {
    /// The architecture.
    pub cfg: ModelConfig,
    /// Optimizer settings.
    pub optim: OptimSpec,
    /// LM loss kind.
    pub loss_type: LossType,
    /// Eval segments stored.
    pub segments: usize,
    /// Training steps stored.
    pub train_steps: usize,
    /// Its tolerances.
    pub profile: Profile,
    tensors: HashMap<String, Tensor>,
    path: String,
}

impl Fixture {
    /// Read a fixture file and check its format tag and metadata.
    pub fn load(path: &Path) -> Result<Self> {
        let f = read_safetensors(path, &Device::Cpu)?;
        let p = path.display().to_string();
        let meta = |k: &str| {
            f.metadata.get(k).ok_or_else(|| {
                Error::msg(format!(
                    "{p}: metadata key `{k}` missing (is this an {FORMAT} fixture?)"
                ))
            })
        };
        let format = meta("format")?;
        if format != FORMAT && format != TRM_FORMAT {
            return Err(Error::msg(format!(
                "{p}: metadata `format` is `{format}`, expected `{FORMAT}` or `{TRM_FORMAT}`"
            )));
        }
        let bad_config = |e: serde_json::Error| Error::msg(format!("{p}: metadata `config`: {e}"));
        let mut config: serde_json::Value =
            serde_json::from_str(meta("config")?).map_err(bad_config)?;
        if format == TRM_FORMAT {
            // the reference's config has no model name: the format says which model it is
            if let Some(m) = config.as_object_mut() {
                m.insert("arch".into(), "trm".into());
            }
        }
        let cfg: ModelConfig = serde_json::from_value(config).map_err(bad_config)?;
        let profile = match (format == TRM_FORMAT, cfg.mlp_t) {
            (false, _) => Profile::Hrm,
            (true, false) => Profile::TrmAttention,
            (true, true) => Profile::TrmMlpT,
        };
        cfg.validate()
            .map_err(|e| Error::msg(format!("{p}: {e}")))?;
        let optim: OptimSpec = serde_json::from_str(meta("optim")?)
            .map_err(|e| Error::msg(format!("{p}: metadata `optim`: {e}")))?;
        let loss_type = match f.metadata.get("loss_type").map(String::as_str) {
            None | Some("stablemax_cross_entropy") => LossType::Stablemax,
            Some("softmax_cross_entropy") => LossType::Softmax,
            Some(o) => {
                return Err(Error::msg(format!(
                    "{p}: metadata `loss_type` = `{o}` is unknown"
                )))
            }
        };
        let num = |k: &str| -> Result<usize> {
            meta(k)?
                .parse()
                .map_err(|_| Error::msg(format!("{p}: metadata `{k}` is not a number")))
        };
        Ok(Self {
            segments: num("segments")?,
            train_steps: num("train_steps")?,
            profile,
            cfg,
            optim,
            loss_type,
            tensors: f.tensors,
            path: p,
        })
    }

    fn get(&self, k: &str) -> Result<&Tensor> {
        self.tensors
            .get(k)
            .ok_or_else(|| Error::msg(format!("{}: key `{k}` missing", self.path)))
    }

    fn f64s(&self, k: &str) -> Result<Vec<f64>> {
        Ok(self
            .get(k)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?)
    }

    fn i32s(&self, k: &str) -> Result<Vec<i32>> {
        let t = self.get(k)?;
        if t.dtype() != DType::I32 {
            return Err(Error::msg(format!(
                "{}: key `{k}` must be I32, is {:?}",
                self.path,
                t.dtype()
            )));
        }
        Ok(t.flatten_all()?.to_vec1::<i32>()?)
    }

    fn batch(&self, prefix: &str) -> Result<Batch> {
        let t = self.get(&format!("{prefix}.inputs"))?;
        let (b, l) = t.dims2().map_err(|_| {
            Error::msg(format!(
                "{}: key `{prefix}.inputs` must be [B, L], is {:?}",
                self.path,
                t.dims()
            ))
        })?;
        let batch = Batch {
            inputs: self.i32s(&format!("{prefix}.inputs"))?,
            labels: self.i32s(&format!("{prefix}.labels"))?,
            puzzle_identifiers: self.i32s(&format!("{prefix}.puzzle_identifiers"))?,
            batch_size: b,
            seq_len: l,
            effective_size: b,
            set_name: String::new(),
        };
        if batch.labels.len() != b * l || batch.puzzle_identifiers.len() != b {
            return Err(Error::msg(format!(
                "{}: `{prefix}.labels` / `.puzzle_identifiers` do not match [{b}, {l}]",
                self.path
            )));
        }
        Ok(batch)
    }

    /// The fixture's gradients of training step `s` (parameters in `names` order, puzzle rows),
    /// on `device`; None when the fixture lacks one of them (a trimmed fixture).
    fn grads(&self, s: usize, names: &[String], device: &Device) -> Result<Option<Grads>> {
        let mut keys: Vec<String> = names.iter().map(|n| format!("grad{s}.{n}")).collect();
        if self.cfg.puzzle_emb_ndim > 0 {
            keys.push(format!("grad{s}.inner.puzzle_emb.local_weights"));
        }
        if keys.iter().any(|k| !self.tensors.contains_key(k)) {
            return Ok(None);
        }
        let params = names
            .iter()
            .map(|n| {
                Ok(Some(
                    self.get(&format!("grad{s}.{n}"))?
                        .to_dtype(DType::F32)?
                        .to_device(device)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let puzzle = if self.cfg.puzzle_emb_ndim > 0 {
            let ids = self.i32s(&format!("train{s}.data.puzzle_identifiers"))?;
            let g = self.get(&format!("grad{s}.inner.puzzle_emb.local_weights"))?;
            Some((ids, g.to_dtype(DType::F32)?))
        } else {
            None
        };
        Ok(Some(Grads { params, puzzle }))
    }

    /// The model with the fixture's initial parameters.
    pub fn model(&self) -> Result<Hrm> {
        self.model_on(&Device::Cpu)
    }

    /// The model with the fixture's initial parameters, on `device`.
    pub fn model_on(&self, device: &Device) -> Result<Hrm> {
        let sd: HashMap<String, Tensor> = self
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("param.").map(|n| (n.to_string(), v.clone())))
            .collect();
        Hrm::from_state_dict(&self.cfg, device, &sd)
            .map_err(|e| Error::msg(format!("{}: parameters: {e}", self.path)))
    }
}

/// max |a - b| over two tensors of one shape (any float dtype, compared in f32).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let d = (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?;
    Ok(d.abs()?.max_all()?.to_scalar::<f32>()?)
}

/// Cosine similarity of two vectors, in f64; 1 when both are all zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 && bb == 0.0 {
        1.0
    } else {
        ab / (aa.sqrt() * bb.sqrt()).max(f64::MIN_POSITIVE)
    }
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

fn f32s_to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Compare one step's carry, outputs and metrics with the fixture's keys under `p` (what the
/// fixture stores of them).
#[allow(clippy::too_many_arguments)]
fn cmp_step(
    rep: &mut Report,
    fx: &Fixture,
    tag: &str,
    p: &str,
    carry: &Carry,
    logits: &[f32],
    q: (&[f32], &[f32]),
    target: Option<&[f32]>,
    metrics: &LossMetrics,
    tol: StepTol,
) -> Result<()> {
    rep.cmp_opt(
        fx,
        &format!("{tag}.logits"),
        &format!("{p}.logits"),
        &f32s_to_f64(logits),
        Criterion::Abs(tol.logits),
    )?;
    for (name, v) in [("q_halt_logits", q.0), ("q_continue_logits", q.1)] {
        rep.cmp_opt(
            fx,
            &format!("{tag}.q"),
            &format!("{p}.{name}"),
            &f32s_to_f64(v),
            Criterion::Abs(tol.q),
        )?;
    }
    let k = format!("{p}.target_q_continue");
    match (target, fx.tensors.contains_key(&k)) {
        (Some(t), true) => rep.cmp(
            &format!("{tag}.target_q"),
            &k,
            &f32s_to_f64(t),
            &fx.f64s(&k)?,
            Criterion::Abs(tol.target),
        )?,
        (None, true) => {
            return Err(Error::msg(format!(
                "fixture has `{k}` but we computed no target"
            )))
        }
        (Some(_), false) => {
            return Err(Error::msg(format!(
                "we computed a Q target but the fixture has no `{k}`"
            )))
        }
        (None, false) => {}
    }
    for (name, z) in [("z_H", &carry.z_h), ("z_L", &carry.z_l)] {
        let k = format!("{p}.{name}");
        if fx.tensors.contains_key(&k) {
            rep.cmp(
                &format!("{tag}.z"),
                &k,
                &host(z)?,
                &fx.f64s(&k)?,
                Criterion::Abs(tol.z),
            )?;
        }
    }
    let hs = format!("{tag}.halted/steps");
    let halted: Vec<f64> = carry.halted.iter().map(|&h| h as u8 as f64).collect();
    rep.cmp_opt(
        fx,
        &hs,
        &format!("{p}.halted"),
        &halted,
        Criterion::Abs(0.0),
    )?;
    let steps: Vec<f64> = carry.steps.iter().map(|&s| s as f64).collect();
    rep.cmp_opt(fx, &hs, &format!("{p}.steps"), &steps, Criterion::Abs(0.0))?;
    let k = format!("{p}.all_halted");
    if fx.tensors.contains_key(&k) {
        let all = carry.halted.iter().all(|&h| h) as u8 as f64;
        rep.cmp(&hs, &k, &[all], &fx.f64s(&k)?, Criterion::Abs(0.0))?;
    }
    for (name, v) in [
        ("inputs", &carry.data.inputs),
        ("labels", &carry.data.labels),
        ("puzzle_identifiers", &carry.data.puzzle_identifiers),
    ] {
        let k = format!("{p}.data.{name}");
        if fx.tensors.contains_key(&k) {
            let mine: Vec<f64> = v.iter().map(|&x| x as f64).collect();
            rep.cmp(&hs, &k, &mine, &fx.f64s(&k)?, Criterion::Abs(0.0))?;
        }
    }
    for (name, v) in metrics.entries() {
        let k = format!("{p}.metric.{name}");
        // stored as f32: compare our value rounded the same way
        let mine = [v as f32 as f64];
        let (group, crit) = if name.ends_with("loss") {
            ("metric_losses", Criterion::Rel(tol.metric_loss))
        } else if name == "accuracy" {
            // a sum of per-row fractions: f32 summation order shows at ~1e-7
            ("metric_accuracy", Criterion::Abs(1e-6))
        } else {
            ("metric_counts", Criterion::Abs(0.0))
        };
        rep.cmp_opt(fx, &format!("{tag}.{group}"), &k, &mine, crit)?;
    }
    // every stored metric must be one we produce
    let prefix = format!("{p}.metric.");
    for k in fx.tensors.keys().filter(|k| k.starts_with(&prefix)) {
        let name = &k[prefix.len()..];
        if !metrics.entries().iter().any(|(n, _)| *n == name) {
            return Err(Error::msg(format!(
                "fixture metric `{k}` is not produced by our loss head"
            )));
        }
    }
    Ok(())
}

/// Replay a fixture and compare everything; `Err` only for unreadable or malformed fixtures.
pub fn run_fixture(path: &Path) -> Result<Report> {
    run_fixture_on(path, &Device::Cpu)
}

/// [`run_fixture`] with the model and both optimizers on `device` (e.g. a GPU; run the fixtures'
/// f32 configurations there with full-precision f32 matrix products, no TF32).
pub fn run_fixture_on(path: &Path, device: &Device) -> Result<Report> {
    let fx = Fixture::load(path)?;
    let cfg = &fx.cfg;
    let prof = fx.profile;
    let model = fx.model_on(device)?;
    let mut rep = Report::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let batch = fx.batch("batch")?;
    if batch.batch_size != cfg.batch_size || batch.seq_len != cfg.seq_len {
        return Err(Error::msg(format!(
            "{}: `batch.inputs` is [{}, {}] but the config says batch_size {}, seq_len {}",
            fx.path, batch.batch_size, batch.seq_len, cfg.batch_size, cfg.seq_len
        )));
    }

    // 0) RoPE tables and the trace of eval segment 1 (when the fixture has them)
    if fx.tensors.contains_key("trace.rope.cos") {
        let r = RopeTables::new(cfg.full_seq_len(), cfg.head_dim(), cfg.rope_theta);
        for (k, v) in [("trace.rope.cos", &r.cos), ("trace.rope.sin", &r.sin)] {
            rep.cmp_opt(
                &fx,
                "trace",
                k,
                &f32s_to_f64(v),
                Criterion::Abs(prof.trace()),
            )?;
        }
    }
    let has_trace = fx.tensors.keys().any(|k| k.starts_with("trace.seg1."));

    // 1) the eval rollout from the initial parameters
    let engine = Engine::plain(&model);
    let mut carry = model.initial_carry(&batch)?;
    for k in 1..=fx.segments {
        let mut trace = Trace::default();
        let (c, loss, out) = if k == 1 && has_trace {
            eval_step(&engine, &carry, &batch, fx.loss_type, &mut trace)?
        } else {
            eval_step(&engine, &carry, &batch, fx.loss_type, &mut ())?
        };
        if k == 1 && has_trace {
            let mut seen = 0;
            for (name, t) in &trace.entries {
                let key = format!("trace.seg1.{name}");
                if fx.tensors.contains_key(&key) {
                    rep.cmp(
                        "trace",
                        &key,
                        &host(t)?,
                        &fx.f64s(&key)?,
                        Criterion::Abs(prof.trace()),
                    )?;
                    seen += 1;
                }
            }
            let stored = fx
                .tensors
                .keys()
                .filter(|k| k.starts_with("trace.seg1."))
                .count();
            if seen != stored {
                return Err(Error::msg(format!(
                    "{}: {stored} trace tensors stored but only {seen} match our module calls \
                     ({} x {} cycles)",
                    fx.path, cfg.h_cycles, cfg.l_cycles
                )));
            }
        }
        // tolerances that grow with the segment get a group per segment
        let tag = if prof.growth(2) > 1.0 {
            format!("eval.seg{k}")
        } else {
            "eval".to_string()
        };
        cmp_step(
            &mut rep,
            &fx,
            &tag,
            &format!("eval.seg{k}"),
            &c,
            &out.logits,
            (&out.q_halt, &out.q_continue),
            None,
            &loss.metrics,
            prof.eval(k),
        )?;
        carry = c;
    }

    // 2) training steps from the same parameters
    let o = &fx.optim;
    let ptol = prof.params();
    let mut opt = Optimizers::new(
        &model,
        (o.beta1, o.beta2),
        o.weight_decay,
        o.puzzle_emb_weight_decay,
    );
    let ema_rate = match (o.ema, o.ema_rate) {
        (true, Some(r)) => Some(r),
        (true, None) => Some(0.999),
        (false, _) => None,
    };
    // ours end to end, and the EMA fed the fixture's own parameters (the exact check)
    let mut ema = match ema_rate {
        Some(r) => Some(Ema::new(&param_vars(&model), r)?),
        None => None,
    };
    let mut ema_of_theirs = ema.clone();
    // the optimizers alone, fed the fixture's gradients (until a step lacks some of them)
    let shadow = fx.model_on(device)?;
    let mut shadow_opt = Some(opt.clone());
    let mut carry = model.initial_carry(&batch)?;
    let names: Vec<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
    for s in 1..=fx.train_steps {
        let b = if s == 1 {
            batch.clone()
        } else {
            fx.batch(&format!("batch{s}"))?
        };
        let step = forward_backward(
            &model,
            &carry,
            &b,
            fx.loss_type,
            o.global_batch_size,
            &mut rng,
        )?;
        let tag = format!("train{s}");
        cmp_step(
            &mut rep,
            &fx,
            &tag,
            &tag,
            &step.carry,
            &step.out.logits,
            (&step.out.q_halt, &step.out.q_continue),
            step.out.target_q_continue.as_deref(),
            &step.loss.metrics,
            prof.train(),
        )?;
        rep.cmp_opt(
            &fx,
            &format!("{tag}.loss"),
            &format!("train{s}.loss"),
            &[step.loss.total],
            Criterion::Rel(prof.loss()),
        )?;
        for (name, g) in names.iter().zip(&step.grads.params) {
            let g = g
                .as_ref()
                .ok_or_else(|| Error::msg(format!("parameter `{name}` got no gradient")))?;
            rep.cmp_opt(
                &fx,
                &format!("{tag}.grads"),
                &format!("grad{s}.{name}"),
                &host(g)?,
                Criterion::RelToMax(prof.grads()),
            )?;
        }
        if let Some((_, g)) = &step.grads.puzzle {
            rep.cmp_opt(
                &fx,
                &format!("{tag}.grads"),
                &format!("grad{s}.inner.puzzle_emb.local_weights"),
                &host(g)?,
                Criterion::RelToMax(prof.grads()),
            )?;
        }
        // 2a) the optimizers alone: ours applied to the fixture's own gradients must give the
        //     fixture's parameters (docs/parity-fixtures.md: agreement within ~3e-8)
        let fx_grads = fx.grads(s, &names, device)?;
        match (&fx_grads, shadow_opt.as_mut()) {
            (Some(g), Some(so)) => {
                so.step(&shadow, g, o.lr, o.puzzle_emb_lr)?;
                for (name, t) in shadow.state_dict() {
                    rep.cmp_opt(
                        &fx,
                        &format!("step{s}.optimizer"),
                        &format!("step{s}.param.{name}"),
                        &host(&t)?,
                        Criterion::Abs(ptol),
                    )?;
                }
            }
            _ => {
                // without every gradient of this step the optimizer-only replay ends here
                shadow_opt = None;
                rep.missing(&format!("step{s}.optimizer"));
            }
        }
        // 2b) end to end: our gradients through our optimizers
        opt.step(&model, &step.grads, o.lr, o.puzzle_emb_lr)?;
        let flips = match (&fx_grads, &shadow_opt) {
            (Some(g), Some(so)) => {
                explain_ill_conditioned(&fx, s, &model, &mut opt, so, &step.grads, g, prof)?
            }
            _ => 0,
        };
        for (name, t) in model.state_dict() {
            rep.cmp_opt(
                &fx,
                &format!("step{s}.params"),
                &format!("step{s}.param.{name}"),
                &host(&t)?,
                Criterion::Abs(ptol),
            )?;
        }
        if flips > 0 {
            rep.note(
                &format!("step{s}.params"),
                format!("{flips} ill-conditioned element(s) within the gradient tolerance"),
            );
        }
        // 2c) the EMA: end to end, and fed the fixture's step parameters
        if let Some(ema) = ema.as_mut() {
            ema.update(&param_vars(&model))?;
            for (name, t) in names.iter().zip(&ema.shadow) {
                rep.cmp_opt(
                    &fx,
                    &format!("ema{s}.params"),
                    &format!("ema{s}.param.{name}"),
                    &host(t)?,
                    Criterion::Abs(ptol),
                )?;
            }
        }
        if let Some(ema) = ema_of_theirs.as_mut() {
            let theirs: Option<Vec<candle_core::Var>> = names
                .iter()
                .map(|n| {
                    let k = format!("step{s}.param.{n}");
                    fx.tensors.get(&k).map(|t| {
                        let t = t.to_dtype(DType::F32)?.to_device(device)?;
                        Ok(candle_core::Var::from_tensor(&t)?)
                    })
                })
                .collect::<Option<Result<Vec<_>>>>()
                .transpose()?;
            match theirs {
                Some(theirs) => {
                    ema.update(&theirs.iter().collect::<Vec<_>>())?;
                    for (name, t) in names.iter().zip(&ema.shadow) {
                        rep.cmp_opt(
                            &fx,
                            &format!("ema{s}.update"),
                            &format!("ema{s}.param.{name}"),
                            &host(t)?,
                            Criterion::Abs(ptol),
                        )?;
                    }
                }
                None => {
                    ema_of_theirs = None;
                    rep.missing(&format!("ema{s}.update"));
                    rep.note(
                        &format!("ema{s}.params"),
                        "the fixture lacks step parameters: the EMA is checked end to end only \
                         from here"
                            .into(),
                    );
                }
            }
        }
        carry = step.carry;
    }
    if ema_rate.is_none() && fx.tensors.keys().any(|k| k.starts_with("ema")) {
        return Err(Error::msg(format!(
            "{}: the fixture stores `ema<s>` tensors but its `optim` says ema is off",
            fx.path
        )));
    }
    Ok(rep)
}

/// The model's parameters, in [`Hrm::parameters`] order (what the EMA averages).
fn param_vars(m: &Hrm) -> Vec<&candle_core::Var> {
    m.parameters().into_iter().map(|(_, v)| v).collect()
}

/// Per-row sums of SignSGD gradients by puzzle id (sorted ids), as SignSGD forms them.
fn puzzle_sums(ids: &[i32], g: &Tensor) -> Result<HashMap<i32, Vec<f32>>> {
    let (b, dp) = g.dims2()?;
    let v = g.flatten_all()?.to_vec1::<f32>()?;
    let mut sums: HashMap<i32, Vec<f32>> = HashMap::new();
    for r in 0..b {
        let e = sums.entry(ids[r]).or_insert_with(|| vec![0.0; dp]);
        for j in 0..dp {
            e[j] += v[r * dp + j];
        }
    }
    Ok(sums)
}

fn sign(x: f32) -> i8 {
    if x > 0.0 {
        1
    } else if x < 0.0 {
        -1
    } else {
        0
    }
}

/// Step-parameter mismatches that rounding-level gradient differences account for
/// (docs/parity-fixtures.md, "Tolerances": a failure at isolated elements while the gradients
/// pass points at those elements' near-zero gradients). AdamATan2 normalises each element's step, so where an element's
/// gradients are tiny or cancel across steps its update is decided by their last few bits: a sign
/// flip moves it by about 2·lr, a cancelling first moment by a fraction of lr.
///
/// The check, per element of our parameters that is off by more than the tolerance:
/// - AdamATan2: from the fixture's previous parameter, the update is evaluated over every
///   gradient sequence within the gradient check's tolerance (|Δg_t| <= 5e-5 · max|g_ref(t)| of
///   the tensor, for every step t so far): the first moment ranges over m_ref ± Σ_t a1 β1^(s−t)
///   tol_t and the second over the sums of squares at |g_t| ∓ tol_t, and since atan2(m, s) is
///   monotone in each argument the extreme updates are at the corners. The mismatch is
///   *explained* iff our value lies in that interval (± the tolerance): some gradient sequence
///   that passes the gradient check gives exactly our parameter.
/// - SignSGD: the per-id gradient sums of the step have opposite signs (or one is zero), and the
///   difference is at most 2·lr per step.
///
/// Explained elements are reset to the fixture's values (with the shadow optimizer's moments) so
/// that one ill-conditioned element does not cascade into later steps; every other mismatch is
/// left for the comparison to report. Returns the number explained.
#[allow(clippy::too_many_arguments)]
fn explain_ill_conditioned(
    fx: &Fixture,
    s: usize,
    model: &Hrm,
    opt: &mut Optimizers,
    shadow: &Optimizers,
    ours: &Grads,
    theirs: &Grads,
    prof: Profile,
) -> Result<usize> {
    let o = &fx.optim;
    let tol = prof.params();
    let sign_bound = 2.0 * o.puzzle_emb_lr * s as f64;
    let mut explained = 0;
    // the moments on the host (on a GPU they live on the device; the next step re-uploads them)
    opt.adam.sync_to_host()?;
    let shadow_states = shadow.adam.host_states()?;
    let (b1, b2) = (o.beta1, o.beta2);
    let (a1, a2) = (1.0 - b1, 1.0 - b2);
    let step_size = o.lr / (1.0 - b1.powi(s as i32));
    let c2 = (1.0 - b2.powi(s as i32)).sqrt();
    let wd_alpha = 1.0 - o.lr * o.weight_decay;
    let params: Vec<(String, &candle_core::Var)> = model.parameters();
    for (j, (name, var)) in params.iter().enumerate() {
        let key = format!("step{s}.param.{name}");
        if !fx.tensors.contains_key(&key) {
            continue;
        }
        let refv = fx.f64s(&key)?;
        let mut mine = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let bad: Vec<usize> = (0..mine.len())
            .filter(|&i| (mine[i] as f64 - refv[i]).abs() > tol)
            .collect();
        if bad.is_empty() {
            continue;
        }
        let prev_key = if s == 1 {
            format!("param.{name}")
        } else {
            format!("step{}.param.{name}", s - 1)
        };
        if !fx.tensors.contains_key(&prev_key) {
            continue;
        }
        let prev = fx.f64s(&prev_key)?;
        // the fixture's gradients of every step so far, and their tolerances
        let mut g_hist = Vec::with_capacity(s);
        for t in 1..=s {
            let g = fx.f64s(&format!("grad{t}.{name}"))?;
            let gtol = prof.grads() * g.iter().fold(0f64, |m, x| m.max(x.abs()));
            g_hist.push((g, gtol));
        }
        let mut changed = false;
        for i in bad {
            let (mut m_tol, mut v_lo, mut v_hi) = (0f64, 0f64, 0f64);
            for (t, (g, gtol)) in g_hist.iter().enumerate() {
                let age = (s - 1 - t) as i32;
                m_tol += a1 * b1.powi(age) * gtol;
                let w2 = a2 * b2.powi(age);
                v_lo += w2 * (g[i].abs() - gtol).max(0.0).powi(2);
                v_hi += w2 * (g[i].abs() + gtol).powi(2);
            }
            let m_ref = shadow_states[j].m[i] as f64;
            let mut lo = f64::INFINITY;
            let mut hi = f64::NEG_INFINITY;
            for mm in [m_ref - m_tol, m_ref + m_tol] {
                for vv in [v_lo, v_hi] {
                    let p = prev[i] * wd_alpha - step_size * mm.atan2(vv.sqrt() / c2);
                    lo = lo.min(p);
                    hi = hi.max(p);
                }
            }
            let x = mine[i] as f64;
            if std::env::var_os("HRM_PARITY_DEBUG").is_some() {
                eprintln!(
                    "step {s} {name}[{i}]: ours {x} ref {} allowed [{lo}, {hi}] (m_ref {m_ref:e} ± {m_tol:e})",
                    refv[i]
                );
            }
            if x >= lo - tol && x <= hi + tol {
                mine[i] = refv[i] as f32;
                opt.adam.states[j].m[i] = shadow_states[j].m[i];
                opt.adam.states[j].v[i] = shadow_states[j].v[i];
                changed = true;
                explained += 1;
            }
        }
        if changed {
            var.set(&Tensor::from_vec(
                mine,
                var.as_tensor().shape(),
                var.as_tensor().device(),
            )?)?;
        }
    }
    if let (Some(table), Some((ids_o, g_o)), Some((ids_t, g_t))) =
        (&model.weights.puzzle_emb, &ours.puzzle, &theirs.puzzle)
    {
        let key = format!("step{s}.param.{}", Slot::PuzzleEmb.key());
        if !fx.tensors.contains_key(&key) {
            return Ok(explained);
        }
        let refv = fx.f64s(&key)?;
        let (_, dp) = table.as_tensor().dims2()?;
        let mut mine = table.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let (so, st) = (puzzle_sums(ids_o, g_o)?, puzzle_sums(ids_t, g_t)?);
        let mut changed = false;
        for (id, sum_t) in &st {
            let Some(sum_o) = so.get(id) else { continue };
            for c in 0..dp {
                let i = *id as usize * dp + c;
                let d = (mine[i] as f64 - refv[i]).abs();
                if d > tol && d <= sign_bound + tol && sign(sum_o[c]) != sign(sum_t[c]) {
                    mine[i] = refv[i] as f32;
                    changed = true;
                    explained += 1;
                }
            }
        }
        if changed {
            table.set(&Tensor::from_vec(
                mine,
                table.as_tensor().shape(),
                table.as_tensor().device(),
            )?)?;
        }
    }
    Ok(explained)
}

/// Render a report as one line per group.
pub fn format_report(rep: &Report) -> String {
    let mut s = String::new();
    for g in &rep.groups {
        let crit = match g.criterion {
            Criterion::Abs(t) => format!("abs<={t:.0e}"),
            Criterion::Rel(t) => format!("rel<={t:.0e}"),
            Criterion::RelToMax(t) => format!("abs<={t:.0e}*max|ref|"),
        };
        s.push_str(&format!(
            "{:24} max_abs {:.3e}  max_rel {:.3e}  {:22} {}\n",
            g.name,
            g.max_abs,
            g.max_rel,
            crit,
            if g.ok() { "ok" } else { "FAIL" }
        ));
        for n in &g.notes {
            s.push_str(&format!("{:24}   note: {n}\n", ""));
        }
    }
    if !rep.absent.is_empty() {
        let parts: Vec<String> = rep
            .absent
            .iter()
            .map(|(g, n)| format!("{g} ({n} missing)"))
            .collect();
        s.push_str(&format!(
            "not in the fixture (not checked): {}\n",
            parts.join(", ")
        ));
    }
    s
}
