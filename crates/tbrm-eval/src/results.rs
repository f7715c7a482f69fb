//! Benchmark results: one [`BenchmarkResult`] per benchmark, `results.json`, and text tables laid
//! out like Table 1 of the TBRM paper (rows = models or runs, columns = AIME24 AIME25 AMC23
//! MATH500 Minerva OlympiadBench, accuracy in %).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tbrm_data::{read_json, write_json_atomic, DataError};

use crate::metrics::{avg_at_k, mean_pass_at_k, MetricError};

/// The scores of one model on one benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkResult {
    /// Benchmark name as in the data directory (`aime24`, `math500`, ...).
    pub name: String,
    pub n_problems: usize,
    /// Samples per problem (the k of avg@k).
    pub samples: usize,
    /// 0 means greedy decoding.
    pub temperature: f64,
    /// Mean accuracy over samples and problems, 0..1.
    pub avg_at_k: f64,
    /// Unbiased pass@k, 0..1, for each reported k <= samples.
    pub pass_at_k: BTreeMap<usize, f64>,
}

impl BenchmarkResult {
    /// Scores `correct[p][s]` (sample s of problem p). Every problem must have `samples` samples
    /// (`samples` is taken from the first problem); `ks` lists the pass@k values to report.
    pub fn from_correctness(
        name: &str,
        temperature: f64,
        correct: &[Vec<bool>],
        ks: &[usize],
    ) -> Result<Self, MetricError> {
        let avg = avg_at_k(correct)?;
        let samples = correct[0].len();
        let mut pass_at_k = BTreeMap::new();
        for &k in ks {
            pass_at_k.insert(k, mean_pass_at_k(correct, k)?);
        }
        Ok(Self {
            name: name.to_string(),
            n_problems: correct.len(),
            samples,
            temperature,
            avg_at_k: avg,
            pass_at_k,
        })
    }
}

/// The six benchmarks of the paper's Table 1 in its column order, with their column titles.
pub const TABLE1_COLUMNS: [(&str, &str); 6] = [
    ("aime24", "AIME24"),
    ("aime25", "AIME25"),
    ("amc23", "AMC23"),
    ("math500", "MATH500"),
    ("minerva_math", "Minerva"),
    ("olympiadbench", "OlympiadBench"),
];

/// Column title of a benchmark (its Table 1 title, or its own name).
pub fn display_name(name: &str) -> &str {
    TABLE1_COLUMNS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or(name)
}

/// The paper's evaluation protocol for a benchmark (`shared/docs/tbrm-method.md`): 32 samples
/// at temperature 1.0 (avg@32) for AIME24, AIME25 and AMC23, one greedy sample (avg@1) for
/// everything else. Returns `(samples, temperature)`.
pub fn paper_protocol(name: &str) -> (usize, f64) {
    match name {
        "aime24" | "aime25" | "amc23" => (32, 1.0),
        _ => (1, 0.0),
    }
}

/// Everything `tbrm eval` writes to `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsFile {
    /// The model directory or run label that was evaluated.
    pub model: String,
    /// Prompt template name.
    pub template: String,
    pub max_new_tokens: usize,
    pub seed: u64,
    pub results: Vec<BenchmarkResult>,
}

/// Writes `results.json` atomically.
pub fn write_results_json(path: &Path, file: &ResultsFile) -> Result<(), DataError> {
    write_json_atomic(path, file)
}

pub fn read_results_json(path: &Path) -> Result<ResultsFile, DataError> {
    read_json(path)
}

fn render_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            // First column left-aligned (labels), numbers right-aligned.
            .map(|(i, (c, &w))| {
                if i == 0 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        format!("| {} |\n", parts.join(" | "))
    };
    let mut out = line(header);
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            // Cells are padded by one space each side; numeric columns are right-aligned.
            if i == 0 {
                "-".repeat(w + 2)
            } else {
                format!("{}:", "-".repeat(w + 1))
            }
        })
        .collect();
    out.push_str(&format!("|{}|\n", rule.join("|")));
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// A Markdown table like the paper's Table 1: one row per `(label, results)`, the six Table 1
/// columns first (those no row has are left out), then any other benchmark in first-seen order;
/// cells are avg@k in % with one decimal, `-` where a row lacks the benchmark.
pub fn format_table1(rows: &[(String, Vec<BenchmarkResult>)]) -> String {
    let mut names: Vec<&str> = TABLE1_COLUMNS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| rows.iter().any(|(_, rs)| rs.iter().any(|r| r.name == *n)))
        .collect();
    for (_, rs) in rows {
        for r in rs {
            if !names.contains(&r.name.as_str()) {
                names.push(&r.name);
            }
        }
    }
    let mut header = vec!["model / method".to_string()];
    header.extend(names.iter().map(|n| display_name(n).to_string()));
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|(label, rs)| {
            let mut cells = vec![label.clone()];
            cells.extend(
                names
                    .iter()
                    .map(|n| match rs.iter().find(|r| r.name == *n) {
                        Some(r) => format!("{:.1}", 100.0 * r.avg_at_k),
                        None => "-".to_string(),
                    }),
            );
            cells
        })
        .collect();
    render_table(&header, &body)
}

/// A per-benchmark detail table of one model: problems, samples, temperature, avg@k and every
/// pass@k (in %).
pub fn format_details(results: &[BenchmarkResult]) -> String {
    let mut ks: Vec<usize> = results
        .iter()
        .flat_map(|r| r.pass_at_k.keys().copied())
        .collect();
    ks.sort_unstable();
    ks.dedup();
    let mut header: Vec<String> = ["benchmark", "problems", "samples", "temp", "avg@k"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    header.extend(ks.iter().map(|k| format!("pass@{k}")));
    let body: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let mut cells = vec![
                display_name(&r.name).to_string(),
                r.n_problems.to_string(),
                r.samples.to_string(),
                format!("{}", r.temperature),
                format!("{:.1}", 100.0 * r.avg_at_k),
            ];
            cells.extend(ks.iter().map(|k| match r.pass_at_k.get(k) {
                Some(v) => format!("{:.1}", 100.0 * v),
                None => "-".to_string(),
            }));
            cells
        })
        .collect();
    render_table(&header, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, avg: f64) -> BenchmarkResult {
        BenchmarkResult {
            name: name.into(),
            n_problems: 10,
            samples: 1,
            temperature: 0.0,
            avg_at_k: avg,
            pass_at_k: BTreeMap::from([(1, avg)]),
        }
    }

    #[test]
    fn from_correctness_scores() {
        let c = vec![vec![true, false], vec![false, false]];
        let r = BenchmarkResult::from_correctness("amc23", 1.0, &c, &[1, 2]).unwrap();
        assert_eq!((r.n_problems, r.samples), (2, 2));
        assert!((r.avg_at_k - 0.25).abs() < 1e-12);
        assert!((r.pass_at_k[&2] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn protocol_follows_the_paper() {
        assert_eq!(paper_protocol("aime25"), (32, 1.0));
        assert_eq!(paper_protocol("amc23"), (32, 1.0));
        assert_eq!(paper_protocol("math500"), (1, 0.0));
        assert_eq!(paper_protocol("olympiadbench"), (1, 0.0));
    }

    #[test]
    fn table1_layout() {
        let rows = vec![
            (
                "base".to_string(),
                vec![result("math500", 0.634), result("aime24", 0.05)],
            ),
            (
                "TBRM n=1".to_string(),
                vec![result("aime24", 0.132), result("gsm8k_test", 0.8)],
            ),
        ];
        let t = format_table1(&rows);
        let expected = "\
| model / method | AIME24 | MATH500 | gsm8k_test |
|----------------|-------:|--------:|-----------:|
| base           |    5.0 |    63.4 |          - |
| TBRM n=1       |   13.2 |       - |       80.0 |
";
        assert_eq!(t, expected);
    }

    #[test]
    fn details_list_pass_at_k() {
        let mut r = result("aime25", 0.5);
        r.pass_at_k.insert(4, 0.75);
        let t = format_details(&[r]);
        assert!(
            t.starts_with("| benchmark | problems | samples | temp | avg@k | pass@1 | pass@4 |"),
            "{t}"
        );
        assert!(
            t.contains("| AIME25    |       10 |       1 |    0 |  50.0 |   50.0 |   75.0 |"),
            "{t}"
        );
    }

    #[test]
    fn results_json_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("results.json");
        let f = ResultsFile {
            model: "m".into(),
            template: "qwen_math".into(),
            max_new_tokens: 16,
            seed: 0,
            results: vec![result("amc23", 0.25)],
        };
        write_results_json(&p, &f).unwrap();
        assert_eq!(read_results_json(&p).unwrap(), f);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.contains("\"pass_at_k\": {\n        \"1\": 0.25"),
            "{text}"
        );
    }
}
