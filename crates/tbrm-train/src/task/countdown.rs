//! The built-in Countdown task: reach a target from a few small numbers with `+ - *`.
//!
//! A prompt lists the numbers, then the target after `:`, and ends in `=`, e.g. `3,7,9:24=`.
//! A response is a chain of operations, each combining two available numbers into a new one
//! that becomes available in turn, separated by `;`; the last result must be the target:
//!
//! ```text
//! 8,3,2:22=  ->  8*3=24;24-2=22
//! ```
//!
//! Rules (checked by [`score`], strictly: anything else scores 0): every step is `A op B=C`
//! with `op` one of `+ - *` and every number written in canonical decimal (no sign, no leading
//! zero); `A` and `B` must be available (each given number can be used at most once, and each
//! result at most once after it is made); `C` must equal `A op B` and be non-negative; the last
//! step's `C` must equal the target. Numbers may be left unused. There is no division (every
//! value stays an integer without an exact-division rule).
//!
//! Unlike the arithmetic task, which has one right derivation, this is a search: which two
//! numbers to combine first and with which operation must be chosen so the chain can still
//! reach the target, and most problems have several solutions. The demonstrations show one
//! (the chain the problem was generated from, larger operand first), so RL can find others.
//!
//! Train and held-out problems are disjoint by the same stable prompt hash as the arithmetic
//! task ([`arith::split_of`]).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::arith::{self, Split};
use super::TaskError;

/// Separates the numbers in a prompt.
pub const NUMBER_SEPARATOR: char = ',';
/// Precedes the target in a prompt.
pub const TARGET_MARKER: char = ':';
/// Separates the steps of a response.
pub const STEP_SEPARATOR: char = ';';

/// Shape of the generated problems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CountdownConfig {
    /// Fewest numbers in a problem (at least 2).
    pub min_numbers: usize,
    /// Most numbers in a problem (at most 6).
    pub max_numbers: usize,
    /// Numbers are drawn uniformly from `1..=max_number` (at most 99).
    pub max_number: u32,
    /// Generating chains whose intermediate or final values exceed this are redrawn; the
    /// target is therefore in `0..=max_value`.
    pub max_value: u64,
}

impl Default for CountdownConfig {
    fn default() -> Self {
        Self {
            min_numbers: 3,
            max_numbers: 4,
            max_number: 9,
            max_value: 99,
        }
    }
}

impl CountdownConfig {
    /// Checks the ranges; errors name the key.
    pub fn validate(&self) -> Result<(), TaskError> {
        if !(2..=6).contains(&self.min_numbers) {
            return Err(TaskError::Config(format!(
                "countdown.min_numbers must be in 2..=6, got {}",
                self.min_numbers
            )));
        }
        if !(self.min_numbers..=6).contains(&self.max_numbers) {
            return Err(TaskError::Config(format!(
                "countdown.max_numbers must be in countdown.min_numbers ({})..=6, got {}",
                self.min_numbers, self.max_numbers
            )));
        }
        if !(1..=99).contains(&self.max_number) {
            return Err(TaskError::Config(format!(
                "countdown.max_number must be in 1..=99, got {}",
                self.max_number
            )));
        }
        if !(u64::from(self.max_number)..=999_999).contains(&self.max_value) {
            return Err(TaskError::Config(format!(
                "countdown.max_value must be in countdown.max_number ({})..=999999, got {}",
                self.max_number, self.max_value
            )));
        }
        Ok(())
    }
}

/// A generated problem with the chain it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountdownProblem {
    /// `n1,n2,...:target=`.
    pub prompt: String,
    /// The numbers, in prompt order.
    pub numbers: Vec<u64>,
    pub target: u64,
    /// One `A op B=C` string per operation of the generating chain.
    pub steps: Vec<String>,
}

impl CountdownProblem {
    /// The demonstration response: the generating chain's steps joined by `;`.
    pub fn response(&self) -> String {
        self.steps.join(&STEP_SEPARATOR.to_string())
    }

    /// The target as text (the `answer` field of the trainer's problem).
    pub fn answer_text(&self) -> String {
        self.target.to_string()
    }
}

/// The prompt for `numbers` and `target`.
pub fn prompt_of(numbers: &[u64], target: u64) -> String {
    let list: Vec<String> = numbers.iter().map(u64::to_string).collect();
    format!(
        "{}{TARGET_MARKER}{target}=",
        list.join(&NUMBER_SEPARATOR.to_string())
    )
}

/// A canonical non-negative decimal (`0`, or digits without a leading zero), at most 9 digits.
fn parse_number(s: &str) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.len() <= 9
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if canonical {
        s.parse().ok()
    } else {
        None
    }
}

/// Parses a prompt `n1,n2,...:target=` (the trailing `=` is optional) into numbers and target.
pub fn parse_prompt(prompt: &str) -> Result<(Vec<u64>, u64), TaskError> {
    let bad = |why: &str| TaskError::BadProblem {
        prompt: prompt.to_string(),
        why: why.to_string(),
    };
    let body = prompt.strip_suffix('=').unwrap_or(prompt);
    let (list, target) = body
        .split_once(TARGET_MARKER)
        .ok_or_else(|| bad("no `:` before the target"))?;
    let target = parse_number(target).ok_or_else(|| bad("the target is not a number"))?;
    let numbers = list
        .split(NUMBER_SEPARATOR)
        .map(parse_number)
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| bad("a listed number is not a number"))?;
    if numbers.len() < 2 {
        return Err(bad("fewer than two numbers"));
    }
    Ok((numbers, target))
}

/// Why a response scores 0 (for tests and diagnostics); `Ok(())` when it reaches the target.
pub fn check(numbers: &[u64], target: u64, response: &str) -> Result<(), String> {
    let response = response.trim();
    if response.is_empty() {
        return Err("empty response".into());
    }
    let mut pool: Vec<u64> = numbers.to_vec();
    let mut last = None;
    for step in response.split(STEP_SEPARATOR) {
        let (lhs, c) = step
            .split_once('=')
            .ok_or_else(|| format!("step {step:?} has no `=`"))?;
        let c = parse_number(c).ok_or_else(|| format!("step {step:?}: bad result"))?;
        let at = lhs
            .char_indices()
            .skip(1)
            .find(|&(_, ch)| matches!(ch, '+' | '-' | '*'))
            .map(|(i, _)| i)
            .ok_or_else(|| format!("step {step:?} has no operation"))?;
        let (a, op, b) = (&lhs[..at], &lhs[at..at + 1], &lhs[at + 1..]);
        let a = parse_number(a).ok_or_else(|| format!("step {step:?}: bad left operand"))?;
        let b = parse_number(b).ok_or_else(|| format!("step {step:?}: bad right operand"))?;
        let value = match op {
            "+" => a.checked_add(b),
            "*" => a.checked_mul(b),
            _ => a.checked_sub(b),
        };
        if value != Some(c) {
            return Err(format!("step {step:?} is false (or negative)"));
        }
        for x in [a, b] {
            let i = pool
                .iter()
                .position(|&p| p == x)
                .ok_or_else(|| format!("step {step:?} uses {x}, which is not available"))?;
            pool.swap_remove(i);
        }
        pool.push(c);
        last = Some(c);
    }
    match last {
        Some(c) if c == target => Ok(()),
        Some(c) => Err(format!("ends at {c}, not the target {target}")),
        None => Err("no step".into()),
    }
}

/// 1.0 iff `response` is a valid chain for the problem in `prompt` that ends at its target,
/// else 0.0 (also when the prompt itself does not parse).
pub fn score(prompt: &str, response: &str) -> f32 {
    match parse_prompt(prompt) {
        Ok((numbers, target)) if check(&numbers, target, response).is_ok() => 1.0,
        _ => 0.0,
    }
}

/// Combines two numbers, larger operand first; `None` when the result leaves `0..=max_value`.
fn step(a: u64, b: u64, op: char, max_value: u64) -> Option<(String, u64)> {
    let (a, b) = if a >= b { (a, b) } else { (b, a) };
    let c = match op {
        '+' => a + b,
        '-' => a - b,
        _ => a * b,
    };
    (c <= max_value).then(|| (format!("{a}{op}{b}={c}"), c))
}

/// Draws one problem from the whole problem space (either split): random numbers, then a random
/// chain that combines all of them; its last value is the target.
fn sample_one(rng: &mut ChaCha8Rng, cfg: &CountdownConfig) -> CountdownProblem {
    'draw: loop {
        let k = rng.gen_range(cfg.min_numbers..=cfg.max_numbers);
        let numbers: Vec<u64> = (0..k)
            .map(|_| u64::from(rng.gen_range(1..=cfg.max_number)))
            .collect();
        let mut pool = numbers.clone();
        let mut steps = Vec::with_capacity(k - 1);
        while pool.len() > 1 {
            let i = rng.gen_range(0..pool.len());
            let a = pool.swap_remove(i);
            let j = rng.gen_range(0..pool.len());
            let b = pool.swap_remove(j);
            let op = ['+', '-', '*'][rng.gen_range(0..3)];
            let Some((s, c)) = step(a, b, op, cfg.max_value) else {
                continue 'draw;
            };
            steps.push(s);
            pool.push(c);
        }
        let target = pool[0];
        return CountdownProblem {
            prompt: prompt_of(&numbers, target),
            numbers,
            target,
            steps,
        };
    }
}

/// `n` distinct problems of one split, in a fixed order given by `seed`.
///
/// Errors when the split cannot hold `n` distinct problems under `cfg` (it gives up after
/// drawing many duplicates in a row rather than looping forever).
pub fn generate(
    cfg: &CountdownConfig,
    split: Split,
    n: usize,
    seed: u64,
) -> Result<Vec<CountdownProblem>, TaskError> {
    cfg.validate()?;
    // Separate streams per split (and apart from the arithmetic task's), so asking for more
    // held-out problems never changes the training problems drawn with the same seed.
    let stream = match split {
        Split::Train => 0x636e_7472_6169_6e00,
        Split::HeldOut => 0x636e_6865_6c64_0000,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ stream);
    arith::draw_distinct(
        n,
        split,
        || sample_one(&mut rng, cfg),
        |p| &p.prompt,
        || format!("{split:?} countdown problems with {cfg:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_parse_back() {
        assert_eq!(prompt_of(&[3, 7, 9], 24), "3,7,9:24=");
        assert_eq!(parse_prompt("3,7,9:24=").unwrap(), (vec![3, 7, 9], 24));
        assert_eq!(parse_prompt("3,7:0").unwrap(), (vec![3, 7], 0));
        for (bad, why) in [
            ("3,7,9=", "no `:`"),
            ("3,7,9:x=", "target"),
            ("3,,9:2=", "listed number"),
            ("3,07:2=", "listed number"),
            ("3:3=", "fewer than two"),
        ] {
            let e = parse_prompt(bad).unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains(&format!("{bad:?}")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn numbers_must_be_canonical() {
        assert_eq!(parse_number("0"), Some(0));
        assert_eq!(parse_number("120"), Some(120));
        for bad in ["", "01", "+1", "-1", " 1", "1 ", "1234567890"] {
            assert_eq!(parse_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn generated_chains_solve_their_own_problems() {
        let cfg = CountdownConfig::default();
        let ps = generate(&cfg, Split::Train, 2000, 5).unwrap();
        let mut sizes = [0usize; 7];
        for p in &ps {
            assert_eq!(
                parse_prompt(&p.prompt).unwrap(),
                (p.numbers.clone(), p.target)
            );
            assert_eq!(check(&p.numbers, p.target, &p.response()), Ok(()), "{p:?}");
            assert_eq!(p.steps.len(), p.numbers.len() - 1);
            assert!(p.target <= cfg.max_value);
            sizes[p.numbers.len()] += 1;
        }
        assert!(sizes[3] > 500 && sizes[4] > 500, "{sizes:?}");
    }
}
