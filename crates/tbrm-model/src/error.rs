//! The crate's error type. Every variant names the file (and key or tensor) at fault, so a bad
//! checkpoint folder is reported as "what is wrong where" rather than as a torch panic.

use std::path::PathBuf;

/// Errors from loading, saving and running models (and, in the same crate, tokenizers and
/// generation).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A config value that is missing, out of range or unsupported.
    #[error("{path}: key `{key}`: {msg}")]
    Config {
        path: PathBuf,
        key: String,
        msg: String,
    },
    /// A safetensors file (or shard index) that cannot be used: truncated, bad header, wrong
    /// dtype, missing or mis-shaped tensor.
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

impl ModelError {
    pub(crate) fn config(path: impl Into<PathBuf>, key: &str, msg: impl Into<String>) -> Self {
        ModelError::Config {
            path: path.into(),
            key: key.to_string(),
            msg: msg.into(),
        }
    }

    pub(crate) fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        ModelError::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}
