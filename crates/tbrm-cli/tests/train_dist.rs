//! Data-parallel `tbrm train` on the CPU: two `tbrm train` processes on this machine joined by
//! Gloo through the torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
//! MASTER_PORT), as `torchrun --nproc-per-node 2 --no-python tbrm train ...` would start them.
//! Checks: two ranks give the weights of one process on the same global batch; ZeRO-1 gives
//! those of plain data parallelism with half the optimizer state per rank; checkpoints resume
//! across world sizes and ZeRO settings; a rank that dies or hangs stops the other with an
//! error naming the operation and the rank, leaving a complete checkpoint; bad launch settings
//! are clear errors. Short GRPO runs on the committed warm start `assets/tiny-arith`.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{read_jsonl, workspace_root};
use serde_json::Value;
use tch::Tensor;

/// Bound on one process: libtorch start-up and a few tiny steps on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(240);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A short GRPO run: 8 prompts x 2 rollouts per step, 8 held-out problems, the rest of
/// GRPO's settings from configs/default.toml's [algorithm_defaults.grpo] (mini-batches: the
/// data-parallel update cuts them from the global batch).
fn base_args(output: &Path, steps: u64) -> Vec<String> {
    algo_args("grpo", output, steps)
}

fn algo_args(algorithm: &str, output: &Path, steps: u64) -> Vec<String> {
    let mut a: Vec<String> = [
        "--threads",
        "1",
        "--algorithm",
        algorithm,
        "--rollouts-per-prompt",
        "2",
        "--set",
        "rollout.prompt_batch=8",
        "--set",
        "data.held_out_size=8",
        "--set",
        "train.keep_checkpoints=5",
        "--set",
        "train.dist_timeout_s=60",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(["--steps".into(), steps.to_string()]);
    a.extend(["--output".into(), output.display().to_string()]);
    a
}

struct Ran {
    ok: bool,
    stderr: String,
    stdout: String,
}

/// Starts `tbrm train args` as rank `rank` of `world` (no torchrun variables when world is 1).
fn spawn(
    rank: usize,
    world: usize,
    port: u16,
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tbrm"));
    cmd.arg("train").args(args).current_dir(workspace_root());
    for v in [
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TBRM_FAULT",
    ] {
        cmd.env_remove(v);
    }
    if world > 1 {
        cmd.env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string());
    }
    cmd.envs(env.iter().copied());
    let out = File::create(log.with_extension("out")).unwrap();
    let err = File::create(log.with_extension("err")).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap()
}

/// Waits for a child up to `deadline` (killing it after); returns its result and logs.
fn finish(mut child: Child, log: &Path, deadline: Instant) -> Ran {
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |ext: &str| fs::read_to_string(log.with_extension(ext)).unwrap_or_default();
    Ran {
        ok: status.is_some_and(|s| s.success()),
        stderr: read("err"),
        stdout: read("out"),
    }
}

/// Runs `world` ranks of `tbrm train` with per-rank `args` and extra environment; returns each
/// rank's result once all have ended (or `deadline` passed for a rank).
fn run_ranks(
    world: usize,
    args: impl Fn(usize) -> Vec<String>,
    env: &[(&str, &str)],
    logs: &Path,
    deadline: Duration,
) -> Vec<Ran> {
    let port = free_port();
    fs::create_dir_all(logs).unwrap();
    let start = Instant::now();
    let children: Vec<(Child, PathBuf)> = (0..world)
        .map(|r| {
            let log = logs.join(format!("rank{r}"));
            (spawn(r, world, port, &args(r), env, &log), log)
        })
        .collect();
    children
        .into_iter()
        .map(|(c, log)| finish(c, &log, start + deadline))
        .collect()
}

fn all_ok(ran: &[Ran]) {
    for (r, x) in ran.iter().enumerate() {
        assert!(
            x.ok,
            "rank {r} failed\nstdout:\n{}\nstderr:\n{}",
            x.stdout, x.stderr
        );
    }
}

fn train(world: usize, args: Vec<String>, logs: &Path) -> Vec<Ran> {
    let ran = run_ranks(world, |_| args.clone(), &[], logs, DEADLINE);
    all_ok(&ran);
    ran
}

fn tensors(path: &Path) -> Vec<(String, Tensor)> {
    let mut t =
        Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

/// Largest absolute difference between two safetensors files with the same tensors.
fn max_diff(a: &Path, b: &Path) -> f64 {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            (ta.to_kind(tch::Kind::Double) - tb.to_kind(tch::Kind::Double))
                .abs()
                .max()
                .double_value(&[])
        })
        .fold(0.0, f64::max)
}

fn model(run: &Path, step: u64) -> PathBuf {
    run.join(format!("checkpoints/step-{step}/model.safetensors"))
}

fn optimizer(run: &Path, step: u64) -> PathBuf {
    run.join(format!(
        "checkpoints/step-{step}/trainer_state/optimizer.safetensors"
    ))
}

/// The `optimizer moments ... X MiB` a rank reports at start-up.
fn moment_mib(stderr: &str) -> f64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("optimizer moments and master weights"))
        .unwrap_or_else(|| panic!("no optimizer state line in\n{stderr}"));
    let after = line.split("master weights ").nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

fn summary(run: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn two_ranks_train_as_one_process_and_zero1_as_plain_data_parallel() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| tmp.path().join(name);
    let with = |mut a: Vec<String>, kv: &[&str]| {
        for s in kv {
            a.extend(["--set".to_string(), s.to_string()]);
        }
        a
    };

    // One process, three steps; checkpoints after steps 2 and 3.
    let one = dir("one");
    train(
        1,
        with(base_args(&one, 3), &["train.save_every=2"]),
        &dir("logs-one"),
    );
    let moved = max_diff(
        &model(&one, 3),
        &workspace_root().join("assets/tiny-arith/model.safetensors"),
    );
    assert!(moved > 1e-5, "training did not move the weights ({moved})");

    // Two ranks, plain data parallelism: the same weights up to float summation order.
    let dp = dir("dp");
    let ran = train(
        2,
        with(base_args(&dp, 3), &["train.save_every=2"]),
        &dir("logs-dp"),
    );
    for step in [2, 3] {
        let d = max_diff(&model(&one, step), &model(&dp, step));
        assert!(
            d < 1e-5 && d < moved / 20.0,
            "step {step}: 2 ranks differ from 1 by {d} (moved {moved})"
        );
    }
    assert_eq!(summary(&dp)["world_size"], 2);
    assert_eq!(summary(&one)["world_size"], 1);
    // Rank 0 alone writes: one metrics line per step, with the global batch.
    let metrics = read_jsonl(&dp.join("metrics.jsonl"));
    assert_eq!(metrics.len(), 3);
    assert!(
        metrics
            .iter()
            .all(|m| m["trajectories"].as_u64().unwrap() > 8),
        "{metrics:?}"
    );
    assert!(ran[0].stdout.contains("held-out accuracy") && ran[1].stdout.is_empty());
    let plain_mib = moment_mib(&ran[1].stderr);

    // ZeRO-1 for two steps: the weights and the (gathered) optimizer state of plain data
    // parallelism, with half the optimizer state on each rank.
    let zero = dir("zero");
    let ran = train(
        2,
        with(base_args(&zero, 2), &["optim.zero1=true"]),
        &dir("logs-zero"),
    );
    assert!(max_diff(&model(&dp, 2), &model(&zero, 2)) < 1e-6);
    assert!(max_diff(&optimizer(&dp, 2), &optimizer(&zero, 2)) < 1e-6);
    for (r, x) in ran.iter().enumerate() {
        let ratio = moment_mib(&x.stderr) / plain_mib;
        assert!(
            (ratio - 0.5).abs() < 0.02,
            "rank {r}: ZeRO-1 state is {ratio} of plain"
        );
    }

    // Resume across settings: the ZeRO-1 checkpoint in one process, and a one-process
    // checkpoint in two ZeRO-1 ranks, both reach the one-process weights of step 3.
    train(
        1,
        vec![
            "--threads".into(),
            "1".into(),
            "--resume".into(),
            zero.display().to_string(),
            "--steps".into(),
            "3".into(),
        ],
        &dir("logs-zero-resume"),
    );
    let d = max_diff(&model(&one, 3), &model(&zero, 3));
    assert!(
        d < 1e-5,
        "ZeRO-1 checkpoint resumed in one process differs by {d}"
    );
    let half = dir("half");
    train(1, base_args(&half, 2), &dir("logs-half"));
    train(
        2,
        vec![
            "--threads".into(),
            "1".into(),
            "--resume".into(),
            half.display().to_string(),
            "--steps".into(),
            "3".into(),
        ],
        &dir("logs-half-resume"),
    );
    let d = max_diff(&model(&one, 3), &model(&half, 3));
    assert!(
        d < 1e-5,
        "one-process checkpoint resumed in two ZeRO-less ranks differs by {d}"
    );
    assert_eq!(summary(&half)["world_size"], 2);
}

#[test]
fn off_policy_sources_and_saved_rollouts_match_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| tmp.path().join(name);
    let sources = |out: &Path, offline: &Path| {
        let mut a = algo_args("tbrm", out, 3);
        for kv in [
            "sources.replay_capacity=64".to_string(),
            "sources.replay_fraction=0.25".into(),
            format!("sources.offline_file={}", offline.display()),
            "sources.offline_fraction=0.25".into(),
            "sources.async_staleness=1".into(),
            "train.save_rollouts=true".into(),
            "optim.zero1=true".into(),
        ] {
            a.extend(["--set".to_string(), kv]);
        }
        a
    };
    // An offline file from a first run's saved rollouts.
    let first = dir("first");
    let mut a = base_args(&first, 1);
    a.extend(["--set".into(), "train.save_rollouts=true".into()]);
    train(1, a, &dir("logs-first"));
    let offline = first.join("rollouts.jsonl");

    let one = dir("one");
    train(1, sources(&one, &offline), &dir("logs-one"));
    let two = dir("two");
    train(2, sources(&two, &offline), &dir("logs-two"));
    let moved = max_diff(
        &model(&one, 3),
        &workspace_root().join("assets/tiny-arith/model.safetensors"),
    );
    let d = max_diff(&model(&one, 3), &model(&two, 3));
    assert!(
        d < 1e-5 && d < moved / 20.0,
        "2 ranks differ from 1 by {d} (moved {moved})"
    );
    let (m1, m2) = (
        read_jsonl(&one.join("metrics.jsonl")),
        read_jsonl(&two.join("metrics.jsonl")),
    );
    for key in [
        "trajectories",
        "replay_trajectories",
        "offline_trajectories",
    ] {
        let col = |m: &[Value]| m.iter().map(|l| l[key].clone()).collect::<Vec<_>>();
        assert_eq!(col(&m1), col(&m2), "{key}");
    }
    assert!(m2
        .iter()
        .skip(1)
        .all(|l| l["replay_trajectories"].as_u64() > Some(0)));
    // rollouts.jsonl holds every rank's rollouts in one process's order (same tokens).
    let (r1, r2) = (
        read_jsonl(&one.join("rollouts.jsonl")),
        read_jsonl(&two.join("rollouts.jsonl")),
    );
    assert_eq!(r1.len(), r2.len());
    for (x, y) in r1.iter().zip(&r2) {
        assert_eq!(
            (&x["prompt_key"], &x["response_ids"]),
            (&y["prompt_key"], &y["response_ids"])
        );
    }
}

/// A complete checkpoint that a one-process `--resume` continues from.
fn assert_resumable(run: &Path, logs: &Path, steps: u64) {
    let latest = fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let ckpt = run.join("checkpoints").join(latest.trim());
    assert!(
        ckpt.join("COMPLETE").is_file(),
        "{} is not complete",
        ckpt.display()
    );
    train(
        1,
        vec![
            "--threads".into(),
            "1".into(),
            "--resume".into(),
            run.display().to_string(),
            "--steps".into(),
            steps.to_string(),
        ],
        logs,
    );
    assert_eq!(summary(run)["steps"], steps);
}

#[test]
fn a_rank_that_dies_stops_the_other_with_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut args = base_args(&run, 5);
    args.extend(["--set".into(), "train.save_every=1".into()]);
    let started = Instant::now();
    let ran = run_ranks(
        2,
        |_| args.clone(),
        &[("TBRM_FAULT", "1:2:exit")],
        &tmp.path().join("logs"),
        DEADLINE,
    );
    assert!(
        !ran[1].ok && ran[1].stderr.contains("exiting after step 2"),
        "{}",
        ran[1].stderr
    );
    assert!(
        !ran[0].ok,
        "rank 0 should fail when rank 1 dies:\n{}",
        ran[0].stderr
    );
    let err = &ran[0].stderr;
    assert!(
        err.contains("data parallelism") && err.contains("failed on rank 0"),
        "{err}"
    );
    assert!(err.contains("rank 1 failed, exited or hung"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(!run.join("summary.json").exists());
    assert_resumable(&run, &tmp.path().join("logs-resume"), 3);
}

#[test]
fn a_rank_that_hangs_stops_the_other_after_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let mut args = base_args(&run, 5);
    args.extend([
        "--set".into(),
        "train.save_every=1".into(),
        "--set".into(),
        "train.dist_timeout_s=8".into(),
    ]);
    let port = free_port();
    let logs = tmp.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let env = [("TBRM_FAULT", "1:2:hang")];
    let (l0, l1) = (logs.join("rank0"), logs.join("rank1"));
    let hung = spawn(1, 2, port, &args, &env, &l1);
    let rank0 = spawn(0, 2, port, &args, &env, &l0);
    let r0 = finish(rank0, &l0, Instant::now() + DEADLINE);
    // The hung rank never ends by itself.
    let r1 = finish(hung, &l1, Instant::now());
    assert!(r1.stderr.contains("hanging after step 2"), "{}", r1.stderr);
    assert!(!r0.ok, "rank 0 should fail when rank 1 hangs");
    assert!(
        r0.stderr.to_lowercase().contains("timed out")
            && r0.stderr.contains("rank 1 failed, exited or hung"),
        "{}",
        r0.stderr
    );
    assert_resumable(&run, &tmp.path().join("logs-resume"), 3);
}

#[test]
fn bad_launch_settings_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let args = base_args(&tmp.path().join("run"), 2);

    // A torchrun variable missing.
    let out = Command::new(env!("CARGO_BIN_EXE_tbrm"))
        .arg("train")
        .args(&args)
        .current_dir(workspace_root())
        .env_remove("RANK")
        .env_remove("MASTER_ADDR")
        .env("WORLD_SIZE", "2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("environment variable RANK"),
        "{err}"
    );

    // Fewer prompts per step than ranks (one mini-batch: GRPO's default 4 cannot be cut from
    // the 2 trajectories, which would be reported first).
    let mut few = base_args(&tmp.path().join("few"), 2);
    few.extend(["--set".into(), "rollout.prompt_batch=1".into()]);
    few.extend(["--set".into(), "algorithm.mini_batches=1".into()]);
    let ran = run_ranks(2, |_| few.clone(), &[], &logs.join("few"), DEADLINE);
    for x in &ran {
        assert!(
            !x.ok && x.stderr.contains("rollout.prompt_batch"),
            "{}",
            x.stderr
        );
    }

    // Ranks started with different settings.
    let out = tmp.path().join("mixed");
    let ran = run_ranks(
        2,
        |r| {
            let mut a = base_args(&out, 2);
            a.extend(["--seed".into(), r.to_string()]);
            a
        },
        &[],
        &logs.join("mixed"),
        DEADLINE,
    );
    for x in &ran {
        assert!(
            !x.ok && x.stderr.contains("other settings than rank 0") && x.stderr.contains("seed"),
            "{}",
            x.stderr
        );
    }
}
