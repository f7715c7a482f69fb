//! PPO's critic and the policy scores PPO needs beyond log-probs.
//!
//! The critic is a value head, Linear(H, 1), on a copy of the policy backbone (the setup of
//! Ouyang et al. 2022 and verl's PPO), with its own AdamW and learning rate. V(s_j) is read
//! from the hidden state that predicts response token j (column P - 1 + j of the packed batch,
//! see tbrm-model `batch.rs`). The head starts at zero: V = 0 everywhere is the natural prior
//! for 0/1 outcome rewards and needs no random draw.
//!
//! [`score_with_entropy`] computes the per-token log-probs, the first logit and the per-token
//! entropy of pi_theta from one forward pass, chunked over time like tbrm-model's
//! `score_responses`, so the (B, L, V) float32 logits never exist at once.

use std::path::Path;

use tbrm_model::{CausalLm, PackedBatch, ResponseScores};
use tch::{nn, Device, Kind, Tensor};

use crate::optim::{AdamW, AdamWConfig};
use crate::trainer::TrainError;

/// A value network: backbone copy + linear head, and the optimizer over both.
pub struct Critic {
    pub backbone: CausalLm,
    head_vs: nn::VarStore,
    head_w: Tensor,
    head_b: Tensor,
    pub optimizer: AdamW,
}

const HEAD_FILE: &str = "value_head.safetensors";
const OPTIM_FILE: &str = "critic_optimizer.safetensors";

impl Critic {
    fn with_backbone(backbone: CausalLm, cfg: AdamWConfig) -> Self {
        let h = backbone.config().hidden_size;
        let head_vs = nn::VarStore::new(backbone.device());
        let root = head_vs.root();
        let head_w = root.zeros("weight", &[1, h]);
        let head_b = root.zeros("bias", &[1]);
        let mut params: Vec<(String, Tensor)> = backbone
            .var_store()
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, t)| (format!("backbone.{n}"), t))
            .collect();
        params.push(("value_head.weight".into(), head_w.shallow_clone()));
        params.push(("value_head.bias".into(), head_b.shallow_clone()));
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let optimizer = AdamW::new(params, cfg);
        Critic {
            backbone,
            head_vs,
            head_w,
            head_b,
            optimizer,
        }
    }

    /// A fresh critic on a copy of `policy`.
    pub fn from_policy(policy: &CausalLm, cfg: AdamWConfig) -> Result<Self, TrainError> {
        let backbone = policy
            .try_clone()
            .map_err(|e| TrainError::model("<critic copy>", e))?;
        Ok(Self::with_backbone(backbone, cfg))
    }

    /// V(s_j) for every response token, (B, L) float32 (with grad unless under no_grad).
    pub fn values(&self, batch: &PackedBatch) -> Tensor {
        let l = batch.response_len();
        let hidden = self
            .backbone
            .hidden_states(&batch.input_ids, &batch.attention_mask, None)
            .narrow(1, batch.prompt_len - 1, l)
            .to_kind(Kind::Float);
        hidden
            .linear(&self.head_w, Some(&self.head_b))
            .squeeze_dim(-1)
    }

    /// Writes backbone (HF layout), head and optimizer state into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        self.backbone
            .save(dir)
            .map_err(|e| TrainError::model(dir, e))?;
        self.head_vs.save(dir.join(HEAD_FILE))?;
        self.optimizer.save(&dir.join(OPTIM_FILE))?;
        Ok(())
    }

    /// Reads a critic written by [`Critic::save`].
    pub fn load(
        dir: &Path,
        device: Device,
        dtype: Kind,
        cfg: AdamWConfig,
    ) -> Result<Self, TrainError> {
        let backbone = CausalLm::load(dir, device, dtype).map_err(|e| TrainError::model(dir, e))?;
        let mut critic = Self::with_backbone(backbone, cfg);
        critic.head_vs.load(dir.join(HEAD_FILE))?;
        critic.optimizer.load(&dir.join(OPTIM_FILE))?;
        Ok(critic)
    }
}

/// Log-probs, first logit and entropy H(pi_theta(.|s_j)) of every response token of `batch`,
/// all float32 and (B, L) / (B,), from one forward pass of `model`.
pub fn score_with_entropy(model: &CausalLm, batch: &PackedBatch) -> (ResponseScores, Tensor) {
    let b = batch.batch_size();
    let l = batch.response_len();
    let device = batch.input_ids.device();
    if l == 0 {
        let zeros = Tensor::zeros([b, 0], (Kind::Float, device));
        return (
            ResponseScores {
                token_logprobs: zeros.shallow_clone(),
                first_logit: Tensor::zeros([b], (Kind::Float, device)),
            },
            zeros,
        );
    }
    let hidden = model
        .hidden_states(&batch.input_ids, &batch.attention_mask, None)
        .narrow(1, batch.prompt_len - 1, l);
    let chunk = tbrm_model::score::default_chunk(b, model.config().vocab_size);
    let (mut lps, mut ents) = (Vec::new(), Vec::new());
    let mut first_logit = None;
    let mut start = 0;
    while start < l {
        let c = chunk.min(l - start);
        let logits = model
            .lm_head(&hidden.narrow(1, start, c))
            .to_kind(Kind::Float);
        let target = batch.response_ids.narrow(1, start, c).unsqueeze(-1);
        let picked = logits.gather(2, &target, false).squeeze_dim(-1);
        if start == 0 {
            first_logit = Some(picked.select(1, 0));
        }
        let lse = logits.logsumexp([-1], true);
        let logp_all = &logits - &lse;
        // H = -sum_a p(a) log p(a)
        let ent = -(logp_all.exp() * &logp_all).sum_dim_intlist(-1, false, Kind::Float);
        lps.push(picked - lse.squeeze_dim(-1));
        ents.push(ent);
        start += c;
    }
    let mask = &batch.response_mask;
    let token_logprobs = Tensor::cat(&lps, 1) * mask;
    let entropy = Tensor::cat(&ents, 1) * mask;
    let first_logit = first_logit.expect("l > 0") * mask.select(1, 0);
    (
        ResponseScores {
            token_logprobs,
            first_logit,
        },
        entropy,
    )
}
