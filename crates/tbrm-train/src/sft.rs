//! Supervised warm start (`tbrm sft`): next-token cross-entropy on the response tokens of
//! prompt/response pairs, AdamW, then greedy exact-match accuracy on held-out prompts.
//!
//! Its job in the project is the built-in default's base policy: a tiny model that is right
//! only part of the time on the arithmetic task, so that RL has something to improve. The
//! loss is the mean over all response tokens of the batch (prompt tokens are context only),
//! computed with tbrm-model's `score_responses` so SFT and RL read log-probs the same way.

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tbrm_model::{
    generate, score_responses, CausalLm, ModelConfig, ModelType, PackedBatch, SamplingParams,
    Tokenizer,
};
use tch::nn::OptimizerConfig;
use tch::{Device, Tensor};

use crate::task::arith::{self, ArithConfig, Split};
use crate::task::countdown::{self, CountdownConfig};
use crate::task::{tokenizer as task_tok, TaskError, TaskKind};

/// Errors of the SFT run.
#[derive(Debug, thiserror::Error)]
pub enum SftError {
    #[error("invalid sft setting: {0}")]
    Config(String),
    #[error("{path}:{line}: {msg}")]
    Data {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no training examples")]
    Empty,
    #[error("loss became non-finite ({loss}) at step {step}; lower --lr")]
    NonFinite { step: usize, loss: f64 },
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Model(#[from] tbrm_model::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] tbrm_model::TokenizerError),
}

/// One supervised pair: the model reads `prompt` and learns to write `response` then EOS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SftExample {
    pub prompt: String,
    pub response: String,
}

/// A held-out problem for the accuracy check: prompt and exact answer text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalItem {
    pub prompt: String,
    pub answer: String,
}

/// Settings of one SFT run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SftConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Peak learning rate (after linear warm-up; constant afterwards).
    pub lr: f64,
    /// Warm-up steps (linear from lr/warmup to lr).
    pub warmup_steps: usize,
    /// Examples per step.
    pub batch_size: usize,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip; 0 disables it.
    pub grad_clip: f64,
    /// Fixes data order (and, through the caller, the init).
    pub seed: u64,
    /// Prompts per greedy generation batch in evaluation.
    pub eval_batch_size: usize,
    /// Response budget in evaluation.
    pub max_new_tokens: usize,
}

impl Default for SftConfig {
    fn default() -> Self {
        Self {
            steps: 600,
            lr: 2e-3,
            warmup_steps: 20,
            batch_size: 64,
            weight_decay: 0.0,
            grad_clip: 1.0,
            seed: 0,
            eval_batch_size: 128,
            max_new_tokens: 48,
        }
    }
}

impl SftConfig {
    pub fn validate(&self) -> Result<(), SftError> {
        let bad = |m: String| Err(SftError::Config(m));
        if self.steps == 0 {
            return bad("steps must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be a positive number, got {}", self.lr));
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("batch_size and eval_batch_size must be at least 1".into());
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight_decay must be >= 0, got {}",
                self.weight_decay
            ));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return bad(format!("grad_clip must be >= 0, got {}", self.grad_clip));
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1".into());
        }
        Ok(())
    }

    fn lr_at(&self, step: usize) -> f64 {
        if self.warmup_steps == 0 || step >= self.warmup_steps {
            self.lr
        } else {
            self.lr * (step + 1) as f64 / self.warmup_steps as f64
        }
    }
}

/// The tiny Qwen2 model of the built-in default (`--init-config tiny-arith`): hidden 128,
/// 4 layers, 4 query / 2 KV heads, MLP 384, tied embeddings, vocabulary = the task tokenizer.
/// About 0.8 M parameters: small enough for RL on two CPU cores, big enough to learn carries.
pub fn tiny_arith_model_config() -> ModelConfig {
    tiny_model_config(TaskKind::Arith)
}

/// The same tiny shape with `kind`'s tokenizer (`--init-config tiny-<task>`): for Countdown
/// only the vocabulary differs (21 tokens instead of 19).
pub fn tiny_model_config(kind: TaskKind) -> ModelConfig {
    let mut cfg = ModelConfig::tiny(ModelType::Qwen2);
    cfg.vocab_size = task_tok::vocab_size_for(kind.chars()) as i64;
    cfg.hidden_size = 128;
    cfg.intermediate_size = 384;
    cfg.num_hidden_layers = 4;
    cfg.num_attention_heads = 4;
    cfg.num_key_value_heads = 2;
    cfg.head_dim = 32;
    cfg.max_position_embeddings = 256;
    cfg.tie_word_embeddings = true;
    cfg.extra
        .insert("eos_token_id".into(), task_tok::EOS_ID.into());
    cfg.extra
        .insert("pad_token_id".into(), task_tok::PAD_ID.into());
    cfg
}

/// `n` training pairs of the arithmetic task (train split only).
pub fn arith_examples(cfg: &ArithConfig, n: usize, seed: u64) -> Result<Vec<SftExample>, SftError> {
    Ok(arith::generate(cfg, Split::Train, n, seed)?
        .into_iter()
        .map(|p| SftExample {
            response: p.response(),
            prompt: p.prompt,
        })
        .collect())
}

/// `n` held-out arithmetic problems for the accuracy check.
pub fn arith_eval_items(cfg: &ArithConfig, n: usize, seed: u64) -> Result<Vec<EvalItem>, SftError> {
    Ok(arith::generate(cfg, Split::HeldOut, n, seed)?
        .into_iter()
        .map(|p| EvalItem {
            answer: p.answer_text(),
            prompt: p.prompt,
        })
        .collect())
}

/// `n` training pairs of the Countdown task (train split only): the chain each problem was
/// generated from.
pub fn countdown_examples(
    cfg: &CountdownConfig,
    n: usize,
    seed: u64,
) -> Result<Vec<SftExample>, SftError> {
    Ok(countdown::generate(cfg, Split::Train, n, seed)?
        .into_iter()
        .map(|p| SftExample {
            response: p.response(),
            prompt: p.prompt,
        })
        .collect())
}

/// `n` held-out Countdown problems for the accuracy check (answer: the target).
pub fn countdown_eval_items(
    cfg: &CountdownConfig,
    n: usize,
    seed: u64,
) -> Result<Vec<EvalItem>, SftError> {
    Ok(countdown::generate(cfg, Split::HeldOut, n, seed)?
        .into_iter()
        .map(|p| EvalItem {
            answer: p.answer_text(),
            prompt: p.prompt,
        })
        .collect())
}

/// Reads a JSONL file of `{"prompt": ..., "response": ...}` rows (other fields ignored; blank
/// lines skipped). Errors name the file and line.
pub fn read_jsonl(path: &Path) -> Result<Vec<SftExample>, SftError> {
    let text = std::fs::read_to_string(path).map_err(|e| SftError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |msg: String| SftError::Data {
            path: path.to_path_buf(),
            line: i + 1,
            msg,
        };
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| err(format!("not JSON: {e}")))?;
        let field = |k: &str| -> Result<String, SftError> {
            match v.get(k) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(err(format!("`{k}` must be a string, found {other}"))),
                None => Err(err(format!("missing `{k}`"))),
            }
        };
        out.push(SftExample {
            prompt: field("prompt")?,
            response: field("response")?,
        });
    }
    if out.is_empty() {
        return Err(SftError::Data {
            path: path.to_path_buf(),
            line: 0,
            msg: "no rows".into(),
        });
    }
    Ok(out)
}

/// One logged step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SftStep {
    pub step: usize,
    /// Mean cross-entropy per response token (nats).
    pub loss: f64,
    pub lr: f64,
}

/// Tokenized pairs: prompt ids, response ids with EOS appended.
/// (prompt ids, response ids) of one example.
type IdPair = (Vec<u32>, Vec<u32>);

fn tokenize(tok: &Tokenizer, data: &[SftExample]) -> Result<Vec<IdPair>, SftError> {
    let eos = *tok
        .eos_token_ids()
        .first()
        .ok_or_else(|| SftError::Config("the tokenizer has no EOS token".into()))?;
    data.iter()
        .map(|ex| {
            let p = tok.encode(&ex.prompt, false)?;
            let mut r = tok.encode(&ex.response, false)?;
            r.push(eos);
            if p.is_empty() {
                return Err(SftError::Config(format!(
                    "example with response {:?} has an empty prompt",
                    ex.response
                )));
            }
            Ok((p, r))
        })
        .collect()
}

/// Masked next-token cross-entropy of `pairs` (mean over response tokens).
pub fn response_cross_entropy(model: &CausalLm, pairs: &[(&[u32], &[u32])], pad_id: u32) -> Tensor {
    let batch = PackedBatch::new(pairs, pad_id, model.device());
    let scores = score_responses(model, &batch);
    let n_tokens = batch.response_mask.sum(tch::Kind::Float);
    -(scores.token_logprobs * &batch.response_mask).sum(tch::Kind::Float) / n_tokens
}

/// Trains `model` in place on `data` for `cfg.steps` steps, calling `on_step` after each.
/// Each epoch visits the examples in a fresh order drawn from `cfg.seed`.
pub fn train(
    model: &mut CausalLm,
    tok: &Tokenizer,
    data: &[SftExample],
    cfg: &SftConfig,
    mut on_step: impl FnMut(&SftStep),
) -> Result<(), SftError> {
    cfg.validate()?;
    if data.is_empty() {
        return Err(SftError::Empty);
    }
    let pairs = tokenize(tok, data)?;
    let pad = tok.pad_token_id();
    let mut opt = tch::nn::AdamW {
        wd: cfg.weight_decay,
        ..Default::default()
    }
    .build(model.var_store(), cfg.lr)
    .map_err(|e| SftError::Config(format!("cannot build AdamW: {e}")))?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = Vec::new();
    let mut cursor = 0usize;
    for step in 0..cfg.steps {
        let mut idx = Vec::with_capacity(cfg.batch_size);
        while idx.len() < cfg.batch_size {
            if cursor == order.len() {
                order = (0..pairs.len()).collect();
                order.shuffle(&mut rng);
                cursor = 0;
            }
            idx.push(order[cursor]);
            cursor += 1;
        }
        let batch: Vec<(&[u32], &[u32])> = idx
            .iter()
            .map(|&i| (pairs[i].0.as_slice(), pairs[i].1.as_slice()))
            .collect();
        let lr = cfg.lr_at(step);
        opt.set_lr(lr);
        let loss = response_cross_entropy(model, &batch, pad);
        let loss_value = loss.double_value(&[]);
        if !loss_value.is_finite() {
            return Err(SftError::NonFinite {
                step: step + 1,
                loss: loss_value,
            });
        }
        opt.zero_grad();
        loss.backward();
        if cfg.grad_clip > 0.0 {
            opt.clip_grad_norm(cfg.grad_clip);
        }
        opt.step();
        on_step(&SftStep {
            step: step + 1,
            loss: loss_value,
            lr,
        });
    }
    Ok(())
}

/// Greedy exact-match accuracy on the arithmetic task: the text after the last `#` of each
/// greedy response must equal the item's answer.
pub fn greedy_accuracy(
    model: &CausalLm,
    tok: &Tokenizer,
    items: &[EvalItem],
    batch_size: usize,
    max_new_tokens: usize,
) -> Result<f64, SftError> {
    greedy_accuracy_for(
        TaskKind::Arith,
        model,
        tok,
        items,
        batch_size,
        max_new_tokens,
    )
}

/// Greedy accuracy under `kind`'s reward ([`TaskKind::score`]): the fraction of items whose
/// greedy response scores 1.
pub fn greedy_accuracy_for(
    kind: TaskKind,
    model: &CausalLm,
    tok: &Tokenizer,
    items: &[EvalItem],
    batch_size: usize,
    max_new_tokens: usize,
) -> Result<f64, SftError> {
    if items.is_empty() {
        return Ok(0.0);
    }
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens,
        ..SamplingParams::default()
    };
    let mut hits = 0usize;
    for chunk in items.chunks(batch_size.max(1)) {
        let prompts = chunk
            .iter()
            .map(|it| tok.encode(&it.prompt, false))
            .collect::<Result<Vec<_>, _>>()?;
        let gens = tch::no_grad(|| generate(model, tok, &prompts, &params))?;
        hits += gens
            .iter()
            .zip(chunk)
            .filter(|(g, it)| kind.score(&it.prompt, &it.answer, &g.text) >= 1.0)
            .count();
    }
    Ok(hits as f64 / items.len() as f64)
}

/// The tokenizer-side files of a Hugging Face folder, copied next to a saved model so the
/// output folder is complete.
pub const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Copies the [`TOKENIZER_FILES`] that exist in `src` into `dst` (`tokenizer.json` must exist).
pub fn copy_tokenizer_files(src: &Path, dst: &Path) -> Result<(), SftError> {
    for name in TOKENIZER_FILES {
        let from = src.join(name);
        if !from.exists() {
            if name == "tokenizer.json" {
                return Err(SftError::Io {
                    path: from,
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
                });
            }
            continue;
        }
        if from == dst.join(name) {
            continue;
        }
        std::fs::copy(&from, dst.join(name)).map_err(|e| SftError::Io {
            path: from.clone(),
            source: e,
        })?;
    }
    Ok(())
}

/// A new randomly initialised tiny-arith model (seeded, float32) on `device`.
pub fn init_tiny_arith(device: Device, seed: i64) -> Result<CausalLm, SftError> {
    init_tiny(TaskKind::Arith, device, seed)
}

/// A new randomly initialised tiny model for `kind`'s tokenizer (seeded, float32) on `device`.
pub fn init_tiny(kind: TaskKind, device: Device, seed: i64) -> Result<CausalLm, SftError> {
    Ok(CausalLm::from_config(
        tiny_model_config(kind),
        device,
        tch::Kind::Float,
        seed,
    )?)
}
