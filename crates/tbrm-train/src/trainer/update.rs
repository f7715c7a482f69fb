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
//! TBRM and GRPO make ONE optimizer step per training step (Algorithm 1 of arXiv:2505.15311:
//! no PPO-style epochs). PPO makes `epochs x mini_batches` steps of actor and critic, each with
//! its own AdamW; the critic back-propagates through ordinary autograd inside the loss.
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
use tbrm_algo::{AdvantageInputs, Advantages, AlgoError, BatchTotals, LossInputs, PolicyLoss};
use tbrm_data::Trajectory;
use tbrm_model::{forward_backward, CausalLm, LeanOptions};
use tch::{Kind, Tensor};

use super::batching::{group_ids, index_tensor, pack, totals_of, BatchPlan, BatchTensors};
use super::distributed::Dist;
use super::TrainError;
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
}

/// PPO's schedule for one training step.
#[derive(Debug, Clone, Copy)]
pub struct PpoSchedule {
    pub epochs: usize,
    pub mini_batches: usize,
    /// Seeds the mini-batch permutation (with the step).
    pub seed: u64,
    pub step: u64,
    pub critic_lr: f64,
}

/// Stream of `derive_seed` for PPO's permutation (kept from the single-file trainer).
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
        ..UpdateStats::default()
    }
}

impl Updater<'_> {
    /// TBRM / GRPO: gradients of the whole batch, then one clipped optimizer step.
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
            UpdateStats::default()
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
        Ok(stats)
    }

    /// TBRM / GRPO: the whole batch's gradient in the optimizer's accumulators (no step; one
    /// process).
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
        let device = self.policy.device();
        let tensors = BatchTensors::new(batch, ref_lp, device);
        let needs = self.loss.needs();
        let groups = group_ids(batch);
        let advantages = {
            let mut ai = AdvantageInputs::new(&tensors.rewards, &tensors.mask);
            if needs.group_ids {
                ai.group_ids = Some(&groups);
            }
            ai.old_logprobs = Some(&tensors.old);
            ai.ref_logprobs = tensors.reference.as_ref();
            self.loss.advantages(&ai)?
        };
        let mut stats = UpdateStats::default();
        self.opt.zero_grad();
        let all: Vec<usize> = (0..batch.len()).collect();
        let data = LossData {
            tensors: &tensors,
            advantages: advantages.as_ref(),
            old_values: None,
            rows_total,
        };
        self.accumulate(batch, &all, &data, totals, 1.0, true, &mut stats)?;
        if let Some(a) = &advantages {
            // Batch means of this share, weighted by its part of the whole batch.
            let share = batch.len() as f64 / rows_total;
            for (k, v) in &a.metrics {
                stats.extra.insert(k.clone(), *v * share);
            }
        }
        Ok(stats)
    }

    /// Accumulates the gradient of the loss over `rows` of `batch`, normalised by `totals`
    /// (those rows' totals, over all ranks), in micro-batches cut by `self.micro`. Returns
    /// false (and sets `stats.nonfinite`) at the first non-finite micro-batch loss. Metrics are
    /// added with weight `rows_in_micro / data.rows_total * metric_scale`.
    #[allow(clippy::too_many_arguments)]
    fn accumulate(
        &mut self,
        batch: &[&Trajectory],
        rows: &[usize],
        data: &LossData<'_>,
        totals: BatchTotals,
        metric_scale: f64,
        count_kl: bool,
        stats: &mut UpdateStats,
    ) -> Result<bool, TrainError> {
        let sub: Vec<&Trajectory> = rows.iter().map(|&i| batch[i]).collect();
        let needs = self.loss.needs();
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

    /// PPO: critic values at rollout time, GAE advantages, then `epochs` passes of
    /// `mini_batches` actor + critic steps.
    pub fn update_ppo(
        &mut self,
        batch: &[&Trajectory],
        ref_lp: Option<&[Vec<f32>]>,
        lr: f64,
        sched: PpoSchedule,
    ) -> Result<UpdateStats, TrainError> {
        // This share's rows are global rows offset..offset + batch.len().
        let (offset, rows_total) = match self.dist {
            Some(d) => d.offset_of(batch.len())?,
            None => (0, batch.len()),
        };
        if rows_total == 0 {
            return Ok(empty_stats());
        }
        let device = self.policy.device();
        let tensors = BatchTensors::new(batch, ref_lp, device);
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
        let data = LossData {
            tensors: &tensors,
            advantages: Some(&adv),
            old_values: Some(&old_values),
            rows_total: rows_total as f64,
        };
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
        let local_totals: Vec<BatchTotals> = minis
            .iter()
            .map(|(_, rows)| totals_of(&rows.iter().map(|&i| batch[i]).collect::<Vec<_>>()))
            .collect();
        let totals = global_totals(self.dist, &local_totals)?;
        let mut stats = UpdateStats::default();
        let mut norms = Vec::new();
        let mut losses = Vec::new();
        let mut critic_norm = None;
        for ((epoch, mini), totals) in minis.iter().zip(totals) {
            self.opt.zero_grad();
            self.critic_mut().optimizer.zero_grad();
            let loss_before = stats.loss;
            let mut ok = self.accumulate(
                batch,
                mini,
                &data,
                totals,
                1.0 / sched.epochs as f64,
                *epoch == 0,
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
            if !ok {
                stats.nonfinite = true;
                self.critic_mut().optimizer.zero_grad();
                self.opt.zero_grad();
                continue;
            }
            let (dist, grad_clip) = (self.dist, self.grad_clip);
            let norm = reduce_and_clip(self.opt, dist, grad_clip)?;
            let critic = self.critic_mut();
            let cnorm = reduce_and_clip(&mut critic.optimizer, dist, grad_clip)?;
            if !norm.is_finite() || !cnorm.is_finite() {
                stats.nonfinite = true;
                critic.optimizer.zero_grad();
                self.opt.zero_grad();
                continue;
            }
            optimizer_step(&mut critic.optimizer, dist, sched.critic_lr)?;
            critic.optimizer.zero_grad();
            optimizer_step(self.opt, dist, lr)?;
            self.opt.zero_grad();
            norms.push(norm);
            critic_norm = Some(cnorm);
            losses.push(mini_loss);
        }
        let share = batch.len() as f64 / rows_total as f64;
        for (k, v) in &adv.metrics {
            stats.extra.insert(k.clone(), *v * share);
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
        stats.grad_norm = norms.last().copied().unwrap_or(f64::NAN);
        stats.loss = if losses.is_empty() {
            f64::NAN
        } else {
            losses.iter().sum::<f64>() / losses.len() as f64
        };
        Ok(stats)
    }

    fn critic_mut(&mut self) -> &mut Critic {
        self.critic.as_deref_mut().expect("PPO has a critic")
    }
}
