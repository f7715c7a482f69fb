//! Accuracy metrics over several samples per problem.
//!
//! - avg@k: the fraction of a problem's k samples that are correct, averaged over problems (the
//!   TBRM paper reports avg@32 for AIME24/AIME25/AMC23 and greedy avg@1 elsewhere).
//! - pass@k: the unbiased estimator of Chen et al. 2021, "Evaluating Large Language Models
//!   Trained on Code" (arXiv:2107.03374, Section 2.1): with n samples of which c are correct,
//!   pass@k = 1 - C(n-c, k) / C(n, k), computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i) so no
//!   large binomial coefficient is formed (C(n, k) passes 2^53, where f64 stops being exact,
//!   already at n = 57).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    #[error("pass@{k} needs 1 <= k <= n samples (n = {n})")]
    BadK { n: usize, k: usize },
    #[error("{c} correct out of {n} samples is impossible")]
    BadCount { n: usize, c: usize },
    #[error("no problems to average over")]
    Empty,
    #[error("problem {index} has no samples")]
    NoSamples { index: usize },
}

/// Unbiased pass@k for one problem with `n` samples, `c` of them correct.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Result<f64, MetricError> {
    if k == 0 || k > n {
        return Err(MetricError::BadK { n, k });
    }
    if c > n {
        return Err(MetricError::BadCount { n, c });
    }
    // Every size-k subset contains a correct sample.
    if n - c < k {
        return Ok(1.0);
    }
    let miss: f64 = (n - c + 1..=n).map(|i| 1.0 - k as f64 / i as f64).product();
    Ok(1.0 - miss)
}

fn check(correct: &[Vec<bool>]) -> Result<(), MetricError> {
    if correct.is_empty() {
        return Err(MetricError::Empty);
    }
    match correct.iter().position(Vec::is_empty) {
        Some(index) => Err(MetricError::NoSamples { index }),
        None => Ok(()),
    }
}

/// Mean over problems of the fraction of correct samples. `correct[p][s]`: sample s of problem p.
/// Problems may have different sample counts; each problem weighs the same.
pub fn avg_at_k(correct: &[Vec<bool>]) -> Result<f64, MetricError> {
    check(correct)?;
    let sum: f64 = correct
        .iter()
        .map(|s| s.iter().filter(|&&b| b).count() as f64 / s.len() as f64)
        .sum();
    Ok(sum / correct.len() as f64)
}

/// Mean over problems of the unbiased pass@k.
pub fn mean_pass_at_k(correct: &[Vec<bool>], k: usize) -> Result<f64, MetricError> {
    check(correct)?;
    let mut sum = 0.0;
    for s in correct {
        sum += pass_at_k(s.len(), s.iter().filter(|&&b| b).count(), k)?;
    }
    Ok(sum / correct.len() as f64)
}

/// The k values worth reporting for `samples` samples per problem: powers of two up to it, and
/// `samples` itself (1, 2, 4, 8, 16, 32 for the paper's 32).
pub fn default_ks(samples: usize) -> Vec<usize> {
    let mut ks: Vec<usize> = std::iter::successors(Some(1usize), |k| k.checked_mul(2))
        .take_while(|&k| k <= samples)
        .collect();
    if samples > 0 && ks.last() != Some(&samples) {
        ks.push(samples);
    }
    ks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn pass_at_k_hand_computed() {
        // n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10.
        assert!(close(pass_at_k(5, 2, 2).unwrap(), 0.7));
        // k=1 reduces to c/n.
        assert!(close(pass_at_k(10, 3, 1).unwrap(), 0.3));
        // n=4, c=1, k=3: 1 - C(3,3)/C(4,3) = 1 - 1/4.
        assert!(close(pass_at_k(4, 1, 3).unwrap(), 0.75));
        // n=32, c=1, k=16: 1 - C(31,16)/C(32,16) = 1 - 16/32.
        assert!(close(pass_at_k(32, 1, 16).unwrap(), 0.5));
        // Fewer wrong samples than k: certain.
        assert_eq!(pass_at_k(4, 3, 2).unwrap(), 1.0);
        assert_eq!(pass_at_k(8, 0, 8).unwrap(), 0.0);
        assert_eq!(pass_at_k(8, 8, 8).unwrap(), 1.0);
    }

    #[test]
    fn pass_at_k_matches_binomials_for_large_n() {
        // C(n-c,k)/C(n,k) via exact u128 binomials for n = 64.
        fn binom(n: u128, k: u128) -> u128 {
            (0..k).fold(1u128, |acc, i| acc * (n - i) / (i + 1))
        }
        for (c, k) in [(5, 10), (20, 3), (1, 63), (30, 32)] {
            let exact = 1.0 - binom(64 - c, k) as f64 / binom(64, k) as f64;
            let got = pass_at_k(64, c as usize, k as usize).unwrap();
            assert!((got - exact).abs() < 1e-12, "c={c} k={k}: {got} vs {exact}");
        }
    }

    #[test]
    fn pass_at_k_rejects_bad_arguments() {
        assert_eq!(pass_at_k(4, 1, 0), Err(MetricError::BadK { n: 4, k: 0 }));
        assert_eq!(pass_at_k(4, 1, 5), Err(MetricError::BadK { n: 4, k: 5 }));
        assert_eq!(
            pass_at_k(4, 5, 1),
            Err(MetricError::BadCount { n: 4, c: 5 })
        );
    }

    #[test]
    fn avg_at_k_hand_computed() {
        // Problem 0: 3/4 correct; problem 1: 0/4; problem 2: 1/2. Mean = (0.75 + 0 + 0.5) / 3.
        let c = vec![
            vec![true, true, false, true],
            vec![false; 4],
            vec![true, false],
        ];
        assert!(close(avg_at_k(&c).unwrap(), 1.25 / 3.0));
        // pass@2: problem 0 -> 1 (one wrong < 2); problem 1 -> 0; problem 2 -> 1.
        assert!(close(mean_pass_at_k(&c, 2).unwrap(), 2.0 / 3.0));
        // pass@1 equals avg@k.
        assert!(close(mean_pass_at_k(&c, 1).unwrap(), avg_at_k(&c).unwrap()));
        assert_eq!(avg_at_k(&[]), Err(MetricError::Empty));
        assert_eq!(
            avg_at_k(&[vec![true], vec![]]),
            Err(MetricError::NoSamples { index: 1 })
        );
        assert!(
            mean_pass_at_k(&c, 3).is_err(),
            "problem 2 has only 2 samples"
        );
    }

    #[test]
    fn default_ks_are_powers_of_two_and_n() {
        assert_eq!(default_ks(32), [1, 2, 4, 8, 16, 32]);
        assert_eq!(default_ks(1), [1]);
        assert_eq!(default_ks(12), [1, 2, 4, 8, 12]);
        assert!(default_ks(0).is_empty());
    }
}
