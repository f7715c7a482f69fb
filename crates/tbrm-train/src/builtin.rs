//! The built-in task as the trainer sees it: `data.train = "builtin:<task>"` becomes a list of
//! training [`Problem`]s, a held-out list, and a [`Reward`].
//!
//! The task itself (problem generator, answer check, tokenizer) lives in [`crate::task`]; this
//! file only adapts it to the trainer's seam (tbrm-data `Problem` + the `Reward` trait), so the
//! trainer treats the built-in task and a math dataset the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tbrm_data::{Problem, PromptInput};

use crate::config::ConfigError;
use crate::reward::{Reward, RewardError};
use crate::task::arith::{self, ArithConfig, Split};
use crate::task::countdown::{self, CountdownConfig};
use crate::task::{TaskError, TaskKind};

/// The committed warm-start checkpoint of the built-in task, relative to the repository root
/// (produced by `tbrm sft --task arith --init-config tiny-arith`; recipe in its README).
pub const DEFAULT_MODEL_DIR: &str = "assets/tiny-arith";

/// The committed warm start of the Countdown task (`tbrm sft --task countdown --init-config
/// tiny-countdown`; recipe in its README), used by `configs/countdown.toml`.
pub const COUNTDOWN_MODEL_DIR: &str = "assets/tiny-countdown";

/// Seed of the built-in problem sets. Fixed, not the run seed: runs with different seeds are
/// evaluated on the same held-out problems, so their accuracies compare.
pub const PROBLEM_SEED: u64 = 0;

/// The task named by `builtin:<name>`.
pub fn task_kind(train: &str) -> Result<TaskKind, ConfigError> {
    let name = train
        .strip_prefix("builtin:")
        .ok_or_else(|| ConfigError::Invalid {
            key: "data.train".into(),
            message: format!("{train:?} is not a built-in task (expected `builtin:<name>`)"),
        })?;
    name.parse::<TaskKind>().map_err(|e| ConfigError::Invalid {
        key: "data.train".into(),
        message: e.to_string(),
    })
}

/// Problems and reward of a built-in task.
pub struct BuiltinTask {
    pub train: Vec<Problem>,
    pub held_out: Vec<Problem>,
    pub reward: Arc<dyn Reward>,
}

/// Shapes of the built-in tasks' problems (`[task]` and `[countdown]` of a train config).
#[derive(Debug, Clone, Copy)]
pub struct TaskShapes<'a> {
    pub arith: &'a ArithConfig,
    pub countdown: &'a CountdownConfig,
}

fn problem(kind: TaskKind, prompt: String, answer: String) -> Problem {
    Problem {
        id: prompt.clone(),
        prompt: PromptInput::Text(prompt),
        answer,
        source: format!("builtin:{kind}"),
        extra: serde_json::Value::Null,
    }
}

/// Generates the task's problem sets: `n_train` training and `n_held_out` held-out problems,
/// disjoint by construction (the task splits prompts by hash).
pub fn load(
    kind: TaskKind,
    shapes: TaskShapes<'_>,
    n_train: usize,
    n_held_out: usize,
) -> Result<BuiltinTask, TaskError> {
    let problems = |split: Split, n: usize| -> Result<Vec<Problem>, TaskError> {
        Ok(match kind {
            TaskKind::Arith => arith::generate(shapes.arith, split, n, PROBLEM_SEED)?
                .into_iter()
                .map(|p| problem(kind, p.prompt.clone(), p.answer_text()))
                .collect(),
            TaskKind::Countdown => countdown::generate(shapes.countdown, split, n, PROBLEM_SEED)?
                .into_iter()
                .map(|p| problem(kind, p.prompt.clone(), p.answer_text()))
                .collect(),
        })
    };
    let reward: Arc<dyn Reward> = match kind {
        TaskKind::Arith => Arc::new(ArithReward),
        TaskKind::Countdown => Arc::new(CountdownReward),
    };
    Ok(BuiltinTask {
        train: problems(Split::Train, n_train)?,
        held_out: problems(Split::HeldOut, n_held_out)?,
        reward,
    })
}

/// 1 when the response's final answer (after `#`) equals the gold answer exactly, else 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct ArithReward;

impl Reward for ArithReward {
    fn name(&self) -> &str {
        "arith"
    }

    fn score(&self, problem: &Problem, response_text: &str) -> Result<f32, RewardError> {
        Ok(arith::score(response_text, &problem.answer))
    }
}

/// 1 when the response is a valid chain of operations over the prompt's numbers that ends at
/// its target (`task::countdown::check`), else 0. Reads the numbers and target from the prompt,
/// so any correct chain scores, not only the one the problem was generated from.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountdownReward;

impl Reward for CountdownReward {
    fn name(&self) -> &str {
        "countdown"
    }

    fn score(&self, problem: &Problem, response_text: &str) -> Result<f32, RewardError> {
        Ok(countdown::score(problem.prompt.question(), response_text))
    }
}

/// Resolves a model path from config: as given when it exists (relative to the working
/// directory), else relative to the repository root, so the committed default checkpoint is
/// found when `tbrm` runs from a sub-folder.
pub fn resolve_path(p: &Path) -> PathBuf {
    if p.is_absolute() || p.exists() {
        return p.to_path_buf();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidate = root.join(p);
    if candidate.exists() {
        candidate
    } else {
        p.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_sets_are_disjoint_and_scored_by_the_task() {
        let t = load(TaskKind::Arith, shapes(), 50, 20).unwrap();
        assert_eq!((t.train.len(), t.held_out.len()), (50, 20));
        for h in &t.held_out {
            assert!(
                t.train.iter().all(|p| p.id != h.id),
                "{} is in both sets",
                h.id
            );
        }
        let p = &t.train[0];
        let solved = arith::solve(p.prompt.question(), 99).unwrap();
        assert_eq!(t.reward.score(p, &solved.response()).unwrap(), 1.0);
        assert_eq!(t.reward.score(p, "1+1=2;#12345").unwrap(), 0.0);
        assert!(t.reward.is_correct(p, &solved.response()).unwrap());
    }

    #[test]
    fn countdown_sets_are_disjoint_and_any_valid_chain_scores() {
        let t = load(TaskKind::Countdown, shapes(), 200, 50).unwrap();
        assert_eq!((t.train.len(), t.held_out.len()), (200, 50));
        for h in &t.held_out {
            assert!(t.train.iter().all(|p| p.id != h.id), "{}", h.id);
            assert_eq!(h.source, "builtin:countdown");
        }
        // Two different chains both reach 2,3,4 -> 20 and 24; wrong endings score 0.
        let p = problem(TaskKind::Countdown, "2,3,4:20=".into(), "20".into());
        assert_eq!(t.reward.name(), "countdown");
        assert_eq!(t.reward.score(&p, "3+2=5;5*4=20").unwrap(), 1.0);
        assert_eq!(t.reward.score(&p, "4*3=12;12+2=14").unwrap(), 0.0);
        assert_eq!(t.reward.score(&p, "4*2=8;8+3=11").unwrap(), 0.0);
        let q = problem(TaskKind::Countdown, "2,3,4:24=".into(), "24".into());
        assert_eq!(t.reward.score(&q, "4*3=12;12*2=24").unwrap(), 1.0);
        assert_eq!(t.reward.score(&q, "2*3=6;6*4=24").unwrap(), 1.0);
    }

    fn shapes() -> TaskShapes<'static> {
        static A: std::sync::OnceLock<ArithConfig> = std::sync::OnceLock::new();
        static C: std::sync::OnceLock<CountdownConfig> = std::sync::OnceLock::new();
        TaskShapes {
            arith: A.get_or_init(ArithConfig::default),
            countdown: C.get_or_init(CountdownConfig::default),
        }
    }

    #[test]
    fn task_names() {
        assert_eq!(task_kind("builtin:arith").unwrap(), TaskKind::Arith);
        assert_eq!(task_kind("builtin:countdown").unwrap(), TaskKind::Countdown);
        let e = task_kind("builtin:chess").unwrap_err().to_string();
        assert!(e.contains("arith, countdown"), "{e}");
        assert!(task_kind("builtin:chess")
            .unwrap_err()
            .to_string()
            .contains("data.train"));
        assert!(task_kind("data.jsonl").is_err());
    }
}
