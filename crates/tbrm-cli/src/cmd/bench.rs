//! `tbrm bench`: throughput benchmarks, each printing one JSON line of results (so scripts can
//! put them next to a PyTorch run of the same shapes, see `scripts/bench_generate.py` and
//! BENCHMARKS.md).
//!
//! - `generate`: batched sampling from a model folder (B prompts of P tokens, N new tokens
//!   each, EOS ignored so every row runs the full length); new tokens per second.
//! - `train-step`: one training step on a random model of the given size (or a named preset
//!   such as `qwen2.5-0.5b`). `--loss ce`: forward + backward + AdamW step of next-token
//!   cross-entropy (the plain comparison with PyTorch eager). `--loss tbrm`: the trainer's real
//!   TBRM step (`train_step_bench.rs`): reference scoring, the memory-lean update through
//!   `Updater`, AdamW; prints peak memory (host RSS on CPU, device memory on CUDA), tokens/s and
//!   MFU.
//!
//! - `rollout`: a dataset file sampled as training does, n rollouts per prompt, EOS respected
//!   (`rollout_bench.rs`); generated tokens per second.
//!
//! Timings are medians over `--repeats` runs after `--warmup` runs.

use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;
use tbrm_model::{generate, CausalLm, SamplingParams};
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
    /// Rollout tokens/s: a dataset's prompts, n samples each, through the rollout engine.
    Rollout(super::rollout_bench::RolloutArgs),
}

#[derive(clap::Args)]
pub(crate) struct Common {
    /// Intra-op CPU threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
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
pub(crate) struct TrainArgs {
    /// `ce` (next-token cross-entropy, plain autograd) or `tbrm` (the trainer's TBRM step).
    #[arg(long, default_value = "ce")]
    pub loss: String,
    /// A model shape: qwen2.5-0.5b, qwen2.5-math-1.5b or qwen2.5-math-7b (the size flags
    /// below are then ignored, except --layers when given).
    #[arg(long)]
    pub preset: Option<String>,
    /// qwen2, llama or qwen3.
    #[arg(long, default_value = "qwen2")]
    pub arch: String,
    #[arg(long, default_value_t = 8192)]
    pub vocab: i64,
    #[arg(long, default_value_t = 256)]
    pub hidden: i64,
    /// Decoder layers (default 4; with --preset, the preset's count).
    #[arg(long)]
    pub layers: Option<i64>,
    #[arg(long, default_value_t = 4)]
    pub heads: i64,
    #[arg(long, default_value_t = 2)]
    pub kv_heads: i64,
    #[arg(long, default_value_t = 768)]
    pub intermediate: i64,
    /// Rows (trajectories for --loss tbrm).
    #[arg(long, default_value_t = 8)]
    pub batch: i64,
    /// Tokens per row (prompt + response for --loss tbrm).
    #[arg(long, default_value_t = 128)]
    pub seq_len: i64,
    /// --loss tbrm: prompt tokens of each row (default: seq_len / 8).
    #[arg(long)]
    pub prompt_len: Option<i64>,
    /// --loss tbrm: layer recomputation (auto, on, off), as `optim.recompute`.
    #[arg(long, default_value = "auto")]
    pub recompute: String,
    /// --loss tbrm: padded tokens per micro-batch, as `optim.micro_batch_tokens`.
    #[arg(long, default_value_t = 32768)]
    pub micro_batch_tokens: usize,
    /// --loss tbrm: padded tokens per no-grad scoring pass, as `optim.score_batch_tokens`.
    #[arg(long, default_value_t = 65536)]
    pub score_batch_tokens: usize,
    /// --loss tbrm: f32 master weights and moments in host memory (`optim.offload`).
    #[arg(long)]
    pub offload: bool,
    /// --loss tbrm: the reference in host memory between scorings (`model.reference_offload`).
    #[arg(long)]
    pub reference_offload: bool,
    /// Peak dense bf16 TFLOP/s of the device, for MFU (989: H100/H200 SXM).
    #[arg(long, default_value_t = 989.0)]
    pub peak_tflops: f64,
    /// Also write the random model as a Hugging Face folder (with the tokenizer files of
    /// assets/tiny-arith when the vocabulary covers them), e.g. for `bench generate`.
    #[arg(long)]
    pub save_model: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

/// Deterministic prompt ids shared with `scripts/bench_generate.py` (same formula there).
pub fn bench_prompt(row: usize, len: usize, vocab: usize) -> Vec<u32> {
    (0..len)
        .map(|j| ((row * 31 + j * 7) % (vocab.min(1000) - 3) + 3) as u32)
        .collect()
}

pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

pub(crate) fn timed(
    common: &Common,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
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
        What::Rollout(a) => super::rollout_bench::run(a),
    }
}

pub(crate) fn setup(common: &Common) -> anyhow::Result<(tch::Device, Kind)> {
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
    let cfg = super::train_step_bench::model_config(&a)?;
    match a.loss.as_str() {
        "ce" => {}
        "tbrm" => return super::train_step_bench::run(&a, cfg, device, dtype),
        other => anyhow::bail!("--loss: expected ce or tbrm, got {other:?}"),
    }
    let model = CausalLm::from_config(cfg, device, dtype, a.common.seed as i64)?;
    let mut opt = tch::nn::AdamW::default().build(model.var_store(), 1e-4)?;
    let vocab = model.config().vocab_size as usize;
    let n = (a.batch * (a.seq_len + 1)) as usize;
    let ids: Vec<i64> = (0..n).map(|i| ((i * 7919) % vocab) as i64).collect();
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
        "loss": "ce",
        "arch": a.arch, "batch": a.batch, "seq_len": a.seq_len,
        "layers": model.config().num_hidden_layers,
        "threads": tch::get_num_threads(),
        "mkl_code_path": crate::mkl::mkl_code_path(),
        "device": format!("{device:?}"), "dtype": format!("{dtype:?}"),
        "params": model.num_parameters(),
        "seconds": secs, "median_seconds": med,
        "tokens_per_second": tokens as f64 / med,
        "peak_rss_gb": super::train_step_bench::peak_rss_gb(),
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
