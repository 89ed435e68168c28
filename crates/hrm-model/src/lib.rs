//! `hrm-model`: the Hierarchical Reasoning Model (HRM, ACT v1; Wang et al. 2025,
//! arXiv 2506.21734) on candle, numerically matching the PyTorch reference (sapientinc/HRM).
//!
//! - [`model`]: the model (weights, block, reasoning modules, input embedding, segment), the ACT
//!   wrapper with its carry ([`model::act`]), the table of tensors ([`model::weights`]) and
//!   observers of the forward ([`model::observe`]).
//! - [`infer`]: the inference engine (kernel choice, packed weights, workspace) and the one
//!   no-gradient rollout.
//! - [`config`]: the architecture config with the reference's key names.
//! - [`init`]: JAX-style truncated LeCun-normal initialisation.
//! - [`ops`]: linear, fused attention+RoPE, residual+RMSNorm and SwiGLU with hand-written backward
//!   passes; [`cpu`]: the CPU kernels (matrix products, SIMD loops, packed f32, bf16 on AMX or AVX512-BF16).
//! - [`loss`]: stablemax / softmax cross-entropy, Q-learning BCE losses and the metrics.
//! - [`optim`]: AdamATan2 (adam-atan2 0.0.3 semantics), the sparse puzzle-embedding SignSGD and the
//!   weight EMA.
//! - `cuda` (feature `cuda`): the CUDA kernels of the optimizers and GPU helpers.
//! - [`train`]: one training step (forward, loss, backward) and the gradients it produces.
//! - [`checkpoint`]: safetensors checkpoints with config metadata; reference `.pt` import.
//! - [`parity`]: replays `hrm-parity-v1` golden fixtures of the PyTorch reference.
//! - [`device`]: device names; [`pickle_scan`]: the safety scan of reference checkpoints.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod infer;
pub mod init;
pub mod loss;
pub mod model;
pub mod ops;
pub mod optim;
pub mod parity;
pub mod pickle_scan;
pub mod train;

pub use config::ModelConfig;
pub use hrm_data::Batch;
pub use infer::{Engine, Kernels};
pub use model::{Carry, Hrm, Mode, StepOutput};

/// Errors of this crate: tensor errors, configuration errors and checkpoint problems, each with a
/// message that names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An invalid model configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A state dict that does not fit the model: every problem, by key.
    #[error("state dict does not match the model: {}", .0.join("; "))]
    StateDict(Vec<String>),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Anything else, with its explanation.
    #[error("{0}")]
    Msg(String),
}

impl Error {
    /// An error with a free-form message.
    pub fn msg(s: impl Into<String>) -> Self {
        Error::Msg(s.into())
    }
}

/// A tensor's values as a flat f32 vector on the host (any dtype, any device, any shape).
pub fn to_host_f32(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
