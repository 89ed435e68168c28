//! `hrm-train`: everything around the HRM training loop.
//!
//! Mirrors the non-model parts of sapientinc/HRM:pretrain.py: the config (`PretrainConfig` +
//! Hydra's `cfg_pretrain.yaml`/`arch/hrm_v1.yaml`, in [`config`]), the learning-rate schedule
//! (`cosine_schedule_with_warmup_lr_lambda`, in [`schedule`]), and the run folder the reference
//! writes under `checkpoints/<project>/<run>` (in [`rundir`]). What the reference sends to
//! Weights & Biases goes to `metrics.jsonl` and TensorBoard event files here ([`sinks`],
//! [`tfevents`]); its tqdm bar becomes [`progress`]. The loop itself is [`trainer`], evaluation
//! [`eval`], the exact-resume checkpoints [`state`], and data parallelism over N ranks [`dist`]
//! (started by [`launch`]).
//!
//! Around a trained model: task scoring and the whole `hrm eval` ([`score`]), solving one puzzle
//! ([`solve`]), finding and loading a checkpoint for inference ([`checkpoints`]), importing a
//! reference checkpoint ([`convert`]), the Hugging Face Hub's datasets and checkpoints ([`hub`]),
//! speed measurements ([`bench`]) and the GPU-against-CPU checks ([`device_check`]). The page of a
//! solve and the `hrm serve` app: [`view`], [`serve`].
#![warn(missing_docs)]

pub mod analyze;
pub mod bench;
pub mod checkpoints;
pub mod config;
pub mod convert;
pub mod device_check;
pub mod dist;
pub mod eval;
pub mod hub;
pub mod launch;
pub mod progress;
pub mod rundir;
pub mod schedule;
pub mod score;
pub mod serve;
pub mod sinks;
pub mod solve;
pub mod state;
pub mod tfevents;
pub mod trace;
pub mod trainer;
pub mod view;
