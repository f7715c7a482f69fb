//! Parity with Hugging Face transformers (psyche's `compare-hf-psyche.sh` idea): the fixtures
//! in `tests/fixtures/<name>/` are tiny random Qwen2 (tied), Llama 3 (llama3 RoPE scaling),
//! Qwen3 and sharded Qwen2 checkpoints written by `scripts/make_fixtures.py` together with
//! transformers' own logits, log-probs and greedy continuations.

use std::path::PathBuf;

use serde_json::Value;
use tbrm_model::{CausalLm, KvCache};
use tch::{Device, Kind, Tensor};

const FIXTURES: [&str; 4] = ["qwen2", "llama", "qwen3", "qwen2_sharded"];
const TOL: f64 = 1e-4;

fn fixture(name: &str) -> (CausalLm, Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let model = CausalLm::load(&dir, Device::Cpu, Kind::Float)
        .unwrap_or_else(|e| panic!("loading fixture {name}: {e}"));
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    (model, serde_json::from_str(&text).unwrap())
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// A JSON list of equal-length int lists as a (B, T) int64 tensor.
fn matrix(v: &Value) -> Tensor {
    let rows: Vec<Vec<i64>> = v.as_array().unwrap().iter().map(ints).collect();
    let flat: Vec<i64> = rows.concat();
    Tensor::from_slice(&flat).view([rows.len() as i64, -1])
}

/// log p(ids[t+1] | ids[..=t]) for every t: (B, T-1).
fn token_logprobs(logits: &Tensor, ids: &Tensor) -> Tensor {
    let t = ids.size()[1];
    logits
        .narrow(1, 0, t - 1)
        .log_softmax(-1, Kind::Float)
        .gather(-1, &ids.narrow(1, 1, t - 1).unsqueeze(-1), false)
        .squeeze_dim(-1)
}

fn max_abs_diff(a: &Tensor, b: &[f32]) -> f64 {
    let b = Tensor::from_slice(b).view(a.size().as_slice());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn sharded_fixture_really_is_sharded() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen2_sharded");
    assert!(dir.join("model.safetensors.index.json").is_file());
    assert!(!dir.join("model.safetensors").exists());
}

#[test]
fn logits_and_token_logprobs_match_transformers() {
    let _g = tch::no_grad_guard();
    for name in FIXTURES {
        let (model, exp) = fixture(name);
        let prompts = exp["prompts"].as_array().unwrap();
        let mut all_logits = Vec::new();
        for (i, p) in prompts.iter().enumerate() {
            let ids = Tensor::from_slice(&ints(p)).unsqueeze(0);
            let mask = ids.ones_like();
            let logits = model.forward(&ids, &mask, None);
            let lp = token_logprobs(&logits, &ids).squeeze_dim(0);
            let d = max_abs_diff(&lp, &floats(&exp["token_logprobs"][i]));
            assert!(d < TOL, "{name} prompt {i}: log-probs differ by {d}");
            all_logits.push(logits);
        }
        for e in exp["logits"].as_array().unwrap() {
            let (row, pos) = (e["prompt"].as_u64().unwrap(), e["pos"].as_i64().unwrap());
            let got = all_logits[row as usize].get(0).get(pos);
            let d = max_abs_diff(&got, &floats(&e["logits"]));
            assert!(
                d < TOL,
                "{name} prompt {row} pos {pos}: logits differ by {d}"
            );
        }
    }
}

#[test]
fn left_padded_batch_matches_transformers() {
    let _g = tch::no_grad_guard();
    for name in FIXTURES {
        let (model, exp) = fixture(name);
        let ids = matrix(&exp["padded"]["input_ids"]);
        let mask = matrix(&exp["padded"]["attention_mask"]);
        let lp = token_logprobs(&model.forward(&ids, &mask, None), &ids);
        let want: Vec<Vec<f32>> = exp["padded"]["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let want = Tensor::from_slice(&want.concat()).view(lp.size().as_slice());
        // Only positions whose context is real (transformers' outputs at padding are arbitrary).
        let real = mask.narrow(1, 0, lp.size()[1]).to_kind(Kind::Bool);
        let d = (lp - want)
            .abs()
            .masked_select(&real)
            .max()
            .double_value(&[]);
        assert!(d < TOL, "{name}: padded-batch log-probs differ by {d}");
    }
}

#[test]
fn greedy_continuations_match_transformers_generate() {
    let _g = tch::no_grad_guard();
    for name in FIXTURES {
        let (model, exp) = fixture(name);
        let g = &exp["greedy"];
        let mut ids = matrix(&g["input_ids"]);
        let mut mask = matrix(&g["attention_mask"]);
        let steps = g["max_new_tokens"].as_i64().unwrap();
        let mut cache = KvCache::new(model.config().num_hidden_layers as usize);
        let mut generated = Vec::new();
        for _ in 0..steps {
            let logits = model.forward(&ids, &mask, Some(&mut cache));
            let next = logits.select(1, -1).argmax(-1, true); // (B, 1)
            generated.push(next.shallow_clone());
            mask = Tensor::cat(&[&mask, &next.ones_like()], 1);
            ids = next;
        }
        let got = Tensor::cat(&generated, 1);
        let want = matrix(&g["new_tokens"]);
        assert_eq!(
            got, want,
            "{name}: greedy continuation differs from transformers"
        );
    }
}
