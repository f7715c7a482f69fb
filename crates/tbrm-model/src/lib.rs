//! Model and generation: Hugging Face decoder-only transformers (Qwen2/2.5, Llama 3, Qwen3) on tch, tokenizer and chat templates, batched sampling with a KV cache, response scoring.

pub mod auto;
pub mod batch;
mod causal_lm;
pub mod chat_template;
pub mod config;
pub mod engine;
mod error;
pub mod generate;
pub mod kv_cache;
mod layers;
pub mod lean;
mod load;
mod models;
pub mod score;
pub mod tokenizer;

pub use batch::PackedBatch;
pub use causal_lm::CausalLm;
pub use chat_template::{ChatMessage, ChatTemplate};
pub use config::{HfConfig, ModelConfig, ModelType, RopeScaling};
pub use engine::{generate_requests, EngineOptions, EngineOutput, EngineStats, Request, SampleKey};
pub use error::ModelError;
pub use generate::{generate, FinishReason, Generation, SamplingParams};
pub use kv_cache::KvCache;
pub use layers::mask::ones_mask;
pub use lean::{forward_backward, forward_scores, LeanOptions, LeanPass, LeanScores};
pub use load::{read_tensors_streaming, save_tensors, SafetensorsReader, TensorEntry};
pub use score::{
    score_responses, score_responses_chunked, score_responses_with_hidden, ResponseScores,
};
pub use tokenizer::{Tokenizer, TokenizerError};
