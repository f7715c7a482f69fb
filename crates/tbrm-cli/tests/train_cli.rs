//! `tbrm train` end to end, through the binary: the run folder a user gets (config, metrics,
//! samples, HF checkpoint, summary), the math-verifier reward on a dataset file, and clear
//! errors for bad settings. Short runs on the committed warm start `assets/tiny-arith`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use common::{read_jsonl, tiny_model, workspace_root};
use serde_json::Value;

fn tbrm_train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tbrm"))
        .arg("train")
        .args(["--threads", "2"])
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("running tbrm")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tbrm train failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "tbrm train should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn summary(run: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn builtin_run_writes_a_complete_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let stdout = ok(&tbrm_train(&[
        "--steps",
        "3",
        "--set",
        "rollout.prompt_batch=8",
        "--set",
        "data.held_out_size=16",
        "--set",
        "train.save_every=2",
        "--output",
        run.to_str().unwrap(),
    ]));
    assert!(stdout.contains("held-out accuracy: before"), "{stdout}");

    let s = summary(&run);
    assert_eq!(s["steps"], 3);
    assert_eq!(s["algorithm"], "tbrm");
    for key in ["eval_before", "eval_after"] {
        let v = s[key].as_f64().unwrap_or_else(|| panic!("{key} in {s}"));
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    assert!(s["wall_seconds"].as_f64().unwrap() > 0.0);

    let metrics = read_jsonl(&run.join("metrics.jsonl"));
    assert_eq!(metrics.len(), 3);
    for (i, m) in metrics.iter().enumerate() {
        assert_eq!(m["step"], i as u64 + 1);
        for key in [
            "reward_mean",
            "loss",
            "kl",
            "response_len",
            "lr",
            "grad_norm",
            "tokens_per_s",
            "rollout_s",
            "ref_s",
            "update_s",
        ] {
            assert!(m[key].is_number(), "step {}: no {key} in {m}", i + 1);
        }
    }
    let samples = read_jsonl(&run.join("samples.jsonl"));
    assert!(!samples.is_empty());
    assert!(samples[0]["prompt"].as_str().unwrap().ends_with('='));

    // The resolved config reads back and records the overrides.
    let cfg: toml::Table = toml::from_str(&fs::read_to_string(run.join("config.toml")).unwrap())
        .expect("config.toml parses");
    assert_eq!(cfg["rollout"]["prompt_batch"].as_integer(), Some(8));

    // Checkpoints are HF folders `tbrm generate` can load.
    let last = PathBuf::from(s["last_checkpoint"].as_str().unwrap());
    assert!(last.join("config.json").is_file() && last.join("model.safetensors").is_file());
    let gen = Command::new(env!("CARGO_BIN_EXE_tbrm"))
        .args(["generate", "--model", last.to_str().unwrap()])
        .args([
            "--prompt",
            "2+3*4=",
            "--max-new-tokens",
            "24",
            "--device",
            "cpu",
        ])
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    assert!(String::from_utf8_lossy(&gen.stdout).contains('#'));
}

#[test]
fn dataset_file_uses_the_math_verifier_reward() {
    let tmp = tempfile::tempdir().unwrap();
    // Easy one-operation problems, which the warm start mostly solves: its responses end in
    // `#answer`, scored by tbrm-verify against the `answer` field.
    let rows: String = (1..=9)
        .flat_map(|a| (1..=3).map(move |b| (a, b)))
        .map(|(a, b)| {
            serde_json::json!({ "problem": format!("{a}+{b}="), "answer": (a + b).to_string() })
                .to_string()
                + "\n"
        })
        .collect();
    let data = tmp.path().join("train.jsonl");
    fs::write(&data, &rows).unwrap();
    let run = tmp.path().join("run");
    let model = tiny_model();
    ok(&tbrm_train(&[
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--held-out",
        data.to_str().unwrap(),
        "--steps",
        "2",
        "--device",
        "cpu",
        "--set",
        "model.dtype=f32",
        "--set",
        "data.template=plain",
        "--set",
        "rollout.prompt_batch=8",
        "--set",
        "rollout.max_new_tokens=24",
        "--set",
        "optim.micro_batch=8",
        "--set",
        "data.held_out_size=10",
        "--output",
        run.to_str().unwrap(),
    ]));
    let cfg = fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(cfg.contains("beta = 0.002"), "math config's beta:\n{cfg}");
    let metrics = read_jsonl(&run.join("metrics.jsonl"));
    let rewarded: f64 = metrics
        .iter()
        .map(|m| m["reward_mean"].as_f64().unwrap())
        .sum();
    assert!(
        rewarded > 0.0,
        "the verifier never rewarded a response: {metrics:?}"
    );
    let s = summary(&run);
    assert!(s["eval_before"].as_f64().unwrap() > 0.0, "{s}");
}

#[test]
fn bad_settings_are_clear_errors() {
    let err = failed(&tbrm_train(&["--set", "optim.lrr=1e-4"]));
    assert!(err.contains("lrr"), "{err}");
    let err = failed(&tbrm_train(&["--algorithm", "dpo"]));
    assert!(err.contains("dpo"), "{err}");
    let err = failed(&tbrm_train(&[
        "--algorithm",
        "grpo",
        "--rollouts-per-prompt",
        "1",
    ]));
    assert!(err.contains("GRPO") || err.contains("grpo"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let err = failed(&tbrm_train(&[
        "--model",
        tmp.path().to_str().unwrap(),
        "--steps",
        "1",
    ]));
    assert!(err.contains("config.json"), "{err}");
}
