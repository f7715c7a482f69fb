//! Benchmark runs with the TBRM paper's protocol (Section 5; `shared/docs/tbrm-method.md`,
//! "Evaluation protocol"): AIME24, AIME25 and AMC23 get 32 samples per problem at temperature
//! 1.0 and report avg@32; every other benchmark (MATH500, Minerva Math, OlympiadBench, GSM8K,
//! ...) gets one greedy sample and reports avg@1. pass@k (unbiased estimator, [`crate::metrics`])
//! is reported for k in 1, 2, 4, .. up to the number of samples.
//!
//! A run is: find the benchmark file by name, render every problem with the prompt template,
//! generate `samples` responses per problem, judge each response (the math verifier
//! by default, through the [`Judge`] trait so a task with its own notion of "correct" can judge
//! too), and score. The model sits behind the [`Generator`] trait; [`ModelGenerator`] is the
//! tbrm-model implementation, tests also use a scripted one.
//!
//! Seeding. Every sample draws from its own random stream: sample s of problem i of benchmark b
//! gets the seed [`derive_seed`]`(seed, b, i, s)` ([`GenRequest::seeds`]; the rollout engine,
//! `tbrm_model::engine`, keys each sample separately). A problem's responses therefore do not
//! depend on which other problems or benchmarks are in the run, nor on `--limit`, nor on
//! `batch_size`, up to float rounding differences between batch shapes (which could move a
//! sampled token at a probability boundary, or a greedy argmax). Greedy benchmarks have no
//! randomness; their seeds are passed but unused.
//!
//! Calls. Each `generate` call takes consecutive problems, each one request with all its samples
//! (they share the prompt's prefill), and holds problems until it has at least
//! [`CALL_BATCHES`] x `batch_size` sequences or the problems run out; the engine decodes at most
//! `batch_size` sequences at once and refills a slot as soon as its sequence ends.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tbrm_data::{
    load_dataset, DataError, JsonlWriter, LoadOptions, Problem, PromptTemplate, RenderedPrompt,
};
use tbrm_verify::Verdict;

use crate::metrics::{default_ks, MetricError};
use crate::results::BenchmarkResult;

/// Benchmarks the paper evaluates with 32 samples at temperature 1.0 (avg@32).
pub const SAMPLED_BENCHMARKS: [&str; 3] = ["aime24", "aime25", "amc23"];
/// Samples per problem on [`SAMPLED_BENCHMARKS`].
pub const PAPER_SAMPLES: usize = 32;
/// Sampling temperature on [`SAMPLED_BENCHMARKS`].
pub const PAPER_TEMPERATURE: f64 = 1.0;
/// Benchmark lookup lives in tbrm-data (one implementation for every caller).
pub use tbrm_data::{known_benchmarks, resolve_benchmark, BENCHMARK_EXTENSIONS};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{}: no problems in the file", path.display())]
    EmptyBenchmark { path: PathBuf },
    #[error("invalid eval setting `{key}`: {message}")]
    Config { key: &'static str, message: String },
    #[error("rendering the prompt of problem {id}: {message}")]
    Prompt { id: String, message: String },
    #[error("generation failed on benchmark `{benchmark}`: {message}")]
    Generate { benchmark: String, message: String },
    #[error("judge `{judge}` returned {got} verdicts for {expected} responses")]
    JudgeCount {
        judge: String,
        expected: usize,
        got: usize,
    },
    #[error("scoring benchmark `{benchmark}`: {source}")]
    Metric {
        benchmark: String,
        #[source]
        source: MetricError,
    },
}

/// Everything a benchmark run needs besides the model and the judge. `samples` and
/// `temperature` override the paper's per-benchmark defaults ([`protocol`]) when set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Benchmark names (looked up in `data_dir`) or paths to data files.
    pub benchmarks: Vec<String>,
    pub data_dir: PathBuf,
    /// Samples per problem for every benchmark; `None`: the paper's default per benchmark.
    pub samples: Option<usize>,
    /// Temperature for every benchmark; `None`: the paper's default per benchmark. 0 is greedy.
    pub temperature: Option<f64>,
    pub max_new_tokens: usize,
    pub template: PromptTemplate,
    /// Nucleus sampling mass; 1.0 disables it (the paper's evaluation samples from the full
    /// distribution at temperature 1.0).
    pub top_p: f64,
    pub seed: u64,
    /// Most sequences decoded at once; a `generate` call holds whole problems until it has at
    /// least this many sequences (see the module doc).
    pub batch_size: usize,
    /// Evaluate only the first N problems of each benchmark (smoke runs).
    pub limit: Option<usize>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            benchmarks: TABLE1_BENCHMARKS.iter().map(|s| s.to_string()).collect(),
            data_dir: PathBuf::from("data"),
            samples: None,
            temperature: None,
            // The paper's maximum response length in training.
            max_new_tokens: 2048,
            template: PromptTemplate::QwenMath,
            top_p: 1.0,
            seed: 0,
            batch_size: 32,
            limit: None,
        }
    }
}

/// The six benchmarks of the paper's Table 1: the first six of tbrm-data's known names.
pub const TABLE1_BENCHMARKS: &[&str] = tbrm_data::BENCHMARKS.split_at(6).0;

impl EvalConfig {
    pub fn validate(&self) -> Result<(), EvalError> {
        let bad = |key, message: String| Err(EvalError::Config { key, message });
        if self.benchmarks.is_empty() {
            return bad("benchmarks", "no benchmarks given".into());
        }
        if self.samples == Some(0) {
            return bad("samples", "must be at least 1".into());
        }
        if let Some(t) = self.temperature {
            if !(t.is_finite() && t >= 0.0) {
                return bad(
                    "temperature",
                    format!("must be a finite number >= 0, got {t}"),
                );
            }
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens", "must be at least 1".into());
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("must be in (0, 1], got {}", self.top_p));
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if self.limit == Some(0) {
            return bad("limit", "must be at least 1".into());
        }
        Ok(())
    }

    /// Samples and temperature for `benchmark` after applying the overrides. Greedy decoding
    /// always gets one sample: n greedy samples are n copies of the same response, so avg@n
    /// and every pass@k would equal avg@1 at n times the cost.
    pub fn resolve(&self, benchmark: &str) -> Protocol {
        let default = protocol(benchmark);
        let temperature = self.temperature.unwrap_or(default.temperature);
        let samples = if temperature == 0.0 {
            1
        } else {
            self.samples.unwrap_or(default.samples)
        };
        Protocol {
            samples,
            temperature,
        }
    }
}

/// How many samples per problem, at which temperature.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Protocol {
    pub samples: usize,
    pub temperature: f64,
}

/// The paper's protocol for a benchmark name: avg@32 at temperature 1.0 for AIME24, AIME25 and
/// AMC23; greedy avg@1 for everything else.
pub fn protocol(benchmark: &str) -> Protocol {
    if SAMPLED_BENCHMARKS.contains(&benchmark) {
        Protocol {
            samples: PAPER_SAMPLES,
            temperature: PAPER_TEMPERATURE,
        }
    } else {
        Protocol {
            samples: 1,
            temperature: 0.0,
        }
    }
}

/// Decides whether responses are correct. `judge` gets `(gold, response)` pairs and returns one
/// verdict per pair, in order; it may spread the work over threads.
pub trait Judge: Sync {
    /// A short name for messages (`math_verify`, `arith`).
    fn name(&self) -> &str;
    fn judge(&self, pairs: &[(String, String)]) -> Vec<Verdict>;
}

/// The math verifier (tbrm-verify, Math-Verify style), on all cores.
#[derive(Debug, Clone, Copy, Default)]
pub struct MathJudge;

impl Judge for MathJudge {
    fn name(&self) -> &str {
        "math_verify"
    }
    fn judge(&self, pairs: &[(String, String)]) -> Vec<Verdict> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(gold, response)| {
                (
                    gold.clone(),
                    tbrm_verify::hash_marked_answer(response).to_string(),
                )
            })
            .collect();
        tbrm_verify::verify_batch(&pairs)
    }
}

/// Decoding settings of one `generate` call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeParams {
    /// 0 is greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub max_new_tokens: usize,
    /// Most sequences decoded at once ([`EvalConfig::batch_size`]).
    pub max_batch: usize,
}

/// One prompt and the samples to draw from it: one response per seed, each from its own
/// random stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub seeds: Vec<u64>,
}

/// One generated response.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedText {
    /// The decoded response, special tokens skipped.
    pub text: String,
    pub n_tokens: usize,
    /// Stopped by `max_new_tokens` rather than by an end-of-sequence token.
    pub truncated: bool,
}

/// A model that turns rendered prompts into token ids and continues them.
pub trait Generator {
    fn encode_prompt(&self, prompt: &RenderedPrompt) -> Result<Vec<u32>, String>;
    /// `output[r]` holds one response per seed of `requests[r]`, in order. A response depends
    /// only on its prompt, its seed and `params` (not on the other requests).
    fn generate(
        &self,
        requests: &[GenRequest],
        params: &DecodeParams,
    ) -> Result<Vec<Vec<GeneratedText>>, String>;
}

/// Told how a run advances, so a front end can draw a progress bar.
pub trait Progress {
    fn benchmark_started(&mut self, _name: &str, _total_samples: usize) {}
    /// `done` of `total` samples of the current benchmark are generated.
    fn samples_done(&mut self, _done: usize, _total: usize) {}
    fn benchmark_finished(&mut self, _run: &BenchmarkRun) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// One judged response; a line of `samples-<benchmark>.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    /// 0-based position of the problem in the benchmark file.
    pub problem_index: usize,
    /// The problem's id in the file.
    pub id: String,
    /// 0-based sample number within the problem.
    pub sample: usize,
    /// The question text.
    pub problem: String,
    pub gold: String,
    pub response: String,
    /// The answer the judge found in the response.
    pub extracted: Option<String>,
    pub correct: bool,
    /// Why the judge decided so.
    pub reason: String,
    pub n_tokens: usize,
    pub truncated: bool,
}

/// A finished benchmark: the scores plus every judged sample.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchmarkRun {
    pub result: BenchmarkResult,
    pub path: PathBuf,
    /// Ordered by problem, then sample.
    pub samples: Vec<SampleRecord>,
    pub seconds: f64,
    pub generated_tokens: usize,
}

impl BenchmarkRun {
    /// Writes the samples as JSON lines.
    pub fn write_samples(&self, path: &Path) -> Result<(), DataError> {
        let mut w = JsonlWriter::create(path)?;
        for s in &self.samples {
            w.write(s)?;
        }
        Ok(())
    }
}

/// FNV-1a then the SplitMix64 finaliser (Steele, Lea, Flood, "Fast splittable pseudorandom
/// number generators", OOPSLA 2014): a stable 64-bit seed from the run seed and a sample's place.
pub fn derive_seed(seed: u64, benchmark: &str, problem_index: usize, sample: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&seed.to_le_bytes());
    eat(benchmark.as_bytes());
    eat(&[0xff]);
    eat(&(problem_index as u64).to_le_bytes());
    eat(&(sample as u64).to_le_bytes());
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A call holds whole problems up to this many engine batches: the engine keeps its
/// `batch_size` slots full within a call, so only each call's last sequences run with free
/// slots; more batches per call waste less, fewer give finer progress.
pub const CALL_BATCHES: usize = 4;

/// Plans the `generate` calls of a benchmark (see the module doc): consecutive ranges of
/// problems, each the fewest that hold at least `batch_size` sequences, the last one what is left.
fn plan_calls(n_problems: usize, samples: usize, batch_size: usize) -> Vec<Range<usize>> {
    let per_call = batch_size.div_ceil(samples.max(1)).max(1);
    (0..n_problems)
        .step_by(per_call)
        .map(|start| start..(start + per_call).min(n_problems))
        .collect()
}

/// Runs one benchmark, given by name (looked up in `cfg.data_dir`) or path.
pub fn run_benchmark(
    cfg: &EvalConfig,
    benchmark: &str,
    generator: &dyn Generator,
    judge: &dyn Judge,
    progress: &mut dyn Progress,
) -> Result<BenchmarkRun, EvalError> {
    cfg.validate()?;
    let (name, path) = resolve_benchmark(&cfg.data_dir, benchmark)?;
    let mut data = load_dataset(&path, &LoadOptions::default())?;
    if let Some(n) = cfg.limit {
        data.problems.truncate(n);
    }
    if data.problems.is_empty() {
        return Err(EvalError::EmptyBenchmark { path });
    }
    let proto = cfg.resolve(&name);
    run_problems(
        cfg,
        &name,
        &path,
        &data.problems,
        proto,
        generator,
        judge,
        progress,
    )
}

/// Runs every benchmark of `cfg` in order.
pub fn run_all(
    cfg: &EvalConfig,
    generator: &dyn Generator,
    judge: &dyn Judge,
    progress: &mut dyn Progress,
) -> Result<Vec<BenchmarkRun>, EvalError> {
    cfg.validate()?;
    // Resolve every name first, so a typo in the last benchmark fails before hours of generation.
    for b in &cfg.benchmarks {
        resolve_benchmark(&cfg.data_dir, b)?;
    }
    cfg.benchmarks
        .iter()
        .map(|b| run_benchmark(cfg, b, generator, judge, progress))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn run_problems(
    cfg: &EvalConfig,
    name: &str,
    path: &Path,
    problems: &[Problem],
    proto: Protocol,
    generator: &dyn Generator,
    judge: &dyn Judge,
    progress: &mut dyn Progress,
) -> Result<BenchmarkRun, EvalError> {
    let started = Instant::now();
    let mut prompts: Vec<Vec<u32>> = problems
        .iter()
        .map(|p| {
            generator
                .encode_prompt(&cfg.template.render(&p.prompt))
                .map_err(|message| EvalError::Prompt {
                    id: p.id.clone(),
                    message,
                })
        })
        .collect::<Result<_, _>>()?;

    let total = problems.len() * proto.samples;
    progress.benchmark_started(name, total);
    let params = DecodeParams {
        temperature: proto.temperature,
        top_p: cfg.top_p,
        max_new_tokens: cfg.max_new_tokens,
        max_batch: cfg.batch_size,
    };
    let gen_err = |message: String| EvalError::Generate {
        benchmark: name.to_string(),
        message,
    };
    // texts[i][s]: sample s of problem i; calls cover the problems in order.
    let mut texts: Vec<Vec<GeneratedText>> = Vec::with_capacity(problems.len());
    for call in plan_calls(problems.len(), proto.samples, cfg.batch_size * CALL_BATCHES) {
        let requests: Vec<GenRequest> = call
            .clone()
            .map(|i| GenRequest {
                prompt: std::mem::take(&mut prompts[i]),
                seeds: (0..proto.samples)
                    .map(|s| derive_seed(cfg.seed, name, i, s))
                    .collect(),
            })
            .collect();
        let out = generator.generate(&requests, &params).map_err(gen_err)?;
        if out.len() != requests.len() {
            return Err(gen_err(format!(
                "{} outputs for {} requests",
                out.len(),
                requests.len()
            )));
        }
        for (i, row) in call.clone().zip(out) {
            if row.len() != proto.samples {
                return Err(gen_err(format!(
                    "{} responses for the {} samples of problem {}",
                    row.len(),
                    proto.samples,
                    problems[i].id
                )));
            }
            texts.push(row);
        }
        progress.samples_done(texts.len() * proto.samples, total);
    }

    let gens: Vec<(usize, usize, GeneratedText)> = texts
        .into_iter()
        .enumerate()
        .flat_map(|(i, row)| row.into_iter().enumerate().map(move |(s, g)| (i, s, g)))
        .collect();
    let pairs: Vec<(String, String)> = gens
        .iter()
        .map(|(i, _, g)| (problems[*i].answer.clone(), g.text.clone()))
        .collect();
    let verdicts = judge.judge(&pairs);
    if verdicts.len() != pairs.len() {
        return Err(EvalError::JudgeCount {
            judge: judge.name().to_string(),
            expected: pairs.len(),
            got: verdicts.len(),
        });
    }

    let mut correct = vec![vec![false; proto.samples]; problems.len()];
    let mut samples = Vec::with_capacity(gens.len());
    let mut generated_tokens = 0;
    for ((i, s, g), v) in gens.into_iter().zip(verdicts) {
        correct[i][s] = v.correct;
        generated_tokens += g.n_tokens;
        let p = &problems[i];
        samples.push(SampleRecord {
            problem_index: i,
            id: p.id.clone(),
            sample: s,
            problem: p.prompt.question().to_string(),
            gold: p.answer.clone(),
            response: g.text,
            extracted: v.extracted,
            correct: v.correct,
            reason: v.reason,
            n_tokens: g.n_tokens,
            truncated: g.truncated,
        });
    }
    let result = BenchmarkResult::from_correctness(
        name,
        proto.temperature,
        &correct,
        &default_ks(proto.samples),
    )
    .map_err(|source| EvalError::Metric {
        benchmark: name.to_string(),
        source,
    })?;
    let run = BenchmarkRun {
        result,
        path: path.to_path_buf(),
        samples,
        seconds: started.elapsed().as_secs_f64(),
        generated_tokens,
    };
    progress.benchmark_finished(&run);
    Ok(run)
}

/// [`Generator`] over a tbrm-model [`CausalLm`](tbrm_model::CausalLm) and its tokenizer. Chat
/// prompts go through the tokenizer's chat template with the generation prompt appended (as
/// transformers' `apply_chat_template(.., add_generation_prompt=True)`); plain-text prompts are
/// encoded with the tokenizer's special tokens (BOS for Llama 3, nothing for Qwen).
pub struct ModelGenerator<'a> {
    model: &'a tbrm_model::CausalLm,
    tok: &'a tbrm_model::Tokenizer,
    /// Extra stop strings (the end-of-sequence ids always stop).
    pub stop: Vec<String>,
}

impl<'a> ModelGenerator<'a> {
    pub fn new(model: &'a tbrm_model::CausalLm, tok: &'a tbrm_model::Tokenizer) -> Self {
        Self {
            model,
            tok,
            stop: Vec::new(),
        }
    }
}

/// Token ids of a rendered prompt (see [`ModelGenerator`]).
pub fn encode_prompt(
    tok: &tbrm_model::Tokenizer,
    prompt: &RenderedPrompt,
) -> Result<Vec<u32>, String> {
    match prompt {
        RenderedPrompt::Chat(msgs) => {
            let msgs: Vec<tbrm_model::ChatMessage> = msgs
                .iter()
                .map(|m| tbrm_model::ChatMessage::new(m.role.clone(), m.content.clone()))
                .collect();
            let text = tok
                .apply_chat_template(&msgs, true)
                .map_err(|e| e.to_string())?;
            tok.encode(&text, false).map_err(|e| e.to_string())
        }
        RenderedPrompt::Text(text) => tok.encode(text, true).map_err(|e| e.to_string()),
    }
}

impl Generator for ModelGenerator<'_> {
    fn encode_prompt(&self, prompt: &RenderedPrompt) -> Result<Vec<u32>, String> {
        encode_prompt(self.tok, prompt)
    }

    fn generate(
        &self,
        requests: &[GenRequest],
        params: &DecodeParams,
    ) -> Result<Vec<Vec<GeneratedText>>, String> {
        let sp = tbrm_model::SamplingParams {
            temperature: params.temperature,
            top_p: params.top_p,
            top_k: 0,
            max_new_tokens: params.max_new_tokens,
            stop: self.stop.clone(),
            // Ignored by the engine: every sample has its own key.
            seed: 0,
        };
        let requests: Vec<tbrm_model::Request> = requests
            .iter()
            .map(|r| tbrm_model::Request {
                prompt: r.prompt.clone(),
                samples: r
                    .seeds
                    .iter()
                    .map(|&seed| tbrm_model::SampleKey { seed, stream: 0 })
                    .collect(),
            })
            .collect();
        let opts = tbrm_model::EngineOptions {
            max_slots: params.max_batch,
            ..Default::default()
        };
        let out = tbrm_model::generate_requests(self.model, self.tok, &requests, &sp, &opts, None)
            .map_err(|e| e.to_string())?;
        Ok(out
            .generations
            .into_iter()
            .map(|gens| {
                gens.into_iter()
                    .map(|g| GeneratedText {
                        n_tokens: g.response_ids.len(),
                        truncated: g.finish == tbrm_model::FinishReason::Length,
                        text: g.text,
                    })
                    .collect()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
