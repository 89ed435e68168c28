//! Importing a reference PyTorch checkpoint (`hrm convert`; HRM's, or TRM's `pretrain.py` ones of
//! TRM and its transformer baseline): its model config from the tensor shapes, the run's
//! `all_config.yaml` and `KEY=VALUE` overrides, and the conversion itself.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use hrm_model::checkpoint::{convert_torch, infer_shapes, read_torch};
use hrm_model::config::{Arch, ForwardDtype, ModelConfig, PosEncoding};

/// A tiny reader for the YAML that OmegaConf writes (`all_config.yaml`): nested maps of scalars.
/// Returns dotted keys (`arch.H_cycles`) -> raw scalar text; list items are skipped.
pub fn read_simple_yaml(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    for line in text.lines() {
        let content = line.split(" #").next().unwrap_or("");
        if content.trim().is_empty() || content.trim_start().starts_with('#') {
            continue;
        }
        let indent = content.len() - content.trim_start().len();
        let t = content.trim();
        if t.starts_with("- ") || t == "-" {
            continue;
        }
        let Some((k, v)) = t.split_once(':') else {
            continue;
        };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let key: Vec<&str> = stack
            .iter()
            .map(|(_, k)| k.as_str())
            .chain(std::iter::once(k.trim()))
            .collect();
        let v = v.trim();
        if v.is_empty() {
            stack.push((indent, k.trim().to_string()));
        } else {
            let v = v.trim_matches(|c| c == '\'' || c == '"');
            out.insert(key.join("."), v.to_string());
        }
    }
    out
}

fn parse<T: std::str::FromStr>(key: &str, v: &str, src: &str) -> Result<T> {
    v.parse()
        .map_err(|_| anyhow::anyhow!("{src}: `{key}` = `{v}` is not a valid value"))
}

/// Build the model config of the reference checkpoint `input` from the shapes of its `tensors`
/// ([`read_torch`]), its `all_config.yaml` and overrides; every value that cannot be found is
/// named in the error.
pub fn reference_config(
    input: &Path,
    tensors: &HashMap<String, Tensor>,
    yaml: Option<&Path>,
    seq_len: Option<usize>,
    overrides: &[String],
) -> Result<ModelConfig> {
    let shapes = infer_shapes(tensors)?;
    let mut vals: BTreeMap<String, (String, String)> = BTreeMap::new();
    if let Some(y) = yaml {
        let text =
            std::fs::read_to_string(y).with_context(|| format!("reading {}", y.display()))?;
        for (k, v) in read_simple_yaml(&text) {
            let k = k.strip_prefix("arch.").map(str::to_string).unwrap_or(k);
            vals.insert(k, (v, y.display().to_string()));
        }
    }
    for o in overrides {
        let (k, v) = o
            .split_once('=')
            .with_context(|| format!("override `{o}` is not KEY=VALUE"))?;
        let k = k.strip_prefix("arch.").unwrap_or(k);
        vals.insert(k.to_string(), (v.to_string(), "command line".into()));
    }
    let get = |k: &str| vals.get(k).map(|(v, s)| (v.as_str(), s.as_str()));
    let num = |k: &str, default: usize| -> Result<usize> {
        match get(k) {
            Some((v, s)) => parse(k, v, s),
            None => Ok(default),
        }
    };
    let float = |k: &str, default: f64| -> Result<f64> {
        match get(k) {
            Some((v, s)) => parse(k, v, s),
            None => Ok(default),
        }
    };
    let flag = |k: &str, default: Option<bool>| -> Result<Option<bool>> {
        match get(k) {
            Some((v, s)) => match v.to_ascii_lowercase().as_str() {
                "true" => Ok(Some(true)),
                "false" => Ok(Some(false)),
                _ => bail!("{s}: `{k}` = `{v}` is not true or false"),
            },
            None => Ok(default),
        }
    };
    let d = shapes.hidden_size;
    let (num_ids, ndim) = shapes.puzzle;
    // the architecture: the config's name, else what the tensors hold (TRM: L blocks only; the
    // baseline: H blocks and no L_init)
    let from_tensors = if shapes.h_layers == 0 {
        Arch::Trm
    } else if shapes.l_layers == 0 && !shapes.l_init {
        Arch::Transformer
    } else {
        Arch::Hrm
    };
    let arch = match get("name") {
        Some((name, s)) => {
            let arch = Arch::parse(name).with_context(|| {
                format!(
                    "{s}: arch.name = `{name}` is not a model hrm converts (one of {})",
                    Arch::NAMES
                )
            })?;
            if arch != from_tensors {
                bail!(
                    "{s}: arch.name = `{name}` but the checkpoint's tensors are a {} model's (the \
                     config of another run?)",
                    from_tensors.name()
                );
            }
            arch
        }
        None => from_tensors,
    };
    // the config must agree with the tensors on what they fix (TRM ignores H_layers)
    let mut fixed = vec![
        ("hidden_size", d),
        ("L_layers", shapes.l_layers),
        ("puzzle_emb_ndim", ndim),
    ];
    if arch != Arch::Trm {
        fixed.push(("H_layers", shapes.h_layers));
    }
    for (key, tensors) in fixed {
        if let Some((v, s)) = get(key) {
            let v: usize = parse(key, v, s)?;
            if v != tensors && !(arch == Arch::Transformer && key == "L_layers") {
                bail!(
                    "{s}: arch.{key} = {v} but the checkpoint's tensors have {tensors} (the \
                     config of another model?)"
                );
            }
        }
    }
    let mlp_t = shapes.mlp_t.is_some();
    if let Some(false) = flag("mlp_t", None)?.filter(|&m| m != mlp_t) {
        bail!("the config says mlp_t = false but the checkpoint's blocks have mlp_t weights");
    }
    if let Some(true) = flag("mlp_t", None)?.filter(|&m| m != mlp_t) {
        bail!("the config says mlp_t = true but the checkpoint's blocks have attention weights");
    }
    let pos_encodings = match (get("pos_encodings"), shapes.learned_seq) {
        (_, Some(_)) => PosEncoding::Learned,
        (Some(("learned", s)), None) => {
            bail!("{s}: pos_encodings = learned but the checkpoint has no embed_pos table")
        }
        (Some((v, _)), None) if arch == Arch::Trm && v != "rope" => PosEncoding::None,
        _ => PosEncoding::Rope,
    };
    let trm = arch == Arch::Trm;
    let forward_dtype = match get("forward_dtype") {
        Some(("bfloat16", _)) => ForwardDtype::BF16,
        _ => ForwardDtype::F32,
    };
    let mut cfg = ModelConfig {
        arch,
        batch_size: num("batch_size", num("global_batch_size", 1)?)?,
        seq_len: 0,
        puzzle_emb_ndim: ndim,
        num_puzzle_identifiers: num_ids.max(1),
        vocab_size: shapes.vocab_size,
        h_cycles: num("H_cycles", if trm { 3 } else { 2 })?,
        l_cycles: num("L_cycles", if trm { 6 } else { 2 })?,
        h_layers: shapes.h_layers,
        l_layers: shapes.l_layers,
        hidden_size: d,
        expansion: float("expansion", 4.0)?,
        num_heads: num("num_heads", (d / 64).max(1))?,
        pos_encodings,
        rms_norm_eps: float("rms_norm_eps", 1e-5)?,
        rope_theta: float("rope_theta", 10000.0)?,
        halt_max_steps: num("halt_max_steps", 16)?,
        halt_exploration_prob: float("halt_exploration_prob", 0.1)?,
        forward_dtype,
        puzzle_emb_len: if trm {
            Some(num("puzzle_emb_len", 16)?)
        } else {
            None
        },
        mlp_t,
        no_act_continue: if trm {
            flag("no_ACT_continue", Some(true))?
        } else {
            None
        },
        act_enabled: if arch == Arch::Transformer {
            flag("act_enabled", None)?
        } else {
            None
        },
        act_inference: if arch == Arch::Transformer {
            flag("act_inference", None)?
        } else {
            None
        },
    };
    let p = cfg.puzzle_emb_len();
    let stored_seq = shapes
        .learned_seq
        .or(shapes.mlp_t.map(|(s, _)| s))
        .map(|s| s.checked_sub(p));
    cfg.seq_len = match (stored_seq, seq_len, get("seq_len")) {
        (Some(Some(s)), _, _) => s,
        (Some(None), _, _) => bail!(
            "{}: the checkpoint's sequence tables are shorter than the puzzle prefix of {p} \
             positions (wrong puzzle_emb_len?)",
            input.display()
        ),
        (None, Some(s), _) => s,
        (None, None, Some((v, s))) => parse("seq_len", v, s)?,
        _ => bail!(
            "{}: the sequence length is not stored in reference checkpoints; pass --seq-len \
             (81 for Sudoku, 900 for Maze and ARC)",
            input.display()
        ),
    };
    if cfg.puzzle_emb_ndim == 0 {
        cfg.num_puzzle_identifiers = 0;
    }
    if cfg.mlp_inner() != shapes.mlp_inner {
        bail!(
            "expansion {} gives a SwiGLU width of {} but the checkpoint's is {}; set expansion=...",
            cfg.expansion,
            cfg.mlp_inner(),
            shapes.mlp_inner
        );
    }
    cfg.validate()?;
    Ok(cfg)
}

/// What [`convert`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converted {
    /// Tensors in the written checkpoint.
    pub tensors: usize,
    /// Parameters (elements of the trainable tensors).
    pub parameters: usize,
    /// The `all_config.yaml` the config came from (`None`: shapes and defaults only).
    pub config: Option<PathBuf>,
}

/// Convert the reference checkpoint `input` into the safetensors checkpoint `output` (written
/// atomically), its config from `config` (default: the `all_config.yaml` next to `input`, if
/// any), the shapes, `seq_len` and `overrides` (see [`reference_config`]).
pub fn convert(
    input: &Path,
    output: &Path,
    config: Option<&Path>,
    seq_len: Option<usize>,
    overrides: &[String],
) -> Result<Converted> {
    let yaml = match config {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let p = input
                .parent()
                .unwrap_or(Path::new("."))
                .join("all_config.yaml");
            p.exists().then_some(p)
        }
    };
    let tensors = read_torch(input)?;
    let cfg = reference_config(input, &tensors, yaml.as_deref(), seq_len, overrides)?;
    let model = convert_torch(input, &tensors, output, &cfg)?;
    Ok(Converted {
        tensors: model.state_dict().len(),
        parameters: model.parameters().iter().map(|(_, v)| v.elem_count()).sum(),
        config: yaml,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_yaml_reads_nested_scalars() {
        let y = "arch:\n  H_cycles: 3\n  loss:\n    loss_type: stablemax_cross_entropy\n  \
                 name: 'hrm@X'\nlr: 7.0e-05\neval_save_outputs: []\nlist:\n- a\n- b\nseed: 0\n";
        let m = read_simple_yaml(y);
        assert_eq!(m["arch.H_cycles"], "3");
        assert_eq!(m["arch.loss.loss_type"], "stablemax_cross_entropy");
        assert_eq!(m["arch.name"], "hrm@X");
        assert_eq!(m["lr"], "7.0e-05");
        assert_eq!(m["seed"], "0");
    }
}
