//! The memory-lean training pass: forward, loss and backward of a policy over a
//! [`PackedBatch`] without ever holding the (B, T, V) logits and, with `recompute`, without
//! keeping any layer's activations for the backward.
//!
//! libtorch's C++ API has no `torch.utils.checkpoint`, so the pass drives the backward itself,
//! in stages, each one an ordinary autograd graph that lives only while it is back-propagated:
//!
//! 1. Trunk. With `recompute`, the decoder layers run under `no_grad`, keeping only each layer's
//!    input (B, T, C); without it they run with grad as usual.
//! 2. Head, forward. The final norm runs with grad on a detached copy of the trunk's output; the
//!    states that predict response tokens are detached again, and the head and log-softmax run
//!    over chunks of time steps under `no_grad`, giving per-token log-probs, the raw first
//!    logit (TBRM's Q(s_1, a_1)) and, if asked, the entropy. Those become leaves with grad.
//! 3. Loss. The caller's closure builds the loss from the leaves (and anything else it likes,
//!    e.g. a critic, which then back-propagates as usual); one `backward()` gives
//!    dL/d(log-prob) for every token. For TBRM that is 2 f / N per token.
//! 4. Head, backward. Each chunk is recomputed with grad and back-propagated with the gradient
//!    from stage 3: one chunk of f32 logits exists at a time, in the forward and the backward.
//! 5. Trunk, backward. From the top down, each layer is recomputed with grad from its kept
//!    input and back-propagated with the gradient arriving from above; the gradient for its
//!    input goes on to the layer below. Without `recompute` the kept graph is back-propagated
//!    once.
//!
//! Parameter gradients never touch `.grad`: each stage asks autograd for the gradients of its
//! own parameters (`Tensor::run_backward`, the C++ `torch::autograd::grad`) and hands them to a
//! sink, so a bf16 model's gradients exist in bf16 for one layer at a time and the optimizer
//! sums them in float32. The result equals plain autograd up to float rounding (tested in
//! `tests/lean.rs`): recomputation repeats the same operations on the same inputs.

use std::collections::HashMap;

use tch::{Kind, Tensor};

use crate::score::{chunk_for_bytes, DEFAULT_CHUNK_BYTES};
use crate::{CausalLm, PackedBatch};

/// How the pass trades compute for memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeanOptions {
    /// Recompute each decoder layer in the backward instead of keeping its activations.
    pub recompute: bool,
    /// Bytes of f32 logits one head chunk may hold (0: the default, 256 MiB).
    pub chunk_bytes: i64,
    /// Also compute the per-token entropy of the policy (PPO's bonus).
    pub entropy: bool,
}

impl Default for LeanOptions {
    fn default() -> Self {
        Self {
            recompute: true,
            chunk_bytes: 0,
            entropy: false,
        }
    }
}

/// What the loss closure sees: masked (B, L) / (B,) float32 tensors that carry grad.
#[derive(Debug)]
pub struct LeanScores {
    /// log pi(y_j | prompt, y_<j), 0 at padding.
    pub token_logprobs: Tensor,
    /// The raw logit of the first response token; 0 for empty responses.
    pub first_logit: Tensor,
    /// H(pi(.|s_j)) per token when [`LeanOptions::entropy`], 0 at padding.
    pub entropy: Option<Tensor>,
}

impl LeanScores {
    /// The same values without grad (for metrics after the pass).
    pub fn detached(&self) -> LeanScores {
        LeanScores {
            token_logprobs: self.token_logprobs.detach(),
            first_logit: self.first_logit.detach(),
            entropy: self.entropy.as_ref().map(Tensor::detach),
        }
    }
}

/// The result of one pass.
pub struct LeanPass<T> {
    /// The loss value (non-finite values are returned, with nothing back-propagated).
    pub loss: f64,
    /// Whatever the closure returned besides the loss (metrics).
    pub extra: T,
    /// The scores, detached.
    pub scores: LeanScores,
}

/// Receives each parameter's gradient (by var-store name), possibly several times per pass
/// (e.g. a tied embedding gets one from the head chunks and one from the input).
pub type GradSink<'a> = dyn FnMut(&str, &Tensor) + 'a;

/// The scores the training pass's forward computes (stages 1 and 2 of the module doc), without
/// grad and without a backward: the same operations on the same shapes in the same order, so
/// they equal what [`forward_backward`] hands its loss closure for this `batch` and `opts`
/// (bit for bit on the CPU). The trainer scores GRPO/PPO's old log-probs with it, so the
/// ratio of the first update is exactly 1 on on-policy data.
pub fn forward_scores(model: &CausalLm, batch: &PackedBatch, opts: &LeanOptions) -> LeanScores {
    tch::no_grad(|| {
        let dec = model.decoder();
        let t = batch.seq_len();
        let ctx = dec.context(&batch.attention_mask, t, model.dtype());
        let mut x = dec.embed(&batch.input_ids);
        for i in 0..dec.num_layers() {
            x = dec.layer_forward(i, &x, &ctx);
        }
        let hr = batch.response_hidden(&dec.final_norm(&x));
        let chunk = chunk_len(batch, model, opts);
        let raw = head_scores(model, batch, &hr, chunk, opts.entropy);
        let mask = &batch.response_mask;
        LeanScores {
            token_logprobs: raw.token_logprobs * mask,
            first_logit: raw.first_logit * batch.first_response_mask(),
            entropy: raw.entropy.map(|e| e * mask),
        }
    })
}

/// Forward, `loss_fn`, and backward of `model` over `batch` (see the module doc). The loss must
/// be a scalar; its gradient reaches the model only through the scores it is given.
pub fn forward_backward<T, E>(
    model: &CausalLm,
    batch: &PackedBatch,
    opts: &LeanOptions,
    loss_fn: impl FnOnce(&LeanScores) -> Result<(Tensor, T), E>,
    sink: &mut GradSink<'_>,
) -> Result<LeanPass<T>, E> {
    let dec = model.decoder();
    let vars = model.var_store().variables();
    let ids = &batch.input_ids;
    let t = batch.seq_len();
    let ctx = tch::no_grad(|| dec.context(&batch.attention_mask, t, model.dtype()));

    // 1. Trunk.
    let (top, mut kept) = if opts.recompute {
        tch::no_grad(|| {
            let mut x = dec.embed(ids);
            let mut kept = Vec::with_capacity(dec.num_layers());
            for i in 0..dec.num_layers() {
                let y = dec.layer_forward(i, &x, &ctx);
                kept.push(x);
                x = y;
            }
            (x, kept)
        })
    } else {
        let mut x = dec.embed(ids);
        for i in 0..dec.num_layers() {
            x = dec.layer_forward(i, &x, &ctx);
        }
        (x, Vec::new())
    };

    // 2. Head, forward.
    let top_leaf = top.detach().set_requires_grad(true);
    let normed = dec.final_norm(&top_leaf);
    let hr = batch.response_hidden(&normed); // (B, L, C), with grad
    let hr_leaf = hr.detach();
    let chunk = chunk_len(batch, model, opts);
    let raw = tch::no_grad(|| head_scores(model, batch, &hr_leaf, chunk, opts.entropy));
    let lp_leaf = raw.token_logprobs.set_requires_grad(true);
    let fl_leaf = raw.first_logit.set_requires_grad(true);
    let ent_leaf = raw.entropy.map(|e| e.set_requires_grad(true));
    let mask = &batch.response_mask;
    let first_mask = batch.first_response_mask();
    let scores = LeanScores {
        token_logprobs: &lp_leaf * mask,
        first_logit: &fl_leaf * &first_mask,
        entropy: ent_leaf.as_ref().map(|e| e * mask),
    };

    // 3. Loss.
    let (loss, extra) = loss_fn(&scores)?;
    let value = loss.double_value(&[]);
    let detached = scores.detached();
    if !value.is_finite() || batch.response_len() == 0 || !loss.requires_grad() {
        return Ok(LeanPass {
            loss: value,
            extra,
            scores: detached,
        });
    }
    loss.backward();
    drop(scores);
    let grad_or_zeros = |leaf: &Tensor| {
        let g = leaf.grad();
        if g.defined() {
            g
        } else {
            leaf.zeros_like()
        }
    };
    let g_lp = grad_or_zeros(&lp_leaf);
    let g_fl = grad_or_zeros(&fl_leaf);
    let g_ent = ent_leaf.as_ref().map(grad_or_zeros);

    // 4. Head, backward, chunk by chunk.
    let head_name = model.head_name();
    let head_w = &vars[head_name];
    let l = batch.response_len();
    let mut g_hr = Vec::new();
    let mut start = 0;
    while start < l {
        let c = chunk.min(l - start);
        let h = hr_leaf.narrow(1, start, c).detach().set_requires_grad(true);
        let terms = chunk_terms(model, batch, &h, start, g_ent.is_some());
        let mut obj = (terms.logprobs * g_lp.narrow(1, start, c)).sum(Kind::Float);
        if start == 0 {
            obj += (terms.picked.select(1, 0) * &g_fl).sum(Kind::Float);
        }
        if let (Some(g_ent), Some(ent)) = (&g_ent, terms.entropy) {
            obj += (ent * g_ent.narrow(1, start, c)).sum(Kind::Float);
        }
        let grads = Tensor::run_backward(&[obj], &[head_w, &h], false, false);
        give(sink, head_name, &grads[0]);
        g_hr.push(grads[1].shallow_clone());
        start += c;
    }
    let g_hr = Tensor::cat(&g_hr, 1);

    // Back through the gather and the final norm to the trunk's output.
    let norm_name = "model.norm.weight";
    let obj = (hr * g_hr).sum(Kind::Float);
    let grads = Tensor::run_backward(&[obj], &[&vars[norm_name], &top_leaf], false, false);
    give(sink, norm_name, &grads[0]);
    let mut g = grads[1].shallow_clone();

    // 5. Trunk, backward.
    let embed_name = "model.embed_tokens.weight";
    if opts.recompute {
        for i in (0..dec.num_layers()).rev() {
            let input = kept.pop().expect("one kept input per layer");
            let x = input.detach().set_requires_grad(true);
            drop(input);
            let y = dec.layer_forward(i, &x, &ctx);
            let obj = (y * &g).sum(Kind::Float);
            let params = layer_params(&vars, i);
            let mut inputs: Vec<&Tensor> = params.iter().map(|(_, p)| p).collect();
            inputs.push(&x);
            let grads = Tensor::run_backward(&[obj], &inputs, false, false);
            for ((name, _), gp) in params.iter().zip(&grads) {
                give(sink, name, gp);
            }
            g = grads[params.len()].shallow_clone();
        }
        let e = dec.embed(ids);
        let obj = (e * &g).sum(Kind::Float);
        let grads = Tensor::run_backward(&[obj], &[&vars[embed_name]], false, false);
        give(sink, embed_name, &grads[0]);
    } else {
        let obj = (top * &g).sum(Kind::Float);
        let mut params: Vec<(String, Tensor)> = (0..dec.num_layers())
            .flat_map(|i| layer_params(&vars, i))
            .collect();
        params.push((embed_name.to_string(), vars[embed_name].shallow_clone()));
        let inputs: Vec<&Tensor> = params.iter().map(|(_, p)| p).collect();
        let grads = Tensor::run_backward(&[obj], &inputs, false, false);
        for ((name, _), gp) in params.iter().zip(&grads) {
            give(sink, name, gp);
        }
    }
    Ok(LeanPass {
        loss: value,
        extra,
        scores: detached,
    })
}

fn give(sink: &mut GradSink<'_>, name: &str, grad: &Tensor) {
    if grad.defined() {
        sink(name, grad);
    }
}

/// Layer `i`'s parameters, in name order.
fn layer_params(vars: &HashMap<String, Tensor>, i: usize) -> Vec<(String, Tensor)> {
    let prefix = format!("model.layers.{i}.");
    let mut out: Vec<(String, Tensor)> = vars
        .iter()
        .filter(|(n, t)| n.starts_with(&prefix) && t.requires_grad())
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn chunk_len(batch: &PackedBatch, model: &CausalLm, opts: &LeanOptions) -> i64 {
    let bytes = if opts.chunk_bytes > 0 {
        opts.chunk_bytes
    } else {
        DEFAULT_CHUNK_BYTES
    };
    chunk_for_bytes(bytes, batch.batch_size(), model.config().vocab_size)
}

pub(crate) struct RawScores {
    pub token_logprobs: Tensor,
    pub first_logit: Tensor,
    pub entropy: Option<Tensor>,
}

/// One chunk of the head over response states `h` (B, c, C) starting at response column
/// `start`: the raw logit of each response token, its log-prob, and optionally the entropy.
struct ChunkTerms {
    picked: Tensor,
    logprobs: Tensor,
    entropy: Option<Tensor>,
}

fn chunk_terms(
    model: &CausalLm,
    batch: &PackedBatch,
    h: &Tensor,
    start: i64,
    entropy: bool,
) -> ChunkTerms {
    let c = h.size()[1];
    let logits = model.lm_head(h).to_kind(Kind::Float); // (B, c, V)
    let target = batch.response_ids.narrow(1, start, c).unsqueeze(-1);
    let picked = logits.gather(2, &target, false).squeeze_dim(-1); // (B, c)
    let lse = logits.logsumexp([-1], true);
    let entropy = entropy.then(|| {
        let logp = &logits - &lse;
        -(logp.exp() * &logp).sum_dim_intlist(-1, false, Kind::Float)
    });
    ChunkTerms {
        logprobs: &picked - lse.squeeze_dim(-1),
        picked,
        entropy,
    }
}

/// Unmasked per-token log-probs, first logit and entropy from the response states `h`
/// (B, L, C), `chunk` time steps of f32 logits at a time. Differentiable when grad is on
/// (`score_responses` uses it that way).
pub(crate) fn head_scores(
    model: &CausalLm,
    batch: &PackedBatch,
    h: &Tensor,
    chunk: i64,
    entropy: bool,
) -> RawScores {
    let (b, l) = (batch.batch_size(), batch.response_len());
    let device = h.device();
    if l == 0 {
        return RawScores {
            token_logprobs: Tensor::zeros([b, 0], (Kind::Float, device)),
            first_logit: Tensor::zeros([b], (Kind::Float, device)),
            entropy: entropy.then(|| Tensor::zeros([b, 0], (Kind::Float, device))),
        };
    }
    let (mut lps, mut ents) = (Vec::new(), Vec::new());
    let mut first = None;
    let mut start = 0;
    while start < l {
        let c = chunk.min(l - start);
        let terms = chunk_terms(model, batch, &h.narrow(1, start, c), start, entropy);
        if start == 0 {
            first = Some(terms.picked.select(1, 0).copy());
        }
        lps.push(terms.logprobs);
        ents.extend(terms.entropy);
        start += c;
    }
    RawScores {
        token_logprobs: Tensor::cat(&lps, 1),
        first_logit: first.expect("l > 0"),
        entropy: entropy.then(|| Tensor::cat(&ents, 1)),
    }
}
