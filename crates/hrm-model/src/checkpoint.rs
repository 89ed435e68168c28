//! Checkpoints: safetensors files with the reference's key names and the config in the metadata,
//! written atomically; import of the reference's PyTorch checkpoints.
//!
//! Keys are the reference `state_dict` keys of the ACT model (`inner.H_level.layers.0...`). The
//! reference's own files add `_orig_mod.` (torch.compile) and `model.` (the loss-head wrapper)
//! in front; [`normalize_key`] strips both, so either kind loads (docs/model.md, "Checkpoints").
//!
//! Metadata (all strings): `format` = [`FORMAT`], `config` = the [`ModelConfig`] as JSON, plus
//! whatever the caller adds (the training step, the run's resolved config, ...).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as StDtype, TensorView};

use crate::config::ModelConfig;
use crate::model::weights::{BlockWeight, Slot};
use crate::model::Hrm;
use crate::{Error, Result};

/// Format tag of our model checkpoints.
pub const FORMAT: &str = "hrm-checkpoint-v1";

/// Strip the `_orig_mod.` and `model.` prefixes that the reference's checkpoints carry.
pub fn normalize_key(k: &str) -> &str {
    let k = k.strip_prefix("_orig_mod.").unwrap_or(k);
    k.strip_prefix("model.").unwrap_or(k)
}

/// The contents of a safetensors file.
#[derive(Debug)]
pub struct TensorFile {
    /// Tensors by (normalised) key.
    pub tensors: HashMap<String, Tensor>,
    /// The `__metadata__` map.
    pub metadata: HashMap<String, String>,
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Read every tensor and the metadata of a safetensors file; keys are normalised.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<TensorFile> {
    let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    // Mapped, not read, where the file allows it: the tensors below are then the only copy made
    // (~0.1 s less for `hrm solve`'s 108 MB model). Our checkpoints are replaced by rename, never
    // rewritten in place; a file another program truncates while this runs (milliseconds) would
    // end the process, as with any mapped read. Pipes and other unmappable files are read.
    // SAFETY: see above; the map is dropped before this function returns.
    let mapped = unsafe { memmap2::Mmap::map(&file) };
    let read;
    let bytes: &[u8] = match &mapped {
        Ok(m) => m,
        Err(_) => {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut &file, &mut v).map_err(|e| io_err(path, e))?;
            read = v;
            &read
        }
    };
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
        Error::msg(format!(
            "{}: not a valid safetensors file ({e}); hint: reference .pt checkpoints must be \
             converted first with `hrm convert IN.pt OUT.safetensors`",
            path.display()
        ))
    })?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::msg(format!("{}: bad safetensors header ({e})", path.display())))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let t = view_to_tensor(&view, device)
            .map_err(|e| Error::msg(format!("{}: tensor `{name}`: {e}", path.display())))?;
        tensors.insert(normalize_key(&name).to_string(), t);
    }
    Ok(TensorFile { tensors, metadata })
}

fn view_to_tensor(view: &TensorView, device: &Device) -> Result<Tensor> {
    let dt = match view.dtype() {
        StDtype::F32 => DType::F32,
        StDtype::F64 => DType::F64,
        StDtype::BF16 => DType::BF16,
        StDtype::F16 => DType::F16,
        StDtype::I32 => DType::I32,
        StDtype::I64 => DType::I64,
        StDtype::U8 => DType::U8,
        StDtype::U32 => DType::U32,
        other => return Err(Error::msg(format!("unsupported dtype {other:?}"))),
    };
    Ok(Tensor::from_raw_buffer(
        view.data(),
        dt,
        view.shape(),
        device,
    )?)
}

fn st_dtype(dt: DType) -> Result<StDtype> {
    Ok(match dt {
        DType::F32 => StDtype::F32,
        DType::F64 => StDtype::F64,
        DType::BF16 => StDtype::BF16,
        DType::F16 => StDtype::F16,
        DType::I32 => StDtype::I32,
        DType::I64 => StDtype::I64,
        DType::U8 => StDtype::U8,
        DType::U32 => StDtype::U32,
        other => return Err(Error::msg(format!("cannot store dtype {other:?}"))),
    })
}

/// Raw little-endian bytes of a tensor.
fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let t = t.flatten_all()?.to_device(&Device::Cpu)?;
    Ok(match t.dtype() {
        DType::F32 => t
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::F64 => t
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::BF16 => t
            .to_vec1::<half::bf16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::F16 => t
            .to_vec1::<half::f16>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::I32 => t
            .to_vec1::<i32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::I64 => t
            .to_vec1::<i64>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::U8 => t.to_vec1::<u8>()?,
        DType::U32 => t
            .to_vec1::<u32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        other => return Err(Error::msg(format!("cannot store dtype {other:?}"))),
    })
}

/// Serialise tensors and metadata to safetensors bytes.
pub fn safetensors_bytes(
    tensors: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut data = Vec::with_capacity(tensors.len());
    for (k, t) in tensors {
        data.push((
            k.clone(),
            st_dtype(t.dtype())?,
            t.dims().to_vec(),
            tensor_bytes(t)?,
        ));
    }
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(k, dt, shape, bytes)| {
            TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::msg(format!("tensor `{k}`: {e}")))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, Some(metadata.clone()))
        .map_err(|e| Error::msg(format!("safetensors serialisation: {e}")))
}

/// Save a model (its state dict, f32) with `format` and `config` metadata plus `extra` metadata.
pub fn save_model(path: &Path, model: &Hrm, extra: &HashMap<String, String>) -> Result<()> {
    let mut meta = extra.clone();
    meta.insert("format".into(), FORMAT.into());
    meta.insert(
        "config".into(),
        serde_json::to_string(&model.cfg).map_err(|e| Error::msg(e.to_string()))?,
    );
    let bytes = safetensors_bytes(&model.state_dict(), &meta)?;
    hrm_data::fsio::write_atomic(path, &bytes).map_err(|e| io_err(path, e))
}

/// The model config stored in a checkpoint's metadata.
pub fn config_from_metadata(path: &Path, meta: &HashMap<String, String>) -> Result<ModelConfig> {
    match meta.get("format").map(String::as_str) {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(Error::msg(format!(
                "{}: format tag `{other}` is not `{FORMAT}`; hint: a parity fixture is read by \
                 `hrm parity`, a reference .pt by `hrm convert`",
                path.display()
            )))
        }
        None => {
            return Err(Error::msg(format!(
                "{}: no `format` metadata, so this is not an hrm checkpoint; hint: convert \
                 reference checkpoints with `hrm convert IN.pt OUT.safetensors`",
                path.display()
            )))
        }
    }
    let cfg = meta
        .get("config")
        .ok_or_else(|| Error::msg(format!("{}: metadata has no `config`", path.display())))?;
    let cfg: ModelConfig = serde_json::from_str(cfg)
        .map_err(|e| Error::msg(format!("{}: metadata `config`: {e}", path.display())))?;
    cfg.validate()?;
    Ok(cfg)
}

/// Load a model saved by [`save_model`] (or converted by [`convert_torch`]). `adjust` may change
/// run-time settings of the stored config (batch size, halt_max_steps, forward dtype) before the
/// model is built; architecture changes are caught by the strict shape check.
pub fn load_model(
    path: &Path,
    device: &Device,
    adjust: impl FnOnce(&mut ModelConfig),
) -> Result<(Hrm, HashMap<String, String>)> {
    let f = read_safetensors(path, device)?;
    let mut cfg = config_from_metadata(path, &f.metadata)?;
    adjust(&mut cfg);
    let model = Hrm::from_state_dict(&cfg, device, &f.tensors)
        .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    Ok((model, f.metadata))
}

/// Facts about a reference state dict that its shapes determine.
#[derive(Debug, Clone, PartialEq)]
pub struct InferredShapes {
    /// D.
    pub hidden_size: usize,
    /// V.
    pub vocab_size: usize,
    /// Blocks in H.
    pub h_layers: usize,
    /// Blocks in L.
    pub l_layers: usize,
    /// SwiGLU inner width.
    pub mlp_inner: usize,
    /// TRM's `mlp_t`: the sequence SwiGLU's (S, I_t), when the blocks have one.
    pub mlp_t: Option<(usize, usize)>,
    /// Whether `inner.L_init` is present (not in the transformer baseline).
    pub l_init: bool,
    /// Puzzle table rows and width (0, 0 without a table).
    pub puzzle: (usize, usize),
    /// S of the learned position table, if present.
    pub learned_seq: Option<usize>,
}

/// Read the shapes that fix most of the architecture from a state dict.
pub fn infer_shapes(tensors: &HashMap<String, Tensor>) -> Result<InferredShapes> {
    let get = |k: &str| {
        tensors
            .get(k)
            .ok_or_else(|| Error::msg(format!("missing key `{k}` in the checkpoint")))
    };
    let block = |h_level, layer, weight| Slot::Block {
        h_level,
        layer,
        weight,
    };
    let (vocab_size, hidden_size) = get(&Slot::EmbedTokens.key())?.dims2()?;
    let count = |h_level: bool| {
        (0..)
            .take_while(|&i| tensors.contains_key(&block(h_level, i, BlockWeight::GateUp).key()))
            .count()
    };
    // the first block there is: H (HRM, the baseline) or L (TRM has no H blocks)
    let first = (count(true) == 0) as usize;
    let first = |w| block(first == 0, 0, w).key();
    let mlp_inner = get(&first(BlockWeight::Down))?.dims2()?.1;
    let mlp_t = match tensors.get(&first(BlockWeight::SeqDown)) {
        Some(t) => Some(t.dims2()?),
        None => None,
    };
    let puzzle = match tensors.get(&Slot::PuzzleEmb.key()) {
        Some(t) => t.dims2()?,
        None => (0, 0),
    };
    let learned_seq = match tensors.get(&Slot::EmbedPos.key()) {
        Some(t) => Some(t.dims2()?.0),
        None => None,
    };
    Ok(InferredShapes {
        hidden_size,
        vocab_size,
        h_layers: count(true),
        l_layers: count(false),
        mlp_inner,
        mlp_t,
        l_init: tensors.contains_key(&Slot::LInit.key()),
        puzzle,
        learned_seq,
    })
}

/// Read a reference PyTorch checkpoint (a pickled `state_dict`, zip format) with normalised keys.
pub fn read_torch(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::msg(format!("{}: no such file", path.display())));
    }
    crate::pickle_scan::scan_checkpoint(path)?;
    let entries = candle_core::pickle::read_all(path).map_err(|e| {
        Error::msg(format!(
            "{}: cannot read as a PyTorch checkpoint ({e}); hint: expected the file written by \
             the reference's torch.save(model.state_dict()) (e.g. `step_26040`)",
            path.display()
        ))
    })?;
    if entries.is_empty() {
        return Err(Error::msg(format!(
            "{}: the checkpoint holds no tensors",
            path.display()
        )));
    }
    Ok(entries
        .into_iter()
        .map(|(k, t)| (normalize_key(&k).to_string(), t))
        .collect())
}

/// Convert the tensors of the reference checkpoint `input` ([`read_torch`]) to our format, given
/// the architecture config (the caller builds it from the reference's `all_config.yaml`, the
/// shapes and the dataset). Fails, naming every key, if the tensors do not fit `cfg`. Returns
/// the model that was written.
pub fn convert_torch(
    input: &Path,
    tensors: &HashMap<String, Tensor>,
    output: &Path,
    cfg: &ModelConfig,
) -> Result<Hrm> {
    let model = Hrm::from_state_dict(cfg, &Device::Cpu, tensors)
        .map_err(|e| Error::msg(format!("{}: {e}", input.display())))?;
    let mut meta = HashMap::new();
    meta.insert("converted_from".into(), input.display().to_string());
    save_model(output, &model, &meta)?;
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn keys_are_normalised() {
        assert_eq!(
            normalize_key("_orig_mod.model.inner.H_init"),
            "inner.H_init"
        );
        assert_eq!(
            normalize_key("model.inner.q_head.bias"),
            "inner.q_head.bias"
        );
        assert_eq!(normalize_key("inner.L_init"), "inner.L_init");
    }

    #[test]
    fn save_load_round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ModelConfig::tiny(2);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let m = Hrm::new(&cfg, &Device::Cpu, &mut rng).unwrap();
        let p = dir.path().join("m.safetensors");
        save_model(
            &p,
            &m,
            &HashMap::from([("step".to_string(), "7".to_string())]),
        )
        .unwrap();
        let (m2, meta) = load_model(&p, &Device::Cpu, |_| {}).unwrap();
        assert_eq!(meta["step"], "7");
        for ((k1, t1), (k2, t2)) in m.state_dict().iter().zip(m2.state_dict().iter()) {
            assert_eq!(k1, k2);
            let d = (t1 - t2).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
        }
        // no temp files left behind
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // a wrong config: the error names the key and the file
        let e = load_model(&p, &Device::Cpu, |c| c.hidden_size = 128)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.safetensors") && e.contains("inner.H_init"),
            "{e}"
        );
        // not a safetensors file
        let bad = dir.path().join("bad.safetensors");
        std::fs::write(&bad, b"garbage").unwrap();
        let e = load_model(&bad, &Device::Cpu, |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bad.safetensors") && e.contains("not a valid safetensors"),
            "{e}"
        );
        // wrong format tag
        let other = dir.path().join("other.safetensors");
        let bytes = safetensors_bytes(
            &m.state_dict(),
            &HashMap::from([("format".to_string(), "hrm-parity-v1".to_string())]),
        )
        .unwrap();
        std::fs::write(&other, bytes).unwrap();
        let e = load_model(&other, &Device::Cpu, |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("format tag `hrm-parity-v1`"), "{e}");
    }
}
