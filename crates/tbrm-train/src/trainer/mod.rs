//! The training loop: sample a prompt batch -> generate n responses per prompt with the current
//! weights -> reward -> `Trajectory` records (plus off-policy ones) -> reference log-probs ->
//! update -> metrics, evaluation, checkpoints.
//!
//! The pieces, each in its own file:
//! - `sources.rs`: where a step's trajectories come from (rollouts, stale rollouts, replay,
//!   offline files) and the task's problems;
//! - `batching.rs`: batch planning (token-budget passes sorted by length) and the tensors the
//!   losses read;
//! - `update.rs`: gradients over micro-batches through the memory-lean pass, the optimizer step,
//!   PPO's epochs;
//! - this file: building and resuming a run, the step loop, checkpoints.
//!
//! Exact resume: everything random is derived from (seed, step), the data position, replay
//! buffer, pending stale rollouts and optimizer moments are saved with each checkpoint, and a
//! step only changes trainer state once it has completed (Ctrl-C in the middle of a step
//! discards that step's partial work). A resumed run therefore produces the same weights bit
//! for bit as an uninterrupted one on the CPU (tested in `tests/resume.rs`).
//!
//! Non-finite loss or gradient norm: the optimizer step is skipped, the step is counted in
//! `nonfinite_skips`, and training stops with an error after `train.max_nonfinite_steps`.

pub mod batching;
mod sources;
pub mod update;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tbrm_algo::{AlgoError, LossConfig, LossKind, Needs, PolicyLoss};
use tbrm_data::{load_offline, DataError, DataOrder, ReplayBuffer, Sampler, Trajectory};
use tbrm_model::{CausalLm, LeanOptions, ModelError, Tokenizer};
use tch::Device;

use crate::builtin;
use crate::checkpoint::{copy_tokenizer_files, CheckpointError};
use crate::config::{Algorithm, ConfigError, TrainConfig};
use crate::critic::Critic;
use crate::metrics::{StepMetrics, Summary, TrainObserver};
use crate::optim::{AdamW, AdamWConfig, OptimError};
use crate::reward::{Reward, RewardError};
use crate::rollout::{derive_seed, encode_problem, evaluate, EncodedProblem};
use crate::run_dir::{RunDir, RunDirError};
use crate::schedule::LrSchedule;
use crate::task::TaskError;
use batching::BatchPlan;
use sources::prompt_split;
pub use sources::TaskData;
use update::{PpoSchedule, UpdateStats, Updater};

/// Why training could not start or continue.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: not a usable model folder: {source}")]
    Model {
        path: PathBuf,
        #[source]
        source: ModelError,
    },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("generation failed: {0}")]
    Generation(#[source] ModelError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Reward(#[from] RewardError),
    #[error("loss: {0}")]
    Algo(#[from] AlgoError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    #[error("optimizer state: {0}")]
    Optim(#[from] OptimError),
    #[error("problem {id:?}: {message}")]
    Prompt { id: String, message: String },
    #[error(
        "stopping: {count} steps had a non-finite loss or gradient (limit train.max_nonfinite_steps = {limit}), \
         the last at step {step}; lower optim.lr or check the rewards and the model dtype"
    )]
    TooManyNonFinite { count: u64, limit: u64, step: u64 },
    #[error("cannot resume {path}: {message}")]
    Resume { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
}

impl TrainError {
    pub(crate) fn model(path: impl AsRef<Path>, source: ModelError) -> Self {
        TrainError::Model {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

/// What `trainer_state/state.json` holds besides the tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    step: u64,
    data_order: Option<DataOrder>,
    nonfinite_skips: u64,
    eval_before: Option<f64>,
    seed: u64,
    algorithm: Algorithm,
    recent_rewards: Vec<f64>,
}

const STATE_DIR: &str = "trainer_state";

/// Streams of [`derive_seed`], one per use of randomness.
mod stream {
    pub const ROLLOUT: u64 = 1;
    pub const REPLAY: u64 = 2;
    pub const OFFLINE: u64 = 3;
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub summary: Summary,
    pub run_dir: PathBuf,
}

/// A training run in progress.
pub struct Trainer {
    cfg: TrainConfig,
    run: RunDir,
    /// Where the tokenizer files come from (copied into every checkpoint).
    tokenizer_dir: PathBuf,
    device: Device,
    policy: CausalLm,
    reference: Option<CausalLm>,
    critic: Option<Critic>,
    tok: Tokenizer,
    loss: Box<dyn PolicyLoss>,
    needs: Needs,
    opt: AdamW,
    schedule: LrSchedule,
    train_set: Vec<EncodedProblem>,
    held_out: Vec<EncodedProblem>,
    reward: Arc<dyn Reward>,
    sampler: Option<Sampler>,
    replay: Option<ReplayBuffer>,
    offline: Vec<Trajectory>,
    /// Stale rollouts waiting to be trained on (`sources.async_staleness`).
    pending: VecDeque<Vec<Trajectory>>,
    step: u64,
    nonfinite_skips: u64,
    eval_before: Option<f64>,
    recent_rewards: VecDeque<f64>,
    last_checkpoint: Option<(u64, PathBuf)>,
    started: Instant,
}

fn adamw_config(cfg: &TrainConfig) -> AdamWConfig {
    AdamWConfig {
        beta1: cfg.optim.beta1,
        beta2: cfg.optim.beta2,
        eps: cfg.optim.eps,
        weight_decay: cfg.optim.weight_decay,
    }
}

/// The tbrm-algo loss config for this run's `[algorithm]` section.
pub fn loss_config(cfg: &TrainConfig) -> LossConfig {
    let a = &cfg.algorithm;
    let mut lc = LossConfig {
        kind: match a.name {
            Algorithm::Tbrm => LossKind::Tbrm,
            Algorithm::Grpo => LossKind::Grpo,
            Algorithm::Ppo => LossKind::Ppo,
        },
        ..LossConfig::default()
    };
    lc.tbrm.beta = a.beta;
    lc.grpo.clip_ratio = a.clip;
    lc.grpo.kl_coef = a.kl_coef;
    lc.ppo.clip_ratio = a.clip;
    lc.ppo.kl_coef = a.kl_coef;
    lc.ppo.entropy_coef = a.entropy_coef;
    lc.ppo.cliprange_value = a.value_clip;
    lc.ppo.gamma = a.gamma;
    lc.ppo.lam = a.lambda;
    lc
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TrainError> {
    Ok(tbrm_data::read_json(path)?)
}

impl Trainer {
    /// Starts a new run in `output` (created; must not hold a run yet).
    pub fn new(mut cfg: TrainConfig, output: &Path, task: TaskData) -> Result<Self, TrainError> {
        cfg.validate()?;
        let model_dir = builtin::resolve_path(&cfg.model.path);
        cfg.model.path = model_dir.canonicalize().unwrap_or(model_dir.clone());
        let device = cfg.model.device.resolve();
        let dtype = cfg.model.dtype.kind();
        let policy = CausalLm::load(&model_dir, device, dtype)
            .map_err(|e| TrainError::model(&model_dir, e))?;
        let loss = tbrm_algo::build(&loss_config(&cfg))?;
        loss.check_rollouts_per_prompt(cfg.rollout.n)?;
        let needs = loss.needs();
        let reference = if needs.ref_logprobs {
            Some(match &cfg.model.reference {
                Some(p) => {
                    let p = builtin::resolve_path(p);
                    CausalLm::load(&p, device, dtype).map_err(|e| TrainError::model(&p, e))?
                }
                None => policy
                    .try_clone()
                    .map_err(|e| TrainError::model(&model_dir, e))?,
            })
        } else {
            None
        };
        let critic = if needs.values {
            Some(Critic::from_policy(&policy, adamw_config(&cfg))?)
        } else {
            None
        };
        let run = RunDir::create(output, &cfg)?;
        Self::assemble(cfg, run, model_dir, policy, reference, critic, loss, task)
    }

    /// Re-opens `run_dir` at its latest complete checkpoint. `adjust` may change the saved
    /// config before anything is built (the CLI lets `--steps` extend a run and `--device`
    /// move it); the changed config is written back.
    pub fn resume(
        run_dir: &Path,
        adjust: impl FnOnce(&mut TrainConfig),
        task: Option<TaskData>,
    ) -> Result<Self, TrainError> {
        let (run, mut cfg) = RunDir::open(run_dir)?;
        adjust(&mut cfg);
        cfg.validate()?;
        let (step, ckpt) = run
            .checkpoints()
            .latest()?
            .ok_or_else(|| TrainError::Resume {
                path: run_dir.to_path_buf(),
                message: "no complete checkpoint under checkpoints/ (nothing to resume from)"
                    .into(),
            })?;
        let state_dir = ckpt.join(STATE_DIR);
        let state: TrainerState = read_json(&state_dir.join("state.json"))?;
        if state.step != step {
            return Err(TrainError::Resume {
                path: ckpt.clone(),
                message: format!(
                    "trainer state says step {} but the folder is step-{step}",
                    state.step
                ),
            });
        }
        if state.algorithm != cfg.algorithm.name {
            return Err(TrainError::Resume {
                path: run_dir.to_path_buf(),
                message: format!(
                    "checkpoint was trained with {} but the config says {}",
                    state.algorithm.as_str(),
                    cfg.algorithm.name.as_str()
                ),
            });
        }
        run.write_config(&cfg)?;
        let task = match task {
            Some(t) => t,
            None => TaskData::from_config(&cfg)?,
        };
        let device = cfg.model.device.resolve();
        let dtype = cfg.model.dtype.kind();
        let policy =
            CausalLm::load(&ckpt, device, dtype).map_err(|e| TrainError::model(&ckpt, e))?;
        let loss = tbrm_algo::build(&loss_config(&cfg))?;
        let needs = loss.needs();
        let reference = if needs.ref_logprobs {
            let p = builtin::resolve_path(cfg.model.reference.as_ref().unwrap_or(&cfg.model.path));
            Some(CausalLm::load(&p, device, dtype).map_err(|e| TrainError::model(&p, e))?)
        } else {
            None
        };
        let critic = if needs.values {
            Some(Critic::load(
                &state_dir.join("critic"),
                device,
                dtype,
                adamw_config(&cfg),
            )?)
        } else {
            None
        };
        let mut t = Self::assemble(
            cfg,
            run,
            ckpt.clone(),
            policy,
            reference,
            critic,
            loss,
            task,
        )?;
        t.opt.load(&state_dir.join("optimizer.safetensors"))?;
        t.step = step;
        t.nonfinite_skips = state.nonfinite_skips;
        t.eval_before = state.eval_before;
        t.recent_rewards = state.recent_rewards.into_iter().collect();
        if let (Some(s), Some(order)) = (t.sampler.as_mut(), state.data_order) {
            *s = Sampler::resume(t.train_set.len(), s.batch_size(), true, order)?;
        }
        if t.replay.is_some() {
            let p = state_dir.join("replay.json");
            if p.is_file() {
                t.replay = Some(ReplayBuffer::load(&p)?);
            }
        }
        let pending = state_dir.join("async_queue.json");
        if pending.is_file() {
            t.pending = read_json::<Vec<Vec<Trajectory>>>(&pending)?
                .into_iter()
                .collect();
        }
        t.last_checkpoint = Some((step, ckpt));
        t.run.truncate_logs(step)?;
        Ok(t)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        cfg: TrainConfig,
        run: RunDir,
        tokenizer_dir: PathBuf,
        policy: CausalLm,
        mut reference: Option<CausalLm>,
        critic: Option<Critic>,
        loss: Box<dyn PolicyLoss>,
        task: TaskData,
    ) -> Result<Self, TrainError> {
        if let (true, Some(r)) = (cfg.model.reference_offload, reference.as_mut()) {
            // Host memory between scorings (`reference_logprobs` brings it over).
            r.set_device(Device::Cpu);
        }
        let tok = Tokenizer::load(&tokenizer_dir).map_err(|e| TrainError::Tokenizer {
            path: tokenizer_dir.clone(),
            message: e.to_string(),
        })?;
        let template = cfg.data.template.clone();
        let mut train_set = Vec::with_capacity(task.train.len());
        for p in task.train {
            let e = encode_problem(p, &tok, &template)?;
            if cfg.data.max_prompt_tokens == 0 || e.prompt_ids.len() <= cfg.data.max_prompt_tokens {
                train_set.push(e);
            }
        }
        if train_set.is_empty() {
            return Err(TrainError::Config(ConfigError::Invalid {
                key: "data.train".into(),
                message: "no training problems (after the data.max_prompt_tokens filter)".into(),
            }));
        }
        let held_out = task
            .held_out
            .into_iter()
            .map(|p| encode_problem(p, &tok, &template))
            .collect::<Result<Vec<_>, _>>()?;
        let (on_policy, _, _) = prompt_split(&cfg);
        let sampler = if on_policy > 0 {
            Some(Sampler::new(
                train_set.len(),
                on_policy,
                cfg.train.seed,
                true,
            )?)
        } else {
            None
        };
        let replay = if cfg.sources.replay_capacity > 0 {
            Some(ReplayBuffer::new(
                cfg.sources.replay_capacity,
                derive_seed(cfg.train.seed, 0, stream::REPLAY),
            )?)
        } else {
            None
        };
        let offline = match &cfg.sources.offline_file {
            Some(f) if cfg.sources.offline_fraction > 0.0 => load_offline(f)?,
            _ => Vec::new(),
        };
        let opt = AdamW::for_var_store(policy.var_store(), adamw_config(&cfg))
            .with_offload(cfg.optim.offload);
        let schedule = LrSchedule::new(cfg.optim.lr, &cfg.optim, cfg.train.steps);
        let device = policy.device();
        let needs = loss.needs();
        Ok(Trainer {
            run,
            tokenizer_dir,
            device,
            policy,
            reference,
            critic,
            tok,
            loss,
            needs,
            opt,
            schedule,
            train_set,
            held_out,
            reward: task.reward,
            sampler,
            replay,
            offline,
            pending: VecDeque::new(),
            step: 0,
            nonfinite_skips: 0,
            eval_before: None,
            recent_rewards: VecDeque::new(),
            last_checkpoint: None,
            started: Instant::now(),
            cfg,
        })
    }

    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }
    pub fn run_dir(&self) -> &Path {
        self.run.root()
    }
    pub fn step(&self) -> u64 {
        self.step
    }
    pub fn policy(&self) -> &CausalLm {
        &self.policy
    }
    pub fn held_out_len(&self) -> usize {
        self.held_out.len()
    }

    /// Greedy accuracy on the held-out set; `None` without one.
    pub fn evaluate(&self) -> Result<Option<f64>, TrainError> {
        if self.held_out.is_empty() {
            return Ok(None);
        }
        evaluate(
            &self.policy,
            &self.tok,
            &self.held_out,
            self.cfg.rollout.max_new_tokens,
            self.cfg.rollout.generation_batch,
            &crate::rollout::engine_options(&self.cfg.rollout),
            self.reward.as_ref(),
        )
        .map(Some)
    }

    /// Runs until `train.steps` or until `stop` is set (then saves a checkpoint and returns
    /// with `summary.interrupted`).
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        obs: &mut dyn TrainObserver,
    ) -> Result<RunOutcome, TrainError> {
        self.started = Instant::now();
        let total = self.cfg.train.steps;
        obs.on_start(self.step, total);
        if self.step == 0 && self.eval_before.is_none() {
            self.eval_before = self.evaluate()?;
            if let Some(acc) = self.eval_before {
                obs.on_eval(0, acc);
            }
        }
        let mut interrupted = false;
        let mut last_eval = None;
        while self.step < total {
            if stop.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
            let Some(mut m) = self.train_step(stop, obs)? else {
                interrupted = true;
                break;
            };
            let every = self.cfg.train.eval_every;
            if (every > 0 && self.step.is_multiple_of(every)) || self.step == total {
                let acc = self.evaluate()?;
                if let Some(a) = acc {
                    obs.on_eval(self.step, a);
                }
                m.eval_accuracy = acc;
                last_eval = acc;
            }
            self.run.append_line(&self.run.metrics_path(), &m)?;
            obs.on_step(&m);
            let save_every = self.cfg.train.save_every;
            if save_every > 0 && self.step.is_multiple_of(save_every) && self.step < total {
                let p = self.save_checkpoint()?;
                obs.on_checkpoint(self.step, &p);
            }
        }
        if interrupted {
            obs.on_message(&format!(
                "interrupted after step {}; saving a checkpoint",
                self.step
            ));
        }
        if self.last_checkpoint.as_ref().map(|(s, _)| *s) != Some(self.step) {
            let p = self.save_checkpoint()?;
            obs.on_checkpoint(self.step, &p);
        }
        let eval_after = if interrupted {
            None
        } else if self.step == total && last_eval.is_some() {
            last_eval
        } else {
            self.evaluate()?
        };
        let summary = Summary {
            algorithm: self.cfg.algorithm.name.as_str().to_string(),
            eval_before: self.eval_before,
            eval_after,
            steps: self.step,
            wall_seconds: self.started.elapsed().as_secs_f64(),
            held_out_problems: self.held_out.len(),
            nonfinite_skips: self.nonfinite_skips,
            interrupted,
            final_reward_mean: (!self.recent_rewards.is_empty()).then(|| {
                self.recent_rewards.iter().sum::<f64>() / self.recent_rewards.len() as f64
            }),
            last_checkpoint: self.last_checkpoint.as_ref().map(|(_, p)| p.clone()),
        };
        tbrm_data::write_json_atomic(&self.run.summary_path(), &summary)?;
        Ok(RunOutcome {
            summary,
            run_dir: self.run.root().to_path_buf(),
        })
    }

    /// Writes checkpoint `step-<current step>` atomically; returns its folder.
    pub fn save_checkpoint(&mut self) -> Result<PathBuf, TrainError> {
        let step = self.step;
        let path = self
            .run
            .checkpoints()
            .save(step, self.cfg.train.keep_checkpoints, |dir| {
                self.write_checkpoint(dir)
            })?;
        self.last_checkpoint = Some((step, path.clone()));
        Ok(path)
    }

    fn write_checkpoint(&self, dir: &Path) -> Result<(), TrainError> {
        self.policy
            .save(dir)
            .map_err(|e| TrainError::model(dir, e))?;
        copy_tokenizer_files(&self.tokenizer_dir, dir)?;
        let st = dir.join(STATE_DIR);
        std::fs::create_dir_all(&st).map_err(|e| TrainError::Io {
            path: st.clone(),
            message: e.to_string(),
        })?;
        self.opt.save(&st.join("optimizer.safetensors"))?;
        let state = TrainerState {
            step: self.step,
            data_order: self.sampler.as_ref().map(|s| s.position()),
            nonfinite_skips: self.nonfinite_skips,
            eval_before: self.eval_before,
            seed: self.cfg.train.seed,
            algorithm: self.cfg.algorithm.name,
            recent_rewards: self.recent_rewards.iter().copied().collect(),
        };
        tbrm_data::write_json_atomic(&st.join("state.json"), &state)?;
        if let Some(r) = &self.replay {
            r.save(&st.join("replay.json"))?;
        }
        if !self.pending.is_empty() {
            tbrm_data::write_json_atomic(&st.join("async_queue.json"), &self.pending)?;
        }
        if let Some(c) = &self.critic {
            let cdir = st.join("critic");
            c.save(&cdir)?;
        }
        Ok(())
    }

    /// Limits of gradient micro-batches and of no-grad scoring passes.
    fn plans(&self) -> (BatchPlan, BatchPlan) {
        let o = &self.cfg.optim;
        let micro = BatchPlan {
            max_rows: o.micro_batch,
            max_tokens: o.micro_batch_tokens,
        };
        let score = BatchPlan {
            max_rows: if o.score_batch_tokens > 0 {
                0
            } else {
                o.micro_batch
            },
            max_tokens: o.score_batch_tokens,
        };
        (micro, score)
    }

    /// log pi_ref per response token of `used`. With `model.reference_offload` the reference
    /// lives in host memory and visits the device only for this.
    fn reference_logprobs(&mut self, used: &[&Trajectory]) -> Result<Vec<Vec<f32>>, TrainError> {
        let (_, score) = self.plans();
        let pad = self.tok.pad_token_id();
        let device = self.device;
        let offload = self.cfg.model.reference_offload;
        let reference = self
            .reference
            .as_mut()
            .expect("reference built when the loss needs it");
        batching::score_logprobs_offloaded(reference, device, offload, used, &score, pad)
    }

    /// One training step. Returns `None` when `stop` was set before the step completed (its
    /// partial work is discarded; the trainer state is that of the previous step).
    fn train_step(
        &mut self,
        stop: &AtomicBool,
        obs: &mut dyn TrainObserver,
    ) -> Result<Option<StepMetrics>, TrainError> {
        let step_start = Instant::now();
        let gathered = self.gather()?;
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let (used, singletons) = gathered.used(&self.cfg, self.needs.group_ids);

        // Reference log-probs.
        let t1 = Instant::now();
        let ref_lp = if self.needs.ref_logprobs && !used.is_empty() {
            Some(self.reference_logprobs(&used)?)
        } else {
            None
        };
        let ref_s = t1.elapsed().as_secs_f64();
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }

        // Update.
        let t2 = Instant::now();
        let lr = self.schedule.at(self.step);
        let mut stats = if used.is_empty() {
            UpdateStats {
                loss: f64::NAN,
                grad_norm: f64::NAN,
                ..UpdateStats::default()
            }
        } else {
            let (micro, score) = self.plans();
            let recompute = self
                .cfg
                .optim
                .recompute
                .enabled(self.policy.num_parameters());
            let mut updater = Updater {
                policy: &self.policy,
                opt: &mut self.opt,
                critic: self.critic.as_mut(),
                loss: self.loss.as_ref(),
                micro,
                score,
                lean: LeanOptions {
                    recompute,
                    ..LeanOptions::default()
                },
                pad_id: self.tok.pad_token_id(),
                grad_clip: self.cfg.optim.grad_clip,
            };
            if self.cfg.algorithm.name == Algorithm::Ppo {
                let sched = PpoSchedule {
                    epochs: self.cfg.algorithm.ppo_epochs,
                    mini_batches: self.cfg.algorithm.ppo_mini_batches,
                    seed: self.cfg.train.seed,
                    step: self.step,
                    critic_lr: lr / self.cfg.optim.lr * self.cfg.algorithm.critic_lr,
                };
                updater.update_ppo(&used, ref_lp.as_deref(), lr, sched)?
            } else {
                updater.update_single(&used, ref_lp.as_deref(), lr)?
            }
        };
        let update_s = t2.elapsed().as_secs_f64();
        if self.needs.group_ids {
            stats
                .extra
                .insert("grpo/lone_trajectories_dropped".into(), singletons as f64);
        }
        stats
            .extra
            .insert("perf/update_passes".into(), stats.passes as f64);
        let trajectories = used.len();
        let (reward_mean, response_len, truncated_frac) = (
            gathered.reward_mean(),
            gathered.response_len(),
            gathered.truncated_frac(),
        );

        // Commit.
        self.sampler = gathered.sampler;
        if self.cfg.train.save_rollouts {
            self.run
                .append_lines(&self.run.rollouts_path(), gathered.fresh.iter().flatten())?;
        }
        self.pending.extend(gathered.fresh);
        let consumed = self.pending.pop_front();
        if let (Some(r), Some(c)) = (self.replay.as_mut(), consumed) {
            r.extend(c);
        }
        self.step += 1;
        if stats.nonfinite {
            self.nonfinite_skips += 1;
            obs.on_message(&format!(
                "step {}: non-finite loss or gradient, update skipped ({} of at most {})",
                self.step, self.nonfinite_skips, self.cfg.train.max_nonfinite_steps
            ));
            if self.nonfinite_skips >= self.cfg.train.max_nonfinite_steps {
                return Err(TrainError::TooManyNonFinite {
                    count: self.nonfinite_skips,
                    limit: self.cfg.train.max_nonfinite_steps,
                    step: self.step,
                });
            }
        }
        if gathered.rollout_reward_mean.is_finite() {
            self.recent_rewards.push_back(gathered.rollout_reward_mean);
            if self.recent_rewards.len() > 10 {
                self.recent_rewards.pop_front();
            }
        }
        for s in &gathered.samples {
            self.run.append_line(&self.run.samples_path(), s)?;
        }
        let kl = if stats.kl_tokens > 0.0 {
            stats.kl_sum / stats.kl_tokens
        } else {
            f64::NAN
        };
        let rollout_s = gathered.rollout_s;
        Ok(Some(StepMetrics {
            step: self.step,
            reward_mean,
            rollout_reward_mean: gathered.rollout_reward_mean,
            loss: if stats.nonfinite {
                f64::NAN
            } else {
                stats.loss
            },
            kl,
            response_len,
            truncated_frac,
            lr,
            grad_norm: stats.grad_norm,
            tokens_per_s: if rollout_s > 0.0 {
                gathered.gen_tokens as f64 / rollout_s
            } else {
                0.0
            },
            rollout_s,
            ref_s,
            update_s,
            step_s: step_start.elapsed().as_secs_f64(),
            trajectories,
            replay_trajectories: gathered.replay_count,
            offline_trajectories: gathered.offline_count,
            nonfinite_skips: self.nonfinite_skips,
            skipped: stats.nonfinite,
            eval_accuracy: None,
            extra: stats.extra,
        }))
    }
}
