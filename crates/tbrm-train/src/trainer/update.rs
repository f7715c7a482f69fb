//! The update: gradients of the step's loss, accumulated in float32 over token-budget
//! micro-batches, then one optimizer step (TBRM, GRPO) or PPO's epochs of mini-batch steps.
//!
//! Each micro-batch runs tbrm-model's memory-lean pass (`lean::forward_backward`): the loss is
//! built from per-token log-probs and the first logit that carry grad, and its gradient flows
//! back through a head that never holds the (B, T, V) logits and, with recomputation, through
//! decoder layers that kept only their inputs. Parameter gradients go straight into the
//! optimizer's float32 accumulators. Micro-batch losses are divided by the whole (mini-)batch's
//! counts (`BatchTotals`), so they sum to the loss of the whole batch whatever the cut.
//!
//! Each training step makes `algorithm.epochs x algorithm.mini_batches` optimizer steps
//! ([`UpdateSchedule`]): every epoch shuffles the batch and cuts it into mini-batches, one
//! clipped step each, with advantages computed once on the whole batch first (as verl does).
//! 1 x 1 (TBRM's Algorithm 1 in arXiv:2505.15311: no PPO-style epochs) is one step on the
//! whole batch ([`Updater::update_single`]). PPO steps actor and critic, each with its own
//! AdamW; the critic back-propagates through ordinary autograd inside the loss.
//!
//! Old log-probs (GRPO, PPO): with `algorithm.old_logprobs = "recompute"` the policy scores the
//! batch before the first step, without grad, through the training pass's own forward
//! (`tbrm_model::forward_scores`, same passes as the update's micro-batches), so on on-policy
//! data the first step's ratio is exactly 1; with `"behaviour"` the sampler's stored log-probs
//! are used. `actor/ratio_dev_first_step` logs max |ratio - 1| over the first step's tokens.
//!
//! Data parallelism (`Updater::dist`): `batch` is this rank's share. The totals the losses are
//! divided by are summed over ranks first, so each rank's gradient is that of its local sum
//! over the global totals, and the sum over ranks (the bucketed all-reduce) is the gradient of
//! the whole batch; clipping sees the global norm. PPO cuts its mini-batches from the global
//! batch (one permutation of all ranks' rows) and whitens advantages with global moments.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tbrm_algo::{
    AdvantageInputs, Advantages, AlgoError, BatchTotals, LossInputs, LossKind, PolicyLoss,
};
use tbrm_data::Trajectory;
use tbrm_model::{forward_backward, forward_scores, CausalLm, LeanOptions};
use tch::{Kind, Tensor};

use super::batching::{group_ids, index_tensor, pack, totals_of, BatchPlan, BatchTensors};
use super::distributed::Dist;
use super::TrainError;
use crate::config::OldLogprobs;
use crate::critic::Critic;
use crate::optim::AdamW;
use crate::rollout::derive_seed;

/// Results of one update phase.
#[derive(Debug, Default)]
pub struct UpdateStats {
    /// The step's loss (PPO: mean over its mini-batch steps).
    pub loss: f64,
    /// Sum over response tokens of log pi_theta - log pi_ref, and the token count.
    pub kl_sum: f64,
    pub kl_tokens: f64,
    /// Global gradient norm before clipping (PPO: of the last actor step).
    pub grad_norm: f64,
    /// A loss or gradient was not finite; no step was taken with it.
    pub nonfinite: bool,
    /// Micro-batches (forward/backward passes) run.
    pub passes: usize,
    /// Algorithm metrics (tbrm-algo names), weighted means over the batch.
    pub extra: BTreeMap<String, f64>,
    /// Optimizer steps taken (of the policy).
    pub optimizer_steps: usize,
    /// max |exp(log pi_theta - log pi_old) - 1| over this process's tokens of the first
    /// optimizer step (NaN for losses without old log-probs): 0 with recomputed old log-probs
    /// on on-policy data.
    pub first_ratio_dev: f64,
}

/// The optimizer steps of one training step: `epochs` shuffles of the batch, each cut into
/// `mini_batches` mini-batches, one step each.
#[derive(Debug, Clone, Copy)]
pub struct UpdateSchedule {
    pub epochs: usize,
    pub mini_batches: usize,
    /// Seeds the mini-batch permutation (with the step).
    pub seed: u64,
    pub step: u64,
    /// PPO's critic learning rate at this step (ignored without a critic).
    pub critic_lr: f64,
}

impl UpdateSchedule {
    /// One step on the whole batch (TBRM's Algorithm 1).
    pub fn single(seed: u64, step: u64) -> Self {
        UpdateSchedule {
            epochs: 1,
            mini_batches: 1,
            seed,
            step,
            critic_lr: 0.0,
        }
    }
}

/// Stream of `derive_seed` for the mini-batch permutation (kept from the single-file trainer).
const PPO_PERM_STREAM: u64 = 4;

/// Everything one update reads and writes.
pub struct Updater<'a> {
    pub policy: &'a CausalLm,
    pub opt: &'a mut AdamW,
    pub critic: Option<&'a mut Critic>,
    pub loss: &'a dyn PolicyLoss,
    /// Gradient micro-batches.
    pub micro: BatchPlan,
    /// No-grad scoring passes (critic values).
    pub score: BatchPlan,
    pub lean: LeanOptions,
    pub pad_id: u32,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    /// Data parallelism: `batch` is this rank's share; totals, statistics and gradients are
    /// reduced over the ranks (`None`: one process, the whole batch).
    pub dist: Option<&'a Dist>,
    /// Where GRPO/PPO's old log-probs come from (`algorithm.old_logprobs`).
    pub old_logprobs: OldLogprobs,
}

/// Adds `weight * value` of each metric into `acc`.
fn accumulate_metrics(acc: &mut BTreeMap<String, f64>, metrics: &[(String, f64)], weight: f64) {
    for (k, v) in metrics {
        *acc.entry(k.clone()).or_insert(0.0) += v * weight;
    }
}

/// Per-batch inputs of [`Updater::accumulate`].
struct LossData<'t> {
    tensors: &'t BatchTensors,
    advantages: Option<&'t Advantages>,
    /// PPO: critic values at rollout time (B, L).
    old_values: Option<&'t Tensor>,
    /// Rows of the whole (all ranks') batch: the denominator of metric weights.
    rows_total: f64,
}

/// Sums over ranks the pieces of `totals` (one collective for all of them), in order.
fn global_totals(
    dist: Option<&Dist>,
    totals: &[BatchTotals],
) -> Result<Vec<BatchTotals>, TrainError> {
    let Some(d) = dist else {
        return Ok(totals.to_vec());
    };
    let mut flat: Vec<f64> = totals
        .iter()
        .flat_map(|t| [t.trajectories, t.tokens])
        .collect();
    d.sum("batch totals", &mut flat)?;
    Ok(flat
        .chunks(2)
        .map(|c| BatchTotals {
            trajectories: c[0],
            tokens: c[1],
        })
        .collect())
}

/// Sums the accumulated gradients over ranks and clips to the global norm; returns the norm.
fn reduce_and_clip(opt: &mut AdamW, dist: Option<&Dist>, max_norm: f64) -> Result<f64, TrainError> {
    match dist {
        None => Ok(opt.clip_grad_norm(max_norm)),
        Some(d) => {
            opt.reduce_gradients(d.pg())
                .map_err(|e| d.optim_error("gradient reduction", e))?;
            opt.clip_grad_norm_dp(d.pg(), max_norm)
                .map_err(|e| d.optim_error("gradient norm", e))
        }
    }
}

fn optimizer_step(opt: &mut AdamW, dist: Option<&Dist>, lr: f64) -> Result<(), TrainError> {
    match dist {
        None => {
            opt.step(lr);
            Ok(())
        }
        Some(d) => opt
            .step_dp(d.pg(), lr)
            .map_err(|e| d.optim_error("optimizer step", e)),
    }
}

/// The statistics of a step with nothing to train on.
fn empty_stats() -> UpdateStats {
    UpdateStats {
        loss: f64::NAN,
        grad_norm: f64::NAN,
        first_ratio_dev: f64::NAN,
        ..UpdateStats::default()
    }
}

/// Statistics before any pass.
fn fresh_stats() -> UpdateStats {
    UpdateStats {
        first_ratio_dev: f64::NAN,
        ..UpdateStats::default()
    }
}

impl Updater<'_> {
    /// The step's update under `sched`: PPO, or any loss with more than one step, through
    /// [`Updater::update_epochs`]; one step on the whole batch through
    /// [`Updater::update_single`].
    pub fn update(
        &mut self,
        batch: &[&Trajectory],
        ref_lp: Option<&[Vec<f32>]>,
        lr: f64,
        sched: UpdateSchedule,
    ) -> Result<UpdateStats, TrainError> {
        if self.critic.is_some() || sched.epochs * sched.mini_batches > 1 {
            self.update_epochs(batch, ref_lp, lr, sched)
        } else {
            self.update_single(batch, ref_lp, lr)
        }
    }

    /// The gradient passes of the first epoch, as rows of `batch`: each mini-batch's rows cut
    /// by `self.micro` as [`Updater::accumulate`] cuts them.
    fn first_epoch_passes(
        &self,
        batch: &[&Trajectory],
        minis: &[(usize, Vec<usize>)],
    ) -> Vec<Vec<usize>> {
        minis
            .iter()
            .filter(|(epoch, _)| *epoch == 0)
            .flat_map(|(_, rows)| {
                let sub: Vec<&Trajectory> = rows.iter().map(|&i| batch[i]).collect();
                self.micro
                    .plan_trajectories(&sub)
                    .into_iter()
                    .map(|g| g.iter().map(|&k| rows[k]).collect::<Vec<_>>())
            })
            .collect()
    }

    /// The whole batch's tensors, with recomputed old log-probs when the loss reads them and
    /// `old_logprobs` is `recompute`: scored by the current policy (no grad) through the
    /// training forward, in `passes` (rows of `batch`: the first epoch's gradient passes, so
    /// each row is scored in the same pass shape as its first gradient pass and the first
    /// step's ratio is exactly 1). Adds the behaviour-vs-recomputed difference and the scoring
    /// time to `stats.extra` (weighted by this share of `rows_total`).
    fn batch_tensors(
        &self,
        batch: &[&Trajectory],
        ref_lp: Option<&[Vec<f32>]>,
        rows_total: f64,
        passes: &[Vec<usize>],
        stats: &mut UpdateStats,
    ) -> Result<BatchTensors, TrainError> {
        let device = self.policy.device();
        let mut tensors = BatchTensors::new(batch, ref_lp, device);
        // TBRM reads old log-probs only for its trust region, which is around the policy that
        // SAMPLED the data (mu): it always keeps the stored behaviour log-probs.
        if !self.loss.needs().old_logprobs
            || self.old_logprobs != OldLogprobs::Recompute
            || self.loss.kind() == LossKind::Tbrm
            || batch.is_empty()
        {
            return Ok(tensors);
        }
        let t0 = std::time::Instant::now();
        let l_all = tensors.mask.size()[1];
        let mut old = Tensor::zeros([batch.len() as i64, l_all], (Kind::Float, device));
        let lean = LeanOptions {
            entropy: false,
            ..self.lean
        };
        for idx in passes {
            let packed = pack(batch, idx, self.pad_id, device)?;
            let lp = forward_scores(self.policy, &packed, &lean).token_logprobs;
            let pad = l_all - lp.size()[1];
            let lp = if pad > 0 {
                lp.constant_pad_nd([0, pad])
            } else {
                lp
            };
            let _ = old.index_copy_(0, &index_tensor(idx, device), &lp);
        }
        let diff = (&old - &tensors.old).abs() * &tensors.mask;
        let tokens = tensors.mask.sum(Kind::Double).double_value(&[]);
        let share = batch.len() as f64 / rows_total;
        if tokens > 0.0 {
            let mean = diff.sum(Kind::Double).double_value(&[]) / tokens;
            stats
                .extra
                .insert("old_logprobs/behaviour_abs_diff_mean".into(), mean * share);
            if self.dist.is_none() {
                let max = diff.max().double_value(&[]);
                stats
                    .extra
                    .insert("old_logprobs/behaviour_abs_diff_max".into(), max);
            }
        }
        stats.extra.insert(
            "perf/old_logprobs_s".into(),
            t0.elapsed().as_secs_f64() * share,
        );
        tensors.old = old;
        Ok(tensors)
    }

    /// One step on the whole batch: its gradients, then one clipped optimizer step.
    pub fn update_single(
        &mut self,
        batch: &[&Trajectory],
        ref_lp: Option<&[Vec<f32>]>,
        lr: f64,
    ) -> Result<UpdateStats, TrainError> {
        let local = totals_of(batch);
        let rows = BatchTotals {
            trajectories: batch.len() as f64,
            tokens: 0.0,
        };
        let global = global_totals(self.dist, &[local, rows])?;
        let (totals, rows_total) = (global[0], global[1].trajectories);
        if rows_total == 0.0 {
            return Ok(empty_stats());
        }
        let mut stats = if batch.is_empty() {
            self.opt.zero_grad();
            fresh_stats()
        } else {
            self.gradients_with(batch, ref_lp, totals, rows_total)?
        };
        if let Some(d) = self.dist {
            d.reduce_update_stats(&mut stats)?;
        }
        if stats.nonfinite {
            self.opt.zero_grad();
            return Ok(stats);
        }
        stats.grad_norm = reduce_and_clip(self.opt, self.dist, self.grad_clip)?;
        if !stats.grad_norm.is_finite() {
            stats.nonfinite = true;
            self.opt.zero_grad();
            return Ok(stats);
        }
        optimizer_step(self.opt, self.dist, lr)?;
        self.opt.zero_grad();
        stats.optimizer_steps = 1;
        self.ratio_metric(&mut stats);
        Ok(stats)
    }

    /// `actor/ratio_dev_first_step` in one process (a max does not sum over ranks).
    fn ratio_metric(&self, stats: &mut UpdateStats) {
        if self.dist.is_none() && stats.first_ratio_dev.is_finite() {
            stats
                .extra
                .insert("actor/ratio_dev_first_step".into(), stats.first_ratio_dev);
        }
    }

    /// The whole batch's gradient in the optimizer's accumulators (no step; one process; no
    /// critic).
    pub fn gradients(
        &mut self,
        batch: &[&Trajectory],
        ref_lp: Option<&[Vec<f32>]>,
    ) -> Result<UpdateStats, TrainError> {
        self.gradients_with(batch, ref_lp, totals_of(batch), batch.len() as f64)
    }

    /// This rank's gradient, of its local loss sum over the whole batch's `totals`.
    fn gradients_with(
        &mut self,
        batch: &[&Trajectory],
        ref_lp: Option<&[Vec<f32>]>,
        totals: BatchTotals,
        rows_total: f64,
    ) -> Result<UpdateStats, TrainError> {
        let mut stats = fresh_stats();
        let passes = self.micro.plan_trajectories(batch);
        let tensors = self.batch_tensors(batch, ref_lp, rows_total, &passes, &mut stats)?;
        let advantages = self.advantages(batch, &tensors)?;
        self.opt.zero_grad();
        let all: Vec<usize> = (0..batch.len()).collect();
        let data = LossData {
            tensors: &tensors,
            advantages: advantages.as_ref(),
            old_values: None,
            rows_total,
        };
        self.accumulate(batch, &all, &data, totals, 1.0, true, true, &mut stats)?;
        if let Some(a) = &advantages {
            // Batch means of this share, weighted by its part of the whole batch.
            let share = batch.len() as f64 / rows_total;
            for (k, v) in &a.metrics {
                stats.extra.insert(k.clone(), *v * share);
            }
        }
        Ok(stats)
    }

    /// Advantages of a loss without a critic (GRPO: group-normalised, on the whole batch;
    /// TBRM: none).
    fn advantages(
        &self,
        batch: &[&Trajectory],
        tensors: &BatchTensors,
    ) -> Result<Option<Advantages>, TrainError> {
        let groups = group_ids(batch);
        let mut ai = AdvantageInputs::new(&tensors.rewards, &tensors.mask);
        if self.loss.needs().group_ids {
            ai.group_ids = Some(&groups);
        }
        ai.old_logprobs = Some(&tensors.old);
        ai.ref_logprobs = tensors.reference.as_ref();
        Ok(self.loss.advantages(&ai)?)
    }

    /// Accumulates the gradient of the loss over `rows` of `batch`, normalised by `totals`
    /// (those rows' totals, over all ranks), in micro-batches cut by `self.micro`. Returns
    /// false (and sets `stats.nonfinite`) at the first non-finite micro-batch loss. Metrics are
    /// added with weight `rows_in_micro / data.rows_total * metric_scale`. With `first_step`,
    /// the ratio's deviation from 1 goes into `stats.first_ratio_dev`.
    #[allow(clippy::too_many_arguments)]
    fn accumulate(
        &mut self,
        batch: &[&Trajectory],
        rows: &[usize],
        data: &LossData<'_>,
        totals: BatchTotals,
        metric_scale: f64,
        count_kl: bool,
        first_step: bool,
        stats: &mut UpdateStats,
    ) -> Result<bool, TrainError> {
        let sub: Vec<&Trajectory> = rows.iter().map(|&i| batch[i]).collect();
        let needs = self.loss.needs();
        // The ratio diagnostic is GRPO/PPO's; TBRM reads old log-probs only for its trust
        // region (`tbrm/trust_region_frac` reports that).
        let ratio_diagnostic = needs.old_logprobs && self.loss.kind() != LossKind::Tbrm;
        let device = self.policy.device();
        let mut lean = self.lean;
        lean.entropy = needs.entropy;
        for group in self.micro.plan_trajectories(&sub) {
            let idx: Vec<usize> = group.iter().map(|&g| rows[g]).collect();
            let packed = pack(batch, &idx, self.pad_id, device)?;
            let l = packed.response_len();
            let sel = index_tensor(&idx, device);
            let pick = |t: &Tensor| t.index_select(0, &sel).narrow(1, 0, l);
            let t = data.tensors;
            let rewards = t.rewards.index_select(0, &sel);
            let old = pick(&t.old);
            let reference = t.reference.as_ref().map(pick);
            let adv = data.advantages.map(|a| pick(&a.advantages));
            let returns = data.advantages.and_then(|a| a.returns.as_ref()).map(pick);
            let old_values = data.old_values.map(pick);
            let loss = self.loss;
            let critic = self.critic.as_deref();
            let mut sink_error = None;
            let opt = &mut *self.opt;
            let mut sink = |name: &str, g: &Tensor| {
                if let Err(e) = opt.add_grad(name, g) {
                    sink_error.get_or_insert(e);
                }
            };
            let pass = forward_backward(
                self.policy,
                &packed,
                &lean,
                |s| {
                    let values = match (needs.values, critic) {
                        (true, Some(c)) => Some(c.values(&packed)),
                        _ => None,
                    };
                    let mut x = LossInputs::new(&s.token_logprobs, &packed.response_mask, &rewards);
                    if needs.first_logit {
                        x.first_logit = Some(&s.first_logit);
                    }
                    x.ref_logprobs = reference.as_ref();
                    if needs.old_logprobs {
                        x.old_logprobs = Some(&old);
                    }
                    x.advantages = adv.as_ref();
                    x.values = values.as_ref();
                    x.old_values = old_values.as_ref();
                    x.returns = returns.as_ref();
                    x.entropy = s.entropy.as_ref();
                    x.totals = Some(totals);
                    let out = loss.loss(&x)?;
                    Ok::<_, AlgoError>((out.loss, out.metrics))
                },
                &mut sink,
            )?;
            if let Some(e) = sink_error {
                return Err(e.into());
            }
            stats.passes += 1;
            if !pass.loss.is_finite() {
                stats.nonfinite = true;
                return Ok(false);
            }
            stats.loss += pass.loss;
            if first_step && ratio_diagnostic {
                let dev = (((&pass.scores.token_logprobs - &old).exp() - 1.0).abs()
                    * &packed.response_mask)
                    .max()
                    .double_value(&[]);
                stats.first_ratio_dev = if stats.first_ratio_dev.is_nan() {
                    dev
                } else {
                    stats.first_ratio_dev.max(dev)
                };
            }
            if let (true, Some(r)) = (count_kl, &reference) {
                let diff =
                    ((&pass.scores.token_logprobs - r) * &packed.response_mask).sum(Kind::Double);
                stats.kl_sum += diff.double_value(&[]);
                stats.kl_tokens += packed.response_lens.iter().sum::<i64>() as f64;
            }
            let weight = idx.len() as f64 / data.rows_total * metric_scale;
            accumulate_metrics(&mut stats.extra, &pass.extra, weight);
        }
        Ok(true)
    }

    /// Critic values at rollout time (no grad), (B, L) in batch order, 0 at padding.
    fn old_values(&self, batch: &[&Trajectory], mask: &Tensor) -> Result<Tensor, TrainError> {
        let critic = self.critic.as_deref().expect("PPO has a critic");
        let device = self.policy.device();
        let l_all = mask.size()[1];
        let mut out = Tensor::zeros([batch.len() as i64, l_all], (Kind::Float, device));
        for idx in self.score.plan_trajectories(batch) {
            let packed = pack(batch, &idx, self.pad_id, device)?;
            let v = tch::no_grad(|| critic.values(&packed));
            let pad = l_all - v.size()[1];
            let v = if pad > 0 {
                v.constant_pad_nd([0, pad])
            } else {
                v
            };
            let _ = out.index_copy_(0, &index_tensor(&idx, device), &v.to_kind(Kind::Float));
        }
        Ok(out * mask)
    }

    /// `sched.epochs` passes of `sched.mini_batches` optimizer steps. Advantages come first,
    /// on the whole batch: PPO's from critic values at rollout time (GAE), GRPO's
    /// group-normalised, none for TBRM. PPO steps its critic alongside the actor.
    pub fn update_epochs(
        &mut self,
        batch: &[&Trajectory],
        ref_lp: Option<&[Vec<f32>]>,
        lr: f64,
        sched: UpdateSchedule,
    ) -> Result<UpdateStats, TrainError> {
        // This share's rows are global rows offset..offset + batch.len().
        let (offset, rows_total) = match self.dist {
            Some(d) => d.offset_of(batch.len())?,
            None => (0, batch.len()),
        };
        if rows_total == 0 {
            return Ok(empty_stats());
        }
        // Every epoch's mini-batches, cut from one permutation of the global batch; each
        // rank keeps the rows it holds.
        let per = rows_total.div_ceil(sched.mini_batches.max(1));
        let mut minis: Vec<(usize, Vec<usize>)> = Vec::new();
        for epoch in 0..sched.epochs {
            let mut perm: Vec<usize> = (0..rows_total).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(
                sched.seed,
                sched.step,
                PPO_PERM_STREAM ^ ((epoch as u64) << 8),
            ));
            perm.shuffle(&mut rng);
            for chunk in perm.chunks(per) {
                let local = chunk
                    .iter()
                    .filter(|&&g| g >= offset && g < offset + batch.len())
                    .map(|&g| g - offset)
                    .collect();
                minis.push((epoch, local));
            }
        }
        let mut stats = fresh_stats();
        let passes = self.first_epoch_passes(batch, &minis);
        let tensors = self.batch_tensors(batch, ref_lp, rows_total as f64, &passes, &mut stats)?;
        let (adv, old_values) = if self.critic.is_some() {
            let (adv, v) = self.ppo_advantages(batch, &tensors)?;
            (Some(adv), Some(v))
        } else if batch.is_empty() {
            (None, None)
        } else {
            (self.advantages(batch, &tensors)?, None)
        };
        let data = LossData {
            tensors: &tensors,
            advantages: adv.as_ref(),
            old_values: old_values.as_ref(),
            rows_total: rows_total as f64,
        };
        let local_totals: Vec<BatchTotals> = minis
            .iter()
            .map(|(_, rows)| totals_of(&rows.iter().map(|&i| batch[i]).collect::<Vec<_>>()))
            .collect();
        let totals = global_totals(self.dist, &local_totals)?;
        let mut norms = Vec::new();
        let mut losses = Vec::new();
        let mut critic_norm = None;
        for (k, ((epoch, mini), totals)) in minis.iter().zip(totals).enumerate() {
            self.opt.zero_grad();
            if let Some(c) = self.critic.as_deref_mut() {
                c.optimizer.zero_grad();
            }
            let loss_before = stats.loss;
            let mut ok = self.accumulate(
                batch,
                mini,
                &data,
                totals,
                1.0 / sched.epochs as f64,
                *epoch == 0,
                k == 0,
                &mut stats,
            )?;
            let mut mini_loss = stats.loss - loss_before;
            stats.loss = loss_before;
            if let Some(d) = self.dist {
                let mut agreed = [f64::from(u8::from(!ok)), if ok { mini_loss } else { 0.0 }];
                d.sum("mini-batch loss", &mut agreed)?;
                ok = agreed[0] == 0.0;
                mini_loss = agreed[1];
            }
            let (dist, grad_clip) = (self.dist, self.grad_clip);
            let mut stepped = false;
            if ok {
                let norm = reduce_and_clip(self.opt, dist, grad_clip)?;
                let cnorm = match self.critic.as_deref_mut() {
                    Some(c) => Some(reduce_and_clip(&mut c.optimizer, dist, grad_clip)?),
                    None => None,
                };
                if norm.is_finite() && cnorm.is_none_or(f64::is_finite) {
                    if let Some(c) = self.critic.as_deref_mut() {
                        optimizer_step(&mut c.optimizer, dist, sched.critic_lr)?;
                    }
                    optimizer_step(self.opt, dist, lr)?;
                    norms.push(norm);
                    critic_norm = cnorm.or(critic_norm);
                    losses.push(mini_loss);
                    stepped = true;
                }
            }
            if !stepped {
                stats.nonfinite = true;
            }
            if let Some(c) = self.critic.as_deref_mut() {
                c.optimizer.zero_grad();
            }
            self.opt.zero_grad();
        }
        if let Some(a) = &adv {
            let share = batch.len() as f64 / rows_total as f64;
            for (k, v) in &a.metrics {
                stats.extra.insert(k.clone(), *v * share);
            }
        }
        if let Some(d) = self.dist {
            let mut kl = [stats.kl_sum, stats.kl_tokens];
            d.sum("KL statistics", &mut kl)?;
            (stats.kl_sum, stats.kl_tokens) = (kl[0], kl[1]);
            d.reduce_metrics(&mut stats.extra)?;
        }
        if let Some(c) = critic_norm {
            stats.extra.insert("critic/grad_norm".into(), c);
        }
        stats.optimizer_steps = norms.len();
        stats.grad_norm = norms.last().copied().unwrap_or(f64::NAN);
        stats.loss = if losses.is_empty() {
            f64::NAN
        } else {
            losses.iter().sum::<f64>() / losses.len() as f64
        };
        self.ratio_metric(&mut stats);
        Ok(stats)
    }

    /// PPO: critic values at rollout time and GAE advantages (whitened over all ranks).
    fn ppo_advantages(
        &self,
        batch: &[&Trajectory],
        tensors: &BatchTensors,
    ) -> Result<(Advantages, Tensor), TrainError> {
        let device = self.policy.device();
        let old_values = self.old_values(batch, &tensors.mask)?;
        let mut adv = if batch.is_empty() {
            let empty = Tensor::zeros([0, 0], (Kind::Float, device));
            Advantages {
                advantages: empty.shallow_clone(),
                returns: Some(empty),
                metrics: Vec::new(),
            }
        } else {
            let mut ai = AdvantageInputs::new(&tensors.rewards, &tensors.mask);
            ai.values = Some(&old_values);
            ai.old_logprobs = Some(&tensors.old);
            ai.ref_logprobs = tensors.reference.as_ref();
            self.loss
                .advantages(&ai)?
                .ok_or(TrainError::Algo(AlgoError::MissingInput {
                    loss: "ppo",
                    input: "advantages",
                }))?
        };
        if let Some(d) = self.dist {
            // GAE's returns are raw advantages + values: whiten the raw ones over all ranks.
            let returns = adv.returns.as_ref().expect("PPO advantages carry returns");
            adv.advantages = d.whiten(&(returns - &old_values), &tensors.mask)?;
        }
        Ok((adv, old_values))
    }
}
