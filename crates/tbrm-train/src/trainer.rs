//! The training loop: sample a prompt batch -> generate n responses per prompt with the current
//! weights -> reward -> `Trajectory` records (plus off-policy ones) -> reference log-probs ->
//! update -> metrics, evaluation, checkpoints.
//!
//! One training step makes ONE optimizer step for TBRM and GRPO (Algorithm 1 of
//! arXiv:2505.15311: no PPO-style epochs), with gradients accumulated over micro-batches whose
//! losses are divided by the whole step's trajectory/token counts, so the accumulated gradient
//! is that of the mean over the whole batch (tbrm-algo `BatchTotals`). PPO makes
//! `ppo_epochs x ppo_mini_batches` steps of actor and critic, each with its own AdamW.
//!
//! Exact resume: everything random is derived from (seed, step), the data position, replay
//! buffer, pending stale rollouts and optimizer moments are saved with each checkpoint, and a
//! step only changes trainer state once it has completed (Ctrl-C in the middle of a step
//! discards that step's partial work). A resumed run therefore produces the same weights bit
//! for bit as an uninterrupted one on the CPU (tested in `tests/resume.rs`).
//!
//! Non-finite loss or gradient norm: the optimizer step is skipped, the step is counted in
//! `nonfinite_skips`, and training stops with an error after `train.max_nonfinite_steps`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rand::seq::index::sample as sample_indices;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tbrm_algo::{
    AdvantageInputs, AlgoError, BatchTotals, LossConfig, LossInputs, LossKind, Needs, PolicyLoss,
};
use tbrm_data::{
    load_dataset, load_offline, DataError, DataOrder, LoadOptions, Problem, ReplayBuffer, Sampler,
    Trajectory, TrajectorySource,
};
use tbrm_model::{score_responses, CausalLm, ModelError, PackedBatch, Tokenizer};
use tch::{Device, Kind, Tensor};

use crate::builtin;
use crate::checkpoint::{copy_tokenizer_files, CheckpointError};
use crate::config::{Algorithm, ConfigError, TrainConfig, TruncatedPolicy};
use crate::critic::{score_with_entropy, Critic};
use crate::metrics::{Sample, StepMetrics, Summary, TrainObserver};
use crate::optim::{AdamW, AdamWConfig, OptimError};
use crate::reward::{MathVerifyReward, Reward, RewardError};
use crate::rollout::{derive_seed, encode_problem, evaluate, rollout, EncodedProblem};
use crate::run_dir::{RunDir, RunDirError};
use crate::schedule::LrSchedule;
use crate::task::TaskError;

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
            let t = builtin::load(kind, &cfg.task, d.builtin_train_size, d.held_out_size)?;
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
    pub const PPO_PERM: u64 = 4;
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub summary: Summary,
    pub run_dir: PathBuf,
}

/// Results of one update phase.
#[derive(Default)]
struct UpdateStats {
    loss: f64,
    kl_sum: f64,
    kl_tokens: f64,
    grad_norm: f64,
    nonfinite: bool,
    extra: BTreeMap<String, f64>,
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

/// Prompts per step from each source: (on-policy, replay, offline).
fn prompt_split(cfg: &TrainConfig) -> (usize, usize, usize) {
    let b = cfg.rollout.prompt_batch;
    let replay = ((cfg.sources.replay_fraction * b as f64).round() as usize).min(b);
    let offline = ((cfg.sources.offline_fraction * b as f64).round() as usize).min(b - replay);
    (b - replay - offline, replay, offline)
}

/// (B, L) float32 rows, zero-padded on the right.
fn pad_rows(rows: &[&[f32]], l: usize, device: Device) -> Tensor {
    let mut flat = vec![0f32; rows.len() * l];
    for (i, r) in rows.iter().enumerate() {
        flat[i * l..i * l + r.len()].copy_from_slice(r);
    }
    Tensor::from_slice(&flat)
        .view([rows.len() as i64, l as i64])
        .to_device(device)
}

fn totals_of(batch: &[&Trajectory]) -> BatchTotals {
    BatchTotals {
        trajectories: batch.iter().filter(|t| !t.response_ids.is_empty()).count() as f64,
        tokens: batch.iter().map(|t| t.response_ids.len()).sum::<usize>() as f64,
    }
}

/// Adds `weight * value` of each metric into `acc` (weights: trajectories per micro-batch).
fn accumulate(acc: &mut BTreeMap<String, f64>, metrics: &[(String, f64)], weight: f64) {
    for (k, v) in metrics {
        *acc.entry(k.clone()).or_insert(0.0) += v * weight;
    }
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
        reference: Option<CausalLm>,
        critic: Option<Critic>,
        loss: Box<dyn PolicyLoss>,
        task: TaskData,
    ) -> Result<Self, TrainError> {
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
        let opt = AdamW::for_var_store(policy.var_store(), adamw_config(&cfg));
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

    fn eval_batch(&self) -> usize {
        if self.cfg.rollout.generation_batch > 0 {
            self.cfg.rollout.generation_batch
        } else {
            (self.cfg.rollout.prompt_batch * self.cfg.rollout.n).max(1)
        }
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
            self.eval_batch(),
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

    /// Generates one batch of rollouts for step `step` (the `batch`-th of that step).
    fn generate_batch(
        &self,
        sampler: &mut Sampler,
        batch: u64,
        source: TrajectorySource,
    ) -> Result<(Vec<Trajectory>, Vec<Sample>, usize), TrainError> {
        let idx = sampler.next_batch();
        let problems: Vec<&EncodedProblem> = idx.iter().map(|&i| &self.train_set[i]).collect();
        let seed = derive_seed(
            self.cfg.train.seed,
            self.step,
            stream::ROLLOUT ^ (batch << 8),
        );
        let r = rollout(
            &self.policy,
            &self.tok,
            &problems,
            &self.cfg.rollout,
            self.reward.as_ref(),
            seed,
            self.step,
            source,
            self.cfg.train.samples_per_step,
        )?;
        Ok((r.trajectories, r.samples, r.tokens))
    }

    /// One training step. Returns `None` when `stop` was set before the step completed (its
    /// partial work is discarded; the trainer state is that of the previous step).
    fn train_step(
        &mut self,
        stop: &AtomicBool,
        obs: &mut dyn TrainObserver,
    ) -> Result<Option<StepMetrics>, TrainError> {
        let step_start = Instant::now();
        let (_, replay_prompts, offline_prompts) = prompt_split(&self.cfg);
        let n = self.cfg.rollout.n;
        let staleness = self.cfg.sources.async_staleness as usize;

        // Rollout: work on copies of the mutable state; committed only when the step completes.
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
        let fresh_rewards: Vec<f32> = fresh.iter().flatten().map(|t| t.reward).collect();
        let rollout_reward_mean = if fresh_rewards.is_empty() {
            f64::NAN
        } else {
            fresh_rewards.iter().map(|&r| f64::from(r)).sum::<f64>() / fresh_rewards.len() as f64
        };
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }

        // The update batch: the due rollouts, then replayed and offline trajectories.
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
                for i in sample_indices(&mut rng, stored.len(), want) {
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
            for i in sample_indices(&mut rng, self.offline.len(), want) {
                batch.push(self.offline[i].clone());
                offline_count += 1;
            }
        }
        let reward_mean = if batch.is_empty() {
            f64::NAN
        } else {
            batch.iter().map(|t| f64::from(t.reward)).sum::<f64>() / batch.len() as f64
        };
        let response_len = if batch.is_empty() {
            0.0
        } else {
            batch
                .iter()
                .map(|t| t.response_ids.len() as f64)
                .sum::<f64>()
                / batch.len() as f64
        };
        let truncated_frac = if batch.is_empty() {
            0.0
        } else {
            batch.iter().filter(|t| t.truncated).count() as f64 / batch.len() as f64
        };
        let used: Vec<&Trajectory> = batch
            .iter()
            .filter(|t| !(t.truncated && self.cfg.rollout.truncated == TruncatedPolicy::Drop))
            .filter(|t| !t.response_ids.is_empty())
            .collect();
        // GRPO's baseline needs a group: a lone trajectory of its prompt (a replayed one, or
        // the survivor of dropped truncations) has no group mean to compare with.
        let mut singletons = 0usize;
        let used: Vec<&Trajectory> = if self.needs.group_ids {
            let mut sizes: HashMap<&str, usize> = HashMap::new();
            for t in &used {
                *sizes.entry(t.prompt_key.as_str()).or_insert(0) += 1;
            }
            let (keep, lone): (Vec<&Trajectory>, Vec<&Trajectory>) =
                used.iter().partition(|t| sizes[t.prompt_key.as_str()] >= 2);
            singletons = lone.len();
            keep
        } else {
            used
        };

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
        let stats = if used.is_empty() {
            UpdateStats {
                loss: f64::NAN,
                grad_norm: f64::NAN,
                ..UpdateStats::default()
            }
        } else if self.cfg.algorithm.name == Algorithm::Ppo {
            self.update_ppo(&used, ref_lp.as_deref(), lr)?
        } else {
            self.update_single(&used, ref_lp.as_deref(), lr)?
        };
        let update_s = t2.elapsed().as_secs_f64();
        let mut stats = stats;
        if self.needs.group_ids {
            stats
                .extra
                .insert("grpo/lone_trajectories_dropped".into(), singletons as f64);
        }

        // Commit.
        self.sampler = sampler;
        if self.cfg.train.save_rollouts {
            self.run
                .append_lines(&self.run.rollouts_path(), fresh.iter().flatten())?;
        }
        self.pending.extend(fresh);
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
        if rollout_reward_mean.is_finite() {
            self.recent_rewards.push_back(rollout_reward_mean);
            if self.recent_rewards.len() > 10 {
                self.recent_rewards.pop_front();
            }
        }
        for s in &samples {
            self.run.append_line(&self.run.samples_path(), s)?;
        }
        let kl = if stats.kl_tokens > 0.0 {
            stats.kl_sum / stats.kl_tokens
        } else {
            f64::NAN
        };
        Ok(Some(StepMetrics {
            step: self.step,
            reward_mean,
            rollout_reward_mean,
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
                gen_tokens as f64 / rollout_s
            } else {
                0.0
            },
            rollout_s,
            ref_s,
            update_s,
            step_s: step_start.elapsed().as_secs_f64(),
            trajectories: used.len(),
            replay_trajectories: replay_count,
            offline_trajectories: offline_count,
            nonfinite_skips: self.nonfinite_skips,
            skipped: stats.nonfinite,
            eval_accuracy: None,
            extra: stats.extra,
        }))
    }

    fn pack(&self, rows: &[&Trajectory]) -> Result<PackedBatch, TrainError> {
        let pairs: Vec<(&[u32], &[u32])> = rows
            .iter()
            .map(|t| (t.prompt_ids.as_slice(), t.response_ids.as_slice()))
            .collect();
        PackedBatch::try_new(&pairs, self.tok.pad_token_id(), self.device)
            .map_err(TrainError::Generation)
    }

    /// log pi_ref per response token of every trajectory, from the frozen reference.
    fn reference_logprobs(&self, batch: &[&Trajectory]) -> Result<Vec<Vec<f32>>, TrainError> {
        let reference = self
            .reference
            .as_ref()
            .expect("reference built when the loss needs it");
        let mut out = Vec::with_capacity(batch.len());
        for mb in batch.chunks(self.cfg.optim.micro_batch) {
            let packed = self.pack(mb)?;
            let lp = tch::no_grad(|| score_responses(reference, &packed).token_logprobs)
                .to_device(Device::Cpu)
                .to_kind(Kind::Float);
            for (i, t) in mb.iter().enumerate() {
                let row: Vec<f32> = Vec::<f32>::try_from(lp.get(i as i64))?;
                out.push(row[..t.response_ids.len()].to_vec());
            }
        }
        Ok(out)
    }

    /// Whole-batch tensors: rewards (B,), response mask (B, L), behaviour and reference
    /// log-probs (B, L).
    fn batch_tensors(
        &self,
        batch: &[&Trajectory],
        ref_lp: Option<&[Vec<f32>]>,
    ) -> (Tensor, Tensor, Tensor, Option<Tensor>) {
        let l = batch
            .iter()
            .map(|t| t.response_ids.len())
            .max()
            .unwrap_or(0);
        let rewards: Vec<f32> = batch.iter().map(|t| t.reward).collect();
        let ones: Vec<Vec<f32>> = batch
            .iter()
            .map(|t| vec![1.0; t.response_ids.len()])
            .collect();
        let mask = pad_rows(
            &ones.iter().map(|v| v.as_slice()).collect::<Vec<_>>(),
            l,
            self.device,
        );
        let old = pad_rows(
            &batch
                .iter()
                .map(|t| t.behaviour_logprobs.as_slice())
                .collect::<Vec<_>>(),
            l,
            self.device,
        );
        let reference = ref_lp.map(|r| {
            pad_rows(
                &r.iter().map(|v| v.as_slice()).collect::<Vec<_>>(),
                l,
                self.device,
            )
        });
        (
            Tensor::from_slice(&rewards).to_device(self.device),
            mask,
            old,
            reference,
        )
    }

    fn group_ids(batch: &[&Trajectory]) -> Vec<usize> {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        batch
            .iter()
            .map(|t| {
                let next = ids.len();
                *ids.entry(t.prompt_key.as_str()).or_insert(next)
            })
            .collect()
    }

    /// TBRM / GRPO: one optimizer step on the whole batch, micro-batched.
    fn update_single(
        &mut self,
        batch: &[&Trajectory],
        ref_lp: Option<&[Vec<f32>]>,
        lr: f64,
    ) -> Result<UpdateStats, TrainError> {
        let (rewards, mask, old, reference) = self.batch_tensors(batch, ref_lp);
        let groups = Self::group_ids(batch);
        let advantages = {
            let mut ai = AdvantageInputs::new(&rewards, &mask);
            if self.needs.group_ids {
                ai.group_ids = Some(&groups);
            }
            ai.old_logprobs = Some(&old);
            ai.ref_logprobs = reference.as_ref();
            self.loss.advantages(&ai)?
        };
        let totals = totals_of(batch);
        let mut stats = UpdateStats::default();
        self.opt.zero_grad();
        let mut start = 0usize;
        for mb in batch.chunks(self.cfg.optim.micro_batch) {
            let rows = mb.len() as i64;
            let packed = self.pack(mb)?;
            let l = packed.response_len();
            let scores = score_responses(&self.policy, &packed);
            let slice = |t: &Tensor| t.narrow(0, start as i64, rows).narrow(1, 0, l);
            let ref_mb = reference.as_ref().map(slice);
            let old_mb = slice(&old);
            let adv_mb = advantages.as_ref().map(|a| slice(&a.advantages));
            let rewards_mb = rewards.narrow(0, start as i64, rows);
            let mut x = LossInputs::new(&scores.token_logprobs, &packed.response_mask, &rewards_mb);
            if self.needs.first_logit {
                x.first_logit = Some(&scores.first_logit);
            }
            x.ref_logprobs = ref_mb.as_ref();
            if self.needs.old_logprobs {
                x.old_logprobs = Some(&old_mb);
            }
            x.advantages = adv_mb.as_ref();
            x.totals = Some(totals);
            let out = self.loss.loss(&x)?;
            let v = out.loss.double_value(&[]);
            if !v.is_finite() {
                stats.nonfinite = true;
                break;
            }
            out.loss.backward();
            stats.loss += v;
            if let Some(r) = &ref_mb {
                let diff = tch::no_grad(|| {
                    ((scores.token_logprobs.detach() - r) * &packed.response_mask).sum(Kind::Double)
                });
                stats.kl_sum += diff.double_value(&[]);
                stats.kl_tokens += packed.response_lens.iter().sum::<i64>() as f64;
            }
            accumulate(
                &mut stats.extra,
                &out.metrics,
                rows as f64 / batch.len() as f64,
            );
            start += mb.len();
        }
        if let Some(a) = &advantages {
            for (k, v) in &a.metrics {
                stats.extra.insert(k.clone(), *v);
            }
        }
        if stats.nonfinite {
            self.opt.zero_grad();
            return Ok(stats);
        }
        stats.grad_norm = self.opt.clip_grad_norm(self.cfg.optim.grad_clip);
        if !stats.grad_norm.is_finite() {
            stats.nonfinite = true;
            self.opt.zero_grad();
            return Ok(stats);
        }
        self.opt.step(lr);
        self.opt.zero_grad();
        Ok(stats)
    }

    /// PPO: critic values at rollout time, GAE advantages, then `ppo_epochs` passes of
    /// `ppo_mini_batches` actor + critic steps.
    fn update_ppo(
        &mut self,
        batch: &[&Trajectory],
        ref_lp: Option<&[Vec<f32>]>,
        lr: f64,
    ) -> Result<UpdateStats, TrainError> {
        let critic_lr = lr / self.cfg.optim.lr * self.cfg.algorithm.critic_lr;
        let (rewards, mask, old, reference) = self.batch_tensors(batch, ref_lp);
        let l_all = mask.size()[1];
        let old_values = {
            let critic = self.critic.as_ref().expect("PPO has a critic");
            let mut parts = Vec::new();
            for mb in batch.chunks(self.cfg.optim.micro_batch) {
                let packed = self.pack(mb)?;
                let v = tch::no_grad(|| critic.values(&packed));
                let pad = l_all - v.size()[1];
                parts.push(if pad > 0 {
                    v.constant_pad_nd([0, pad])
                } else {
                    v
                });
            }
            Tensor::cat(&parts, 0) * &mask
        };
        let adv = {
            let mut ai = AdvantageInputs::new(&rewards, &mask);
            ai.values = Some(&old_values);
            ai.old_logprobs = Some(&old);
            ai.ref_logprobs = reference.as_ref();
            self.loss.advantages(&ai)?.ok_or({
                TrainError::Algo(AlgoError::MissingInput {
                    loss: "ppo",
                    input: "advantages",
                })
            })?
        };
        let returns = adv.returns.as_ref().map(|r| r.shallow_clone());
        let mut stats = UpdateStats::default();
        let mut norms = Vec::new();
        let mut losses = Vec::new();
        let epochs = self.cfg.algorithm.ppo_epochs;
        let minis = self.cfg.algorithm.ppo_mini_batches;
        for epoch in 0..epochs {
            let mut perm: Vec<usize> = (0..batch.len()).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(
                self.cfg.train.seed,
                self.step,
                stream::PPO_PERM ^ ((epoch as u64) << 8),
            ));
            perm.shuffle(&mut rng);
            let per = batch.len().div_ceil(minis);
            for idx in perm.chunks(per) {
                let rows: Vec<&Trajectory> = idx.iter().map(|&i| batch[i]).collect();
                let totals = totals_of(&rows);
                self.opt.zero_grad();
                self.critic.as_mut().expect("critic").optimizer.zero_grad();
                let mut mini_loss = 0.0;
                let mut bad = false;
                for micro in idx.chunks(self.cfg.optim.micro_batch) {
                    let mrows: Vec<&Trajectory> = micro.iter().map(|&i| batch[i]).collect();
                    let packed = self.pack(&mrows)?;
                    let l = packed.response_len();
                    let sel =
                        Tensor::from_slice(&micro.iter().map(|&i| i as i64).collect::<Vec<_>>())
                            .to_device(self.device);
                    let pick = |t: &Tensor| t.index_select(0, &sel).narrow(1, 0, l);
                    let (scores, entropy) = score_with_entropy(&self.policy, &packed);
                    let values = self.critic.as_ref().expect("critic").values(&packed);
                    let rewards_mb = rewards.index_select(0, &sel);
                    let old_mb = pick(&old);
                    let ref_mb = reference.as_ref().map(pick);
                    let adv_mb = pick(&adv.advantages);
                    let ret_mb = returns.as_ref().map(pick);
                    let oldv_mb = pick(&old_values);
                    let mut x =
                        LossInputs::new(&scores.token_logprobs, &packed.response_mask, &rewards_mb);
                    x.old_logprobs = Some(&old_mb);
                    x.ref_logprobs = ref_mb.as_ref();
                    x.advantages = Some(&adv_mb);
                    x.values = Some(&values);
                    x.old_values = Some(&oldv_mb);
                    x.returns = ret_mb.as_ref();
                    x.entropy = Some(&entropy);
                    x.totals = Some(totals);
                    let out = self.loss.loss(&x)?;
                    let v = out.loss.double_value(&[]);
                    if !v.is_finite() {
                        bad = true;
                        break;
                    }
                    out.loss.backward();
                    mini_loss += v;
                    if epoch == 0 {
                        if let Some(r) = &ref_mb {
                            let diff = tch::no_grad(|| {
                                ((scores.token_logprobs.detach() - r) * &packed.response_mask)
                                    .sum(Kind::Double)
                            });
                            stats.kl_sum += diff.double_value(&[]);
                            stats.kl_tokens += packed.response_lens.iter().sum::<i64>() as f64;
                        }
                    }
                    let weight = micro.len() as f64 / (batch.len() * epochs) as f64;
                    accumulate(&mut stats.extra, &out.metrics, weight);
                }
                let norm = if bad {
                    f64::NAN
                } else {
                    self.opt.clip_grad_norm(self.cfg.optim.grad_clip)
                };
                let critic = self.critic.as_mut().expect("critic");
                let cnorm = if bad {
                    f64::NAN
                } else {
                    critic.optimizer.clip_grad_norm(self.cfg.optim.grad_clip)
                };
                if bad || !norm.is_finite() || !cnorm.is_finite() {
                    stats.nonfinite = true;
                    self.opt.zero_grad();
                    critic.optimizer.zero_grad();
                    continue;
                }
                self.opt.step(lr);
                critic.optimizer.step(critic_lr);
                self.opt.zero_grad();
                critic.optimizer.zero_grad();
                norms.push(norm);
                stats.extra.insert("critic/grad_norm".into(), cnorm);
                losses.push(mini_loss);
            }
        }
        for (k, v) in &adv.metrics {
            stats.extra.insert(k.clone(), *v);
        }
        stats.grad_norm = norms.last().copied().unwrap_or(f64::NAN);
        stats.loss = if losses.is_empty() {
            f64::NAN
        } else {
            losses.iter().sum::<f64>() / losses.len() as f64
        };
        Ok(stats)
    }
}
