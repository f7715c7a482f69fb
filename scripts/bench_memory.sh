#!/usr/bin/env bash
# Side-by-side memory benchmark of one TBRM training step (issue "Scale I"): tbrm vs transformers'
# PyTorch eager, on Qwen2.5-0.5B widths (vocab 151,936, hidden 896, 14/2 heads, MLP 4,864, tied
# embeddings), batch 2 x 2048 tokens, bf16, 2 threads, in ONE run. For each shape (layer count):
#
#   1. tbrm, default settings (per-layer recomputation on):
#        $TBRM_BIN bench train-step --loss tbrm --preset qwen2.5-0.5b --layers L --batch 2 \
#          --seq-len 2048 --dtype bf16 --threads 2 --warmup 1 --repeats 1
#   2. the same with --recompute off (the cost of recomputation in step time)
#   3. python scripts/bench_train_step.py --loss tbrm --preset qwen2.5-0.5b --layers L --batch 2 \
#          --seq 2048 --dtype bf16 --threads 2 --warmup 1 --steps 1
#   4. the same with --grad-checkpointing
#
# Every configuration runs in its own process (peak RSS is per process). Each prints one JSON line;
# this script adds `run` (tbrm, tbrm-recompute-off, pytorch-eager, pytorch-eager-gc), `layers`,
# `exit_code`, `wall_seconds`, `command` and, where /usr/bin/time exists, `time_max_rss_gb` (the
# same ru_maxrss measured from outside, identical for both sides) and appends the line to the
# results file. A run that fails is recorded with its exit code and the others still run. At the
# end a markdown table is printed (ratios are to PyTorch eager without checkpointing, same shape).
#
# Usage:
#   scripts/bench_memory.sh [RESULTS.jsonl] [--layers-list "4 24"]
#   LAYERS_LIST="4" scripts/bench_memory.sh /tmp/bench-memory.jsonl
# Environment: TBRM_BIN (default target/release/tbrm), PYTHON (default .venv/bin/python),
#   LAYERS_LIST (default "4 24"), THREADS (2), BATCH (2), SEQ_LEN (2048), DTYPE (bf16),
#   PRESET (qwen2.5-0.5b), SKIP_TBRM=1 / SKIP_PYTORCH=1 (run only one side),
#   EXTRA_TBRM_ARGS / EXTRA_PY_ARGS (appended to every tbrm / python command, e.g. for a quick
#   smoke test on a small shape: EXTRA_PY_ARGS="--hidden 128 --vocab 4096").
# The results file is appended to, not truncated: remove it first for a fresh table (the table is
# built from the lines of this run only).
#
# Times: the 24-layer PyTorch step takes minutes on 2 CPU threads; the whole run on this 2-core
# machine is long. Nothing else should run meanwhile (timings and RSS of concurrent builds mix).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RESULTS=""
LAYERS_LIST="${LAYERS_LIST:-4 24}"
while [ $# -gt 0 ]; do
  case "$1" in
    --layers-list) LAYERS_LIST="${2:?--layers-list needs a value}"; shift 2 ;;
    --layers-list=*) LAYERS_LIST="${1#*=}"; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    -*) echo "bench_memory: unknown option $1" >&2; exit 2 ;;
    *) [ -z "$RESULTS" ] || { echo "bench_memory: one results path only" >&2; exit 2; }
       RESULTS="$1"; shift ;;
  esac
done
RESULTS="${RESULTS:-bench-memory.jsonl}"
LAYERS_LIST="${LAYERS_LIST//,/ }"
TBRM_BIN="${TBRM_BIN:-$ROOT/target/release/tbrm}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
THREADS="${THREADS:-2}"
BATCH="${BATCH:-2}"
SEQ_LEN="${SEQ_LEN:-2048}"
DTYPE="${DTYPE:-bf16}"
PRESET="${PRESET:-qwen2.5-0.5b}"
# shellcheck disable=SC2206  # word splitting of the extra arguments is intended
EXTRA_TBRM=(${EXTRA_TBRM_ARGS:-})
# shellcheck disable=SC2206
EXTRA_PY=(${EXTRA_PY_ARGS:-})

if [ -f "$ROOT/scripts/env.sh" ]; then
  # shellcheck source=scripts/env.sh disable=SC1091
  source "$ROOT/scripts/env.sh"
fi
TIME_BIN=""
[ -x /usr/bin/time ] && TIME_BIN=/usr/bin/time

mkdir -p "$(dirname "$RESULTS")"
LOG_DIR="${RESULTS%.jsonl}.logs"
mkdir -p "$LOG_DIR"
RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)-$$"
echo "bench_memory: results -> $RESULTS (run $RUN_ID), logs -> $LOG_DIR/, layers: $LAYERS_LIST" >&2

# run LABEL LAYERS CMD...: runs one configuration, appends one JSON line to $RESULTS.
run() {
  local label="$1" layers="$2"; shift 2
  local base="$LOG_DIR/$RUN_ID-$label-L$layers"
  local start end rc
  echo "bench_memory: [$label, $layers layers] $*" >&2
  start=$(date +%s.%N)
  if [ -n "$TIME_BIN" ]; then
    "$TIME_BIN" -f '%M' -o "$base.maxrss" "$@" >"$base.out" 2>"$base.err"
  else
    "$@" >"$base.out" 2>"$base.err"
  fi
  rc=$?
  end=$(date +%s.%N)
  [ "$rc" -eq 0 ] || { echo "bench_memory: [$label, $layers layers] exit code $rc; last lines of $base.err:" >&2; tail -n 5 "$base.err" >&2; }
  python3 - "$RESULTS" "$base" "$label" "$layers" "$rc" "$start" "$end" "$RUN_ID" "$@" <<'EOF'
import json, os, sys
results, base, label, layers, rc, start, end, run_id, *cmd = sys.argv[1:]
rec = {}
try:
    lines = [l for l in open(base + ".out") if l.lstrip().startswith("{")]
    if lines:
        rec = json.loads(lines[-1])
except (OSError, ValueError) as e:
    rec = {"parse_error": str(e)}
rec.update({
    "run": label, "layers": int(layers), "exit_code": int(rc), "run_id": run_id,
    "wall_seconds": round(float(end) - float(start), 1), "command": " ".join(cmd),
})
try:
    kib = int(open(base + ".maxrss").read().split()[-1])
    rec["time_max_rss_gb"] = round(kib * 1024 / 1e9, 3)
except (OSError, ValueError, IndexError):
    pass
with open(results, "a") as f:
    f.write(json.dumps(rec) + "\n")
print(f"bench_memory:   peak_rss_gb={rec.get('peak_rss_gb')} "
      f"(/usr/bin/time: {rec.get('time_max_rss_gb')}) median_seconds={rec.get('median_seconds')} "
      f"tokens_per_second={rec.get('tokens_per_second')}", file=sys.stderr)
EOF
}

for L in $LAYERS_LIST; do
  if [ -z "${SKIP_TBRM:-}" ]; then
    tbrm_cmd=("$TBRM_BIN" bench train-step --loss tbrm --preset "$PRESET" --layers "$L"
      --batch "$BATCH" --seq-len "$SEQ_LEN" --dtype "$DTYPE" --threads "$THREADS"
      --warmup 1 --repeats 1 "${EXTRA_TBRM[@]}")
    run tbrm "$L" "${tbrm_cmd[@]}"
    run tbrm-recompute-off "$L" "${tbrm_cmd[@]}" --recompute off
  fi
  if [ -z "${SKIP_PYTORCH:-}" ]; then
    py_cmd=("$PYTHON" "$ROOT/scripts/bench_train_step.py" --loss tbrm --preset "$PRESET"
      --layers "$L" --batch "$BATCH" --seq "$SEQ_LEN" --dtype "$DTYPE" --threads "$THREADS"
      --warmup 1 --steps 1 "${EXTRA_PY[@]}")
    run pytorch-eager "$L" "${py_cmd[@]}"
    run pytorch-eager-gc "$L" "${py_cmd[@]}" --grad-checkpointing
  fi
done

python3 - "$RESULTS" "$RUN_ID" <<'EOF'
import json, sys
results, run_id = sys.argv[1:]
recs = [r for r in map(json.loads, open(results)) if r.get("run_id") == run_id]
names = {"tbrm": "tbrm", "tbrm-recompute-off": "tbrm --recompute off",
         "pytorch-eager": "PyTorch eager", "pytorch-eager-gc": "PyTorch eager + grad checkpointing"}
def fmt(x, spec):
    return format(x, spec) if isinstance(x, (int, float)) else "-"
print()
print("| impl | layers | peak RSS GB | ratio to PyTorch eager | median s/step | tokens/s |")
print("|---|---:|---:|---:|---:|---:|")
for layers in sorted({r["layers"] for r in recs}):
    rows = [r for r in recs if r["layers"] == layers]
    eager = next((r.get("peak_rss_gb") for r in rows if r["run"] == "pytorch-eager"
                  and r["exit_code"] == 0), None)
    for r in rows:
        rss = r.get("peak_rss_gb") if r["exit_code"] == 0 else None
        ratio = rss / eager if rss and eager else None
        name = names.get(r["run"], r["run"])
        if r["exit_code"] != 0:
            name += f" (failed, exit {r['exit_code']})"
        print(f"| {name} | {layers} | {fmt(rss, '.2f')} | {fmt(ratio, '.2f') + 'x' if ratio else '-'} | "
              f"{fmt(r.get('median_seconds'), '.1f')} | {fmt(r.get('tokens_per_second'), '.0f')} |")
print()
for layers in sorted({r["layers"] for r in recs}):
    by = {r["run"]: r for r in recs if r["layers"] == layers and r["exit_code"] == 0}
    on, off = by.get("tbrm"), by.get("tbrm-recompute-off")
    if on and off and on.get("median_seconds") and off.get("median_seconds"):
        print(f"- {layers} layers: recomputation costs {on['median_seconds'] / off['median_seconds']:.2f}x "
              f"step time (tbrm {on['median_seconds']:.1f} s vs --recompute off "
              f"{off['median_seconds']:.1f} s; peak RSS {on.get('peak_rss_gb')} vs "
              f"{off.get('peak_rss_gb')} GB)")
    gaps = [(n, r.get("peak_rss_gb"), r.get("time_max_rss_gb")) for n, r in by.items()
            if r.get("time_max_rss_gb") is not None and r.get("peak_rss_gb") is not None
            and abs(r["time_max_rss_gb"] - r["peak_rss_gb"]) > 0.05]
    for n, own, ext in gaps:
        print(f"- {layers} layers, {n}: self-reported peak_rss_gb {own} differs from "
              f"/usr/bin/time's {ext} GB (the latter also covers start-up and exit; a large "
              f"gap means the two sides measure differently)")
print()
print(f"(results: {results}, run {run_id}; GB = 1e9 bytes)")
EOF
