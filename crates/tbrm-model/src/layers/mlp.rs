//! SwiGLU feed-forward (Shazeer 2020, "GLU Variants Improve Transformer"), as in transformers'
//! `LlamaMLP`: down(silu(gate(x)) * up(x)).

use tch::{nn, Tensor};

use super::linear::Linear;
use crate::ModelConfig;

pub(crate) struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    pub fn new(p: nn::Path, cfg: &ModelConfig) -> Self {
        let (h, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Mlp {
            gate_proj: Linear::new(&p / "gate_proj", h, i, b),
            up_proj: Linear::new(&p / "up_proj", h, i, b),
            down_proj: Linear::new(&p / "down_proj", i, h, b),
        }
    }

    /// (B, T, C) -> (B, T, C)
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let gate = self.gate_proj.forward(x).silu();
        self.down_proj.forward(&(gate * self.up_proj.forward(x)))
    }
}
