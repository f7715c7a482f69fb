//! Generalized Advantage Estimation (Schulman et al. 2016, "High-Dimensional Continuous
//! Control Using Generalized Advantage Estimation"), over the response tokens of a batch:
//!
//!   delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)            (V after the last token = 0)
//!   A_t     = delta_t + gamma * lam * A_{t+1}
//!   R_t     = A_t + V(s_t)                                  (the critic's target)
//!
//! then A is whitened over all response tokens of the batch (verl
//! `compute_gae_advantage_return`). With gamma = lam = 1 (the defaults for LLM PPO) A_t is
//! the sum of the remaining rewards minus V(s_t).

use crate::agg::masked_whiten;
use crate::agg::upcast;
use tch::Tensor;

/// `(advantages, returns)`, both `(B, L)`, from per-token rewards and the critic's values
/// `(B, L)` at rollout time. Advantages are whitened over the batch; returns are not.
/// Everything is computed without gradient. Padded positions come out 0.
pub fn gae(
    token_rewards: &Tensor,
    values: &Tensor,
    response_mask: &Tensor,
    gamma: f64,
    lam: f64,
) -> (Tensor, Tensor) {
    tch::no_grad(|| {
        let r = upcast(&token_rewards.detach());
        let v = upcast(&values.detach()).to_kind(r.kind());
        let m = response_mask.to_kind(r.kind());
        let len = r.size()[1];
        let v = &v * &m;
        let mut next_value = v.select(1, 0).zeros_like();
        let mut next_adv = next_value.zeros_like();
        let mut advs = Vec::with_capacity(len as usize);
        for t in (0..len).rev() {
            let (r_t, v_t, m_t) = (r.select(1, t), v.select(1, t), m.select(1, t));
            let delta = &r_t + gamma * &next_value - &v_t;
            let adv = (delta + gamma * lam * &next_adv) * &m_t;
            next_value = v_t;
            next_adv = adv.shallow_clone();
            advs.push(adv);
        }
        advs.reverse();
        let adv = Tensor::stack(&advs, 1);
        let returns = (&adv + &v) * &m;
        (masked_whiten(&adv, &m), returns)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(t: &Tensor, want: &[[f64; 3]; 2], tol: f64) {
        for (i, row) in want.iter().enumerate() {
            for (j, &e) in row.iter().enumerate() {
                let g = t.double_value(&[i as i64, j as i64]);
                assert!((g - e).abs() < tol, "[{i},{j}] got {g}, want {e}");
            }
        }
    }

    #[test]
    fn gae_by_hand() {
        // Trajectory 0: three tokens, reward 1 on the last; trajectory 1: two tokens,
        // reward 2 on its last token; the third slot is padding (its 9s must not matter).
        let r = Tensor::from_slice2(&[[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]]);
        let v = Tensor::from_slice2(&[[0.5, 0.25, 0.75], [1.0, 0.5, 9.0]]);
        let m = Tensor::from_slice2(&[[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]);

        // gamma = lam = 1: returns are the reward-to-go (1,1,1) and (2,2).
        let (adv, ret) = gae(&r, &v, &m, 1.0, 1.0);
        close(&ret, &[[1.0, 1.0, 1.0], [2.0, 2.0, 0.0]], 1e-12);
        // Raw advantages 0.5, 0.75, 0.25, 1.0, 1.5: mean 0.8, squared deviations sum to
        // 0.09 + 0.0025 + 0.3025 + 0.04 + 0.49 = 0.925, unbiased var 0.925 / 4 = 0.23125.
        let s = (0.23125f64 + 1e-8).sqrt();
        let w = |a: f64| (a - 0.8) / s;
        close(
            &adv,
            &[[w(0.5), w(0.75), w(0.25)], [w(1.0), w(1.5), 0.0]],
            1e-9,
        );

        // gamma = 0.9, lam = 0.8, trajectory 0 by hand:
        //   t=2: delta = 1 - 0.75 = 0.25;                A = 0.25
        //   t=1: delta = 0.9*0.75 - 0.25 = 0.425;        A = 0.425 + 0.72*0.25 = 0.605
        //   t=0: delta = 0.9*0.25 - 0.5 = -0.275;        A = -0.275 + 0.72*0.605 = 0.1606
        // trajectory 1:
        //   t=1: delta = 2 - 0.5 = 1.5;                  A = 1.5
        //   t=0: delta = 0.9*0.5 - 1 = -0.55;            A = -0.55 + 0.72*1.5 = 0.53
        // returns = A + V.
        let (_, ret) = gae(&r, &v, &m, 0.9, 0.8);
        close(&ret, &[[0.6606, 0.855, 1.0], [1.53, 2.0, 0.0]], 1e-9);
    }
}
