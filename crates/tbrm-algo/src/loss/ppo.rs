//! PPO with a learned critic (Schulman et al. 2017, arXiv 1707.06347; the LLM recipe of
//! Ouyang et al. 2022 as implemented by verl and used as the TBRM paper's baseline).
//!
//! Rewards per token: the outcome r(tau) on the last response token, and (default,
//! `kl_in_reward = true`) a KL penalty on every token,
//!   r_t = [t = H] r(tau) - kl_coef * (log pi_old(a_t|s_t) - log pi_ref(a_t|s_t)),
//! which is verl's `apply_kl_penalty` with `kl_penalty = "kl"` and `kl_ctrl.kl_coef = 0.001`
//! (the TBRM paper's "KL coefficient 0.001" for PPO; verl applied it in the reward when
//! `use_kl_loss` is off). With `kl_in_reward = false` the same coefficient weights a k3 KL
//! loss term instead, as in GRPO.
//! Advantages and returns by GAE (gamma = lam = 1), advantages whitened over the batch.
//!
//!   actor  = agg(max(-A rho, -A clip(rho, 1-0.2, 1+0.2)))  (dual clip for A < 0)
//!            - 0.001 * agg(entropy)
//!   critic = 0.5 * agg(max((V - R)^2, (clip(V, V_old - 0.5, V_old + 0.5) - R)^2))
//!   loss   = actor + critic
//!
//! Actor and critic are separate networks (the critic is a value head on a copy of the
//! backbone, owned by the trainer), so one backward of the sum fills each one's gradients
//! with exactly its own term; step them with their own optimizers and learning rates.

use super::grpo::{check_clip, check_nonneg};
use super::{
    check_batch, metrics, require, AdvantageInputs, Advantages, LossInputs, LossKind, LossOutput,
    Needs, PolicyLoss,
};
use crate::agg::{agg_loss, masked_mean, upcast, AggMode};
use crate::error::AlgoError;
use crate::gae::gae;
use crate::pg::{clipped_pg, clipped_value_loss, kl_k3};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// `[ppo]` hyper-parameters (defaults: the TBRM paper's PPO baseline on verl).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    pub clip_ratio: f64,
    /// Dual-clip bound for negative advantages (verl `clip_ratio_c`).
    pub clip_ratio_c: f64,
    /// KL-to-reference coefficient (0 disables the KL term).
    pub kl_coef: f64,
    /// true: k1 penalty in the per-token reward; false: k3 KL loss on the actor.
    pub kl_in_reward: bool,
    pub entropy_coef: f64,
    /// Half-width of the value clip around the rollout-time value.
    pub cliprange_value: f64,
    pub gamma: f64,
    pub lam: f64,
    pub loss_agg_mode: AggMode,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            clip_ratio: 0.2,
            clip_ratio_c: 3.0,
            kl_coef: 0.001,
            kl_in_reward: true,
            entropy_coef: 0.001,
            cliprange_value: 0.5,
            gamma: 1.0,
            lam: 1.0,
            loss_agg_mode: AggMode::TokenMean,
        }
    }
}

/// The PPO actor + critic loss.
pub struct Ppo {
    cfg: PpoConfig,
}

impl Ppo {
    pub fn new(cfg: PpoConfig) -> Result<Self, AlgoError> {
        check_clip(
            "ppo.clip_ratio",
            cfg.clip_ratio,
            "ppo.clip_ratio_c",
            cfg.clip_ratio_c,
        )?;
        check_nonneg("ppo.kl_coef", cfg.kl_coef)?;
        check_nonneg("ppo.entropy_coef", cfg.entropy_coef)?;
        check_nonneg("ppo.cliprange_value", cfg.cliprange_value)?;
        for (key, v) in [("ppo.gamma", cfg.gamma), ("ppo.lam", cfg.lam)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(AlgoError::InvalidConfig {
                    key,
                    value: v.to_string(),
                    reason: "must be in [0, 1]",
                });
            }
        }
        Ok(Ppo { cfg })
    }
}

/// Per-token rewards `(B, L)`: `r(tau)` on each response's last token, 0 elsewhere.
pub fn outcome_token_rewards(rewards: &Tensor, response_mask: &Tensor) -> Tensor {
    let kind = upcast(rewards).kind();
    let m = response_mask.to_kind(kind);
    let last = (m.sum_dim_intlist(-1, false, Kind::Int64) - 1).clamp_min(0);
    // An empty response puts its reward at position 0, which the mask then removes.
    m.zeros_like()
        .scatter(1, &last.unsqueeze(-1), &rewards.to_kind(kind).unsqueeze(-1))
        * &m
}

impl PolicyLoss for Ppo {
    fn kind(&self) -> LossKind {
        LossKind::Ppo
    }

    fn needs(&self) -> Needs {
        Needs {
            first_logit: false,
            ref_logprobs: self.cfg.kl_coef > 0.0,
            old_logprobs: true,
            values: true,
            entropy: self.cfg.entropy_coef > 0.0,
            group_ids: false,
            min_rollouts_per_prompt: 1,
        }
    }

    fn advantages(&self, x: &AdvantageInputs) -> Result<Option<Advantages>, AlgoError> {
        let values = require(x.values, "ppo", "values")?;
        let kl_inputs = if self.cfg.kl_in_reward && self.cfg.kl_coef > 0.0 {
            Some((
                require(x.old_logprobs, "ppo", "old_logprobs")?,
                require(x.ref_logprobs, "ppo", "ref_logprobs")?,
            ))
        } else {
            None
        };
        check_batch(
            x.response_mask,
            x.rewards,
            &[
                ("values", Some(values)),
                ("old_logprobs", kl_inputs.map(|p| p.0)),
                ("ref_logprobs", kl_inputs.map(|p| p.1)),
            ],
        )?;
        let mut token_rewards = outcome_token_rewards(x.rewards, x.response_mask);
        let k = token_rewards.kind();
        let mask = x.response_mask.to_kind(k);
        let mut m = Vec::new();
        if let Some((old, reference)) = kl_inputs {
            let k1 = (old.to_kind(k) - reference.to_kind(k)).detach() * &mask;
            token_rewards -= self.cfg.kl_coef * &k1;
            m.push(("critic/kl_penalty_mean", masked_mean(&k1, &mask)));
        }
        let (advantages, returns) = gae(
            &token_rewards,
            values,
            x.response_mask,
            self.cfg.gamma,
            self.cfg.lam,
        );
        m.push(("critic/returns_mean", masked_mean(&returns, &mask)));
        Ok(Some(Advantages {
            advantages,
            returns: Some(returns),
            metrics: metrics(m),
        }))
    }

    fn loss(&self, x: &LossInputs) -> Result<LossOutput, AlgoError> {
        let old = require(x.old_logprobs, "ppo", "old_logprobs")?;
        let adv = require(x.advantages, "ppo", "advantages")?;
        let vpreds = require(x.values, "ppo", "values")?;
        let old_values = require(x.old_values, "ppo", "old_values")?;
        let returns = require(x.returns, "ppo", "returns")?;
        let entropy = if self.cfg.entropy_coef > 0.0 {
            Some(require(x.entropy, "ppo", "entropy")?)
        } else {
            None
        };
        let reference = if !self.cfg.kl_in_reward && self.cfg.kl_coef > 0.0 {
            Some(require(x.ref_logprobs, "ppo", "ref_logprobs")?)
        } else {
            None
        };
        check_batch(
            x.response_mask,
            x.rewards,
            &[
                ("logprobs", Some(x.logprobs)),
                ("old_logprobs", Some(old)),
                ("advantages", Some(adv)),
                ("values", Some(vpreds)),
                ("old_values", Some(old_values)),
                ("returns", Some(returns)),
                ("entropy", entropy),
                ("ref_logprobs", reference),
            ],
        )?;
        let logp = upcast(x.logprobs);
        let k = logp.kind();
        let mask = x.response_mask.to_kind(k);
        let mode = self.cfg.loss_agg_mode;
        let agg = |t: &Tensor| agg_loss(t, &mask, mode, x.totals);

        let pg = clipped_pg(
            &logp,
            &old.to_kind(k),
            &adv.to_kind(k),
            self.cfg.clip_ratio,
            self.cfg.clip_ratio_c,
        );
        let pg_loss = agg(&pg.losses);
        let mut actor = pg_loss.shallow_clone();
        let mut m = vec![
            ("actor/pg_loss", pg_loss.detach()),
            ("actor/pg_clipfrac", masked_mean(&pg.clipped, &mask)),
            (
                "actor/pg_clipfrac_lower",
                masked_mean(&pg.clipped_lower, &mask),
            ),
            ("actor/ppo_kl", masked_mean(&pg.approx_kl, &mask)),
        ];
        if let Some(entropy) = entropy {
            let ent = upcast(entropy).to_kind(k);
            actor -= self.cfg.entropy_coef * agg(&ent);
            m.push(("actor/entropy", masked_mean(&ent, &mask)));
        }
        if let Some(reference) = reference {
            let kl = kl_k3(&logp, &reference.to_kind(k));
            actor += self.cfg.kl_coef * agg(&kl);
            m.push(("actor/kl_loss", masked_mean(&kl, &mask)));
        }

        let vpreds = upcast(vpreds).to_kind(k);
        let (vf, vf_clipped) = clipped_value_loss(
            &vpreds,
            &old_values.to_kind(k),
            &returns.to_kind(k),
            self.cfg.cliprange_value,
        );
        let critic: Tensor = agg(&vf) * 0.5;
        m.push(("critic/vf_loss", critic.detach()));
        m.push(("critic/vf_clipfrac", masked_mean(&vf_clipped, &mask)));
        m.push(("critic/vpred_mean", masked_mean(&vpreds, &mask)));
        Ok(LossOutput {
            loss: actor + critic,
            metrics: metrics(m),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn metric(m: &[(String, f64)], name: &str) -> f64 {
        m.iter().find(|(n, _)| n == name).unwrap().1
    }

    #[test]
    fn token_rewards_on_last_token() {
        let r = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let mask = Tensor::from_slice2(&[[1.0f32, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]);
        let t = outcome_token_rewards(&r, &mask);
        let got = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
        assert_eq!(got, vec![0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    /// Two trajectories, three tokens (the second has two), gamma = lam = 1.
    #[test]
    fn advantages_and_loss_by_hand() {
        let opts = (Kind::Double, Device::Cpu);
        let mask = Tensor::from_slice2(&[[1.0f64, 1.0, 1.0], [1.0, 1.0, 0.0]]);
        let r = Tensor::from_slice(&[1.0f64, 0.0]);
        let values = Tensor::from_slice2(&[[0.5f64, 0.5, 0.5], [0.0, 0.0, 0.0]]);
        // old - ref = 0.5 on every token: reward gets -0.001 * 0.5 per token.
        let old = Tensor::zeros([2, 3], opts);
        let ref_lp = Tensor::full([2, 3], -0.5, opts);
        let loss = Ppo::new(PpoConfig::default()).unwrap();
        let a = loss
            .advantages(&AdvantageInputs {
                values: Some(&values),
                old_logprobs: Some(&old),
                ref_logprobs: Some(&ref_lp),
                ..AdvantageInputs::new(&r, &mask)
            })
            .unwrap()
            .unwrap();
        // Reward-to-go: row 0: 1 - 0.0005*{3,2,1}; row 1: -0.0005*{2,1}.
        let ret = a.returns.as_ref().unwrap();
        let want_ret = [[0.9985, 0.999, 0.9995], [-0.001, -0.0005, 0.0]];
        for (i, row) in want_ret.iter().enumerate() {
            for (j, &w) in row.iter().enumerate() {
                assert!((ret.double_value(&[i as i64, j as i64]) - w).abs() < 1e-12);
            }
        }
        // Raw advantages = returns - values: 0.4985, 0.499, 0.4995, -0.001, -0.0005.
        let raw = [0.4985, 0.499, 0.4995, -0.001, -0.0005];
        let mean = raw.iter().sum::<f64>() / 5.0;
        let var = raw.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 4.0;
        let w: Vec<f64> = raw
            .iter()
            .map(|x| (x - mean) / (var + 1e-8).sqrt())
            .collect();
        assert!((a.advantages.double_value(&[0, 0]) - w[0]).abs() < 1e-9);
        assert!((a.advantages.double_value(&[1, 1]) - w[4]).abs() < 1e-9);
        assert_eq!(a.advantages.double_value(&[1, 2]), 0.0);

        // Loss with logp = old (ratio 1, no clipping): pg = token-mean(-A) = 0 after
        // whitening; entropy 0.7 everywhere; vpred = old value + 1 (clipped to +0.5).
        let entropy = Tensor::full([2, 3], 0.7, opts);
        let vpreds = &values + 1.0;
        let out = loss
            .loss(&LossInputs {
                old_logprobs: Some(&old),
                advantages: Some(&a.advantages),
                values: Some(&vpreds),
                old_values: Some(&values),
                returns: Some(ret),
                entropy: Some(&entropy),
                ..LossInputs::new(&old, &mask, &r)
            })
            .unwrap();
        // Value: vf = max((V+1-R)^2, (V+0.5-R)^2) per token.
        let v: [&[f64]; 2] = [&[0.5, 0.5, 0.5], &[0.0, 0.0]];
        let mut vf = 0.0;
        for (i, row) in v.iter().enumerate() {
            for (j, &vv) in row.iter().enumerate() {
                let rr = want_ret[i][j];
                vf += f64::max((vv + 1.0 - rr).powi(2), (vv + 0.5 - rr).powi(2));
            }
        }
        let want = 0.0 - 0.001 * 0.7 + 0.5 * vf / 5.0;
        assert!((out.loss.double_value(&[]) - want).abs() < 1e-9);
        assert!((metric(&out.metrics, "critic/vf_clipfrac") - 0.0).abs() < 1e-12);
        assert!((metric(&out.metrics, "actor/entropy") - 0.7).abs() < 1e-12);
    }

    #[test]
    fn missing_critic_is_an_error() {
        let m = Tensor::ones([1, 2], (Kind::Float, Device::Cpu));
        let r = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let err = Ppo::new(PpoConfig::default())
            .unwrap()
            .advantages(&AdvantageInputs::new(&r, &m))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("values"), "{err}");
        let err = Ppo::new(PpoConfig {
            gamma: 1.5,
            ..Default::default()
        })
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("ppo.gamma"), "{err}");
    }
}
