//! Policy-gradient building blocks shared by GRPO and PPO, as in verl `core_algos.py`:
//! the clipped surrogate with dual clip, the k3 KL estimator and the clipped value loss.
//! Each returns per-token `(B, L)` matrices; aggregation is [`crate::agg_loss`]'s job.

use tch::Tensor;

/// Per-token clipped surrogate and its diagnostics.
pub struct ClippedPg {
    /// `(B, L)` per-token policy loss.
    pub losses: Tensor,
    /// `(B, L)` 1 where the `1 +- eps` clip was active.
    pub clipped: Tensor,
    /// `(B, L)` 1 where the dual clip (negative advantages) was active.
    pub clipped_lower: Tensor,
    /// `(B, L)` `log pi_old - log pi_theta`, the per-token approximate KL (no grad).
    pub approx_kl: Tensor,
}

/// PPO-clip surrogate (Schulman et al. 2017, Eq. 7) on the token ratio
/// `rho = exp(logp - old_logp)`:  `max(-A rho, -A clip(rho, 1-eps, 1+eps))`,
/// and for `A < 0` additionally capped at `-A * clip_ratio_c` (dual-clip PPO, Ye et al. 2020,
/// verl's default `clip_ratio_c = 3`). The log-ratio is clamped to +-20 before `exp` as verl
/// does, so one stale token cannot overflow.
pub fn clipped_pg(
    logprobs: &Tensor,
    old_logprobs: &Tensor,
    advantages: &Tensor,
    clip_ratio: f64,
    clip_ratio_c: f64,
) -> ClippedPg {
    let log_ratio = (logprobs - old_logprobs).clamp(-20.0, 20.0);
    let ratio = log_ratio.exp();
    let pg1 = -advantages * &ratio;
    let pg2 = -advantages * ratio.clamp(1.0 - clip_ratio, 1.0 + clip_ratio);
    let clip1 = pg1.maximum(&pg2);
    let clipped = pg2.gt_tensor(&pg1).to_kind(logprobs.kind());
    let pg3 = -advantages * clip_ratio_c;
    let negative = advantages.lt(0.0);
    let clipped_lower = (clip1.gt_tensor(&pg3).logical_and(&negative)).to_kind(logprobs.kind());
    let losses = clip1.minimum(&pg3).where_self(&negative, &clip1);
    ClippedPg {
        losses,
        clipped,
        clipped_lower,
        approx_kl: (-log_ratio).detach(),
    }
}

/// k3 estimator of KL(pi_theta || pi_ref) per token (Schulman, "Approximating KL
/// Divergence", 2020; verl `low_var_kl`): with `d = log pi_ref - log pi_theta`,
/// `exp(d) - d - 1 >= 0`, unbiased under samples from pi_theta and low-variance.
/// `d` is clamped to +-20 and the result to [-10, 10] as in verl.
pub fn kl_k3(logprobs: &Tensor, ref_logprobs: &Tensor) -> Tensor {
    let d = (ref_logprobs - logprobs).clamp(-20.0, 20.0);
    (d.exp() - &d - 1.0).clamp(-10.0, 10.0)
}

/// Per-token clipped value loss and where the clip was active (PPO2 / verl
/// `compute_value_loss`): `max((V - R)^2, (clip(V, V_old +- c) - R)^2)`, without the 0.5.
pub fn clipped_value_loss(
    vpreds: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    cliprange_value: f64,
) -> (Tensor, Tensor) {
    let vclipped = old_values + (vpreds - old_values).clamp(-cliprange_value, cliprange_value);
    let l1 = (vpreds - returns).square();
    let l2 = (vclipped - returns).square();
    let clipped = l2.gt_tensor(&l1).to_kind(vpreds.kind());
    (l1.maximum(&l2), clipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn clip_cases_by_hand() {
        // ratios e^{ln 1.5}=1.5, e^{ln 0.5}=0.5, e^{ln 4}=4 with advantages +1, -1, -1.
        let old = Tensor::from_slice(&[0.0f64, 0.0, 0.0]);
        let lp = Tensor::from_slice(&[1.5f64.ln(), 0.5f64.ln(), 4f64.ln()]);
        let a = Tensor::from_slice(&[1.0f64, -1.0, -1.0]);
        let out = clipped_pg(&lp, &old, &a, 0.2, 3.0);
        // A=+1, rho=1.5: max(-1.5, -1.2) = -1.2 (clipped).
        // A=-1, rho=0.5: max(0.5, 0.8) = 0.8 (clipped).
        // A=-1, rho=4:   max(4, 1.2) = 4, dual clip caps at 3.
        let l = v(&out.losses);
        for (g, e) in l.iter().zip([-1.2, 0.8, 3.0]) {
            assert!((g - e).abs() < 1e-12, "{l:?}");
        }
        assert_eq!(v(&out.clipped), vec![1.0, 1.0, 0.0]);
        assert_eq!(v(&out.clipped_lower), vec![0.0, 0.0, 1.0]);
    }

    #[test]
    fn k3_by_hand() {
        // d = ln 2: 2 - ln 2 - 1; d = 0: 0.
        let k = kl_k3(
            &Tensor::from_slice(&[0.0f64, -1.0]),
            &Tensor::from_slice(&[2f64.ln(), -1.0]),
        );
        let k = v(&k);
        assert!((k[0] - (1.0 - 2f64.ln())).abs() < 1e-12);
        assert_eq!(k[1], 0.0);
    }

    #[test]
    fn value_clip_by_hand() {
        // V_old 0, R 1, c 0.5: V=2 -> max(1, 0.25) = 1 (unclipped wins);
        // V=-1 -> max(4, 0.25) = 4; V=0.25 -> max(0.5625, 0.5625), not clipped.
        let (l, c) = clipped_value_loss(
            &Tensor::from_slice(&[2.0f64, -1.0, 0.25]),
            &Tensor::from_slice(&[0.0f64, 0.0, 0.0]),
            &Tensor::from_slice(&[1.0f64, 1.0, 1.0]),
            0.5,
        );
        assert_eq!(v(&l), vec![1.0, 4.0, 0.5625]);
        assert_eq!(v(&c), vec![0.0, 0.0, 0.0]);
        // V_old 0, R 0, V=1: clipped to 0.5 -> max(1, 0.25) = 1; V=-0.75 with R=-1:
        // l1 = 0.0625, clipped V=-0.5 -> l2 = 0.25, the clipped one wins.
        let (l, c) = clipped_value_loss(
            &Tensor::from_slice(&[-0.75f64]),
            &Tensor::from_slice(&[0.0f64]),
            &Tensor::from_slice(&[-1.0f64]),
            0.5,
        );
        assert_eq!(v(&l), vec![0.25]);
        assert_eq!(v(&c), vec![1.0]);
    }
}
