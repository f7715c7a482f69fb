//! End-to-end runs of `tbrm eval` (the built binary) on the built-in tiny arithmetic model
//! `assets/tiny-arith/` and a 10-problem benchmark file written by the test: results.json and
//! the per-sample file must exist and agree with each other.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

mod common;

use common::{read_jsonl, tiny_model};
use serde_json::Value;

/// (problem, answer) pairs of the built-in arithmetic task's format (`tbrm_train::task::arith`).
const PROBLEMS: [(&str, &str); 10] = [
    ("2+3=", "5"),
    ("7*3=", "21"),
    ("9-4+1=", "6"),
    ("2+7*3-5=", "18"),
    ("8-9=", "-1"),
    ("4*4-7=", "9"),
    ("6+6+6=", "18"),
    ("3*2*5=", "30"),
    ("9-2*4=", "1"),
    ("1+8-3*2=", "3"),
];

fn write_benchmark(dir: &Path) {
    let text: String = PROBLEMS
        .iter()
        .enumerate()
        .map(|(i, (q, a))| {
            format!("{{\"id\":\"arith-{i}\",\"problem\":\"{q}\",\"answer\":\"{a}\"}}\n")
        })
        .collect();
    fs::write(dir.join("arith10.jsonl"), text).unwrap();
}

fn tbrm_eval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tbrm"))
        .arg("eval")
        .args(args)
        .env_remove("TBRM_DATA_DIR")
        .output()
        .expect("running tbrm")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tbrm eval failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// pass@k = 1 - C(n-c,k)/C(n,k), written out for the check (small n).
fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    let binom = |n: usize, k: usize| -> f64 {
        if k > n {
            return 0.0;
        }
        (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
    };
    1.0 - binom(n - c, k) / binom(n, k)
}

/// Checks results.json against the samples file; returns per-problem correct counts.
fn check_outputs(out_dir: &Path, samples: usize) -> Vec<usize> {
    let results: Value =
        serde_json::from_str(&fs::read_to_string(out_dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["template"], "plain");
    let r = &results["results"][0];
    assert_eq!(r["name"], "arith10");
    assert_eq!(r["n_problems"], 10);
    assert_eq!(r["samples"], samples as u64);
    let avg = r["avg_at_k"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&avg), "avg@k {avg}");

    let rows = read_jsonl(&out_dir.join("samples-arith10.jsonl"));
    assert_eq!(rows.len(), 10 * samples);
    let mut correct = vec![0usize; 10];
    for (k, row) in rows.iter().enumerate() {
        let (p, s) = (k / samples, k % samples);
        assert_eq!(row["problem_index"], p as u64);
        assert_eq!(row["sample"], s as u64);
        assert_eq!(row["id"], format!("arith-{p}"));
        assert_eq!(row["problem"], PROBLEMS[p].0);
        assert_eq!(row["gold"], PROBLEMS[p].1);
        assert!(row["response"].is_string());
        // The arith judge: exact match of the text after the last `#`.
        let resp = row["response"].as_str().unwrap();
        let expected = resp
            .rfind('#')
            .map(|i| resp[i + 1..].trim() == PROBLEMS[p].1)
            .unwrap_or(false);
        assert_eq!(row["correct"].as_bool().unwrap(), expected, "{row}");
        if row["correct"].as_bool().unwrap() {
            assert_eq!(row["extracted"], PROBLEMS[p].1);
            correct[p] += 1;
        }
    }
    let mean = correct
        .iter()
        .map(|&c| c as f64 / samples as f64)
        .sum::<f64>()
        / 10.0;
    assert!(
        (avg - mean).abs() < 1e-9,
        "avg@k {avg} vs {mean} from the samples file"
    );
    let pass: BTreeMap<String, f64> = serde_json::from_value(r["pass_at_k"].clone()).unwrap();
    let mut ks: Vec<usize> = pass.keys().map(|k| k.parse().unwrap()).collect();
    ks.sort_unstable();
    let want: Vec<usize> = [1, 2, 4, 8, 16, 32]
        .into_iter()
        .filter(|&k| k <= samples)
        .collect();
    assert_eq!(ks, want);
    for k in ks {
        let expected = correct
            .iter()
            .map(|&c| pass_at_k(samples, c, k))
            .sum::<f64>()
            / 10.0;
        assert!((pass[&k.to_string()] - expected).abs() < 1e-9, "pass@{k}");
    }
    correct
}

#[test]
fn sampled_eval_writes_consistent_results_and_samples() {
    let model = tiny_model();
    let tmp = tempfile::tempdir().unwrap();
    write_benchmark(tmp.path());
    let out_dir = tmp.path().join("out");
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--benchmarks",
        "arith10",
        "--data-dir",
        tmp.path().to_str().unwrap(),
        "--template",
        "plain",
        "--judge",
        "arith",
        "--samples",
        "4",
        "--temperature",
        "1.0",
        "--max-new-tokens",
        "48",
        "--device",
        "cpu",
        "--seed",
        "3",
        "--output",
        out_dir.to_str().unwrap(),
    ];
    let stdout = ok(&tbrm_eval(&args));
    assert!(stdout.contains("| model / method | arith10 |"), "{stdout}");
    assert!(stdout.contains("| tiny-arith"), "{stdout}");
    assert!(stdout.contains("pass@4"), "{stdout}");
    check_outputs(&out_dir, 4);
    let saved: Value =
        serde_json::from_str(&fs::read_to_string(out_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["eval"]["seed"], 3);
    assert_eq!(saved["judge"], "arith");

    // Same seed, same responses.
    let first = fs::read_to_string(out_dir.join("samples-arith10.jsonl")).unwrap();
    let again_dir = tmp.path().join("again");
    let mut again = args.to_vec();
    let n = again.len();
    again[n - 1] = again_dir.to_str().unwrap();
    ok(&tbrm_eval(&again));
    assert_eq!(
        fs::read_to_string(again_dir.join("samples-arith10.jsonl")).unwrap(),
        first
    );
}

#[test]
fn greedy_default_for_unknown_benchmarks_and_the_model_solves_some() {
    let model = tiny_model();
    let tmp = tempfile::tempdir().unwrap();
    write_benchmark(tmp.path());
    let out_dir = tmp.path().join("out");
    ok(&tbrm_eval(&[
        "--model",
        model.to_str().unwrap(),
        "--benchmarks",
        tmp.path().join("arith10.jsonl").to_str().unwrap(),
        "--template",
        "plain",
        "--judge",
        "arith",
        "--max-new-tokens",
        "48",
        "--device",
        "cpu",
        "--output",
        out_dir.to_str().unwrap(),
    ]));
    let correct = check_outputs(&out_dir, 1);
    let results: Value =
        serde_json::from_str(&fs::read_to_string(out_dir.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["results"][0]["temperature"], 0.0);
    // The warm-started model gets the easy problems right; a broken pipeline (prompt
    // rendering, decoding, judging) would score zero.
    assert!(
        correct.iter().sum::<usize>() >= 2,
        "greedy correct per problem: {correct:?}"
    );
}

#[test]
fn unknown_benchmark_names_the_file_and_the_known_names() {
    let model = tiny_model();
    let tmp = tempfile::tempdir().unwrap();
    write_benchmark(tmp.path());
    let out = tbrm_eval(&[
        "--model",
        model.to_str().unwrap(),
        "--benchmarks",
        "arith10,aime42",
        "--data-dir",
        tmp.path().to_str().unwrap(),
        "--template",
        "plain",
        "--device",
        "cpu",
        "--output",
        tmp.path().join("out").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("benchmark `aime42` not found"), "{err}");
    assert!(
        err.contains(&tmp.path().join("aime42.jsonl").display().to_string()),
        "{err}"
    );
    assert!(err.contains("aime24") && err.contains("arith10"), "{err}");
    assert!(
        !tmp.path().join("out/results.json").exists(),
        "nothing is generated before all names resolve"
    );
}

#[test]
fn chat_template_on_a_model_without_one_is_a_clear_error() {
    let model = tiny_model();
    let tmp = tempfile::tempdir().unwrap();
    write_benchmark(tmp.path());
    let out = tbrm_eval(&[
        "--model",
        model.to_str().unwrap(),
        "--benchmarks",
        "arith10",
        "--data-dir",
        tmp.path().to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--template qwen_math needs a chat template")
            && err.contains("--template plain"),
        "{err}"
    );
}
