//! `tbrm score`: per-token log-probs of responses under a model. Reads JSONL lines with
//! `prompt` and `response` strings (or `prompt_ids` and `response_ids`), writes each line back
//! with `response_ids`, `token_logprobs`, `first_logit` and `sum_logprob` added. Scoring runs
//! in batches through `tbrm_model::score_responses` (chunked over time, no autograd).

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{Map, Value};
use tbrm_model::{score_responses, PackedBatch, Tokenizer};

use super::load_model;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face model folder.
    #[arg(long)]
    model: PathBuf,
    /// JSONL input: `prompt` + `response` strings, or `prompt_ids` + `response_ids` arrays.
    #[arg(long)]
    input: PathBuf,
    /// JSONL output, one line per input line.
    #[arg(long)]
    output: PathBuf,
    /// Pairs scored per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// auto, f32, bf16 or f16 (auto: bf16 on CUDA, f32 on CPU).
    #[arg(long, default_value = "auto")]
    dtype: String,
}

/// One input line, tokenized.
struct Row {
    fields: Map<String, Value>,
    prompt: Vec<u32>,
    response: Vec<u32>,
}

fn ids_field(obj: &Map<String, Value>, key: &str, vocab: i64) -> Result<Vec<u32>, String> {
    let arr = obj[key]
        .as_array()
        .ok_or_else(|| format!("`{key}` must be an array of token ids"))?;
    arr.iter()
        .map(|v| {
            v.as_u64()
                .filter(|&x| (x as i64) < vocab)
                .map(|x| x as u32)
                .ok_or_else(|| {
                    format!("`{key}` holds {v}, not a token id below vocab_size {vocab}")
                })
        })
        .collect()
}

fn parse_line(line: &str, tok: &Tokenizer, vocab: i64) -> Result<Row, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(fields) = value else {
        return Err("expected a JSON object".into());
    };
    let (prompt, response) = if fields.contains_key("prompt_ids")
        || fields.contains_key("response_ids")
    {
        for key in ["prompt_ids", "response_ids"] {
            if !fields.contains_key(key) {
                return Err(format!(
                    "missing `{key}` (ids need both prompt_ids and response_ids)"
                ));
            }
        }
        (
            ids_field(&fields, "prompt_ids", vocab)?,
            ids_field(&fields, "response_ids", vocab)?,
        )
    } else {
        let text = |key: &str| -> Result<&str, String> {
            match fields.get(key) {
                Some(Value::String(s)) => Ok(s),
                Some(_) => Err(format!("`{key}` must be a string")),
                None => Err(format!(
                    "missing `{key}` (each line needs prompt + response, or prompt_ids + response_ids)"
                )),
            }
        };
        let prompt = tok
            .encode(text("prompt")?, true)
            .map_err(|e| e.to_string())?;
        let response = tok
            .encode(text("response")?, false)
            .map_err(|e| e.to_string())?;
        (prompt, response)
    };
    if prompt.is_empty() {
        return Err(
            "the prompt is empty (the first response token needs a prompt token before it)".into(),
        );
    }
    Ok(Row {
        fields,
        prompt,
        response,
    })
}

fn read_rows(path: &Path, tok: &Tokenizer, vocab: i64) -> anyhow::Result<Vec<Row>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line =
            line.with_context(|| format!("{}:{}: cannot read the line", path.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line, tok, vocab) {
            Ok(row) => rows.push(row),
            Err(e) => bail!("{}:{}: {e}", path.display(), i + 1),
        }
    }
    Ok(rows)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let (tok, model) = load_model(&args.model, &args.device, &args.dtype)?;
    let rows = read_rows(&args.input, &tok, model.config().vocab_size)?;
    let out = std::fs::File::create(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let mut out = BufWriter::new(out);
    let _guard = tch::no_grad_guard();
    for chunk in rows.chunks(args.batch_size) {
        let pairs: Vec<(&[u32], &[u32])> = chunk
            .iter()
            .map(|r| (r.prompt.as_slice(), r.response.as_slice()))
            .collect();
        let batch = PackedBatch::new(&pairs, tok.pad_token_id(), model.device());
        let scores = score_responses(&model, &batch);
        let lps: Vec<Vec<f32>> = Vec::try_from(scores.token_logprobs.to_device(tch::Device::Cpu))?;
        let firsts: Vec<f32> = Vec::try_from(scores.first_logit.to_device(tch::Device::Cpu))?;
        for ((row, lp), first) in chunk.iter().zip(lps).zip(firsts) {
            let lp = &lp[..row.response.len()];
            let mut obj = row.fields.clone();
            obj.insert("response_ids".into(), serde_json::to_value(&row.response)?);
            obj.insert("token_logprobs".into(), serde_json::to_value(lp)?);
            obj.insert("first_logit".into(), serde_json::to_value(first)?);
            let sum: f64 = lp.iter().map(|&x| f64::from(x)).sum();
            obj.insert("sum_logprob".into(), serde_json::to_value(sum)?);
            serde_json::to_writer(&mut out, &Value::Object(obj))?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()
        .with_context(|| format!("writing {}", args.output.display()))?;
    tracing::info!(
        "scored {} responses into {}",
        rows.len(),
        args.output.display()
    );
    Ok(())
}
