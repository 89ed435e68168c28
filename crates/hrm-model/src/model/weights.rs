//! The one table of the model's tensors: state-dict key, shape, kind and initialisation, in the
//! reference's order. Named tensors, expected shapes, initialisation and loading all derive
//! from [`table`].

use std::collections::{HashMap, HashSet};

use candle_core::{Device, Tensor, Var};

use crate::config::{ModelConfig, PosEncoding};
use crate::{Error, Result};

/// Whether a state-dict entry is an `nn.Parameter` (trained by AdamATan2) or a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorKind {
    /// Trainable by AdamATan2.
    Parameter,
    /// Persistent buffer (H_init, L_init, the puzzle table).
    Buffer,
}

/// One of a block's four weight matrices: two of the mixer (attention, or TRM's `mlp_t`), two of
/// the channel SwiGLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockWeight {
    /// `self_attn.qkv_proj.weight` `[3D, D]`.
    Qkv,
    /// `self_attn.o_proj.weight` `[D, D]`.
    O,
    /// `mlp_t.gate_up_proj.weight` `[2 I_t, S]` (TRM's SwiGLU across the sequence).
    SeqGateUp,
    /// `mlp_t.down_proj.weight` `[S, I_t]`.
    SeqDown,
    /// `mlp.gate_up_proj.weight` `[2I, D]`.
    GateUp,
    /// `mlp.down_proj.weight` `[D, I]`.
    Down,
}

impl BlockWeight {
    /// The four of an attention block, in the reference's order within a block.
    pub const ALL: [BlockWeight; 4] = [Self::Qkv, Self::O, Self::GateUp, Self::Down];
    /// The four of an `mlp_t` block.
    pub const MLP_T: [BlockWeight; 4] = [Self::SeqGateUp, Self::SeqDown, Self::GateUp, Self::Down];

    /// The four of a block of `cfg`.
    pub fn of(cfg: &ModelConfig) -> [BlockWeight; 4] {
        if cfg.mlp_t {
            Self::MLP_T
        } else {
            Self::ALL
        }
    }

    /// Position within the block's four (mixer 0, 1; SwiGLU 2, 3).
    pub fn index(self) -> usize {
        match self {
            Self::Qkv | Self::SeqGateUp => 0,
            Self::O | Self::SeqDown => 1,
            Self::GateUp => 2,
            Self::Down => 3,
        }
    }

    /// The weight's name within a block.
    fn name(self) -> &'static str {
        match self {
            Self::Qkv => "self_attn.qkv_proj.weight",
            Self::O => "self_attn.o_proj.weight",
            Self::SeqGateUp => "mlp_t.gate_up_proj.weight",
            Self::SeqDown => "mlp_t.down_proj.weight",
            Self::GateUp => "mlp.gate_up_proj.weight",
            Self::Down => "mlp.down_proj.weight",
        }
    }
}

/// Where a tensor lives in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// `inner.H_init` `[D]`.
    HInit,
    /// `inner.L_init` `[D]` (not in the transformer baseline).
    LInit,
    /// `inner.embed_tokens.embedding_weight` `[V, D]`.
    EmbedTokens,
    /// `inner.lm_head.weight` `[V, D]`.
    LmHead,
    /// `inner.q_head.weight` `[2, D]`.
    QHeadW,
    /// `inner.q_head.bias` `[2]`.
    QHeadB,
    /// `inner.puzzle_emb.weights` `[num_puzzle_identifiers, Dp]`.
    PuzzleEmb,
    /// `inner.embed_pos.embedding_weight` `[S, D]`.
    EmbedPos,
    /// `inner.{H,L}_level.layers.<layer>.<weight>`.
    Block {
        /// H module (else L).
        h_level: bool,
        /// Block index within the module.
        layer: usize,
        /// Which matrix.
        weight: BlockWeight,
    },
}

impl Slot {
    /// The reference's state-dict key of the tensor in this slot (the one place keys are
    /// spelled).
    pub fn key(self) -> String {
        match self {
            Self::HInit => "inner.H_init".into(),
            Self::LInit => "inner.L_init".into(),
            Self::EmbedTokens => "inner.embed_tokens.embedding_weight".into(),
            Self::LmHead => "inner.lm_head.weight".into(),
            Self::QHeadW => "inner.q_head.weight".into(),
            Self::QHeadB => "inner.q_head.bias".into(),
            Self::PuzzleEmb => "inner.puzzle_emb.weights".into(),
            Self::EmbedPos => "inner.embed_pos.embedding_weight".into(),
            Self::Block {
                h_level,
                layer,
                weight,
            } => {
                let level = if h_level { "H_level" } else { "L_level" };
                format!("inner.{level}.layers.{layer}.{}", weight.name())
            }
        }
    }
}

/// How a fresh model initialises a tensor (`TruncNormal`: JAX-style truncated LeCun normal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Truncated normal with this standard deviation.
    TruncNormal(f64),
    /// All zeros.
    Zeros,
    /// Every element this value.
    Fill(f32),
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Where it lives.
    pub slot: Slot,
    /// The reference's state-dict key.
    pub key: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Parameter or buffer.
    pub kind: TensorKind,
    /// Initialisation of a fresh model.
    pub init: Init,
}

/// Every tensor of a model of `cfg`, in the reference's `state_dict` order (which is also the
/// order a fresh model draws its random values in).
pub fn table(cfg: &ModelConfig) -> Vec<Entry> {
    use TensorKind::*;
    let (d, i, v) = (cfg.hidden_size, cfg.mlp_inner(), cfg.vocab_size);
    let (s, it) = (cfg.full_seq_len(), cfg.mlp_t_inner());
    let std_d = 1.0 / (d as f64).sqrt();
    let e = |slot: Slot, shape: Vec<usize>, kind, init| Entry {
        slot,
        key: slot.key(),
        shape,
        kind,
        init,
    };
    let mut t = vec![e(Slot::HInit, vec![d], Buffer, Init::TruncNormal(1.0))];
    if cfg.has_z_l() {
        t.push(e(Slot::LInit, vec![d], Buffer, Init::TruncNormal(1.0)));
    }
    t.extend([
        e(
            Slot::EmbedTokens,
            vec![v, d],
            Parameter,
            Init::TruncNormal(std_d),
        ),
        e(
            Slot::LmHead,
            vec![v, d],
            Parameter,
            Init::TruncNormal(std_d),
        ),
        // Q head: weight 0 and bias -5 so that q_halt == q_continue at start and nothing halts
        // early until the Q-head has learned ("init Q to (almost) zero for faster learning
        // during bootstrapping")
        e(Slot::QHeadW, vec![2, d], Parameter, Init::Zeros),
        e(Slot::QHeadB, vec![2], Parameter, Init::Fill(-5.0)),
    ]);
    if cfg.puzzle_emb_ndim > 0 {
        let shape = vec![cfg.num_puzzle_identifiers, cfg.puzzle_emb_ndim];
        t.push(e(Slot::PuzzleEmb, shape, Buffer, Init::Zeros));
    }
    if cfg.pos_encodings == PosEncoding::Learned {
        let shape = vec![cfg.full_seq_len(), d];
        t.push(e(
            Slot::EmbedPos,
            shape,
            Parameter,
            Init::TruncNormal(std_d),
        ));
    }
    for h_level in [true, false] {
        for layer in 0..cfg.module_layers(h_level) {
            for weight in BlockWeight::of(cfg) {
                let (shape, std) = match weight {
                    BlockWeight::Qkv => (vec![3 * d, d], std_d),
                    BlockWeight::O => (vec![d, d], std_d),
                    BlockWeight::SeqGateUp => (vec![2 * it, s], 1.0 / (s as f64).sqrt()),
                    BlockWeight::SeqDown => (vec![s, it], 1.0 / (it as f64).sqrt()),
                    BlockWeight::GateUp => (vec![2 * i, d], std_d),
                    BlockWeight::Down => (vec![d, i], 1.0 / (i as f64).sqrt()),
                };
                let slot = Slot::Block {
                    h_level,
                    layer,
                    weight,
                };
                t.push(e(slot, shape, Parameter, Init::TruncNormal(std)));
            }
        }
    }
    t
}

/// Check a state dict against the table: every missing, unexpected or mis-shaped key, by name,
/// in one error.
pub fn check_state_dict(cfg: &ModelConfig, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let expected = table(cfg);
    let mut problems = Vec::new();
    for e in &expected {
        match tensors.get(&e.key) {
            None => problems.push(format!(
                "missing key `{}` (expected shape {:?})",
                e.key, e.shape
            )),
            Some(t) if t.dims() != e.shape.as_slice() => problems.push(format!(
                "key `{}` has shape {:?}, expected {:?}",
                e.key,
                t.dims(),
                e.shape
            )),
            _ => {}
        }
    }
    let known: HashSet<&str> = expected.iter().map(|e| e.key.as_str()).collect();
    let mut unexpected: Vec<&String> = tensors
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .collect();
    unexpected.sort();
    for k in unexpected {
        problems.push(format!("unexpected key `{k}`"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::StateDict(problems))
    }
}

/// The tensors of a model, by slot, as [`super::Hrm`] holds them.
#[derive(Debug, Clone)]
pub struct Weights {
    /// `inner.H_init`: initial z_H (buffer, never trained).
    pub h_init: Var,
    /// `inner.L_init`: initial z_L (buffer, never trained; not in the transformer baseline).
    pub l_init: Option<Var>,
    /// `inner.embed_tokens.embedding_weight`.
    pub embed_tokens: Var,
    /// `inner.embed_pos.embedding_weight` with learned positions.
    pub embed_pos: Option<Var>,
    /// `inner.lm_head.weight`.
    pub lm_head: Var,
    /// `inner.q_head.weight` (row 0 halt, row 1 continue).
    pub q_head_w: Var,
    /// `inner.q_head.bias`.
    pub q_head_b: Var,
    /// `inner.puzzle_emb.weights` (buffer, trained by SignSGD).
    pub puzzle_emb: Option<Var>,
    /// `inner.H_level.layers.*`: per block the four of [`BlockWeight::of`] (qkv, o, gate_up,
    /// down; with `mlp_t` the sequence SwiGLU's two instead of qkv and o).
    pub h_level: Vec<[Var; 4]>,
    /// `inner.L_level.layers.*`.
    pub l_level: Vec<[Var; 4]>,
}

impl Weights {
    /// Build every tensor of the table, in its order, with `make`.
    pub fn build(cfg: &ModelConfig, mut make: impl FnMut(&Entry) -> Result<Var>) -> Result<Self> {
        let mut made: HashMap<Slot, Var> = HashMap::new();
        for e in table(cfg) {
            made.insert(e.slot, make(&e)?);
        }
        let mut take = |s: Slot| made.remove(&s);
        let mut need =
            |s: Slot| take(s).ok_or_else(|| Error::msg(format!("internal: no tensor for {s:?}")));
        let kinds = BlockWeight::of(cfg);
        let blocks = |need: &mut dyn FnMut(Slot) -> Result<Var>, h_level: bool, n: usize| {
            (0..n)
                .map(|layer| -> Result<[Var; 4]> {
                    let mut w = |weight| {
                        need(Slot::Block {
                            h_level,
                            layer,
                            weight,
                        })
                    };
                    Ok([w(kinds[0])?, w(kinds[1])?, w(kinds[2])?, w(kinds[3])?])
                })
                .collect::<Result<Vec<_>>>()
        };
        let h_level = blocks(&mut need, true, cfg.module_layers(true))?;
        let l_level = blocks(&mut need, false, cfg.module_layers(false))?;
        Ok(Self {
            h_init: need(Slot::HInit)?,
            embed_tokens: need(Slot::EmbedTokens)?,
            lm_head: need(Slot::LmHead)?,
            q_head_w: need(Slot::QHeadW)?,
            q_head_b: need(Slot::QHeadB)?,
            h_level,
            l_level,
            l_init: made.remove(&Slot::LInit),
            embed_pos: made.remove(&Slot::EmbedPos),
            puzzle_emb: made.remove(&Slot::PuzzleEmb),
        })
    }

    /// Load the tensors of a state dict (checked with [`check_state_dict`] first), as f32 on
    /// `device`. Refused, by key: a tensor that is not floating point (an integer tensor would
    /// be cast and used as weights) and one holding NaN or infinite values (a diverged run's
    /// weights would evaluate to nothing but give no error).
    pub fn from_state_dict(
        cfg: &ModelConfig,
        device: &Device,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Self> {
        check_state_dict(cfg, tensors)?;
        let mut problems = Vec::new();
        let weights = Self::build(cfg, |e| {
            let t = &tensors[&e.key];
            if !t.dtype().is_float() {
                problems.push(format!(
                    "key `{}` has dtype {:?}: weights must be floating point",
                    e.key,
                    t.dtype()
                ));
            }
            let t = t.to_dtype(candle_core::DType::F32)?;
            let values = crate::to_host_f32(&t)?;
            let bad = values.iter().filter(|x| !x.is_finite()).count();
            if bad > 0 {
                problems.push(format!(
                    "key `{}` holds {bad} NaN or infinite value(s): the checkpoint is corrupt or \
                     from a run that diverged (use an earlier checkpoint)",
                    e.key
                ));
            }
            Ok(Var::from_tensor(&t.to_device(device)?)?)
        })?;
        if problems.is_empty() {
            Ok(weights)
        } else {
            Err(Error::StateDict(problems))
        }
    }

    /// The tensor in `slot` (panics on a slot this configuration does not have: callers take
    /// slots from [`table`] of the same configuration).
    pub fn get(&self, slot: Slot) -> &Var {
        let missing = "slot absent in this configuration";
        match slot {
            Slot::HInit => &self.h_init,
            Slot::LInit => self.l_init.as_ref().expect(missing),
            Slot::EmbedTokens => &self.embed_tokens,
            Slot::LmHead => &self.lm_head,
            Slot::QHeadW => &self.q_head_w,
            Slot::QHeadB => &self.q_head_b,
            Slot::PuzzleEmb => self.puzzle_emb.as_ref().expect(missing),
            Slot::EmbedPos => self.embed_pos.as_ref().expect(missing),
            Slot::Block {
                h_level,
                layer,
                weight,
            } => {
                let blocks = if h_level {
                    &self.h_level
                } else {
                    &self.l_level
                };
                &blocks[layer][weight.index()]
            }
        }
    }
}
