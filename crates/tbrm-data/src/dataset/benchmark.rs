//! Benchmarks by name: the standard list, the lookup of `<data_dir>/<name>.<ext>` or a path,
//! and the error that lists what was tried and what is known.

use std::fs;
use std::path::{Path, PathBuf};

use super::{load_dataset, Dataset, LoadOptions};
use crate::error::DataError;

/// Benchmarks and training sets known by name; each is `<data_dir>/<name>.jsonl` or `.parquet`.
/// The first six are the paper's Table 1, in its column order (tbrm-eval relies on that).
pub const BENCHMARKS: [&str; 9] = [
    "aime24",
    "aime25",
    "amc23",
    "math500",
    "minerva_math",
    "olympiadbench",
    "gsm8k_test",
    "dapo17k",
    "math_train",
];

/// File extensions tried, in order, when a benchmark is looked up by name.
pub const BENCHMARK_EXTENSIONS: [&str; 3] = ["jsonl", "parquet", "json"];

/// Where a benchmark's problems come from: a path to an existing file is used as is (named by
/// its file stem); a name is looked up as `<data_dir>/<name>.{jsonl,parquet,json}` (any name
/// with a file there, not only the [`BENCHMARKS`]). Returns (name, file).
pub fn resolve_benchmark(
    data_dir: &Path,
    name_or_path: &str,
) -> Result<(String, PathBuf), DataError> {
    let as_path = Path::new(name_or_path);
    let looks_like_path = name_or_path.contains(std::path::MAIN_SEPARATOR)
        || name_or_path.contains('/')
        || BENCHMARK_EXTENSIONS
            .iter()
            .any(|e| name_or_path.ends_with(&format!(".{e}")));
    if looks_like_path && as_path.is_file() {
        let stem = as_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| name_or_path.to_string());
        return Ok((stem, as_path.to_path_buf()));
    }
    let tried: Vec<PathBuf> = if looks_like_path {
        vec![as_path.to_path_buf()]
    } else {
        BENCHMARK_EXTENSIONS
            .iter()
            .map(|e| data_dir.join(format!("{name_or_path}.{e}")))
            .collect()
    };
    if let Some(p) = tried.iter().find(|p| p.is_file()) {
        return Ok((name_or_path.to_string(), p.clone()));
    }
    Err(DataError::BenchmarkNotFound {
        name: name_or_path.to_string(),
        tried,
        known: known_benchmarks(data_dir),
    })
}

/// The standard benchmark names plus the stems of the data files present in `data_dir`.
pub fn known_benchmarks(data_dir: &Path) -> Vec<String> {
    let mut names: std::collections::BTreeSet<String> =
        BENCHMARKS.iter().map(|s| s.to_string()).collect();
    if let Ok(entries) = fs::read_dir(data_dir) {
        for e in entries.flatten() {
            let p = e.path();
            let ext_ok = p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| BENCHMARK_EXTENSIONS.contains(&x));
            if ext_ok && p.is_file() {
                if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                    names.insert(stem.to_string());
                }
            }
        }
    }
    names.into_iter().collect()
}

/// Loads a benchmark given by name (from `data_dir`) or path, see [`resolve_benchmark`].
pub fn load_benchmark(
    data_dir: &Path,
    name_or_path: &str,
    opts: &LoadOptions,
) -> Result<Dataset, DataError> {
    load_dataset(&resolve_benchmark(data_dir, name_or_path)?.1, opts)
}
