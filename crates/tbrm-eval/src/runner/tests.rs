use std::collections::HashMap;
use std::fs;

use super::*;
use crate::metrics::mean_pass_at_k;
use std::collections::BTreeSet;

/// Answers from a question -> answer table: a sample is right when its seed is even, so
/// sampled runs mix right and wrong and depend on nothing but the seeds the runner passes.
/// Records every call as (seeds per request, params).
struct Scripted {
    answers: HashMap<String, String>,
    calls: std::cell::RefCell<Vec<(Vec<usize>, DecodeParams)>>,
}

impl Scripted {
    fn new(rows: &[(&str, &str)]) -> Self {
        Self {
            answers: rows
                .iter()
                .map(|(q, a)| (q.to_string(), a.to_string()))
                .collect(),
            calls: Default::default(),
        }
    }

    /// Sequences per call.
    fn call_sizes(&self) -> Vec<usize> {
        self.calls
            .borrow()
            .iter()
            .map(|c| c.0.iter().sum())
            .collect()
    }
}

impl Generator for Scripted {
    fn encode_prompt(&self, prompt: &RenderedPrompt) -> Result<Vec<u32>, String> {
        match prompt {
            RenderedPrompt::Text(t) => Ok(t.bytes().map(u32::from).collect()),
            RenderedPrompt::Chat(_) => Err("scripted generator takes text prompts".into()),
        }
    }
    fn generate(
        &self,
        requests: &[GenRequest],
        params: &DecodeParams,
    ) -> Result<Vec<Vec<GeneratedText>>, String> {
        self.calls
            .borrow_mut()
            .push((requests.iter().map(|r| r.seeds.len()).collect(), *params));
        Ok(requests
            .iter()
            .map(|r| {
                let q: String = r.prompt.iter().map(|&b| b as u8 as char).collect();
                let gold = &self.answers[&q];
                r.seeds
                    .iter()
                    .map(|seed| {
                        let right = params.temperature == 0.0 || seed.is_multiple_of(2);
                        let text = if right {
                            format!("so \\boxed{{{gold}}}")
                        } else {
                            "so \\boxed{-1}".into()
                        };
                        GeneratedText {
                            n_tokens: text.len(),
                            truncated: false,
                            text,
                        }
                    })
                    .collect()
            })
            .collect())
    }
}

#[derive(Default)]
struct Recorder {
    events: Vec<String>,
}
impl Progress for Recorder {
    fn benchmark_started(&mut self, name: &str, total: usize) {
        self.events.push(format!("start {name} {total}"));
    }
    fn samples_done(&mut self, done: usize, total: usize) {
        self.events.push(format!("{done}/{total}"));
    }
    fn benchmark_finished(&mut self, run: &BenchmarkRun) {
        self.events.push(format!("end {}", run.result.name));
    }
}

const ROWS: [(&str, &str); 5] = [
    ("1+1=", "2"),
    ("2*3=", "6"),
    ("9-4=", "5"),
    ("7+8=", "15"),
    ("3*3=", "9"),
];

fn write_bench(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(format!("{name}.jsonl"));
    let text: String = ROWS
        .iter()
        .enumerate()
        .map(|(i, (q, a))| format!("{{\"id\":\"p{i}\",\"problem\":\"{q}\",\"answer\":\"{a}\"}}\n"))
        .collect();
    fs::write(&p, text).unwrap();
    p
}

fn cfg(dir: &Path) -> EvalConfig {
    EvalConfig {
        benchmarks: vec!["toy".into()],
        data_dir: dir.to_path_buf(),
        template: PromptTemplate::Plain,
        max_new_tokens: 8,
        ..EvalConfig::default()
    }
}

#[test]
fn paper_protocol_and_overrides() {
    let c = EvalConfig::default();
    assert_eq!(
        c.resolve("aime24"),
        Protocol {
            samples: 32,
            temperature: 1.0
        }
    );
    assert_eq!(
        c.resolve("amc23"),
        Protocol {
            samples: 32,
            temperature: 1.0
        }
    );
    assert_eq!(
        c.resolve("math500"),
        Protocol {
            samples: 1,
            temperature: 0.0
        }
    );
    assert_eq!(
        c.resolve("my_file"),
        Protocol {
            samples: 1,
            temperature: 0.0
        }
    );
    let c = EvalConfig {
        samples: Some(4),
        ..EvalConfig::default()
    };
    assert_eq!(
        c.resolve("aime25"),
        Protocol {
            samples: 4,
            temperature: 1.0
        }
    );
    // Greedy stays one sample even when more are asked for.
    assert_eq!(
        c.resolve("olympiadbench"),
        Protocol {
            samples: 1,
            temperature: 0.0
        }
    );
    let c = EvalConfig {
        samples: Some(4),
        temperature: Some(0.6),
        ..EvalConfig::default()
    };
    assert_eq!(
        c.resolve("math500"),
        Protocol {
            samples: 4,
            temperature: 0.6
        }
    );
    let c = EvalConfig {
        temperature: Some(0.0),
        ..EvalConfig::default()
    };
    assert_eq!(
        c.resolve("aime24"),
        Protocol {
            samples: 1,
            temperature: 0.0
        }
    );
}

#[test]
fn bad_settings_name_the_key() {
    let base = EvalConfig::default();
    for (c, key) in [
        (
            EvalConfig {
                samples: Some(0),
                ..base.clone()
            },
            "samples",
        ),
        (
            EvalConfig {
                temperature: Some(-1.0),
                ..base.clone()
            },
            "temperature",
        ),
        (
            EvalConfig {
                top_p: 0.0,
                ..base.clone()
            },
            "top_p",
        ),
        (
            EvalConfig {
                batch_size: 0,
                ..base.clone()
            },
            "batch_size",
        ),
        (
            EvalConfig {
                limit: Some(0),
                ..base.clone()
            },
            "limit",
        ),
        (
            EvalConfig {
                benchmarks: vec![],
                ..base.clone()
            },
            "benchmarks",
        ),
        (
            EvalConfig {
                max_new_tokens: 0,
                ..base.clone()
            },
            "max_new_tokens",
        ),
    ] {
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{err}");
    }
    assert!(base.validate().is_ok());
}

#[test]
fn calls_take_the_fewest_problems_that_fill_a_batch() {
    for n in 1..=9 {
        for samples in [1, 3, 5, 32] {
            for bs in [1, 2, 4, 7, 32, 64] {
                let calls = plan_calls(n, samples, bs);
                let covered: Vec<usize> = calls.iter().flat_map(|c| c.clone()).collect();
                assert_eq!(covered, (0..n).collect::<Vec<_>>(), "{n} {samples} {bs}");
                for (k, c) in calls.iter().enumerate() {
                    assert!(!c.is_empty());
                    // Every call but the last reaches batch_size, and would not without its
                    // last problem.
                    if k + 1 < calls.len() {
                        assert!(c.len() * samples >= bs, "{n} {samples} {bs} {calls:?}");
                    }
                    assert!((c.len() - 1) * samples < bs, "{n} {samples} {bs} {calls:?}");
                }
            }
        }
    }
    assert_eq!(plan_calls(5, 1, 2), [0..2, 2..4, 4..5]);
    assert_eq!(plan_calls(5, 3, 8), [0..3, 3..5]);
    // A problem with more samples than batch_size is a call of its own.
    assert_eq!(plan_calls(3, 32, 8), [0..1, 1..2, 2..3]);
}

#[test]
fn seeds_depend_on_run_seed_benchmark_problem_and_sample() {
    let base = derive_seed(7, "aime24", 0, 0);
    let mut seen = BTreeSet::new();
    for i in 0..10 {
        for s in 0..32 {
            assert!(seen.insert(derive_seed(7, "aime24", i, s)), "{i} {s}");
        }
    }
    assert_ne!(derive_seed(8, "aime24", 0, 0), base);
    assert_ne!(derive_seed(7, "aime25", 0, 0), base);
    assert_eq!(derive_seed(7, "aime24", 0, 0), base);
}

#[test]
fn run_counts_and_scores_consistently() {
    let tmp = tempfile::tempdir().unwrap();
    write_bench(tmp.path(), "toy");
    let gen = Scripted::new(&ROWS);
    let c = EvalConfig {
        samples: Some(6),
        temperature: Some(1.0),
        batch_size: 2,
        ..cfg(tmp.path())
    };
    let mut rec = Recorder::default();
    let run = run_benchmark(&c, "toy", &gen, &MathJudge, &mut rec).unwrap();
    let r = &run.result;
    assert_eq!((r.name.as_str(), r.n_problems, r.samples), ("toy", 5, 6));
    assert_eq!(run.samples.len(), 30);
    for (k, s) in run.samples.iter().enumerate() {
        assert_eq!((s.problem_index, s.sample), (k / 6, k % 6));
        assert_eq!(s.gold, ROWS[k / 6].1);
        assert_eq!(s.problem, ROWS[k / 6].0);
        assert_eq!(
            s.correct,
            s.response == format!("so \\boxed{{{}}}", s.gold),
            "{s:?}"
        );
        assert_eq!(
            s.extracted.as_deref(),
            Some(if s.correct { s.gold.as_str() } else { "-1" })
        );
    }
    let correct: Vec<Vec<bool>> = run
        .samples
        .chunks(6)
        .map(|c| c.iter().map(|s| s.correct).collect())
        .collect();
    let hits = run.samples.iter().filter(|s| s.correct).count();
    assert!(
        hits > 0 && hits < 30,
        "the scripted sampler mixes right and wrong: {hits}"
    );
    assert!((r.avg_at_k - hits as f64 / 30.0).abs() < 1e-12);
    assert_eq!(
        r.pass_at_k.keys().copied().collect::<Vec<_>>(),
        [1, 2, 4, 6]
    );
    for (&k, &v) in &r.pass_at_k {
        assert!((v - mean_pass_at_k(&correct, k).unwrap()).abs() < 1e-12);
    }
    assert!(r.pass_at_k[&6] >= r.pass_at_k[&1]);
    // A call holds CALL_BATCHES (4) x batch_size (2) = 8 sequences or more: problems
    // {0, 1}, {2, 3}, then {4}; progress after every call.
    let calls = gen.calls.borrow();
    assert_eq!(
        calls.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
        [vec![6, 6], vec![6, 6], vec![6]]
    );
    assert!(calls.iter().all(|c| c.1
        == DecodeParams {
            temperature: 1.0,
            top_p: 1.0,
            max_new_tokens: 8,
            max_batch: 2,
        }));
    assert_eq!(
        rec.events,
        ["start toy 30", "12/30", "24/30", "30/30", "end toy"]
    );

    let out = tmp.path().join("samples-toy.jsonl");
    run.write_samples(&out).unwrap();
    let back: Vec<SampleRecord> = tbrm_data::read_jsonl(&out).unwrap();
    assert_eq!(back, run.samples);
}

#[test]
fn sampled_results_do_not_depend_on_batching_limit_or_other_benchmarks() {
    let tmp = tempfile::tempdir().unwrap();
    write_bench(tmp.path(), "toy");
    write_bench(tmp.path(), "toy2");
    let gen = Scripted::new(&ROWS);
    let c = EvalConfig {
        samples: Some(4),
        temperature: Some(1.0),
        seed: 3,
        batch_size: 1,
        ..cfg(tmp.path())
    };
    let run =
        |c: &EvalConfig, b: &str| run_benchmark(c, b, &gen, &MathJudge, &mut NoProgress).unwrap();
    let full = run(&c, "toy");
    // Sample s of problem i is judged from the seed derived for (toy, i, s).
    for r in &full.samples {
        assert_eq!(
            r.correct,
            derive_seed(3, "toy", r.problem_index, r.sample).is_multiple_of(2),
            "{r:?}"
        );
    }
    // Batches of 2, 3 and all 5 problems per call: each problem sits at other offsets.
    for bs in [6, 9, 64] {
        let packed = run(
            &EvalConfig {
                batch_size: bs,
                ..c.clone()
            },
            "toy",
        );
        assert_eq!(packed.samples, full.samples, "batch_size {bs}");
    }
    let part = run(
        &EvalConfig {
            limit: Some(2),
            batch_size: 64,
            ..c.clone()
        },
        "toy",
    );
    assert_eq!(part.result.n_problems, 2);
    assert_eq!(part.samples[..], full.samples[..8]);
    // Another benchmark before it in the same run changes nothing.
    let both = run_all(
        &EvalConfig {
            benchmarks: vec!["toy2".into(), "toy".into()],
            batch_size: 64,
            ..c.clone()
        },
        &gen,
        &MathJudge,
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(both[1].samples, full.samples);
    // ... while the benchmark name and the run seed do.
    let verdicts = |r: &BenchmarkRun| r.samples.iter().map(|s| s.correct).collect::<Vec<_>>();
    assert_ne!(verdicts(&both[0]), verdicts(&full));
    assert_ne!(
        verdicts(&run(&EvalConfig { seed: 4, ..c }, "toy")),
        verdicts(&full)
    );
}

#[test]
fn wrong_response_counts_are_errors() {
    struct Short;
    impl Generator for Short {
        fn encode_prompt(&self, _: &RenderedPrompt) -> Result<Vec<u32>, String> {
            Ok(vec![1])
        }
        fn generate(
            &self,
            requests: &[GenRequest],
            _: &DecodeParams,
        ) -> Result<Vec<Vec<GeneratedText>>, String> {
            let g = GeneratedText {
                text: String::new(),
                n_tokens: 0,
                truncated: false,
            };
            Ok(requests
                .iter()
                .map(|r| vec![g.clone(); r.seeds.len() - 1])
                .collect())
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    write_bench(tmp.path(), "toy");
    let c = EvalConfig {
        samples: Some(2),
        temperature: Some(1.0),
        ..cfg(tmp.path())
    };
    let err = run_benchmark(&c, "toy", &Short, &MathJudge, &mut NoProgress).unwrap_err();
    assert!(
        err.to_string().contains("1 responses for the 2 samples"),
        "{err}"
    );
}

#[test]
fn greedy_run_packs_problems_and_uses_one_sample() {
    let tmp = tempfile::tempdir().unwrap();
    write_bench(tmp.path(), "toy");
    let gen = Scripted::new(&ROWS);
    // One sample per problem: calls of CALL_BATCHES x 1 = 4 problems.
    let c = EvalConfig {
        batch_size: 1,
        ..cfg(tmp.path())
    };
    let run = run_benchmark(&c, "toy", &gen, &MathJudge, &mut NoProgress).unwrap();
    assert_eq!(
        (
            run.result.samples,
            run.result.temperature,
            run.result.avg_at_k
        ),
        (1, 0.0, 1.0)
    );
    assert_eq!(
        run.result.pass_at_k.keys().copied().collect::<Vec<_>>(),
        [1]
    );
    assert_eq!(gen.call_sizes(), [4, 1]);
    assert!(gen
        .calls
        .borrow()
        .iter()
        .all(|c| c.1.temperature == 0.0 && c.1.max_new_tokens == 8 && c.1.max_batch == 1));
}

#[test]
fn run_all_checks_every_name_before_generating() {
    let tmp = tempfile::tempdir().unwrap();
    write_bench(tmp.path(), "toy");
    let gen = Scripted::new(&ROWS);
    let c = EvalConfig {
        benchmarks: vec!["toy".into(), "missing".into()],
        ..cfg(tmp.path())
    };
    let err = run_all(&c, &gen, &MathJudge, &mut NoProgress).unwrap_err();
    assert!(
        matches!(
            err,
            EvalError::Data(DataError::BenchmarkNotFound { ref name, .. }) if name == "missing"
        ),
        "{err}"
    );
    assert!(gen.calls.borrow().is_empty());
    fs::write(tmp.path().join("empty.jsonl"), "").unwrap();
    let err =
        run_benchmark(&cfg(tmp.path()), "empty", &gen, &MathJudge, &mut NoProgress).unwrap_err();
    assert!(
        err.to_string().contains("empty.jsonl: no problems"),
        "{err}"
    );
}

#[test]
fn math_judge_reads_the_arith_answer_marker() {
    // The built-in arithmetic task writes `steps;#answer`; the math verifier's last-number
    // fallback finds the answer, but cannot tell a missing `#answer` from a final step.
    let v = MathJudge.judge(&[
        ("18".into(), "7*3=21;2+21=23;23-5=18;#18".into()),
        ("18".into(), "7*3=21;2+21=23;23-5=17;#17".into()),
    ]);
    assert_eq!(
        v.iter().map(|v| v.correct).collect::<Vec<_>>(),
        [true, false],
        "{v:?}"
    );
}
