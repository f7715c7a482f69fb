//! The rollout engine on a tiny random model: a sample's tokens do not depend on the slot
//! count, the sync interval or which other requests share the run; shared prefill equals
//! separate prefill; slots are reused (continuous batching) and the tail is compacted;
//! behaviour log-probs equal the scorer's; a KV budget too small is a clear error.

use std::path::Path;

use tbrm_model::{
    generate_requests, score_responses, CausalLm, EngineOptions, EngineOutput, FinishReason,
    Generation, ModelConfig, ModelType, PackedBatch, Request, SampleKey, SamplingParams, Tokenizer,
};
use tch::{Device, Kind};

fn tokenizer() -> Tokenizer {
    Tokenizer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resources/tok_qwen"))
        .unwrap()
}

fn model(t: ModelType, tok: &Tokenizer) -> CausalLm {
    model_in(t, tok, Kind::Float)
}

fn model_in(t: ModelType, tok: &Tokenizer, kind: Kind) -> CausalLm {
    let mut cfg = ModelConfig::tiny(t);
    cfg.vocab_size = tok.vocab_size() as i64;
    cfg.initializer_range = 0.2;
    CausalLm::from_config(cfg, Device::Cpu, kind, 1).unwrap()
}

/// A tokenizer whose EOS set is a tenth of the vocabulary, so sampled rows end at uneven
/// lengths (some at once, some at the limit).
fn uneven_eos(mut tok: Tokenizer) -> Tokenizer {
    let v = tok.vocab_size() as u32;
    tok.set_eos_token_ids((0..v).filter(|t| t % 10 == 3).collect());
    tok
}

fn requests(tok: &Tokenizer, n: usize, seed: u64) -> Vec<Request> {
    [
        "What is 2+3?",
        "Find x",
        "user assistant system You are Qwen, created by",
        "1+1",
        "Solve 3x = 9 for x, then add two.",
    ]
    .iter()
    .enumerate()
    .map(|(i, s)| Request {
        prompt: tok.encode(s, false).unwrap(),
        samples: (0..n)
            .map(|j| SampleKey {
                seed: seed + i as u64,
                stream: j as u64,
            })
            .collect(),
    })
    .collect()
}

fn params(max_new: usize) -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        max_new_tokens: max_new,
        ..SamplingParams::default()
    }
}

fn run(
    lm: &CausalLm,
    tok: &Tokenizer,
    reqs: &[Request],
    p: &SamplingParams,
    slots: usize,
    sync: usize,
) -> EngineOutput {
    let opts = EngineOptions {
        max_slots: slots,
        sync_every: sync,
        ..EngineOptions::default()
    };
    generate_requests(lm, tok, reqs, p, &opts, None).unwrap()
}

fn assert_same(a: &Generation, b: &Generation, what: &str) {
    assert_eq!(a.response_ids, b.response_ids, "{what}");
    assert_eq!(a.finish, b.finish, "{what}");
    assert_eq!(a.text, b.text, "{what}");
    for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
        assert!((x - y).abs() < 1e-4, "{what}: {x} vs {y}");
    }
}

#[test]
fn samples_do_not_depend_on_slots_sync_or_batch_composition() {
    let tok = uneven_eos(tokenizer());
    for t in [ModelType::Qwen2, ModelType::Qwen3] {
        let lm = model(t, &tok);
        let reqs = requests(&tok, 3, 40);
        let p = params(24);
        let base = run(&lm, &tok, &reqs, &p, 0, 1);
        let lens: Vec<usize> = base
            .generations
            .iter()
            .flatten()
            .map(|g| g.response_ids.len())
            .collect();
        // The check is not vacuous: rows end at different lengths, some by EOS.
        assert!(lens.iter().min() < lens.iter().max(), "{lens:?}");
        assert!(base
            .generations
            .iter()
            .flatten()
            .any(|g| g.finish == FinishReason::Eos));
        for (slots, sync) in [(1, 1), (2, 1), (4, 3), (7, 8), (64, 2)] {
            let other = run(&lm, &tok, &reqs, &p, slots, sync);
            assert_eq!(other.stats.slots, slots.min(15), "{slots}");
            for (r, (a, b)) in base.generations.iter().zip(&other.generations).enumerate() {
                assert_eq!(a.len(), 3);
                for (j, (x, y)) in a.iter().zip(b).enumerate() {
                    assert_same(
                        x,
                        y,
                        &format!("{t:?} slots {slots} sync {sync} req {r}/{j}"),
                    );
                }
            }
        }
        // A request alone, or with its samples reordered among other requests, draws the same.
        let alone = run(&lm, &tok, &reqs[2..3], &p, 0, 1);
        for (x, y) in alone.generations[0].iter().zip(&base.generations[2]) {
            assert_same(x, y, "alone");
        }
        let mut reversed: Vec<Request> = reqs.iter().rev().cloned().collect();
        for r in &mut reversed {
            r.samples.reverse();
        }
        let rev = run(&lm, &tok, &reversed, &p, 4, 1);
        for (r, gens) in rev.generations.iter().enumerate() {
            let want = &base.generations[reqs.len() - 1 - r];
            for (j, g) in gens.iter().enumerate() {
                assert_same(g, &want[want.len() - 1 - j], "reversed");
            }
        }
    }
}

#[test]
fn shared_prefill_equals_separate_prefill() {
    let tok = uneven_eos(tokenizer());
    let lm = model(ModelType::Llama, &tok);
    let shared = requests(&tok, 4, 9);
    let separate: Vec<Request> = shared
        .iter()
        .flat_map(|r| {
            r.samples.iter().map(|&k| Request {
                prompt: r.prompt.clone(),
                samples: vec![k],
            })
        })
        .collect();
    let p = params(16);
    let a = run(&lm, &tok, &shared, &p, 0, 1);
    let b = run(&lm, &tok, &separate, &p, 0, 1);
    // Shared: each prompt prefilled once; separate: once per sample.
    let prompt_tokens: usize = shared.iter().map(|r| r.prompt.len()).sum();
    assert_eq!(a.stats.prefill_tokens, prompt_tokens);
    assert_eq!(b.stats.prefill_tokens, 4 * prompt_tokens);
    let b_flat: Vec<&Generation> = b.generations.iter().flatten().collect();
    let a_flat: Vec<&Generation> = a.generations.iter().flatten().collect();
    assert_eq!(a_flat.len(), b_flat.len());
    for (x, y) in a_flat.iter().zip(&b_flat) {
        assert_same(x, y, "shared vs separate");
    }
    // The samples of one prompt differ from each other (their keys differ).
    let g = &a.generations[0];
    assert!(g.iter().any(|x| x.response_ids != g[0].response_ids));
}

#[test]
fn slots_are_refilled_and_the_tail_is_compacted() {
    let tok = uneven_eos(tokenizer());
    let lm = model(ModelType::Qwen2, &tok);
    let reqs = requests(&tok, 4, 1);
    let out = run(&lm, &tok, &reqs, &params(32), 3, 1);
    let s = &out.stats;
    assert_eq!(s.slots, 3);
    assert_eq!(s.sequences, 20);
    // 20 sequences through 3 slots: prompts were prefilled after earlier rows freed slots.
    assert!(s.prefill_passes >= 7, "{s:?}");
    assert!(s.compactions >= 1, "{s:?}");
    assert!(s.occupancy > 0.5 && s.occupancy <= 1.0, "{s:?}");
    let total: usize = out
        .generations
        .iter()
        .flatten()
        .map(|g| g.response_ids.len())
        .sum();
    assert_eq!(s.generated_tokens, total);
    // Decode steps are fewer than the tokens generated: rows ran side by side.
    assert!(s.decode_steps < total, "{s:?}");
}

/// Engine log-probs minus the scorer's for the same tokens: (max, mean) absolute difference.
fn logprob_gap(kind: Kind) -> (f64, f64) {
    let tok = uneven_eos(tokenizer());
    let lm = model_in(ModelType::Qwen3, &tok, kind);
    let out = run(&lm, &tok, &requests(&tok, 2, 5), &params(20), 4, 2);
    let gens: Vec<&Generation> = out.generations.iter().flatten().collect();
    let pairs: Vec<(&[u32], &[u32])> = gens
        .iter()
        .map(|g| (g.prompt_ids.as_slice(), g.response_ids.as_slice()))
        .collect();
    let batch = PackedBatch::new(&pairs, tok.pad_token_id(), Device::Cpu);
    let scores = tch::no_grad(|| score_responses(&lm, &batch));
    let (mut max, mut sum, mut n) = (0f64, 0f64, 0usize);
    for (i, g) in gens.iter().enumerate() {
        for (j, &lp) in g.logprobs.iter().enumerate() {
            let want = scores.token_logprobs.double_value(&[i as i64, j as i64]);
            let d = (f64::from(lp) - want).abs();
            (max, sum, n) = (max.max(d), sum + d, n + 1);
        }
    }
    assert!(
        n > 20,
        "too few tokens sampled ({n}) for the comparison to mean anything"
    );
    (max, sum / n as f64)
}

#[test]
fn behaviour_logprobs_equal_the_scorer() {
    let (max, _) = logprob_gap(Kind::Float);
    assert!(max < 1e-4, "f32: engine vs scorer differ by up to {max}");
}

/// bf16 on the CPU decodes through another attention kernel (SDPA) and writes the slot cache
/// with `index_put_`; its log-probs must still be the scorer's up to bf16 rounding.
#[test]
fn bf16_behaviour_logprobs_follow_the_scorer() {
    let (max, mean) = logprob_gap(Kind::BFloat16);
    eprintln!("bf16 engine vs scorer: max {max}, mean {mean}");
    assert!(max < 0.15 && mean < 0.03, "bf16: max {max}, mean {mean}");
}

#[test]
fn greedy_rows_match_whatever_the_slots() {
    let tok = uneven_eos(tokenizer());
    let lm = model(ModelType::Qwen2, &tok);
    let reqs = requests(&tok, 1, 0);
    let p = SamplingParams::greedy(20);
    let a = run(&lm, &tok, &reqs, &p, 0, 1);
    let b = run(&lm, &tok, &reqs, &p, 2, 4);
    for (x, y) in a
        .generations
        .iter()
        .flatten()
        .zip(b.generations.iter().flatten())
    {
        assert_same(x, y, "greedy");
    }
}

#[test]
fn bad_budgets_and_prompts_are_clear_errors() {
    let tok = tokenizer();
    let lm = model(ModelType::Qwen2, &tok);
    let reqs = requests(&tok, 1, 0);
    let opts = EngineOptions {
        kv_cache_bytes: 1000,
        ..EngineOptions::default()
    };
    let err = generate_requests(&lm, &tok, &reqs, &params(8), &opts, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kv_cache_bytes") && err.contains("max_new_tokens"),
        "{err}"
    );
    let empty = vec![Request {
        prompt: vec![],
        samples: vec![SampleKey { seed: 0, stream: 0 }],
    }];
    let err = generate_requests(
        &lm,
        &tok,
        &empty,
        &params(8),
        &EngineOptions::default(),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("prompt 0 is empty"), "{err}");
    // No samples: nothing to do, one empty list per request.
    let none = vec![Request {
        prompt: vec![5, 6],
        samples: vec![],
    }];
    let out = generate_requests(
        &lm,
        &tok,
        &none,
        &params(8),
        &EngineOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!(out.generations.len(), 1);
    assert!(out.generations[0].is_empty());
}

#[test]
fn progress_counts_finished_sequences() {
    let tok = uneven_eos(tokenizer());
    let lm = model(ModelType::Qwen2, &tok);
    let reqs = requests(&tok, 2, 3);
    let mut seen = Vec::new();
    let mut cb = |n: usize| seen.push(n);
    generate_requests(
        &lm,
        &tok,
        &reqs,
        &params(12),
        &EngineOptions::default(),
        Some(&mut cb),
    )
    .unwrap();
    assert_eq!(seen.last(), Some(&10));
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}
