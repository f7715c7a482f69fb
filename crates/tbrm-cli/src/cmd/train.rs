//! `tbrm train`: RL fine-tuning with TBRM, GRPO or PPO. With no arguments it runs the built-in
//! default (TBRM on the arithmetic task from the committed warm start, on the CPU) and prints
//! held-out accuracy before and after. Settings: `--config FILE`, `--set key=value`, flags
//! (see `settings.rs`). Ctrl-C stops after the current phase, saves a checkpoint and prints
//! how to resume; a second Ctrl-C aborts at once.
//!
//! Under torchrun (`torchrun --nproc-per-node N --no-python tbrm train ...`) the torchrun
//! variables (`RANK`, `WORLD_SIZE`, ...) make this process one rank of a data-parallel run
//! (docs/distributed.md); `WORLD_SIZE` unset or 1 is the single-process run. Only rank 0
//! draws progress and prints the result; other ranks print their messages prefixed with
//! their rank.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use tbrm_train::config::DeviceChoice;
use tbrm_train::run_dir::default_run_dir;
use tbrm_train::trainer::LaunchOptions;
use tbrm_train::{StepMetrics, TaskData, TrainObserver, Trainer};

use crate::settings::{self, TrainFlags};

#[derive(clap::Args)]
pub struct Args {
    /// TOML config (default: the built-in configs/default.toml, or configs/math.toml when
    /// --data is a file).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a config key, e.g. `--set optim.lr=1e-5` (repeatable; applied after --config).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// tbrm, grpo or ppo.
    #[arg(long)]
    algorithm: Option<String>,
    /// Hugging Face model folder of the initial policy (also the frozen reference).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Responses sampled per prompt (the paper's n).
    #[arg(long)]
    rollouts_per_prompt: Option<usize>,
    /// Training steps (with --resume: the new total).
    #[arg(long)]
    steps: Option<u64>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long)]
    device: Option<String>,
    /// Training problems: a JSONL/JSON/Parquet file (math reward), `builtin:arith` or
    /// `builtin:countdown` (without --config: configs/countdown.toml).
    #[arg(long)]
    data: Option<String>,
    /// Seed of data order, sampling and initialisation.
    #[arg(long)]
    seed: Option<u64>,
    /// Held-out problems (JSONL/JSON/Parquet) for the accuracy before/after and during training
    /// (`data.held_out`; the first `data.held_out_size` rows). The built-in task has its own.
    #[arg(long, value_name = "FILE")]
    held_out: Option<String>,
    /// Run folder (default: a new folder under runs/).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Continue the run in this folder from its latest checkpoint.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Intra-op CPU threads (0: libtorch's default).
    #[arg(long, default_value_t = 0)]
    threads: i32,
}

/// Test hook for the fault tests of data parallelism: `TBRM_FAULT=RANK:STEP:exit` makes rank
/// RANK exit with status 3 right after step STEP, as a crashed worker would; `...:hang` makes
/// it stop responding there instead.
const FAULT: &str = "TBRM_FAULT";

/// Progress bar with the key numbers of the last step (rank 0); other ranks print messages
/// only, prefixed with their rank.
struct Progress {
    bar: ProgressBar,
    rank: usize,
    /// The step after which this process exits or hangs ([`FAULT`]).
    fault: Option<(u64, bool)>,
}

impl Progress {
    fn new(rank: usize) -> Self {
        let fault = std::env::var(FAULT).ok().and_then(|v| {
            let mut parts = v.split(':').map(str::trim);
            let (r, step, what) = (parts.next()?, parts.next()?, parts.next()?);
            (r.parse::<usize>().ok()? == rank).then_some(())?;
            Some((step.parse::<u64>().ok()?, what == "hang"))
        });
        let bar = if rank == 0 {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            )
            .expect("static template"),
        );
        Progress { bar, rank, fault }
    }
}

impl TrainObserver for Progress {
    fn on_start(&mut self, start_step: u64, total_steps: u64) {
        self.bar.set_length(total_steps);
        self.bar.set_position(start_step);
        self.bar.reset_eta();
    }

    fn on_step(&mut self, m: &StepMetrics) {
        if let Some((step, hang)) = self.fault.filter(|(s, _)| *s == m.step) {
            eprintln!(
                "[rank {}] {FAULT}: {} after step {step}",
                self.rank,
                if hang { "hanging" } else { "exiting" }
            );
            if hang {
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            std::process::exit(3);
        }
        self.bar.set_position(m.step);
        self.bar.set_message(format!(
            "reward {:.3}  loss {:.4}  kl {:.4}  len {:.0}  {:.2} s/step{}",
            m.reward_mean,
            m.loss,
            m.kl,
            m.response_len,
            m.step_s,
            if m.skipped {
                "  (skipped: non-finite)"
            } else {
                ""
            }
        ));
    }

    fn on_eval(&mut self, step: u64, accuracy: f64) {
        if self.rank == 0 {
            self.bar
                .println(format!("step {step}: held-out accuracy {accuracy:.3}"));
        }
    }

    fn on_checkpoint(&mut self, step: u64, path: &Path) {
        tracing::debug!("checkpoint step {step}: {}", path.display());
    }

    fn on_message(&mut self, message: &str) {
        if self.rank == 0 {
            self.bar.println(message);
        } else {
            eprintln!("[rank {}] {message}", self.rank);
        }
    }
}

fn flags(args: &Args) -> TrainFlags {
    TrainFlags {
        config: args.config.clone(),
        set: args.set.clone(),
        algorithm: args.algorithm.clone(),
        model: args.model.clone(),
        rollouts_per_prompt: args.rollouts_per_prompt,
        steps: args.steps,
        device: args.device.clone(),
        data: args.data.clone(),
        seed: args.seed,
        held_out: args.held_out.clone(),
    }
}

/// This process's place in a torchrun job: `None` when `WORLD_SIZE` is unset or 1 (a single
/// process); otherwise the torchrun variables, whose errors name the variable.
fn launch_from_env() -> anyhow::Result<Option<LaunchOptions>> {
    match std::env::var("WORLD_SIZE") {
        Err(_) => Ok(None),
        Ok(w) if w.trim() == "1" => Ok(None),
        // Backend and timeout are the trainer's choice (device, train.dist_timeout_s).
        Ok(_) => Ok(Some(LaunchOptions::from_env(
            tbrm_dist::Backend::Gloo,
            Duration::from_secs(1),
        )?)),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let launch = launch_from_env().context("reading the torchrun environment")?;
    let rank = launch.as_ref().map_or(0, |l| l.rank);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("\nsecond Ctrl-C: aborting without a checkpoint");
                std::process::exit(130);
            }
            eprintln!("\nCtrl-C: stopping after the current phase and saving a checkpoint (Ctrl-C again aborts)");
        })
        .context("installing the Ctrl-C handler")?;
    }

    let started = Instant::now();
    let mut trainer = match &args.resume {
        Some(dir) => {
            let refused = [
                ("--config", args.config.is_some()),
                ("--set", !args.set.is_empty()),
                ("--algorithm", args.algorithm.is_some()),
                ("--model", args.model.is_some()),
                ("--rollouts-per-prompt", args.rollouts_per_prompt.is_some()),
                ("--data", args.data.is_some()),
                ("--seed", args.seed.is_some()),
                ("--held-out", args.held_out.is_some()),
                ("--output", args.output.is_some()),
            ];
            if let Some((flag, _)) = refused.iter().find(|(_, given)| *given) {
                bail!(
                    "{flag} cannot be combined with --resume: a resumed run keeps its saved config.toml \
                     (only --steps and --device may change)"
                );
            }
            let device = match &args.device {
                Some(d) => Some(
                    d.parse::<DeviceChoice>()
                        .map_err(anyhow::Error::msg)
                        .context("--device")?,
                ),
                None => None,
            };
            let steps = args.steps;
            Trainer::resume_launched(
                dir,
                |cfg| {
                    if let Some(s) = steps {
                        cfg.train.steps = s;
                    }
                    if let Some(d) = device {
                        cfg.model.device = d;
                    }
                },
                None,
                launch,
            )
            .with_context(|| format!("resuming {}", dir.display()))?
        }
        None => {
            let (cfg, note) = settings::resolve_noted(&flags(&args))?;
            if rank == 0 {
                if let Some(n) = note {
                    eprintln!("{n}");
                }
                for w in cfg.warnings() {
                    eprintln!("warning: {w}");
                }
            }
            let output = args
                .output
                .clone()
                .unwrap_or_else(|| default_run_dir(Path::new("runs"), cfg.algorithm.name.as_str()));
            let task = TaskData::from_config(&cfg).context("loading the training data")?;
            let who = launch
                .as_ref()
                .filter(|l| l.world_size > 1)
                .map(|l| format!("rank {}/{}", l.rank, l.world_size));
            let t = Trainer::new_launched(cfg, &output, task, launch);
            match who {
                Some(who) => t.context(who)?,
                None => t?,
            }
        }
    };
    let run_dir = trainer.run_dir().to_path_buf();
    let world = trainer.world_size();
    if world > 1 {
        eprintln!(
            "[rank {rank}/{world}] {:?}, optimizer moments and master weights {:.2} MiB{}",
            trainer.policy().device(),
            trainer.optimizer_moment_bytes() as f64 / (1u64 << 20) as f64,
            if trainer.config().optim.zero1 {
                " (ZeRO-1 shard)"
            } else {
                ""
            }
        );
    }
    if rank == 0 {
        eprintln!(
            "run folder {} ({}, {} held-out problems, {world} process{}, {:.1} s to set up)",
            run_dir.display(),
            trainer.config().algorithm.name.as_str(),
            trainer.held_out_len(),
            if world == 1 { "" } else { "es" },
            started.elapsed().as_secs_f64()
        );
        eprintln!("responses stop at {}", trainer.stop_tokens().join(", "));
    }
    let mut progress = Progress::new(rank);
    let outcome = trainer.run(&stop, &mut progress);
    progress.bar.finish_and_clear();
    let outcome = match outcome {
        Err(e) if world > 1 => {
            // Leaving a failed process group can wait out the timeout again; the process is
            // about to exit, so skip it.
            std::mem::forget(trainer);
            return Err(anyhow::Error::new(e).context(format!("rank {rank}")));
        }
        other => other?,
    };
    if rank != 0 {
        return Ok(());
    }
    let s = &outcome.summary;
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |a| format!("{a:.3}"));
    println!(
        "held-out accuracy: before {} -> after {} ({} problems, {} steps, {:.1} s)",
        fmt(s.eval_before),
        fmt(s.eval_after),
        s.held_out_problems,
        s.steps,
        s.wall_seconds
    );
    println!("run folder: {}", run_dir.display());
    if s.interrupted {
        println!(
            "interrupted at step {}; continue with: tbrm train --resume {}",
            s.steps,
            run_dir.display()
        );
        std::process::exit(130);
    }
    Ok(())
}
