//! JSON Lines batch verification, shared by `tbrm verify --input` and the benchmark example.
//! Each input line is an object with `gold` and either `pred` (an answer) or `response` (a full
//! model response); it is written back with `correct`, `extracted` and `reason` added. A
//! malformed line becomes `{"line": N, "error": "..."}` in the output and is reported to the
//! caller; the other lines are still verified. Whitespace-only lines carry no data and are
//! passed over (counted in [`JsonlSummary::blank`]). Lines are verified in parallel chunks and
//! written in input order.

use std::io::{BufRead, Write};
use std::time::Instant;

use rayon::prelude::*;
use serde_json::{Map, Value};

use crate::{verify_with, Limits};

/// Lines verified per parallel chunk; bounds memory for very large files.
const CHUNK: usize = 8192;

/// Counts from one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonlSummary {
    /// Lines verified.
    pub verified: usize,
    /// Of those, judged correct.
    pub correct: usize,
    /// Lines that could not be read as a record (reported with their number).
    pub malformed: usize,
    /// Whitespace-only lines passed over.
    pub blank: usize,
    /// Longest single verification, in microseconds, and its line number.
    pub slowest_micros: u64,
    /// 1-based line number of the slowest verification (0 when none).
    pub slowest_line: usize,
}

/// An I/O failure while reading or writing the JSONL streams.
#[derive(Debug, thiserror::Error)]
pub enum JsonlError {
    /// Reading line `line` failed.
    #[error("reading line {line}: {source}")]
    Read {
        /// 1-based line number.
        line: usize,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Write(#[from] std::io::Error),
    /// The worker pool could not be started.
    #[error("starting {threads} worker threads: {msg}")]
    Pool {
        /// Requested thread count (0 = all cores).
        threads: usize,
        /// The pool builder's message.
        msg: String,
    },
}

/// Runs `f` on a dedicated pool of `threads` workers (0 = one per core), so callers can pin
/// batch verification to one core for measurements without depending on rayon themselves.
pub fn with_threads<T: Send>(
    threads: usize,
    f: impl FnOnce() -> T + Send,
) -> Result<T, JsonlError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| JsonlError::Pool {
            threads,
            msg: e.to_string(),
        })?;
    Ok(pool.install(f))
}

/// The record of one line, or why it is malformed.
fn record(line: &str) -> Result<(Map<String, Value>, String, String), String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(obj) = v else {
        return Err("not a JSON object".into());
    };
    let gold = match obj.get("gold") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err("`gold` is not a string".into()),
        None => return Err("missing key `gold`".into()),
    };
    let pred = match (obj.get("pred"), obj.get("response")) {
        (Some(_), Some(_)) => return Err("both `pred` and `response` given; use one".into()),
        (Some(Value::String(s)), None) | (None, Some(Value::String(s))) => s.clone(),
        (Some(Value::Number(n)), None) => n.to_string(),
        (Some(_), None) => return Err("`pred` is not a string".into()),
        (None, Some(_)) => return Err("`response` is not a string".into()),
        (None, None) => return Err("missing key `pred` or `response`".into()),
    };
    Ok((obj, gold, pred))
}

/// Verifies every line of `input` and writes the annotated lines to `output`. `on_error` gets
/// the 1-based line number and message of each malformed line.
pub fn verify_jsonl<R: BufRead, W: Write>(
    input: R,
    mut output: W,
    limits: &Limits,
    mut on_error: impl FnMut(usize, &str),
) -> Result<JsonlSummary, JsonlError> {
    let mut summary = JsonlSummary::default();
    // Builds the lazily compiled regexes now, so the first line's timing is not inflated.
    crate::verify("1", "1");
    let mut lines = input.lines().enumerate();
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        for (i, line) in lines.by_ref().take(CHUNK) {
            let line = line.map_err(|source| JsonlError::Read {
                line: i + 1,
                source,
            })?;
            chunk.push((i + 1, line));
        }
        if chunk.is_empty() {
            break;
        }
        let results: Vec<Option<Result<(Value, u64), String>>> = chunk
            .par_iter()
            .map(|(_, line)| {
                if line.trim().is_empty() {
                    return None;
                }
                Some(record(line).map(|(mut obj, gold, pred)| {
                    let t = Instant::now();
                    let (v, _) = verify_with(&gold, &pred, limits);
                    let micros = t.elapsed().as_micros() as u64;
                    obj.insert("correct".into(), Value::Bool(v.correct));
                    obj.insert(
                        "extracted".into(),
                        v.extracted.map_or(Value::Null, Value::String),
                    );
                    obj.insert("reason".into(), Value::String(v.reason));
                    (Value::Object(obj), micros)
                }))
            })
            .collect();
        for ((n, _), r) in chunk.iter().zip(results) {
            match r {
                None => summary.blank += 1,
                Some(Ok((v, micros))) => {
                    summary.verified += 1;
                    if micros >= summary.slowest_micros {
                        summary.slowest_micros = micros;
                        summary.slowest_line = *n;
                    }
                    if v["correct"] == Value::Bool(true) {
                        summary.correct += 1;
                    }
                    serde_json::to_writer(&mut output, &v).map_err(std::io::Error::from)?;
                    output.write_all(b"\n")?;
                }
                Some(Err(msg)) => {
                    summary.malformed += 1;
                    on_error(*n, &msg);
                    let e = serde_json::json!({ "line": n, "error": msg });
                    serde_json::to_writer(&mut output, &e).map_err(std::io::Error::from)?;
                    output.write_all(b"\n")?;
                }
            }
        }
    }
    output.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotates_lines_and_reports_malformed_ones() {
        let input = concat!(
            "{\"gold\": \"1/2\", \"pred\": \"0.5\", \"id\": 7}\n",
            "not json\n",
            "\n",
            "{\"gold\": \"3\", \"response\": \"so \\\\boxed{4}\"}\n",
            "{\"pred\": \"3\"}\n",
            "{\"gold\": 3, \"pred\": \"3\"}\n",
            "{\"gold\": \"3\", \"pred\": \"3\", \"response\": \"3\"}\n",
        );
        let mut out = Vec::new();
        let mut errors = Vec::new();
        let s = verify_jsonl(input.as_bytes(), &mut out, &Limits::default(), |n, m| {
            errors.push((n, m.to_string()))
        })
        .unwrap();
        assert_eq!((s.verified, s.correct, s.malformed, s.blank), (3, 2, 3, 1));
        assert!([1, 4, 6].contains(&s.slowest_line));
        assert_eq!(
            errors.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![2, 5, 7]
        );
        assert!(errors[1].1.contains("gold"));
        let out: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(out.len(), 6);
        assert_eq!(out[0]["correct"], true);
        assert_eq!(out[0]["id"], 7);
        assert_eq!(out[0]["extracted"], "0.5");
        assert_eq!(out[1]["line"], 2);
        assert_eq!(out[2]["correct"], false);
        assert_eq!(out[2]["extracted"], "4");
        assert_eq!(out[3]["line"], 5);
    }
}
