//! Batch verification of a JSONL file without the `tbrm` binary (which links libtorch):
//! `cargo run --release -p tbrm-verify --example verify_jsonl -- --input IN --output OUT
//! [--threads N]`. Same flags and output as `tbrm verify --input`; used by
//! `scripts/bench_verify.py` when the CLI is not built.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::process::ExitCode;
use std::time::Instant;

use tbrm_verify::jsonl::{verify_jsonl, with_threads};
use tbrm_verify::Limits;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(input), Some(output)) = (get("--input"), get("--output")) else {
        eprintln!("usage: verify_jsonl --input IN.jsonl --output OUT.jsonl [--threads N]");
        return ExitCode::from(2);
    };
    let threads = match get("--threads").map(|t| t.parse::<usize>()) {
        None => 0,
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            eprintln!("--threads: {e}");
            return ExitCode::from(2);
        }
    };
    let (reader, writer) = match (File::open(&input), File::create(&output)) {
        (Ok(r), Ok(w)) => (BufReader::new(r), BufWriter::new(w)),
        (Err(e), _) => {
            eprintln!("{input}: {e}");
            return ExitCode::from(2);
        }
        (_, Err(e)) => {
            eprintln!("{output}: {e}");
            return ExitCode::from(2);
        }
    };
    let t = Instant::now();
    let result = with_threads(threads, || {
        verify_jsonl(reader, writer, &Limits::default(), |n, m| {
            eprintln!("{input}:{n}: {m}")
        })
    })
    .and_then(|r| r);
    match result {
        Ok(s) => {
            eprintln!(
                "{} verified, {} correct, {} malformed in {:.3}s; slowest {} us (line {})",
                s.verified,
                s.correct,
                s.malformed,
                t.elapsed().as_secs_f64(),
                s.slowest_micros,
                s.slowest_line
            );
            if s.malformed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
