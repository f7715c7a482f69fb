//! The memory-lean pass (`lean::forward_backward`) against plain autograd through
//! scoring with full logits: same loss, same gradient for every parameter, with and
//! without layer recomputation, for any head chunk size, for the three loss shapes the trainer
//! uses (TBRM's squared residual, a ratio-weighted policy gradient, an entropy bonus).

use std::collections::HashMap;

use tbrm_model::{
    forward_backward, score_responses, CausalLm, LeanOptions, LeanScores, ModelConfig, ModelType,
    PackedBatch,
};
use tch::{Device, Kind, Tensor};

fn model(t: ModelType, tied: bool) -> CausalLm {
    let mut cfg = ModelConfig::tiny(t);
    cfg.vocab_size = 97;
    cfg.num_hidden_layers = 3;
    cfg.initializer_range = 0.2;
    cfg.tie_word_embeddings = tied;
    CausalLm::from_config(cfg, Device::Cpu, Kind::Float, 11).unwrap()
}

fn batch() -> PackedBatch {
    let pairs: Vec<(Vec<u32>, Vec<u32>)> = vec![
        (vec![3, 14, 15, 92], vec![65, 35, 89, 79, 32]),
        (vec![38], vec![46, 26]),
        (vec![43, 38, 32], vec![]),
        (vec![7, 7], vec![1, 9, 9]),
    ];
    let refs: Vec<(&[u32], &[u32])> = pairs
        .iter()
        .map(|(a, b)| (a.as_slice(), b.as_slice()))
        .collect();
    PackedBatch::new(&refs, 0, Device::Cpu)
}

#[derive(Clone, Copy, Debug)]
enum Loss {
    Tbrm,
    Ratio,
    Entropy,
}

/// The loss from scores; `aux` holds fixed per-token numbers (B, L).
fn loss_of(kind: Loss, s: &LeanScores, mask: &Tensor, aux: &Tensor) -> Tensor {
    match kind {
        Loss::Tbrm => {
            // f = first_logit + sum_{h>=2} logp - sum ref - r/beta, ref = aux, r/beta = 3.
            let lp = &s.token_logprobs;
            let rest = lp.sum_dim_intlist(1, false, Kind::Float) - lp.select(1, 0);
            let f =
                &s.first_logit + rest - (aux * mask).sum_dim_intlist(1, false, Kind::Float) - 3.0;
            f.square().mean(Kind::Float)
        }
        Loss::Ratio => {
            let ratio = (&s.token_logprobs - aux * mask).exp() * mask;
            -(ratio * aux).sum(Kind::Float) / mask.sum(Kind::Float)
        }
        Loss::Entropy => {
            let ent = s.entropy.as_ref().expect("entropy asked for");
            (&s.token_logprobs * aux).sum(Kind::Float) - ent.sum(Kind::Float) * 0.1
        }
    }
}

/// Plain autograd: score with grad (entropy computed from full logits), backward, read `.grad`.
fn reference_grads(
    lm: &CausalLm,
    b: &PackedBatch,
    kind: Loss,
    aux: &Tensor,
) -> (f64, HashMap<String, Tensor>) {
    let s = score_responses(lm, b);
    let entropy = matches!(kind, Loss::Entropy).then(|| {
        let hidden = lm.hidden_states(&b.input_ids, &b.attention_mask, None);
        let logits = lm.lm_head(&b.response_hidden(&hidden)).to_kind(Kind::Float);
        let logp = logits.log_softmax(-1, Kind::Float);
        -(logp.exp() * &logp).sum_dim_intlist(-1, false, Kind::Float) * &b.response_mask
    });
    let scores = LeanScores {
        token_logprobs: s.token_logprobs,
        first_logit: s.first_logit,
        entropy,
    };
    let loss = loss_of(kind, &scores, &b.response_mask, aux);
    loss.backward();
    let grads = lm
        .var_store()
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.grad().copy()))
        .collect();
    (loss.double_value(&[]), grads)
}

fn lean_grads(
    lm: &CausalLm,
    b: &PackedBatch,
    kind: Loss,
    aux: &Tensor,
    opts: LeanOptions,
) -> (f64, HashMap<String, Tensor>) {
    let mut grads: HashMap<String, Tensor> = HashMap::new();
    let mut sink = |name: &str, g: &Tensor| {
        let acc = grads
            .entry(name.to_string())
            .or_insert_with(|| g.zeros_like());
        *acc += g;
    };
    let pass = forward_backward(
        lm,
        b,
        &opts,
        |s| Ok::<_, ()>((loss_of(kind, s, &b.response_mask, aux), ())),
        &mut sink,
    )
    .unwrap();
    (pass.loss, grads)
}

#[test]
fn lean_pass_equals_plain_autograd() {
    let b = batch();
    let aux = Tensor::randn([4, 5], (Kind::Float, Device::Cpu)) * 0.3 - 1.0;
    for (t, tied) in [
        (ModelType::Qwen2, true),
        (ModelType::Llama, false),
        (ModelType::Qwen3, false),
    ] {
        for kind in [Loss::Tbrm, Loss::Ratio, Loss::Entropy] {
            let lm_ref = model(t, tied);
            let (want_loss, want) = reference_grads(&lm_ref, &b, kind, &aux);
            for (recompute, chunk_bytes) in [(true, 0), (true, 4 * 4 * 97 * 2), (false, 4 * 4 * 97)]
            {
                let lm = model(t, tied);
                let opts = LeanOptions {
                    recompute,
                    chunk_bytes,
                    entropy: matches!(kind, Loss::Entropy),
                };
                let (loss, got) = lean_grads(&lm, &b, kind, &aux, opts);
                let what = format!(
                    "{t:?} tied={tied} {kind:?} recompute={recompute} chunk_bytes={chunk_bytes}"
                );
                assert!(
                    (loss - want_loss).abs() < 1e-4 * want_loss.abs().max(1.0),
                    "{what}: loss {loss} vs {want_loss}"
                );
                assert_eq!(
                    got.len(),
                    want.len(),
                    "{what}: every parameter gets a gradient"
                );
                for (name, w) in &want {
                    let g = got
                        .get(name)
                        .unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
                    let scale = w.abs().max().double_value(&[]).max(1e-3);
                    let d = (g - w).abs().max().double_value(&[]);
                    assert!(
                        d < 1e-4 * scale.max(1.0),
                        "{what}: {name} differs by {d} (scale {scale})"
                    );
                }
                // No `.grad` is filled: the sink got everything.
                for (name, v) in lm.var_store().variables() {
                    assert!(!v.grad().defined(), "{what}: {name} has a .grad");
                }
            }
        }
    }
}

#[test]
fn non_finite_loss_back_propagates_nothing() {
    let lm = model(ModelType::Qwen2, true);
    let b = batch();
    let mut calls = 0;
    let mut sink = |_: &str, _: &Tensor| calls += 1;
    let pass = forward_backward(
        &lm,
        &b,
        &LeanOptions::default(),
        |s| Ok::<_, ()>((s.first_logit.sum(Kind::Float) * f64::NAN, 7)),
        &mut sink,
    )
    .unwrap();
    assert!(pass.loss.is_nan());
    assert_eq!(pass.extra, 7);
    assert_eq!(calls, 0);
}

/// `forward_scores` (no grad) gives exactly what the training pass hands its loss closure, with
/// and without recomputation and for a small head chunk: the trainer's recomputed old
/// log-probs make the first ratio exactly 1.
#[test]
fn forward_scores_equal_the_training_pass() {
    let lm = model(ModelType::Qwen2, false);
    let b = batch();
    for (recompute, chunk_bytes) in [(true, 0), (false, 0), (true, 4 * 4 * 97 * 2)] {
        let opts = LeanOptions {
            recompute,
            chunk_bytes,
            entropy: true,
        };
        let scored = tbrm_model::forward_scores(&lm, &b, &opts);
        assert!(!scored.token_logprobs.requires_grad());
        let mut sink = |_: &str, _: &Tensor| {};
        let pass = forward_backward(
            &lm,
            &b,
            &opts,
            |s| {
                let l = s.token_logprobs.sum(Kind::Float) + s.first_logit.sum(Kind::Float);
                Ok::<_, std::convert::Infallible>((l, ()))
            },
            &mut sink,
        )
        .unwrap();
        let what = format!("recompute={recompute} chunk_bytes={chunk_bytes}");
        let same = |a: &Tensor, b: &Tensor, name: &str| {
            let d = (a - b).abs().max().double_value(&[]);
            assert_eq!(d, 0.0, "{what}: {name} differs by {d}");
        };
        same(
            &scored.token_logprobs,
            &pass.scores.token_logprobs,
            "token_logprobs",
        );
        same(&scored.first_logit, &pass.scores.first_logit, "first_logit");
        same(
            scored.entropy.as_ref().unwrap(),
            pass.scores.entropy.as_ref().unwrap(),
            "entropy",
        );
        // Not all zeros: real scores were compared.
        assert!(
            scored
                .token_logprobs
                .abs()
                .sum(Kind::Float)
                .double_value(&[])
                > 1.0
        );
    }
}
