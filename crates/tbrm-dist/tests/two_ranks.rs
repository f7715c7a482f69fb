//! Two-process Gloo tests on this machine.
//!
//! Each multi-rank test re-executes this test binary twice (`current_exe`, filtered to the same
//! test with `--exact`), with `TBRM_DIST_TEST_CHILD` marking the child role and torchrun-style
//! `RANK`/`WORLD_SIZE`/`LOCAL_RANK`/`MASTER_ADDR`/`MASTER_PORT` on a free port, so the children
//! go through `ProcessGroup::from_env` exactly as a torchrun worker would. The parent only
//! checks that both children exit successfully within a deadline, and shows their output if not.

use std::fs::File;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tbrm_dist::{nccl_build_status, Backend, Options, ProcessGroup};
use tch::{Device, Kind, Tensor};

const CHILD: &str = "TBRM_DIST_TEST_CHILD";
const WORLD: usize = 2;
/// Generous bound on a whole two-process test: libtorch start-up plus rendezvous on a loaded
/// 2-core machine, plus the deliberate waits of the failure tests.
const CHILD_DEADLINE: Duration = Duration::from_secs(180);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// In a child: runs `body` with this rank. In the parent: launches the two ranks of `test`.
fn two_ranks(test: &str, body: impl FnOnce(usize)) {
    if is_child() {
        let rank = std::env::var("RANK").unwrap().parse().unwrap();
        body(rank);
        return;
    }
    let port = free_port().to_string();
    let exe = std::env::current_exe().unwrap();
    let logs = std::env::temp_dir();
    let mut children: Vec<(usize, Child, std::path::PathBuf)> = (0..WORLD)
        .map(|rank| {
            let log = logs.join(format!(
                "tbrm-dist-{}-{test}-rank{rank}.log",
                std::process::id()
            ));
            let out = File::create(&log).unwrap();
            let child = Command::new(&exe)
                .args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD, "1")
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", WORLD.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap();
            (rank, child, log)
        })
        .collect();
    let start = Instant::now();
    let mut failures = vec![];
    for (rank, child, log) in &mut children {
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if start.elapsed() > CHILD_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let output = std::fs::read_to_string(&*log).unwrap_or_default();
        let _ = std::fs::remove_file(&*log);
        println!("---- rank {rank} ({status:?}) ----\n{output}");
        if status.map(|s| s.success()) != Some(true) {
            failures.push(format!("rank {rank}: {status:?}"));
        }
    }
    assert!(failures.is_empty(), "child ranks failed: {failures:?}");
}

fn join(timeout: Duration) -> ProcessGroup {
    let pg = ProcessGroup::from_env(Backend::Gloo, timeout).unwrap();
    assert_eq!(pg.world_size(), WORLD);
    pg
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
}

fn check_collectives(pg: &ProcessGroup, kind: Kind) {
    let r = pg.rank() as f64;
    let opts = (kind, Device::Cpu);
    let arange = |n: i64| Tensor::arange(n, (Kind::Float, Device::Cpu)).to_kind(kind);

    // all_reduce_sum: (i + 10 r) summed over r = 0, 1 -> 2 i + 10.
    let t = arange(6) + 10.0 * r;
    pg.all_reduce_sum(&t).unwrap();
    assert_eq!(t.kind(), kind);
    assert_eq!(
        values(&t),
        (0..6).map(|i| 2.0 * i as f64 + 10.0).collect::<Vec<_>>()
    );

    // all_reduce_max: max over r of (i + 10 r) = i + 10.
    let t = arange(6) + 10.0 * r;
    pg.all_reduce_max(&t).unwrap();
    assert_eq!(
        values(&t),
        (0..6).map(|i| i as f64 + 10.0).collect::<Vec<_>>()
    );

    // broadcast from each root: everyone ends with root + 1.
    for root in 0..WORLD {
        let t = Tensor::full([2, 3], r + 1.0, opts);
        pg.broadcast(&t, root).unwrap();
        assert_eq!(
            values(&t),
            vec![root as f64 + 1.0; 6],
            "broadcast root {root}"
        );
    }

    // all_gather: rank q contributed a [2, 3] tensor of q + 0.5.
    let gathered = pg.all_gather(&Tensor::full([2, 3], r + 0.5, opts)).unwrap();
    assert_eq!(gathered.len(), WORLD);
    for (q, g) in gathered.iter().enumerate() {
        assert_eq!(g.size(), vec![2, 3]);
        assert_eq!(g.kind(), kind);
        assert_eq!(values(g), vec![q as f64 + 0.5; 6], "all_gather slot {q}");
    }

    // reduce_scatter_sum: input i + 100 r (8 elements), sum 2 i + 100, rank q keeps chunk q.
    let input = arange(8) + 100.0 * r;
    let output = Tensor::zeros([4], opts);
    pg.reduce_scatter_sum(&input, &output).unwrap();
    let q = pg.rank() as i64;
    let expect: Vec<f64> = (4 * q..4 * q + 4).map(|i| 2.0 * i as f64 + 100.0).collect();
    assert_eq!(values(&output), expect);

    pg.barrier().unwrap();
}

#[test]
fn collectives_f32_f64_bf16() {
    two_ranks("collectives_f32_f64_bf16", |rank| {
        let pg = join(Duration::from_secs(60));
        assert_eq!(pg.rank(), rank);
        for kind in [Kind::Float, Kind::Double, Kind::BFloat16] {
            check_collectives(&pg, kind);
            println!("rank {rank}: {kind:?} ok");
        }
        // Argument errors are caught before anything is sent and do not spoil the group.
        let err = pg
            .broadcast(&Tensor::zeros([1], (Kind::Float, Device::Cpu)), 2)
            .unwrap_err();
        assert!(err.to_string().contains("root 2 out of range"), "{err}");
        pg.barrier().unwrap();
    });
}

/// Rank 1 exits without a word after a barrier: rank 0's next collective must fail (Gloo sees
/// the closed connection) well within the timeout, and the group then refuses further work.
#[test]
fn peer_exit_is_an_error_not_a_hang() {
    two_ranks("peer_exit_is_an_error_not_a_hang", |rank| {
        let timeout = Duration::from_secs(8);
        let pg = join(timeout);
        pg.barrier().unwrap();
        if rank == 1 {
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_millis(500));
        let t = Tensor::ones([1024], (Kind::Float, Device::Cpu));
        let start = Instant::now();
        let err = pg.all_reduce_sum(&t).unwrap_err();
        let elapsed = start.elapsed();
        println!("rank 0 got after {elapsed:?}: {err}");
        assert_eq!(err.op(), Some("all_reduce_sum"));
        assert!(
            err.to_string().contains("all_reduce_sum failed on rank 0"),
            "{err}"
        );
        assert!(
            elapsed < timeout + Duration::from_secs(2),
            "took {elapsed:?}"
        );
        let again = pg.barrier().unwrap_err();
        assert!(
            again
                .to_string()
                .contains("unusable after an earlier failure"),
            "{again}"
        );
    });
}

/// Rank 1 stays alive but never joins the collective: rank 0 must get an error at about the
/// timeout, not block forever.
#[test]
fn silent_peer_times_out() {
    two_ranks("silent_peer_times_out", |rank| {
        let timeout = Duration::from_secs(3);
        let pg = join(timeout);
        pg.barrier().unwrap();
        if rank == 1 {
            std::thread::sleep(timeout * 3);
            std::process::exit(0);
        }
        let t = Tensor::ones([1024], (Kind::Float, Device::Cpu));
        let start = Instant::now();
        let err = pg.all_reduce_sum(&t).unwrap_err();
        let elapsed = start.elapsed();
        println!("rank 0 got after {elapsed:?}: {err}");
        assert!(
            err.to_string().contains("all_reduce_sum failed on rank 0"),
            "{err}"
        );
        assert!(
            elapsed >= timeout - Duration::from_millis(500),
            "too early: {elapsed:?}"
        );
        assert!(
            elapsed < timeout + Duration::from_secs(3),
            "took {elapsed:?}"
        );
    });
}

/// Rank 0 of a two-rank group whose peer never shows up: the rendezvous fails at the timeout.
#[test]
fn missing_peer_fails_rendezvous() {
    if is_child() {
        return;
    }
    let timeout = Duration::from_secs(2);
    let opts = Options {
        backend: Backend::Gloo,
        rank: 0,
        world_size: 2,
        local_rank: 0,
        master_addr: "127.0.0.1".into(),
        master_port: free_port(),
        timeout,
    };
    let start = Instant::now();
    let err = ProcessGroup::new(opts).unwrap_err();
    let elapsed = start.elapsed();
    println!("after {elapsed:?}: {err}");
    assert!(
        err.to_string()
            .starts_with("ProcessGroup::new failed on rank 0"),
        "{err}"
    );
    assert!(
        elapsed < timeout + Duration::from_secs(5),
        "took {elapsed:?}"
    );
}

/// NCCL either works (GPU build with a GPU) or fails with an error that says NCCL.
#[test]
fn nccl_is_available_or_explained() {
    if is_child() {
        return;
    }
    let opts = Options {
        backend: Backend::Nccl,
        rank: 0,
        world_size: 1,
        local_rank: 0,
        master_addr: "127.0.0.1".into(),
        master_port: free_port(),
        timeout: Duration::from_secs(10),
    };
    println!("NCCL build status: {:?}", nccl_build_status());
    match ProcessGroup::new(opts) {
        Ok(pg) => {
            let t = Tensor::ones([4], (Kind::Float, Device::Cuda(0)));
            pg.all_reduce_sum(&t).unwrap();
            assert_eq!(values(&t), vec![1.0; 4]);
        }
        Err(e) => {
            println!("{e}");
            assert!(e.to_string().contains("NCCL"), "{e}");
            assert!(nccl_build_status().is_err() || !tch::Cuda::is_available());
        }
    }
}
