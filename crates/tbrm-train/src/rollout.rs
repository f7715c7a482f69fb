//! Producing trajectories: prompts rendered and tokenised once, responses sampled with the
//! current weights in this process (no weight sync), rewarded, and packed as tbrm-data
//! `Trajectory` records; plus greedy held-out evaluation.
//!
//! Sampling seeds are derived from (run seed, step, batch, chunk) by SplitMix64 (Steele, Lea &
//! Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014), so a resumed run
//! samples exactly the tokens an uninterrupted one would.

use tbrm_data::{Problem, PromptTemplate, RenderedPrompt, Trajectory, TrajectorySource};
use tbrm_model::{generate, CausalLm, FinishReason, SamplingParams, Tokenizer};

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

/// What one round of sampling produced.
pub struct Rollouts {
    pub trajectories: Vec<Trajectory>,
    /// The first few prompts with their responses, for samples.jsonl.
    pub samples: Vec<Sample>,
    /// Response tokens generated.
    pub tokens: usize,
}

/// Samples `settings.n` responses for each problem with the current weights and rewards them.
/// `policy_step` is the number of optimizer steps the weights have had.
#[allow(clippy::too_many_arguments)]
pub fn rollout(
    model: &CausalLm,
    tok: &Tokenizer,
    problems: &[&EncodedProblem],
    settings: &RolloutSection,
    reward: &dyn Reward,
    seed: u64,
    policy_step: u64,
    source: TrajectorySource,
    keep_samples: usize,
) -> Result<Rollouts, TrainError> {
    let mut expanded: Vec<&EncodedProblem> = Vec::with_capacity(problems.len() * settings.n);
    for p in problems {
        for _ in 0..settings.n {
            expanded.push(p);
        }
    }
    let chunk = if settings.generation_batch == 0 {
        expanded.len().max(1)
    } else {
        settings.generation_batch
    };
    let mut out = Rollouts {
        trajectories: Vec::with_capacity(expanded.len()),
        samples: Vec::new(),
        tokens: 0,
    };
    for (c, part) in expanded.chunks(chunk).enumerate() {
        let prompts: Vec<Vec<u32>> = part.iter().map(|p| p.prompt_ids.clone()).collect();
        let params = SamplingParams {
            temperature: settings.temperature,
            top_p: settings.top_p,
            top_k: settings.top_k,
            max_new_tokens: settings.max_new_tokens,
            stop: Vec::new(),
            seed: mix64(seed ^ c as u64),
        };
        let gens = generate(model, tok, &prompts, &params).map_err(TrainError::Generation)?;
        for (p, g) in part.iter().zip(gens) {
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
/// [`Reward::is_correct`].
pub fn evaluate(
    model: &CausalLm,
    tok: &Tokenizer,
    problems: &[EncodedProblem],
    max_new_tokens: usize,
    batch: usize,
    reward: &dyn Reward,
) -> Result<f64, TrainError> {
    if problems.is_empty() {
        return Ok(0.0);
    }
    let mut correct = 0usize;
    for part in problems.chunks(batch.max(1)) {
        let prompts: Vec<Vec<u32>> = part.iter().map(|p| p.prompt_ids.clone()).collect();
        let gens = generate(
            model,
            tok,
            &prompts,
            &SamplingParams::greedy(max_new_tokens),
        )
        .map_err(TrainError::Generation)?;
        for (p, g) in part.iter().zip(gens) {
            if reward.is_correct(&p.problem, &g.text)? {
                correct += 1;
            }
        }
    }
    Ok(correct as f64 / problems.len() as f64)
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
}
