//! Helpers shared by the binary's end-to-end tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The committed warm start of the built-in task, `assets/tiny-arith`.
pub fn tiny_model() -> PathBuf {
    let dir = workspace_root().join("assets/tiny-arith");
    assert!(
        dir.join("model.safetensors").is_file(),
        "the built-in tiny model is missing: {} (made by `tbrm sft`, see its README)",
        dir.display()
    );
    dir
}

/// Parsed lines of a JSONL file.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
