//! `tbrm generate`: sample a continuation of one prompt from a Hugging Face model folder.
//! The text goes to stdout (or one JSON object with ids, log-probs and the finish reason with
//! `--json`); timing goes to the log on stderr.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use tbrm_model::{
    generate_requests, ChatMessage, EngineOptions, Request, SampleKey, SamplingParams,
};

use super::load_model;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model folder (config.json, model.safetensors, tokenizer.json, ...).
    #[arg(long)]
    model: PathBuf,
    /// The prompt text.
    #[arg(long)]
    prompt: String,
    /// Wrap the prompt as one user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// An optional system message (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// Nucleus mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Stop strings (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of samples of the same prompt (the prompt is prefilled once; sample i draws
    /// from the stream (seed, i)).
    #[arg(long, short = 'n', default_value_t = 1)]
    num_samples: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// auto, f32, bf16 or f16 (auto: bf16 on CUDA, f32 on CPU).
    #[arg(long, default_value = "auto")]
    dtype: String,
    /// Print one JSON object per sample (prompt_ids, response_ids, logprobs, text, finish).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (mut tok, model) = load_model(&args.model, &args.device, &args.dtype)?;
    let prompt_ids = if args.chat {
        // Stop at the end of the assistant's turn as well as at EOS.
        let eot = tok
            .end_of_turn_ids()
            .context("finding the chat template's end-of-turn token")?;
        tok.add_eos_token_ids(&eot);
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(ChatMessage::system(s.clone()));
        }
        messages.push(ChatMessage::user(args.prompt.clone()));
        let text = tok
            .apply_chat_template(&messages, true)
            .context("--chat needs the model's chat template")?;
        // The rendered template already holds its special tokens (BOS included).
        tok.encode(&text, false)?
    } else {
        tok.encode(&args.prompt, true)?
    };
    anyhow::ensure!(
        !prompt_ids.is_empty(),
        "--prompt: the prompt encodes to no tokens"
    );
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        max_new_tokens: args.max_new_tokens,
        stop: args.stop.clone(),
        seed: args.seed,
    };
    let request = Request {
        prompt: prompt_ids,
        samples: (0..args.num_samples.max(1) as u64)
            .map(|stream| SampleKey {
                seed: args.seed,
                stream,
            })
            .collect(),
    };
    let start = Instant::now();
    let out = generate_requests(
        &model,
        &tok,
        std::slice::from_ref(&request),
        &params,
        &EngineOptions::default(),
        None,
    )
    .context("generation failed")?;
    let gens: Vec<_> = out.generations.into_iter().flatten().collect();
    let secs = start.elapsed().as_secs_f64();
    let n_tokens: usize = gens.iter().map(|g| g.response_ids.len()).sum();
    tracing::info!(
        "{} sample(s), {n_tokens} new tokens in {secs:.2}s ({:.1} tokens/s) on {:?} {:?}",
        gens.len(),
        n_tokens as f64 / secs.max(1e-9),
        model.device(),
        model.dtype()
    );
    for g in &gens {
        if args.json {
            println!("{}", serde_json::to_string(g)?);
        } else {
            println!("{}", g.text);
        }
    }
    Ok(())
}
