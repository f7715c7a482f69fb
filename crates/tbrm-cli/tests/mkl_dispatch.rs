//! The `tbrm` binary's override of MKL's vendor check (src/mkl.rs): it must take effect on AMD
//! CPUs with AVX2, change nothing on Intel, be switched off by `TBRM_MKL_STOCK_DISPATCH=1`, and
//! give the same numbers as the stock dispatch within float tolerance.

mod common;

use std::process::Command;

use serde_json::Value;

fn tbrm(args: &[&str], stock: bool) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tbrm"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("TBRM_MKL_STOCK_DISPATCH", if stock { "1" } else { "0" })
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tbrm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// MKL's code path reported by `tbrm bench train-step` on a very small model.
fn code_path(stock: bool) -> Option<i64> {
    let args = [
        "bench",
        "train-step",
        "--vocab",
        "64",
        "--hidden",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--kv-heads",
        "1",
        "--intermediate",
        "64",
        "--batch",
        "2",
        "--seq-len",
        "8",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--threads",
        "1",
    ];
    let out = tbrm(&args, stock);
    let line: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    line["mkl_code_path"].as_i64()
}

fn cpuinfo_has(word: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.split_whitespace().any(|w| w == word))
        .unwrap_or(false)
}

#[test]
fn override_raises_mkl_code_path_on_amd_only() {
    let (ours, stock) = (code_path(false), code_path(true));
    if !cfg!(target_arch = "x86_64") {
        assert_eq!(
            (ours, stock),
            (None, None),
            "MKL only ships in x86_64 libtorch"
        );
        return;
    }
    let (ours, stock) = (ours.expect("MKL in libtorch"), stock.expect("MKL"));
    if cpuinfo_has("AuthenticAMD") && cpuinfo_has("avx2") {
        assert!(
            ours > stock,
            "override had no effect: code path {ours} vs stock {stock}"
        );
    } else if cpuinfo_has("GenuineIntel") {
        assert_eq!(ours, stock, "on Intel the override must change nothing");
    }
}

#[test]
fn override_scores_like_stock_dispatch() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"prompt\": \"12+30=\", \"response\": \"42\"}\n\
         {\"prompt\": \"7*6=\", \"response\": \"forty-two, i.e. 42\"}\n",
    )
    .unwrap();
    let model = common::tiny_model();
    let score = |stock: bool, name: &str| {
        let output = dir.path().join(name);
        tbrm(
            &[
                "score",
                "--model",
                model.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--output",
                output.to_str().unwrap(),
                "--device",
                "cpu",
            ],
            stock,
        );
        common::read_jsonl(&output)
    };
    let (ours, stock) = (score(false, "ours.jsonl"), score(true, "stock.jsonl"));
    assert_eq!(ours.len(), 2);
    for (a, b) in ours.iter().zip(&stock) {
        assert_eq!(a["response_ids"], b["response_ids"]);
        let (la, lb) = (
            a["token_logprobs"].as_array().unwrap(),
            b["token_logprobs"].as_array().unwrap(),
        );
        assert!(!la.is_empty());
        assert_eq!(la.len(), lb.len());
        for (x, y) in la.iter().zip(lb) {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() < 1e-4, "log-prob {x} vs {y}");
        }
    }
}
