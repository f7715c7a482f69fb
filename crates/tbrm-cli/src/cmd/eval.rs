//! `tbrm eval`: the TBRM paper's benchmark protocol in one command (avg@32 at temperature 1.0
//! for AIME24/AIME25/AMC23, greedy avg@1 elsewhere, pass@k with the unbiased estimator). Prints
//! a table laid out like the paper's Table 1 and writes `results.json`, `config.json` and one
//! `samples-<benchmark>.jsonl` per benchmark into the output folder. The work is done by
//! `tbrm_eval::runner`; this file resolves flags, loads the model and draws the progress bar.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tbrm_data::PromptTemplate;
use tbrm_eval::results::{format_details, format_table1, write_results_json, ResultsFile};
use tbrm_eval::runner::{
    self, BenchmarkRun, EvalConfig, Judge, MathJudge, ModelGenerator, Progress,
};
use tbrm_model::{CausalLm, Tokenizer};
use tbrm_verify::Verdict;

use super::{parse_device, parse_dtype};

/// Environment variable naming the default data folder.
pub const DATA_DIR_ENV: &str = "TBRM_DATA_DIR";

#[derive(clap::Args)]
#[command(after_help = "\
Data folder: --data-dir, else $TBRM_DATA_DIR, else ./data, else ../shared/data (relative to the \
current directory), the first that exists. A benchmark NAME is read from DIR/NAME.jsonl (or \
.parquet, .json); a path to a data file also works.

Defaults follow the TBRM paper: aime24, aime25, amc23 get 32 samples at temperature 1.0 \
(avg@32); every other benchmark one greedy sample (avg@1). --samples and --temperature override \
them for all benchmarks; greedy decoding always uses one sample.")]
pub struct Args {
    /// Hugging Face model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Comma-separated benchmark names or data file paths.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "aime24,aime25,amc23,math500,minerva_math,olympiadbench"
    )]
    benchmarks: Vec<String>,
    /// Folder holding the benchmark files (see below for the default).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Samples per problem for every benchmark (default: the paper's, per benchmark).
    #[arg(long)]
    samples: Option<usize>,
    /// Sampling temperature for every benchmark; 0 is greedy (default: the paper's).
    #[arg(long)]
    temperature: Option<f64>,
    /// Nucleus sampling mass (1 = off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    #[arg(long, default_value_t = 2048)]
    max_new_tokens: usize,
    /// Prompt template: qwen_math (the paper's), r1, chat, plain, or a string with {question}.
    #[arg(long, default_value = "qwen_math")]
    template: PromptTemplate,
    /// Output folder (default: `eval-results/<model folder name>`).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Only the first N problems of each benchmark (smoke runs).
    #[arg(long)]
    limit: Option<usize>,
    /// Most sequences decoded at once; a generate call holds whole problems until it has at
    /// least this many. Results do not depend on it (every sample has its own seed).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda, cuda:N, or auto (cuda:0 when available).
    #[arg(long, default_value = "auto")]
    device: String,
    /// f32, bf16 or f16; auto is bf16 on CUDA and f32 on CPU.
    #[arg(long, default_value = "auto")]
    dtype: String,
    /// How answers are judged: math (the math verifier) or arith (exact match of the text after
    /// the last `#`, the built-in arithmetic task's reward).
    #[arg(long, default_value = "math")]
    judge: JudgeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
enum JudgeKind {
    Math,
    Arith,
}

/// The built-in arithmetic task's exact-match reward as a judge, so `tbrm eval` scores the tiny
/// model the way training rewards it.
struct ArithJudge;

impl Judge for ArithJudge {
    fn name(&self) -> &str {
        "arith"
    }
    fn judge(&self, pairs: &[(String, String)]) -> Vec<Verdict> {
        use tbrm_train::task::arith;
        pairs
            .iter()
            .map(|(gold, response)| {
                let extracted = arith::extract_answer(response).map(str::to_string);
                let correct = arith::score(response, gold) >= 1.0;
                let reason = match (&extracted, correct) {
                    (None, _) => "no `#` answer marker".to_string(),
                    (Some(_), true) => "exact match".to_string(),
                    (Some(a), false) => format!("`{a}` != `{}`", gold.trim()),
                };
                Verdict {
                    correct,
                    extracted,
                    reason,
                }
            })
            .collect()
    }
}

/// The resolved settings, saved next to the results.
#[derive(Serialize)]
struct SavedConfig<'a> {
    model: &'a Path,
    device: String,
    dtype: String,
    judge: JudgeKind,
    eval: &'a EvalConfig,
}

/// `--data-dir`, else `$TBRM_DATA_DIR`, else `./data`, else `../shared/data`.
pub fn resolve_data_dir(flag: Option<PathBuf>, env: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = flag {
        if !d.is_dir() {
            bail!("--data-dir {}: not a directory", d.display());
        }
        return Ok(d);
    }
    if let Some(d) = env {
        if !d.is_dir() {
            bail!("${DATA_DIR_ENV}={}: not a directory", d.display());
        }
        return Ok(d);
    }
    let candidates = [PathBuf::from("data"), PathBuf::from("../shared/data")];
    candidates.iter().find(|d| d.is_dir()).cloned().with_context(|| {
        format!(
            "no data folder: pass --data-dir or set ${DATA_DIR_ENV}; also tried {} (relative to {})",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" and "),
            std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default()
        )
    })
}

/// One indicatif bar per benchmark, with ETA; a summary line on stderr when a benchmark ends
/// (the bar hides itself when stderr is not a terminal, the line does not).
#[derive(Default)]
struct Bar {
    bar: Option<ProgressBar>,
}

impl Progress for Bar {
    fn benchmark_started(&mut self, name: &str, total_samples: usize) {
        let bar = ProgressBar::new(total_samples as u64);
        let style = ProgressStyle::with_template(
            "{prefix:>14} [{bar:40.cyan/blue}] {pos}/{len} samples  {elapsed_precise} elapsed, ETA {eta_precise}",
        )
        .expect("static progress template")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(name.to_string());
        self.bar = Some(bar);
    }

    fn samples_done(&mut self, done: usize, _total: usize) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
    }

    fn benchmark_finished(&mut self, run: &BenchmarkRun) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let r = &run.result;
        eprintln!(
            "{}: avg@{} = {:.1}% ({} problems x {} samples, temperature {}, {} tokens in {:.1} s)",
            r.name,
            r.samples,
            100.0 * r.avg_at_k,
            r.n_problems,
            r.samples,
            r.temperature,
            run.generated_tokens,
            run.seconds
        );
    }
}

fn folder_label(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Benchmarks given as files need no data folder; one given by name does.
    let all_files = args.benchmarks.iter().all(|b| Path::new(b).is_file());
    let data_dir = match resolve_data_dir(
        args.data_dir.clone(),
        std::env::var_os(DATA_DIR_ENV).map(PathBuf::from),
    ) {
        Ok(d) => d,
        Err(_) if all_files && args.data_dir.is_none() => PathBuf::from("."),
        Err(e) => return Err(e),
    };
    let cfg = EvalConfig {
        benchmarks: args.benchmarks.clone(),
        data_dir,
        samples: args.samples,
        temperature: args.temperature,
        max_new_tokens: args.max_new_tokens,
        template: args.template.clone(),
        top_p: args.top_p,
        seed: args.seed,
        batch_size: args.batch_size,
        limit: args.limit,
    };
    cfg.validate()?;
    // Every benchmark must exist before the model is loaded and hours are spent generating.
    for b in &cfg.benchmarks {
        runner::resolve_benchmark(&cfg.data_dir, b)?;
    }

    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype, device)?;
    let mut tok = Tokenizer::load(&args.model)
        .with_context(|| format!("loading the tokenizer of {}", args.model.display()))?;
    if cfg.template.uses_chat_template() {
        if !tok.has_chat_template() {
            bail!(
                "--template {} needs a chat template, and the tokenizer in {} has none; use --template plain (or r1)",
                cfg.template,
                args.model.display()
            );
        }
        // A base model prompted in chat format ends its turn with the template's end-of-turn
        // token (`<|im_end|>`), which its generation_config.json may not list as EOS.
        let eot = tok
            .end_of_turn_ids()
            .context("finding the chat template's end-of-turn token")?;
        tok.add_eos_token_ids(&eot);
    }
    let model = CausalLm::load(&args.model, device, dtype)
        .with_context(|| format!("loading the model {}", args.model.display()))?;
    let generator = ModelGenerator::new(&model, &tok);
    let judge: Box<dyn Judge> = match args.judge {
        JudgeKind::Math => Box::new(MathJudge),
        JudgeKind::Arith => Box::new(ArithJudge),
    };

    let out = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from("eval-results").join(folder_label(&args.model)));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let saved = SavedConfig {
        model: &args.model,
        device: format!("{device:?}"),
        dtype: format!("{dtype:?}"),
        judge: args.judge,
        eval: &cfg,
    };
    let cfg_path = out.join("config.json");
    tbrm_data::write_json_atomic(&cfg_path, &saved)?;

    let mut bar = Bar::default();
    let mut results = Vec::new();
    for b in &cfg.benchmarks {
        let run = runner::run_benchmark(&cfg, b, &generator, judge.as_ref(), &mut bar)?;
        let samples_path = out.join(format!("samples-{}.jsonl", run.result.name));
        run.write_samples(&samples_path)?;
        results.push(run.result);
        // Rewritten after every benchmark so an interrupted run keeps what it finished.
        let file = ResultsFile {
            model: args.model.display().to_string(),
            template: cfg.template.to_string(),
            max_new_tokens: cfg.max_new_tokens,
            seed: cfg.seed,
            results: results.clone(),
        };
        write_results_json(&out.join("results.json"), &file)?;
    }

    let label = folder_label(&args.model);
    println!("{}", format_table1(&[(label, results.clone())]));
    println!("{}", format_details(&results));
    println!("wrote {}", out.join("results.json").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_precedence_flag_env_default() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        assert_eq!(
            resolve_data_dir(Some(a.clone()), Some(b.clone())).unwrap(),
            a
        );
        assert_eq!(resolve_data_dir(None, Some(b.clone())).unwrap(), b);
        let err = resolve_data_dir(Some(tmp.path().join("missing")), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--data-dir") && err.contains("missing"),
            "{err}"
        );
        let err = resolve_data_dir(None, Some(tmp.path().join("nope")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TBRM_DATA_DIR") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn arith_judge_is_exact_match_after_the_marker() {
        let pairs = vec![
            ("18".to_string(), "7*3=21;2+21=23;23-5=18;#18".to_string()),
            ("18".to_string(), "7*3=21;2+21=23;23-5=18;#".to_string()),
            ("18".to_string(), "7*3=21;2+21=23;23-5=17;#17".to_string()),
        ];
        let v = ArithJudge.judge(&pairs);
        assert_eq!(
            v.iter().map(|v| v.correct).collect::<Vec<_>>(),
            [true, false, false]
        );
        assert_eq!(v[0].extracted.as_deref(), Some("18"));
        assert_eq!(v[1].extracted.as_deref(), Some(""));
        assert_eq!(v[2].extracted.as_deref(), Some("17"));
    }
}
