//! Reading a data file: the format from the extension, then JSONL lines, JSON array elements
//! or parquet rows, each turned into a [`Problem`] or reported (error or skip record).

use std::fs::{self, File};
use std::path::Path;

use serde_json::Value;

use super::row::parse_row;
use super::{Dataset, FieldMap, Format, LoadOptions, LoadReport, Problem, SkippedRow};
use crate::arrow_json::batch_row_to_json;
use crate::error::{DataError, RowRef};
use crate::jsonl::for_each_line;

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
