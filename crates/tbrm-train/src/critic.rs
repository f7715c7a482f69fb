//! PPO's critic and the policy scores PPO needs beyond log-probs.
//!
//! The critic is a value head, Linear(H, 1), on a copy of the policy backbone (the setup of
//! Ouyang et al. 2022 and verl's PPO), with its own AdamW and learning rate. V(s_j) is read
//! from the hidden state that predicts response token j (column P_i - 1 + j of the packed batch,
//! see tbrm-model `batch.rs`). The head starts at zero: V = 0 everywhere is the natural prior
//! for 0/1 outcome rewards and needs no random draw.
//! The policy's per-token entropy for PPO's bonus comes from tbrm-model's lean pass
//! (`LeanOptions::entropy`).

use std::path::Path;

use tbrm_model::{CausalLm, PackedBatch};
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
        let hidden = self
            .backbone
            .hidden_states(&batch.input_ids, &batch.attention_mask, None);
        let hidden = batch.response_hidden(&hidden).to_kind(Kind::Float);
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
