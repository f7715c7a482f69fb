//! Built-in synthetic tasks: problems the project generates itself, their tokenizer and their
//! reward, so that `tbrm sft` and `tbrm train` run end to end with no downloads.
//!
//! Two tasks exist: `arith` (step-by-step arithmetic, [`arith`]) and `countdown` (reach a
//! target from a few numbers, [`countdown`]); the task name in a config (`builtin:<name>`) or
//! `tbrm sft --task <name>` picks one through [`TaskKind`].

pub mod arith;
pub mod countdown;
pub mod tokenizer;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Errors of the built-in tasks.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("invalid task config: {0}")]
    Config(String),
    #[error("bad problem {prompt:?}: {why}")]
    BadProblem { prompt: String, why: String },
    #[error("unknown task {0:?} (known: arith, countdown)")]
    UnknownTask(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The built-in tasks by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Arith,
    Countdown,
}

impl TaskKind {
    /// Every task, in the order error messages list them.
    pub const ALL: [TaskKind; 2] = [TaskKind::Arith, TaskKind::Countdown];

    /// The name in `builtin:<name>` and `--task <name>`.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Arith => "arith",
            TaskKind::Countdown => "countdown",
        }
    }

    /// The task's tokenizer alphabet ([`tokenizer::build_for`]).
    pub fn chars(self) -> &'static str {
        match self {
            TaskKind::Arith => tokenizer::CHARS,
            TaskKind::Countdown => tokenizer::COUNTDOWN_CHARS,
        }
    }

    /// 1.0 iff `response` solves the problem in `prompt` whose answer text is `answer`.
    pub fn score(self, prompt: &str, answer: &str, response: &str) -> f32 {
        match self {
            TaskKind::Arith => arith::score(response, answer),
            TaskKind::Countdown => countdown::score(prompt, response),
        }
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for TaskKind {
    type Err = TaskError;
    fn from_str(s: &str) -> Result<Self, TaskError> {
        match s {
            "arith" => Ok(TaskKind::Arith),
            "countdown" => Ok(TaskKind::Countdown),
            other => Err(TaskError::UnknownTask(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_unknown_names_list_every_task() {
        for k in TaskKind::ALL {
            assert_eq!(k.name().parse::<TaskKind>().unwrap(), k);
        }
        let e = "chess".parse::<TaskKind>().unwrap_err().to_string();
        assert!(
            e.contains("\"chess\"") && e.contains("arith, countdown"),
            "{e}"
        );
    }
}
