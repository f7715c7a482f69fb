//! `tbrm bench rollout`: samples a dataset file the way training does (each prompt rendered
//! with the template, `n` rollouts per prompt sharing its prefill, EOS respected, one call to
//! the rollout engine) and prints one JSON line: sequences, generated tokens, seconds and
//! tokens/s, with the engine's statistics (slots, occupancy, prefill passes, decode steps).
//! `scripts/bench_rollout.py` runs it next to vLLM's CPU build and transformers' `generate()`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use tbrm_data::{load_dataset, LoadOptions, PromptTemplate};
use tbrm_model::{
    generate_requests, EngineOptions, FinishReason, Request, SampleKey, SamplingParams,
};

#[derive(clap::Args)]
pub(crate) struct RolloutArgs {
    /// Hugging Face model folder (with tokenizer files).
    #[arg(long)]
    model: PathBuf,
    /// Dataset file, as `tbrm train --data` reads it (JSONL, JSON array or parquet).
    #[arg(long)]
    prompts: PathBuf,
    /// Use only the first N prompts (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    #[arg(long, default_value_t = 4)]
    rollouts_per_prompt: usize,
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Prompt template: plain, qwen_math, r1, chat, or a string with {question}.
    #[arg(long, default_value = "plain")]
    template: PromptTemplate,
    /// Engine slots (0: sized from the KV budget), as `rollout.generation_batch`.
    #[arg(long, default_value_t = 0)]
    max_slots: usize,
    /// KV budget in GiB (0: automatic), as `rollout.kv_cache_gb`.
    #[arg(long, default_value_t = 0.0)]
    kv_cache_gb: f64,
    /// Decode steps between host reads (0: 1 on CPU, 8 on CUDA), as `rollout.sync_every`.
    #[arg(long, default_value_t = 0)]
    sync_every: usize,
    /// Intra-op CPU threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Timed runs (the median is reported); each samples the whole workload.
    #[arg(long, default_value_t = 1)]
    repeats: usize,
}

pub(crate) fn run(a: RolloutArgs) -> anyhow::Result<()> {
    if a.threads > 0 {
        tch::set_num_threads(a.threads);
    }
    anyhow::ensure!(
        a.rollouts_per_prompt >= 1,
        "--rollouts-per-prompt must be at least 1"
    );
    let (tok, model) = super::load_model(&a.model, &a.device, &a.dtype)?;
    let mut data = load_dataset(&a.prompts, &LoadOptions::default())
        .with_context(|| format!("reading prompts from {}", a.prompts.display()))?;
    if a.limit > 0 {
        data.problems.truncate(a.limit);
    }
    anyhow::ensure!(
        !data.problems.is_empty(),
        "{}: no prompts",
        a.prompts.display()
    );
    let mut requests = Vec::with_capacity(data.problems.len());
    for (i, p) in data.problems.iter().enumerate() {
        let prompt = tbrm_eval::runner::encode_prompt(&tok, &a.template.render(&p.prompt))
            .map_err(|e| {
                anyhow::anyhow!("{}: prompt {} ({}): {e}", a.prompts.display(), i, p.id)
            })?;
        requests.push(Request {
            prompt,
            samples: (0..a.rollouts_per_prompt as u64)
                .map(|stream| SampleKey {
                    seed: a.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    stream,
                })
                .collect(),
        });
    }
    let params = SamplingParams {
        temperature: a.temperature,
        max_new_tokens: a.max_new_tokens,
        ..SamplingParams::default()
    };
    let opts = EngineOptions {
        max_slots: a.max_slots,
        kv_cache_bytes: (a.kv_cache_gb * (1u64 << 30) as f64) as u64,
        sync_every: a.sync_every,
        ..EngineOptions::default()
    };
    let mut secs = Vec::new();
    let mut last = None;
    for _ in 0..a.repeats.max(1) {
        let t = Instant::now();
        let out = generate_requests(&model, &tok, &requests, &params, &opts, None)?;
        secs.push(t.elapsed().as_secs_f64());
        last = Some(out);
    }
    let out = last.expect("at least one run");
    let gens: Vec<_> = out.generations.iter().flatten().collect();
    let tokens: usize = gens.iter().map(|g| g.response_ids.len()).sum();
    let eos = gens
        .iter()
        .filter(|g| g.finish == FinishReason::Eos)
        .count();
    let med = super::bench::median(secs.clone());
    let prompt_tokens: usize = requests.iter().map(|r| r.prompt.len()).sum();
    println!(
        "{}",
        json!({
            "bench": "rollout",
            "impl": "tbrm",
            "prompts": requests.len(),
            "rollouts_per_prompt": a.rollouts_per_prompt,
            "sequences": gens.len(),
            "prompt_tokens": prompt_tokens,
            "generated_tokens": tokens,
            "mean_response_tokens": tokens as f64 / gens.len() as f64,
            "eos_fraction": eos as f64 / gens.len() as f64,
            "max_new_tokens": a.max_new_tokens,
            "temperature": a.temperature,
            "template": a.template.to_string(),
            "threads": tch::get_num_threads(),
            "device": format!("{:?}", model.device()),
            "dtype": format!("{:?}", model.dtype()),
            "params": model.num_parameters(),
            "engine": out.stats,
            "seconds": med,
            "all_seconds": secs,
            "tokens_per_second": tokens as f64 / med,
        })
    );
    Ok(())
}
