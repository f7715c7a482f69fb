//! Work limits for one verification: a wall-clock deadline polled from every loop of the parser,
//! evaluator and comparison, plus size caps. Polling a clock costs ~20 ns, so it is sampled only
//! every few ticks.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::VerifyError;

/// Caps on the work one verification may do. The step cap is the primary bound: it is
/// deterministic and sized so the costliest case stays under ~20 ms on one core (see
/// BENCHMARKS.md). The wall-clock deadline is only a backstop; a tight one would turn CPU
/// contention (a loaded trainer host) into false negatives.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock budget for one (gold, response) pair: a backstop, polled every 32 steps.
    pub deadline: Duration,
    /// Work budget in steps (tokens, tree nodes, comparisons): deterministic, so a case that
    /// is too expensive fails the same way on every machine and under any load.
    pub max_steps: u64,
    /// Longest response scanned for an answer, in bytes.
    pub max_response_bytes: usize,
    /// Longest extracted answer (or gold answer) that is parsed, in bytes.
    pub max_answer_bytes: usize,
    /// Deepest nesting of brackets and operators the parser follows.
    pub max_depth: usize,
    /// Largest exact rational, in bits of numerator or denominator.
    pub max_bits: u64,
    /// Largest number of digits in one number literal.
    pub max_digits: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(100),
            max_steps: 200_000,
            max_response_bytes: 1 << 20,
            max_answer_bytes: 4096,
            max_depth: 64,
            max_bits: 4096,
            max_digits: 400,
        }
    }
}

/// The running budget of one verification.
pub(crate) struct Budget<'a> {
    pub limits: &'a Limits,
    end: Instant,
    ticks: Cell<u64>,
}

impl<'a> Budget<'a> {
    pub fn new(limits: &'a Limits) -> Self {
        Self {
            limits,
            end: Instant::now() + limits.deadline,
            ticks: Cell::new(0),
        }
    }

    /// Counts one unit of work; fails once the deadline has passed.
    pub fn tick(&self) -> Result<(), VerifyError> {
        let t = self.ticks.get() + 1;
        self.ticks.set(t);
        if t > self.limits.max_steps {
            return Err(VerifyError::OutOfSteps(self.limits.max_steps));
        }
        if t.is_multiple_of(32) && Instant::now() > self.end {
            return Err(VerifyError::Timeout(self.limits.deadline));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_deadline_times_out_within_a_few_ticks() {
        let limits = Limits {
            deadline: Duration::ZERO,
            ..Limits::default()
        };
        let b = Budget::new(&limits);
        std::thread::sleep(Duration::from_millis(1));
        let hit = (0..64).map(|_| b.tick()).any(|r| r.is_err());
        assert!(hit);
    }

    #[test]
    fn step_cap_is_exact() {
        let limits = Limits {
            max_steps: 10,
            deadline: Duration::from_secs(60),
            ..Limits::default()
        };
        let b = Budget::new(&limits);
        assert!((0..10).all(|_| b.tick().is_ok()));
        assert_eq!(b.tick(), Err(VerifyError::OutOfSteps(10)));
    }

    #[test]
    fn generous_deadline_does_not_fire() {
        let limits = Limits::default();
        let b = Budget::new(&limits);
        assert!((0..1000).all(|_| b.tick().is_ok()));
    }
}
