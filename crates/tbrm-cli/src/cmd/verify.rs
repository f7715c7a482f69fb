//! `tbrm verify`: checks math answers against gold answers with `tbrm-verify`.
//! `--gold G --pred P` prints one verdict as JSON; `--input IN.jsonl [--output OUT.jsonl]`
//! verifies a file of `{"gold", "pred" | "response"}` lines on all cores (or `--threads N`)
//! and writes each line back with `correct`, `extracted` and `reason`. Malformed lines are
//! reported with their line number on stderr and as `{"line", "error"}` in the output; the
//! others are still verified, and the command then exits non-zero.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use tbrm_verify::jsonl::{verify_jsonl, with_threads};
use tbrm_verify::Limits;

#[derive(clap::Args)]
pub struct Args {
    /// Gold answer (with --pred).
    #[arg(long, requires = "pred", conflicts_with = "input")]
    gold: Option<String>,
    /// Predicted answer or full model response (with --gold).
    #[arg(long, requires = "gold", conflicts_with = "input")]
    pred: Option<String>,
    /// JSONL file of {"gold", "pred"} or {"gold", "response"} lines.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Where to write the annotated lines (default: stdout). Only with --input.
    #[arg(long, requires = "input")]
    output: Option<PathBuf>,
    /// Worker threads for --input (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match (args.gold, args.pred, args.input) {
        (Some(gold), Some(pred), None) => {
            let v = tbrm_verify::verify(&gold, &pred);
            println!("{}", serde_json::to_string(&v)?);
            Ok(())
        }
        (None, None, Some(input)) => {
            let reader = BufReader::new(
                File::open(&input).with_context(|| format!("opening {}", input.display()))?,
            );
            let writer: Box<dyn Write + Send> = match &args.output {
                Some(p) => Box::new(BufWriter::new(
                    File::create(p).with_context(|| format!("creating {}", p.display()))?,
                )),
                None => Box::new(BufWriter::new(std::io::stdout())),
            };
            let shown = input.display().to_string();
            let start = std::time::Instant::now();
            let summary = with_threads(args.threads.unwrap_or(0), || {
                verify_jsonl(reader, writer, &Limits::default(), |n, msg| {
                    eprintln!("{shown}:{n}: {msg}")
                })
            })
            .and_then(|r| r)
            .with_context(|| format!("verifying {shown}"))?;
            eprintln!(
                "{} verified, {} correct, {} malformed, in {:.3}s; slowest {} us (line {})",
                summary.verified,
                summary.correct,
                summary.malformed,
                start.elapsed().as_secs_f64(),
                summary.slowest_micros,
                summary.slowest_line
            );
            if summary.malformed > 0 {
                bail!("{} malformed line(s) in {shown}", summary.malformed);
            }
            Ok(())
        }
        _ => bail!("give either --gold and --pred, or --input [--output]"),
    }
}
