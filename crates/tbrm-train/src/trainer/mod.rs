//! The training loop: sample a prompt batch -> generate n responses per prompt with the current
//! weights -> reward -> `Trajectory` records (plus off-policy ones) -> reference log-probs ->
//! update -> metrics, evaluation, checkpoints.
//!
//! The pieces, each in its own file:
//! - `sources.rs`: where a step's trajectories come from (rollouts, stale rollouts, replay,
//!   offline files) and the task's problems;
//! - `batching.rs`: batch planning (token-budget passes sorted by length) and the tensors the
//!   losses read;
//! - `update.rs`: gradients over micro-batches through the memory-lean pass, recomputed old
//!   log-probs, the optimizer steps (epochs x mini-batches);
//! - `state.rs`: checkpoints and resume;
//! - `distributed.rs`: data parallelism over torch.distributed process groups (torchrun);
//! - this file: building a run, the step loop.
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
pub mod distributed;
mod sources;
mod state;
pub mod update;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use tbrm_algo::{AlgoError, LossConfig, LossKind, Needs, PolicyLoss};
use tbrm_data::{load_offline, DataError, ReplayBuffer, Sampler, Trajectory};
use tbrm_model::{CausalLm, LeanOptions, ModelError, Tokenizer};
use tch::Device;

use crate::builtin;
use crate::checkpoint::CheckpointError;
use crate::config::{Algorithm, ConfigError, TrainConfig};
use crate::critic::Critic;
use crate::metrics::{StepMetrics, Summary, TrainObserver};
use crate::optim::{AdamW, AdamWConfig, OptimError};
use crate::reward::{Reward, RewardError};
use crate::rollout::{
    configure_stops, derive_seed, encode_problem, evaluate_correct, EncodedProblem,
};
use crate::run_dir::{RunDir, RunDirError};
use crate::schedule::LrSchedule;
use crate::task::TaskError;
use batching::BatchPlan;
pub use distributed::{Dist, LaunchOptions};
pub use sources::TaskData;
use sources::{prompt_split, StepSums};
use update::{UpdateSchedule, Updater};

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
    /// A collective failed: a rank died, hung past `train.dist_timeout_s`, or could not join.
    /// `hint` says which ranks to look at.
    #[error("data parallelism: {during}: {error}{hint}")]
    Dist {
        during: String,
        error: tbrm_dist::DistError,
        hint: String,
    },
    /// Bad launch settings or a rank that failed to set up.
    #[error("data parallelism: {0}")]
    Launch(String),
}

impl TrainError {
    /// A failed collective of training step `step` says so.
    fn at_step(self, step: u64) -> Self {
        match self {
            TrainError::Dist {
                during,
                error,
                hint,
            } => TrainError::Dist {
                during: format!("step {step}: {during}"),
                error,
                hint,
            },
            other => other,
        }
    }

    pub(crate) fn model(path: impl AsRef<Path>, source: ModelError) -> Self {
        TrainError::Model {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

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
    /// The process group of a data-parallel run (`None`: one process).
    dist: Option<Dist>,
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
    lc.tbrm.trust_region = a.trust_region;
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
    pub fn new(cfg: TrainConfig, output: &Path, task: TaskData) -> Result<Self, TrainError> {
        Self::new_launched(cfg, output, task, None)
    }

    /// [`Trainer::new`] as one rank of a data-parallel job (`None` or a world size of 1: one
    /// process). Every rank calls it with the same config; rank 0 creates the run folder.
    pub fn new_launched(
        cfg: TrainConfig,
        output: &Path,
        task: TaskData,
        launch: Option<LaunchOptions>,
    ) -> Result<Self, TrainError> {
        cfg.validate()?;
        let (device, dist) = Self::join(&cfg, launch)?;
        let setup = Self::build_new(cfg, output, task, device, dist.as_ref());
        Self::finish_setup(setup, dist, "starting the run")
    }

    /// The device to train on and, for a world size above 1, the joined process group.
    fn join(
        cfg: &TrainConfig,
        launch: Option<LaunchOptions>,
    ) -> Result<(Device, Option<Dist>), TrainError> {
        let launch = launch.filter(|l| l.world_size > 1);
        if let Some(l) = &launch {
            distributed::validate_world(cfg, l.world_size)?;
        }
        let device = distributed::rank_device(cfg.model.device, launch.as_ref())?;
        let dist = launch
            .map(|l| Dist::connect(l, device, cfg.train.dist_timeout_s))
            .transpose()?;
        Ok((device, dist))
    }

    /// Data parallelism: every rank learns whether all ranks set up, with the same settings.
    fn finish_setup(
        setup: Result<Self, TrainError>,
        dist: Option<Dist>,
        during: &str,
    ) -> Result<Self, TrainError> {
        let Some(d) = dist else {
            return setup;
        };
        let fingerprint = setup
            .as_ref()
            .map(|t| format!("step {}\n{}", t.step, t.cfg.to_toml_string()))
            .unwrap_or_default();
        let local = setup.as_ref().map(|_| ()).map_err(|e| e.to_string());
        let agreed = d.agree(during, local, &fingerprint);
        let mut t = setup?;
        agreed?;
        t.dist = Some(d);
        Ok(t)
    }

    fn build_new(
        mut cfg: TrainConfig,
        output: &Path,
        task: TaskData,
        device: Device,
        dist: Option<&Dist>,
    ) -> Result<Self, TrainError> {
        let model_dir = builtin::resolve_path(&cfg.model.path);
        cfg.model.path = model_dir.canonicalize().unwrap_or(model_dir.clone());
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
        let run = if dist.is_none_or(Dist::is_main) {
            RunDir::create(output, &cfg)?
        } else {
            RunDir::attach(output)
        };
        Self::assemble(
            cfg, run, model_dir, policy, reference, critic, loss, task, dist,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        cfg: TrainConfig,
        run: RunDir,
        tokenizer_dir: PathBuf,
        policy: CausalLm,
        mut reference: Option<CausalLm>,
        mut critic: Option<Critic>,
        loss: Box<dyn PolicyLoss>,
        task: TaskData,
        dist: Option<&Dist>,
    ) -> Result<Self, TrainError> {
        if let (true, Some(r)) = (cfg.model.reference_offload, reference.as_mut()) {
            // Host memory between scorings (`reference_logprobs` brings it over).
            r.set_device(Device::Cpu);
        }
        let mut tok = Tokenizer::load(&tokenizer_dir).map_err(|e| TrainError::Tokenizer {
            path: tokenizer_dir.clone(),
            message: e.to_string(),
        })?;
        let template = cfg.data.template.clone();
        configure_stops(&mut tok, &cfg.rollout, &template)?;
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
        let mut opt = AdamW::for_var_store(policy.var_store(), adamw_config(&cfg))
            .with_offload(cfg.optim.offload);
        if let Some(d) = dist {
            let bucket = (cfg.optim.bucket_mb * 1e6) as usize;
            opt.enable_data_parallel(d.rank(), d.world(), bucket, cfg.optim.zero1);
            if let Some(c) = critic.as_mut() {
                // The critic's optimizer stays replicated (ZeRO-1 shards the policy's).
                c.optimizer
                    .enable_data_parallel(d.rank(), d.world(), bucket, false);
            }
        }
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
            dist: None,
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

    /// The tokens that end a sampled response (EOS, the chat template's end of turn,
    /// `rollout.stop_tokens`), as text.
    pub fn stop_tokens(&self) -> Vec<String> {
        let ids = self.tok.eos_token_ids();
        ids.iter()
            .map(|&id| {
                self.tok
                    .decode(&[id], false)
                    .unwrap_or_else(|_| id.to_string())
            })
            .collect()
    }

    /// Processes training together (1 without data parallelism).
    pub fn world_size(&self) -> usize {
        self.dist.as_ref().map_or(1, Dist::world)
    }

    /// This process's rank (0 without data parallelism).
    pub fn rank(&self) -> usize {
        self.dist.as_ref().map_or(0, Dist::rank)
    }

    /// Whether this process writes the run folder (rank 0).
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// Bytes of optimizer moments and master weights this process holds (ZeRO-1 shards them).
    pub fn optimizer_moment_bytes(&self) -> i64 {
        self.opt.moment_bytes()
    }

    /// This rank's contiguous share of a list of `n` items (all of it in one process).
    pub(crate) fn share(&self, n: usize) -> std::ops::Range<usize> {
        self.dist.as_ref().map_or(0..n, |d| d.share(n))
    }

    /// Greedy accuracy on the held-out set; `None` without one. Data parallelism: each rank
    /// decodes its share and the correct counts are summed.
    pub fn evaluate(&self) -> Result<Option<f64>, TrainError> {
        if self.held_out.is_empty() {
            return Ok(None);
        }
        let mine = &self.held_out[self.share(self.held_out.len())];
        let correct = evaluate_correct(
            &self.policy,
            &self.tok,
            mine,
            self.cfg.rollout.max_new_tokens,
            self.cfg.rollout.generation_batch,
            &crate::rollout::engine_options(&self.cfg.rollout),
            self.reward.as_ref(),
        )?;
        let mut c = [correct as f64];
        if let Some(d) = &self.dist {
            d.sum("held-out evaluation", &mut c)?;
        }
        Ok(Some(c[0] / self.held_out.len() as f64))
    }

    /// Whether to stop before the next step: `stop` on any rank (so all ranks stop together).
    fn stop_requested(&self, stop: &AtomicBool) -> Result<bool, TrainError> {
        let local = stop.load(Ordering::SeqCst);
        match &self.dist {
            Some(d) => d.any(
                &format!("stop request before step {}", self.step + 1),
                local,
            ),
            None => Ok(local),
        }
    }

    /// A mid-step stop check; with data parallelism only step boundaries stop (together).
    fn stop_now(&self, stop: &AtomicBool) -> bool {
        self.dist.is_none() && stop.load(Ordering::SeqCst)
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
            if self.stop_requested(stop)? {
                interrupted = true;
                break;
            }
            let next = self.step + 1;
            let Some(mut m) = self.train_step(stop, obs).map_err(|e| e.at_step(next))? else {
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
            if self.is_main() {
                self.run.append_line(&self.run.metrics_path(), &m)?;
            }
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
            world_size: self.world_size(),
        };
        if self.is_main() {
            tbrm_data::write_json_atomic(&self.run.summary_path(), &summary)?;
        }
        Ok(RunOutcome {
            summary,
            run_dir: self.run.root().to_path_buf(),
        })
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
        if self.stop_now(stop) {
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
        if self.stop_now(stop) {
            return Ok(None);
        }

        // Update (with data parallelism: this rank's share, reduced over ranks).
        let t2 = Instant::now();
        let lr = self.schedule.at(self.step);
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
            dist: self.dist.as_ref(),
            old_logprobs: self.cfg.algorithm.old_logprobs,
        };
        let sched = UpdateSchedule {
            epochs: self.cfg.algorithm.epochs,
            mini_batches: self.cfg.algorithm.mini_batches,
            seed: self.cfg.train.seed,
            step: self.step,
            critic_lr: lr / self.cfg.optim.lr * self.cfg.algorithm.critic_lr,
        };
        let mut stats = updater.update(&used, ref_lp.as_deref(), lr, sched)?;
        let update_s = t2.elapsed().as_secs_f64();
        let mut sums = StepSums {
            used: used.len() as f64,
            lone: singletons as f64,
            passes: stats.passes as f64,
            ..gathered.sums()
        };
        sums.reduce(self.dist.as_ref())?;
        if self.needs.group_ids {
            stats
                .extra
                .insert("grpo/lone_trajectories_dropped".into(), sums.lone);
        }
        stats.extra.insert("perf/update_passes".into(), sums.passes);
        stats
            .extra
            .insert("perf/optimizer_steps".into(), stats.optimizer_steps as f64);
        let rollout_reward_mean = StepSums::mean(sums.rollout_reward, sums.rollouts);

        // Commit (only rank 0 writes to the run folder).
        let main = self.is_main();
        self.sampler = gathered.sampler;
        if self.cfg.train.save_rollouts {
            let all = match &self.dist {
                Some(d) => d.gather_batches("gathering rollouts", &gathered.fresh)?,
                None => gathered.fresh.clone(),
            };
            if main {
                self.run
                    .append_lines(&self.run.rollouts_path(), all.iter().flatten())?;
            }
        }
        self.pending.extend(gathered.fresh);
        let consumed = self.pending.pop_front();
        if let (Some(_), Some(c)) = (self.replay.as_ref(), consumed) {
            // Every rank keeps the whole buffer: it replays draws of all ranks' rollouts.
            let c = match &self.dist {
                Some(d) => d
                    .gather_batches("gathering rollouts for replay", &[c])?
                    .concat(),
                None => c,
            };
            self.replay.as_mut().expect("checked above").extend(c);
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
        if rollout_reward_mean.is_finite() {
            self.recent_rewards.push_back(rollout_reward_mean);
            if self.recent_rewards.len() > 10 {
                self.recent_rewards.pop_front();
            }
        }
        if main {
            for s in &gathered.samples {
                self.run.append_line(&self.run.samples_path(), s)?;
            }
        }
        let kl = if stats.kl_tokens > 0.0 {
            stats.kl_sum / stats.kl_tokens
        } else {
            f64::NAN
        };
        let rollout_s = gathered.rollout_s;
        let or_zero = |m: f64| if m.is_nan() { 0.0 } else { m };
        Ok(Some(StepMetrics {
            step: self.step,
            reward_mean: StepSums::mean(sums.reward, sums.batch),
            rollout_reward_mean,
            loss: if stats.nonfinite {
                f64::NAN
            } else {
                stats.loss
            },
            kl,
            response_len: or_zero(StepSums::mean(sums.response_len, sums.batch)),
            truncated_frac: or_zero(StepSums::mean(sums.truncated, sums.batch)),
            lr,
            grad_norm: stats.grad_norm,
            tokens_per_s: if rollout_s > 0.0 {
                sums.gen_tokens / rollout_s
            } else {
                0.0
            },
            rollout_s,
            ref_s,
            update_s,
            step_s: step_start.elapsed().as_secs_f64(),
            trajectories: sums.used as usize,
            replay_trajectories: sums.replay as usize,
            offline_trajectories: sums.offline as usize,
            nonfinite_skips: self.nonfinite_skips,
            skipped: stats.nonfinite,
            eval_accuracy: None,
            extra: stats.extra,
        }))
    }
}
