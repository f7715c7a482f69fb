//! Problems (question + gold answer) loaded from JSONL, JSON arrays or verl-style parquet, with
//! filters, a benchmark lookup by name, and a seeded, resumable batch order across epochs.
//!
//! Every input row either becomes a [`Problem`] or is reported: by default the first malformed
//! row is an error naming the file and line/row; with `skip_malformed` it is skipped and listed
//! in the [`LoadReport`]. Nothing is dropped silently.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::arrow_json::batch_row_to_json;
use crate::error::{DataError, RowRef};
use crate::jsonl::for_each_line;
use crate::template::ChatMessage;

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

/// Picks the format from the extension (and, for `.json`, the first character).
pub fn detect_format(path: &Path) -> Result<Format, DataError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("jsonl") => Ok(Format::Jsonl),
        Some("parquet") => Ok(Format::Parquet),
        Some("json") => {
            let text = fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
            Ok(match text.trim_start().chars().next() {
                Some('[') => Format::JsonArray,
                _ => Format::Jsonl,
            })
        }
        _ => Err(DataError::UnknownFormat {
            path: path.to_path_buf(),
        }),
    }
}

/// Loads a data file; the format is chosen by extension.
pub fn load_dataset(path: &Path, opts: &LoadOptions) -> Result<Dataset, DataError> {
    let format = detect_format(path)?;
    let fields = opts.fields.clone().unwrap_or_else(|| match format {
        Format::Parquet => FieldMap::verl(),
        Format::Jsonl | Format::JsonArray => FieldMap::default(),
    });
    let default_source = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_string();
    let mut acc = Accumulator {
        path,
        fields: &fields,
        default_source: &default_source,
        skip_malformed: opts.skip_malformed,
        problems: Vec::new(),
        report: LoadReport::default(),
    };
    match format {
        Format::Jsonl => {
            let mut index = 0;
            for_each_line(path, |line_no, line| {
                let at = RowRef::Line(line_no);
                let row =
                    serde_json::from_str::<Value>(line).map_err(|e| format!("invalid JSON: {e}"));
                acc.push(at, index, row)?;
                index += 1;
                Ok(())
            })?;
        }
        Format::JsonArray => {
            let text = fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
            let all: Value = serde_json::from_str(&text).map_err(|e| {
                DataError::malformed(path, RowRef::Line(e.line()), format!("invalid JSON: {e}"))
            })?;
            let Value::Array(rows) = all else {
                unreachable!("detect_format saw `[`")
            };
            for (i, row) in rows.into_iter().enumerate() {
                acc.push(RowRef::Element(i), i, Ok(row))?;
            }
        }
        Format::Parquet => load_parquet_rows(path, &mut acc)?,
    }
    Ok(Dataset {
        path: path.to_path_buf(),
        problems: acc.problems,
        report: acc.report,
    })
}

fn load_parquet_rows(path: &Path, acc: &mut Accumulator<'_>) -> Result<(), DataError> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let perr = |e: &dyn std::fmt::Display| DataError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| perr(&e))?
        .with_batch_size(1024)
        .build()
        .map_err(|e| perr(&e))?;
    let mut index = 0;
    for batch in reader {
        let batch = batch.map_err(|e| perr(&e))?;
        for r in 0..batch.num_rows() {
            acc.push(RowRef::Row(index), index, batch_row_to_json(&batch, r))?;
            index += 1;
        }
    }
    Ok(())
}

/// Turns rows into problems, or into errors / skip records.
struct Accumulator<'a> {
    path: &'a Path,
    fields: &'a FieldMap,
    default_source: &'a str,
    skip_malformed: bool,
    problems: Vec<Problem>,
    report: LoadReport,
}

impl Accumulator<'_> {
    fn push(
        &mut self,
        at: RowRef,
        index: usize,
        row: Result<Value, String>,
    ) -> Result<(), DataError> {
        self.report.rows += 1;
        match row.and_then(|v| parse_row(v, index, self.fields, self.default_source)) {
            Ok(p) => self.problems.push(p),
            Err(reason) if self.skip_malformed => {
                self.report.skipped.push(SkippedRow { at, reason })
            }
            Err(reason) => return Err(DataError::malformed(self.path, at, reason)),
        }
        Ok(())
    }
}

fn lookup<'v>(row: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut parts = path.split('.');
    let mut cur = row.get(parts.next()?)?;
    for part in parts {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur)
}

/// A scalar as answer/id text; `None` for anything else.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_prompt(v: &Value, field: &str) -> Result<PromptInput, String> {
    let bad =
        || format!("field `{field}` must be a string or a list of {{role, content}} messages");
    let prompt = match v {
        Value::String(s) => PromptInput::Text(s.clone()),
        Value::Array(items) => {
            let mut msgs = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let role = item.get("role").and_then(Value::as_str);
                let content = item.get("content").and_then(Value::as_str);
                match (role, content) {
                    (Some(r), Some(c)) => msgs.push(ChatMessage::new(r, c)),
                    _ => {
                        return Err(format!(
                            "field `{field}`: message {i} needs string `role` and `content`"
                        ))
                    }
                }
            }
            PromptInput::Chat(msgs)
        }
        _ => return Err(bad()),
    };
    if prompt.question().trim().is_empty() {
        return Err(format!("field `{field}` is empty"));
    }
    Ok(prompt)
}

fn parse_row(
    row: Value,
    index: usize,
    fields: &FieldMap,
    default_source: &str,
) -> Result<Problem, String> {
    let Value::Object(mut obj) = row else {
        return Err("row is not a JSON object".into());
    };
    let prompt = match lookup(&obj, &fields.problem) {
        Some(v) if !v.is_null() => parse_prompt(v, &fields.problem)?,
        _ => return Err(format!("missing field `{}`", fields.problem)),
    };
    let answer = match lookup(&obj, &fields.answer) {
        Some(v) if !v.is_null() => scalar_text(v)
            .ok_or_else(|| format!("field `{}` must be a string or a number", fields.answer))?,
        _ => return Err(format!("missing field `{}`", fields.answer)),
    };
    let id = match lookup(&obj, &fields.id) {
        None | Some(Value::Null) => index.to_string(),
        Some(v) => scalar_text(v)
            .ok_or_else(|| format!("field `{}` must be a string or a number", fields.id))?,
    };
    let source = match lookup(&obj, &fields.source) {
        None | Some(Value::Null) => default_source.to_string(),
        Some(v) => {
            scalar_text(v).ok_or_else(|| format!("field `{}` must be a string", fields.source))?
        }
    };
    // The problem and answer fields are consumed whole (their top-level key); id and source only
    // when they are top-level, so nested metadata such as verl's `extra_info` stays available.
    for f in [&fields.problem, &fields.answer] {
        obj.remove(f.split('.').next().unwrap_or(f));
    }
    for f in [&fields.id, &fields.source] {
        if !f.contains('.') {
            obj.remove(f.as_str());
        }
    }
    Ok(Problem {
        id,
        prompt,
        answer,
        source,
        extra: Value::Object(obj),
    })
}

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

/// Position in the data stream: which shuffled epoch and how far into it. Saving this with a
/// checkpoint and passing it to [`Sampler::resume`] continues with exactly the same batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataOrder {
    pub seed: u64,
    pub epoch: u64,
    /// Index into the epoch's permutation of the next item to hand out.
    pub cursor: usize,
}

/// The order of `n` items in `epoch`: a ChaCha8 stream per epoch (seeded by `seed`), so an
/// epoch's permutation depends only on `(seed, epoch)` and is the same on every platform.
pub fn epoch_permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    idx.shuffle(&mut rng);
    idx
}

/// Yields batches of indices into a dataset of `n` items, reshuffling every epoch. A batch that
/// runs past the end of an epoch continues into the next one, so every item is used once per
/// epoch and no batch is short.
#[derive(Debug, Clone)]
pub struct Sampler {
    n: usize,
    batch_size: usize,
    shuffle: bool,
    order: DataOrder,
    perm: Vec<usize>,
}

impl Sampler {
    /// Starts at epoch 0. With `shuffle == false` every epoch is `0..n` in order.
    pub fn new(n: usize, batch_size: usize, seed: u64, shuffle: bool) -> Result<Self, DataError> {
        Self::resume(
            n,
            batch_size,
            shuffle,
            DataOrder {
                seed,
                epoch: 0,
                cursor: 0,
            },
        )
    }

    /// Continues from a saved position.
    pub fn resume(
        n: usize,
        batch_size: usize,
        shuffle: bool,
        order: DataOrder,
    ) -> Result<Self, DataError> {
        if n == 0 {
            return Err(DataError::InvalidArgument(
                "cannot sample batches from an empty dataset".into(),
            ));
        }
        if batch_size == 0 {
            return Err(DataError::InvalidArgument(
                "batch size must be at least 1".into(),
            ));
        }
        if order.cursor >= n {
            return Err(DataError::InvalidArgument(format!(
                "saved data position (epoch {}, cursor {}) does not fit a dataset of {n} rows; \
                 was the dataset or a filter changed?",
                order.epoch, order.cursor
            )));
        }
        let perm = Self::make_perm(n, shuffle, order.seed, order.epoch);
        Ok(Self {
            n,
            batch_size,
            shuffle,
            order,
            perm,
        })
    }

    fn make_perm(n: usize, shuffle: bool, seed: u64, epoch: u64) -> Vec<usize> {
        if shuffle {
            epoch_permutation(n, seed, epoch)
        } else {
            (0..n).collect()
        }
    }

    /// The next `batch_size` indices.
    pub fn next_batch(&mut self) -> Vec<usize> {
        let mut batch = Vec::with_capacity(self.batch_size);
        while batch.len() < self.batch_size {
            batch.push(self.perm[self.order.cursor]);
            self.order.cursor += 1;
            if self.order.cursor == self.n {
                self.order.epoch += 1;
                self.order.cursor = 0;
                self.perm =
                    Self::make_perm(self.n, self.shuffle, self.order.seed, self.order.epoch);
            }
        }
        batch
    }

    /// Where the next batch starts; save it to resume.
    pub fn position(&self) -> DataOrder {
        self.order
    }

    pub fn epoch(&self) -> u64 {
        self.order.epoch
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn jsonl_default_fields_and_extras() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "mini.jsonl",
            "{\"id\":\"a\",\"problem\":\"1+1?\",\"answer\":\"2\",\"source\":\"S\",\"level\":3}\n\n{\"problem\":\"2+2?\",\"answer\":4}\n",
        );
        let ds = load_dataset(&p, &LoadOptions::default()).unwrap();
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.report.rows, 2);
        let a = &ds.problems[0];
        assert_eq!(
            (a.id.as_str(), a.answer.as_str(), a.source.as_str()),
            ("a", "2", "S")
        );
        assert_eq!(a.prompt, PromptInput::Text("1+1?".into()));
        assert_eq!(a.extra, serde_json::json!({"level": 3}));
        let b = &ds.problems[1];
        // No id: the row index; no source: the file stem; numeric answer: its JSON text.
        assert_eq!(
            (b.id.as_str(), b.answer.as_str(), b.source.as_str()),
            ("1", "4", "mini")
        );
    }

    #[test]
    fn field_map_with_dotted_paths() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "x.jsonl",
            "{\"q\":\"Q\",\"meta\":{\"gt\":\"7\"},\"k\":1}\n",
        );
        let opts = LoadOptions {
            fields: Some(FieldMap {
                problem: "q".into(),
                answer: "meta.gt".into(),
                ..FieldMap::default()
            }),
            skip_malformed: false,
        };
        let ds = load_dataset(&p, &opts).unwrap();
        assert_eq!(ds.problems[0].answer, "7");
        assert_eq!(ds.problems[0].extra, serde_json::json!({"k": 1}));
    }

    #[test]
    fn json_array_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "a.json",
            "[{\"problem\":\"p\",\"answer\":\"1\"},{\"problem\":\"q\"}]",
        );
        let err = load_dataset(&p, &LoadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a.json: element 1: missing field `answer`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_extension_is_an_error() {
        let err = load_dataset(Path::new("data.csv"), &LoadOptions::default()).unwrap_err();
        assert!(matches!(err, DataError::UnknownFormat { .. }), "{err}");
    }

    #[test]
    fn dedup_trims_whitespace_and_keeps_first() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "d.jsonl",
            "{\"problem\":\"A\",\"answer\":\"1\"}\n{\"problem\":\" A\\n\",\"answer\":\"2\"}\n{\"problem\":\"B\",\"answer\":\"3\"}\n",
        );
        let mut ds = load_dataset(&p, &LoadOptions::default()).unwrap();
        assert_eq!(ds.dedup(), 1);
        let answers: Vec<_> = ds.problems.iter().map(|p| p.answer.as_str()).collect();
        assert_eq!(answers, ["1", "3"]);
        assert_eq!(ds.report.removed_duplicates, 1);
    }

    #[test]
    fn length_filters() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "l.jsonl",
            "{\"problem\":\"short\",\"answer\":\"1\"}\n{\"problem\":\"a much longer one\",\"answer\":\"2\"}\n",
        );
        let mut ds = load_dataset(&p, &LoadOptions::default()).unwrap();
        assert_eq!(ds.filter_max_prompt_chars(5), 1);
        assert_eq!(ds.problems[0].answer, "1");
        // A token counter: whitespace-separated words.
        let mut ds = load_dataset(&p, &LoadOptions::default()).unwrap();
        let removed =
            ds.filter_max_prompt_len(3, |p| p.prompt.question().split_whitespace().count());
        assert_eq!(removed, 1);
        assert_eq!(ds.report.removed_too_long, 1);
    }

    #[test]
    fn benchmark_lookup_by_name_or_path_and_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let row = "{\"problem\":\"p\",\"answer\":\"1\"}\n";
        write(dir.path(), "amc23.jsonl", row);
        write(dir.path(), "toy.jsonl", row);
        let toy = dir.path().join("toy.jsonl");
        assert_eq!(
            resolve_benchmark(dir.path(), "amc23").unwrap(),
            ("amc23".to_string(), dir.path().join("amc23.jsonl"))
        );
        // Any file in the data folder is a benchmark by its stem; a path needs no folder.
        assert_eq!(
            resolve_benchmark(dir.path(), "toy").unwrap(),
            ("toy".to_string(), toy.clone())
        );
        assert_eq!(
            resolve_benchmark(Path::new("/nonexistent"), &toy.display().to_string()).unwrap(),
            ("toy".to_string(), toy)
        );
        assert_eq!(
            load_benchmark(dir.path(), "amc23", &LoadOptions::default())
                .unwrap()
                .problems
                .len(),
            1
        );
        let err = resolve_benchmark(dir.path(), "aime2024")
            .unwrap_err()
            .to_string();
        assert!(err.contains("benchmark `aime2024` not found"), "{err}");
        for want in ["aime2024.jsonl", "aime2024.parquet", "aime2024.json"] {
            assert!(
                err.contains(&dir.path().join(want).display().to_string()),
                "{err}"
            );
        }
        // The known names: the standard list plus the files present.
        assert!(
            err.contains("aime24") && err.contains("math500") && err.contains("toy"),
            "{err}"
        );
        let err = resolve_benchmark(dir.path(), "no/such.jsonl")
            .unwrap_err()
            .to_string();
        assert!(err.contains("looked for no/such.jsonl"), "{err}");
    }

    #[test]
    fn permutation_is_seeded_and_differs_between_epochs() {
        let a = epoch_permutation(50, 7, 0);
        assert_eq!(a, epoch_permutation(50, 7, 0));
        assert_ne!(a, epoch_permutation(50, 7, 1));
        assert_ne!(a, epoch_permutation(50, 8, 0));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn sampler_covers_each_epoch_once_and_crosses_epochs() {
        let mut s = Sampler::new(5, 2, 1, true).unwrap();
        let got: Vec<usize> = (0..5).flat_map(|_| s.next_batch()).collect();
        let (e0, e1) = got.split_at(5);
        assert_eq!(e0, epoch_permutation(5, 1, 0).as_slice());
        assert_eq!(e1, epoch_permutation(5, 1, 1).as_slice());
        assert_eq!(
            s.position(),
            DataOrder {
                seed: 1,
                epoch: 2,
                cursor: 0
            }
        );
    }

    #[test]
    fn sampler_resume_gives_the_same_batches() {
        let mut full = Sampler::new(7, 3, 42, true).unwrap();
        let reference: Vec<Vec<usize>> = (0..6).map(|_| full.next_batch()).collect();
        let mut first = Sampler::new(7, 3, 42, true).unwrap();
        let mut got: Vec<Vec<usize>> = (0..2).map(|_| first.next_batch()).collect();
        let saved = serde_json::to_string(&first.position()).unwrap();
        let order: DataOrder = serde_json::from_str(&saved).unwrap();
        let mut resumed = Sampler::resume(7, 3, true, order).unwrap();
        got.extend((0..4).map(|_| resumed.next_batch()));
        assert_eq!(got, reference);
    }

    #[test]
    fn sampler_without_shuffle_and_bad_arguments() {
        let mut s = Sampler::new(3, 2, 0, false).unwrap();
        assert_eq!(s.next_batch(), [0, 1]);
        assert_eq!(s.next_batch(), [2, 0]);
        assert!(Sampler::new(0, 2, 0, true).is_err());
        assert!(Sampler::new(3, 0, 0, true).is_err());
        let err = Sampler::resume(
            3,
            1,
            true,
            DataOrder {
                seed: 0,
                epoch: 1,
                cursor: 3,
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("cursor 3"), "{err}");
    }
}
