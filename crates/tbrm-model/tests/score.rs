//! `score_responses` against a naive full log-softmax over the whole (B, P + L, V) logits.

use tbrm_model::{
    score_responses, score_responses_chunked, score_responses_with_hidden, CausalLm, ModelConfig,
    ModelType, PackedBatch,
};
use tch::{Device, Kind, Tensor};

fn model(t: ModelType) -> CausalLm {
    let mut cfg = ModelConfig::tiny(t);
    cfg.vocab_size = 97;
    cfg.initializer_range = 0.2;
    CausalLm::from_config(cfg, Device::Cpu, Kind::Float, 5).unwrap()
}

type Pair = (Vec<u32>, Vec<u32>);

fn pairs() -> Vec<Pair> {
    vec![
        (vec![3, 14, 15, 92], vec![65, 35, 89, 79, 32]),
        (vec![38], vec![46, 26]),
        (vec![43, 38, 32], vec![]),
        (vec![7, 7], vec![1]),
    ]
}

fn packed(p: &[Pair]) -> PackedBatch {
    let refs: Vec<(&[u32], &[u32])> = p
        .iter()
        .map(|(a, b)| (a.as_slice(), b.as_slice()))
        .collect();
    PackedBatch::new(&refs, 0, Device::Cpu)
}

/// Every response token's log-prob from one row scored alone, with the full logits.
fn naive(lm: &CausalLm, prompt: &[u32], response: &[u32]) -> (Vec<f64>, f64) {
    let ids: Vec<i64> = prompt.iter().chain(response).map(|&t| t as i64).collect();
    let x = Tensor::from_slice(&ids).view([1, -1]);
    let logits = lm.forward(&x, &x.ones_like(), None).get(0); // (T, V) f32
    let lp = logits.log_softmax(-1, Kind::Float);
    let n = prompt.len() as i64;
    let lps = response
        .iter()
        .enumerate()
        .map(|(j, &t)| lp.double_value(&[n - 1 + j as i64, t as i64]))
        .collect();
    let first = response
        .first()
        .map_or(0.0, |&t| logits.double_value(&[n - 1, t as i64]));
    (lps, first)
}

#[test]
fn chunked_scores_equal_naive_log_softmax_for_every_chunk_size() {
    let _g = tch::no_grad_guard();
    for t in [ModelType::Qwen2, ModelType::Llama, ModelType::Qwen3] {
        let lm = model(t);
        let p = pairs();
        let batch = packed(&p);
        let l = batch.response_len();
        for chunk in [1, 2, 3, 100] {
            let s = score_responses_chunked(&lm, &batch, chunk);
            assert_eq!(s.token_logprobs.size(), [4, l]);
            assert_eq!(s.token_logprobs.kind(), Kind::Float);
            for (i, (prompt, response)) in p.iter().enumerate() {
                let (want, first) = naive(&lm, prompt, response);
                for j in 0..l {
                    let got = s.token_logprobs.double_value(&[i as i64, j]);
                    let w = want.get(j as usize).copied().unwrap_or(0.0);
                    assert!(
                        (got - w).abs() < 1e-4,
                        "{t:?} chunk {chunk} row {i} tok {j}: {got} vs {w}"
                    );
                }
                let got = s.first_logit.double_value(&[i as i64]);
                assert!(
                    (got - first).abs() < 1e-4,
                    "{t:?} first logit row {i}: {got} vs {first}"
                );
            }
        }
        let default = score_responses(&lm, &batch);
        let one = score_responses_chunked(&lm, &batch, 1);
        assert!(default
            .token_logprobs
            .allclose(&one.token_logprobs, 1e-5, 1e-6, false));
    }
}

#[test]
fn gradients_match_the_naive_loss() {
    let lm = model(ModelType::Qwen2);
    let p = pairs();
    let batch = packed(&p);
    let s = score_responses_chunked(&lm, &batch, 2);
    assert!(s.token_logprobs.requires_grad());
    (s.token_logprobs.sum(Kind::Float) + s.first_logit.sum(Kind::Float)).backward();
    let name = "model.layers.1.mlp.up_proj.weight";
    let g_chunked = lm.var_store().variables()[name].grad().copy();

    let lm2 = model(ModelType::Qwen2);
    let mut total = Tensor::zeros([], (Kind::Float, Device::Cpu));
    for (prompt, response) in &p {
        let ids: Vec<i64> = prompt.iter().chain(response).map(|&t| t as i64).collect();
        let x = Tensor::from_slice(&ids).view([1, -1]);
        let logits = lm2.forward(&x, &x.ones_like(), None).get(0);
        let lp = logits.log_softmax(-1, Kind::Float);
        let n = prompt.len() as i64;
        for (j, &t) in response.iter().enumerate() {
            total += lp.get(n - 1 + j as i64).get(t as i64);
        }
        if let Some(&t) = response.first() {
            total += logits.get(n - 1).get(t as i64);
        }
    }
    total.backward();
    let g_naive = lm2.var_store().variables()[name].grad();
    let d = (&g_chunked - &g_naive).abs().max().double_value(&[]);
    assert!(d < 1e-4, "gradient differs by {d}");
    assert!(g_naive.abs().max().double_value(&[]) > 1e-3);
}

#[test]
fn hidden_states_are_the_ones_before_each_response_token() {
    let _g = tch::no_grad_guard();
    let lm = model(ModelType::Llama);
    let batch = packed(&pairs());
    let (s, h) = score_responses_with_hidden(&lm, &batch);
    let (b, l) = (batch.batch_size(), batch.response_len());
    assert_eq!(h.size(), [b, l, lm.config().hidden_size]);
    // The head over these hidden states reproduces the scores.
    let lp = lm
        .lm_head(&h)
        .to_kind(Kind::Float)
        .log_softmax(-1, Kind::Float)
        .gather(2, &batch.response_ids.unsqueeze(-1), false)
        .squeeze_dim(-1)
        * &batch.response_mask;
    assert!(lp.allclose(&s.token_logprobs, 1e-5, 1e-5, false));
    let full = lm.hidden_states(&batch.input_ids, &batch.attention_mask, None);
    assert!(h.equal(&batch.response_hidden(&full)));
    assert_eq!(l, 5);
}

#[test]
fn padding_is_zero_and_empty_responses_score_nothing() {
    let _g = tch::no_grad_guard();
    let lm = model(ModelType::Qwen3);
    let batch = packed(&pairs());
    let s = score_responses(&lm, &batch);
    let masked_out = (&s.token_logprobs * (batch.response_mask.ones_like() - &batch.response_mask))
        .abs()
        .sum(Kind::Float);
    assert_eq!(masked_out.double_value(&[]), 0.0);
    assert_eq!(s.first_logit.double_value(&[2]), 0.0);
    let only_empty = packed(&[(vec![1, 2], vec![])]);
    let s = score_responses(&lm, &only_empty);
    assert_eq!(s.token_logprobs.size(), [1, 0]);
    assert_eq!(s.first_logit.size(), [1]);
}
