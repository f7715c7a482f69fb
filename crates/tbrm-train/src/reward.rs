//! Rewards behind one trait: the trainer asks a [`Reward`] for the outcome reward r(tau) of a
//! whole response (TBRM and the baselines all use one scalar per trajectory) and, for
//! evaluation, whether the response is correct.
//!
//! Implementations: [`MathVerifyReward`] (tbrm-verify's Math-Verify style checker, for math
//! datasets) here, and the built-in synthetic task's reward in `task/`. A reward that is not a
//! finite number is an error ([`checked_score`]), never a silent zero: one NaN reward would
//! turn TBRM's residual, and with it every weight, into NaN.

use tbrm_data::Problem;

/// Why a reward could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    /// The reward function returned NaN or an infinity.
    #[error("reward for problem {problem_id:?} is not a finite number ({value}); the reward function `{reward}` is broken")]
    NonFinite {
        reward: String,
        problem_id: String,
        value: f32,
    },
    /// The problem cannot be scored by this reward (e.g. a gold answer the task does not parse).
    #[error("reward `{reward}` cannot score problem {problem_id:?}: {message}")]
    Invalid {
        reward: String,
        problem_id: String,
        message: String,
    },
}

/// An outcome reward: one number per (problem, response).
///
/// `Send + Sync` so that scoring can run on several threads.
pub trait Reward: Send + Sync {
    /// A short name for messages and metrics (`math_verify`, `arith`).
    fn name(&self) -> &str;

    /// The reward of `response_text` (the decoded response, special tokens skipped) for
    /// `problem`. Must be finite.
    fn score(&self, problem: &Problem, response_text: &str) -> Result<f32, RewardError>;

    /// Whether the response counts as correct in evaluation (held-out accuracy). The default
    /// treats a reward of at least 1 as correct, which fits 0/1 rewards.
    fn is_correct(&self, problem: &Problem, response_text: &str) -> Result<bool, RewardError> {
        Ok(checked_score(self, problem, response_text)? >= 1.0)
    }
}

/// [`Reward::score`] with the finiteness check every caller needs.
pub fn checked_score<R: Reward + ?Sized>(
    reward: &R,
    problem: &Problem,
    response_text: &str,
) -> Result<f32, RewardError> {
    let value = reward.score(problem, response_text)?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(RewardError::NonFinite {
            reward: reward.name().to_string(),
            problem_id: problem.id.clone(),
            value,
        })
    }
}

/// The math reward: the response's final answer (`\boxed{}` etc.) checked against
/// `problem.answer` by tbrm-verify; the reward values per outcome are configurable.
#[derive(Debug, Clone, Copy, Default)]
pub struct MathVerifyReward {
    pub values: tbrm_verify::MathReward,
}

impl MathVerifyReward {
    pub fn new(values: tbrm_verify::MathReward) -> Self {
        Self { values }
    }
}

impl Reward for MathVerifyReward {
    fn name(&self) -> &str {
        "math_verify"
    }

    fn score(&self, problem: &Problem, response_text: &str) -> Result<f32, RewardError> {
        let answer = tbrm_verify::hash_marked_answer(response_text);
        Ok(self.values.reward(&problem.answer, answer).0)
    }

    fn is_correct(&self, problem: &Problem, response_text: &str) -> Result<bool, RewardError> {
        let answer = tbrm_verify::hash_marked_answer(response_text);
        Ok(tbrm_verify::verify(&problem.answer, answer).correct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tbrm_data::PromptInput;

    pub(crate) fn problem(id: &str, answer: &str) -> Problem {
        Problem {
            id: id.into(),
            prompt: PromptInput::Text("q".into()),
            answer: answer.into(),
            source: "test".into(),
            extra: serde_json::Value::Null,
        }
    }

    struct Const(f32);
    impl Reward for Const {
        fn name(&self) -> &str {
            "const"
        }
        fn score(&self, _: &Problem, _: &str) -> Result<f32, RewardError> {
            Ok(self.0)
        }
    }

    #[test]
    fn non_finite_reward_is_an_error_naming_problem_and_reward() {
        let p = problem("row-7", "1");
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let err = checked_score(&Const(bad), &p, "x").unwrap_err().to_string();
            assert!(err.contains("row-7") && err.contains("const"), "{err}");
            assert!(Const(bad).is_correct(&p, "x").is_err());
        }
        assert_eq!(checked_score(&Const(0.5), &p, "x").unwrap(), 0.5);
    }

    #[test]
    fn default_correctness_threshold_is_one() {
        let p = problem("a", "1");
        assert!(Const(1.0).is_correct(&p, "").unwrap());
        assert!(!Const(0.99).is_correct(&p, "").unwrap());
    }

    #[test]
    fn math_reward_checks_boxed_answer() {
        let r = MathVerifyReward::default();
        let p = problem("m", "\\frac{1}{2}");
        assert_eq!(r.score(&p, "so the answer is \\boxed{0.5}").unwrap(), 1.0);
        assert_eq!(r.score(&p, "\\boxed{3}").unwrap(), 0.0);
        assert!(r.is_correct(&p, "\\boxed{\\frac12}").unwrap());
        assert!(!r.is_correct(&p, "no idea").unwrap());
    }
}
