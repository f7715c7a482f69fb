//! All-reduce bandwidth through tbrm-dist.
//!
//! `allreduce_bw [MiB] [iters] [gloo|nccl]` (defaults: 64 MiB of f32, 10 timed iterations,
//! gloo). Under torchrun (RANK set) each worker joins from the environment; run directly, it
//! starts two copies of itself on 127.0.0.1 as ranks 0 and 1. Rank 0 prints the algorithm
//! bandwidth (bytes / time) and the bus bandwidth (x 2 (n - 1) / n, the traffic a ring
//! all-reduce puts on each link), the figures nccl-tests report.

use std::process::Command;
use std::time::{Duration, Instant};

use tbrm_dist::{Backend, ProcessGroup};
use tch::{Device, Kind, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mib: usize = args.first().map_or(64, |s| s.parse().expect("MiB"));
    let iters: usize = args.get(1).map_or(10, |s| s.parse().expect("iters"));
    let backend = match args.get(2).map(String::as_str) {
        None | Some("gloo") => Backend::Gloo,
        Some("nccl") => Backend::Nccl,
        Some(other) => panic!("unknown backend {other}"),
    };
    if std::env::var_os("RANK").is_none() {
        launch_two();
        return;
    }

    let pg = ProcessGroup::from_env(backend, Duration::from_secs(120)).expect("join");
    let device = match backend {
        Backend::Gloo => Device::Cpu,
        Backend::Nccl => Device::Cuda(pg.local_rank()),
    };
    let numel = (mib << 20) / 4;
    let t = Tensor::ones([numel as i64], (Kind::Float, device));
    for _ in 0..2 {
        pg.all_reduce_sum(&t).expect("warm-up");
    }
    pg.barrier().expect("barrier");
    let start = Instant::now();
    for _ in 0..iters {
        pg.all_reduce_sum(&t).expect("all_reduce");
    }
    if device != Device::Cpu {
        tch::Cuda::synchronize(pg.local_rank() as i64);
    }
    let secs = start.elapsed().as_secs_f64() / iters as f64;
    // Ones summed over n ranks (2 + iters) times: n^(2 + iters) everywhere.
    let n = pg.world_size() as f64;
    let expect = n.powi(2 + iters as i32);
    let got = t.get(0).double_value(&[]);
    assert_eq!(got, expect, "wrong all-reduce result");
    if pg.rank() == 0 {
        let bytes = (numel * 4) as f64;
        let algbw = bytes / secs / 1e9;
        let busbw = algbw * 2.0 * (n - 1.0) / n;
        println!(
            "{backend:?} all_reduce_sum f32 {mib} MiB x {iters}, world {}: {:.1} ms/iter, \
             algbw {algbw:.2} GB/s, busbw {busbw:.2} GB/s",
            pg.world_size(),
            secs * 1e3
        );
    }
}

/// Runs this example as ranks 0 and 1 on a free local port.
fn launch_two() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let exe = std::env::current_exe().expect("current_exe");
    let mut children: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(&exe)
                .args(std::env::args().skip(1))
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("LOCAL_RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .spawn()
                .expect("spawn rank")
        })
        .collect();
    // Wait for both (no short-circuit), then fail if either did.
    let ok: Vec<bool> = children
        .iter_mut()
        .map(|c| c.wait().map(|s| s.success()).unwrap_or(false))
        .collect();
    std::process::exit(if ok.iter().all(|&o| o) { 0 } else { 1 });
}
