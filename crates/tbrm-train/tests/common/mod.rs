//! Fixtures shared by the trainer's end-to-end tests: a tiny random model folder with the
//! arithmetic task's tokenizer, a small fast config, and toy rewards.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tbrm_data::{Problem, Trajectory, TrajectorySource};
use tbrm_model::{CausalLm, ModelConfig, ModelType};
use tbrm_train::config::DeviceChoice;
use tbrm_train::metrics::RecordingObserver;
use tbrm_train::{Reward, RewardError, StepMetrics, TaskData, TrainConfig, TrainObserver};

/// A random tiny Qwen2 model (hidden 64, 2 layers) with the arithmetic tokenizer, saved as a
/// Hugging Face folder under `dir/model`.
pub fn tiny_model_dir(dir: &Path, seed: i64) -> PathBuf {
    let model_dir = dir.join("model");
    tbrm_train::task::tokenizer::write_files(&model_dir).unwrap();
    let mut cfg = ModelConfig::tiny(ModelType::Qwen2);
    cfg.vocab_size = tbrm_train::task::tokenizer::vocab_size() as i64;
    let m = CausalLm::from_config(cfg, tch::Device::Cpu, tch::Kind::Float, seed).unwrap();
    m.save(&model_dir).unwrap();
    model_dir
}

/// A committed config (its TOML text) starting from a committed warm start under `assets/`
/// (e.g. "tiny-arith"), with mid-run evaluation and checkpoints off, for the learning tests.
pub fn warm_start_config(config_toml: &str, asset: &str) -> TrainConfig {
    let mut cfg = TrainConfig::from_toml_str(config_toml).unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets")
        .join(asset);
    assert!(
        model.join("model.safetensors").is_file(),
        "the warm-start checkpoint {} is missing (regenerate it with the recipe in its README)",
        model.display()
    );
    cfg.model.path = model;
    cfg.train.eval_every = 0;
    cfg.train.save_every = 0;
    cfg
}

/// A config that runs a step in well under a second on the tiny model.
pub fn tiny_config(model_dir: &Path) -> TrainConfig {
    let mut cfg = TrainConfig::default();
    cfg.model.path = model_dir.to_path_buf();
    cfg.model.device = DeviceChoice::Cpu;
    cfg.data.builtin_train_size = 64;
    cfg.data.held_out_size = 8;
    cfg.rollout.n = 2;
    cfg.rollout.prompt_batch = 4;
    cfg.rollout.max_new_tokens = 12;
    cfg.optim.lr = 1e-3;
    cfg.optim.micro_batch = 3;
    cfg.train.steps = 4;
    cfg.train.save_every = 0;
    cfg.train.eval_every = 0;
    cfg
}

/// A dense toy reward a random model can earn: the fraction of digits in the response.
pub struct DigitFraction;

impl Reward for DigitFraction {
    fn name(&self) -> &str {
        "digit_fraction"
    }
    fn score(&self, _p: &Problem, text: &str) -> Result<f32, RewardError> {
        let n = text.chars().count().max(1);
        Ok(text.chars().filter(|c| c.is_ascii_digit()).count() as f32 / n as f32)
    }
}

/// A reward that always returns the same value.
pub struct Constant(pub f32);

impl Reward for Constant {
    fn name(&self) -> &str {
        "constant"
    }
    fn score(&self, _p: &Problem, _t: &str) -> Result<f32, RewardError> {
        Ok(self.0)
    }
}

/// The built-in task's problems with another reward.
pub fn task_with(cfg: &TrainConfig, reward: Arc<dyn Reward>) -> TaskData {
    let t = TaskData::from_config(cfg).unwrap();
    TaskData {
        train: t.train,
        held_out: t.held_out,
        reward,
    }
}

/// Sets the stop flag once `after` steps have completed (a Ctrl-C between steps).
pub struct StopAfter<'a> {
    pub after: u64,
    pub stop: &'a AtomicBool,
    pub inner: RecordingObserver,
}

impl TrainObserver for StopAfter<'_> {
    fn on_step(&mut self, m: &StepMetrics) {
        self.inner.on_step(m);
        if m.step >= self.after {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
    fn on_message(&mut self, message: &str) {
        self.inner.on_message(message);
    }
}

/// The bytes of a checkpoint's weights.
pub fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

/// Parsed lines of a JSONL file.
pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// An offline trajectory file: worked solutions of a few problems, tokenised with the task
/// tokenizer, as if another policy had sampled them.
pub fn offline_file(dir: &Path) -> PathBuf {
    let tok = tbrm_train::task::tokenizer::build().unwrap();
    let ids = |s: &str| tok.encode(s, false).unwrap().get_ids().to_vec();
    let trajectories: Vec<Trajectory> = ["1+2*3=", "4-2+5=", "9*2-7="]
        .iter()
        .enumerate()
        .map(|(i, prompt)| {
            let solved = tbrm_train::task::arith::solve(prompt, 99).unwrap();
            let mut response = ids(&solved.response());
            response.push(tbrm_train::task::tokenizer::EOS_ID);
            Trajectory {
                prompt_key: format!("offline-{i}"),
                prompt_ids: ids(prompt),
                behaviour_logprobs: vec![-0.5; response.len()],
                response_ids: response,
                reward: 1.0,
                truncated: false,
                source: TrajectorySource::OnPolicy,
                policy_step: 0,
            }
        })
        .collect();
    let path = dir.join("offline.jsonl");
    tbrm_data::write_trajectories(&path, &trajectories).unwrap();
    path
}
