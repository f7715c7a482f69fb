//! The rollout engine behind training, `tbrm eval` and `tbrm generate`: continuous batching
//! over a pool of sequence slots, after vLLM's scheduler (Kwon et al. 2023) without paging.
//!
//! **Slots.** KV storage for `S` sequences of up to `L` tokens is allocated once
//! ([`SlotCache`]). A sequence occupies a slot from position 0 (no padding); each decode step
//! feeds one token per slot, writes its keys and values at the slot's own position and attends
//! over that slot's positions only (one mask and one RoPE table per step, shared by the layers).
//! A sequence that ends frees its slot and the next waiting prompt is prefilled into it before
//! the following step, so the batch stays full until the queue is empty; then, whenever a quarter
//! of the slots are free, the storage is compacted to the live ones so the tail does not pay for
//! finished rows.
//!
//! **Shared prefill.** A [`Request`] is one prompt with its samples (GRPO's n rollouts, eval's
//! 32 samples): the prompt is prefilled once and its keys, values and last logits are copied into
//! each sample's slot.
//!
//! **Reproducible regardless of batching.** Every sample carries its own [`SampleKey`]; its
//! random numbers come from the ChaCha8 stream `(seed, stream)`, one uniform per decoded token,
//! drawn on the host in the sample's own order. Which slot it gets, which rows share its batch
//! and how many slots there are change nothing but float rounding in batched products.
//!
//! **Host syncs.** Tokens and log-probs stay on the device for `sync_every` steps and come to
//! the host in one copy; the uniforms for those steps go up in one copy. Finishes are detected
//! on the host then (a row that ended mid-block decodes a few discarded tokens). On the CPU a
//! "sync" is free and `sync_every` defaults to 1; on CUDA it defaults to 8.
//!
//! The slot count comes from a KV budget: `kv_cache_bytes`, or by default a share of the memory
//! available (host `MemAvailable`, or CUDA's free memory) divided by one sequence's worst case,
//! capped by `max_slots` and by the number of sequences.

use std::collections::VecDeque;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::generate::{sample, FinishReason, Generation, SamplingParams};
use crate::kv_cache::SlotCache;
use crate::layers::packed::DecodePacking;
use crate::{CausalLm, ModelError, Tokenizer, TokenizerError};

/// How the engine sizes itself. Zeros mean "choose".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineOptions {
    /// Most sequences decoded together (0 = as many as the KV budget allows, at most 256).
    pub max_slots: usize,
    /// Bytes of KV storage (0 = 30% of available host memory on CPU, 50% of free CUDA memory).
    pub kv_cache_bytes: u64,
    /// Most prompt tokens (padded) per prefill forward pass.
    pub prefill_tokens: usize,
    /// Decode steps between host reads of the sampled tokens (0 = 1 on CPU, 8 on CUDA).
    pub sync_every: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_slots: 0,
            kv_cache_bytes: 0,
            prefill_tokens: 8192,
            sync_every: 0,
        }
    }
}

/// Compaction once the queue is empty: when at most 3/4 of the slots are busy and at least this
/// many are free. A decode step costs about in proportion to its rows and a compaction copies
/// the live part of the KV storage once (about a step's worth), so trimming a quarter each time
/// keeps the tail near full at a few dozen copies per run.
const MIN_COMPACT: usize = 2;

/// Slot cap when `max_slots` is 0 (vLLM's `max_num_seqs` default).
pub const DEFAULT_MAX_SLOTS: usize = 256;

/// Where one sample's randomness comes from: ChaCha8 seeded with `seed`, on stream `stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SampleKey {
    pub seed: u64,
    pub stream: u64,
}

/// One prompt and the samples to draw from it (they share the prompt's prefill).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub samples: Vec<SampleKey>,
}

/// What a run of the engine did, for benchmarks and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EngineStats {
    pub slots: usize,
    /// Positions of KV storage per slot.
    pub capacity: usize,
    pub kv_cache_bytes: u64,
    pub sync_every: usize,
    pub sequences: usize,
    pub generated_tokens: usize,
    pub prefill_passes: usize,
    /// Prompt tokens prefilled (each request once, whatever its sample count).
    pub prefill_tokens: usize,
    pub decode_steps: usize,
    /// Busy slot-steps over all slot-steps of the decode steps (1.0 = always full).
    pub occupancy: f64,
    pub compactions: usize,
}

/// The engine's output: `generations[r]` holds request r's samples in order.
#[derive(Debug, Clone)]
pub struct EngineOutput {
    pub generations: Vec<Vec<Generation>>,
    pub stats: EngineStats,
}

fn tok_err(e: TokenizerError) -> ModelError {
    ModelError::config("tokenizer.json", "decode", e.to_string())
}

fn bad(key: &str, msg: String) -> ModelError {
    ModelError::config("<rollout engine>", key, msg)
}

/// Samples every request's continuations. `params.seed` is ignored (each sample has its key).
/// `progress` is told how many sequences have finished so far, whenever some finish.
pub fn generate_requests(
    model: &CausalLm,
    tok: &Tokenizer,
    requests: &[Request],
    params: &SamplingParams,
    opts: &EngineOptions,
    progress: Option<&mut dyn FnMut(usize)>,
) -> Result<EngineOutput, ModelError> {
    params.validate()?;
    let vocab = model.config().vocab_size;
    for (i, r) in requests.iter().enumerate() {
        if r.prompt.is_empty() {
            return Err(bad("prompts", format!("prompt {i} is empty")));
        }
        if let Some(&t) = r.prompt.iter().find(|&&t| i64::from(t) >= vocab) {
            return Err(bad(
                "prompts",
                format!("prompt {i} has token id {t} >= vocab_size {vocab}"),
            ));
        }
    }
    if opts.prefill_tokens == 0 {
        return Err(bad("prefill_tokens", "must be > 0".into()));
    }
    tch::no_grad(|| {
        // Decode steps reuse every weight; on the CPU a prepacked copy of each (MKL) is faster.
        // The copies cost one more model's worth of memory, so only for models up to 1B params.
        let _packing = (model.device() == Device::Cpu && model.num_parameters() <= 1_000_000_000)
            .then(DecodePacking::new);
        Run::new(model, tok, requests, params, opts)?.go(progress)
    })
}

/// One sequence (a request's sample) being decoded or done.
struct Seq {
    request: usize,
    response: Vec<u32>,
    logprobs: Vec<f32>,
    finish: Option<FinishReason>,
    rng: ChaCha8Rng,
}

/// The state of one `generate_requests` call.
struct Run<'a> {
    model: &'a CausalLm,
    tok: &'a Tokenizer,
    requests: &'a [Request],
    params: &'a SamplingParams,
    prefill_budget: usize,
    sync_every: usize,
    capacity: i64,
    /// Every sample of every request, in request order.
    seqs: Vec<Seq>,
    /// Sequences not yet admitted, in order.
    queue: VecDeque<usize>,
    cache: SlotCache,
    /// Next-token logits of every slot (S, V) f32; rows of free slots are stale.
    logits: Tensor,
    /// Which sequence each slot holds.
    slot_seq: Vec<Option<usize>>,
    /// Cached positions per slot.
    lens: Vec<i64>,
    stop_window: usize,
    stats: EngineStats,
    busy_slot_steps: usize,
    total_slot_steps: usize,
}

impl<'a> Run<'a> {
    fn new(
        model: &'a CausalLm,
        tok: &'a Tokenizer,
        requests: &'a [Request],
        params: &'a SamplingParams,
        opts: &EngineOptions,
    ) -> Result<Self, ModelError> {
        let device = model.device();
        let mut seqs = Vec::new();
        for (r, req) in requests.iter().enumerate() {
            for key in &req.samples {
                let mut rng = ChaCha8Rng::seed_from_u64(key.seed);
                rng.set_stream(key.stream);
                seqs.push(Seq {
                    request: r,
                    response: Vec::new(),
                    logprobs: Vec::new(),
                    finish: None,
                    rng,
                });
            }
        }
        let sync_every = match opts.sync_every {
            0 if device == Device::Cpu => 1,
            0 => 8,
            k => k,
        };
        let max_prompt = requests.iter().map(|r| r.prompt.len()).max().unwrap_or(0);
        // A row that reaches max_new_tokens mid-block still feeds up to sync_every - 1 tokens.
        let capacity = (max_prompt + params.max_new_tokens + sync_every) as i64;
        let per_seq = capacity as u64 * model.kv_bytes_per_token();
        let budget = match opts.kv_cache_bytes {
            0 => default_kv_budget(device),
            b => b,
        };
        let fit = (budget / per_seq.max(1)) as usize;
        if fit == 0 && !seqs.is_empty() {
            return Err(bad(
                "kv_cache_bytes",
                format!(
                    "one sequence of up to {capacity} tokens needs {per_seq} bytes of KV cache, \
                     more than the budget of {budget} bytes; raise the KV budget or lower \
                     max_new_tokens"
                ),
            ));
        }
        let cap = if opts.max_slots == 0 {
            DEFAULT_MAX_SLOTS
        } else {
            opts.max_slots
        };
        let slots = seqs.len().min(cap).min(fit).max(1);
        let cache = model.new_slot_cache(slots as i64, capacity);
        let vocab = model.config().vocab_size;
        let stop_window = params
            .stop
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0)
            + 8;
        let stats = EngineStats {
            slots,
            capacity: capacity as usize,
            kv_cache_bytes: slots as u64 * per_seq,
            sync_every,
            sequences: seqs.len(),
            ..EngineStats::default()
        };
        Ok(Run {
            model,
            tok,
            requests,
            params,
            prefill_budget: opts.prefill_tokens,
            sync_every,
            capacity,
            queue: (0..seqs.len()).collect(),
            seqs,
            cache,
            logits: Tensor::zeros([slots as i64, vocab], (Kind::Float, device)),
            slot_seq: vec![None; slots],
            lens: vec![0; slots],
            stop_window,
            stats,
            busy_slot_steps: 0,
            total_slot_steps: 0,
        })
    }

    fn go(
        mut self,
        mut progress: Option<&mut dyn FnMut(usize)>,
    ) -> Result<EngineOutput, ModelError> {
        if self.params.max_new_tokens == 0 {
            for s in &mut self.seqs {
                s.finish = Some(FinishReason::Length);
            }
            self.queue.clear();
        }
        let mut done = 0;
        loop {
            self.admit()?;
            let busy = self.slot_seq.iter().filter(|s| s.is_some()).count();
            if busy == 0 {
                break;
            }
            let slots = self.slot_seq.len();
            if self.queue.is_empty() && busy * 4 <= slots * 3 && slots - busy >= MIN_COMPACT {
                self.compact();
            }
            let finished = self.decode_block()?;
            if finished > 0 {
                done += finished;
                if let Some(p) = progress.as_deref_mut() {
                    p(done);
                }
            }
        }
        self.stats.occupancy = if self.total_slot_steps == 0 {
            1.0
        } else {
            self.busy_slot_steps as f64 / self.total_slot_steps as f64
        };
        self.finish()
    }

    fn free_slots(&self) -> Vec<usize> {
        (0..self.slot_seq.len())
            .filter(|&s| self.slot_seq[s].is_none())
            .collect()
    }

    /// Prefills waiting sequences into free slots: consecutive sequences of one request share
    /// one prefilled prompt; a pass takes prompts up to the padded token budget.
    fn admit(&mut self) -> Result<(), ModelError> {
        let mut free = self.free_slots();
        while !free.is_empty() && !self.queue.is_empty() {
            // (request, [(seq, slot)]) groups of this pass.
            let mut groups: Vec<(usize, Vec<(usize, usize)>)> = Vec::new();
            let mut longest = 0;
            while let Some(&seq) = self.queue.front() {
                let Some(&slot) = free.last() else { break };
                let r = self.seqs[seq].request;
                let same = groups.last().is_some_and(|(g, _)| *g == r);
                if !same {
                    let len = self.requests[r].prompt.len().max(longest);
                    if !groups.is_empty() && len * (groups.len() + 1) > self.prefill_budget {
                        break;
                    }
                    longest = len;
                    groups.push((r, Vec::new()));
                }
                groups.last_mut().unwrap().1.push((seq, slot));
                self.queue.pop_front();
                free.pop();
            }
            if groups.is_empty() {
                break;
            }
            self.prefill(&groups)?;
        }
        Ok(())
    }

    /// One prefill pass over the groups' prompts (right-padded, causal attention), copied into
    /// every slot of each group.
    fn prefill(&mut self, groups: &[(usize, Vec<(usize, usize)>)]) -> Result<(), ModelError> {
        let device = self.model.device();
        let prompts: Vec<&[u32]> = groups
            .iter()
            .map(|(r, _)| self.requests[*r].prompt.as_slice())
            .collect();
        let p = prompts.iter().map(|x| x.len()).max().unwrap_or(0) as i64;
        let pad = i64::from(self.tok.pad_token_id());
        let mut ids = Vec::with_capacity(prompts.len() * p as usize);
        for x in &prompts {
            ids.extend(x.iter().map(|&t| i64::from(t)));
            ids.extend(std::iter::repeat_n(pad, p as usize - x.len()));
        }
        let b = prompts.len() as i64;
        let ids = Tensor::from_slice(&ids).view([b, p]).to_device(device);
        let mut tmp = self.model.new_cache();
        // All-ones mask, no cache yet: causal attention; padding sits after each prompt, so no
        // real token sees it.
        let hidden = self
            .model
            .hidden_states(&ids, &ids.ones_like(), Some(&mut tmp));
        let last: Vec<i64> = prompts.iter().map(|x| x.len() as i64 - 1).collect();
        let last = Tensor::from_slice(&last).to_device(device);
        let c = hidden.size()[2];
        let h_last = hidden
            .gather(1, &last.view([b, 1, 1]).expand([b, 1, c], false), false)
            .squeeze_dim(1);
        let new_logits = self.model.lm_head(&h_last).to_kind(Kind::Float); // (b, V)

        let mut rows = Vec::new();
        let mut slots = Vec::new();
        for (g, (r, members)) in groups.iter().enumerate() {
            for &(seq, slot) in members {
                rows.push(g as i64);
                slots.push(slot as i64);
                self.slot_seq[slot] = Some(seq);
                self.lens[slot] = self.requests[*r].prompt.len() as i64;
            }
        }
        let rows = Tensor::from_slice(&rows).to_device(device);
        let slots = Tensor::from_slice(&slots).to_device(device);
        self.cache.fill_from(&mut tmp, &rows, &slots, p);
        let _ = self
            .logits
            .index_copy_(0, &slots, &new_logits.index_select(0, &rows));
        self.stats.prefill_passes += 1;
        self.stats.prefill_tokens += prompts.iter().map(|x| x.len()).sum::<usize>();
        Ok(())
    }

    /// Shrinks the storage to the busy slots (queue empty, at most half of them busy).
    fn compact(&mut self) {
        let keep: Vec<usize> = (0..self.slot_seq.len())
            .filter(|&s| self.slot_seq[s].is_some())
            .collect();
        let idx: Vec<i64> = keep.iter().map(|&s| s as i64).collect();
        let idx = Tensor::from_slice(&idx).to_device(self.model.device());
        self.cache.compact(&idx, self.capacity);
        self.logits = self.logits.index_select(0, &idx);
        self.slot_seq = keep.iter().map(|&s| self.slot_seq[s]).collect();
        self.lens = keep.iter().map(|&s| self.lens[s]).collect();
        self.stats.compactions += 1;
    }

    /// Up to `sync_every` decode steps on the device, then one host read; returns how many
    /// sequences finished.
    fn decode_block(&mut self) -> Result<usize, ModelError> {
        let device = self.model.device();
        let n_slots = self.slot_seq.len();
        let s = n_slots as i64;
        // No slot may run past its storage, counting the discarded steps after a finish.
        let room = (0..n_slots)
            .filter(|&i| self.slot_seq[i].is_some())
            .map(|i| self.capacity - self.lens[i])
            .min()
            .unwrap_or(1);
        let k = (self.sync_every as i64).min(room).max(1);
        for i in 0..n_slots {
            if self.slot_seq[i].is_none() {
                self.lens[i] = 0;
            }
        }
        let greedy = self.params.temperature == 0.0;
        let uniforms = if greedy {
            None
        } else {
            let mut u = vec![0.5f32; n_slots * k as usize];
            for (i, slot) in self.slot_seq.iter().enumerate() {
                if let Some(q) = *slot {
                    let rng = &mut self.seqs[q].rng;
                    for j in 0..k as usize {
                        u[i * k as usize + j] = rng.gen::<f32>();
                    }
                }
            }
            Some(Tensor::from_slice(&u).view([s, k]).to_device(device))
        };
        let tokens = Tensor::zeros([s, k], (Kind::Int64, device));
        let lps = Tensor::zeros([s, k], (Kind::Float, device));
        let start = Tensor::from_slice(&self.lens).to_device(device);
        let base_window = self.lens.iter().copied().max().unwrap_or(0);
        for j in 0..k {
            let logp = self.logits.log_softmax(-1, Kind::Float);
            let u = uniforms.as_ref().map(|u| u.narrow(1, j, 1));
            let next = sample(&self.logits, &logp, self.params, u.as_ref());
            let lp = logp.gather(1, &next.unsqueeze(1), false);
            tokens.narrow(1, j, 1).copy_(&next.unsqueeze(1));
            lps.narrow(1, j, 1).copy_(&lp);
            let pos = &start + j;
            self.logits =
                self.model
                    .decode_slots(&next.view([s, 1]), &pos, base_window + j + 1, &self.cache);
        }
        self.stats.decode_steps += k as usize;
        let busy = self.slot_seq.iter().filter(|x| x.is_some()).count();
        self.total_slot_steps += n_slots * k as usize;
        self.busy_slot_steps += busy * k as usize;
        for l in &mut self.lens {
            *l += k;
        }

        let tokens: Vec<i64> = Vec::try_from(&tokens.view([-1])).map_err(ModelError::from)?;
        let lps: Vec<f32> = Vec::try_from(&lps.view([-1])).map_err(ModelError::from)?;
        let eos = self.tok.eos_token_ids();
        let mut finished = 0;
        for i in 0..n_slots {
            let Some(q) = self.slot_seq[i] else { continue };
            for j in 0..k as usize {
                let t = tokens[i * k as usize + j] as u32;
                let seq = &mut self.seqs[q];
                seq.response.push(t);
                seq.logprobs.push(lps[i * k as usize + j]);
                if eos.contains(&t) {
                    seq.finish = Some(FinishReason::Eos);
                } else if !self.params.stop.is_empty() {
                    let from = seq.response.len().saturating_sub(self.stop_window);
                    let tail = self
                        .tok
                        .decode(&seq.response[from..], false)
                        .map_err(tok_err)?;
                    if self.params.stop.iter().any(|s| tail.contains(s.as_str())) {
                        seq.finish = Some(FinishReason::Stop);
                    }
                }
                if seq.finish.is_none() && seq.response.len() >= self.params.max_new_tokens {
                    seq.finish = Some(FinishReason::Length);
                }
                if seq.finish.is_some() {
                    self.slot_seq[i] = None;
                    finished += 1;
                    break;
                }
            }
        }
        Ok(finished)
    }

    fn finish(self) -> Result<EngineOutput, ModelError> {
        let mut generations: Vec<Vec<Generation>> =
            self.requests.iter().map(|_| Vec::new()).collect();
        let mut generated = 0;
        for seq in self.seqs {
            let finish = seq.finish.unwrap_or(FinishReason::Length);
            let text = if finish == FinishReason::Stop {
                let full = self.tok.decode(&seq.response, false).map_err(tok_err)?;
                let cut = self
                    .params
                    .stop
                    .iter()
                    .filter_map(|s| full.find(s.as_str()))
                    .min()
                    .unwrap_or(full.len());
                full[..cut].to_string()
            } else {
                self.tok.decode(&seq.response, true).map_err(tok_err)?
            };
            generated += seq.response.len();
            generations[seq.request].push(Generation {
                prompt_ids: self.requests[seq.request].prompt.clone(),
                response_ids: seq.response,
                logprobs: seq.logprobs,
                text,
                finish,
            });
        }
        let mut stats = self.stats;
        stats.generated_tokens = generated;
        Ok(EngineOutput { generations, stats })
    }
}

/// Default KV budget: 30% of the host's available memory on CPU, 50% of CUDA's free memory on
/// a GPU; 4 GiB when neither can be read.
fn default_kv_budget(device: Device) -> u64 {
    const FALLBACK: u64 = 4 << 30;
    match device {
        Device::Cpu => host_available_bytes().map_or(FALLBACK, |b| b / 10 * 3),
        Device::Cuda(i) => cuda_free_bytes(i).map_or(FALLBACK, |b| b / 2),
        _ => FALLBACK,
    }
}

/// `MemAvailable` from /proc/meminfo (Linux).
fn host_available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Free memory on CUDA device `index`, through the CUDA runtime's `cudaMemGetInfo` (loaded by
/// libtorch_cuda; tch has no binding). `None` when the symbol is not there.
fn cuda_free_bytes(index: usize) -> Option<u64> {
    #[cfg(unix)]
    {
        type GetDevice = unsafe extern "C" fn(*mut i32) -> i32;
        type SetDevice = unsafe extern "C" fn(i32) -> i32;
        type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
        extern "C" {
            fn dlsym(
                handle: *mut std::ffi::c_void,
                name: *const std::ffi::c_char,
            ) -> *mut std::ffi::c_void;
        }
        let sym = |name: &std::ffi::CStr| {
            // RTLD_DEFAULT is the null handle on glibc.
            let p = unsafe { dlsym(std::ptr::null_mut(), name.as_ptr()) };
            (!p.is_null()).then_some(p)
        };
        let get = sym(c"cudaGetDevice")?;
        let set = sym(c"cudaSetDevice")?;
        let info = sym(c"cudaMemGetInfo")?;
        // SAFETY: the CUDA runtime's documented signatures.
        unsafe {
            let get: GetDevice = std::mem::transmute(get);
            let set: SetDevice = std::mem::transmute(set);
            let info: MemGetInfo = std::mem::transmute(info);
            let mut old = 0i32;
            if get(&mut old) != 0 || set(index as i32) != 0 {
                return None;
            }
            let (mut free, mut total) = (0usize, 0usize);
            let rc = info(&mut free, &mut total);
            set(old);
            (rc == 0).then_some(free as u64)
        }
    }
    #[cfg(not(unix))]
    {
        let _ = index;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_memory_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            let b = host_available_bytes().expect("MemAvailable");
            assert!(b > 1 << 20, "{b}");
            assert!(default_kv_budget(Device::Cpu) < b);
        }
    }
}
