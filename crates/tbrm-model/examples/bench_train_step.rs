//! Training-step throughput: forward + backward of a next-token cross-entropy loss on a small
//! randomly initialised Qwen2-shaped model, in tokens per second. `scripts/bench_train_step.py`
//! runs the same shapes in PyTorch eager (transformers' Qwen2ForCausalLM) for comparison; see
//! BENCHMARKS.md for the commands and numbers.
//!
//! Usage: cargo run --release -p tbrm-model --example bench_train_step -- \
//!          [--hidden 256] [--layers 4] [--heads 4] [--kv-heads 2] [--intermediate 1024]
//!          [--vocab 8192] [--seq 256] [--batch 8] [--threads 2] [--steps 10] [--warmup 3]
//!          [--dtype f32|bf16]

use std::collections::HashMap;
use std::time::Instant;

use tbrm_model::{CausalLm, ModelConfig, ModelType};
use tch::{Device, Kind, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts: HashMap<String, String> = HashMap::new();
    for pair in args.chunks(2) {
        match pair {
            [k, v] if k.starts_with("--") => {
                opts.insert(k.trim_start_matches("--").to_string(), v.clone());
            }
            _ => {
                eprintln!("usage: bench_train_step [--name value]... (see the file's doc comment)");
                std::process::exit(2);
            }
        }
    }
    let get = |k: &str, default: i64| -> i64 {
        opts.get(k).map_or(default, |v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("--{k} expects an integer, got {v:?}");
                std::process::exit(2)
            })
        })
    };
    let dtype = match opts.get("dtype").map(String::as_str).unwrap_or("f32") {
        "f32" => Kind::Float,
        "bf16" => Kind::BFloat16,
        other => {
            eprintln!("--dtype must be f32 or bf16, got {other:?}");
            std::process::exit(2)
        }
    };
    let threads = get("threads", 2);
    tch::set_num_threads(threads as i32);
    tch::set_num_interop_threads(1);

    let mut cfg = ModelConfig::tiny(ModelType::Qwen2);
    cfg.hidden_size = get("hidden", 256);
    cfg.num_hidden_layers = get("layers", 4);
    cfg.num_attention_heads = get("heads", 4);
    cfg.num_key_value_heads = get("kv-heads", 2);
    cfg.head_dim = cfg.hidden_size / cfg.num_attention_heads;
    cfg.intermediate_size = get("intermediate", 1024);
    cfg.vocab_size = get("vocab", 8192);
    let (batch, seq) = (get("batch", 8), get("seq", 256));
    let (steps, warmup) = (get("steps", 10), get("warmup", 3));

    let model = CausalLm::from_config(cfg.clone(), Device::Cpu, dtype, 0).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    tch::manual_seed(0);
    let ids = Tensor::randint(cfg.vocab_size, [batch, seq + 1], (Kind::Int64, Device::Cpu));
    let inputs = ids.narrow(1, 0, seq);
    let targets = ids.narrow(1, 1, seq);
    let mask = inputs.ones_like();
    let params = model.var_store().trainable_variables();

    let mut times = Vec::new();
    for step in 0..warmup + steps {
        let start = Instant::now();
        let logits = model.forward(&inputs, &mask, None); // (B, T, V) f32
        let loss = logits
            .log_softmax(-1, Kind::Float)
            .gather(-1, &targets.unsqueeze(-1), false)
            .mean(Kind::Float)
            .neg();
        loss.backward();
        for p in &params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        let secs = start.elapsed().as_secs_f64();
        if step >= warmup {
            times.push(secs);
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = times[times.len() / 2];
    let tokens = (batch * seq) as f64;
    println!(
        "tbrm (tch 0.26): params {:.2}M, batch {batch} x seq {seq}, {threads} threads, {:?}: \
         median step {:.3}s, {:.0} tokens/s (min step {:.3}s)",
        model.num_parameters() as f64 / 1e6,
        dtype,
        median,
        tokens / median,
        times[0]
    );
}
