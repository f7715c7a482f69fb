//! Problems (question + gold answer) loaded from JSONL, JSON arrays or verl-style parquet, with
//! filters, a benchmark lookup by name, and a seeded, resumable batch order across epochs.
//!
//! Every input row either becomes a [`Problem`] or is reported: by default the first malformed
//! row is an error naming the file and line/row; with `skip_malformed` it is skipped and listed
//! in the [`LoadReport`]. Nothing is dropped silently.
//!
//! The pieces: this file holds the row and dataset types and the dataset's filters; `load` reads
//! a file in each format, `row` maps one row's fields onto a [`Problem`], `benchmark` finds a
//! benchmark by name, and `sampler` hands out the seeded batch order.

mod benchmark;
mod load;
mod row;
mod sampler;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::RowRef;
use crate::template::ChatMessage;

pub use benchmark::{
    known_benchmarks, load_benchmark, resolve_benchmark, BENCHMARKS, BENCHMARK_EXTENSIONS,
};
pub use load::{detect_format, load_dataset};
pub use sampler::{epoch_permutation, DataOrder, Sampler};

/// A question as stored in the data: plain text, or chat messages (verl parquet `prompt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Chat(Vec<ChatMessage>),
}

impl PromptInput {
    /// The question text: the text itself, or the content of the last user message (the first
    /// message if there is no user message).
    pub fn question(&self) -> &str {
        match self {
            PromptInput::Text(t) => t,
            PromptInput::Chat(msgs) => msgs
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .or_else(|| msgs.first())
                .map(|m| m.content.as_str())
                .unwrap_or(""),
        }
    }

    /// Length in characters of everything the prompt holds (all message contents for chat).
    pub fn char_len(&self) -> usize {
        match self {
            PromptInput::Text(t) => t.chars().count(),
            PromptInput::Chat(msgs) => msgs.iter().map(|m| m.content.chars().count()).sum(),
        }
    }
}

/// One dataset row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// The row's id field, or its 0-based row index when the file has none.
    pub id: String,
    pub prompt: PromptInput,
    /// Gold answer; numbers in the file are kept as their JSON text (`42`, `0.5`).
    pub answer: String,
    /// Dataset name (`data_source` in verl); the file stem when the row has none.
    pub source: String,
    /// All other fields of the row, untouched (e.g. `level`, `solution`, verl `extra_info`).
    pub extra: Value,
}

/// Which fields of a row hold what. A name may be a dotted path into nested objects
/// (`reward_model.ground_truth`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldMap {
    /// Optional: when absent or null in a row, the row index is the id.
    pub id: String,
    /// A string, or a list of `{role, content}` messages.
    pub problem: String,
    pub answer: String,
    /// Optional: when absent, the file stem.
    pub source: String,
}

impl Default for FieldMap {
    /// The JSONL convention of `shared/data`: `id`, `problem`, `answer`, `source`.
    fn default() -> Self {
        Self {
            id: "id".into(),
            problem: "problem".into(),
            answer: "answer".into(),
            source: "source".into(),
        }
    }
}

impl FieldMap {
    /// verl's RL dataset schema (verl `examples/data_preprocess/*.py`): `prompt` (chat messages),
    /// `reward_model.ground_truth`, `data_source`, and `extra_info.index` as id.
    pub fn verl() -> Self {
        Self {
            id: "extra_info.index".into(),
            problem: "prompt".into(),
            answer: "reward_model.ground_truth".into(),
            source: "data_source".into(),
        }
    }
}

/// How to load a data file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadOptions {
    /// Field names; `None` picks the format's convention ([`FieldMap::default`] for JSON(L),
    /// [`FieldMap::verl`] for parquet).
    pub fields: Option<FieldMap>,
    /// Skip malformed rows (counted in the report) instead of failing on the first one.
    pub skip_malformed: bool,
}

/// A row that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRow {
    pub at: RowRef,
    pub reason: String,
}

/// What happened to the rows of a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Data rows seen (blank JSONL lines are not rows).
    pub rows: usize,
    /// Malformed rows skipped under `skip_malformed`.
    pub skipped: Vec<SkippedRow>,
    /// Rows removed by the length filters so far.
    pub removed_too_long: usize,
    /// Rows removed by [`Dataset::dedup`] so far.
    pub removed_duplicates: usize,
}

/// The problems of one file and the account of how they were read.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
    pub report: LoadReport,
}

/// On-disk formats, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.jsonl`, or `.json` whose first non-blank character is not `[`.
    Jsonl,
    /// `.json` holding one array of objects.
    JsonArray,
    Parquet,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.problems.len()
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// Drops problems whose prompt has more than `max_chars` characters; returns how many.
    pub fn filter_max_prompt_chars(&mut self, max_chars: usize) -> usize {
        self.filter_max_prompt_len(max_chars, |p| p.prompt.char_len())
    }

    /// Drops problems whose prompt is longer than `max_len` as measured by `len` (for example the
    /// token count of the templated prompt); returns how many.
    pub fn filter_max_prompt_len<F: FnMut(&Problem) -> usize>(
        &mut self,
        max_len: usize,
        mut len: F,
    ) -> usize {
        let before = self.problems.len();
        self.problems.retain(|p| len(p) <= max_len);
        let removed = before - self.problems.len();
        self.report.removed_too_long += removed;
        removed
    }

    /// Keeps the first of problems whose question text is equal after trimming surrounding
    /// whitespace (DAPO-17k has 143 such whitespace duplicates); returns how many were dropped.
    pub fn dedup(&mut self) -> usize {
        let before = self.problems.len();
        let mut seen = HashSet::new();
        self.problems
            .retain(|p| seen.insert(p.prompt.question().trim().to_string()));
        let removed = before - self.problems.len();
        self.report.removed_duplicates += removed;
        removed
    }
}
