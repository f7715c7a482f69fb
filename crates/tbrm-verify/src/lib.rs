//! Math answer verifier: extraction, normalisation and equivalence in the spirit of Hugging Face
//! Math-Verify (github.com/huggingface/Math-Verify, `grader.py`), written here from its documented
//! behaviour, with bounded work and no tch dependency.
//!
//! Pipeline: `extract` finds the final answer in a model response (and in a gold answer written
//! as a whole solution), `normalize` rewrites LaTeX presentation details away (doubled
//! backslashes, decimal commas in plain text, percent words, thousands separators), `parse`
//! builds an expression tree, and `compare` decides equivalence (exact rationals first, then
//! 6-decimal rounding when a decimal literal is involved, then high-precision evaluation,
//! random-point evaluation for expressions with variables). Every verification runs under a [`Limits`] budget: a deadline checked inside the
//! parser, evaluator and comparison loops, caps on input sizes, nesting depth and exact-number
//! sizes. A case that exceeds a limit is answered "not equivalent" with the reason.

mod budget;
mod compare;
mod eval;
mod extract;
pub mod jsonl;
mod normalize;
mod parse;

use std::time::Duration;

use rayon::prelude::*;
use serde::Serialize;

pub use budget::Limits;

/// Why a verification could not reach a judgement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// An input exceeded a size cap.
    #[error("{what} is {len} bytes, over the limit of {max}")]
    TooLong {
        /// Which input ("response", "answer", "gold").
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The time budget ran out.
    #[error("time budget of {0:?} exceeded")]
    Timeout(Duration),
    /// The work budget in steps ran out.
    #[error("work budget of {0} steps exceeded")]
    OutOfSteps(u64),
    /// Brackets or operators nested deeper than the cap.
    #[error("nesting deeper than {0} levels")]
    TooDeep(usize),
    /// An exact number grew over the size cap (e.g. `10^{10^{10}}`).
    #[error("number too large to evaluate: {0}")]
    TooLarge(String),
    /// The answer is not an expression the parser understands.
    #[error("cannot parse `{text}`: {msg}")]
    Parse {
        /// The (normalised) text that failed.
        text: String,
        /// What went wrong.
        msg: String,
    },
}

/// The judgement on one (gold, response) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Whether the extracted answer is equivalent to the gold answer.
    pub correct: bool,
    /// The answer text extracted from the response, if any.
    pub extracted: Option<String>,
    /// Why: which comparison decided, or what failed.
    pub reason: String,
}

/// How a verification ended; [`MathReward`] maps these to reward values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Equivalent to the gold answer.
    Correct,
    /// An answer was found and understood, and it differs from the gold answer.
    Incorrect,
    /// No answer was found, or it could not be parsed, or a limit was hit.
    Unparseable,
}

/// Verifies `response` (a full model response or a bare answer) against `gold` with the default
/// [`Limits`].
pub fn verify(gold: &str, response: &str) -> Verdict {
    verify_with(gold, response, &Limits::default()).0
}

/// Like [`verify`] with explicit limits; also returns the [`Outcome`].
pub fn verify_with(gold: &str, response: &str, limits: &Limits) -> (Verdict, Outcome) {
    compare::verify_pair(gold, response, limits)
}

/// Verifies many pairs on all cores (rayon); the output order matches the input order.
pub fn verify_batch(pairs: &[(String, String)]) -> Vec<Verdict> {
    let limits = Limits::default();
    pairs
        .par_iter()
        .map(|(g, r)| verify_with(g, r, &limits).0)
        .collect()
}

/// Reward values for the trainer: `correct` when the answer is equivalent, `unparseable` when no
/// answer could be extracted or understood, `incorrect` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MathReward {
    /// Reward for an equivalent answer.
    pub correct: f32,
    /// Reward for a wrong answer.
    pub incorrect: f32,
    /// Reward when no answer is found or it cannot be parsed.
    pub unparseable: f32,
}

impl Default for MathReward {
    fn default() -> Self {
        Self {
            correct: 1.0,
            incorrect: 0.0,
            unparseable: 0.0,
        }
    }
}

impl MathReward {
    /// Scores one response against its gold answer.
    pub fn reward(&self, gold: &str, response: &str) -> (f32, Verdict) {
        let (verdict, outcome) = verify_with(gold, response, &Limits::default());
        let r = match outcome {
            Outcome::Correct => self.correct,
            Outcome::Incorrect => self.incorrect,
            Outcome::Unparseable => self.unparseable,
        };
        (r, verdict)
    }
}

/// The answer of a response written in the GSM8K / built-in-task convention (`... #### 18`,
/// `...;#18`): the text after the last unescaped `#`, when the response has no `\boxed{}`
/// (which wins); otherwise the response unchanged. [`verify`] does not apply this itself
/// (Math-Verify does not), the math reward and `tbrm eval`'s judge do, so a model trained on
/// `#`-marked answers is scored the same way in training and evaluation.
pub fn hash_marked_answer(response: &str) -> &str {
    if response.contains("\\boxed") {
        return response;
    }
    match response.rfind('#') {
        Some(i) if !response[..i].ends_with('\\') => match response[i + 1..].trim() {
            "" => response,
            tail => tail,
        },
        _ => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_marker_answers() {
        assert_eq!(hash_marked_answer("7*3=21;21-3=18;#18"), "18");
        assert_eq!(hash_marked_answer("so she pays 72.\n#### 72"), "72");
        assert_eq!(
            hash_marked_answer("count \\# of ways is 4"),
            "count \\# of ways is 4"
        );
        assert_eq!(
            hash_marked_answer("#1 then \\boxed{3}"),
            "#1 then \\boxed{3}"
        );
        assert_eq!(hash_marked_answer("ends with #"), "ends with #");
        assert!(verify("18", hash_marked_answer("7*3=21;21-3=18;#18")).correct);
        assert!(!verify("18", hash_marked_answer("7*3=21;21-3=17;#17")).correct);
    }

    #[test]
    fn reward_values_follow_outcome() {
        let r = MathReward {
            correct: 1.0,
            incorrect: -0.5,
            unparseable: -1.0,
        };
        assert_eq!(r.reward("4", "so \\boxed{4}").0, 1.0);
        assert_eq!(r.reward("4", "so \\boxed{5}").0, -0.5);
        assert_eq!(r.reward("4", "I do not know").0, -1.0);
    }

    #[test]
    fn batch_matches_single() {
        let pairs: Vec<(String, String)> = vec![
            ("\\frac12".into(), "$0.5$".into()),
            ("3".into(), "\\boxed{4}".into()),
            ("(1,2)".into(), "the answer is $(1, 2)$.".into()),
        ];
        let batch = verify_batch(&pairs);
        for ((g, p), v) in pairs.iter().zip(&batch) {
            assert_eq!(&verify(g, p), v);
        }
        assert_eq!(
            batch.iter().map(|v| v.correct).collect::<Vec<_>>(),
            [true, false, true]
        );
    }

    #[test]
    fn verdict_serializes_with_the_three_fields() {
        let v = verify("2", "\\boxed{2}");
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(j["correct"], true);
        assert_eq!(j["extracted"], "2");
        assert!(j["reason"].is_string());
    }
}
