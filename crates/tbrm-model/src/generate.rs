//! Sampling: parameters, outputs, and the token choice shared by the rollout engine
//! ([`crate::engine`], which schedules the sequences) and the [`generate`] convenience call.
//!
//! Sampling follows transformers' logits-processor order: temperature, then top-k, then top-p
//! (nucleus, Holtzman et al. 2019: keep the smallest set of most likely tokens whose mass
//! reaches `top_p`). Temperature 0 is greedy argmax. Randomness comes from one ChaCha8 stream
//! per sample (its `SampleKey`), drawn on the host as one uniform per sample and step and
//! turned into a token by inverse-CDF search over the filtered distribution, so the same seed
//! gives the same tokens on CPU regardless of torch's global generator or other threads.
//!
//! **Log-probs.** `Generation::logprobs[i]` is `log_softmax(raw logits)[token_i]` computed in
//! f32: the log-probability under the temperature-1, unfiltered policy, which is what the
//! trainer uses as pi_behaviour (TBRM/GRPO/PPO all score responses at temperature 1). It is not
//! the probability the token was actually sampled with when temperature/top-k/top-p differ
//! from the defaults.
//!
//! **Outputs.** `response_ids` include the EOS token when the row stopped on EOS, and the token
//! that completed a stop string when it stopped on one. `text` is the response decoded without
//! special tokens; on a stop string it is cut where the stop string starts (vLLM's default).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::engine::{generate_requests, EngineOptions, Request, SampleKey};
use crate::{CausalLm, ModelError, Tokenizer};

/// How to sample. `top_k == 0` and `top_p == 1.0` switch those filters off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
    pub max_new_tokens: usize,
    /// Stop strings: a row ends as soon as its decoded response contains one.
    pub stop: Vec<String>,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 256,
            stop: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of up to `max_new_tokens`.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            temperature: 0.0,
            max_new_tokens,
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ModelError> {
        let bad = |key: &str, msg: String| Err(ModelError::config("<sampling>", key, msg));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(
                "temperature",
                format!("must be >= 0, got {}", self.temperature),
            );
        }
        if self.top_p.is_nan() || self.top_p <= 0.0 || self.top_p > 1.0 {
            return bad("top_p", format!("must be in (0, 1], got {}", self.top_p));
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("stop", "stop strings must not be empty".into());
        }
        Ok(())
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// Sampled one of the tokenizer's EOS ids.
    Eos,
    /// The response contains one of the stop strings.
    Stop,
    /// Reached `max_new_tokens`.
    Length,
}

/// One sampled continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub response_ids: Vec<u32>,
    /// log pi(token | prefix) under the temperature-1 policy, one per response token.
    pub logprobs: Vec<f32>,
    pub text: String,
    pub finish: FinishReason,
}

/// Samples a continuation for every prompt (token ids, unpadded) through the rollout engine
/// ([`crate::engine`]) with default sizing. Row i draws from the ChaCha8 stream
/// `(params.seed, i)`. Runs without autograd.
pub fn generate(
    model: &CausalLm,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
) -> Result<Vec<Generation>, ModelError> {
    let requests: Vec<Request> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Request {
            prompt: p.clone(),
            samples: vec![SampleKey {
                seed: params.seed,
                stream: i as u64,
            }],
        })
        .collect();
    let out = generate_requests(
        model,
        tok,
        &requests,
        params,
        &EngineOptions::default(),
        None,
    )?;
    Ok(out.generations.into_iter().flatten().collect())
}

/// Next token per row from f32 logits (b, V) and their `log_softmax` `logp`, given one uniform
/// in [0, 1) per row, `u` (b, 1) on the logits' device (unused when greedy).
pub(crate) fn sample(
    logits: &Tensor,
    logp: &Tensor,
    params: &SamplingParams,
    u: Option<&Tensor>,
) -> Tensor {
    if params.temperature == 0.0 {
        return logits.argmax(-1, false);
    }
    let v = logits.size()[1];
    let use_top_k = params.top_k > 0 && (params.top_k as i64) < v;
    let use_top_p = params.top_p < 1.0;
    // Plain sampling at temperature 1 (the trainer's rollouts) reuses the log-softmax the caller
    // needs anyway instead of a second softmax pass over the vocabulary.
    let (mut probs, order) = if !use_top_k && !use_top_p && params.temperature == 1.0 {
        (logp.exp(), None)
    } else {
        let scaled = logits / params.temperature;
        // Candidates in descending order when a filter needs the order; `order` maps back to
        // ids.
        let (vals, order) = if use_top_k {
            let (vals, idx) = scaled.topk(params.top_k as i64, -1, true, true);
            (vals, Some(idx))
        } else if use_top_p {
            let (vals, idx) = scaled.sort(-1, true);
            (vals, Some(idx))
        } else {
            (scaled, None)
        };
        (vals.softmax(-1, Kind::Float), order)
    };
    if use_top_p {
        // Keep a token when the mass strictly before it is below top_p (the first always).
        let before = probs.cumsum(-1, Kind::Float) - &probs;
        probs = &probs * before.lt(params.top_p).to_kind(Kind::Float);
    }
    let cdf = probs.cumsum(-1, Kind::Float);
    let last = cdf.size()[1] - 1;
    let total = cdf.narrow(1, last, 1); // (b, 1)
    let u = u.expect("sampling at temperature > 0 needs one uniform per row") * &total;
    // First index whose cumulative mass exceeds u (a binary search per row; the cdf is
    // non-decreasing): zero-probability entries never qualify.
    let pos = u
        .searchsorted(&cdf, false, true, "right", None::<Tensor>)
        .squeeze_dim(1)
        .clamp_max(last);
    match order {
        Some(idx) => idx.gather(1, &pos.unsqueeze(1), false).squeeze_dim(1),
        None => pos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn rngs(n: usize, seed: u64) -> Vec<ChaCha8Rng> {
        (0..n)
            .map(|i| {
                let mut r = ChaCha8Rng::seed_from_u64(seed);
                r.set_stream(i as u64);
                r
            })
            .collect()
    }

    fn draw(logits: &Tensor, p: &SamplingParams, n: usize) -> Vec<Vec<i64>> {
        let b = logits.size()[0] as usize;
        let mut gens = rngs(b, p.seed);
        let mut out = vec![Vec::new(); b];
        for _ in 0..n {
            let u: Vec<f32> = gens.iter_mut().map(|r| r.gen::<f32>()).collect();
            let u = Tensor::from_slice(&u).view([b as i64, 1]);
            let logp = logits.log_softmax(-1, Kind::Float);
            let t: Vec<i64> = Vec::try_from(sample(logits, &logp, p, Some(&u))).unwrap();
            for (o, t) in out.iter_mut().zip(t) {
                o.push(t);
            }
        }
        out
    }

    fn logits() -> Tensor {
        // Row 0 probabilities ~ (0.5, 0.3, 0.15, 0.05), row 1 favours token 3.
        let p = Tensor::from_slice(&[0.5f32, 0.3, 0.15, 0.05, 0.05, 0.05, 0.1, 0.8]).view([2, 4]);
        p.log()
    }

    #[test]
    fn greedy_is_argmax() {
        let got = draw(&logits(), &SamplingParams::greedy(1), 3);
        assert_eq!(got, vec![vec![0, 0, 0], vec![3, 3, 3]]);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let p = SamplingParams {
            seed: 11,
            ..SamplingParams::default()
        };
        let got = draw(&logits(), &p, 4000);
        let freq = |row: &[i64], t: i64| row.iter().filter(|&&x| x == t).count() as f64 / 4000.0;
        for (t, want) in [(0, 0.5), (1, 0.3), (2, 0.15), (3, 0.05)] {
            let f = freq(&got[0], t);
            assert!((f - want).abs() < 0.03, "token {t}: {f} vs {want}");
        }
        assert!((freq(&got[1], 3) - 0.8).abs() < 0.03);
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let k2 = SamplingParams {
            top_k: 2,
            seed: 3,
            ..SamplingParams::default()
        };
        let got = draw(&logits(), &k2, 2000);
        assert!(got[0].iter().all(|&t| t == 0 || t == 1));
        let f0 = got[0].iter().filter(|&&t| t == 0).count() as f64 / 2000.0;
        assert!((f0 - 0.625).abs() < 0.04, "renormalised top-2 mass {f0}");

        // top_p 0.7: row 0 keeps {0, 1} (mass before token 1 is 0.5 < 0.7, before 2 is 0.8).
        let p7 = SamplingParams {
            top_p: 0.7,
            seed: 3,
            ..SamplingParams::default()
        };
        let got = draw(&logits(), &p7, 2000);
        assert!(got[0].iter().all(|&t| t == 0 || t == 1));
        assert!(got[0].contains(&1));
        // Row 1: token 3 alone has 0.8 >= 0.7.
        assert!(got[1].iter().all(|&t| t == 3));
    }

    #[test]
    fn low_temperature_sharpens() {
        let p = SamplingParams {
            temperature: 0.05,
            seed: 5,
            ..SamplingParams::default()
        };
        let got = draw(&logits(), &p, 500);
        assert!(got[0].iter().all(|&t| t == 0));
    }

    #[test]
    fn same_seed_same_draws_other_seed_other_draws() {
        let p = |seed| SamplingParams {
            seed,
            ..SamplingParams::default()
        };
        assert_eq!(draw(&logits(), &p(1), 50), draw(&logits(), &p(1), 50));
        assert_ne!(draw(&logits(), &p(1), 50), draw(&logits(), &p(2), 50));
    }

    #[test]
    fn invalid_params_are_rejected_with_the_key() {
        for (p, key) in [
            (
                SamplingParams {
                    temperature: -1.0,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    stop: vec![String::new()],
                    ..Default::default()
                },
                "stop",
            ),
        ] {
            let err = p.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
