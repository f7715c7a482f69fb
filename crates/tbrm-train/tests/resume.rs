//! Resume after an interruption gives bit-identical weights to an uninterrupted run (issue 3),
//! for TBRM with every off-policy source switched on, and for PPO (critic + two optimizers).
//! The interruption is the Ctrl-C path: the stop flag is set between steps, the trainer saves
//! a checkpoint and returns `interrupted`; `Trainer::resume` continues from it.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::*;
use tbrm_train::config::Algorithm;
use tbrm_train::metrics::{NoopObserver, RecordingObserver};
use tbrm_train::{TrainConfig, Trainer};

fn uninterrupted_and_resumed(cfg: TrainConfig, stop_after: u64, tag: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let task = || task_with(&cfg, Arc::new(DigitFraction));

    let full_dir = tmp.path().join(format!("{tag}-full"));
    let mut full = Trainer::new(cfg.clone(), &full_dir, task()).unwrap();
    let out = full
        .run(&AtomicBool::new(false), &mut NoopObserver)
        .unwrap();
    assert_eq!(out.summary.steps, cfg.train.steps);
    assert!(!out.summary.interrupted);

    let cut_dir = tmp.path().join(format!("{tag}-cut"));
    let stop = AtomicBool::new(false);
    let mut obs = StopAfter {
        after: stop_after,
        stop: &stop,
        inner: RecordingObserver::default(),
    };
    let mut first = Trainer::new(cfg.clone(), &cut_dir, task()).unwrap();
    let out = first.run(&stop, &mut obs).unwrap();
    assert!(
        out.summary.interrupted,
        "the stop flag must interrupt the run"
    );
    assert_eq!(out.summary.steps, stop_after);
    drop(first);

    let mut resumed = Trainer::resume(&cut_dir, |_| {}, Some(task())).unwrap();
    assert_eq!(resumed.step(), stop_after);
    let out = resumed
        .run(&AtomicBool::new(false), &mut NoopObserver)
        .unwrap();
    assert_eq!(out.summary.steps, cfg.train.steps);

    let last = format!("checkpoints/step-{}", cfg.train.steps);
    let a = weights(&full_dir.join(&last));
    let b = weights(&cut_dir.join(&last));
    assert!(
        a == b,
        "{tag}: resumed weights differ from the uninterrupted run"
    );
    let initial = weights(&cfg.model.path);
    assert!(
        a != initial,
        "{tag}: training must have changed the weights"
    );

    // One metrics line per step, the resumed half included, none twice.
    let steps: Vec<u64> = jsonl(&cut_dir.join("metrics.jsonl"))
        .iter()
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=cfg.train.steps).collect::<Vec<_>>());
    // The same rewards were seen: sampling after the resume matched.
    let rewards = |d: &std::path::Path| -> Vec<f64> {
        jsonl(&d.join("metrics.jsonl"))
            .iter()
            .map(|v| v["reward_mean"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(rewards(&full_dir), rewards(&cut_dir));
    if cfg.train.save_rollouts {
        // The saved rollouts are the same trajectories, none lost or written twice.
        let a = std::fs::read_to_string(full_dir.join("rollouts.jsonl")).unwrap();
        let b = std::fs::read_to_string(cut_dir.join("rollouts.jsonl")).unwrap();
        assert!(!a.is_empty());
        assert!(a == b, "{tag}: rollouts.jsonl differs after the resume");
        let lines = jsonl(&full_dir.join("rollouts.jsonl"));
        // Sampled at every step, by the weights of that step.
        let policy_steps: std::collections::BTreeSet<u64> = lines
            .iter()
            .map(|v| v["policy_step"].as_u64().unwrap())
            .collect();
        assert_eq!(
            policy_steps.into_iter().collect::<Vec<_>>(),
            (0..cfg.train.steps).collect::<Vec<_>>()
        );
        // And it is a valid offline file.
        tbrm_data::read_trajectories(&full_dir.join("rollouts.jsonl")).unwrap();
    }
}

#[test]
fn tbrm_with_replay_offline_and_async_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir(tmp.path(), 1);
    let mut cfg = tiny_config(&model);
    cfg.train.steps = 5;
    cfg.sources.replay_capacity = 16;
    cfg.sources.replay_fraction = 0.25;
    cfg.sources.async_staleness = 1;
    cfg.sources.offline_file = Some(offline_file(tmp.path()));
    cfg.sources.offline_fraction = 0.25;
    cfg.train.save_rollouts = true;
    uninterrupted_and_resumed(cfg, 2, "tbrm");
}

#[test]
fn ppo_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir(tmp.path(), 2);
    let mut cfg = tiny_config(&model);
    cfg.algorithm.name = Algorithm::Ppo;
    cfg.algorithm.epochs = 2;
    cfg.algorithm.mini_batches = 2;
    cfg.train.steps = 3;
    uninterrupted_and_resumed(cfg, 1, "ppo");
}
