//! `tbrm bench`: throughput benchmarks, each printing one JSON line of results (so scripts can
//! put them next to a PyTorch run of the same shapes, see `scripts/bench_generate.py` and
//! BENCHMARKS.md).
//!
//! - `generate`: batched sampling from a model folder (B prompts of P tokens, N new tokens
//!   each, EOS ignored so every row runs the full length); new tokens per second.
//! - `train-step`: forward + backward + AdamW step of next-token cross-entropy on a random
//!   model of the given size; trained tokens per second.
//!
//! Timings are medians over `--repeats` runs after `--warmup` runs.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;
use tbrm_model::{generate, CausalLm, ModelConfig, ModelType, SamplingParams};
use tch::nn::OptimizerConfig;
use tch::{Kind, Tensor};

use super::{parse_device, parse_dtype};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// Generation tokens/s on a model folder.
    Generate(GenArgs),
    /// Training-step (forward + backward + AdamW) tokens/s on a random model.
    TrainStep(TrainArgs),
}

#[derive(clap::Args)]
struct Common {
    /// Intra-op CPU threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args)]
struct GenArgs {
    /// Hugging Face model folder (with tokenizer files).
    #[arg(long)]
    model: PathBuf,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 32)]
    prompt_len: usize,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// 0 = greedy; otherwise plain sampling at this temperature (no top-k/top-p).
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// qwen2, llama or qwen3.
    #[arg(long, default_value = "qwen2")]
    arch: String,
    #[arg(long, default_value_t = 8192)]
    vocab: i64,
    #[arg(long, default_value_t = 256)]
    hidden: i64,
    #[arg(long, default_value_t = 4)]
    layers: i64,
    #[arg(long, default_value_t = 4)]
    heads: i64,
    #[arg(long, default_value_t = 2)]
    kv_heads: i64,
    #[arg(long, default_value_t = 768)]
    intermediate: i64,
    #[arg(long, default_value_t = 8)]
    batch: i64,
    #[arg(long, default_value_t = 128)]
    seq_len: i64,
    #[command(flatten)]
    common: Common,
}

/// Deterministic prompt ids shared with `scripts/bench_generate.py` (same formula there).
pub fn bench_prompt(row: usize, len: usize, vocab: usize) -> Vec<u32> {
    (0..len)
        .map(|j| ((row * 31 + j * 7) % (vocab.min(1000) - 3) + 3) as u32)
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn timed(common: &Common, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Vec<f64>> {
    for _ in 0..common.warmup {
        f()?;
    }
    let mut secs = Vec::new();
    for _ in 0..common.repeats.max(1) {
        let t = Instant::now();
        f()?;
        secs.push(t.elapsed().as_secs_f64());
    }
    Ok(secs)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Generate(a) => bench_generate(a),
        What::TrainStep(a) => bench_train_step(a),
    }
}

fn setup(common: &Common) -> anyhow::Result<(tch::Device, Kind)> {
    if common.threads > 0 {
        tch::set_num_threads(common.threads);
    }
    let device = parse_device(&common.device)?;
    Ok((device, parse_dtype(&common.dtype, device)?))
}

fn bench_generate(a: GenArgs) -> anyhow::Result<()> {
    setup(&a.common)?;
    let (mut tok, model) = super::load_model(&a.model, &a.common.device, &a.common.dtype)?;
    // Every row runs the full length, as transformers' generate does with eos_token_id=None.
    tok.set_eos_token_ids(Vec::new());
    let vocab = model.config().vocab_size as usize;
    anyhow::ensure!(vocab > 3, "vocab_size too small for the benchmark prompts");
    let prompts: Vec<Vec<u32>> = (0..a.batch)
        .map(|i| bench_prompt(i, a.prompt_len, vocab))
        .collect();
    let params = SamplingParams {
        temperature: a.temperature,
        max_new_tokens: a.new_tokens,
        seed: a.common.seed,
        ..SamplingParams::default()
    };
    let mut produced = 0;
    let secs = timed(&a.common, || {
        let gens = generate(&model, &tok, &prompts, &params)?;
        produced = gens.iter().map(|g| g.response_ids.len()).sum();
        Ok(())
    })?;
    let med = median(secs.clone());
    let out = json!({
        "bench": "generate",
        "impl": "tbrm",
        "batch": a.batch, "prompt_len": a.prompt_len, "new_tokens": a.new_tokens,
        "threads": tch::get_num_threads(),
        "mkl_code_path": crate::mkl::mkl_code_path(),
        "device": format!("{:?}", model.device()), "dtype": format!("{:?}", model.dtype()),
        "params": model.num_parameters(),
        "new_tokens_total": produced,
        "seconds": secs, "median_seconds": med,
        "tokens_per_second": produced as f64 / med,
    });
    println!("{out}");
    Ok(())
}

fn bench_train_step(a: TrainArgs) -> anyhow::Result<()> {
    let (device, dtype) = setup(&a.common)?;
    let arch = match a.arch.as_str() {
        "qwen2" => ModelType::Qwen2,
        "llama" => ModelType::Llama,
        "qwen3" => ModelType::Qwen3,
        other => anyhow::bail!("--arch: expected qwen2, llama or qwen3, got {other:?}"),
    };
    let mut cfg = ModelConfig::tiny(arch);
    cfg.vocab_size = a.vocab;
    cfg.hidden_size = a.hidden;
    cfg.num_hidden_layers = a.layers;
    cfg.num_attention_heads = a.heads;
    cfg.num_key_value_heads = a.kv_heads;
    cfg.head_dim = a.hidden / a.heads;
    cfg.intermediate_size = a.intermediate;
    let model = CausalLm::from_config(cfg, device, dtype, a.common.seed as i64)?;
    let mut opt = tch::nn::AdamW::default().build(model.var_store(), 1e-4)?;
    let n = (a.batch * (a.seq_len + 1)) as usize;
    let ids: Vec<i64> = (0..n)
        .map(|i| ((i * 7919) % a.vocab as usize) as i64)
        .collect();
    let ids = Tensor::from_slice(&ids)
        .view([a.batch, a.seq_len + 1])
        .to_device(device);
    let x = ids.narrow(1, 0, a.seq_len);
    let y = ids.narrow(1, 1, a.seq_len);
    let mask = x.ones_like();
    let secs = timed(&a.common, || {
        let logits = model.forward(&x, &mask, None); // (B, T, V) f32
        let loss = logits
            .log_softmax(-1, Kind::Float)
            .gather(2, &y.unsqueeze(-1), false)
            .mean(Kind::Float)
            .neg();
        opt.zero_grad();
        loss.backward();
        opt.step();
        anyhow::ensure!(loss.double_value(&[]).is_finite(), "non-finite loss");
        Ok(())
    })?;
    let med = median(secs.clone());
    let tokens = a.batch * a.seq_len;
    let out = json!({
        "bench": "train-step",
        "impl": "tbrm",
        "arch": a.arch, "batch": a.batch, "seq_len": a.seq_len,
        "threads": tch::get_num_threads(),
        "mkl_code_path": crate::mkl::mkl_code_path(),
        "device": format!("{device:?}"), "dtype": format!("{dtype:?}"),
        "params": model.num_parameters(),
        "seconds": secs, "median_seconds": med,
        "tokens_per_second": tokens as f64 / med,
    });
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_prompts_are_in_vocab_and_differ_by_row() {
        let a = bench_prompt(0, 8, 400);
        let b = bench_prompt(1, 8, 400);
        assert_eq!(a.len(), 8);
        assert_ne!(a, b);
        assert!(a.iter().chain(&b).all(|&t| (3..400).contains(&t)));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }
}
