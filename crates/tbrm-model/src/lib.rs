//! Model and generation: Hugging Face decoder-only transformers (Qwen2/2.5, Llama 3, Qwen3) on tch, tokenizer and chat templates, batched sampling with a KV cache, response scoring.

pub mod auto;
mod causal_lm;
pub mod config;
mod error;
pub mod kv_cache;
mod layers;
mod load;
mod models;

pub use causal_lm::CausalLm;
pub use config::{HfConfig, ModelConfig, ModelType, RopeScaling};
pub use error::ModelError;
pub use kv_cache::KvCache;
pub use layers::mask::ones_mask;
