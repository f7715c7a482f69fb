//! End-to-end checks of the built-in arithmetic task: the split really holds out its prompts,
//! the tokenizer folder loads through tbrm-model, a short SFT lowers the loss, and the
//! committed warm start `assets/tiny-arith/` loads and is right only part of the time.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tbrm_model::{CausalLm, Tokenizer};
use tbrm_train::sft::{self, SftConfig, SftExample};
use tbrm_train::task::arith::{self, ArithConfig, Split};
use tbrm_train::task::tokenizer as task_tok;

fn asset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/tiny-arith")
}

#[test]
fn no_held_out_prompt_is_in_the_train_set() {
    let cfg = ArithConfig::default();
    // Far more training problems than any run uses, drawn with several seeds.
    let mut train = HashSet::new();
    for seed in 0..3 {
        for p in arith::generate(&cfg, Split::Train, 20_000, seed).unwrap() {
            train.insert(p.prompt);
        }
    }
    let held = arith::generate(&cfg, Split::HeldOut, 2_000, 0).unwrap();
    let leaked: Vec<_> = held.iter().filter(|p| train.contains(&p.prompt)).collect();
    assert!(
        leaked.is_empty(),
        "held-out prompts in the train set: {leaked:?}"
    );
    // And the sets are not trivially disjoint because one of them is tiny or degenerate.
    assert!(train.len() > 50_000, "{}", train.len());
    assert!(held
        .iter()
        .all(|p| arith::split_of(&p.prompt) == Split::HeldOut));
}

#[test]
fn tokenizer_folder_loads_through_tbrm_model() {
    let dir = tempfile::tempdir().unwrap();
    task_tok::write_files(dir.path()).unwrap();
    let tok = Tokenizer::load(dir.path()).unwrap();
    assert_eq!(tok.eos_token_ids(), &[task_tok::EOS_ID]);
    assert_eq!(tok.pad_token_id(), task_tok::PAD_ID);
    assert_eq!(tok.vocab_size(), task_tok::vocab_size());
    let p = arith::solve("8-2*4+6=", 99).unwrap();
    let ids = tok
        .encode(&(p.prompt.clone() + &p.response()), false)
        .unwrap();
    assert_eq!(ids.len(), p.prompt.len() + p.response().len());
    let mut with_eos = ids.clone();
    with_eos.push(task_tok::EOS_ID);
    assert_eq!(
        tok.decode(&with_eos, true).unwrap(),
        p.prompt.clone() + &p.response()
    );
}

#[test]
fn short_sft_lowers_the_response_loss() {
    let dir = tempfile::tempdir().unwrap();
    task_tok::write_files(dir.path()).unwrap();
    let tok = Tokenizer::load(dir.path()).unwrap();
    let data = sft::arith_examples(&ArithConfig::default(), 256, 0).unwrap();
    let cfg = SftConfig {
        steps: 40,
        batch_size: 16,
        warmup_steps: 5,
        ..SftConfig::default()
    };
    let mut model = sft::init_tiny_arith(tch::Device::Cpu, 0).unwrap();
    let mut losses = Vec::new();
    sft::train(&mut model, &tok, &data, &cfg, |s| losses.push(s.loss)).unwrap();
    assert_eq!(losses.len(), 40);
    let first = losses[..5].iter().sum::<f64>() / 5.0;
    let last = losses[35..].iter().sum::<f64>() / 5.0;
    // Uniform over 19 tokens is ln 19 = 2.94 nats; 40 steps must learn the format at least.
    assert!(first > 2.0, "initial loss {first}");
    assert!(last < 0.75 * first, "loss {first} -> {last}");

    // Seeded: the same run again gives the same losses.
    let mut again = sft::init_tiny_arith(tch::Device::Cpu, 0).unwrap();
    let mut losses2 = Vec::new();
    sft::train(&mut again, &tok, &data, &cfg, |s| losses2.push(s.loss)).unwrap();
    assert_eq!(losses, losses2);
}

#[test]
fn sft_rejects_bad_settings_and_data() {
    let dir = tempfile::tempdir().unwrap();
    task_tok::write_files(dir.path()).unwrap();
    let tok = Tokenizer::load(dir.path()).unwrap();
    let mut model = sft::init_tiny_arith(tch::Device::Cpu, 0).unwrap();
    let cfg = SftConfig {
        lr: f64::NAN,
        ..SftConfig::default()
    };
    let data = vec![SftExample {
        prompt: "1+1=".into(),
        response: "#2".into(),
    }];
    let e = sft::train(&mut model, &tok, &data, &cfg, |_| {}).unwrap_err();
    assert!(e.to_string().contains("lr"), "{e}");
    let e = sft::train(&mut model, &tok, &[], &SftConfig::default(), |_| {}).unwrap_err();
    assert!(e.to_string().contains("no training examples"), "{e}");

    let file = dir.path().join("bad.jsonl");
    std::fs::write(
        &file,
        "{\"prompt\": \"1+1=\", \"response\": \"#2\"}\n\n{\"prompt\": 3}\n",
    )
    .unwrap();
    let e = sft::read_jsonl(&file).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:3") && e.contains("prompt"), "{e}");
    std::fs::write(&file, "{\"prompt\": \"1+1=\"}\n").unwrap();
    let e = sft::read_jsonl(&file).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:1") && e.contains("response"), "{e}");
    std::fs::write(
        &file,
        "{\"prompt\": \"1+1=\", \"response\": \"#2\", \"x\": 1}\n",
    )
    .unwrap();
    assert_eq!(sft::read_jsonl(&file).unwrap(), data);
}

/// The committed base policy: loads as an HF folder and is right only part of the time, as its
/// README states (base accuracy measured on the first 200 held-out problems, seed 0).
#[test]
fn committed_warm_start_is_partly_right() {
    let dir = asset_dir();
    let tok = Tokenizer::load(&dir).unwrap();
    let model = CausalLm::load(&dir, tch::Device::Cpu, tch::Kind::Float).unwrap();
    assert_eq!(model.config().vocab_size as usize, task_tok::vocab_size());
    let items = sft::arith_eval_items(&ArithConfig::default(), 200, 0).unwrap();
    let acc = sft::greedy_accuracy(&model, &tok, &items, 200, 48).unwrap();
    assert!(
        (0.15..=0.6).contains(&acc),
        "greedy held-out accuracy {acc}"
    );
}
