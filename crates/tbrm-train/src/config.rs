//! `TrainConfig`: everything a training run is made of, as one typed serde struct.
//!
//! Every section has defaults and refuses unknown keys (`deny_unknown_fields`), so a typo is an
//! error naming the key, not a silently ignored setting. [`TrainConfig::from_toml_value`]
//! deserialises a TOML tree and reports the dotted path of the offending key
//! (`serde_path_to_error`); [`TrainConfig::validate`] checks ranges and combinations, again
//! naming the key. The resolved config is written into each run folder as `config.toml`, and a
//! resumed run reads it back from there (nanoGPT's `train.py` keeps its model arguments with the
//! checkpoint for the same reason).
//!
//! Paper defaults (arXiv:2505.15311, see `shared/docs/tbrm-method.md`): beta = 0.002, clip 0.2,
//! KL and entropy coefficients 0.001, critic lr 1e-5, temperature 1.0, gamma = lambda = 1.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tbrm_data::{FieldMap, PromptTemplate};

use crate::task::arith::ArithConfig;
use crate::task::countdown::CountdownConfig;

pub mod algorithm_defaults;

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Deserialisation failed at `key` (unknown key, wrong type, bad enum value).
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
    /// A value is out of range or contradicts another one.
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// The RL algorithm (each is one loss in tbrm-algo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    Tbrm,
    Grpo,
    Ppo,
}

impl Algorithm {
    pub fn as_str(&self) -> &'static str {
        match self {
            Algorithm::Tbrm => "tbrm",
            Algorithm::Grpo => "grpo",
            Algorithm::Ppo => "ppo",
        }
    }
}

impl std::str::FromStr for Algorithm {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "tbrm" => Ok(Algorithm::Tbrm),
            "grpo" => Ok(Algorithm::Grpo),
            "ppo" => Ok(Algorithm::Ppo),
            other => Err(ConfigError::invalid(
                "algorithm.name",
                format!("unknown algorithm {other:?} (use tbrm, grpo or ppo)"),
            )),
        }
    }
}

/// Where GRPO and PPO take their old log-probs from (`algorithm.old_logprobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OldLogprobs {
    /// Scored by the current policy (before the step's update) through the training forward.
    Recompute,
    /// The behaviour log-probs stored with each trajectory.
    Behaviour,
}

/// Where the model runs: `auto` (CUDA device 0 when available, else CPU), `cpu`, `cuda` or
/// `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    pub fn resolve(&self) -> tch::Device {
        match self {
            DeviceChoice::Auto => tch::Device::cuda_if_available(),
            DeviceChoice::Cpu => tch::Device::Cpu,
            DeviceChoice::Cuda(i) => tch::Device::Cuda(*i),
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(DeviceChoice::Cuda(i)),
                _ => Err(format!(
                    "unknown device {s:?} (use auto, cpu, cuda or cuda:N)"
                )),
            },
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        match d {
            DeviceChoice::Auto => "auto".into(),
            DeviceChoice::Cpu => "cpu".into(),
            DeviceChoice::Cuda(i) => format!("cuda:{i}"),
        }
    }
}

/// Weight dtype of the policy, reference and critic.
///
/// With `bf16`/`f16` the optimizer keeps float32 master weights (see `optim.rs`), since updates
/// of size lr ~ 1e-6 vanish when added to bf16 weights directly. Log-softmax and the TBRM sums
/// run in float32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DtypeChoice {
    F32,
    Bf16,
    F16,
}

impl DtypeChoice {
    pub fn kind(&self) -> tch::Kind {
        match self {
            DtypeChoice::F32 => tch::Kind::Float,
            DtypeChoice::Bf16 => tch::Kind::BFloat16,
            DtypeChoice::F16 => tch::Kind::Half,
        }
    }
}

/// What to do with responses that hit `max_new_tokens` without an end-of-sequence token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TruncatedPolicy {
    /// Train on them with the reward the reward function gives the cut-off text.
    Keep,
    /// Train on them with reward 0, whatever the text contains (an unfinished answer is not
    /// an answer; this is what a verifier that needs the closing `\boxed{}` does anyway).
    ZeroReward,
    /// Leave them out of the update (they still count in the reward metrics).
    Drop,
}

/// Whether decoder layers are recomputed in the backward instead of keeping their activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recompute {
    /// On for models of at least [`RECOMPUTE_AUTO_PARAMS`] parameters, where activations
    /// dominate memory; off for small models, where it would only cost time.
    Auto,
    On,
    Off,
}

/// The size from which `optim.recompute = "auto"` turns recomputation on.
pub const RECOMPUTE_AUTO_PARAMS: i64 = 100_000_000;

impl Recompute {
    /// Resolved for a model with `params` parameters.
    pub fn enabled(self, params: i64) -> bool {
        match self {
            Recompute::Auto => params >= RECOMPUTE_AUTO_PARAMS,
            Recompute::On => true,
            Recompute::Off => false,
        }
    }
}

/// Learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    Cosine,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// A Hugging Face model folder (config.json, model.safetensors, tokenizer.json).
    pub path: PathBuf,
    /// The frozen reference policy pi_ref; empty means `path` (the initial policy, as in the
    /// paper). A resumed run reads the reference from here, never from a checkpoint.
    pub reference: Option<PathBuf>,
    pub device: DeviceChoice,
    pub dtype: DtypeChoice,
    /// Keep the reference model in host memory and move it to the device only for the
    /// reference-scoring phase of each step, so it takes no device memory during the update
    /// (7B on one GPU; costs one host-to-device copy of its weights per step).
    pub reference_offload: bool,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            path: PathBuf::from(crate::builtin::DEFAULT_MODEL_DIR),
            reference: None,
            device: DeviceChoice::Auto,
            dtype: DtypeChoice::F32,
            reference_offload: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Training prompts: `builtin:<task>` (e.g. `builtin:arith`) or a JSONL/JSON/Parquet file.
    pub train: String,
    /// Held-out problems for evaluation: a file, or empty to use the built-in task's held-out
    /// split (for a file dataset, empty means no evaluation).
    pub held_out: Option<String>,
    /// Problems drawn for the built-in task's training split.
    pub builtin_train_size: usize,
    /// Held-out problems used for evaluation (built-in: generated; file: the first N, 0 = all).
    pub held_out_size: usize,
    /// Field names for JSON(L) rows; empty picks the format's convention.
    pub fields: Option<FieldMap>,
    /// Skip malformed rows (counted and logged) instead of failing on the first one.
    pub skip_malformed: bool,
    /// Prompt template: `qwen_math`, `r1`, `chat`, `plain`, or text with `{question}`.
    pub template: PromptTemplate,
    /// Drop training prompts longer than this many tokens (0 = keep all).
    pub max_prompt_tokens: usize,
    /// Remove duplicate problems from the training set.
    pub dedup: bool,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            train: "builtin:arith".into(),
            held_out: None,
            builtin_train_size: 4000,
            held_out_size: 200,
            fields: None,
            skip_malformed: false,
            template: PromptTemplate::Plain,
            max_prompt_tokens: 0,
            dedup: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlgorithmSection {
    pub name: Algorithm,
    /// TBRM's KL-regularisation strength: the residual's target is r / beta.
    pub beta: f64,
    /// TBRM's trust region around the behaviour policy, in nats per token (0 = off): a token
    /// of reused data (replay, offline, stale) already moved this far from the policy that
    /// sampled it, in the direction its residual pushes, passes no gradient. Never acts on
    /// fresh on-policy data. Not an importance weight (tbrm-algo `TbrmConfig::trust_region`).
    /// Default 0.2: what made stale, replayed and offline data pay (BENCHMARKS.md).
    pub trust_region: f64,
    /// GRPO/PPO ratio clip epsilon.
    pub clip: f64,
    /// GRPO/PPO coefficient of the KL penalty to the reference (0 = no reference model).
    pub kl_coef: f64,
    /// PPO entropy bonus coefficient.
    pub entropy_coef: f64,
    /// PPO critic learning rate (its own AdamW, same betas and schedule).
    pub critic_lr: f64,
    /// Passes over each step's batch (PPO's epochs). Any algorithm; TBRM's Algorithm 1 makes
    /// one pass (more is data reuse). `ppo_epochs`, the former name, is still read.
    #[serde(alias = "ppo_epochs")]
    pub epochs: usize,
    /// Mini-batches each pass is cut into, one optimizer step each (verl's
    /// `ppo_mini_batch_size` as a count): `epochs x mini_batches` steps per training step, from
    /// one shuffle of the batch per pass. Any algorithm; 1 (the default) is one step on the whole
    /// batch, which is what TBRM's Algorithm 1 does, and with which a ratio clip never acts.
    /// `ppo_mini_batches`, the former name, is still read.
    #[serde(alias = "ppo_mini_batches")]
    pub mini_batches: usize,
    /// GRPO/PPO's old log-probs (the ratio's denominator). `recompute` (default): the policy
    /// before this step's update scores the batch without grad through the training pass's own
    /// forward, so on-policy data start at ratio exactly 1 (what verl does). `behaviour`: the
    /// log-probs the sampler recorded with each trajectory, which differ from the training
    /// forward by float rounding on fresh rollouts, and which for stale, replayed or offline
    /// trajectories are the behaviour policy's: then the ratio corrects for the policy change,
    /// while with `recompute` such data get no behaviour correction. TBRM reads neither.
    pub old_logprobs: OldLogprobs,
    /// PPO value-loss clip around the old values (0 = unclipped).
    pub value_clip: f64,
    /// GAE discount.
    pub gamma: f64,
    /// GAE lambda.
    pub lambda: f64,
}

impl Default for AlgorithmSection {
    fn default() -> Self {
        Self {
            name: Algorithm::Tbrm,
            beta: 0.002,
            trust_region: 0.2,
            clip: 0.2,
            kl_coef: 0.001,
            entropy_coef: 0.001,
            critic_lr: 1e-5,
            epochs: 1,
            mini_batches: 1,
            old_logprobs: OldLogprobs::Recompute,
            value_clip: 0.5,
            gamma: 1.0,
            lambda: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSection {
    /// Responses sampled per prompt (the paper's n).
    pub n: usize,
    /// Prompts per training step.
    pub prompt_batch: usize,
    pub temperature: f64,
    /// Nucleus sampling mass (1.0 = off).
    pub top_p: f64,
    /// Top-k sampling (0 = off).
    pub top_k: usize,
    pub max_new_tokens: usize,
    /// Most sequences decoded at once: the rollout engine's slots (0 = as many as the KV
    /// budget allows, at most 256). A finished sequence's slot takes the next waiting one.
    pub generation_batch: usize,
    /// KV-cache budget of the rollout engine in GiB (0 = 30% of available host memory on the
    /// CPU, 50% of free GPU memory on CUDA).
    pub kv_cache_gb: f64,
    /// Most prompt tokens per prefill pass of the engine.
    pub prefill_tokens: usize,
    /// Decode steps between host reads of sampled tokens (0 = 1 on CPU, 8 on CUDA).
    pub sync_every: usize,
    pub truncated: TruncatedPolicy,
    /// Tokens that also end a response, besides the model's EOS (`generation_config.json`);
    /// each must be a single token of the vocabulary. With a chat template (`data.template` =
    /// `chat` or `qwen_math`) the template's end-of-turn token (`<|im_end|>`) is added on its
    /// own: a base model prompted in chat format writes it and would go on past it.
    pub stop_tokens: Vec<String>,
}

impl Default for RolloutSection {
    fn default() -> Self {
        Self {
            n: 1,
            prompt_batch: 32,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 64,
            generation_batch: 0,
            kv_cache_gb: 0.0,
            prefill_tokens: 8192,
            sync_every: 0,
            truncated: TruncatedPolicy::Keep,
            stop_tokens: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (AdamW).
    pub weight_decay: f64,
    /// Linear warm-up from 0 to `lr` over this many steps.
    pub warmup_steps: u64,
    pub schedule: ScheduleKind,
    /// Cosine floor as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    /// At most this many trajectories per forward/backward pass (0 = no row limit);
    /// gradients are accumulated over micro-batches.
    pub micro_batch: usize,
    /// Padded tokens (rows x longest row) per forward/backward pass: trajectories are sorted
    /// by length and packed up to this budget (0 = rows only). A longer trajectory goes alone.
    pub micro_batch_tokens: usize,
    /// The same budget for no-grad scoring (reference log-probs, critic values), which keeps
    /// no activations and can take larger passes (0 = rows only, `micro_batch` rows).
    pub score_batch_tokens: usize,
    /// Recompute decoder layers in the backward (`auto`, `on`, `off`).
    pub recompute: Recompute,
    /// Keep the f32 master weights and Adam moments in host memory; the update runs on the
    /// CPU and the new weights are copied back (7B on one GPU).
    pub offload: bool,
    /// Data-parallel runs (WORLD_SIZE > 1): shard the Adam moments and master weights across
    /// ranks (ZeRO-1), so each rank keeps about 1/WORLD_SIZE of them; ignored in one process.
    /// Checkpoints hold the complete state either way.
    pub zero1: bool,
    /// Data-parallel runs: size in MB of the flat float32 buffers gradients are reduced in
    /// (one collective per buffer).
    pub bucket_mb: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            lr: 2.5e-6,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            warmup_steps: 0,
            schedule: ScheduleKind::Constant,
            min_lr_ratio: 0.0,
            grad_clip: 1.0,
            micro_batch: 8,
            micro_batch_tokens: 32768,
            score_batch_tokens: 65536,
            recompute: Recompute::Auto,
            offload: false,
            zero1: false,
            bucket_mb: 25.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub steps: u64,
    /// Fixes data order, sampling and initialisation.
    pub seed: u64,
    /// Checkpoint every N steps (0 = only at the end and on Ctrl-C).
    pub save_every: u64,
    /// Checkpoints kept on disk (the newest K).
    pub keep_checkpoints: usize,
    /// Held-out evaluation every N steps (0 = only before and after training).
    pub eval_every: u64,
    /// Prompts with their responses written to samples.jsonl per step.
    pub samples_per_step: usize,
    /// Stop after this many steps skipped for a non-finite loss or gradient.
    pub max_nonfinite_steps: u64,
    /// Append every sampled trajectory (ids, behaviour log-probs, reward) to `rollouts.jsonl`
    /// in the run folder: an offline file another run can learn from (`sources.offline_file`).
    pub save_rollouts: bool,
    /// Data-parallel runs: seconds the start-up rendezvous and each collective may wait for the
    /// other ranks; a rank that died or hangs stops the others with an error after this long.
    pub dist_timeout_s: u64,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self {
            steps: 100,
            seed: 0,
            save_every: 50,
            keep_checkpoints: 2,
            eval_every: 0,
            samples_per_step: 2,
            max_nonfinite_steps: 5,
            save_rollouts: false,
            dist_timeout_s: 300,
        }
    }
}

/// Off-policy data mixed into each update. TBRM uses them as they are (its objective holds for
/// any behaviour policy, arXiv:2505.15311 Section 4). GRPO and PPO use, by default, old
/// log-probs recomputed by the current policy (`algorithm.old_logprobs = "recompute"`), which
/// gives such data no behaviour correction; `"behaviour"` uses the stored behaviour log-probs,
/// so the ratio corrects for the policy that sampled them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesSection {
    /// Trajectories kept in the replay buffer (0 = no replay).
    pub replay_capacity: usize,
    /// Fraction of each step's prompt batch taken from the replay buffer instead of sampled.
    pub replay_fraction: f64,
    /// A JSONL file of trajectories (tbrm-data `Trajectory` lines).
    pub offline_file: Option<PathBuf>,
    /// Fraction of each step's prompt batch taken from the offline file.
    pub offline_fraction: f64,
    /// Rollouts are consumed this many steps after they were sampled (0 = on-policy),
    /// reproducing the staleness of an asynchronous actor/learner split.
    pub async_staleness: u64,
}

impl Default for SourcesSection {
    fn default() -> Self {
        Self {
            replay_capacity: 0,
            replay_fraction: 0.0,
            offline_file: None,
            offline_fraction: 0.0,
            async_staleness: 0,
        }
    }
}

/// The full configuration of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub model: ModelSection,
    pub data: DataSection,
    /// Shape of the built-in arithmetic task's problems (used when `data.train = builtin:arith`).
    pub task: ArithConfig,
    /// Shape of the built-in Countdown task's problems (used when
    /// `data.train = builtin:countdown`).
    pub countdown: CountdownConfig,
    pub algorithm: AlgorithmSection,
    pub rollout: RolloutSection,
    pub optim: OptimSection,
    pub train: TrainSection,
    pub sources: SourcesSection,
    /// Reward values of the math verifier (file datasets).
    pub reward: tbrm_verify::MathReward,
}

impl TrainConfig {
    /// Deserialises a TOML tree; errors carry the dotted key (`rollout.nn`, `optim.lr`). A
    /// top-level `algorithm_defaults` table ([`algorithm_defaults`]) is applied for the
    /// algorithm the tree names in `algorithm.name` (TBRM when it names none).
    pub fn from_toml_value(value: toml::Value) -> Result<Self, ConfigError> {
        match value {
            toml::Value::Table(t) if t.contains_key(algorithm_defaults::TABLE) => {
                let l = algorithm_defaults::LayeredConfig::split(t)?;
                let algo = algorithm_defaults::named_algorithm(l.base()).unwrap_or(Algorithm::Tbrm);
                Self::deserialize_tree(toml::Value::Table(l.tree_for(algo)))
            }
            other => Self::deserialize_tree(other),
        }
    }

    /// [`TrainConfig::from_toml_value`] without per-algorithm tables.
    pub(crate) fn deserialize_tree(value: toml::Value) -> Result<Self, ConfigError> {
        let cfg: TrainConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            // For an unknown key the path ends at its section; append the key itself so the
            // message names `rollout.nn`, not just `rollout`.
            let unknown = message
                .strip_prefix("unknown field `")
                .and_then(|rest| rest.split('`').next())
                .map(str::to_string);
            let key = match (path.as_str(), unknown) {
                (".", Some(k)) => k,
                (".", None) => "<root>".into(),
                (p, Some(k)) if !p.ends_with(&k) => format!("{p}.{k}"),
                (p, _) => p.to_string(),
            };
            ConfigError::Key { key, message }
        })?;
        Ok(cfg)
    }

    /// Parses TOML text (see [`TrainConfig::from_toml_value`]).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Key {
            key: "<syntax>".into(),
            message: e.to_string(),
        })?;
        Self::from_toml_value(value)
    }

    /// The config as TOML text (what `config.toml` in a run folder holds).
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).expect("TrainConfig always serialises to TOML")
    }

    /// Settings that are valid but probably not what the user wants, one sentence each naming
    /// the key. GRPO and PPO form their ratio against temperature-1 log-probs (recomputed by
    /// the policy, or the rollout engine's records, which are also taken at temperature 1);
    /// samples drawn at another temperature come from another policy, which the ratio does not
    /// account for, so the update is biased. TBRM has no ratio and is unaffected.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let t = self.rollout.temperature;
        if t != 1.0 && matches!(self.algorithm.name, Algorithm::Grpo | Algorithm::Ppo) {
            out.push(format!(
                "rollout.temperature = {t} with {}: the old log-probs in its ratio are those of \
                 the temperature-1 policy, so samples drawn at {t} come from another policy than \
                 the ratio assumes and bias the update; use 1.0 (the paper's setting)",
                self.algorithm.name.as_str()
            ));
        }
        out
    }

    /// Checks ranges and combinations; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let a = &self.algorithm;
        let r = &self.rollout;
        let o = &self.optim;
        let t = &self.train;
        let s = &self.sources;
        let positive = |key: &str, v: f64| -> Result<(), ConfigError> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    key,
                    format!("must be a positive number, got {v}"),
                ))
            }
        };
        let non_negative = |key: &str, v: f64| -> Result<(), ConfigError> {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    key,
                    format!("must be a number >= 0, got {v}"),
                ))
            }
        };
        let unit = |key: &str, v: f64| -> Result<(), ConfigError> {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    key,
                    format!("must be in [0, 1], got {v}"),
                ))
            }
        };
        let at_least_one = |key: &str, v: usize| -> Result<(), ConfigError> {
            if v >= 1 {
                Ok(())
            } else {
                Err(ConfigError::invalid(key, "must be at least 1"))
            }
        };

        if self.model.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "model.path",
                "is required (a Hugging Face model folder)",
            ));
        }
        if self.data.train.trim().is_empty() {
            return Err(ConfigError::invalid(
                "data.train",
                "is required (`builtin:arith` or a dataset file)",
            ));
        }
        positive("algorithm.beta", a.beta)?;
        non_negative("algorithm.trust_region", a.trust_region)?;
        unit("algorithm.clip", a.clip)?;
        non_negative("algorithm.kl_coef", a.kl_coef)?;
        non_negative("algorithm.entropy_coef", a.entropy_coef)?;
        positive("algorithm.critic_lr", a.critic_lr)?;
        non_negative("algorithm.value_clip", a.value_clip)?;
        unit("algorithm.gamma", a.gamma)?;
        unit("algorithm.lambda", a.lambda)?;
        at_least_one("algorithm.epochs", a.epochs)?;
        at_least_one("algorithm.mini_batches", a.mini_batches)?;

        at_least_one("rollout.n", r.n)?;
        at_least_one("rollout.prompt_batch", r.prompt_batch)?;
        at_least_one("rollout.max_new_tokens", r.max_new_tokens)?;
        non_negative("rollout.temperature", r.temperature)?;
        non_negative("rollout.kv_cache_gb", r.kv_cache_gb)?;
        at_least_one("rollout.prefill_tokens", r.prefill_tokens)?;
        if !(r.top_p > 0.0 && r.top_p <= 1.0) {
            return Err(ConfigError::invalid(
                "rollout.top_p",
                format!("must be in (0, 1], got {}", r.top_p),
            ));
        }
        if a.name == Algorithm::Grpo && r.n < 2 {
            return Err(ConfigError::invalid(
                "rollout.n",
                "GRPO needs at least 2 rollouts per prompt: with n = 1 the group baseline equals the \
                 reward and every advantage is zero",
            ));
        }
        if a.mini_batches > r.prompt_batch * r.n {
            return Err(ConfigError::invalid(
                "algorithm.mini_batches",
                format!(
                    "{} mini-batches cannot be cut from {} trajectories per step",
                    a.mini_batches,
                    r.prompt_batch * r.n
                ),
            ));
        }

        positive("optim.lr", o.lr)?;
        unit("optim.beta1", o.beta1)?;
        unit("optim.beta2", o.beta2)?;
        if o.beta1 >= 1.0 || o.beta2 >= 1.0 {
            return Err(ConfigError::invalid(
                "optim.beta1",
                "Adam betas must be below 1",
            ));
        }
        positive("optim.eps", o.eps)?;
        non_negative("optim.weight_decay", o.weight_decay)?;
        unit("optim.min_lr_ratio", o.min_lr_ratio)?;
        non_negative("optim.grad_clip", o.grad_clip)?;
        if o.micro_batch == 0 && o.micro_batch_tokens == 0 {
            return Err(ConfigError::invalid(
                "optim.micro_batch",
                "optim.micro_batch and optim.micro_batch_tokens cannot both be 0 (no limit on a pass)",
            ));
        }

        positive("optim.bucket_mb", o.bucket_mb)?;
        at_least_one("train.keep_checkpoints", t.keep_checkpoints)?;
        if t.dist_timeout_s == 0 {
            return Err(ConfigError::invalid(
                "train.dist_timeout_s",
                "must be at least 1 (seconds)",
            ));
        }
        if t.max_nonfinite_steps == 0 {
            return Err(ConfigError::invalid(
                "train.max_nonfinite_steps",
                "must be at least 1",
            ));
        }

        unit("sources.replay_fraction", s.replay_fraction)?;
        unit("sources.offline_fraction", s.offline_fraction)?;
        if s.replay_fraction + s.offline_fraction > 1.0 {
            return Err(ConfigError::invalid(
                "sources.replay_fraction",
                "replay_fraction + offline_fraction must not exceed 1",
            ));
        }
        if s.replay_fraction > 0.0 && s.replay_capacity == 0 {
            return Err(ConfigError::invalid(
                "sources.replay_capacity",
                "must be at least 1 when sources.replay_fraction > 0",
            ));
        }
        if s.offline_fraction > 0.0 && s.offline_file.is_none() {
            return Err(ConfigError::invalid(
                "sources.offline_file",
                "is required when sources.offline_fraction > 0",
            ));
        }
        if self.data.train.starts_with("builtin:") {
            crate::builtin::task_kind(&self.data.train)?;
            self.task
                .validate()
                .map_err(|e| ConfigError::invalid("task", e.to_string()))?;
            self.countdown
                .validate()
                .map_err(|e| ConfigError::invalid("countdown", e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
