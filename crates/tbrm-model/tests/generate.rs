//! Generation end to end on a tiny random model: seeded determinism, greedy against a plain
//! argmax loop over full forward passes, KV-cache log-probs against a full forward pass, stop
//! strings, EOS, and left-padded batches against rows generated alone.

use std::path::Path;

use tbrm_model::{
    generate, CausalLm, FinishReason, ModelConfig, ModelType, SamplingParams, Tokenizer,
};
use tch::{Device, Kind, Tensor};

fn tokenizer() -> Tokenizer {
    Tokenizer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resources/tok_qwen"))
        .unwrap()
}

fn model(t: ModelType, tok: &Tokenizer) -> CausalLm {
    let mut cfg = ModelConfig::tiny(t);
    cfg.vocab_size = tok.vocab_size() as i64;
    // Larger than HF's 0.02 so the distribution is far from uniform (no argmax ties).
    cfg.initializer_range = 0.2;
    CausalLm::from_config(cfg, Device::Cpu, Kind::Float, 1).unwrap()
}

fn prompts(tok: &Tokenizer) -> Vec<Vec<u32>> {
    [
        "What is 2+3?",
        "Find x",
        "user assistant system You are Qwen, created by",
    ]
    .iter()
    .map(|s| tok.encode(s, false).unwrap())
    .collect()
}

fn no_eos(mut tok: Tokenizer) -> Tokenizer {
    tok.set_eos_token_ids(Vec::new());
    tok
}

#[test]
fn same_seed_same_samples_other_seed_other_samples() {
    let tok = tokenizer();
    let lm = model(ModelType::Qwen2, &tok);
    let p = |seed| SamplingParams {
        temperature: 1.0,
        top_p: 0.95,
        top_k: 50,
        max_new_tokens: 12,
        seed,
        ..SamplingParams::default()
    };
    let a = generate(&lm, &tok, &prompts(&tok), &p(7)).unwrap();
    let b = generate(&lm, &tok, &prompts(&tok), &p(7)).unwrap();
    let c = generate(&lm, &tok, &prompts(&tok), &p(8)).unwrap();
    assert_eq!(a, b);
    assert_ne!(
        a.iter().map(|g| &g.response_ids).collect::<Vec<_>>(),
        c.iter().map(|g| &g.response_ids).collect::<Vec<_>>()
    );
    for g in &a {
        assert_eq!(g.logprobs.len(), g.response_ids.len());
        assert!(g.logprobs.iter().all(|&l| l.is_finite() && l <= 0.0));
    }
}

/// Full forward over `ids` without cache or padding: log-softmax of every position (T, V).
fn full_logprobs(lm: &CausalLm, ids: &[u32]) -> Tensor {
    let x: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
    let x = Tensor::from_slice(&x).view([1, -1]);
    let m = x.ones_like();
    tch::no_grad(|| lm.forward(&x, &m, None))
        .get(0)
        .log_softmax(-1, Kind::Float)
}

#[test]
fn greedy_matches_an_argmax_loop_over_full_forward_passes() {
    let tok = no_eos(tokenizer());
    for t in [ModelType::Qwen2, ModelType::Llama, ModelType::Qwen3] {
        let lm = model(t, &tok);
        let prompt = tok.encode("What is 2+3?", false).unwrap();
        let gen = generate(
            &lm,
            &tok,
            std::slice::from_ref(&prompt),
            &SamplingParams::greedy(10),
        )
        .unwrap();
        let mut seq = prompt.clone();
        for _ in 0..10 {
            let lp = full_logprobs(&lm, &seq);
            seq.push(lp.get(-1).argmax(-1, false).int64_value(&[]) as u32);
        }
        assert_eq!(gen[0].response_ids, seq[prompt.len()..], "{t:?}");
        assert_eq!(gen[0].finish, FinishReason::Length);
        // The responses are not constant (the comparison is not vacuous).
        let first = gen[0].response_ids[0];
        assert!(gen[0].response_ids.iter().any(|&x| x != first), "{t:?}");
    }
}

#[test]
fn kv_cache_logprobs_equal_a_full_forward_pass() {
    let tok = no_eos(tokenizer());
    let lm = model(ModelType::Qwen3, &tok);
    let params = SamplingParams {
        temperature: 0.7,
        top_k: 20,
        max_new_tokens: 16,
        seed: 3,
        ..SamplingParams::default()
    };
    let gens = generate(&lm, &tok, &prompts(&tok), &params).unwrap();
    for g in gens {
        let mut seq = g.prompt_ids.clone();
        seq.extend(&g.response_ids);
        let lp = full_logprobs(&lm, &seq);
        let n = g.prompt_ids.len();
        for (j, (&t, &got)) in g.response_ids.iter().zip(&g.logprobs).enumerate() {
            let want = lp.get((n + j - 1) as i64).double_value(&[t as i64]);
            assert!(
                (got as f64 - want).abs() < 1e-4,
                "token {j}: cached {got} vs full {want}"
            );
        }
    }
}

#[test]
fn left_padded_batch_gives_each_row_what_it_gets_alone() {
    let tok = no_eos(tokenizer());
    let lm = model(ModelType::Llama, &tok);
    let ps = prompts(&tok);
    assert!(ps[0].len() != ps[1].len() && ps[1].len() != ps[2].len());
    let params = SamplingParams::greedy(12);
    let batch = generate(&lm, &tok, &ps, &params).unwrap();
    for (i, p) in ps.iter().enumerate() {
        let alone = generate(&lm, &tok, std::slice::from_ref(p), &params).unwrap();
        assert_eq!(batch[i].response_ids, alone[0].response_ids, "row {i}");
        assert_eq!(batch[i].prompt_ids, *p);
        for (a, b) in batch[i].logprobs.iter().zip(&alone[0].logprobs) {
            assert!((a - b).abs() < 1e-4, "row {i}: {a} vs {b}");
        }
    }
}

#[test]
fn stops_on_eos_per_row_and_keeps_the_eos_token() {
    let tok = no_eos(tokenizer());
    let lm = model(ModelType::Qwen2, &tok);
    let ps = prompts(&tok);
    let free = generate(&lm, &tok, &ps, &SamplingParams::greedy(10)).unwrap();
    // Make row 0's fourth greedy token an EOS id: row 0 must stop there, others where their
    // first occurrence of that token is (or at the length limit).
    let stop_tok = free[0].response_ids[3];
    let mut tok = tok;
    tok.set_eos_token_ids(vec![stop_tok]);
    let gens = generate(&lm, &tok, &ps, &SamplingParams::greedy(10)).unwrap();
    for (g, f) in gens.iter().zip(&free) {
        match f.response_ids.iter().position(|&t| t == stop_tok) {
            Some(k) => {
                assert_eq!(g.finish, FinishReason::Eos);
                assert_eq!(g.response_ids, f.response_ids[..=k]);
            }
            None => {
                assert_eq!(g.finish, FinishReason::Length);
                assert_eq!(g.response_ids, f.response_ids);
            }
        }
        assert_eq!(g.logprobs.len(), g.response_ids.len());
    }
    assert!(gens[0].response_ids.len() <= 4);
}

#[test]
fn stop_strings_end_a_row_and_cut_its_text() {
    let tok = no_eos(tokenizer());
    let lm = model(ModelType::Qwen2, &tok);
    let prompt = vec![tok.encode("What is 2+3?", false).unwrap()];
    let free = generate(&lm, &tok, &prompt, &SamplingParams::greedy(12)).unwrap();
    let full = tok.decode(&free[0].response_ids, false).unwrap();
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 6, "{full:?}");
    let stop: String = chars[3..5].iter().collect();
    let params = SamplingParams {
        stop: vec![stop.clone()],
        ..SamplingParams::greedy(12)
    };
    let g = &generate(&lm, &tok, &prompt, &params).unwrap()[0];
    assert_eq!(g.finish, FinishReason::Stop);
    let cut = full.find(&stop).unwrap();
    assert_eq!(g.text, full[..cut]);
    assert!(g.response_ids.len() < free[0].response_ids.len());
    assert_eq!(g.response_ids, free[0].response_ids[..g.response_ids.len()]);
    // The last kept token completes the stop string; one fewer does not contain it.
    let shorter = tok
        .decode(&g.response_ids[..g.response_ids.len() - 1], false)
        .unwrap();
    assert!(!shorter.contains(&stop));
}

#[test]
fn length_limit_and_zero_tokens() {
    let tok = no_eos(tokenizer());
    let lm = model(ModelType::Qwen2, &tok);
    let ps = prompts(&tok);
    let gens = generate(&lm, &tok, &ps, &SamplingParams::greedy(5)).unwrap();
    assert!(gens
        .iter()
        .all(|g| g.response_ids.len() == 5 && g.finish == FinishReason::Length));
    let gens = generate(&lm, &tok, &ps, &SamplingParams::greedy(0)).unwrap();
    assert!(gens
        .iter()
        .all(|g| g.response_ids.is_empty() && g.text.is_empty()));
    assert!(generate(&lm, &tok, &[], &SamplingParams::greedy(3))
        .unwrap()
        .is_empty());
}

#[test]
fn bad_prompts_are_errors() {
    let tok = tokenizer();
    let lm = model(ModelType::Qwen2, &tok);
    let err = generate(&lm, &tok, &[vec![1], vec![]], &SamplingParams::greedy(3)).unwrap_err();
    assert!(err.to_string().contains("prompt 1 is empty"), "{err}");
    let err = generate(&lm, &tok, &[vec![100_000]], &SamplingParams::greedy(3)).unwrap_err();
    assert!(err.to_string().contains("100000"), "{err}");
}

#[test]
fn no_autograd_graph_is_kept() {
    let tok = tokenizer();
    let lm = model(ModelType::Qwen2, &tok);
    // Called with grad mode on: generation must still not record a graph (it would grow
    // memory with every step); the returned log-probs are plain numbers either way, so check
    // that grad mode is restored and a later forward still records one.
    let _ = generate(&lm, &tok, &prompts(&tok), &SamplingParams::greedy(3)).unwrap();
    let x = Tensor::from_slice(&[1i64, 2, 3]).view([1, 3]);
    let y = lm.forward(&x, &x.ones_like(), None);
    assert!(y.requires_grad());
}
