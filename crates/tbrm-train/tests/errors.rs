//! Bad input to the trainer (issue 3, "How it is checked"): a model folder that is not a
//! model, a reward that is NaN, a loss that becomes non-finite (the step is skipped and
//! counted, and training stops after the limit with a clear message).

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::*;
use tbrm_train::metrics::RecordingObserver;
use tbrm_train::{TrainError, Trainer};

#[test]
fn a_folder_that_is_not_a_model_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let not_a_model = tmp.path().join("empty");
    std::fs::create_dir_all(&not_a_model).unwrap();
    let cfg = tiny_config(&not_a_model);
    let task = task_with(&cfg, Arc::new(Constant(0.0)));
    let err = Trainer::new(cfg, &tmp.path().join("run"), task)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("not a usable model folder") && err.contains("empty"),
        "{err}"
    );
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn nan_reward_stops_with_the_problem_named() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(&tiny_model_dir(tmp.path(), 3));
    let task = task_with(&cfg, Arc::new(Constant(f32::NAN)));
    let mut t = Trainer::new(cfg, &tmp.path().join("run"), task).unwrap();
    let err = t
        .run(&AtomicBool::new(false), &mut RecordingObserver::default())
        .unwrap_err();
    assert!(matches!(err, TrainError::Reward(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("not a finite number") && msg.contains("constant"),
        "{msg}"
    );
}

/// A finite reward whose TBRM target r / beta overflows float32: the loss is infinite.
const HUGE: f32 = 3.0e38;

#[test]
fn non_finite_loss_skips_the_step_and_counts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model_dir(tmp.path(), 4);
    let mut cfg = tiny_config(&model);
    cfg.train.steps = 2;
    cfg.train.max_nonfinite_steps = 3;
    let task = task_with(&cfg, Arc::new(Constant(HUGE)));
    let run = tmp.path().join("run");
    let mut obs = RecordingObserver::default();
    let out = Trainer::new(cfg, &run, task)
        .unwrap()
        .run(&AtomicBool::new(false), &mut obs)
        .unwrap();
    assert_eq!(out.summary.nonfinite_skips, 2);
    let lines = jsonl(&run.join("metrics.jsonl"));
    assert_eq!(lines.len(), 2);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["skipped"], true);
        assert_eq!(l["nonfinite_skips"], i as u64 + 1);
        assert!(l["loss"].is_null(), "a skipped step logs no loss: {l}");
    }
    assert!(
        obs.messages.iter().any(|m| m.contains("non-finite")),
        "{:?}",
        obs.messages
    );
    // No update happened: the saved weights are the initial ones.
    assert!(weights(&run.join("checkpoints/step-2")) == weights(&model));
}

#[test]
fn too_many_non_finite_steps_stop_training() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(&tiny_model_dir(tmp.path(), 5));
    cfg.train.steps = 10;
    cfg.train.max_nonfinite_steps = 2;
    let task = task_with(&cfg, Arc::new(Constant(HUGE)));
    let err = Trainer::new(cfg, &tmp.path().join("run"), task)
        .unwrap()
        .run(&AtomicBool::new(false), &mut RecordingObserver::default())
        .unwrap_err();
    assert!(
        matches!(err, TrainError::TooManyNonFinite { count: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("max_nonfinite_steps"), "{err}");
}

#[test]
fn an_existing_run_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(&tiny_model_dir(tmp.path(), 6));
    let run = tmp.path().join("run");
    let _first = Trainer::new(cfg.clone(), &run, task_with(&cfg, Arc::new(Constant(0.0)))).unwrap();
    let err = Trainer::new(cfg.clone(), &run, task_with(&cfg, Arc::new(Constant(0.0))))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--resume"), "{err}");
}
