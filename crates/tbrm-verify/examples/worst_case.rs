//! Per-case timing of the verifier: `cargo run --release -p tbrm-verify --example worst_case
//! -- IN.jsonl [RUNS]` runs every `{"gold", "pred" | "response"}` line RUNS times (default 5)
//! on this thread and reports the slowest case by its fastest run, plus the slowest single run
//! and percentiles. On Linux the clock is this thread's CPU time, so load from other processes
//! on a shared machine does not count; elsewhere it is wall time.

use std::time::Duration;

/// Thread CPU time on Linux (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)` from the C library,
/// declared here to avoid a dependency for one call).
#[cfg(target_os = "linux")]
fn now() -> Duration {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the call only writes into it.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime failed");
    Duration::new(ts.sec as u64, ts.nsec as u32)
}

#[cfg(not(target_os = "linux"))]
fn now() -> Duration {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: worst_case IN.jsonl [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(5);
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(2);
    });
    let mut cases = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| {
            eprintln!("{path}:{}: {e}", i + 1);
            std::process::exit(2);
        });
        let s = |k: &str| v[k].as_str().map(str::to_string);
        let (Some(gold), Some(pred)) = (s("gold"), s("pred").or_else(|| s("response"))) else {
            eprintln!("{path}:{}: needs `gold` and `pred` or `response`", i + 1);
            std::process::exit(2);
        };
        cases.push((i + 1, gold, pred));
    }
    // Warm-up: compiles the lazily built regexes outside the timed runs.
    tbrm_verify::verify("1", "1");
    let mut best: Vec<(Duration, usize)> = Vec::with_capacity(cases.len());
    let mut worst_single = (Duration::ZERO, 0);
    for (line, gold, pred) in &cases {
        let mut b = Duration::MAX;
        for _ in 0..runs {
            let t = now();
            std::hint::black_box(tbrm_verify::verify(gold, pred));
            let dt = now() - t;
            b = b.min(dt);
            if dt > worst_single.0 {
                worst_single = (dt, *line);
            }
        }
        best.push((b, *line));
    }
    best.sort();
    let pct = |p: f64| best[((best.len() - 1) as f64 * p) as usize].0;
    let (w, wl) = best[best.len() - 1];
    println!(
        "{} cases x {runs} runs: slowest case (best of {runs}) {:.3} ms (line {wl}); p50 {:.1} us, p99 {:.1} us; slowest single run {:.3} ms (line {})",
        best.len(),
        w.as_secs_f64() * 1e3,
        pct(0.5).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        worst_single.0.as_secs_f64() * 1e3,
        worst_single.1
    );
}
