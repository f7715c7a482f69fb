//! Per-step metrics (one `metrics.jsonl` line each), samples, the end-of-run summary, and the
//! observer trait through which a front end (the CLI's progress bar) follows training. The
//! library itself draws nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One training step, as written to `metrics.jsonl`.
///
/// `loss`, `kl` and `grad_norm` are NaN (written as `null`) on a step skipped for a non-finite
/// loss or gradient; `skipped` says so and `nonfinite_skips` counts all such steps so far.
/// Readers should parse lines as JSON values, since NaN fields come back as `null`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepMetrics {
    /// 1-based: the number of training steps completed, including this one.
    pub step: u64,
    /// Mean reward of the trajectories used in the update (all sources).
    pub reward_mean: f64,
    /// Mean reward of the freshly sampled rollouts of this step (NaN when none were sampled).
    pub rollout_reward_mean: f64,
    pub loss: f64,
    /// Mean over response tokens of `log pi_theta - log pi_ref` (the sample estimate of
    /// KL(pi_theta || pi_ref) on on-policy data); NaN when no reference is computed.
    pub kl: f64,
    /// Mean response length in tokens.
    pub response_len: f64,
    /// Fraction of responses cut at `max_new_tokens`.
    pub truncated_frac: f64,
    pub lr: f64,
    /// Global gradient norm before clipping (of the last optimizer step for PPO).
    pub grad_norm: f64,
    /// Generated tokens per second of rollout time.
    pub tokens_per_s: f64,
    pub rollout_s: f64,
    pub ref_s: f64,
    pub update_s: f64,
    pub step_s: f64,
    /// Trajectories in the update, by source.
    pub trajectories: usize,
    pub replay_trajectories: usize,
    pub offline_trajectories: usize,
    pub nonfinite_skips: u64,
    pub skipped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_accuracy: Option<f64>,
    /// Algorithm-specific metrics (`tbrm/residual_mean`, `actor/pg_clipfrac`, `critic/vf_loss`).
    #[serde(flatten)]
    pub extra: BTreeMap<String, f64>,
}

/// One sampled response, as written to `samples.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub step: u64,
    pub prompt_key: String,
    pub prompt: String,
    pub response: String,
    pub reward: f32,
    pub truncated: bool,
}

/// `summary.json`, written when a run ends (also when interrupted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub algorithm: String,
    /// Held-out accuracy (0..1) before the first step; `null` without a held-out set.
    pub eval_before: Option<f64>,
    /// Held-out accuracy (0..1) after the last step.
    pub eval_after: Option<f64>,
    /// Training steps completed.
    pub steps: u64,
    /// Wall time of this invocation (a resumed run counts from its restart).
    pub wall_seconds: f64,
    pub held_out_problems: usize,
    pub nonfinite_skips: u64,
    pub interrupted: bool,
    /// Mean rollout reward over the last (up to) 10 steps.
    pub final_reward_mean: Option<f64>,
    pub last_checkpoint: Option<PathBuf>,
    /// Processes that trained together (data parallelism; 1 = a single process).
    #[serde(default = "one")]
    pub world_size: usize,
}

fn one() -> usize {
    1
}

/// What a front end hears about a run.
pub trait TrainObserver {
    /// Training is about to run steps `start_step + 1 ..= total_steps`.
    fn on_start(&mut self, _start_step: u64, _total_steps: u64) {}
    fn on_step(&mut self, m: &StepMetrics);
    /// Held-out accuracy after `step` steps (0 = before training).
    fn on_eval(&mut self, _step: u64, _accuracy: f64) {}
    fn on_checkpoint(&mut self, _step: u64, _path: &std::path::Path) {}
    /// Anything else worth telling a person (skipped steps, stopping reasons).
    fn on_message(&mut self, _message: &str) {}
}

/// An observer that ignores everything (tests, embedding).
#[derive(Debug, Default)]
pub struct NoopObserver;

impl TrainObserver for NoopObserver {
    fn on_step(&mut self, _m: &StepMetrics) {}
}

/// An observer that records everything it is told (tests).
#[derive(Debug, Default)]
pub struct RecordingObserver {
    pub steps: Vec<StepMetrics>,
    pub evals: Vec<(u64, f64)>,
    pub messages: Vec<String>,
}

impl TrainObserver for RecordingObserver {
    fn on_step(&mut self, m: &StepMetrics) {
        self.steps.push(m.clone());
    }
    fn on_eval(&mut self, step: u64, accuracy: f64) {
        self.evals.push((step, accuracy));
    }
    fn on_message(&mut self, message: &str) {
        self.messages.push(message.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_line_flattens_extra_and_writes_nan_as_null() {
        let mut extra = BTreeMap::new();
        extra.insert("tbrm/residual_mean".to_string(), 1.5);
        let m = StepMetrics {
            step: 3,
            reward_mean: 0.5,
            rollout_reward_mean: 0.5,
            loss: f64::NAN,
            kl: 0.01,
            response_len: 12.0,
            truncated_frac: 0.0,
            lr: 1e-3,
            grad_norm: f64::NAN,
            tokens_per_s: 100.0,
            rollout_s: 1.0,
            ref_s: 0.1,
            update_s: 0.5,
            step_s: 1.6,
            trajectories: 8,
            replay_trajectories: 0,
            offline_trajectories: 0,
            nonfinite_skips: 1,
            skipped: true,
            eval_accuracy: None,
            extra,
        };
        let v: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert_eq!(v["tbrm/residual_mean"], 1.5);
        assert!(v["loss"].is_null());
        assert!(v.get("eval_accuracy").is_none());
        assert_eq!(v["step"], 3);
    }
}
