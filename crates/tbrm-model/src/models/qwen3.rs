//! Qwen3 (dense), matching transformers `models/qwen3/modeling_qwen3.py` (`Qwen3ForCausalLM`):
//! RMSNorm over each head of q and k (`q_norm`, `k_norm`) before RoPE, `attention_bias`
//! (default false) on all four projections, and an explicit `head_dim` (default 128) that need
//! not equal hidden_size / num_attention_heads.

use crate::config::{FamilySpec, ModelType};

pub(crate) const SPEC: FamilySpec = FamilySpec {
    model_type: ModelType::Qwen3,
    name: "qwen3",
    architecture: "Qwen3ForCausalLM",
    fixed_qkv_o_bias: None,
    reads_mlp_bias: false,
    qk_norm: true,
    default_head_dim: Some(128),
    default_max_position_embeddings: 32768,
};
