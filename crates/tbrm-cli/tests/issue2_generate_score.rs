//! Issue 2: `tbrm generate` and `tbrm score` end to end on a tiny random model folder, and
//! their bad-input errors (non-zero exit, a message naming the file, no panic).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tbrm_model::{CausalLm, ModelConfig, ModelType};
use tch::{Device, Kind};

fn tok_resources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tbrm-model/tests/resources")
}

/// A Qwen2-shaped random model saved with the tiny Qwen tokenizer of tbrm-model's tests.
fn model_dir(root: &Path, tokenizer: &str) -> PathBuf {
    let dir = root.join(format!("model-{tokenizer}"));
    let mut cfg = ModelConfig::tiny(ModelType::Qwen2);
    cfg.vocab_size = 400;
    cfg.initializer_range = 0.2;
    CausalLm::from_config(cfg, Device::Cpu, Kind::Float, 4)
        .unwrap()
        .save(&dir)
        .unwrap();
    for entry in std::fs::read_dir(tok_resources().join(tokenizer)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

fn tbrm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tbrm"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "tbrm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Fails with exit code 1 and an `error:` line (not a panic, which exits 101).
fn err(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a clean error, got: {stderr}"
    );
    assert!(
        stderr.contains("error:") && !stderr.contains("panicked"),
        "{stderr}"
    );
    stderr
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn generate_then_score_agree_on_log_probs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_dir(tmp.path(), "tok_qwen");
    let d = dir.to_str().unwrap();
    let gen = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            d,
            "--prompt",
            "What is 2+3?",
            "--device",
            "cpu",
        ];
        args.extend_from_slice(extra);
        json_lines(&ok(tbrm(&args)))
    };
    let sampled = gen(&[
        "--max-new-tokens",
        "6",
        "--seed",
        "3",
        "--top-k",
        "40",
        "--json",
        "-n",
        "2",
    ]);
    assert_eq!(sampled.len(), 2);
    assert_eq!(
        sampled,
        gen(&[
            "--max-new-tokens",
            "6",
            "--seed",
            "3",
            "--top-k",
            "40",
            "--json",
            "-n",
            "2"
        ])
    );
    let g = &sampled[0];
    let response: Vec<u64> = serde_json::from_value(g["response_ids"].clone()).unwrap();
    assert!(!response.is_empty() && response.len() <= 6);

    let chat = gen(&[
        "--chat",
        "--max-new-tokens",
        "2",
        "--temperature",
        "0",
        "--json",
    ]);
    let chat_prompt: Vec<u64> = serde_json::from_value(chat[0]["prompt_ids"].clone()).unwrap();
    assert_eq!(chat_prompt[0], 1, "chat prompts start with <|im_start|>");
    assert!(chat_prompt.len() > g["prompt_ids"].as_array().unwrap().len());

    let plain = ok(tbrm(&[
        "generate",
        "--model",
        d,
        "--prompt",
        "hi",
        "--max-new-tokens",
        "3",
        "--device",
        "cpu",
    ]));
    assert_eq!(plain.lines().count(), 1);

    // Score the sampled response by ids and a text pair by strings.
    let input = tmp.path().join("in.jsonl");
    let line1 = serde_json::json!({"id": "a", "prompt_ids": g["prompt_ids"], "response_ids": g["response_ids"]});
    let line2 = serde_json::json!({"prompt": "What is 2+3?", "response": " The answer is 5."});
    std::fs::write(&input, format!("{line1}\n\n{line2}\n")).unwrap();
    let output = tmp.path().join("out.jsonl");
    ok(tbrm(&[
        "score",
        "--model",
        d,
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--device",
        "cpu",
        "--dtype",
        "f32",
    ]));
    let rows = json_lines(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], "a");
    assert_eq!(rows[0]["response_ids"], g["response_ids"]);
    let scored: Vec<f64> = serde_json::from_value(rows[0]["token_logprobs"].clone()).unwrap();
    let sampled_lp: Vec<f64> = serde_json::from_value(g["logprobs"].clone()).unwrap();
    assert_eq!(scored.len(), sampled_lp.len());
    for (a, b) in scored.iter().zip(&sampled_lp) {
        assert!((a - b).abs() < 1e-4, "score {a} vs generate {b}");
    }
    let sum = rows[0]["sum_logprob"].as_f64().unwrap();
    assert!((sum - scored.iter().sum::<f64>()).abs() < 1e-4);
    assert!(rows[0]["first_logit"].as_f64().unwrap().is_finite());
    assert_eq!(rows[1]["prompt"], "What is 2+3?");
    let n = rows[1]["response_ids"].as_array().unwrap().len();
    assert!(n > 0);
    assert_eq!(rows[1]["token_logprobs"].as_array().unwrap().len(), n);
}

#[test]
fn bad_inputs_exit_with_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-model");
    let stderr = err(tbrm(&[
        "generate",
        "--model",
        missing.to_str().unwrap(),
        "--prompt",
        "x",
        "--device",
        "cpu",
    ]));
    assert!(stderr.contains("no-such-model"), "{stderr}");

    // No chat template but --chat.
    let plain = model_dir(tmp.path(), "tok_plain");
    let stderr = err(tbrm(&[
        "generate",
        "--model",
        plain.to_str().unwrap(),
        "--prompt",
        "x",
        "--chat",
        "--device",
        "cpu",
    ]));
    assert!(
        stderr.contains("tokenizer_config.json") && stderr.contains("chat"),
        "{stderr}"
    );

    // Truncated weights.
    let dir = model_dir(tmp.path(), "tok_qwen");
    let d = dir.to_str().unwrap();
    let st = dir.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let stderr = err(tbrm(&[
        "generate", "--model", d, "--prompt", "x", "--device", "cpu",
    ]));
    assert!(stderr.contains("model.safetensors"), "{stderr}");
    std::fs::write(&st, &bytes).unwrap();

    // Malformed score input lines name file and line.
    let output = tmp.path().join("out.jsonl");
    for (content, want) in [
        (
            "{\"prompt\": \"a\", \"response\": \"b\"}\n{not json\n",
            "in.jsonl:2: invalid JSON",
        ),
        ("{\"prompt\": \"a\"}\n", "in.jsonl:1: missing `response`"),
        (
            "{\"prompt_ids\": [1], \"response_ids\": [99999]}\n",
            "in.jsonl:1: `response_ids` holds 99999",
        ),
        (
            "{\"prompt_ids\": [], \"response_ids\": [3]}\n",
            "in.jsonl:1: the prompt is empty",
        ),
        ("[1, 2]\n", "in.jsonl:1: expected a JSON object"),
    ] {
        let input = tmp.path().join("in.jsonl");
        std::fs::write(&input, content).unwrap();
        let stderr = err(tbrm(&[
            "score",
            "--model",
            d,
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--device",
            "cpu",
        ]));
        assert!(stderr.contains(want), "want {want:?} in {stderr}");
    }
    let stderr = err(tbrm(&[
        "score",
        "--model",
        d,
        "--input",
        "/nonexistent/in.jsonl",
        "--output",
        output.to_str().unwrap(),
    ]));
    assert!(stderr.contains("/nonexistent/in.jsonl"), "{stderr}");
}
