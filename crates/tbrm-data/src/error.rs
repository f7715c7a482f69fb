//! The one error type of tbrm-data. Every variant that comes from a file names the file and,
//! where there is one, the line (JSONL) or row (parquet), so a user can go straight to the bad
//! input.

use std::fmt;
use std::path::PathBuf;

/// Where in a file a problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowRef {
    /// 1-based line number of a JSONL file.
    Line(usize),
    /// 0-based element index of a JSON array file.
    Element(usize),
    /// 0-based row index of a parquet file.
    Row(usize),
}

impl fmt::Display for RowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowRef::Line(n) => write!(f, "line {n}"),
            RowRef::Element(n) => write!(f, "element {n}"),
            RowRef::Row(n) => write!(f, "row {n}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A row that cannot be used: bad JSON, a missing or mistyped field, an invalid trajectory.
    #[error("{}: {at}: {message}", path.display())]
    Malformed {
        path: PathBuf,
        at: RowRef,
        message: String,
    },
    /// A file-level problem of a parquet file (unreadable footer, missing column).
    #[error("{}: {message}", path.display())]
    Parquet { path: PathBuf, message: String },
    #[error("{}: unknown data file extension (expected .jsonl, .json or .parquet)", path.display())]
    UnknownFormat { path: PathBuf },
    #[error(
        "benchmark `{name}` not found: looked for {}; known benchmarks: {}",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        known.join(", ")
    )]
    BenchmarkNotFound {
        name: String,
        tried: Vec<PathBuf>,
        known: Vec<String>,
    },
    #[error("prompt template: {0}")]
    Template(String),
    /// A caller-side mistake such as a zero batch size.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{}: cannot serialize: {source}", path.display())]
    Serialize {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn malformed(
        path: impl Into<PathBuf>,
        at: RowRef,
        message: impl Into<String>,
    ) -> Self {
        DataError::Malformed {
            path: path.into(),
            at,
            message: message.into(),
        }
    }
}
