//! `tbrm sft`: supervised warm start. Trains a model (a new tiny one, or an existing HF folder)
//! with next-token cross-entropy on response tokens, saves it as an HF folder, and prints greedy
//! held-out accuracy. The built-in default's base policy `assets/tiny-arith/` is made with
//! `tbrm sft --task arith --init-config tiny-arith`, the Countdown task's `assets/tiny-countdown/`
//! with `tbrm sft --task countdown --init-config tiny-countdown` (exact commands in their READMEs).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use tbrm_model::{CausalLm, Tokenizer};
use tbrm_train::sft::{self, SftConfig};
use tbrm_train::task::arith::ArithConfig;
use tbrm_train::task::countdown::CountdownConfig;
use tbrm_train::task::{tokenizer as task_tok, TaskKind};

#[derive(clap::Args)]
pub struct Args {
    /// Built-in task (`arith` or `countdown`) whose train split is the training data (when
    /// --data is absent) and whose held-out split is the accuracy check.
    #[arg(long)]
    task: Option<TaskKind>,
    /// JSONL file of {"prompt", "response"} rows to train on instead of a built-in task.
    #[arg(long, conflicts_with = "train_size")]
    data: Option<PathBuf>,
    /// Start from this HF model folder (its tokenizer is used too).
    #[arg(long, conflicts_with = "init_config")]
    model: Option<PathBuf>,
    /// Start from a fresh random model of this built-in shape (`tiny-arith`, or
    /// `tiny-countdown`: the same shape with the Countdown tokenizer).
    #[arg(long)]
    init_config: Option<String>,
    #[arg(long, default_value_t = 600)]
    steps: usize,
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    #[arg(long, default_value_t = 20)]
    warmup_steps: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Seeds the data order, the generated problems and the init.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of distinct generated training problems (built-in task only).
    #[arg(long, default_value_t = 20_000)]
    train_size: usize,
    /// Number of held-out problems for the accuracy check (`tbrm train`'s default evaluates
    /// the same first 200).
    #[arg(long, default_value_t = 200)]
    eval_size: usize,
    /// Seed of the held-out problems; kept apart from --seed and equal to the trainer's fixed
    /// problem seed, so the accuracy printed here is `tbrm train`'s `eval_before`.
    #[arg(long, default_value_t = 0)]
    eval_seed: u64,
    /// Output HF folder (config.json, model.safetensors, tokenizer files).
    #[arg(long)]
    output: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Intra-op CPU threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// Print the loss every N steps.
    #[arg(long, default_value_t = 50)]
    log_every: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let device = super::parse_device(&args.device)?;
    if args.data.is_none() && args.task.is_none() {
        bail!("nothing to train on: pass --task arith, --task countdown or --data FILE.jsonl");
    }
    let cfg = SftConfig {
        steps: args.steps,
        lr: args.lr,
        warmup_steps: args.warmup_steps,
        batch_size: args.batch_size,
        weight_decay: args.weight_decay,
        seed: args.seed,
        ..SftConfig::default()
    };
    cfg.validate()?;
    tch::manual_seed(args.seed as i64);

    let (mut model, tok) = match (&args.model, args.init_config.as_deref()) {
        (Some(dir), None) => {
            let model = CausalLm::load(dir, device, tch::Kind::Float)
                .with_context(|| format!("--model {}", dir.display()))?;
            let tok = Tokenizer::load(dir).with_context(|| format!("--model {}", dir.display()))?;
            (model, tok)
        }
        (None, Some(shape)) => {
            let kind = match shape {
                "tiny-arith" => TaskKind::Arith,
                "tiny-countdown" => TaskKind::Countdown,
                other => bail!(
                    "--init-config: unknown shape {other:?} (known: tiny-arith, tiny-countdown)"
                ),
            };
            // The tokenizer is written first so the run can use the exact files it ships.
            task_tok::write_files_for(&args.output, kind.chars())
                .with_context(|| format!("--output {}", args.output.display()))?;
            let tok = Tokenizer::load(&args.output)?;
            (sft::init_tiny(kind, device, args.seed as i64)?, tok)
        }
        (None, None) => bail!("pass --model DIR or --init-config tiny-arith|tiny-countdown"),
        (Some(_), Some(_)) => unreachable!("clap rejects --model with --init-config"),
    };

    // The task's default shape: the one `configs/default.toml` / `configs/countdown.toml` train.
    let arith_cfg = ArithConfig::default();
    let countdown_cfg = CountdownConfig::default();
    let data = match (&args.data, args.task) {
        (Some(path), _) => sft::read_jsonl(path)?,
        (None, Some(TaskKind::Countdown)) => {
            sft::countdown_examples(&countdown_cfg, args.train_size, args.seed)?
        }
        (None, _) => sft::arith_examples(&arith_cfg, args.train_size, args.seed)?,
    };
    let eval_items = match args.task {
        Some(TaskKind::Arith) => sft::arith_eval_items(&arith_cfg, args.eval_size, args.eval_seed)?,
        Some(TaskKind::Countdown) => {
            sft::countdown_eval_items(&countdown_cfg, args.eval_size, args.eval_seed)?
        }
        None => Vec::new(),
    };
    eprintln!(
        "sft: {} examples, {} steps x {} per batch, lr {}",
        data.len(),
        cfg.steps,
        cfg.batch_size,
        cfg.lr
    );
    let start = Instant::now();
    let mut last = f64::NAN;
    sft::train(&mut model, &tok, &data, &cfg, |s| {
        last = s.loss;
        if s.step % args.log_every.max(1) == 0 || s.step == cfg.steps {
            eprintln!(
                "step {:>5}  loss {:.4}  lr {:.2e}  {:.1}s",
                s.step,
                s.loss,
                s.lr,
                start.elapsed().as_secs_f64()
            );
        }
    })?;
    let train_secs = start.elapsed().as_secs_f64();
    model.save(&args.output)?;
    if let Some(src) = &args.model {
        sft::copy_tokenizer_files(src, &args.output)?;
    }
    println!(
        "final loss {last:.4} after {} steps ({train_secs:.1}s)",
        cfg.steps
    );
    println!("saved {}", args.output.display());
    if eval_items.is_empty() {
        println!(
            "held-out accuracy: not measured (pass --task arith|countdown to check on its held-out split)"
        );
    } else {
        let kind = args.task.expect("eval items come from a task");
        let acc = sft::greedy_accuracy_for(
            kind,
            &model,
            &tok,
            &eval_items,
            cfg.eval_batch_size,
            cfg.max_new_tokens,
        )?;
        let check = match kind {
            TaskKind::Arith => "exact match",
            TaskKind::Countdown => "valid chain to the target",
        };
        println!(
            "held-out accuracy (greedy, {check}, {} problems): {:.1}%",
            eval_items.len(),
            100.0 * acc
        );
    }
    Ok(())
}
