//! `tbrm bench train-step --loss tbrm`: the trainer's real TBRM step on random data, with the
//! memory-lean path as configured by default, for memory and throughput measurements
//! (BENCHMARKS.md, `scripts/bench_memory.sh`, `scripts/gpu-check.sh`).
//!
//! One step is what `tbrm train` does after sampling: reference log-probs of every trajectory
//! (no grad, `optim.score_batch_tokens` passes), then `Updater::update_single` (token-budget
//! micro-batches through `lean::forward_backward`, f32 gradient accumulation, clipping, AdamW).
//! Rows are `--prompt-len` prompt tokens and `seq_len - prompt_len` response tokens of random
//! ids; rewards alternate 1, 0.

use std::path::Path;

use serde_json::json;
use tbrm_algo::{LossConfig, LossKind};
use tbrm_data::{Trajectory, TrajectorySource};
use tbrm_model::{CausalLm, LeanOptions, ModelConfig, ModelType};
use tbrm_train::config::Recompute;
use tbrm_train::optim::{AdamW, AdamWConfig};
use tbrm_train::trainer::batching::{score_logprobs_offloaded, BatchPlan};
use tbrm_train::trainer::update::Updater;
use tch::{Device, Kind, Tensor};

use super::bench::{bench_prompt, median, timed, TrainArgs};

/// The model shape from `--preset` or the size flags.
pub(crate) fn model_config(a: &TrainArgs) -> anyhow::Result<ModelConfig> {
    let mut cfg = match a.preset.as_deref() {
        Some(name) => preset(name)?,
        None => {
            let arch = match a.arch.as_str() {
                "qwen2" => ModelType::Qwen2,
                "llama" => ModelType::Llama,
                "qwen3" => ModelType::Qwen3,
                other => anyhow::bail!("--arch: expected qwen2, llama or qwen3, got {other:?}"),
            };
            let mut cfg = ModelConfig::tiny(arch);
            cfg.vocab_size = a.vocab;
            cfg.hidden_size = a.hidden;
            cfg.num_hidden_layers = 4;
            cfg.num_attention_heads = a.heads;
            cfg.num_key_value_heads = a.kv_heads;
            cfg.head_dim = a.hidden / a.heads;
            cfg.intermediate_size = a.intermediate;
            cfg
        }
    };
    if let Some(l) = a.layers {
        cfg.num_hidden_layers = l;
    }
    cfg.max_position_embeddings = cfg.max_position_embeddings.max(a.seq_len);
    cfg.validate()?;
    Ok(cfg)
}

/// Shapes of released Qwen2.5 checkpoints (their `config.json`), random weights.
fn preset(name: &str) -> anyhow::Result<ModelConfig> {
    // (vocab, hidden, layers, heads, kv heads, intermediate, tied, rope theta)
    let (v, h, l, nh, nkv, i, tied, theta) = match name {
        "qwen2.5-0.5b" => (151_936, 896, 24, 14, 2, 4864, true, 1e6),
        "qwen2.5-math-1.5b" => (151_936, 1536, 28, 12, 2, 8960, true, 1e4),
        "qwen2.5-math-7b" => (152_064, 3584, 28, 28, 4, 18944, false, 1e4),
        other => anyhow::bail!(
            "--preset: expected qwen2.5-0.5b, qwen2.5-math-1.5b or qwen2.5-math-7b, got {other:?}"
        ),
    };
    let mut cfg = ModelConfig::tiny(ModelType::Qwen2);
    cfg.vocab_size = v;
    cfg.hidden_size = h;
    cfg.num_hidden_layers = l;
    cfg.num_attention_heads = nh;
    cfg.num_key_value_heads = nkv;
    cfg.head_dim = h / nh;
    cfg.intermediate_size = i;
    cfg.tie_word_embeddings = tied;
    cfg.rope_theta = theta;
    cfg.max_position_embeddings = 4096;
    Ok(cfg)
}

/// Peak resident set size of this process so far, in GB (Linux `ru_maxrss` is in KiB).
pub(crate) fn peak_rss_gb() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return f64::NAN;
    }
    usage.ru_maxrss as f64 * 1024.0 / 1e9
}

/// Device memory in use (total - free, from the CUDA runtime's `cudaMemGetInfo`), in GB. The
/// caching allocator keeps what it reserved, so after a step this bounds the step's peak
/// allocation from above (it also counts the CUDA context, ~0.5 GB).
fn cuda_used_gb() -> Option<f64> {
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    // SAFETY: looks up a C symbol of the CUDA runtime that libtorch_cuda loaded; the signature
    // is `cudaError_t cudaMemGetInfo(size_t *free, size_t *total)`.
    unsafe {
        let sym = libc::dlsym(libc::RTLD_DEFAULT, c"cudaMemGetInfo".as_ptr());
        if sym.is_null() {
            return None;
        }
        let f: MemGetInfo = std::mem::transmute(sym);
        let (mut free, mut total) = (0usize, 0usize);
        (f(&mut free, &mut total) == 0).then(|| (total - free) as f64 / 1e9)
    }
}

/// The SDPA kernel libtorch picks for the training layout (causal, no mask) and a decode step
/// (one query, GQA, no mask) at these shapes: `_fused_sdp_choice`.
fn sdp_kernels(
    cfg: &ModelConfig,
    rows: i64,
    seq: i64,
    device: Device,
    dtype: Kind,
) -> (String, String) {
    let name = |k: i64| {
        match k {
            0 => "math",
            1 => "flash_attention",
            2 => "efficient_attention",
            3 => "cudnn_attention",
            4 => "overrideable",
            _ => "error",
        }
        .to_string()
    };
    let (nh, nkv, hd) = (
        cfg.num_attention_heads,
        cfg.num_key_value_heads,
        cfg.head_dim,
    );
    let opts = (dtype, device);
    let q = Tensor::zeros([rows, nh, seq, hd], opts);
    let kv = Tensor::zeros([rows, nkv, seq, hd], opts);
    let train =
        Tensor::internal_fused_sdp_choice(&q, &kv, &kv, None::<Tensor>, 0.0, true, None, true);
    let q1 = Tensor::zeros([rows, nh, 1, hd], opts);
    let decode =
        Tensor::internal_fused_sdp_choice(&q1, &kv, &kv, None::<Tensor>, 0.0, false, None, true);
    (name(train), name(decode))
}

/// Model FLOPs of one TBRM step (policy forward + backward, reference forward; recomputation
/// not counted, as MFU conventions go): per token, 2 x (non-embedding matmul parameters incl.
/// the head) plus attention's 2 x 2 x layers x hidden x (mean causal context), x 3 for the
/// policy and x 1 for the reference.
fn step_flops(cfg: &ModelConfig, rows: i64, seq: i64) -> f64 {
    let (h, l) = (cfg.hidden_size as f64, cfg.num_hidden_layers as f64);
    let attn_dim = (cfg.num_attention_heads * cfg.head_dim) as f64;
    let kv_dim = (cfg.num_key_value_heads * cfg.head_dim) as f64;
    let per_layer = h * attn_dim * 2.0 + h * kv_dim * 2.0 + 3.0 * h * cfg.intermediate_size as f64;
    let matmul_params = per_layer * l + h * cfg.vocab_size as f64;
    let attention = 4.0 * l * attn_dim * (seq as f64 / 2.0);
    let per_token_fwd = 2.0 * matmul_params + attention;
    per_token_fwd * 4.0 * (rows * seq) as f64
}

pub(crate) fn run(
    a: &TrainArgs,
    cfg: ModelConfig,
    device: Device,
    dtype: Kind,
) -> anyhow::Result<()> {
    let recompute: Recompute = match a.recompute.as_str() {
        "auto" => Recompute::Auto,
        "on" => Recompute::On,
        "off" => Recompute::Off,
        other => anyhow::bail!("--recompute: expected auto, on or off, got {other:?}"),
    };
    let prompt_len = a.prompt_len.unwrap_or(a.seq_len / 8).max(1);
    anyhow::ensure!(
        prompt_len < a.seq_len,
        "--prompt-len ({prompt_len}) must be below --seq-len ({})",
        a.seq_len
    );
    let policy = CausalLm::from_config(cfg.clone(), device, dtype, a.common.seed as i64)?;
    if let Some(dir) = &a.save_model {
        save_model(&policy, dir)?;
    }
    let mut reference = policy.try_clone()?;
    if a.reference_offload {
        reference.set_device(Device::Cpu);
    }
    let params = policy.num_parameters();
    let recompute = recompute.enabled(params);
    let mut opt =
        AdamW::for_var_store(policy.var_store(), AdamWConfig::default()).with_offload(a.offload);
    let mut lc = LossConfig {
        kind: LossKind::Tbrm,
        ..LossConfig::default()
    };
    lc.tbrm.beta = 0.002;
    let loss = tbrm_algo::build(&lc)?;

    let vocab = cfg.vocab_size as usize;
    let response_len = (a.seq_len - prompt_len) as usize;
    let trajectories: Vec<Trajectory> = (0..a.batch as usize)
        .map(|row| Trajectory {
            prompt_key: format!("bench-{row}"),
            prompt_ids: bench_prompt(row, prompt_len as usize, vocab),
            response_ids: (0..response_len)
                .map(|j| ((row * 7919 + j * 104_729) % (vocab - 3) + 3) as u32)
                .collect(),
            behaviour_logprobs: vec![0.0; response_len],
            reward: (row % 2 == 0) as u8 as f32,
            truncated: false,
            source: TrajectorySource::OnPolicy,
            policy_step: 0,
        })
        .collect();
    let batch: Vec<&Trajectory> = trajectories.iter().collect();
    let micro = BatchPlan {
        max_rows: 0,
        max_tokens: a.micro_batch_tokens,
    };
    let score = BatchPlan {
        max_rows: 0,
        max_tokens: a.score_batch_tokens,
    };
    let mut passes = 0;
    let mut last_loss = f64::NAN;
    let secs = timed(&a.common, || {
        let ref_lp = score_logprobs_offloaded(
            &mut reference,
            device,
            a.reference_offload,
            &batch,
            &score,
            0,
        )?;
        let mut updater = Updater {
            policy: &policy,
            opt: &mut opt,
            critic: None,
            loss: loss.as_ref(),
            micro,
            score,
            lean: LeanOptions {
                recompute,
                ..LeanOptions::default()
            },
            pad_id: 0,
            grad_clip: 1.0,
            dist: None,
            old_logprobs: tbrm_train::config::OldLogprobs::Recompute,
        };
        let stats = updater.update_single(&batch, Some(&ref_lp), 1e-6)?;
        anyhow::ensure!(!stats.nonfinite, "non-finite loss or gradient");
        passes = stats.passes;
        last_loss = stats.loss;
        if let Device::Cuda(_) = device {
            tch::Cuda::synchronize(0);
        }
        Ok(())
    })?;
    let med = median(secs.clone());
    let tokens = a.batch * a.seq_len;
    let flops = step_flops(&cfg, a.batch, a.seq_len);
    let (sdp_train, sdp_decode) = sdp_kernels(&cfg, a.batch.min(8), a.seq_len, device, dtype);
    let (opt_device, opt_host) = opt.state_bytes();
    let out = json!({
        "bench": "train-step",
        "impl": "tbrm",
        "loss": "tbrm",
        "preset": a.preset, "layers": cfg.num_hidden_layers,
        "batch": a.batch, "seq_len": a.seq_len, "prompt_len": prompt_len,
        "recompute": recompute, "micro_batch_tokens": a.micro_batch_tokens,
        "score_batch_tokens": a.score_batch_tokens, "update_passes": passes,
        "offload": a.offload, "reference_offload": a.reference_offload,
        "threads": tch::get_num_threads(),
        "mkl_code_path": crate::mkl::mkl_code_path(),
        "device": format!("{device:?}"), "dtype": format!("{dtype:?}"),
        "params": params,
        "loss_value": last_loss,
        "seconds": secs, "median_seconds": med,
        "tokens_per_second": tokens as f64 / med,
        "model_tflops_per_step": flops / 1e12,
        "mfu": flops / med / (a.peak_tflops * 1e12),
        "peak_rss_gb": peak_rss_gb(),
        "cuda_used_gb": cuda_used_gb().filter(|_| device != Device::Cpu),
        "optimizer_state_gb": { "device": opt_device as f64 / 1e9, "host": opt_host as f64 / 1e9 },
        "sdp_kernel": { "train": sdp_train, "decode": sdp_decode },
    });
    println!("{out}");
    Ok(())
}

/// Writes the random model as a Hugging Face folder with assets/tiny-arith's tokenizer files.
fn save_model(model: &CausalLm, dir: &Path) -> anyhow::Result<()> {
    model.save(dir)?;
    let tok_dir =
        tbrm_train::builtin::resolve_path(Path::new(tbrm_train::builtin::DEFAULT_MODEL_DIR));
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        let src = tok_dir.join(f);
        if src.is_file() {
            std::fs::copy(&src, dir.join(f))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_released_sizes() {
        let p = |n| {
            let cfg = preset(n).unwrap();
            CausalLm::from_config(
                {
                    let mut c = cfg.clone();
                    c.num_hidden_layers = 1;
                    c
                },
                Device::Cpu,
                Kind::BFloat16,
                0,
            )
            .map(|m| (cfg, m.num_parameters()))
            .unwrap()
        };
        let (cfg, one_layer) = p("qwen2.5-0.5b");
        // 24 layers of Qwen2.5-0.5B: 494M parameters in the released checkpoint.
        let per_layer = one_layer - cfg.vocab_size * cfg.hidden_size - cfg.hidden_size;
        let total = cfg.vocab_size * cfg.hidden_size + cfg.hidden_size + 24 * per_layer;
        assert!((total - 494_032_768).abs() < 1_000_000, "{total}");
        assert!(preset("gpt2").is_err());
    }

    #[test]
    fn flops_grow_with_layers_and_tokens() {
        let mut cfg = preset("qwen2.5-0.5b").unwrap();
        let f = step_flops(&cfg, 2, 2048);
        cfg.num_hidden_layers = 48;
        assert!(step_flops(&cfg, 2, 2048) > 1.5 * f);
        assert!((step_flops(&cfg, 4, 2048) / step_flops(&cfg, 2, 2048) - 2.0).abs() < 1e-9);
    }
}
