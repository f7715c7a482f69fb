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
use crate::task::{TaskError, TaskKind};

/// The committed warm-start checkpoint of the built-in task, relative to the repository root
/// (produced by `tbrm sft --task arith --init-config tiny-arith`; recipe in its README).
pub const DEFAULT_MODEL_DIR: &str = "assets/tiny-arith";

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

/// Generates the task's problem sets: `n_train` training and `n_held_out` held-out problems,
/// disjoint by construction (the task splits prompts by hash).
pub fn load(
    kind: TaskKind,
    cfg: &ArithConfig,
    n_train: usize,
    n_held_out: usize,
) -> Result<BuiltinTask, TaskError> {
    match kind {
        TaskKind::Arith => {
            let to_problems = |split: Split, n: usize| -> Result<Vec<Problem>, TaskError> {
                Ok(arith::generate(cfg, split, n, PROBLEM_SEED)?
                    .into_iter()
                    .map(|p| Problem {
                        id: p.prompt.clone(),
                        prompt: PromptInput::Text(p.prompt.clone()),
                        answer: p.answer_text(),
                        source: "builtin:arith".into(),
                        extra: serde_json::Value::Null,
                    })
                    .collect())
            };
            Ok(BuiltinTask {
                train: to_problems(Split::Train, n_train)?,
                held_out: to_problems(Split::HeldOut, n_held_out)?,
                reward: Arc::new(ArithReward),
            })
        }
    }
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
        let t = load(TaskKind::Arith, &ArithConfig::default(), 50, 20).unwrap();
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
    fn task_names() {
        assert_eq!(task_kind("builtin:arith").unwrap(), TaskKind::Arith);
        assert!(task_kind("builtin:chess")
            .unwrap_err()
            .to_string()
            .contains("data.train"));
        assert!(task_kind("data.jsonl").is_err());
    }
}
