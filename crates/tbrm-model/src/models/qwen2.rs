//! Qwen2 / Qwen2.5 / Qwen2.5-Math, matching transformers
//! `models/qwen2/modeling_qwen2.py` (`Qwen2ForCausalLM`): Llama-style decoder whose q, k and v
//! projections always carry a bias (no `attention_bias` key) and whose o_proj never does.

use crate::config::{FamilySpec, ModelType};

pub(crate) const SPEC: FamilySpec = FamilySpec {
    model_type: ModelType::Qwen2,
    name: "qwen2",
    architecture: "Qwen2ForCausalLM",
    fixed_qkv_o_bias: Some((true, false)),
    reads_mlp_bias: false,
    qk_norm: false,
    default_head_dim: None,
    default_max_position_embeddings: 32768,
};
