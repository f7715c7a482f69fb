//! The `tbrm` binary: argument parsing and dispatch only. Each subcommand lives in `cmd/`,
//! owns its clap `Args` struct and turns it into the typed configuration of a library crate.

mod cmd;
mod mkl;
mod settings;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tbrm",
    version,
    about = "RL post-training of LLMs for reasoning with TBRM (Trajectory Bellman Residual Minimization)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// RL fine-tuning (TBRM, GRPO or PPO). With no arguments: the built-in CPU default.
    Train(cmd::train::Args),
    /// Supervised warm start (next-token cross-entropy on prompt/response pairs).
    Sft(cmd::sft::Args),
    /// Benchmark evaluation with the paper's protocol (avg@k, greedy avg@1, pass@k).
    Eval(cmd::eval::Args),
    /// Sample from a model.
    Generate(cmd::generate::Args),
    /// Per-token log-probs of responses under a model.
    Score(cmd::score::Args),
    /// Check math answers against gold answers.
    Verify(cmd::verify::Args),
    /// Plot training curves of one or more runs into PNG/SVG and an HTML page.
    Report(cmd::report::Args),
    /// Throughput benchmarks (training step, generation).
    Bench(cmd::bench::Args),
}

/// On Hopper and newer GPUs current libtorch ranks cuDNN attention first; it builds and caches
/// a graph per exact shape, so a decode loop whose key length grows every step would compile
/// every step. `TORCH_CUDNN_SDPA_PREFERRED=0` (read once, at libtorch's first SDPA call) keeps
/// the flash / memory-efficient order; a value the user set is left alone.
fn prefer_flash_attention() {
    if std::env::var_os("TORCH_CUDNN_SDPA_PREFERRED").is_none() {
        std::env::set_var("TORCH_CUDNN_SDPA_PREFERRED", "0");
    }
}

fn main() {
    prefer_flash_attention();
    cmd::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => cmd::train::run(a),
        Command::Sft(a) => cmd::sft::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Score(a) => cmd::score::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
