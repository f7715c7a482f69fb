//! Built-in synthetic tasks: problems the project generates itself, their tokenizer and their
//! reward, so that `tbrm sft` and `tbrm train` run end to end with no downloads.
//!
//! Only one task exists so far, `arith` (step-by-step arithmetic, [`arith`]); the task name in a
//! config picks it through [`TaskKind`].

pub mod arith;
pub mod tokenizer;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Errors of the built-in tasks.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("invalid task config: {0}")]
    Config(String),
    #[error("bad arithmetic problem {prompt:?}: {why}")]
    BadProblem { prompt: String, why: String },
    #[error("unknown task {0:?} (known: arith)")]
    UnknownTask(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The built-in tasks by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Arith,
}

impl std::str::FromStr for TaskKind {
    type Err = TaskError;
    fn from_str(s: &str) -> Result<Self, TaskError> {
        match s {
            "arith" => Ok(TaskKind::Arith),
            other => Err(TaskError::UnknownTask(other.to_string())),
        }
    }
}
