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
mod tests {
    use std::collections::HashMap;
    use std::fs;

    use super::*;
    use crate::metrics::mean_pass_at_k;
    use std::collections::BTreeSet;

    /// Answers from a question -> answer table: a sample is right when its seed is even, so
    /// sampled runs mix right and wrong and depend on nothing but the seeds the runner passes.
    /// Records every call as (seeds per request, params).
    struct Scripted {
        answers: HashMap<String, String>,
        calls: std::cell::RefCell<Vec<(Vec<usize>, DecodeParams)>>,
    }

    impl Scripted {
        fn new(rows: &[(&str, &str)]) -> Self {
            Self {
                answers: rows
                    .iter()
                    .map(|(q, a)| (q.to_string(), a.to_string()))
                    .collect(),
                calls: Default::default(),
            }
        }

        /// Sequences per call.
        fn call_sizes(&self) -> Vec<usize> {
            self.calls
                .borrow()
                .iter()
                .map(|c| c.0.iter().sum())
                .collect()
        }
    }

    impl Generator for Scripted {
        fn encode_prompt(&self, prompt: &RenderedPrompt) -> Result<Vec<u32>, String> {
            match prompt {
                RenderedPrompt::Text(t) => Ok(t.bytes().map(u32::from).collect()),
                RenderedPrompt::Chat(_) => Err("scripted generator takes text prompts".into()),
            }
        }
        fn generate(
            &self,
            requests: &[GenRequest],
            params: &DecodeParams,
        ) -> Result<Vec<Vec<GeneratedText>>, String> {
            self.calls
                .borrow_mut()
                .push((requests.iter().map(|r| r.seeds.len()).collect(), *params));
            Ok(requests
                .iter()
                .map(|r| {
                    let q: String = r.prompt.iter().map(|&b| b as u8 as char).collect();
                    let gold = &self.answers[&q];
                    r.seeds
                        .iter()
                        .map(|seed| {
                            let right = params.temperature == 0.0 || seed.is_multiple_of(2);
                            let text = if right {
                                format!("so \\boxed{{{gold}}}")
                            } else {
                                "so \\boxed{-1}".into()
                            };
                            GeneratedText {
                                n_tokens: text.len(),
                                truncated: false,
                                text,
                            }
                        })
                        .collect()
                })
                .collect())
        }
    }

    #[derive(Default)]
    struct Recorder {
        events: Vec<String>,
    }
    impl Progress for Recorder {
        fn benchmark_started(&mut self, name: &str, total: usize) {
            self.events.push(format!("start {name} {total}"));
        }
        fn samples_done(&mut self, done: usize, total: usize) {
            self.events.push(format!("{done}/{total}"));
        }
        fn benchmark_finished(&mut self, run: &BenchmarkRun) {
            self.events.push(format!("end {}", run.result.name));
        }
    }

    const ROWS: [(&str, &str); 5] = [
        ("1+1=", "2"),
        ("2*3=", "6"),
        ("9-4=", "5"),
        ("7+8=", "15"),
        ("3*3=", "9"),
    ];

    fn write_bench(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(format!("{name}.jsonl"));
        let text: String = ROWS
            .iter()
            .enumerate()
            .map(|(i, (q, a))| {
                format!("{{\"id\":\"p{i}\",\"problem\":\"{q}\",\"answer\":\"{a}\"}}\n")
            })
            .collect();
        fs::write(&p, text).unwrap();
        p
    }

    fn cfg(dir: &Path) -> EvalConfig {
        EvalConfig {
            benchmarks: vec!["toy".into()],
            data_dir: dir.to_path_buf(),
            template: PromptTemplate::Plain,
            max_new_tokens: 8,
            ..EvalConfig::default()
        }
    }

    #[test]
    fn paper_protocol_and_overrides() {
        let c = EvalConfig::default();
        assert_eq!(
            c.resolve("aime24"),
            Protocol {
                samples: 32,
                temperature: 1.0
            }
        );
        assert_eq!(
            c.resolve("amc23"),
            Protocol {
                samples: 32,
                temperature: 1.0
            }
        );
        assert_eq!(
            c.resolve("math500"),
            Protocol {
                samples: 1,
                temperature: 0.0
            }
        );
        assert_eq!(
            c.resolve("my_file"),
            Protocol {
                samples: 1,
                temperature: 0.0
            }
        );
        let c = EvalConfig {
            samples: Some(4),
            ..EvalConfig::default()
        };
        assert_eq!(
            c.resolve("aime25"),
            Protocol {
                samples: 4,
                temperature: 1.0
            }
        );
        // Greedy stays one sample even when more are asked for.
        assert_eq!(
            c.resolve("olympiadbench"),
            Protocol {
                samples: 1,
                temperature: 0.0
            }
        );
        let c = EvalConfig {
            samples: Some(4),
            temperature: Some(0.6),
            ..EvalConfig::default()
        };
        assert_eq!(
            c.resolve("math500"),
            Protocol {
                samples: 4,
                temperature: 0.6
            }
        );
        let c = EvalConfig {
            temperature: Some(0.0),
            ..EvalConfig::default()
        };
        assert_eq!(
            c.resolve("aime24"),
            Protocol {
                samples: 1,
                temperature: 0.0
            }
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        let base = EvalConfig::default();
        for (c, key) in [
            (
                EvalConfig {
                    samples: Some(0),
                    ..base.clone()
                },
                "samples",
            ),
            (
                EvalConfig {
                    temperature: Some(-1.0),
                    ..base.clone()
                },
                "temperature",
            ),
            (
                EvalConfig {
                    top_p: 0.0,
                    ..base.clone()
                },
                "top_p",
            ),
            (
                EvalConfig {
                    batch_size: 0,
                    ..base.clone()
                },
                "batch_size",
            ),
            (
                EvalConfig {
                    limit: Some(0),
                    ..base.clone()
                },
                "limit",
            ),
            (
                EvalConfig {
                    benchmarks: vec![],
                    ..base.clone()
                },
                "benchmarks",
            ),
            (
                EvalConfig {
                    max_new_tokens: 0,
                    ..base.clone()
                },
                "max_new_tokens",
            ),
        ] {
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{err}");
        }
        assert!(base.validate().is_ok());
    }

    #[test]
    fn calls_take_the_fewest_problems_that_fill_a_batch() {
        for n in 1..=9 {
            for samples in [1, 3, 5, 32] {
                for bs in [1, 2, 4, 7, 32, 64] {
                    let calls = plan_calls(n, samples, bs);
                    let covered: Vec<usize> = calls.iter().flat_map(|c| c.clone()).collect();
                    assert_eq!(covered, (0..n).collect::<Vec<_>>(), "{n} {samples} {bs}");
                    for (k, c) in calls.iter().enumerate() {
                        assert!(!c.is_empty());
                        // Every call but the last reaches batch_size, and would not without its
                        // last problem.
                        if k + 1 < calls.len() {
                            assert!(c.len() * samples >= bs, "{n} {samples} {bs} {calls:?}");
                        }
                        assert!((c.len() - 1) * samples < bs, "{n} {samples} {bs} {calls:?}");
                    }
                }
            }
        }
        assert_eq!(plan_calls(5, 1, 2), [0..2, 2..4, 4..5]);
        assert_eq!(plan_calls(5, 3, 8), [0..3, 3..5]);
        // A problem with more samples than batch_size is a call of its own.
        assert_eq!(plan_calls(3, 32, 8), [0..1, 1..2, 2..3]);
    }

    #[test]
    fn seeds_depend_on_run_seed_benchmark_problem_and_sample() {
        let base = derive_seed(7, "aime24", 0, 0);
        let mut seen = BTreeSet::new();
        for i in 0..10 {
            for s in 0..32 {
                assert!(seen.insert(derive_seed(7, "aime24", i, s)), "{i} {s}");
            }
        }
        assert_ne!(derive_seed(8, "aime24", 0, 0), base);
        assert_ne!(derive_seed(7, "aime25", 0, 0), base);
        assert_eq!(derive_seed(7, "aime24", 0, 0), base);
    }

    #[test]
    fn run_counts_and_scores_consistently() {
        let tmp = tempfile::tempdir().unwrap();
        write_bench(tmp.path(), "toy");
        let gen = Scripted::new(&ROWS);
        let c = EvalConfig {
            samples: Some(6),
            temperature: Some(1.0),
            batch_size: 2,
            ..cfg(tmp.path())
        };
        let mut rec = Recorder::default();
        let run = run_benchmark(&c, "toy", &gen, &MathJudge, &mut rec).unwrap();
        let r = &run.result;
        assert_eq!((r.name.as_str(), r.n_problems, r.samples), ("toy", 5, 6));
        assert_eq!(run.samples.len(), 30);
        for (k, s) in run.samples.iter().enumerate() {
            assert_eq!((s.problem_index, s.sample), (k / 6, k % 6));
            assert_eq!(s.gold, ROWS[k / 6].1);
            assert_eq!(s.problem, ROWS[k / 6].0);
            assert_eq!(
                s.correct,
                s.response == format!("so \\boxed{{{}}}", s.gold),
                "{s:?}"
            );
            assert_eq!(
                s.extracted.as_deref(),
                Some(if s.correct { s.gold.as_str() } else { "-1" })
            );
        }
        let correct: Vec<Vec<bool>> = run
            .samples
            .chunks(6)
            .map(|c| c.iter().map(|s| s.correct).collect())
            .collect();
        let hits = run.samples.iter().filter(|s| s.correct).count();
        assert!(
            hits > 0 && hits < 30,
            "the scripted sampler mixes right and wrong: {hits}"
        );
        assert!((r.avg_at_k - hits as f64 / 30.0).abs() < 1e-12);
        assert_eq!(
            r.pass_at_k.keys().copied().collect::<Vec<_>>(),
            [1, 2, 4, 6]
        );
        for (&k, &v) in &r.pass_at_k {
            assert!((v - mean_pass_at_k(&correct, k).unwrap()).abs() < 1e-12);
        }
        assert!(r.pass_at_k[&6] >= r.pass_at_k[&1]);
        // A call holds CALL_BATCHES (4) x batch_size (2) = 8 sequences or more: problems
        // {0, 1}, {2, 3}, then {4}; progress after every call.
        let calls = gen.calls.borrow();
        assert_eq!(
            calls.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
            [vec![6, 6], vec![6, 6], vec![6]]
        );
        assert!(calls.iter().all(|c| c.1
            == DecodeParams {
                temperature: 1.0,
                top_p: 1.0,
                max_new_tokens: 8,
                max_batch: 2,
            }));
        assert_eq!(
            rec.events,
            ["start toy 30", "12/30", "24/30", "30/30", "end toy"]
        );

        let out = tmp.path().join("samples-toy.jsonl");
        run.write_samples(&out).unwrap();
        let back: Vec<SampleRecord> = tbrm_data::read_jsonl(&out).unwrap();
        assert_eq!(back, run.samples);
    }

    #[test]
    fn sampled_results_do_not_depend_on_batching_limit_or_other_benchmarks() {
        let tmp = tempfile::tempdir().unwrap();
        write_bench(tmp.path(), "toy");
        write_bench(tmp.path(), "toy2");
        let gen = Scripted::new(&ROWS);
        let c = EvalConfig {
            samples: Some(4),
            temperature: Some(1.0),
            seed: 3,
            batch_size: 1,
            ..cfg(tmp.path())
        };
        let run = |c: &EvalConfig, b: &str| {
            run_benchmark(c, b, &gen, &MathJudge, &mut NoProgress).unwrap()
        };
        let full = run(&c, "toy");
        // Sample s of problem i is judged from the seed derived for (toy, i, s).
        for r in &full.samples {
            assert_eq!(
                r.correct,
                derive_seed(3, "toy", r.problem_index, r.sample).is_multiple_of(2),
                "{r:?}"
            );
        }
        // Batches of 2, 3 and all 5 problems per call: each problem sits at other offsets.
        for bs in [6, 9, 64] {
            let packed = run(
                &EvalConfig {
                    batch_size: bs,
                    ..c.clone()
                },
                "toy",
            );
            assert_eq!(packed.samples, full.samples, "batch_size {bs}");
        }
        let part = run(
            &EvalConfig {
                limit: Some(2),
                batch_size: 64,
                ..c.clone()
            },
            "toy",
        );
        assert_eq!(part.result.n_problems, 2);
        assert_eq!(part.samples[..], full.samples[..8]);
        // Another benchmark before it in the same run changes nothing.
        let both = run_all(
            &EvalConfig {
                benchmarks: vec!["toy2".into(), "toy".into()],
                batch_size: 64,
                ..c.clone()
            },
            &gen,
            &MathJudge,
            &mut NoProgress,
        )
        .unwrap();
        assert_eq!(both[1].samples, full.samples);
        // ... while the benchmark name and the run seed do.
        let verdicts = |r: &BenchmarkRun| r.samples.iter().map(|s| s.correct).collect::<Vec<_>>();
        assert_ne!(verdicts(&both[0]), verdicts(&full));
        assert_ne!(
            verdicts(&run(&EvalConfig { seed: 4, ..c }, "toy")),
            verdicts(&full)
        );
    }

    #[test]
    fn wrong_response_counts_are_errors() {
        struct Short;
        impl Generator for Short {
            fn encode_prompt(&self, _: &RenderedPrompt) -> Result<Vec<u32>, String> {
                Ok(vec![1])
            }
            fn generate(
                &self,
                requests: &[GenRequest],
                _: &DecodeParams,
            ) -> Result<Vec<Vec<GeneratedText>>, String> {
                let g = GeneratedText {
                    text: String::new(),
                    n_tokens: 0,
                    truncated: false,
                };
                Ok(requests
                    .iter()
                    .map(|r| vec![g.clone(); r.seeds.len() - 1])
                    .collect())
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        write_bench(tmp.path(), "toy");
        let c = EvalConfig {
            samples: Some(2),
            temperature: Some(1.0),
            ..cfg(tmp.path())
        };
        let err = run_benchmark(&c, "toy", &Short, &MathJudge, &mut NoProgress).unwrap_err();
        assert!(
            err.to_string().contains("1 responses for the 2 samples"),
            "{err}"
        );
    }

    #[test]
    fn greedy_run_packs_problems_and_uses_one_sample() {
        let tmp = tempfile::tempdir().unwrap();
        write_bench(tmp.path(), "toy");
        let gen = Scripted::new(&ROWS);
        // One sample per problem: calls of CALL_BATCHES x 1 = 4 problems.
        let c = EvalConfig {
            batch_size: 1,
            ..cfg(tmp.path())
        };
        let run = run_benchmark(&c, "toy", &gen, &MathJudge, &mut NoProgress).unwrap();
        assert_eq!(
            (
                run.result.samples,
                run.result.temperature,
                run.result.avg_at_k
            ),
            (1, 0.0, 1.0)
        );
        assert_eq!(
            run.result.pass_at_k.keys().copied().collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(gen.call_sizes(), [4, 1]);
        assert!(gen
            .calls
            .borrow()
            .iter()
            .all(|c| c.1.temperature == 0.0 && c.1.max_new_tokens == 8 && c.1.max_batch == 1));
    }

    #[test]
    fn run_all_checks_every_name_before_generating() {
        let tmp = tempfile::tempdir().unwrap();
        write_bench(tmp.path(), "toy");
        let gen = Scripted::new(&ROWS);
        let c = EvalConfig {
            benchmarks: vec!["toy".into(), "missing".into()],
            ..cfg(tmp.path())
        };
        let err = run_all(&c, &gen, &MathJudge, &mut NoProgress).unwrap_err();
        assert!(
            matches!(
                err,
                EvalError::Data(DataError::BenchmarkNotFound { ref name, .. }) if name == "missing"
            ),
            "{err}"
        );
        assert!(gen.calls.borrow().is_empty());
        fs::write(tmp.path().join("empty.jsonl"), "").unwrap();
        let err = run_benchmark(&cfg(tmp.path()), "empty", &gen, &MathJudge, &mut NoProgress)
            .unwrap_err();
        assert!(
            err.to_string().contains("empty.jsonl: no problems"),
            "{err}"
        );
    }

    #[test]
    fn math_judge_reads_the_arith_answer_marker() {
        // The built-in arithmetic task writes `steps;#answer`; the math verifier's last-number
        // fallback finds the answer, but cannot tell a missing `#answer` from a final step.
        let v = MathJudge.judge(&[
            ("18".into(), "7*3=21;2+21=23;23-5=18;#18".into()),
            ("18".into(), "7*3=21;2+21=23;23-5=17;#17".into()),
        ]);
        assert_eq!(
            v.iter().map(|v| v.correct).collect::<Vec<_>>(),
            [true, false],
            "{v:?}"
        );
    }
}
