#!/usr/bin/env bash
# TBRM n=1 vs GRPO n=4 vs PPO n=1 on the built-in arithmetic task: the default config
# (configs/default.toml: same warm start, steps, prompts per step, seed); `--algorithm` also
# applies each baseline's own settings from its [algorithm_defaults.*] table (lr, n, critic lr,
# epochs x mini-batches), as the paper ran its baselines. Prints one markdown table row per
# algorithm: held-out greedy accuracy before/after, seconds per step, wall time, peak RSS.
#
# Usage: scripts/bench_algorithms.sh [OUT_DIR] [extra `tbrm train` flags, e.g. --steps 40]
# Uses $TBRM_BIN, else target/release/tbrm, else target/debug/tbrm (the dev profile builds
# dependencies with opt-level 3 and libtorch does the arithmetic, so both are fast enough):
#   source scripts/env.sh && cargo build -p tbrm-cli
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/runs/bench-algorithms}"
shift || true
TBRM="${TBRM_BIN:-$ROOT/target/release/tbrm}"
[ -x "$TBRM" ] || TBRM="$ROOT/target/debug/tbrm"
THREADS="${THREADS:-2}"
[ -x "$TBRM" ] || { echo "no tbrm binary: run cargo build -p tbrm-cli" >&2; exit 1; }
mkdir -p "$OUT"
cd "$ROOT"

run() { # name, then flags
  local name="$1"; shift
  rm -rf "${OUT:?}/$name"
  /usr/bin/time -v -o "$OUT/$name.time" \
    "$TBRM" train --threads "$THREADS" --output "$OUT/$name" "$@" >"$OUT/$name.log" 2>&1
}

run tbrm-n1 --algorithm tbrm --rollouts-per-prompt 1 "$@"
run grpo-n4 --algorithm grpo --rollouts-per-prompt 4 "$@"
run ppo-n1 --algorithm ppo --rollouts-per-prompt 1 "$@"

echo "| algorithm | n | held-out acc. before | after | s/step | wall s | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|"
for name in tbrm-n1 grpo-n4 ppo-n1; do
  python3 - "$OUT/$name/summary.json" "$OUT/$name/metrics.jsonl" "$OUT/$name.time" "$name" <<'PY'
import json, re, statistics, sys
summary, metrics, timef, name = sys.argv[1:]
s = json.load(open(summary))
steps = [json.loads(l) for l in open(metrics) if l.strip()]
step_s = statistics.median(m["step_s"] for m in steps)
rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(timef).read()).group(1))
algo, n = name.split("-n")
pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"
print(f"| {algo.upper()} | {n} | {pct(s['eval_before'])} | {pct(s['eval_after'])} | {step_s:.2f} "
      f"| {s['wall_seconds']:.0f} | {rss_kb / 1024:.0f} |")
PY
done
