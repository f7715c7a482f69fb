//! TBRM, Trajectory Bellman Residual Minimization (Yuan et al. 2025, arXiv 2505.15311,
//! Algorithm 1, Eq. 4; `shared/docs/tbrm-method.md`). Per trajectory tau = (x, a_1..a_H):
//!
//!   f(tau) = logit_theta(s_1, a_1) + sum_{h=2..H} log pi_theta(a_h|s_h)
//!            - sum_{h=1..H} log pi_ref(a_h|s_h) - r(tau) / beta
//!   L      = mean over trajectories of f(tau)^2
//!
//! `logit_theta(s_1, a_1)` is the RAW logit of the first response token: the model's logits
//! are its Q-function, and logit(s_1,a_1) = V(s_1) + log pi(a_1|s_1), so f is the soft
//! Bellman residual summed (telescoped) along the trajectory and squared once. No old
//! log-probs, critic, advantage, ratio or clip: data from any behaviour policy will do.
//!
//! Empty responses (no response token) have no action and hence no residual: their f is
//! defined as 0 and they are not counted in the mean (nor in [`BatchTotals::trajectories`]).

use super::{check_batch, metrics, require, LossInputs, LossKind, LossOutput, Needs, PolicyLoss};
use crate::agg::{upcast, BatchTotals};
use crate::error::AlgoError;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// `[tbrm]` hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TbrmConfig {
    /// KL-regularisation strength; the target is r / beta (paper: 0.002).
    pub beta: f64,
    /// Trust region around the behaviour policy mu, in nats (0 = off; not in the paper).
    /// A response token whose log pi_theta - log mu is already beyond it in the direction
    /// the residual pushes (below -trust_region when f > 0 pushes the trajectory down,
    /// above +trust_region when f < 0 pulls it up) passes no gradient. The value of f is
    /// unchanged and no token is re-weighted: this is not an importance weight. On fresh
    /// on-policy data pi_theta = mu at the update, so it never acts; on reused data (replay,
    /// offline files, stale rollouts) it bounds how far each use can move a token away from
    /// the policy that sampled it (see BENCHMARKS.md, "Off-policy sources").
    pub trust_region: f64,
}

impl Default for TbrmConfig {
    fn default() -> Self {
        TbrmConfig {
            beta: 0.002,
            trust_region: 0.0,
        }
    }
}

/// The TBRM loss of Eq. 4.
pub struct Tbrm {
    beta: f64,
    trust_region: f64,
}

impl Tbrm {
    pub fn new(cfg: TbrmConfig) -> Result<Self, AlgoError> {
        if !(cfg.beta.is_finite() && cfg.beta > 0.0) {
            return Err(AlgoError::InvalidConfig {
                key: "tbrm.beta",
                value: cfg.beta.to_string(),
                reason: "must be a finite number > 0",
            });
        }
        if !(cfg.trust_region.is_finite() && cfg.trust_region >= 0.0) {
            return Err(AlgoError::InvalidConfig {
                key: "tbrm.trust_region",
                value: cfg.trust_region.to_string(),
                reason: "must be a finite number >= 0 (0 = off)",
            });
        }
        Ok(Tbrm {
            beta: cfg.beta,
            trust_region: cfg.trust_region,
        })
    }
}

/// The log-probs the residual takes its gradient through under a trust region `eps` around
/// the behaviour log-probs `mu`: tokens already moved beyond it in the direction `f` pushes
/// are detached (same values, no gradient). Returns them with the fraction of response
/// tokens detached.
pub fn trust_region_logprobs(
    logprobs: &Tensor,
    behaviour: &Tensor,
    residual: &Tensor,
    response_mask: &Tensor,
    eps: f64,
) -> (Tensor, Tensor) {
    let lp = upcast(logprobs);
    let k = lp.kind();
    let moved = lp.detach() - upcast(behaviour).to_kind(k);
    // f > 0 lowers log pi along the trajectory, f < 0 raises it.
    let down = residual.detach().gt(0.0).unsqueeze(-1);
    let beyond = moved
        .lt(-eps)
        .logical_and(&down)
        .logical_or(&moved.gt(eps).logical_and(&down.logical_not()));
    let m = response_mask.gt(0.0);
    let beyond = beyond.logical_and(&m);
    let frac = beyond.to_kind(k).sum(k) / m.to_kind(k).sum(k).clamp_min(1.0);
    let out = lp.where_self(&beyond.logical_not(), &lp.detach());
    (out, frac)
}

/// Row sums of `x` over the masked positions (padding ignored even if not finite).
fn masked_row_sum(x: &Tensor, mask: &Tensor) -> Tensor {
    x.where_self(&mask.gt(0.0), &x.zeros_like())
        .sum_dim_intlist(-1, false, x.kind())
}

/// The trajectory residual f(tau) of Eq. 4, `(B,)`, 0 for empty responses. Inputs as in
/// [`LossInputs`]: `first_logit (B,)`, `logprobs`, `ref_logprobs`, `response_mask (B, L)`
/// right-padded, `rewards (B,)`. Half precision is summed in f32, f64 stays f64.
pub fn tbrm_residual(
    first_logit: &Tensor,
    logprobs: &Tensor,
    ref_logprobs: &Tensor,
    rewards: &Tensor,
    response_mask: &Tensor,
    beta: f64,
) -> Tensor {
    let logprobs = upcast(logprobs);
    let k = logprobs.kind();
    let m = response_mask.to_kind(k);
    let l = m.size()[1];
    if l == 0 {
        return rewards.zeros_like().to_kind(k);
    }
    // sum_{h>=2}: positions 1..L of the right-padded layout. The first token's log-prob is
    // not used at all (sliced out, not subtracted), so its gradient comes from the raw logit.
    let rest = if l > 1 {
        masked_row_sum(&logprobs.narrow(1, 1, l - 1), &m.narrow(1, 1, l - 1))
    } else {
        m.select(1, 0).zeros_like()
    };
    let ref_sum = masked_row_sum(&upcast(ref_logprobs).to_kind(k), &m);
    let f = upcast(first_logit).to_kind(k) + rest - ref_sum - upcast(rewards).to_kind(k) / beta;
    // Right padding: a response is non-empty iff its first position is unmasked.
    let nonempty = m.select(1, 0).gt(0.0);
    f.where_self(&nonempty, &f.zeros_like())
}

impl PolicyLoss for Tbrm {
    fn kind(&self) -> LossKind {
        LossKind::Tbrm
    }

    fn needs(&self) -> Needs {
        Needs {
            first_logit: true,
            ref_logprobs: true,
            old_logprobs: self.trust_region > 0.0,
            values: false,
            entropy: false,
            group_ids: false,
            min_rollouts_per_prompt: 1,
        }
    }

    fn loss(&self, x: &LossInputs) -> Result<LossOutput, AlgoError> {
        let first_logit = require(x.first_logit, "tbrm", "first_logit")?;
        let ref_logprobs = require(x.ref_logprobs, "tbrm", "ref_logprobs")?;
        let (b, _) = check_batch(
            x.response_mask,
            x.rewards,
            &[
                ("logprobs", Some(x.logprobs)),
                ("ref_logprobs", Some(ref_logprobs)),
            ],
        )?;
        super::check_shape(first_logit, "first_logit", &[b])?;

        let mut f = tbrm_residual(
            first_logit,
            x.logprobs,
            ref_logprobs,
            x.rewards,
            x.response_mask,
            self.beta,
        );
        let mut clipped = None;
        if self.trust_region > 0.0 {
            let behaviour = require(x.old_logprobs, "tbrm", "old_logprobs")?;
            super::check_shape(behaviour, "old_logprobs", &[b, x.logprobs.size()[1]])?;
            let (lp, frac) = trust_region_logprobs(
                x.logprobs,
                behaviour,
                &f,
                x.response_mask,
                self.trust_region,
            );
            f = tbrm_residual(
                first_logit,
                &lp,
                ref_logprobs,
                x.rewards,
                x.response_mask,
                self.beta,
            );
            clipped = Some(frac);
        }
        let own = BatchTotals::from_mask(x.response_mask);
        let totals = x.totals.unwrap_or(own);
        // Sum over this micro-batch, divided by the whole step's trajectory count, so that
        // accumulating micro-batch gradients gives the full-batch mean's gradient.
        let loss = f.square().sum(f.kind()) / totals.trajectories.max(1.0);

        let n = own.trajectories.max(1.0);
        let m = x.response_mask.to_kind(f.kind());
        let nonempty = m.select(1, 0);
        let log_ratio = masked_row_sum(&(upcast(x.logprobs) - upcast(ref_logprobs)), &m);
        let mut pairs = vec![
            ("tbrm/loss", f.square().sum(f.kind()) / n),
            ("tbrm/residual_mean", f.sum(f.kind()) / n),
            ("tbrm/residual_abs_mean", f.abs().sum(f.kind()) / n),
            (
                "tbrm/first_logit_mean",
                (upcast(first_logit) * &nonempty).sum(f.kind()) / n,
            ),
            // sum_h log pi_theta/pi_ref along the trajectory: a sequence-level KL estimate.
            ("tbrm/seq_log_ratio_mean", log_ratio.sum(f.kind()) / n),
            (
                "tbrm/empty_responses",
                Tensor::from(b as f64 - own.trajectories),
            ),
        ];
        if let Some(frac) = clipped {
            pairs.push(("tbrm/trust_region_frac", frac));
        }
        let metrics = metrics(pairs);
        Ok(LossOutput { loss, metrics })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn metric(out: &LossOutput, name: &str) -> f64 {
        out.metrics.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// Two trajectories, three tokens; the second has two tokens and junk in its padding.
    #[test]
    fn loss_by_hand() {
        let first_logit = Tensor::from_slice(&[2.0f32, -1.0]);
        let logp = Tensor::from_slice2(&[[-0.5f32, -1.0, -0.25], [-0.3, -2.0, 7.0]]);
        let ref_lp = Tensor::from_slice2(&[[-0.7f32, -0.8, -0.4], [-0.1, -1.5, 7.0]]);
        let mask = Tensor::from_slice2(&[[1.0f32, 1.0, 1.0], [1.0, 1.0, 0.0]]);
        let r = Tensor::from_slice(&[1.0f32, 0.0]);
        let loss = Tbrm::new(TbrmConfig {
            beta: 0.5,
            trust_region: 0.0,
        })
        .unwrap();
        let x = LossInputs {
            first_logit: Some(&first_logit),
            ref_logprobs: Some(&ref_lp),
            ..LossInputs::new(&logp, &mask, &r)
        };
        let out = loss.loss(&x).unwrap();
        // f0 = 2 + (-1 - 0.25) - (-0.7 - 0.8 - 0.4) - 1/0.5 = 0.65
        // f1 = -1 + (-2) - (-0.1 - 1.5) - 0 = -1.4
        let want = (0.65f64.powi(2) + 1.4f64.powi(2)) / 2.0;
        assert!((out.loss.double_value(&[]) - want).abs() < 1e-5);
        assert!((metric(&out, "tbrm/residual_mean") - (-0.375)).abs() < 1e-5);
        assert!((metric(&out, "tbrm/residual_abs_mean") - 1.025).abs() < 1e-5);
        // sum log pi - log ref: (-1.75 + 1.9) and (-2.3 + 1.6).
        assert!((metric(&out, "tbrm/seq_log_ratio_mean") - (0.15 - 0.7) / 2.0).abs() < 1e-5);
        assert_eq!(metric(&out, "tbrm/empty_responses"), 0.0);
    }

    #[test]
    fn empty_response_is_not_counted() {
        let first_logit = Tensor::from_slice(&[2.0f64, 5.0]);
        let logp = Tensor::from_slice2(&[[-0.5f64, -1.0], [-3.0, -3.0]]);
        let ref_lp = Tensor::from_slice2(&[[-0.7f64, -0.8], [-3.0, -3.0]]);
        let mask = Tensor::from_slice2(&[[1.0f64, 1.0], [0.0, 0.0]]);
        let r = Tensor::from_slice(&[1.0f64, 1.0]);
        let loss = Tbrm::new(TbrmConfig {
            beta: 0.5,
            trust_region: 0.0,
        })
        .unwrap();
        let x = LossInputs {
            first_logit: Some(&first_logit),
            ref_logprobs: Some(&ref_lp),
            ..LossInputs::new(&logp, &mask, &r)
        };
        let out = loss.loss(&x).unwrap();
        // f0 = 2 - 1 + 1.5 - 2 = 0.5; the empty row contributes nothing and is not counted.
        assert!((out.loss.double_value(&[]) - 0.25).abs() < 1e-12);
        assert_eq!(metric(&out, "tbrm/empty_responses"), 1.0);
    }

    #[test]
    fn missing_inputs_and_bad_beta_are_errors() {
        let t = Tensor::zeros([1, 2], (Kind::Float, Device::Cpu));
        let m = Tensor::ones([1, 2], (Kind::Float, Device::Cpu));
        let r = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let loss = Tbrm::new(TbrmConfig::default()).unwrap();
        let err = loss.loss(&LossInputs::new(&t, &m, &r)).err().unwrap();
        assert!(err.to_string().contains("first_logit"), "{err}");
        for beta in [0.0, -1.0, f64::NAN] {
            let err = Tbrm::new(TbrmConfig {
                beta,
                trust_region: 0.0,
            })
            .err()
            .unwrap()
            .to_string();
            assert!(err.contains("tbrm.beta"), "{err}");
        }
    }

    /// A tiny differentiable "model": fixed features (B, L, d) times a weight (d, V) give
    /// logits; log_softmax + gather give the log-probs of fixed actions.
    struct Tiny {
        feats: Tensor,
        actions: Tensor,
        ref_lp: Tensor,
        mask: Tensor,
        rewards: Tensor,
    }

    impl Tiny {
        fn new(lengths: &[i64], seed: i64) -> Self {
            tch::manual_seed(seed);
            let (b, l, d, v) = (lengths.len() as i64, 4, 3, 5);
            let opts = (Kind::Double, Device::Cpu);
            let mask: Vec<f64> = lengths
                .iter()
                .flat_map(|&n| (0..l).map(move |t| if t < n { 1.0 } else { 0.0 }))
                .collect();
            Tiny {
                feats: Tensor::randn([b, l, d], opts),
                actions: Tensor::randint(v, [b, l], (Kind::Int64, Device::Cpu)),
                ref_lp: Tensor::randn([b, l, v], opts)
                    .log_softmax(-1, Kind::Double)
                    .gather(
                        -1,
                        &Tensor::randint(v, [b, l, 1], (Kind::Int64, Device::Cpu)),
                        false,
                    )
                    .squeeze_dim(-1),
                mask: Tensor::from_slice(&mask).view([b, l]),
                rewards: Tensor::randint(2, [b], opts),
            }
        }

        /// Loss of rows `rows` with the given weight, as the trainer would call it.
        fn loss(&self, w: &Tensor, rows: (i64, i64), totals: Option<BatchTotals>) -> Tensor {
            let (s, n) = rows;
            let logits = self.feats.narrow(0, s, n).matmul(w); // (B, L, V)
            let a = self.actions.narrow(0, s, n).unsqueeze(-1);
            let logp = logits
                .log_softmax(-1, Kind::Double)
                .gather(-1, &a, false)
                .squeeze_dim(-1);
            let first_logit = logits
                .select(1, 0)
                .gather(-1, &a.select(1, 0), false)
                .squeeze_dim(-1);
            let (mask, r, ref_lp) = (
                self.mask.narrow(0, s, n),
                self.rewards.narrow(0, s, n),
                self.ref_lp.narrow(0, s, n),
            );
            let x = LossInputs {
                first_logit: Some(&first_logit),
                ref_logprobs: Some(&ref_lp),
                totals,
                ..LossInputs::new(&logp, &mask, &r)
            };
            let tbrm = Tbrm::new(TbrmConfig {
                beta: 0.25,
                trust_region: 0.0,
            })
            .unwrap();
            tbrm.loss(&x).unwrap().loss
        }
    }

    /// Autograd against central differences, in f64, with lengths 4, 1, 0 and 3.
    #[test]
    fn gradient_matches_finite_differences() {
        let tiny = Tiny::new(&[4, 1, 0, 3], 7);
        let w = Tensor::randn([3, 5], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let loss = tiny.loss(&w, (0, 4), None);
        loss.backward();
        let grad = w.grad();
        let eps = 1e-6;
        let mut worst: f64 = 0.0;
        for i in 0..3 {
            for j in 0..5 {
                let fd = tch::no_grad(|| {
                    let bump = |s: f64| {
                        let wp = w.detach().copy();
                        let _ = wp.get(i).get(j).fill_(w.double_value(&[i, j]) + s);
                        tiny.loss(&wp, (0, 4), None).double_value(&[])
                    };
                    (bump(eps) - bump(-eps)) / (2.0 * eps)
                });
                let g = grad.double_value(&[i, j]);
                worst = worst.max((g - fd).abs() / (1.0 + fd.abs()));
            }
        }
        assert!(grad.abs().sum(Kind::Double).double_value(&[]) > 1e-3);
        assert!(worst < 1e-6, "max relative error {worst}");
    }

    /// Micro-batches with the step's totals: losses and gradients sum to the full batch's.
    #[test]
    fn micro_batches_sum_to_full_batch() {
        let tiny = Tiny::new(&[4, 2, 0, 3, 1, 4], 11);
        let mut w = Tensor::randn([3, 5], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let full = tiny.loss(&w, (0, 6), None);
        full.backward();
        let g_full = w.grad().copy();
        w.zero_grad();

        let totals = BatchTotals::from_mask(&tiny.mask);
        assert_eq!(totals.trajectories, 5.0);
        let mut sum = 0.0;
        for rows in [(0, 2), (2, 3), (5, 1)] {
            let part = tiny.loss(&w, rows, Some(totals));
            part.backward();
            sum += part.double_value(&[]);
        }
        assert!((sum - full.double_value(&[])).abs() < 1e-12);
        let diff = (w.grad() - g_full).abs().max().double_value(&[]);
        assert!(diff < 1e-12, "gradient mismatch {diff}");
        // Without the totals each part would be its own mean, and the sum would differ.
        let wrong: f64 = [(0, 2), (2, 3), (5, 1)]
            .iter()
            .map(|&rows| tiny.loss(&w, rows, None).double_value(&[]))
            .sum();
        assert!((wrong - full.double_value(&[])).abs() > 1e-3);
    }

    /// The first token enters through its raw logit: shifting every logit of the first
    /// position by c (which leaves pi_theta unchanged) shifts every residual by c.
    #[test]
    fn first_token_uses_the_raw_logit() {
        let logits = Tensor::from_slice2(&[[0.3f64, -0.2, 1.0], [0.5, 0.1, -0.4]]);
        let mask = Tensor::from_slice2(&[[1.0f64], [1.0]]);
        let r = Tensor::from_slice(&[0.0f64, 1.0]);
        let ref_lp = Tensor::from_slice2(&[[-1.0f64], [-1.0]]);
        let f = |shift: f64| {
            let lg = &logits + shift;
            let a = Tensor::from_slice(&[2i64, 0]).unsqueeze(-1);
            let first = lg.gather(-1, &a, false).squeeze_dim(-1);
            let logp = lg.log_softmax(-1, Kind::Double).gather(-1, &a, false);
            tbrm_residual(&first, &logp, &ref_lp, &r, &mask, 0.5)
        };
        let d = (f(3.0) - f(0.0) - 3.0).abs().max().double_value(&[]);
        assert!(d < 1e-12);
    }

    /// Loss and d loss / d logprobs of one batch with trust region `eps` around `mu`.
    fn with_trust_region(logp: &Tensor, mu: Option<&Tensor>, eps: f64) -> (f64, Tensor) {
        let first_logit = Tensor::from_slice(&[2.0f64, -1.0]);
        let ref_lp = Tensor::from_slice2(&[[-1.0f64, -1.0, -1.0], [-1.0, -1.0, -1.0]]);
        let mask = Tensor::from_slice2(&[[1.0f64, 1.0, 1.0], [1.0, 1.0, 1.0]]);
        // Row 0 is wrong (f > 0: pushed down), row 1 correct (f < 0: pulled up).
        let r = Tensor::from_slice(&[0.0f64, 1.0]);
        let lp = logp.detach().copy().set_requires_grad(true);
        let loss = Tbrm::new(TbrmConfig {
            beta: 0.5,
            trust_region: eps,
        })
        .unwrap();
        let mut x = LossInputs {
            first_logit: Some(&first_logit),
            ref_logprobs: Some(&ref_lp),
            ..LossInputs::new(&lp, &mask, &r)
        };
        x.old_logprobs = mu;
        let out = loss.loss(&x).unwrap();
        out.loss.backward();
        (out.loss.double_value(&[]), lp.grad())
    }

    #[test]
    fn trust_region_only_stops_tokens_already_pushed_past_it() {
        let logp = Tensor::from_slice2(&[[-0.5f64, -0.5, -0.5], [-0.5, -0.5, -0.5]]);
        let (l0, g0) = with_trust_region(&logp, None, 0.0);
        // On-policy (mu = pi): identical loss and gradient.
        let (l1, g1) = with_trust_region(&logp, Some(&logp), 0.2);
        assert!((l0 - l1).abs() < 1e-12);
        assert!((&g0 - &g1).abs().max().double_value(&[]) < 1e-12);
        // Row 0 token 1 already 0.5 nat below mu while f > 0 pushes it further down: stopped.
        // Row 0 token 2 is 0.5 nat ABOVE mu: the push brings it back, so it keeps its gradient.
        // Row 1 token 1 already 0.5 nat above mu while f < 0 pulls it up: stopped.
        let mu = Tensor::from_slice2(&[[-0.5f64, 0.0, -1.0], [-0.5, -1.0, -0.5]]);
        let (l2, g2) = with_trust_region(&logp, Some(&mu), 0.2);
        assert!((l0 - l2).abs() < 1e-12, "the residual's value is unchanged");
        let g = |t: &Tensor, i: i64, j: i64| t.double_value(&[i, j]);
        assert_eq!(g(&g2, 0, 1), 0.0);
        assert_eq!(g(&g2, 1, 1), 0.0);
        // (Position 0 enters through the raw first logit, never through its log-prob.)
        for (i, j) in [(0, 2), (1, 2)] {
            assert!(g(&g2, i, j).abs() > 1e-6);
            assert!((g(&g2, i, j) - g(&g0, i, j)).abs() < 1e-12);
        }
        // Inside the region (0.5 nat < 0.6): nothing is stopped.
        let (_, g3) = with_trust_region(&logp, Some(&mu), 0.6);
        assert!((&g0 - &g3).abs().max().double_value(&[]) < 1e-12);
    }

    #[test]
    fn trust_region_needs_behaviour_logprobs_and_a_valid_size() {
        let loss = Tbrm::new(TbrmConfig {
            beta: 0.5,
            trust_region: 0.2,
        })
        .unwrap();
        assert!(loss.needs().old_logprobs);
        assert!(
            !Tbrm::new(TbrmConfig::default())
                .unwrap()
                .needs()
                .old_logprobs
        );
        let t = Tensor::zeros([1, 2], (Kind::Float, Device::Cpu));
        let m = Tensor::ones([1, 2], (Kind::Float, Device::Cpu));
        let r = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let fl = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let x = LossInputs {
            first_logit: Some(&fl),
            ref_logprobs: Some(&t),
            ..LossInputs::new(&t, &m, &r)
        };
        let err = loss.loss(&x).err().unwrap().to_string();
        assert!(err.contains("old_logprobs"), "{err}");
        for eps in [-0.1, f64::NAN] {
            let err = Tbrm::new(TbrmConfig {
                beta: 0.5,
                trust_region: eps,
            })
            .err()
            .unwrap()
            .to_string();
            assert!(err.contains("tbrm.trust_region"), "{err}");
        }
    }
}
