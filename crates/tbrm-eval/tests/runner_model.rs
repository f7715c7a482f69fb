//! The runner on a real (tiny, randomly initialised) tbrm-model through `ModelGenerator`, with
//! the Qwen chat template of tbrm-model's test tokenizer and the paper's `qwen_math` template.
//! The model answers nonsense; what is checked is the bookkeeping: n samples per problem, the
//! prompt really rendered through the chat template, pass@k and avg@k consistent with the
//! per-sample verdicts, and seeded sampling that does not depend on which problems are run.

use std::fs;
use std::path::{Path, PathBuf};

use tbrm_data::PromptTemplate;
use tbrm_eval::metrics::mean_pass_at_k;
use tbrm_eval::runner::{
    encode_prompt, run_benchmark, EvalConfig, MathJudge, ModelGenerator, NoProgress,
};
use tbrm_model::{CausalLm, ModelConfig, ModelType, Tokenizer};

fn tokenizer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tbrm-model/tests/resources/tok_qwen")
}

fn tiny_model(tok: &Tokenizer) -> CausalLm {
    let mut cfg = ModelConfig::tiny(ModelType::Qwen2);
    cfg.vocab_size = tok.vocab_size() as i64;
    CausalLm::from_config(cfg, tch::Device::Cpu, tch::Kind::Float, 11).unwrap()
}

fn write_bench(dir: &Path) {
    let rows = [
        ("What is $1+1$?", "2"),
        ("Compute $3 \\cdot 4$.", "12"),
        ("Find $x$ if $x+2=5$.", "3"),
    ];
    let text: String = rows
        .iter()
        .map(|(q, a)| serde_json::json!({ "problem": q, "answer": a }).to_string() + "\n")
        .collect();
    fs::write(dir.join("toy_math.jsonl"), text).unwrap();
}

#[test]
fn tiny_random_model_bookkeeping() {
    let tok = Tokenizer::load(&tokenizer_dir()).unwrap();
    let model = tiny_model(&tok);
    let gen = ModelGenerator::new(&model, &tok);
    let tmp = tempfile::tempdir().unwrap();
    write_bench(tmp.path());
    let cfg = EvalConfig {
        benchmarks: vec!["toy_math".into()],
        data_dir: tmp.path().to_path_buf(),
        samples: Some(4),
        temperature: Some(1.0),
        max_new_tokens: 6,
        template: PromptTemplate::QwenMath,
        seed: 5,
        ..EvalConfig::default()
    };
    let run = run_benchmark(&cfg, "toy_math", &gen, &MathJudge, &mut NoProgress).unwrap();
    let r = &run.result;
    assert_eq!((r.n_problems, r.samples, r.temperature), (3, 4, 1.0));
    assert_eq!(run.samples.len(), 12);
    let mut correct = vec![vec![false; 4]; 3];
    for (k, s) in run.samples.iter().enumerate() {
        assert_eq!((s.problem_index, s.sample), (k / 4, k % 4));
        assert!(s.n_tokens >= 1 && s.n_tokens <= 6, "{s:?}");
        assert!(
            !s.truncated || s.n_tokens == 6,
            "only a full-length response is truncated: {s:?}"
        );
        correct[k / 4][k % 4] = s.correct;
    }
    // Sampling at temperature 1 from a random model: the four samples of a problem differ.
    assert!(run.samples[..4]
        .iter()
        .any(|s| s.response != run.samples[0].response));
    let avg = correct.iter().flatten().filter(|&&c| c).count() as f64 / 12.0;
    assert!((r.avg_at_k - avg).abs() < 1e-12);
    for (&k, &v) in &r.pass_at_k {
        assert!((v - mean_pass_at_k(&correct, k).unwrap()).abs() < 1e-12);
    }
    assert_eq!(r.pass_at_k.keys().copied().collect::<Vec<_>>(), [1, 2, 4]);

    // The first problem alone gets exactly the same samples: its seed depends on its index only.
    let alone = run_benchmark(
        &EvalConfig {
            limit: Some(1),
            ..cfg.clone()
        },
        "toy_math",
        &gen,
        &MathJudge,
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(alone.samples[..], run.samples[..4]);
}

#[test]
fn qwen_math_prompt_goes_through_the_chat_template() {
    let tok = Tokenizer::load(&tokenizer_dir()).unwrap();
    let rendered = PromptTemplate::QwenMath.render_question("What is $1+1$?");
    let ids = encode_prompt(&tok, &rendered).unwrap();
    let text = tok.decode(&ids, false).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n\
<|im_start|>user\nWhat is $1+1$?<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn greedy_results_do_not_depend_on_batch_size() {
    let tok = Tokenizer::load(&tokenizer_dir()).unwrap();
    let model = tiny_model(&tok);
    let gen = ModelGenerator::new(&model, &tok);
    let tmp = tempfile::tempdir().unwrap();
    write_bench(tmp.path());
    let cfg = EvalConfig {
        data_dir: tmp.path().to_path_buf(),
        max_new_tokens: 6,
        template: PromptTemplate::QwenMath,
        batch_size: 1,
        ..EvalConfig::default()
    };
    let one = run_benchmark(&cfg, "toy_math", &gen, &MathJudge, &mut NoProgress).unwrap();
    let three = run_benchmark(
        &EvalConfig {
            batch_size: 3,
            ..cfg
        },
        "toy_math",
        &gen,
        &MathJudge,
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(one.result.samples, 1);
    let texts = |r: &tbrm_eval::runner::BenchmarkRun| {
        r.samples
            .iter()
            .map(|s| s.response.clone())
            .collect::<Vec<_>>()
    };
    // Left padding must not change a greedy continuation (f32 on the CPU).
    assert_eq!(texts(&one), texts(&three));
}
