//! Llama 3 / 3.1 / 3.2, matching transformers `models/llama/modeling_llama.py`
//! (`LlamaForCausalLM`): `attention_bias` applies to q, k, v and o; `mlp_bias` to the MLP; the
//! `llama3` RoPE scaling of 3.1+ is handled in `layers/rope.rs`.

use crate::config::{FamilySpec, ModelType};

pub(crate) const SPEC: FamilySpec = FamilySpec {
    model_type: ModelType::Llama,
    name: "llama",
    architecture: "LlamaForCausalLM",
    fixed_qkv_o_bias: None,
    reads_mlp_bias: true,
    qk_norm: false,
    default_head_dim: None,
    default_max_position_embeddings: 2048,
};
