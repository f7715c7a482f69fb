//! Per-token log-probs of responses under a model, for the trainer (policy with grad,
//! reference and behaviour under `tch::no_grad`) and `tbrm score`.
//!
//! One forward pass over the packed (B, T) batch gives hidden states; the one at column
//! P_i - 1 + j predicts response token j of row i (see `batch.rs`). The head and the log-softmax run over
//! chunks of those time steps, each as `logit[y] - logsumexp(logits)` in f32, so at most
//! (B, chunk, V) f32 logits exist at once (Qwen's V is 151,936: B = 16, L = 1024 would be
//! ~10 GB in one piece).
//!
//! With autograd on, each chunk's f32 logits are kept for the backward pass (the logsumexp
//! backward needs them), so the saving then is in peak temporaries, not in what autograd holds;
//! the trainer's update uses `lean::forward_backward`, which keeps none of them.

use tch::Tensor;

use crate::{CausalLm, PackedBatch};

/// Scores of the responses in a [`PackedBatch`].
#[derive(Debug)]
pub struct ResponseScores {
    /// (B, L) f32: log pi(y_j | prompt, y_<j), 0 at padding.
    pub token_logprobs: Tensor,
    /// (B,) f32: the raw logit of the first response token (TBRM's Q(s_0, a_0) term); 0 for
    /// empty responses.
    pub first_logit: Tensor,
}

/// Bytes of f32 logits one chunk may hold when the caller does not choose a chunk size.
pub const DEFAULT_CHUNK_BYTES: i64 = 256 << 20;

/// Time steps per chunk so that (B, chunk, V) f32 stays within [`DEFAULT_CHUNK_BYTES`].
pub fn default_chunk(batch: i64, vocab: i64) -> i64 {
    chunk_for_bytes(DEFAULT_CHUNK_BYTES, batch, vocab)
}

/// Time steps per chunk so that (B, chunk, V) f32 stays within `bytes` (at least one).
pub fn chunk_for_bytes(bytes: i64, batch: i64, vocab: i64) -> i64 {
    (bytes / (4 * batch.max(1) * vocab.max(1))).max(1)
}

/// Scores with the default chunk size. Works with or without grad.
pub fn score_responses(model: &CausalLm, batch: &PackedBatch) -> ResponseScores {
    let chunk = default_chunk(batch.batch_size(), model.config().vocab_size);
    score_responses_chunked(model, batch, chunk)
}

/// Scores with `chunk` time steps of lm_head + log-softmax at a time.
pub fn score_responses_chunked(
    model: &CausalLm,
    batch: &PackedBatch,
    chunk: i64,
) -> ResponseScores {
    score_with_hidden(model, batch, chunk).0
}

/// Scores plus the hidden states (B, L, H) that predict each response token: the state before
/// token j (column P_i - 1 + j), which is where PPO's value head reads V(s_j).
pub fn score_responses_with_hidden(
    model: &CausalLm,
    batch: &PackedBatch,
) -> (ResponseScores, Tensor) {
    let chunk = default_chunk(batch.batch_size(), model.config().vocab_size);
    score_with_hidden(model, batch, chunk)
}

fn score_with_hidden(
    model: &CausalLm,
    batch: &PackedBatch,
    chunk: i64,
) -> (ResponseScores, Tensor) {
    assert!(chunk > 0, "chunk size must be positive");
    let hidden = model.hidden_states(&batch.input_ids, &batch.attention_mask, None);
    let h = batch.response_hidden(&hidden); // (B, L, C)
    let raw = crate::lean::head_scores(model, batch, &h, chunk, false);
    let token_logprobs = raw.token_logprobs * &batch.response_mask;
    let first_logit = raw.first_logit * batch.first_response_mask();
    (
        ResponseScores {
            token_logprobs,
            first_logit,
        },
        h,
    )
}
