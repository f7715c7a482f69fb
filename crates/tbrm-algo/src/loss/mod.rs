//! The loss registry: [`LossKind`] names a loss in config, [`build`] holds the one `match`
//! that turns a [`LossConfig`] into a `Box<dyn PolicyLoss>` (after verl's
//! `core_algos.py` registry). A new algorithm is one file, one variant, one arm.
//!
//! How the trainer drives a loss for one training step:
//! 1. `loss.needs()` says which tensors to compute (reference / old log-probs, critic
//!    values, entropies, group ids); `check_rollouts_per_prompt(n)` refuses bad `n` at start.
//! 2. `loss.advantages(&AdvantageInputs)` once on the WHOLE batch (group statistics and
//!    whitening must see every trajectory); TBRM returns `None`.
//! 3. Per micro-batch: `loss.loss(&LossInputs { totals: Some(step_totals), .. })`, backward,
//!    and one optimizer step after the last micro-batch. With `totals` set to the whole
//!    step's [`BatchTotals`], the micro-batch losses sum to the full-batch loss.

pub mod grpo;
pub mod ppo;
pub mod tbrm;

pub use grpo::GrpoConfig;
pub use ppo::PpoConfig;
pub use tbrm::TbrmConfig;

use crate::agg::BatchTotals;
use crate::error::AlgoError;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The loss named in config: `tbrm`, `grpo` or `ppo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    #[default]
    Tbrm,
    Grpo,
    Ppo,
}

impl LossKind {
    pub const ALL: [LossKind; 3] = [LossKind::Tbrm, LossKind::Grpo, LossKind::Ppo];

    pub fn name(self) -> &'static str {
        match self {
            LossKind::Tbrm => "tbrm",
            LossKind::Grpo => "grpo",
            LossKind::Ppo => "ppo",
        }
    }
}

impl std::fmt::Display for LossKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LossKind {
    type Err = AlgoError;
    fn from_str(s: &str) -> Result<Self, AlgoError> {
        LossKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| AlgoError::UnknownLoss(s.to_string()))
    }
}

/// Which loss, and every loss's hyper-parameters (only the chosen one's are used), e.g.
/// ```toml
/// kind = "tbrm"
/// [tbrm]
/// beta = 0.002
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    pub kind: LossKind,
    pub tbrm: TbrmConfig,
    pub grpo: GrpoConfig,
    pub ppo: PpoConfig,
}

/// The registry: the configured loss, with its hyper-parameters validated.
pub fn build(cfg: &LossConfig) -> Result<Box<dyn PolicyLoss>, AlgoError> {
    Ok(match cfg.kind {
        LossKind::Tbrm => Box::new(tbrm::Tbrm::new(cfg.tbrm.clone())?),
        LossKind::Grpo => Box::new(grpo::Grpo::new(cfg.grpo.clone())?),
        LossKind::Ppo => Box::new(ppo::Ppo::new(cfg.ppo.clone())?),
    })
}

/// What a loss needs the trainer to compute. Anything `false` may be left `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// Raw logit of the first response token, `(B,)` (TBRM's Q(s_1, a_1)).
    pub first_logit: bool,
    /// `log pi_ref` per response token from the frozen initial model.
    pub ref_logprobs: bool,
    /// `log pi_old` per response token (the weights that sampled, for the ratio).
    pub old_logprobs: bool,
    /// A critic: values at rollout time (for advantages) and with grad (for the loss).
    pub values: bool,
    /// Per-token entropies of pi_theta, `(B, L)`, with grad.
    pub entropy: bool,
    /// Which trajectories share a prompt ([`AdvantageInputs::group_ids`]).
    pub group_ids: bool,
    /// Smallest number of rollouts per prompt the loss accepts.
    pub min_rollouts_per_prompt: usize,
}

/// Whole-batch inputs of [`PolicyLoss::advantages`], before micro-batching.
pub struct AdvantageInputs<'a> {
    /// `(B,)` outcome reward per trajectory.
    pub rewards: &'a Tensor,
    /// `(B, L)` 0/1, right-padded.
    pub response_mask: &'a Tensor,
    /// `B` ids; rollouts of the same prompt share one.
    pub group_ids: Option<&'a [usize]>,
    /// `(B, L)` critic values at rollout time (no grad).
    pub values: Option<&'a Tensor>,
    pub old_logprobs: Option<&'a Tensor>,
    pub ref_logprobs: Option<&'a Tensor>,
}

impl<'a> AdvantageInputs<'a> {
    pub fn new(rewards: &'a Tensor, response_mask: &'a Tensor) -> Self {
        AdvantageInputs {
            rewards,
            response_mask,
            group_ids: None,
            values: None,
            old_logprobs: None,
            ref_logprobs: None,
        }
    }
}

/// Output of [`PolicyLoss::advantages`]; slice its rows along with each micro-batch.
pub struct Advantages {
    /// `(B, L)` per-token advantages, 0 at padding.
    pub advantages: Tensor,
    /// `(B, L)` critic targets (PPO only).
    pub returns: Option<Tensor>,
    pub metrics: Vec<(String, f64)>,
}

/// One micro-batch's inputs. `(B, L)` tensors over response tokens, `(B,)` per trajectory.
pub struct LossInputs<'a> {
    /// `log pi_theta(a_h | s_h)`, with grad; any value at padding.
    pub logprobs: &'a Tensor,
    /// 0/1, right-padded (ones then zeros in every row).
    pub response_mask: &'a Tensor,
    /// `(B,)` outcome reward r(tau).
    pub rewards: &'a Tensor,
    /// `(B,)` raw logit of the first response token, with grad.
    pub first_logit: Option<&'a Tensor>,
    pub ref_logprobs: Option<&'a Tensor>,
    pub old_logprobs: Option<&'a Tensor>,
    /// `(B, L)` rows of [`Advantages::advantages`].
    pub advantages: Option<&'a Tensor>,
    /// `(B, L)` current critic predictions, with grad.
    pub values: Option<&'a Tensor>,
    /// `(B, L)` critic values at rollout time (centre of the value clip).
    pub old_values: Option<&'a Tensor>,
    /// `(B, L)` rows of [`Advantages::returns`].
    pub returns: Option<&'a Tensor>,
    /// `(B, L)` per-token entropy of pi_theta, with grad.
    pub entropy: Option<&'a Tensor>,
    /// The whole step's counts when this is one micro-batch of several; `None` = whole batch.
    pub totals: Option<BatchTotals>,
}

impl<'a> LossInputs<'a> {
    pub fn new(logprobs: &'a Tensor, response_mask: &'a Tensor, rewards: &'a Tensor) -> Self {
        LossInputs {
            logprobs,
            response_mask,
            rewards,
            first_logit: None,
            ref_logprobs: None,
            old_logprobs: None,
            advantages: None,
            values: None,
            old_values: None,
            returns: None,
            entropy: None,
            totals: None,
        }
    }
}

/// A scalar loss to backpropagate plus metrics (`actor/pg_clipfrac`, `tbrm/residual_mean`,
/// ...). Metrics are means over THIS micro-batch (unscaled by `totals`); average them
/// over micro-batches weighted by their trajectory or token counts.
pub struct LossOutput {
    pub loss: Tensor,
    pub metrics: Vec<(String, f64)>,
}

/// One RL loss. Implementations hold only hyper-parameters.
pub trait PolicyLoss: Send + Sync {
    fn kind(&self) -> LossKind;
    fn needs(&self) -> Needs;
    /// Whole-batch advantages / returns, computed once before micro-batching.
    fn advantages(&self, _x: &AdvantageInputs) -> Result<Option<Advantages>, AlgoError> {
        Ok(None)
    }
    fn loss(&self, x: &LossInputs) -> Result<LossOutput, AlgoError>;

    /// Refuse a rollouts-per-prompt setting the loss cannot learn from (GRPO with n = 1).
    fn check_rollouts_per_prompt(&self, n: usize) -> Result<(), AlgoError> {
        let min = self.needs().min_rollouts_per_prompt;
        if n < min {
            return Err(AlgoError::GroupTooSmall {
                loss: self.kind().name(),
                min,
                got: n,
                detail: String::new(),
            });
        }
        Ok(())
    }
}

/// `Some` input or the error naming it.
pub(crate) fn require<'t>(
    t: Option<&'t Tensor>,
    loss: &'static str,
    input: &'static str,
) -> Result<&'t Tensor, AlgoError> {
    t.ok_or(AlgoError::MissingInput { loss, input })
}

/// Checks that `t` has exactly `expected` shape.
pub(crate) fn check_shape(
    t: &Tensor,
    input: &'static str,
    expected: &[i64],
) -> Result<(), AlgoError> {
    let got = t.size();
    if got != expected {
        return Err(AlgoError::Shape {
            input,
            got,
            expected: expected.to_vec(),
        });
    }
    Ok(())
}

/// Validates the `(B, L)` tensors, the `(B,)` rewards and the mask; returns `(B, L)`.
pub(crate) fn check_batch(
    response_mask: &Tensor,
    rewards: &Tensor,
    per_token: &[(&'static str, Option<&Tensor>)],
) -> Result<(i64, i64), AlgoError> {
    let dims = response_mask.size();
    let [b, l] = dims[..] else {
        return Err(AlgoError::Shape {
            input: "response_mask",
            got: dims,
            expected: vec![-1, -1],
        });
    };
    check_shape(rewards, "rewards", &[b])?;
    for (name, t) in per_token {
        if let Some(t) = t {
            check_shape(t, name, &[b, l])?;
        }
    }
    check_mask(response_mask)?;
    Ok((b, l))
}

/// The mask is 0/1 and right-padded: every row is ones followed by zeros.
fn check_mask(mask: &Tensor) -> Result<(), AlgoError> {
    let m = mask.to_kind(Kind::Float);
    let l = m.size()[1];
    let not_binary = m.ne(0.0).logical_and(&m.ne(1.0)).any();
    let rises = if l > 1 {
        (m.narrow(1, 1, l - 1) - m.narrow(1, 0, l - 1))
            .gt(0.0)
            .any()
    } else {
        not_binary.zeros_like()
    };
    if not_binary.logical_or(&rises).int64_value(&[]) != 0 {
        return Err(AlgoError::BadMask);
    }
    Ok(())
}

/// Metric names with values, read back in one device sync.
pub(crate) fn metrics(pairs: Vec<(&str, Tensor)>) -> Vec<(String, f64)> {
    let (names, values): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
    // Some metrics are host scalars, others live on the accelerator: gather on the CPU.
    let values: Vec<Tensor> = values
        .iter()
        .map(|t| {
            t.detach()
                .to_device(tch::Device::Cpu)
                .to_kind(Kind::Double)
                .reshape([1])
        })
        .collect();
    let all = Vec::<f64>::try_from(Tensor::cat(&values, 0))
        .unwrap_or_else(|_| vec![f64::NAN; names.len()]);
    names.into_iter().map(String::from).zip(all).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_roundtrip() {
        for k in LossKind::ALL {
            assert_eq!(k.name().parse::<LossKind>().unwrap(), k);
            assert_eq!(k.to_string(), k.name());
        }
        assert_eq!("GRPO".parse::<LossKind>().unwrap(), LossKind::Grpo);
        let err = "dpo".parse::<LossKind>().unwrap_err().to_string();
        assert!(err.contains("'dpo'") && err.contains("tbrm"), "{err}");
    }

    #[derive(Deserialize)]
    struct Wrap {
        algo: LossConfig,
    }

    #[test]
    fn config_from_toml_and_registry() {
        let w: Wrap =
            toml::from_str("[algo]\nkind = \"grpo\"\n[algo.grpo]\nkl_coef = 0.01\n").unwrap();
        assert_eq!(w.algo.kind, LossKind::Grpo);
        assert_eq!(w.algo.grpo.kl_coef, 0.01);
        assert_eq!(w.algo.tbrm.beta, 0.002);
        let loss = build(&w.algo).unwrap();
        assert_eq!(loss.kind(), LossKind::Grpo);
        assert!(toml::from_str::<Wrap>("[algo]\nkind = \"tbrm\"\nbeta = 1.0\n").is_err());
        assert!(toml::from_str::<Wrap>("[algo]\nkind = \"sac\"\n").is_err());
    }

    #[test]
    fn needs_per_loss() {
        let needs = |kind| {
            build(&LossConfig {
                kind,
                ..Default::default()
            })
            .unwrap()
            .needs()
        };
        let t = needs(LossKind::Tbrm);
        assert!(t.first_logit && t.ref_logprobs);
        assert!(!t.old_logprobs && !t.values && !t.group_ids && !t.entropy);
        assert_eq!(t.min_rollouts_per_prompt, 1);
        let g = needs(LossKind::Grpo);
        assert!(g.old_logprobs && g.ref_logprobs && g.group_ids && !g.values);
        assert_eq!(g.min_rollouts_per_prompt, 2);
        let p = needs(LossKind::Ppo);
        assert!(p.old_logprobs && p.ref_logprobs && p.values && p.entropy && !p.group_ids);
    }

    #[test]
    fn grpo_refuses_one_rollout_per_prompt() {
        let cfg = LossConfig {
            kind: LossKind::Grpo,
            ..Default::default()
        };
        let loss = build(&cfg).unwrap();
        let err = loss.check_rollouts_per_prompt(1).unwrap_err().to_string();
        assert!(err.contains("grpo") && err.contains("at least 2"), "{err}");
        assert!(loss.check_rollouts_per_prompt(4).is_ok());
        let tbrm = build(&LossConfig::default()).unwrap();
        assert!(tbrm.check_rollouts_per_prompt(1).is_ok());
    }

    #[test]
    fn bad_mask_and_shapes_are_errors() {
        let r = Tensor::from_slice(&[1.0f32, 0.0]);
        let left_padded = Tensor::from_slice2(&[[0.0f32, 1.0], [1.0, 1.0]]);
        assert!(matches!(
            check_batch(&left_padded, &r, &[]),
            Err(AlgoError::BadMask)
        ));
        let half = Tensor::from_slice2(&[[0.5f32, 0.0], [1.0, 1.0]]);
        assert!(matches!(
            check_batch(&half, &r, &[]),
            Err(AlgoError::BadMask)
        ));
        let ok = Tensor::from_slice2(&[[1.0f32, 0.0], [1.0, 1.0]]);
        assert_eq!(check_batch(&ok, &r, &[]).unwrap(), (2, 2));
        let wrong = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
        let err = check_batch(&ok, &r, &[("ref_logprobs", Some(&wrong))]).unwrap_err();
        assert!(err.to_string().contains("ref_logprobs"), "{err}");
        let r3 = Tensor::from_slice(&[1.0f32, 0.0, 0.0]);
        assert!(check_batch(&ok, &r3, &[])
            .unwrap_err()
            .to_string()
            .contains("rewards"));
    }
}
