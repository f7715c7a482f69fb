//! Trainer: rollout, reward, reference log-probs, update; checkpoints, resume, metrics; the
//! built-in synthetic task and SFT warm start.
//!
//! The library never reads argv or the environment: it takes a [`TrainConfig`] and reports
//! through a [`TrainObserver`]; the `tbrm` binary owns flags, progress bars and Ctrl-C.

pub mod builtin;
pub mod checkpoint;
pub mod config;
pub mod critic;
pub mod metrics;
pub mod optim;
pub mod reward;
pub mod rollout;
pub mod run_dir;
pub mod schedule;
pub mod sft;
pub mod task;
pub mod trainer;

pub use config::{Algorithm, ConfigError, TrainConfig};
pub use metrics::{NoopObserver, StepMetrics, Summary, TrainObserver};
pub use reward::{Reward, RewardError};
pub use trainer::{RunOutcome, TaskData, TrainError, Trainer};
