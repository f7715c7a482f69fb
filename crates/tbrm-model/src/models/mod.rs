//! Model families. The three supported families share one pre-norm decoder (`decoder.rs`) and
//! differ only in flags; each family file states those flags and the transformers file it
//! must match.

pub(crate) mod decoder;
pub(crate) mod llama;
pub(crate) mod qwen2;
pub(crate) mod qwen3;
