//! Small file helpers shared by the data, training and evaluation crates: atomic writes of small
//! JSON files (a crash mid-write leaves the old file, never a truncated one), an append-only
//! JSONL writer that flushes every line (so `metrics.jsonl` survives a kill), and a line-numbered
//! JSONL reader.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{DataError, RowRef};

/// Writes `bytes` to `path` atomically: a temporary file in the same directory is written,
/// synced and renamed over `path`. Rename within one directory is atomic on POSIX file systems,
/// so readers see either the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        DataError::InvalidArgument(format!("{}: not a file path", path.display()))
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Persist the rename itself; not every platform lets a directory be opened, so a failure
        // here is not an error.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| DataError::io(path, e))
}

/// Serializes `value` as pretty JSON (with a trailing newline) and writes it atomically.
pub fn write_json_atomic<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<(), DataError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| DataError::Serialize {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads a JSON file into `T`; errors name the file and the line of the JSON error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, DataError> {
    let text = fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| DataError::malformed(path, RowRef::Line(e.line()), e.to_string()))
}

/// Appends one JSON object per line and flushes after each, so a reader (or a crash) never sees
/// half a buffer.
pub struct JsonlWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl JsonlWriter {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> Result<Self, DataError> {
        let f = File::create(path).map_err(|e| DataError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
        })
    }

    /// Opens `path` for appending, creating it if needed (a resumed run keeps its history).
    pub fn append(path: &Path) -> Result<Self, DataError> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| DataError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `value` as one line and flushes.
    pub fn write<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), DataError> {
        let line = serde_json::to_string(value).map_err(|source| DataError::Serialize {
            path: self.path.clone(),
            source,
        })?;
        self.write_raw_line(&line)
    }

    /// Writes an already serialized line (must not contain a newline) and flushes.
    pub fn write_raw_line(&mut self, line: &str) -> Result<(), DataError> {
        debug_assert!(
            !line.contains('\n'),
            "a JSONL line must not contain a newline"
        );
        let path = &self.path;
        self.out
            .write_all(line.as_bytes())
            .and_then(|_| self.out.write_all(b"\n"))
            .and_then(|_| self.out.flush())
            .map_err(|e| DataError::io(path, e))
    }
}

/// Calls `f(line_number, line)` for every non-blank line of a text file (1-based numbers, as an
/// editor shows them). Blank lines carry no row, so they are passed over.
pub fn for_each_line<F>(path: &Path, mut f: F) -> Result<(), DataError>
where
    F: FnMut(usize, &str) -> Result<(), DataError>,
{
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = BufReader::new(file);
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => {
                DataError::malformed(path, RowRef::Line(i + 1), "not valid UTF-8")
            }
            _ => DataError::io(path, e),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        f(i + 1, &line)?;
    }
    Ok(())
}

/// Reads every non-blank line of a JSONL file as `T`; the first bad line is an error naming the
/// file and line.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, DataError> {
    let mut out = Vec::new();
    for_each_line(path, |line_no, line| {
        let v = serde_json::from_str(line)
            .map_err(|e| DataError::malformed(path, RowRef::Line(line_no), e.to_string()))?;
        out.push(v);
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Row {
        step: u64,
        x: f64,
    }

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_json_atomic(&p, &Row { step: 1, x: 0.5 }).unwrap();
        write_json_atomic(&p, &Row { step: 2, x: 1.5 }).unwrap();
        let back: Row = read_json(&p).unwrap();
        assert_eq!(back, Row { step: 2, x: 1.5 });
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temporary file left behind: {names:?}");
    }

    #[test]
    fn atomic_write_into_missing_dir_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope").join("a.json");
        let err = write_atomic(&p, b"{}").unwrap_err().to_string();
        assert!(err.contains("nope/a.json"), "{err}");
    }

    #[test]
    fn jsonl_writer_appends_and_reader_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        {
            let mut w = JsonlWriter::create(&p).unwrap();
            w.write(&Row { step: 0, x: 1.0 }).unwrap();
        }
        {
            let mut w = JsonlWriter::append(&p).unwrap();
            w.write(&Row { step: 1, x: 2.0 }).unwrap();
        }
        let rows: Vec<Row> = read_jsonl(&p).unwrap();
        assert_eq!(rows, vec![Row { step: 0, x: 1.0 }, Row { step: 1, x: 2.0 }]);
    }

    #[test]
    fn reader_names_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        fs::write(&p, "{\"step\":0,\"x\":1}\n\n{\"step\":1,\"x\":\n").unwrap();
        let err = read_jsonl::<Row>(&p).unwrap_err();
        match &err {
            DataError::Malformed { at, .. } => assert_eq!(*at, RowRef::Line(3)),
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("m.jsonl: line 3"), "{err}");
    }
}
