//! Batched sampling with a KV cache.
//!
//! Prompts are left-padded into one (B, P) batch and prefilled once; then each step feeds one
//! token per unfinished row and appends to the cache. Rows that finish (EOS id, stop string,
//! `max_new_tokens`) are dropped from the batch and from the cache (`KvCache::select_rows`),
//! so long tails do not pay for finished rows; the loop ends when no row is left.
//!
//! Sampling follows transformers' logits-processor order: temperature, then top-k, then top-p
//! (nucleus, Holtzman et al. 2019: keep the smallest set of most likely tokens whose mass
//! reaches `top_p`). Temperature 0 is greedy argmax. Randomness comes from one ChaCha8 stream
//! per row (`seed`, stream = row index), drawn on the host as one uniform per row and step and
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

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::layers::packed::DecodePacking;
use crate::{CausalLm, ModelError, Tokenizer, TokenizerError};

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

    fn validate(&self) -> Result<(), ModelError> {
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

fn tok_err(e: TokenizerError) -> ModelError {
    ModelError::config("tokenizer.json", "decode", e.to_string())
}

/// Samples a continuation for every prompt (token ids, unpadded). Runs without autograd.
pub fn generate(
    model: &CausalLm,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
) -> Result<Vec<Generation>, ModelError> {
    params.validate()?;
    let vocab = model.config().vocab_size;
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(ModelError::config(
                "<generate>",
                "prompts",
                format!("prompt {i} is empty"),
            ));
        }
        if let Some(&t) = p.iter().find(|&&t| i64::from(t) >= vocab) {
            return Err(ModelError::config(
                "<generate>",
                "prompts",
                format!("prompt {i} has token id {t} >= vocab_size {vocab}"),
            ));
        }
    }
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    tch::no_grad(|| {
        // Decode steps reuse every weight; on the CPU a prepacked copy of each (MKL) is faster.
        // The copies cost one more model's worth of memory, so only for models up to 1B params.
        let _packing = (model.device() == Device::Cpu && model.num_parameters() <= 1_000_000_000)
            .then(DecodePacking::new);
        generate_inner(model, tok, prompts, params)
    })
}

/// Per-row decoding state.
struct Row {
    response: Vec<u32>,
    logprobs: Vec<f32>,
    finish: Option<FinishReason>,
    rng: ChaCha8Rng,
}

/// Left-pads `rows` to their longest length: (ids, mask), both (B, P) int64 on `device`.
pub(crate) fn left_pad(rows: &[&[u32]], pad: u32, device: Device) -> (Tensor, Tensor) {
    let p = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * p);
    let mut mask = Vec::with_capacity(rows.len() * p);
    for r in rows {
        let n = p - r.len();
        ids.extend(std::iter::repeat_n(i64::from(pad), n));
        mask.extend(std::iter::repeat_n(0i64, n));
        ids.extend(r.iter().map(|&t| i64::from(t)));
        mask.extend(std::iter::repeat_n(1i64, r.len()));
    }
    let shape = [rows.len() as i64, p as i64];
    (
        Tensor::from_slice(&ids).view(shape).to_device(device),
        Tensor::from_slice(&mask).view(shape).to_device(device),
    )
}

fn generate_inner(
    model: &CausalLm,
    tok: &Tokenizer,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
) -> Result<Vec<Generation>, ModelError> {
    let device = model.device();
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    let (ids, mut mask) = left_pad(&refs, tok.pad_token_id(), device);
    let mut rows: Vec<Row> = (0..prompts.len())
        .map(|i| {
            let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
            rng.set_stream(i as u64);
            Row {
                response: Vec::new(),
                logprobs: Vec::new(),
                finish: None,
                rng,
            }
        })
        .collect();
    let eos = tok.eos_token_ids();
    let stop_window = params
        .stop
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(0)
        + 8;
    // Rows still in the batch, in batch order.
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    let mut cache = model.new_cache();

    let p = ids.size()[1];
    let hidden = model.hidden_states(&ids, &mask, Some(&mut cache));
    let mut logits = model.lm_head(&hidden.select(1, p - 1)).to_kind(Kind::Float); // (B, V)

    if params.max_new_tokens == 0 {
        for r in &mut rows {
            r.finish = Some(FinishReason::Length);
        }
        active.clear();
    }
    while !active.is_empty() {
        let logp = logits.log_softmax(-1, Kind::Float);
        let next = {
            // `active` is ascending (rows are only ever dropped), so this is batch order.
            let mut rngs: Vec<&mut ChaCha8Rng> = rows
                .iter_mut()
                .filter(|r| r.finish.is_none())
                .map(|r| &mut r.rng)
                .collect();
            sample(&logits, &logp, params, &mut rngs)
        };
        let chosen_lp = logp.gather(1, &next.unsqueeze(1), false).squeeze_dim(1);
        let next_v: Vec<i64> = Vec::try_from(&next).map_err(ModelError::from)?;
        let lp_v: Vec<f32> = Vec::try_from(&chosen_lp).map_err(ModelError::from)?;

        let mut keep = Vec::with_capacity(active.len());
        for (j, &r) in active.iter().enumerate() {
            let row = &mut rows[r];
            let t = next_v[j] as u32;
            row.response.push(t);
            row.logprobs.push(lp_v[j]);
            if eos.contains(&t) {
                row.finish = Some(FinishReason::Eos);
            } else if !params.stop.is_empty() {
                let from = row.response.len().saturating_sub(stop_window);
                let tail = tok.decode(&row.response[from..], false).map_err(tok_err)?;
                if params.stop.iter().any(|s| tail.contains(s.as_str())) {
                    row.finish = Some(FinishReason::Stop);
                }
            }
            if row.finish.is_none() && row.response.len() >= params.max_new_tokens {
                row.finish = Some(FinishReason::Length);
            }
            if row.finish.is_none() {
                keep.push(j);
            }
        }
        if keep.is_empty() {
            break;
        }
        let mut next_in = next;
        if keep.len() < active.len() {
            let idx = Tensor::from_slice(&keep.iter().map(|&j| j as i64).collect::<Vec<_>>())
                .to_device(device);
            cache.select_rows(&idx);
            mask = mask.index_select(0, &idx);
            next_in = next_in.index_select(0, &idx);
            active = keep.iter().map(|&j| active[j]).collect();
        }
        let b = active.len() as i64;
        mask = Tensor::cat(&[&mask, &Tensor::ones([b, 1], (Kind::Int64, device))], 1);
        logits = model
            .forward(&next_in.view([b, 1]), &mask, Some(&mut cache))
            .squeeze_dim(1);
    }

    rows.into_iter()
        .zip(prompts)
        .map(|(row, prompt)| {
            let finish = row.finish.unwrap_or(FinishReason::Length);
            let text = if finish == FinishReason::Stop {
                let full = tok.decode(&row.response, false).map_err(tok_err)?;
                let cut = params
                    .stop
                    .iter()
                    .filter_map(|s| full.find(s.as_str()))
                    .min()
                    .unwrap_or(full.len());
                full[..cut].to_string()
            } else {
                tok.decode(&row.response, true).map_err(tok_err)?
            };
            Ok(Generation {
                prompt_ids: prompt.clone(),
                response_ids: row.response,
                logprobs: row.logprobs,
                text,
                finish,
            })
        })
        .collect()
}

/// Next token per row from f32 logits (b, V) and their `log_softmax` `logp`; one uniform draw
/// per row from `rngs`.
fn sample(
    logits: &Tensor,
    logp: &Tensor,
    params: &SamplingParams,
    rngs: &mut [&mut ChaCha8Rng],
) -> Tensor {
    if params.temperature == 0.0 {
        return logits.argmax(-1, false);
    }
    let b = logits.size()[0];
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
    let u: Vec<f32> = rngs.iter_mut().map(|r| r.gen::<f32>()).collect();
    let u = Tensor::from_slice(&u)
        .view([b, 1])
        .to_device(logits.device())
        * &total;
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
            let mut refs: Vec<&mut ChaCha8Rng> = gens.iter_mut().collect();
            let logp = logits.log_softmax(-1, Kind::Float);
            let t: Vec<i64> = Vec::try_from(sample(logits, &logp, p, &mut refs)).unwrap();
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

    #[test]
    fn left_pad_pads_on_the_left() {
        let (ids, mask) = left_pad(&[&[5, 6, 7], &[9]], 0, Device::Cpu);
        assert_eq!(
            Vec::<i64>::try_from(ids.view([-1])).unwrap(),
            vec![5, 6, 7, 0, 0, 9]
        );
        assert_eq!(
            Vec::<i64>::try_from(mask.view([-1])).unwrap(),
            vec![1, 1, 1, 0, 0, 1]
        );
    }
}
