//! Checkpoints for inference (`hrm eval`, `hrm solve`): a model file or a run folder's newest
//! checkpoint, a `hub:OWNER/REPO[@REV][/FILE]` reference (fetched, converted once), the models
//! shipped in `models/`, and loading with the inference kernels chosen; the weights a training
//! run starts from (`load_checkpoint`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use hrm_model::checkpoint::{load_model, read_safetensors};
use hrm_model::config::{ForwardDtype, ModelConfig};
use hrm_model::model::weights::Slot;
use hrm_model::{Engine, Hrm, Kernels};

use crate::hub::{pick_checkpoint, Hub, HubCheckpoint, Snapshot};
use crate::rundir::RunDir;

/// The shipped Sudoku model `hrm solve sudoku` uses by default (`models/sudoku-trm-cpu.safetensors`:
/// TRM with mlp_t, trained on 20-blank Sudokus; `models/sudoku-cpu.safetensors` is the HRM one).
pub const SUDOKU_MODEL: &str = "sudoku-trm-cpu.safetensors";
/// The shipped maze model `hrm solve maze` uses by default (`models/maze-trm-cpu.safetensors`:
/// TRM with mlp_t, trained on 6x6 mazes; `models/maze-cpu.safetensors` is the HRM one).
pub const MAZE_MODEL: &str = "maze-trm-cpu.safetensors";

/// `--checkpoint` as given: a model file, a run folder meaning its newest `step_N.safetensors`,
/// or a Hub reference (see [`resolve_checkpoint_for`]; a reference `.pt` of a RoPE model then
/// needs the sequence length, which this form does not know).
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    resolve_checkpoint_for(path, None)
}

/// [`resolve_checkpoint`] for a model run on sequences of `seq_len` tokens: a
/// `hub:OWNER/REPO[@REV][/FILE]` reference is fetched into the Hub cache and, if it is a
/// reference PyTorch checkpoint, converted once for that length (see [`hub_checkpoint`]).
pub fn resolve_checkpoint_for(path: &Path, seq_len: Option<usize>) -> Result<PathBuf> {
    if let Some(c) = HubCheckpoint::from_path(path)? {
        return hub_checkpoint(&Hub::from_env()?, &c, seq_len);
    }
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

/// [`resolve_checkpoint_for`] with the sequence length of the dataset folder `data` (its `test`
/// split), what `hrm eval` runs the checkpoint on.
pub fn resolve_checkpoint_for_dataset(path: &Path, data: &Path) -> Result<PathBuf> {
    match HubCheckpoint::from_path(path)? {
        Some(c) => {
            // (an unreadable dataset is reported by the evaluation that reads it)
            let seq_len = hrm_data::format::read_metadata(&data.join("test"))
                .ok()
                .map(|m| m.seq_len);
            hub_checkpoint(&Hub::from_env()?, &c, seq_len)
        }
        None => resolve_checkpoint(path),
    }
}

/// A Hub checkpoint as fetched: the snapshot, the checkpoint file's name and cached path, and
/// the run's `all_config.yaml` (beside the file in the repo, else at its root; `None`: none).
#[derive(Debug, Clone)]
pub struct HubFiles {
    /// The repo at the commit used.
    pub snapshot: Snapshot,
    /// The checkpoint's path inside the repo.
    pub file: String,
    /// The checkpoint in the Hub cache.
    pub checkpoint: PathBuf,
    /// Its `all_config.yaml` in the Hub cache.
    pub config: Option<PathBuf>,
}

/// Where the conversion of `file` of `snapshot` for `seq_len` tokens is cached: beside the
/// download, `<repo dir>/hrm-converted/COMMIT/FILE.seqN.safetensors` (a new commit upstream is a
/// new folder, so it is converted again).
pub fn converted_path(snapshot: &Snapshot, file: &str, seq_len: Option<usize>) -> PathBuf {
    let tag = seq_len.map_or_else(|| "seq-auto".to_string(), |n| format!("seq{n}"));
    snapshot
        .repo_dir
        .join("hrm-converted")
        .join(&snapshot.commit)
        .join(format!("{file}.{tag}.safetensors"))
}

/// Fetch the checkpoint of `c` (its file, else the repo's one checkpoint file) and the run
/// config beside it, into the Hub cache.
pub fn fetch_hub_checkpoint(hub: &Hub, c: &HubCheckpoint) -> Result<HubFiles> {
    let snapshot = hub.snapshot(&c.repo)?;
    let file = checkpoint_file(&snapshot, c)?;
    fetch_hub_files(hub, snapshot, file)
}

fn checkpoint_file(snapshot: &Snapshot, c: &HubCheckpoint) -> Result<String> {
    match &c.file {
        Some(f) => Ok(f.clone()),
        None => pick_checkpoint(snapshot),
    }
}

fn fetch_hub_files(hub: &Hub, snapshot: Snapshot, file: String) -> Result<HubFiles> {
    let checkpoint = hub.fetch(&snapshot, &file)?;
    let dir = file.rsplit_once('/').map(|(d, _)| format!("{d}/"));
    let config = [
        dir.map(|d| format!("{d}all_config.yaml")),
        Some("all_config.yaml".into()),
    ]
    .into_iter()
    .flatten()
    .find(|y| snapshot.files.contains(y))
    .map(|y| hub.fetch(&snapshot, &y))
    .transpose()?;
    Ok(HubFiles {
        snapshot,
        file,
        checkpoint,
        config,
    })
}

/// The Hub checkpoint `c` ready to load: a `.safetensors` file as it is; a reference PyTorch
/// checkpoint converted with its `all_config.yaml` for `seq_len` tokens, once: the conversion is
/// cached beside the download ([`converted_path`]) and then used without fetching again.
pub fn hub_checkpoint(hub: &Hub, c: &HubCheckpoint, seq_len: Option<usize>) -> Result<PathBuf> {
    let snapshot = hub.snapshot(&c.repo)?;
    let file = checkpoint_file(&snapshot, c)?;
    if file.ends_with(".safetensors") {
        return hub.fetch(&snapshot, &file);
    }
    let out = converted_path(&snapshot, &file, seq_len);
    if out.exists() {
        return Ok(out);
    }
    let files = fetch_hub_files(hub, snapshot, file)?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::convert::convert(
        &files.checkpoint,
        &out,
        files.config.as_deref(),
        seq_len,
        &[],
    )
    .with_context(|| format!("converting {} of {}", files.file, files.snapshot.repo))?;
    eprintln!(
        "converted {} of {} once, to {}",
        files.file,
        files.snapshot.repo,
        out.display()
    );
    Ok(out)
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
    /// bf16 products (AMX or AVX512-BF16), else the small-batch f32 kernel where it runs.
    pub kernels: Kernels,
}

impl InferenceModel {
    /// The model with its kernels (for `--bf16`: an error where the CPU has no bf16 unit).
    pub fn engine(&self) -> Result<Engine<'_>> {
        Engine::new(&self.model, self.kernels).map_err(|e| match self.kernels {
            Kernels::Bf16 => anyhow::anyhow!("--bf16: {e}"),
            _ => e.into(),
        })
    }
}

/// Load a checkpoint for evaluation or solving; `bf16` runs it with a bf16 forward on the CPU
/// (f32 activations, every matrix product in bf16 on AMX or AVX512-BF16; an error where the CPU
/// has neither), as a checkpoint trained with a bf16 forward runs anyway; otherwise batches of at
/// most `packed::MAX_ROWS` rows get the small-batch f32 kernel. `adjust` edits the
/// stored config first (e.g. the batch size).
pub fn load_for_inference(
    ckpt: &Path,
    device: &Device,
    bf16: bool,
    adjust: impl FnOnce(&mut ModelConfig),
) -> Result<InferenceModel> {
    if bf16 && !device.is_cpu() {
        bail!(
            "--bf16 selects bf16 matrix products on the CPU; on a GPU, bf16 is the checkpoint's \
             arch.forward_dtype (a model trained with forward_dtype = \"bfloat16\" runs in bf16)"
        );
    }
    // --bf16 runs the checkpoint as a bf16 forward on the CPU: f32 activations, bf16 products
    let (model, metadata) = load_model(ckpt, device, |c| {
        adjust(c);
        if bf16 {
            c.forward_dtype = ForwardDtype::BF16;
        }
    })?;
    Ok(InferenceModel {
        model,
        metadata,
        // small batches (one Sudoku): the f32 kernel with weights packed once (where it runs)
        kernels: if bf16 {
            Kernels::Bf16
        } else {
            Kernels::PackedF32
        },
    })
}

/// The model a training run starts from with `load_checkpoint = SRC` (TRM's key): the weights of
/// SRC (a model file, a run folder's newest checkpoint, or `hub:OWNER/REPO[@REV][/FILE]`, a
/// reference `.pt` converted for the dataset's sequence length) in the run's architecture `cfg`.
/// Every tensor must be there with the run's shape, except the puzzle table: one with another
/// number of rows (another dataset) is replaced, as TRM does, by its mean row in every row of the
/// run's table. Returns the model and, when the table was resized, a note saying so.
pub fn initial_model(
    src: &str,
    data_path: &Path,
    cfg: &ModelConfig,
    device: &Device,
) -> Result<(Hrm, Option<String>)> {
    let what = || format!("load_checkpoint = \"{src}\"");
    let path = resolve_checkpoint_for_dataset(Path::new(src), data_path).with_context(what)?;
    let mut file = read_safetensors(&path, device).with_context(what)?;
    let key = Slot::PuzzleEmb.key();
    let mut note = None;
    if let Some(t) = file.tensors.get(&key) {
        let (rows, cols) = t.dims2().with_context(what)?;
        let want = cfg.num_puzzle_identifiers;
        if cfg.puzzle_emb_ndim == cols && rows != want && rows > 0 {
            let mean = t
                .mean_keepdim(0)?
                .broadcast_as((want, cols))?
                .contiguous()?;
            file.tensors.insert(key.clone(), mean);
            note = Some(format!(
                "{}: `{key}` has {rows} rows and the dataset {want} puzzle identifiers: every \
                 row starts from the checkpoint's mean row",
                path.display()
            ));
        }
    }
    let model = Hrm::from_state_dict(cfg, device, &file.tensors).map_err(|e| {
        anyhow::anyhow!(
            "{}: {} does not fit the run's arch: {e} (hint: the arch.* keys must match the \
             checkpoint's)",
            what(),
            path.display()
        )
    })?;
    Ok((model, note))
}
