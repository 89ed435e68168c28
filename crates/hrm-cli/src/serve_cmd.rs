//! `hrm serve`: the flags and the address line; the app is `hrm_train::serve`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use hrm_train::checkpoints::{resolve_checkpoint, resolve_checkpoint_for_dataset};
use hrm_train::serve::{serve, Models};

/// Flags of `hrm serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A model file, run folder or `hub:OWNER/REPO[@REV][/FILE]` to serve (a reference `.pt`
    /// from the Hub is converted for the sequence length of `--data`), repeatable: each one's task (Sudoku, maze or ARC)
    /// is read from its vocabulary, one model per task. Sudoku and maze without one get the
    /// shipped model (models/sudoku-trm-cpu.safetensors, models/maze-trm-cpu.safetensors) where
    /// it is found.
    #[arg(long)]
    pub checkpoint: Vec<PathBuf>,
    /// The dataset an ARC checkpoint was trained on: the page offers the tasks of its test
    /// split.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Address to listen on (loopback by default: the app has no authentication).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port). The first line printed is `listening on http://HOST:PORT`.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Matrix products in bf16 on AMX or AVX512-BF16 (as `hrm solve --bf16`).
    #[arg(long)]
    pub bf16: bool,
}

/// `hrm serve`.
pub fn serve_cmd(a: &ServeArgs) -> Result<()> {
    let files = a
        .checkpoint
        .iter()
        .map(|p| match a.data.as_deref() {
            // a reference `.pt` from the Hub is converted for the dataset's sequence length
            Some(data) => resolve_checkpoint_for_dataset(p, data),
            None => resolve_checkpoint(p),
        })
        .collect::<Result<Vec<_>>>()?;
    let device = candle_core::Device::Cpu;
    let models = Models::load(&files, a.data.as_deref(), &device, a.bf16)?;
    let loaded: Vec<String> = models
        .loaded()
        .iter()
        .map(|(task, path)| format!("{task} {}", path.display()))
        .collect();
    serve(models, &a.host, a.port, |addr| {
        println!("listening on http://{addr}");
        println!("models: {}", loaded.join(", "));
    })
}
