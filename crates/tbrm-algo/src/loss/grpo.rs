//! GRPO, Group Relative Policy Optimization (Shao et al. 2024, DeepSeekMath, arXiv
//! 2402.03300, Sec. 4.1; as configured in verl and in the TBRM paper's baseline). For the
//! n >= 2 rollouts of one prompt with rewards r_1..r_n:
//!
//!   A_i = (r_i - mean(r)) / (std(r) + eps)           (every token of rollout i)
//!   rho = exp(log pi_theta - log pi_old)              (per token)
//!   L   = token-mean of max(-A rho, -A clip(rho, 1-0.2, 1+0.2))   (+ dual clip for A < 0)
//!         + 0.001 * token-mean of k3(pi_theta || pi_ref)
//!
//! `std` is the UNBIASED sample standard deviation (divide by n - 1), as verl's
//! `torch.std`; for n = 2 it is |r_1 - r_2| / sqrt(2), so the advantages are +-1/sqrt(2).
//! A group whose rewards are all equal has std 0 and advantage 0 (eps avoids 0/0).
//! n = 1 is refused: the group mean is the reward itself and every advantage is zero.

use super::{
    check_batch, metrics, require, AdvantageInputs, Advantages, LossInputs, LossKind, LossOutput,
    Needs, PolicyLoss,
};
use crate::agg::{agg_loss, masked_mean, upcast, AggMode};
use crate::error::AlgoError;
use crate::pg::{clipped_pg, kl_k3};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// `[grpo]` hyper-parameters (defaults: the TBRM paper's GRPO baseline on verl).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpoConfig {
    pub clip_ratio: f64,
    /// Dual-clip bound for negative advantages (verl `clip_ratio_c`).
    pub clip_ratio_c: f64,
    /// Coefficient of the k3 KL loss to the reference (0 disables it).
    pub kl_coef: f64,
    /// Added to the group std (verl `epsilon`).
    pub eps: f64,
    pub loss_agg_mode: AggMode,
}

impl Default for GrpoConfig {
    fn default() -> Self {
        GrpoConfig {
            clip_ratio: 0.2,
            clip_ratio_c: 3.0,
            kl_coef: 0.001,
            eps: 1e-6,
            loss_agg_mode: AggMode::TokenMean,
        }
    }
}

pub(crate) fn check_clip(
    key: &'static str,
    clip: f64,
    key_c: &'static str,
    clip_c: f64,
) -> Result<(), AlgoError> {
    if !(clip > 0.0 && clip < 1.0) {
        return Err(AlgoError::InvalidConfig {
            key,
            value: clip.to_string(),
            reason: "must be in (0, 1)",
        });
    }
    if !(clip_c > 1.0 && clip_c.is_finite()) {
        return Err(AlgoError::InvalidConfig {
            key: key_c,
            value: clip_c.to_string(),
            reason: "must be a finite number > 1",
        });
    }
    Ok(())
}

pub(crate) fn check_nonneg(key: &'static str, v: f64) -> Result<(), AlgoError> {
    if !(v >= 0.0 && v.is_finite()) {
        return Err(AlgoError::InvalidConfig {
            key,
            value: v.to_string(),
            reason: "must be a finite number >= 0",
        });
    }
    Ok(())
}

/// The GRPO loss.
pub struct Grpo {
    cfg: GrpoConfig,
}

impl Grpo {
    pub fn new(cfg: GrpoConfig) -> Result<Self, AlgoError> {
        check_clip(
            "grpo.clip_ratio",
            cfg.clip_ratio,
            "grpo.clip_ratio_c",
            cfg.clip_ratio_c,
        )?;
        check_nonneg("grpo.kl_coef", cfg.kl_coef)?;
        if !(cfg.eps > 0.0 && cfg.eps.is_finite()) {
            return Err(AlgoError::InvalidConfig {
                key: "grpo.eps",
                value: cfg.eps.to_string(),
                reason: "must be a finite number > 0",
            });
        }
        Ok(Grpo { cfg })
    }
}

/// Group-normalised advantages `(B, L)`: `(r - mean_g) / (std_g + eps)` broadcast over each
/// response's tokens (0 at padding). Errors if any group has fewer than 2 members.
pub fn grpo_advantages(
    rewards: &Tensor,
    group_ids: &[usize],
    response_mask: &Tensor,
    eps: f64,
) -> Result<Tensor, AlgoError> {
    let r = Vec::<f64>::try_from(rewards.to_kind(Kind::Double).to_device(tch::Device::Cpu))
        .map_err(|_| AlgoError::Shape {
            input: "rewards",
            got: rewards.size(),
            expected: vec![group_ids.len() as i64],
        })?;
    if r.len() != group_ids.len() {
        return Err(AlgoError::GroupIdsLen {
            got: group_ids.len(),
            batch: r.len(),
        });
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &g) in group_ids.iter().enumerate() {
        groups.entry(g).or_default().push(i);
    }
    let mut adv = vec![0.0; r.len()];
    for (g, members) in &groups {
        let n = members.len();
        if n < 2 {
            return Err(AlgoError::GroupTooSmall {
                loss: "grpo",
                min: 2,
                got: n,
                detail: format!(" (group id {g})"),
            });
        }
        let mean = members.iter().map(|&i| r[i]).sum::<f64>() / n as f64;
        let var = members.iter().map(|&i| (r[i] - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        for &i in members {
            adv[i] = (r[i] - mean) / (var.sqrt() + eps);
        }
    }
    let kind = upcast(response_mask).kind();
    let adv = Tensor::from_slice(&adv)
        .to_kind(kind)
        .to_device(response_mask.device());
    Ok(adv.unsqueeze(-1) * response_mask.to_kind(kind))
}

impl PolicyLoss for Grpo {
    fn kind(&self) -> LossKind {
        LossKind::Grpo
    }

    fn needs(&self) -> Needs {
        Needs {
            first_logit: false,
            ref_logprobs: self.cfg.kl_coef > 0.0,
            old_logprobs: true,
            values: false,
            entropy: false,
            group_ids: true,
            min_rollouts_per_prompt: 2,
        }
    }

    fn advantages(&self, x: &AdvantageInputs) -> Result<Option<Advantages>, AlgoError> {
        let ids = x.group_ids.ok_or(AlgoError::MissingInput {
            loss: "grpo",
            input: "group_ids",
        })?;
        check_batch(x.response_mask, x.rewards, &[])?;
        let advantages = grpo_advantages(x.rewards, ids, x.response_mask, self.cfg.eps)?;
        Ok(Some(Advantages {
            advantages,
            returns: None,
            metrics: Vec::new(),
        }))
    }

    fn loss(&self, x: &LossInputs) -> Result<LossOutput, AlgoError> {
        let old = require(x.old_logprobs, "grpo", "old_logprobs")?;
        let adv = require(x.advantages, "grpo", "advantages")?;
        let reference = if self.cfg.kl_coef > 0.0 {
            Some(require(x.ref_logprobs, "grpo", "ref_logprobs")?)
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
                ("ref_logprobs", reference),
            ],
        )?;
        let logp = upcast(x.logprobs);
        let k = logp.kind();
        let (old, adv) = (old.to_kind(k), adv.to_kind(k));
        let mask = x.response_mask.to_kind(k);
        let mode = self.cfg.loss_agg_mode;

        let pg = clipped_pg(
            &logp,
            &old,
            &adv,
            self.cfg.clip_ratio,
            self.cfg.clip_ratio_c,
        );
        let pg_loss = agg_loss(&pg.losses, &mask, mode, x.totals);
        let mut loss = pg_loss.shallow_clone();
        let mut m = vec![
            ("actor/pg_loss", pg_loss.detach()),
            ("actor/pg_clipfrac", masked_mean(&pg.clipped, &mask)),
            (
                "actor/pg_clipfrac_lower",
                masked_mean(&pg.clipped_lower, &mask),
            ),
            ("actor/ppo_kl", masked_mean(&pg.approx_kl, &mask)),
        ];
        if let Some(reference) = reference {
            let kl = kl_k3(&logp, &reference.to_kind(k));
            let kl_loss = agg_loss(&kl, &mask, mode, x.totals);
            loss += self.cfg.kl_coef * &kl_loss;
            m.push(("actor/kl_loss", masked_mean(&kl, &mask)));
        }
        Ok(LossOutput {
            loss,
            metrics: metrics(m),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantages_by_hand() {
        // Group 7: rewards 1, 0 -> mean 0.5, unbiased std 1/sqrt(2) -> A = +-1/sqrt(2).
        // Group 3: rewards 1, 1, 0 -> mean 2/3, var (1/9+1/9+4/9)/2 = 1/3 -> std 0.57735.
        let r = Tensor::from_slice(&[1.0f32, 1.0, 0.0, 1.0, 0.0]);
        let mask = Tensor::ones([5, 2], (Kind::Float, tch::Device::Cpu));
        let a = grpo_advantages(&r, &[7, 3, 7, 3, 3], &mask, 1e-6).unwrap();
        let s2 = 0.5f64.sqrt() + 1e-6;
        let s3 = (1.0f64 / 3.0).sqrt() + 1e-6;
        let want = [
            0.5 / s2,
            (1.0 / 3.0) / s3,
            -0.5 / s2,
            (1.0 / 3.0) / s3,
            (-2.0 / 3.0) / s3,
        ];
        for (i, w) in want.iter().enumerate() {
            for t in 0..2 {
                let g = a.double_value(&[i as i64, t]);
                assert!((g - w).abs() < 1e-5, "row {i}: {g} vs {w}");
            }
        }
        // Equal rewards: advantage 0, not NaN.
        let same = grpo_advantages(
            &Tensor::from_slice(&[1.0f32, 1.0]),
            &[0, 0],
            &mask.narrow(0, 0, 2),
            1e-6,
        )
        .unwrap();
        assert_eq!(same.abs().sum(Kind::Double).double_value(&[]), 0.0);
    }

    #[test]
    fn singleton_group_is_refused() {
        let r = Tensor::from_slice(&[1.0f32, 0.0, 1.0]);
        let mask = Tensor::ones([3, 1], (Kind::Float, tch::Device::Cpu));
        let err = grpo_advantages(&r, &[0, 0, 1], &mask, 1e-6)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("at least 2") && err.contains("group id 1"),
            "{err}"
        );
        let err = grpo_advantages(&r, &[0, 0], &mask, 1e-6)
            .unwrap_err()
            .to_string();
        assert!(err.contains("group_ids has 2"), "{err}");
    }

    /// Two trajectories (one group), three tokens; the second has two tokens.
    #[test]
    fn loss_by_hand() {
        let mask = Tensor::from_slice2(&[[1.0f64, 1.0, 1.0], [1.0, 1.0, 0.0]]);
        let r = Tensor::from_slice(&[1.0f64, 0.0]);
        let loss = Grpo::new(GrpoConfig::default()).unwrap();
        let adv = loss
            .advantages(&AdvantageInputs {
                group_ids: Some(&[0, 0]),
                ..AdvantageInputs::new(&r, &mask)
            })
            .unwrap()
            .unwrap()
            .advantages;
        let a = 0.5 / (0.5f64.sqrt() + 1e-6); // +-0.7071
                                              // log-ratios per token: ln 1.5, 0, ln 0.9 | ln 0.7, ln 1.1, (padding).
        let old = Tensor::zeros([2, 3], (Kind::Double, tch::Device::Cpu));
        let lr = [
            [1.5f64.ln(), 0.0, 0.9f64.ln()],
            [0.7f64.ln(), 1.1f64.ln(), 5.0],
        ];
        let logp = Tensor::from_slice2(&lr);
        // reference log-probs chosen so d = ref - logp = 0.1 everywhere.
        let ref_lp = &logp + 0.1;
        let out = loss
            .loss(&LossInputs {
                old_logprobs: Some(&old),
                advantages: Some(&adv),
                ref_logprobs: Some(&ref_lp),
                ..LossInputs::new(&logp, &mask, &r)
            })
            .unwrap();
        // A>0 row: -A*min(rho, 1.2) -> -A*1.2, -A*1, -A*0.9.
        // A<0 row: max(A*rho, A*clip) with -A>0 -> A*... : rho 0.7 -> clip 0.8 -> +A*0.8;
        //          rho 1.1 -> +A*1.1 (unclipped).
        let pg = (-1.2 - 1.0 - 0.9 + 0.8 + 1.1) * a / 5.0;
        let k3 = 0.1f64.exp() - 0.1 - 1.0;
        let want = pg + 0.001 * k3;
        assert!((out.loss.double_value(&[]) - want).abs() < 1e-9);
        let clipfrac = out
            .metrics
            .iter()
            .find(|(n, _)| n == "actor/pg_clipfrac")
            .unwrap()
            .1;
        assert!((clipfrac - 2.0 / 5.0).abs() < 1e-12);
    }
}
