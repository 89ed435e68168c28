//! Checkpoints for inference (`hrm eval`, `hrm solve`): a model file or a run folder's newest
//! checkpoint, the models shipped in `models/`, and loading with the inference kernels chosen.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use hrm_model::checkpoint::load_model;
use hrm_model::config::{ForwardDtype, ModelConfig};
use hrm_model::{Engine, Hrm, Kernels};

use crate::rundir::RunDir;

/// The shipped Sudoku model (`models/sudoku-cpu.safetensors`), `hrm solve sudoku`'s default.
pub const SUDOKU_MODEL: &str = "sudoku-cpu.safetensors";
/// The shipped maze model (`models/maze-cpu.safetensors`), `hrm solve maze`'s default.
pub const MAZE_MODEL: &str = "maze-cpu.safetensors";

/// `--checkpoint` as given: a model file, or a run folder meaning its newest `step_N.safetensors`.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let run = RunDir::open(path)?;
    match run.latest_checkpoint()? {
        Some(c) => Ok(c.path),
        None => bail!(
            "{}: a run folder without checkpoints (step_N.safetensors); pass a model file",
            path.display()
        ),
    }
}

/// The shipped model `name`: under `HRM_MODELS`, else `models/` of the current folder, else the
/// `models/` folder of the source tree this binary was built from.
pub fn default_model(name: &str) -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(d) = std::env::var_os("HRM_MODELS") {
        candidates.push(PathBuf::from(d).join(name));
    }
    candidates.push(PathBuf::from("models").join(name));
    candidates.push(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models")).join(name));
    candidates.into_iter().find(|p| p.exists()).with_context(|| {
        format!("no default model `models/{name}` found; pass --checkpoint CKPT (or set HRM_MODELS)")
    })
}

/// A checkpoint loaded for inference: the model, the checkpoint's metadata and the kernels its
/// [`Engine`] runs with.
#[derive(Debug)]
pub struct InferenceModel {
    /// The model.
    pub model: Hrm,
    /// The checkpoint's metadata (`step`, the saved run config, ...).
    pub metadata: HashMap<String, String>,
    /// bf16 products on AMX, else the small-batch f32 kernel where it runs.
    pub kernels: Kernels,
}

impl InferenceModel {
    /// The model with its kernels (for bf16: an error where the CPU has no AMX).
    pub fn engine(&self) -> Result<Engine<'_>> {
        Engine::new(&self.model, self.kernels).map_err(|e| match self.kernels {
            Kernels::AmxBf16 => anyhow::anyhow!("--bf16: {e}"),
            _ => e.into(),
        })
    }
}

/// Load a checkpoint for evaluation or solving; `bf16` selects bf16 matrix products on AMX (CPU
/// only, f32 activations: a bf16-trained checkpoint is run with f32 activations); otherwise
/// batches of at most `packed::MAX_ROWS` rows get the small-batch f32 kernel. `adjust` edits the
/// stored config first (e.g. the batch size).
pub fn load_for_inference(
    ckpt: &Path,
    device: &Device,
    bf16: bool,
    adjust: impl FnOnce(&mut ModelConfig),
) -> Result<InferenceModel> {
    if bf16 && !device.is_cpu() {
        bail!(
            "--bf16 selects AMX matrix products on the CPU; on a GPU, bf16 is the checkpoint's \
             arch.forward_dtype (a model trained with forward_dtype = \"bfloat16\" runs in bf16)"
        );
    }
    let (model, metadata) = load_model(ckpt, device, |c| {
        adjust(c);
        if bf16 {
            c.forward_dtype = ForwardDtype::F32;
        }
    })?;
    Ok(InferenceModel {
        model,
        metadata,
        // small batches (one Sudoku): the f32 kernel with weights packed once (where it runs)
        kernels: if bf16 {
            Kernels::AmxBf16
        } else {
            Kernels::PackedF32
        },
    })
}
