//! Model and generation: Hugging Face decoder-only transformers (Qwen2/2.5, Llama 3, Qwen3) on tch, tokenizer and chat templates, batched sampling with a KV cache, response scoring.
