//! The baselines as the paper ran them (issue 14), end to end on the tiny model: GRPO/PPO's
//! old log-probs recomputed by the training forward (ratio exactly 1 on the first step of
//! on-policy data), and several optimizer steps per training step for any algorithm
//! (`algorithm.epochs x algorithm.mini_batches`), TBRM keeping one by default.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{task_with, tiny_config, tiny_model_dir, DigitFraction};
use tbrm_train::config::{Algorithm, OldLogprobs};
use tbrm_train::metrics::RecordingObserver;
use tbrm_train::{StepMetrics, TrainConfig, Trainer};

fn run(cfg: TrainConfig) -> Vec<StepMetrics> {
    let tmp = tempfile::tempdir().unwrap();
    let task = task_with(&cfg, Arc::new(DigitFraction));
    let mut t = Trainer::new(cfg, &tmp.path().join("run"), task).unwrap();
    let mut obs = RecordingObserver::default();
    t.run(&AtomicBool::new(false), &mut obs).unwrap();
    assert!(!obs.steps.is_empty());
    obs.steps
}

fn metric(m: &StepMetrics, key: &str) -> f64 {
    *m.extra
        .get(key)
        .unwrap_or_else(|| panic!("step {}: no {key} in {:?}", m.step, m.extra.keys()))
}

#[test]
fn recomputed_old_logprobs_start_every_step_at_ratio_one() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir(tmp.path(), 7);
    for (algo, n, mini_batches) in [
        (Algorithm::Grpo, 2, 1),
        (Algorithm::Grpo, 2, 4),
        (Algorithm::Ppo, 1, 2),
    ] {
        let mut cfg = tiny_config(&model);
        cfg.algorithm.name = algo;
        cfg.rollout.n = n;
        cfg.algorithm.mini_batches = mini_batches;
        cfg.train.steps = 3;
        assert_eq!(
            cfg.algorithm.old_logprobs,
            OldLogprobs::Recompute,
            "the default"
        );
        let what = format!("{algo:?} n={n} mini_batches={mini_batches}");
        for m in run(cfg) {
            // Scored in the first step's own pass shapes (0 on the CPU, bit for bit).
            let dev = metric(&m, "actor/ratio_dev_first_step");
            assert!(
                dev < 1e-5,
                "{what} step {}: max |ratio - 1| = {dev}",
                m.step
            );
            // The sampler's log-probs come from the decode path: close, not identical.
            let diff = metric(&m, "old_logprobs/behaviour_abs_diff_max");
            assert!(diff < 1e-3, "{what} step {}: {diff}", m.step);
            assert!(metric(&m, "old_logprobs/behaviour_abs_diff_mean") <= diff);
            // One optimizer step per mini-batch.
            assert_eq!(
                metric(&m, "perf/optimizer_steps"),
                mini_batches as f64,
                "{what}"
            );
        }
    }
}

#[test]
fn behaviour_old_logprobs_are_the_stored_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir(tmp.path(), 8);
    let mut cfg = tiny_config(&model);
    cfg.algorithm.name = Algorithm::Grpo;
    cfg.algorithm.old_logprobs = OldLogprobs::Behaviour;
    cfg.train.steps = 2;
    for m in run(cfg) {
        // No scoring pass; the ratio is against the decode path's log-probs, within rounding.
        assert!(!m.extra.contains_key("old_logprobs/behaviour_abs_diff_max"));
        let dev = metric(&m, "actor/ratio_dev_first_step");
        assert!(dev.is_finite() && dev < 1e-3, "step {}: {dev}", m.step);
    }
}

#[test]
fn optimizer_steps_per_training_step_follow_epochs_and_mini_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir(tmp.path(), 9);
    for (algo, epochs, mini_batches) in [
        (Algorithm::Tbrm, 1, 1),
        (Algorithm::Grpo, 1, 4),
        (Algorithm::Grpo, 2, 2),
        (Algorithm::Tbrm, 1, 2),
    ] {
        let mut cfg = tiny_config(&model);
        cfg.algorithm.name = algo;
        cfg.algorithm.epochs = epochs;
        cfg.algorithm.mini_batches = mini_batches;
        cfg.train.steps = 2;
        let what = format!("{algo:?} {epochs}x{mini_batches}");
        for m in run(cfg) {
            assert!(!m.skipped, "{what}");
            assert_eq!(
                metric(&m, "perf/optimizer_steps"),
                (epochs * mini_batches) as f64,
                "{what}"
            );
            // Every mini-batch is a pass of its own (micro_batch 3 may cut more).
            assert!(metric(&m, "perf/update_passes") >= (epochs * mini_batches) as f64);
            if algo == Algorithm::Tbrm {
                // TBRM needs no old log-probs: no scoring pass, no ratio.
                assert!(
                    !m.extra.contains_key("actor/ratio_dev_first_step"),
                    "{what}"
                );
                assert!(!m.extra.contains_key("perf/old_logprobs_s"), "{what}");
            }
        }
    }
}

#[test]
fn old_key_names_are_still_read() {
    let cfg =
        TrainConfig::from_toml_str("[algorithm]\nppo_epochs = 3\nppo_mini_batches = 2\n").unwrap();
    assert_eq!((cfg.algorithm.epochs, cfg.algorithm.mini_batches), (3, 2));
    assert!(!cfg.to_toml_string().contains("ppo_epochs"));
    let err = TrainConfig::from_toml_str("[algorithm]\nmini_batchez = 2\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("algorithm.mini_batchez"), "{err}");
    let err = TrainConfig::from_toml_str("[algorithm]\nold_logprobs = \"stale\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("algorithm.old_logprobs"), "{err}");
}
