//! Producing trajectories: prompts rendered and tokenised once, responses sampled with the
//! current weights in this process (no weight sync), rewarded, and packed as tbrm-data
//! `Trajectory` records; plus greedy held-out evaluation.
//!
//! All of a step's prompts go to the rollout engine at once (`tbrm_model::engine`: continuous
//! batching, each prompt prefilled once for its n samples). A sample's random stream is keyed
//! by (run seed, step, batch, prompt id, rollout index) through SplitMix64 (Steele, Lea & Flood,
//! "Fast splittable pseudorandom number generators", OOPSLA 2014), never by its place in the
//! batch: a resumed run samples exactly the tokens an uninterrupted one would, and a prompt's
//! samples do not change with the other prompts of the step or the engine's slot count.

use std::collections::HashMap;
use tbrm_data::{Problem, PromptTemplate, RenderedPrompt, Trajectory, TrajectorySource};

use tbrm_model::{
    generate_requests, CausalLm, EngineOptions, FinishReason, Request, SampleKey, SamplingParams,
    Tokenizer,
};

use crate::config::{RolloutSection, TruncatedPolicy};
use crate::metrics::Sample;
use crate::reward::{checked_score, Reward};
use crate::trainer::TrainError;

/// A problem with its prompt rendered and tokenised.
#[derive(Debug, Clone)]
pub struct EncodedProblem {
    pub problem: Problem,
    /// The prompt as the model sees it (after the template and chat template).
    pub prompt_text: String,
    pub prompt_ids: Vec<u32>,
}

/// Sets the tokenizer's stop ids for sampling: the model's EOS, plus the chat template's
/// end-of-turn token when prompts go through it (`chat`, `qwen_math`), plus
/// `rollout.stop_tokens`.
pub fn configure_stops(
    tok: &mut Tokenizer,
    rollout: &RolloutSection,
    template: &PromptTemplate,
) -> Result<(), TrainError> {
    if template.uses_chat_template() {
        let ids = tok.end_of_turn_ids().map_err(|e| {
            TrainError::Config(crate::config::ConfigError::Invalid {
                key: "data.template".into(),
                message: format!("finding the chat template's end-of-turn token: {e}"),
            })
        })?;
        tok.add_eos_token_ids(&ids);
    }
    for (i, name) in rollout.stop_tokens.iter().enumerate() {
        let id = tok.token_to_id(name).ok_or_else(|| {
            TrainError::Config(crate::config::ConfigError::Invalid {
                key: format!("rollout.stop_tokens[{i}]"),
                message: format!("{name:?} is not a single token of the model's vocabulary"),
            })
        })?;
        tok.add_eos_token_ids(&[id]);
    }
    Ok(())
}

/// Renders `problem` with `template` (chat templates through the tokenizer's own
/// `apply_chat_template`, generation prompt added) and tokenises it.
pub fn encode_problem(
    problem: Problem,
    tok: &Tokenizer,
    template: &PromptTemplate,
) -> Result<EncodedProblem, TrainError> {
    let prompt_err = |message: String| TrainError::Prompt {
        id: problem.id.clone(),
        message,
    };
    let (text, add_special) = match template.render(&problem.prompt) {
        RenderedPrompt::Text(t) => (t, true),
        RenderedPrompt::Chat(msgs) => {
            let msgs: Vec<tbrm_model::ChatMessage> = msgs
                .into_iter()
                .map(|m| tbrm_model::ChatMessage {
                    role: m.role,
                    content: m.content,
                })
                .collect();
            let text = tok
                .apply_chat_template(&msgs, true)
                .map_err(|e| prompt_err(e.to_string()))?;
            // The rendered template already holds its special tokens (BOS etc.).
            (text, false)
        }
    };
    let ids = tok
        .encode(&text, add_special)
        .map_err(|e| prompt_err(e.to_string()))?;
    if ids.is_empty() {
        return Err(prompt_err("the prompt tokenises to nothing".into()));
    }
    Ok(EncodedProblem {
        problem,
        prompt_text: text,
        prompt_ids: ids,
    })
}

/// SplitMix64's finaliser: a well-mixed 64-bit value from a 64-bit input.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seed for one purpose (`stream`) at one step of a run.
pub fn derive_seed(seed: u64, step: u64, stream: u64) -> u64 {
    mix64(mix64(mix64(seed) ^ step) ^ stream)
}

/// FNV-1a of a prompt id: a stable 64-bit name for the prompt, whatever its place in a batch.
pub fn prompt_hash(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// For each problem, how many times its id appeared earlier in `problems`: the occurrence
/// index that keys a repeated prompt's samples.
pub fn occurrences(problems: &[&EncodedProblem]) -> Vec<u64> {
    let mut seen: HashMap<&str, u64> = HashMap::new();
    problems
        .iter()
        .map(|p| {
            let n = seen.entry(p.problem.id.as_str()).or_insert(0);
            *n += 1;
            *n - 1
        })
        .collect()
}

/// One engine request per problem, its `n` samples on streams 0..n of a seed keyed by the
/// call's `seed` and the prompt id (and its occurrence, should a prompt appear twice).
pub fn sample_requests(problems: &[&EncodedProblem], n: usize, seed: u64) -> Vec<Request> {
    sample_requests_at(problems, &occurrences(problems), n, seed)
}

/// [`sample_requests`] with the occurrence indices given: a data-parallel rank samples a slice
/// of the step's prompts with the occurrences counted over the whole list, so its samples are
/// the ones a single process would draw.
pub fn sample_requests_at(
    problems: &[&EncodedProblem],
    occurrences: &[u64],
    n: usize,
    seed: u64,
) -> Vec<Request> {
    problems
        .iter()
        .zip(occurrences)
        .map(|(p, &occurrence)| {
            let key = derive_seed(seed, prompt_hash(&p.problem.id), occurrence);
            Request {
                prompt: p.prompt_ids.clone(),
                samples: (0..n as u64)
                    .map(|stream| SampleKey { seed: key, stream })
                    .collect(),
            }
        })
        .collect()
}

/// The engine sizing of the `[rollout]` section.
pub fn engine_options(settings: &RolloutSection) -> EngineOptions {
    EngineOptions {
        max_slots: settings.generation_batch,
        kv_cache_bytes: (settings.kv_cache_gb * (1u64 << 30) as f64) as u64,
        prefill_tokens: settings.prefill_tokens,
        sync_every: settings.sync_every,
    }
}

/// What one round of sampling produced.
pub struct Rollouts {
    pub trajectories: Vec<Trajectory>,
    /// The first few prompts with their responses, for samples.jsonl.
    pub samples: Vec<Sample>,
    /// Response tokens generated.
    pub tokens: usize,
}

/// Samples `settings.n` responses for each problem with the current weights and rewards them.
/// `occurrences` are the problems' occurrence indices in the step's prompt list
/// ([`occurrences`]). `policy_step` is the number of optimizer steps the weights have had.
#[allow(clippy::too_many_arguments)]
pub fn rollout(
    model: &CausalLm,
    tok: &Tokenizer,
    problems: &[&EncodedProblem],
    occurrences: &[u64],
    settings: &RolloutSection,
    reward: &dyn Reward,
    seed: u64,
    policy_step: u64,
    source: TrajectorySource,
    keep_samples: usize,
) -> Result<Rollouts, TrainError> {
    let params = SamplingParams {
        temperature: settings.temperature,
        top_p: settings.top_p,
        top_k: settings.top_k,
        max_new_tokens: settings.max_new_tokens,
        stop: Vec::new(),
        seed: 0,
    };
    let requests = sample_requests_at(problems, occurrences, settings.n, seed);
    let out = generate_requests(
        model,
        tok,
        &requests,
        &params,
        &engine_options(settings),
        None,
    )
    .map_err(TrainError::Generation)?;
    let generations = out.generations;
    let mut out = Rollouts {
        trajectories: Vec::with_capacity(problems.len() * settings.n),
        samples: Vec::new(),
        tokens: 0,
    };
    for (p, gens) in problems.iter().zip(generations) {
        for g in gens {
            if g.response_ids.is_empty() {
                // generate always emits at least one token; an empty response has no action
                // to train on, so it would only be noise in the metrics.
                continue;
            }
            let truncated = g.finish == FinishReason::Length;
            let mut r = checked_score(reward, &p.problem, &g.text)?;
            if truncated && settings.truncated == TruncatedPolicy::ZeroReward {
                r = 0.0;
            }
            out.tokens += g.response_ids.len();
            if out.samples.len() < keep_samples {
                out.samples.push(Sample {
                    step: policy_step + 1,
                    prompt_key: p.problem.id.clone(),
                    prompt: p.prompt_text.clone(),
                    response: g.text.clone(),
                    reward: r,
                    truncated,
                });
            }
            out.trajectories.push(Trajectory {
                prompt_key: p.problem.id.clone(),
                prompt_ids: g.prompt_ids,
                response_ids: g.response_ids,
                behaviour_logprobs: g.logprobs,
                reward: r,
                truncated,
                source: source.clone(),
                policy_step,
            });
        }
    }
    Ok(out)
}

/// Held-out accuracy (0..1): one greedy response per problem, judged by
/// [`Reward::is_correct`]; at most `batch` sequences decoded at once (0 = the engine's choice).
pub fn evaluate(
    model: &CausalLm,
    tok: &Tokenizer,
    problems: &[EncodedProblem],
    max_new_tokens: usize,
    batch: usize,
    engine: &EngineOptions,
    reward: &dyn Reward,
) -> Result<f64, TrainError> {
    if problems.is_empty() {
        return Ok(0.0);
    }
    let correct = evaluate_correct(model, tok, problems, max_new_tokens, batch, engine, reward)?;
    Ok(correct as f64 / problems.len() as f64)
}

/// The number of `problems` [`evaluate`] finds solved (a data-parallel rank's share, summed
/// over ranks).
pub fn evaluate_correct(
    model: &CausalLm,
    tok: &Tokenizer,
    problems: &[EncodedProblem],
    max_new_tokens: usize,
    batch: usize,
    engine: &EngineOptions,
    reward: &dyn Reward,
) -> Result<usize, TrainError> {
    if problems.is_empty() {
        return Ok(0);
    }
    let requests: Vec<Request> = problems
        .iter()
        .map(|p| Request {
            prompt: p.prompt_ids.clone(),
            samples: vec![SampleKey { seed: 0, stream: 0 }],
        })
        .collect();
    let opts = EngineOptions {
        max_slots: batch,
        ..engine.clone()
    };
    let out = generate_requests(
        model,
        tok,
        &requests,
        &SamplingParams::greedy(max_new_tokens),
        &opts,
        None,
    )
    .map_err(TrainError::Generation)?;
    let mut correct = 0usize;
    for (p, gens) in problems.iter().zip(&out.generations) {
        for g in gens {
            if reward.is_correct(&p.problem, &g.text)? {
                correct += 1;
            }
        }
    }
    Ok(correct)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_by_step_and_stream() {
        let a = derive_seed(1, 0, 0);
        assert_ne!(a, derive_seed(1, 1, 0));
        assert_ne!(a, derive_seed(1, 0, 1));
        assert_ne!(a, derive_seed(2, 0, 0));
        assert_eq!(a, derive_seed(1, 0, 0));
    }

    #[test]
    fn sample_keys_follow_the_prompt_not_its_place() {
        let prob = |id: &str| EncodedProblem {
            problem: Problem {
                id: id.into(),
                prompt: tbrm_data::PromptInput::Text(String::new()),
                answer: "1".into(),
                source: "test".into(),
                extra: serde_json::Value::Null,
            },
            prompt_text: String::new(),
            prompt_ids: vec![1, 2],
        };
        let (a, b) = (prob("a"), prob("b"));
        let ab = sample_requests(&[&a, &b], 3, 7);
        let ba = sample_requests(&[&b, &a], 3, 7);
        assert_eq!(ab[0], ba[1]);
        assert_eq!(ab[1], ba[0]);
        assert_ne!(ab[0].samples[0].seed, ab[1].samples[0].seed);
        let streams: Vec<u64> = ab[0].samples.iter().map(|k| k.stream).collect();
        assert_eq!(streams, vec![0, 1, 2]);
        // A prompt seen twice in one call gets fresh samples the second time.
        let aa = sample_requests(&[&a, &a], 1, 7);
        assert_ne!(aa[0].samples[0].seed, aa[1].samples[0].seed);
        // Another call seed, other samples.
        assert_ne!(sample_requests(&[&a], 1, 8)[0], ab[0]);
    }

    #[test]
    fn chat_prompts_also_stop_at_the_end_of_turn_and_extra_stop_tokens_are_checked() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tbrm-model/tests/resources/tok_named");
        let load = || Tokenizer::load(&dir).unwrap();
        let id = |t: &Tokenizer, s: &str| t.token_to_id(s).unwrap();
        let rollout = RolloutSection::default();

        let mut tok = load();
        configure_stops(&mut tok, &rollout, &PromptTemplate::Plain).unwrap();
        assert_eq!(tok.eos_token_ids(), &[id(&tok, "<|endoftext|>")]);

        let mut tok = load();
        configure_stops(&mut tok, &rollout, &PromptTemplate::QwenMath).unwrap();
        let want = [id(&tok, "<|endoftext|>"), id(&tok, "<|im_end|>")];
        assert_eq!(tok.eos_token_ids(), &want);

        let mut tok = load();
        let extra = RolloutSection {
            stop_tokens: vec!["<|im_start|>".into()],
            ..RolloutSection::default()
        };
        configure_stops(&mut tok, &extra, &PromptTemplate::Plain).unwrap();
        let want = [id(&tok, "<|endoftext|>"), id(&tok, "<|im_start|>")];
        assert_eq!(tok.eos_token_ids(), &want);

        let bad = RolloutSection {
            stop_tokens: vec!["<|im_end|>".into(), "two words".into()],
            ..RolloutSection::default()
        };
        let err = configure_stops(&mut load(), &bad, &PromptTemplate::Plain)
            .unwrap_err()
            .to_string();
        assert!(err.contains("rollout.stop_tokens[1]"), "{err}");
    }
}
