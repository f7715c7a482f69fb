//! Where a step's trajectories come from: the task's problems, fresh rollouts of the current
//! weights (on-policy, or held back `sources.async_staleness` steps to reproduce an
//! asynchronous actor/learner split), the replay buffer and an offline trajectory file. TBRM
//! uses them all as they are (its objective holds for any behaviour policy, arXiv:2505.15311
//! Section 4); GRPO and PPO take as old log-probs the current policy's, recomputed before the
//! update (`algorithm.old_logprobs = "recompute"`, the default: no behaviour correction for
//! stale, replayed or offline data), or the stored behaviour log-probs (`"behaviour"`).
//!
//! Gathering works on copies of the mutable state (sampler, queue); the step commits them only
//! when it completes, so an interrupted step leaves the trainer as it was.
//!
//! Data parallelism: every rank draws the same prompts, replayed and offline indices and takes
//! its contiguous share of each list (`Trainer::share`); the counts and sums of [`StepSums`]
//! are then summed over ranks.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rand::seq::index::sample as sample_indices;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tbrm_data::{load_dataset, LoadOptions, Problem, Sampler, Trajectory, TrajectorySource};

use super::distributed::Dist;
use super::{stream, TrainError, Trainer};
use crate::builtin;
use crate::config::{TrainConfig, TruncatedPolicy};
use crate::metrics::Sample;
use crate::reward::{MathVerifyReward, Reward};
use crate::rollout::{derive_seed, occurrences, rollout, EncodedProblem};

/// The problems and reward of a run.
pub struct TaskData {
    pub train: Vec<Problem>,
    pub held_out: Vec<Problem>,
    pub reward: Arc<dyn Reward>,
}

impl TaskData {
    /// From `data.*`: the built-in task, or dataset files judged by the math verifier.
    pub fn from_config(cfg: &TrainConfig) -> Result<Self, TrainError> {
        let d = &cfg.data;
        if d.train.starts_with("builtin:") {
            let kind = builtin::task_kind(&d.train)?;
            let shapes = builtin::TaskShapes {
                arith: &cfg.task,
                countdown: &cfg.countdown,
            };
            let t = builtin::load(kind, shapes, d.builtin_train_size, d.held_out_size)?;
            let held_out = match &d.held_out {
                Some(file) => load_file(cfg, Path::new(file), d.held_out_size)?,
                None => t.held_out,
            };
            return Ok(TaskData {
                train: t.train,
                held_out,
                reward: t.reward,
            });
        }
        let mut train = load_dataset(Path::new(&d.train), &load_options(cfg))?;
        if d.dedup {
            train.dedup();
        }
        let held_out = match &d.held_out {
            Some(file) => load_file(cfg, Path::new(file), d.held_out_size)?,
            None => Vec::new(),
        };
        Ok(TaskData {
            train: train.problems,
            held_out,
            reward: Arc::new(MathVerifyReward::new(cfg.reward)),
        })
    }
}

fn load_options(cfg: &TrainConfig) -> LoadOptions {
    LoadOptions {
        fields: cfg.data.fields.clone(),
        skip_malformed: cfg.data.skip_malformed,
    }
}

fn load_file(cfg: &TrainConfig, path: &Path, limit: usize) -> Result<Vec<Problem>, TrainError> {
    let mut problems = load_dataset(path, &load_options(cfg))?.problems;
    if limit > 0 {
        problems.truncate(limit);
    }
    Ok(problems)
}

/// Prompts per step from each source: (on-policy, replay, offline).
pub(crate) fn prompt_split(cfg: &TrainConfig) -> (usize, usize, usize) {
    let b = cfg.rollout.prompt_batch;
    let replay = ((cfg.sources.replay_fraction * b as f64).round() as usize).min(b);
    let offline = ((cfg.sources.offline_fraction * b as f64).round() as usize).min(b - replay);
    (b - replay - offline, replay, offline)
}

/// A step's trajectories, gathered but not yet committed.
pub(crate) struct StepBatch {
    /// The update batch: the due rollouts, then replayed and offline trajectories.
    pub batch: Vec<Trajectory>,
    /// Rollouts sampled this step (queued when stale rollouts are on).
    pub fresh: Vec<Vec<Trajectory>>,
    /// The advanced data sampler, committed with the step.
    pub sampler: Option<Sampler>,
    pub samples: Vec<Sample>,
    pub gen_tokens: usize,
    pub rollout_s: f64,
    pub replay_count: usize,
    pub offline_count: usize,
}

/// A step's counts and sums on this rank (summed over ranks by [`StepSums::reduce`]); the
/// logged means are formed from them.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct StepSums {
    /// Trajectories in the update batch, their rewards, response tokens, truncated ones.
    pub batch: f64,
    pub reward: f64,
    pub response_len: f64,
    pub truncated: f64,
    /// Freshly sampled rollouts, their rewards, generated tokens.
    pub rollouts: f64,
    pub rollout_reward: f64,
    pub gen_tokens: f64,
    pub replay: f64,
    pub offline: f64,
    /// Trajectories the loss used, lone ones GRPO dropped, forward/backward passes.
    pub used: f64,
    pub lone: f64,
    pub passes: f64,
}

impl StepSums {
    /// Every field, in one fixed order (the layout of the cross-rank sum).
    fn fields_mut(&mut self) -> [&mut f64; 12] {
        [
            &mut self.batch,
            &mut self.reward,
            &mut self.response_len,
            &mut self.truncated,
            &mut self.rollouts,
            &mut self.rollout_reward,
            &mut self.gen_tokens,
            &mut self.replay,
            &mut self.offline,
            &mut self.used,
            &mut self.lone,
            &mut self.passes,
        ]
    }

    /// Sums every field over ranks (one collective); nothing without `dist`.
    pub fn reduce(&mut self, dist: Option<&Dist>) -> Result<(), TrainError> {
        let Some(d) = dist else {
            return Ok(());
        };
        let mut v = self.fields_mut().map(|f| *f);
        d.sum("step metrics", &mut v)?;
        for (f, x) in self.fields_mut().into_iter().zip(v) {
            *f = x;
        }
        Ok(())
    }

    /// `sum / n`, NaN when `n` is 0.
    pub fn mean(sum: f64, n: f64) -> f64 {
        if n > 0.0 {
            sum / n
        } else {
            f64::NAN
        }
    }
}

impl StepBatch {
    /// The trajectories the loss is computed on: truncated ones dropped when
    /// `rollout.truncated = "drop"`, empty responses always; for GRPO also the trajectories
    /// that are alone of their prompt (a replayed one, or the survivor of dropped truncations:
    /// no group mean to compare with). Returns them and the count of lone ones dropped.
    pub fn used(&self, cfg: &TrainConfig, needs_groups: bool) -> (Vec<&Trajectory>, usize) {
        let used: Vec<&Trajectory> = self
            .batch
            .iter()
            .filter(|t| !(t.truncated && cfg.rollout.truncated == TruncatedPolicy::Drop))
            .filter(|t| !t.response_ids.is_empty())
            .collect();
        if !needs_groups {
            return (used, 0);
        }
        let mut sizes: HashMap<&str, usize> = HashMap::new();
        for t in &used {
            *sizes.entry(t.prompt_key.as_str()).or_insert(0) += 1;
        }
        let (keep, lone): (Vec<&Trajectory>, Vec<&Trajectory>) =
            used.iter().partition(|t| sizes[t.prompt_key.as_str()] >= 2);
        (keep, lone.len())
    }

    /// This rank's counts and sums (the update's `used`, `lone` and `passes` are set by the
    /// caller).
    pub fn sums(&self) -> StepSums {
        let fresh = || self.fresh.iter().flatten();
        StepSums {
            batch: self.batch.len() as f64,
            reward: self.batch.iter().map(|t| f64::from(t.reward)).sum(),
            response_len: self.batch.iter().map(|t| t.response_ids.len() as f64).sum(),
            truncated: self.batch.iter().filter(|t| t.truncated).count() as f64,
            rollouts: fresh().count() as f64,
            rollout_reward: fresh().map(|t| f64::from(t.reward)).sum(),
            gen_tokens: self.gen_tokens as f64,
            replay: self.replay_count as f64,
            offline: self.offline_count as f64,
            ..StepSums::default()
        }
    }
}

impl Trainer {
    /// Generates one batch of rollouts for step `step` (the `batch`-th of that step).
    fn generate_batch(
        &self,
        sampler: &mut Sampler,
        batch: u64,
        source: TrajectorySource,
    ) -> Result<(Vec<Trajectory>, Vec<Sample>, usize), TrainError> {
        let idx = sampler.next_batch();
        let problems: Vec<&EncodedProblem> = idx.iter().map(|&i| &self.train_set[i]).collect();
        let occurrences = occurrences(&problems);
        let mine = self.share(problems.len());
        let seed = derive_seed(
            self.cfg.train.seed,
            self.step,
            stream::ROLLOUT ^ (batch << 8),
        );
        let r = rollout(
            &self.policy,
            &self.tok,
            &problems[mine.clone()],
            &occurrences[mine],
            &self.cfg.rollout,
            self.reward.as_ref(),
            seed,
            self.step,
            source,
            self.cfg.train.samples_per_step,
        )?;
        Ok((r.trajectories, r.samples, r.tokens))
    }

    /// Samples this step's rollouts and assembles the update batch with the due stale
    /// rollouts, replayed and offline trajectories. Changes no trainer state.
    pub(crate) fn gather(&self) -> Result<StepBatch, TrainError> {
        let (_, replay_prompts, offline_prompts) = prompt_split(&self.cfg);
        let n = self.cfg.rollout.n;
        let staleness = self.cfg.sources.async_staleness as usize;

        let t0 = Instant::now();
        let mut sampler = self.sampler.clone();
        let mut fresh: Vec<Vec<Trajectory>> = Vec::new();
        let mut samples = Vec::new();
        let mut gen_tokens = 0usize;
        if let Some(s) = sampler.as_mut() {
            let source = if staleness > 0 {
                TrajectorySource::Async
            } else {
                TrajectorySource::OnPolicy
            };
            while self.pending.len() + fresh.len() < staleness + 1 {
                let (ts, ss, tokens) =
                    self.generate_batch(s, fresh.len() as u64, source.clone())?;
                fresh.push(ts);
                if samples.is_empty() {
                    samples = ss;
                }
                gen_tokens += tokens;
            }
        }
        let rollout_s = t0.elapsed().as_secs_f64();

        let mut batch: Vec<Trajectory> = match (self.pending.front(), fresh.first()) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => f.clone(),
            (None, None) => Vec::new(),
        };
        let mut replay_count = 0;
        if let Some(r) = &self.replay {
            let want = (replay_prompts * n).min(r.len());
            if want > 0 {
                let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(
                    self.cfg.train.seed,
                    self.step,
                    stream::REPLAY,
                ));
                let stored: Vec<&Trajectory> = r.iter().collect();
                let picked = sample_indices(&mut rng, stored.len(), want).into_vec();
                for &i in &picked[self.share(picked.len())] {
                    let mut t = stored[i].clone();
                    t.source = TrajectorySource::Replay;
                    batch.push(t);
                    replay_count += 1;
                }
            }
        }
        let mut offline_count = 0;
        if !self.offline.is_empty() {
            let want = (offline_prompts * n).min(self.offline.len());
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(
                self.cfg.train.seed,
                self.step,
                stream::OFFLINE,
            ));
            let picked = sample_indices(&mut rng, self.offline.len(), want).into_vec();
            for &i in &picked[self.share(picked.len())] {
                batch.push(self.offline[i].clone());
                offline_count += 1;
            }
        }
        Ok(StepBatch {
            batch,
            fresh,
            sampler,
            samples,
            gen_tokens,
            rollout_s,
            replay_count,
            offline_count,
        })
    }
}
