//! The built-in arithmetic task: multi-step integer expressions solved step by step.
//!
//! A prompt is an expression over single-digit operands with `+`, `-` and `*`, ending in `=`,
//! e.g. `2+7*3-5=`. The target response reduces it one operation at a time, multiplications
//! first (left to right), then additions and subtractions left to right, and ends with the
//! answer after `#`:
//!
//! ```text
//! 2+7*3-5=  ->  7*3=21;2+21=23;23-5=18;#18
//! ```
//!
//! Every step restates its operands, so a correct final answer needs every intermediate value
//! and the order of reduction right; a small model trained briefly gets the easy (two-operation,
//! small-number) problems right and slips on the longer ones, which leaves room for RL.
//!
//! Train and held-out problems are disjoint by construction: a stable hash of the prompt string
//! decides the split ([`split_of`]), so no amount of sampling can put a held-out prompt into the
//! training set.

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::TaskError;

/// Marks the final answer in a response: the reward reads the text after the last one.
pub const ANSWER_MARKER: char = '#';
/// Separates the steps of a response.
pub const STEP_SEPARATOR: char = ';';

/// Shape of the generated problems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArithConfig {
    /// Fewest operations in a problem (at least 1).
    pub min_ops: usize,
    /// Most operations in a problem.
    pub max_ops: usize,
    /// Operands are drawn uniformly from `1..=max_operand` (at most 9: one character each).
    pub max_operand: u32,
    /// Problems whose intermediate or final values leave `-max_abs_value..=max_abs_value` are
    /// redrawn; this keeps every number at two digits, which a tiny model can learn.
    pub max_abs_value: i64,
}

impl Default for ArithConfig {
    fn default() -> Self {
        Self {
            min_ops: 2,
            max_ops: 4,
            max_operand: 9,
            max_abs_value: 99,
        }
    }
}

impl ArithConfig {
    /// Checks the ranges; errors name the key.
    pub fn validate(&self) -> Result<(), TaskError> {
        if self.min_ops == 0 {
            return Err(TaskError::Config("task.min_ops must be at least 1".into()));
        }
        if self.max_ops < self.min_ops {
            return Err(TaskError::Config(format!(
                "task.max_ops ({}) must be >= task.min_ops ({})",
                self.max_ops, self.min_ops
            )));
        }
        if !(1..=9).contains(&self.max_operand) {
            return Err(TaskError::Config(format!(
                "task.max_operand must be in 1..=9 (one character per operand), got {}",
                self.max_operand
            )));
        }
        if self.max_abs_value < 9 {
            return Err(TaskError::Config(format!(
                "task.max_abs_value must be >= 9, got {}",
                self.max_abs_value
            )));
        }
        Ok(())
    }
}

/// Which side of the train / held-out split a prompt is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    HeldOut,
}

/// One in `HELD_OUT_MODULUS` prompts (by hash) is held out.
const HELD_OUT_MODULUS: u64 = 10;

/// 64-bit FNV-1a (Fowler, Noll, Vo): stable across platforms and Rust versions, unlike
/// `std`'s `DefaultHasher`, so the split never moves.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The split a prompt belongs to, decided by the prompt text alone.
pub fn split_of(prompt: &str) -> Split {
    if fnv1a(prompt.as_bytes()).is_multiple_of(HELD_OUT_MODULUS) {
        Split::HeldOut
    } else {
        Split::Train
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
}

impl Op {
    fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
        }
    }

    fn apply(self, a: i64, b: i64) -> i64 {
        match self {
            Op::Add => a + b,
            Op::Sub => a - b,
            Op::Mul => a * b,
        }
    }
}

/// A solved problem: the prompt, the worked steps and the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArithProblem {
    /// The expression followed by `=`, e.g. `2+7*3-5=`.
    pub prompt: String,
    /// One `a op b = c` string per operation, in reduction order.
    pub steps: Vec<String>,
    /// The value of the expression.
    pub answer: i64,
}

impl ArithProblem {
    /// The target response: the steps joined by `;`, then `;#answer`.
    pub fn response(&self) -> String {
        let mut s = self.steps.join(&STEP_SEPARATOR.to_string());
        s.push(STEP_SEPARATOR);
        s.push(ANSWER_MARKER);
        s.push_str(&self.answer.to_string());
        s
    }

    /// The answer as the reward compares it.
    pub fn answer_text(&self) -> String {
        self.answer.to_string()
    }
}

/// Reduces `nums[0] ops[0] nums[1] ...` with precedence, recording each step; `None` when a
/// value leaves `-max_abs..=max_abs`.
fn reduce(mut nums: Vec<i64>, mut ops: Vec<Op>, max_abs: i64) -> Option<(Vec<String>, i64)> {
    let mut steps = Vec::with_capacity(ops.len());
    while !ops.is_empty() {
        // Leftmost multiplication first; otherwise the leftmost operation.
        let i = ops.iter().position(|&o| o == Op::Mul).unwrap_or(0);
        let (a, b, op) = (nums[i], nums[i + 1], ops[i]);
        let c = op.apply(a, b);
        if c.abs() > max_abs {
            return None;
        }
        steps.push(format!("{a}{}{b}={c}", op.symbol()));
        nums[i] = c;
        nums.remove(i + 1);
        ops.remove(i);
    }
    Some((steps, nums[0]))
}

/// Parses and solves a prompt such as `2+7*3-5=` (the trailing `=` is optional).
pub fn solve(prompt: &str, max_abs_value: i64) -> Result<ArithProblem, TaskError> {
    let bad = |why: &str| TaskError::BadProblem {
        prompt: prompt.to_string(),
        why: why.to_string(),
    };
    let expr = prompt.strip_suffix('=').unwrap_or(prompt);
    let mut nums = Vec::new();
    let mut ops = Vec::new();
    let mut current: Option<i64> = None;
    for ch in expr.chars() {
        match ch {
            '0'..='9' => {
                let d = i64::from(ch as u8 - b'0');
                let v = current
                    .unwrap_or(0)
                    .checked_mul(10)
                    .and_then(|v| v.checked_add(d));
                current = Some(v.ok_or_else(|| bad("number too large"))?);
            }
            '+' | '-' | '*' => {
                nums.push(
                    current
                        .take()
                        .ok_or_else(|| bad("operator without a left operand"))?,
                );
                ops.push(match ch {
                    '+' => Op::Add,
                    '-' => Op::Sub,
                    _ => Op::Mul,
                });
            }
            other => return Err(bad(&format!("unexpected character {other:?}"))),
        }
    }
    nums.push(current.ok_or_else(|| bad("missing final operand"))?);
    if ops.is_empty() {
        return Err(bad("no operation"));
    }
    let (steps, answer) = reduce(nums, ops, max_abs_value).ok_or_else(|| {
        bad(&format!(
            "a value leaves -{max_abs_value}..={max_abs_value}"
        ))
    })?;
    Ok(ArithProblem {
        prompt: format!("{expr}="),
        steps,
        answer,
    })
}

/// Draws one problem from the whole problem space (either split).
fn sample_one(rng: &mut ChaCha8Rng, cfg: &ArithConfig) -> ArithProblem {
    loop {
        let n_ops = rng.gen_range(cfg.min_ops..=cfg.max_ops);
        let nums: Vec<i64> = (0..=n_ops)
            .map(|_| i64::from(rng.gen_range(1..=cfg.max_operand)))
            .collect();
        let ops: Vec<Op> = (0..n_ops)
            .map(|_| [Op::Add, Op::Sub, Op::Mul][rng.gen_range(0..3)])
            .collect();
        let mut prompt = String::new();
        for (i, n) in nums.iter().enumerate() {
            if i > 0 {
                prompt.push(ops[i - 1].symbol());
            }
            prompt.push_str(&n.to_string());
        }
        prompt.push('=');
        if let Some((steps, answer)) = reduce(nums, ops, cfg.max_abs_value) {
            return ArithProblem {
                prompt,
                steps,
                answer,
            };
        }
    }
}

/// `n` distinct problems of one split, in a fixed order given by `seed`.
///
/// Errors when the split cannot hold `n` distinct problems under `cfg` (it gives up after
/// drawing many duplicates in a row rather than looping forever).
pub fn generate(
    cfg: &ArithConfig,
    split: Split,
    n: usize,
    seed: u64,
) -> Result<Vec<ArithProblem>, TaskError> {
    cfg.validate()?;
    // Separate streams per split, so asking for more held-out problems never changes the
    // training problems drawn with the same seed.
    let stream = match split {
        Split::Train => 0x7472_6169_6e00_0000,
        Split::HeldOut => 0x6865_6c64_0000_0000,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ stream);
    draw_distinct(
        n,
        split,
        || sample_one(&mut rng, cfg),
        |p| &p.prompt,
        || format!("{split:?} problems with {cfg:?}"),
    )
}

/// Draws `n` problems of `split` with distinct prompts from `sample` (a task's generator
/// shares this: the split is decided by the prompt's hash, [`split_of`]). Gives up with an
/// error naming `what()` after many misses in a row rather than looping forever.
pub(crate) fn draw_distinct<P>(
    n: usize,
    split: Split,
    mut sample: impl FnMut() -> P,
    prompt: impl Fn(&P) -> &str,
    what: impl Fn() -> String,
) -> Result<Vec<P>, TaskError> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    let mut misses = 0usize;
    while out.len() < n {
        let p = sample();
        if split_of(prompt(&p)) != split || !seen.insert(prompt(&p).to_string()) {
            misses += 1;
            if misses > 1000 + 100 * n {
                return Err(TaskError::Config(format!(
                    "could not draw {n} distinct {} (got {})",
                    what(),
                    out.len()
                )));
            }
            continue;
        }
        out.push(p);
    }
    Ok(out)
}

/// The final answer of a response: the text after the last `#`, trimmed; `None` without one.
pub fn extract_answer(response: &str) -> Option<&str> {
    response
        .rfind(ANSWER_MARKER)
        .map(|i| response[i + ANSWER_MARKER.len_utf8()..].trim())
}

/// 1.0 iff the response's final answer equals `answer` exactly, else 0.0.
pub fn score(response: &str, answer: &str) -> f32 {
    match extract_answer(response) {
        Some(a) if a == answer.trim() => 1.0,
        _ => 0.0,
    }
}

/// Fraction of responses whose final answer matches (exact match), 0 for an empty list.
pub fn exact_match_accuracy<S: AsRef<str>, A: AsRef<str>>(responses: &[S], answers: &[A]) -> f64 {
    if responses.is_empty() {
        return 0.0;
    }
    let hits: f64 = responses
        .iter()
        .zip(answers)
        .map(|(r, a)| f64::from(score(r.as_ref(), a.as_ref())))
        .sum();
    hits / responses.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_with_precedence_step_by_step() {
        let p = solve("2+7*3-5=", 99).unwrap();
        assert_eq!(p.steps, vec!["7*3=21", "2+21=23", "23-5=18"]);
        assert_eq!(p.answer, 18);
        assert_eq!(p.response(), "7*3=21;2+21=23;23-5=18;#18");

        let p = solve("2*3+4*5-1", 99).unwrap();
        assert_eq!(p.prompt, "2*3+4*5-1=");
        assert_eq!(p.response(), "2*3=6;4*5=20;6+20=26;26-1=25;#25");

        // Left to right for + and -, negatives written with a leading minus.
        let p = solve("3-9-4+1=", 99).unwrap();
        assert_eq!(p.response(), "3-9=-6;-6-4=-10;-10+1=-9;#-9");
    }

    #[test]
    fn solve_rejects_bad_prompts_with_the_reason() {
        for (bad, why) in [
            ("", "missing final operand"),
            ("3+", "missing final operand"),
            ("+3", "left operand"),
            ("3x4=", "unexpected character"),
            ("7=", "no operation"),
            ("9*9*9=", "leaves"),
        ] {
            let e = solve(bad, 99).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn generated_problems_are_consistent_and_in_range() {
        let cfg = ArithConfig::default();
        let ps = generate(&cfg, Split::Train, 2000, 7).unwrap();
        let mut ops_seen = [0usize; 5];
        for p in &ps {
            let again = solve(&p.prompt, cfg.max_abs_value).unwrap();
            assert_eq!(&again, p);
            assert!(p.steps.len() >= cfg.min_ops && p.steps.len() <= cfg.max_ops);
            assert!(p.answer.abs() <= cfg.max_abs_value);
            assert_eq!(split_of(&p.prompt), Split::Train);
            ops_seen[p.steps.len()] += 1;
        }
        // Every length in 2..=4 occurs often (the sampler is uniform before rejection).
        for (k, &c) in ops_seen.iter().enumerate().take(5).skip(2) {
            assert!(c > 300, "{k} ops: {c}");
        }
    }

    #[test]
    fn generation_is_seeded_and_distinct() {
        let cfg = ArithConfig::default();
        let a = generate(&cfg, Split::HeldOut, 300, 1).unwrap();
        let b = generate(&cfg, Split::HeldOut, 300, 1).unwrap();
        let c = generate(&cfg, Split::HeldOut, 300, 2).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let set: HashSet<_> = a.iter().map(|p| &p.prompt).collect();
        assert_eq!(set.len(), a.len());
    }

    #[test]
    fn impossible_requests_error_instead_of_looping() {
        let cfg = ArithConfig {
            min_ops: 1,
            max_ops: 1,
            max_operand: 2,
            max_abs_value: 99,
        };
        // Only 12 one-operation problems exist over {1,2}.
        let e = generate(&cfg, Split::Train, 50, 0).unwrap_err();
        assert!(e.to_string().contains("distinct"), "{e}");
    }

    #[test]
    fn config_errors_name_the_key() {
        let bad = ArithConfig {
            max_operand: 12,
            ..ArithConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("task.max_operand"));
        let bad = ArithConfig {
            min_ops: 3,
            max_ops: 2,
            ..ArithConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("task.max_ops"));
    }

    #[test]
    fn reward_reads_the_text_after_the_last_marker() {
        assert_eq!(score("7*3=21;2+21=23;23-5=18;#18", "18"), 1.0);
        assert_eq!(score("#18", "18"), 1.0);
        assert_eq!(score("7*3=21;#17", "18"), 0.0);
        assert_eq!(score("7*3=21;2+21=23;23-5=18", "18"), 0.0, "no marker");
        assert_eq!(score("#1#18", "18"), 1.0, "last marker wins");
        assert_eq!(score("#18;", "18"), 0.0, "trailing junk is wrong");
        assert_eq!(score("#-9", "-9"), 1.0);
        assert_eq!(score("#", "18"), 0.0);
        let acc = exact_match_accuracy(&["#1", "#2", "#3", "x"], &["1", "2", "4", "4"]);
        assert!((acc - 0.5).abs() < 1e-12);
        assert_eq!(exact_match_accuracy::<&str, &str>(&[], &[]), 0.0);
    }

    #[test]
    fn split_is_stable_and_about_one_in_ten() {
        // Pinned values: the split must never move between versions.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let cfg = ArithConfig::default();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let held = (0..5000)
            .filter(|_| split_of(&sample_one(&mut rng, &cfg).prompt) == Split::HeldOut)
            .count();
        assert!((350..650).contains(&held), "{held} of 5000 held out");
    }
}
