#!/usr/bin/env bash
# GPU check of a tbrm binary on a machine with an NVIDIA GPU, against that machine's own torch
# (issue "Scale I"). Everything goes under ${OUT:-gpu-check-out}; one summary is printed at the end
# (and kept in $OUT/summary.txt, $OUT/summary.json).
#
#   scripts/gpu-check.sh [TBRM_BIN]          # or TBRM_BIN=... scripts/gpu-check.sh
#
# Steps (each guarded: one failing does not stop the others; exit codes in $OUT/status.tsv):
#   1. nvidia-smi, torch version, `$TBRM_BIN --version`, ldd of the binary.
#   2. log-prob parity on the test fixtures (crates/tbrm-model/tests/fixtures/*): `tbrm score` on
#      cpu/f32 (reference), on cuda/f32 (max abs diff <= PARITY_F32_MAX, default 2e-3) and on
#      cuda/bf16 (max abs diff <= max(PARITY_BF16_MAX = 0.1, PARITY_BF16_FLOOR_FACTOR = 2 x the
#      cpu/bf16-vs-cpu/f32 diff of the same fixture: bf16 rounding alone exceeds 0.1 on fixtures
#      with large logits); PASS/FAIL per fixture and dtype, the floor reported alongside.
#   3. TBRM train step (`tbrm bench train-step --loss tbrm`) on Qwen2.5-0.5B and Qwen2.5-Math-1.5B
#      shapes, batch 8 x 2048 tokens, bf16 (0.5B also with --recompute off): tokens/s, MFU (against
#      --peak-tflops, PEAK_TFLOPS default 989 = H100/H200 dense bf16), peak allocated GB.
#   4. generation tokens/s at batch 128 (prompt 256, 256 new tokens) on a random 0.5B-shaped model
#      folder (`bench train-step --save-model DIR`, else written by a torch-only python snippet).
#   5. the attention kernel: `sdp_kernel*` fields printed by `tbrm bench train-step`, and what this
#      torch's `_fused_sdp_choice` picks for the training layout (causal, no mask) and decode.
#   6. symbols: every libtorch/c10 symbol the binary imports must be exported by this torch.
#
# Environment: TBRM_BIN (default target/release/tbrm), OUT (gpu-check-out), PYTHON (python3, the
# one whose torch is used), PEAK_TFLOPS (989), STEP_TIMEOUT (seconds per command, 300),
# FIXTURES (crates/tbrm-model/tests/fixtures), TOKENIZER_DIR (assets/tiny-arith: tokenizer files
# for the generated model folder).
# GPU_CHECK_SKIP: groups to leave out, e.g. "parity generate" (groups: versions parity train
# generate sdp symbols), to fit a device-time budget or rerun only what failed.
# Budget: on an H100/H200 the whole check is expected to take a few minutes (mostly process and
# CUDA start-up); a per-command limit of the machine (e.g. 10 minutes) is the thing to watch.
# GPU_CHECK_DEVICE=cpu: smoke test without a GPU: cuda -> cpu and tiny shapes (2 layers, 128
# tokens, generation batch 4); its numbers mean nothing, only that the script works end to end.
# No transformers needed on the GPU machine: only its torch (and python3's standard library).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TBRM_BIN="${1:-${TBRM_BIN:-$ROOT/target/release/tbrm}}"
OUT="${OUT:-gpu-check-out}"
PY="${PYTHON:-python3}"
PEAK_TFLOPS="${PEAK_TFLOPS:-989}"
STEP_TIMEOUT="${STEP_TIMEOUT:-300}"
SKIP=" ${GPU_CHECK_SKIP:-} "
want() { [[ "$SKIP" != *" $1 "* ]]; }
FIXTURES="${FIXTURES:-$ROOT/crates/tbrm-model/tests/fixtures}"
TOKENIZER_DIR="${TOKENIZER_DIR:-$ROOT/assets/tiny-arith}"
PARITY_F32_MAX="${PARITY_F32_MAX:-2e-3}"
PARITY_BF16_MAX="${PARITY_BF16_MAX:-0.1}"
PARITY_BF16_FLOOR_FACTOR="${PARITY_BF16_FLOOR_FACTOR:-2}"
DEV="${GPU_CHECK_DEVICE:-cuda}"

if [ "$DEV" = cpu ]; then
  SMOKE=1
  TRAIN_SHAPE=(--layers 2 --batch 1 --seq-len 128)
  GEN_ARGS=(--batch 4 --prompt-len 16 --new-tokens 8 --warmup 0 --repeats 1)
  REPEATS=(--warmup 0 --repeats 1)
else
  SMOKE=0
  TRAIN_SHAPE=(--batch 8 --seq-len 2048)
  GEN_ARGS=(--batch 128 --prompt-len 256 --new-tokens 256 --warmup 1 --repeats 3)
  REPEATS=(--warmup 1 --repeats 3)
fi

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if [ -d "$(dirname "$TBRM_BIN")" ]; then
  TBRM_BIN="$(cd "$(dirname "$TBRM_BIN")" && pwd)/$(basename "$TBRM_BIN")"
fi
STATUS="$OUT/status.tsv"
: >"$STATUS"
echo "gpu-check: tbrm=$TBRM_BIN out=$OUT device=$DEV smoke=$SMOKE" >&2

TORCH_DIR="$("$PY" -c 'import torch,os;print(os.path.dirname(torch.__file__))' 2>"$OUT/torch-import.err")"
if [ -n "$TORCH_DIR" ] && [ -d "$TORCH_DIR/lib" ]; then
  TORCH_LIB="$TORCH_DIR/lib"
  export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  TORCH_LIB=""
  echo "gpu-check: $PY cannot import torch (see $OUT/torch-import.err); steps needing it fail" >&2
fi

# step NAME CMD...: runs CMD with stdout/stderr in $OUT/NAME.{out,err} under a timeout and
# records NAME, exit code and seconds in $STATUS. Never fails the script.
step() {
  local name="$1"; shift
  local start rc
  start=$(date +%s)
  echo "gpu-check: [$name] $*" >&2
  printf '%s\n' "$*" >"$OUT/$name.cmd"
  if declare -F "$1" >/dev/null; then
    # A shell function of this script (timeout cannot run those): in a subshell, no time limit.
    ("$@") >"$OUT/$name.out" 2>"$OUT/$name.err"
  else
    timeout "$STEP_TIMEOUT" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
  fi
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" >>"$STATUS"
  if [ "$rc" -ne 0 ]; then
    echo "gpu-check: [$name] exit code $rc (last lines of $OUT/$name.err):" >&2
    tail -n 5 "$OUT/$name.err" >&2
  fi
  return 0
}

# ---------------------------------------------------------------- 1. machine and versions
if want versions; then
  step nvidia-smi nvidia-smi
  step nvidia-smi-query nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv
  step torch-version "$PY" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
  step tbrm-version "$TBRM_BIN" --version
  step ldd ldd "$TBRM_BIN"
fi

# ---------------------------------------------------------------- 2. log-prob parity
# Pairs: every prompt of a fixture's expected.json (token ids, within its vocab) split in half
# into prompt and response ids.
make_pairs() {
  "$PY" - "$1/expected.json" "$2" <<'EOF'
import json, sys
exp = json.load(open(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    for i, ids in enumerate(exp["prompts"]):
        cut = max(1, len(ids) // 2)
        if cut >= len(ids):
            continue
        f.write(json.dumps({"id": i, "prompt_ids": ids[:cut], "response_ids": ids[cut:]}) + "\n")
EOF
}
compare_scores() { # REF OTHER THRESHOLD LABEL -> one JSON line on stdout
  "$PY" - "$@" <<'EOF'
import json, sys
ref_path, other_path, threshold, label = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
limit = None if threshold == float("inf") else threshold
ref = [json.loads(l) for l in open(ref_path) if l.strip()]
oth = [json.loads(l) for l in open(other_path) if l.strip()]
assert len(ref) == len(oth) and ref, f"{len(ref)} vs {len(oth)} lines"
diffs, first = [], []
for a, b in zip(ref, oth):
    assert len(a["token_logprobs"]) == len(b["token_logprobs"])
    diffs += [abs(x - y) for x, y in zip(a["token_logprobs"], b["token_logprobs"])]
    first.append(abs(a["first_logit"] - b["first_logit"]))
scale = max(abs(x) for a in ref for x in a["token_logprobs"])
out = {"check": "parity", "case": label, "tokens": len(diffs),
       "max_abs_diff": max(diffs), "mean_abs_diff": sum(diffs) / len(diffs),
       "first_logit_max_abs_diff": max(first), "max_abs_logprob": scale,
       "threshold": limit, "pass": max(diffs) <= threshold}
print(json.dumps(out))
print(f"{label}: max |diff| {out['max_abs_diff']:.3g}, mean {out['mean_abs_diff']:.3g} "
      f"over {len(diffs)} tokens (|logprob| up to {scale:.3g}): "
      + (f"{'PASS' if out['pass'] else 'FAIL'} (threshold {limit})" if limit is not None else "info"),
      file=sys.stderr)
sys.exit(0 if out["pass"] else 1)
EOF
}
for fx in "$FIXTURES"/*/; do
  want parity || break
  fx="${fx%/}"
  name="$(basename "$fx")"
  if [ ! -f "$fx/config.json" ] || [ ! -f "$fx/expected.json" ]; then continue; fi
  pairs="$OUT/parity-$name-pairs.jsonl"
  ref="$OUT/parity-$name-ref-cpu-f32.jsonl"
  floor="$OUT/parity-$name-floor-cpu-bf16.jsonl"
  step "parity-$name-pairs" make_pairs "$fx" "$pairs"
  step "parity-$name-ref-cpu-f32" "$TBRM_BIN" score --model "$fx" --input "$pairs" \
    --output "$ref" --device cpu --dtype f32
  # The bf16 noise floor: the same model rounded to bf16 on the CPU. The random fixtures have
  # large logits (|log-prob| up to ~40), where bf16 alone moves log-probs by more than 0.1
  # (transformers on the CPU, bf16 vs f32, qwen2 fixture: max 0.69), so the bf16 threshold is
  # max(PARITY_BF16_MAX, PARITY_BF16_FLOOR_FACTOR x this floor).
  step "parity-$name-floor-cpu-bf16" "$TBRM_BIN" score --model "$fx" --input "$pairs" \
    --output "$floor" --device cpu --dtype bf16
  step "parity-$name-compare-floor" compare_scores "$ref" "$floor" inf \
    "$name cpu/bf16 vs cpu/f32 (bf16 noise floor, no threshold)"
  thr_bf16="$("$PY" - "$OUT/parity-$name-compare-floor.out" "$PARITY_BF16_MAX" \
    "$PARITY_BF16_FLOOR_FACTOR" <<'EOF2'
import json, sys
thr = float(sys.argv[2])
try:
    floor = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["max_abs_diff"]
    thr = max(thr, float(sys.argv[3]) * floor)
except (OSError, ValueError, IndexError, KeyError):
    pass
print(f"{thr:.6g}")
EOF2
)"
  for dt in f32 bf16; do
    thr="$PARITY_F32_MAX"; [ "$dt" = bf16 ] && thr="$thr_bf16"
    step "parity-$name-$DEV-$dt" "$TBRM_BIN" score --model "$fx" --input "$pairs" \
      --output "$OUT/parity-$name-$DEV-$dt.jsonl" --device "$DEV" --dtype "$dt"
    step "parity-$name-compare-$dt" compare_scores "$ref" \
      "$OUT/parity-$name-$DEV-$dt.jsonl" "$thr" "$name $DEV/$dt vs cpu/f32"
  done
done

# ---------------------------------------------------------------- 3. TBRM train step
train_step() { # NAME PRESET EXTRA...
  local name="$1" preset="$2"; shift 2
  step "$name" "$TBRM_BIN" bench train-step --loss tbrm --preset "$preset" "${TRAIN_SHAPE[@]}" \
    --device "$DEV" --dtype bf16 "${REPEATS[@]}" --peak-tflops "$PEAK_TFLOPS" "$@"
}
if want train; then
  train_step train-0.5b qwen2.5-0.5b
  train_step train-0.5b-recompute-off qwen2.5-0.5b --recompute off
  train_step train-1.5b qwen2.5-math-1.5b
fi

# ---------------------------------------------------------------- 4. generation at batch 128
if want generate; then
MODEL_DIR="$OUT/model-0.5b"
rm -rf "$MODEL_DIR"
step gen-save-model "$TBRM_BIN" bench train-step --loss tbrm --preset qwen2.5-0.5b \
  --batch 1 --seq-len 64 --device "$DEV" --dtype bf16 --warmup 0 --repeats 1 \
  --save-model "$MODEL_DIR"
if [ ! -f "$MODEL_DIR/config.json" ]; then
  # Fallback with this machine's torch only (no transformers, no safetensors package): a random
  # bf16 Qwen2.5-0.5B-shaped folder; safetensors written by hand (8-byte header size, JSON, data).
  write_random_model() {
    "$PY" - "$1" <<'EOF'
import ctypes, json, os, sys
import torch
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
V, H, I, L, NH, KV = 151936, 896, 4864, 24, 14, 2
HD = H // NH
cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": V,
       "hidden_size": H, "intermediate_size": I, "num_hidden_layers": L,
       "num_attention_heads": NH, "num_key_value_heads": KV, "max_position_embeddings": 32768,
       "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True,
       "hidden_act": "silu", "initializer_range": 0.02, "torch_dtype": "bfloat16",
       "eos_token_id": 0, "pad_token_id": 1}
json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
g = torch.Generator().manual_seed(0)
def w(*shape):
    return (torch.randn(*shape, generator=g) * 0.02).to(torch.bfloat16)
tensors = {"model.embed_tokens.weight": w(V, H), "model.norm.weight": torch.ones(H, dtype=torch.bfloat16)}
for i in range(L):
    p = f"model.layers.{i}."
    tensors.update({
        p + "self_attn.q_proj.weight": w(NH * HD, H), p + "self_attn.q_proj.bias": w(NH * HD),
        p + "self_attn.k_proj.weight": w(KV * HD, H), p + "self_attn.k_proj.bias": w(KV * HD),
        p + "self_attn.v_proj.weight": w(KV * HD, H), p + "self_attn.v_proj.bias": w(KV * HD),
        p + "self_attn.o_proj.weight": w(H, NH * HD),
        p + "mlp.gate_proj.weight": w(I, H), p + "mlp.up_proj.weight": w(I, H),
        p + "mlp.down_proj.weight": w(H, I),
        p + "input_layernorm.weight": torch.ones(H, dtype=torch.bfloat16),
        p + "post_attention_layernorm.weight": torch.ones(H, dtype=torch.bfloat16),
    })
header, offset = {}, 0
for name, t in tensors.items():
    n = t.numel() * t.element_size()
    header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [offset, offset + n]}
    offset += n
hjson = json.dumps(header).encode()
hjson += b" " * (-len(hjson) % 8)
with open(os.path.join(out, "model.safetensors"), "wb") as f:
    f.write(len(hjson).to_bytes(8, "little"))
    f.write(hjson)
    for t in tensors.values():
        t = t.contiguous()
        f.write(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()))
print(f"wrote {out}: {sum(t.numel() for t in tensors.values())} params")
EOF
  }
  step gen-write-model write_random_model "$MODEL_DIR"
fi
if [ -d "$MODEL_DIR" ] && [ ! -f "$MODEL_DIR/tokenizer.json" ]; then
  # Any tokenizer the model's vocabulary covers: the benchmark prompts are token ids.
  for f in tokenizer.json tokenizer_config.json; do
    [ -f "$TOKENIZER_DIR/$f" ] && cp "$TOKENIZER_DIR/$f" "$MODEL_DIR/"
  done
fi
step generate "$TBRM_BIN" bench generate --model "$MODEL_DIR" "${GEN_ARGS[@]}" \
  --device "$DEV" --dtype bf16
# The rollout engine on an RL-shaped workload: 64 DAPO prompts x 4 rollouts, up to 512 new
# tokens (a random model rarely samples EOS, so most rows run to the limit).
ROLLOUT_PROMPTS="${ROLLOUT_PROMPTS:-$ROOT/shared/data/dapo17k.jsonl}"
[ -f "$ROLLOUT_PROMPTS" ] || ROLLOUT_PROMPTS="$ROOT/../shared/data/dapo17k.jsonl"
if [ -f "$ROLLOUT_PROMPTS" ]; then
  step rollout "$TBRM_BIN" bench rollout --model "$MODEL_DIR" --prompts "$ROLLOUT_PROMPTS" \
    --limit 64 --rollouts-per-prompt 4 --max-new-tokens 512 --device "$DEV" --dtype bf16
fi
fi

# ---------------------------------------------------------------- 5. attention kernel (torch's view)
want sdp && step sdp-choice "$PY" - "$DEV" <<'EOF'
import json, sys
import torch
dev = sys.argv[1]
names = {-1: "error", 0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}
res = {"torch": torch.__version__}
def choice(label, q, k, v, **kw):
    try:
        res[label] = names.get(int(torch._fused_sdp_choice(q, k, v, **kw)), "?")
    except Exception as e:  # noqa: BLE001 - report whatever this torch says
        res[label] = f"error: {e}"
small = dev == "cpu"
B, NH, KV, HD = (1, 14, 2, 64) if small else (8, 12, 2, 128)
T = 128 if small else 2048
mk = lambda b, h, t: torch.randn(b, h, t, HD, device=dev, dtype=torch.bfloat16)
q, k = mk(B, NH, T), mk(B, KV, T)
choice("train_causal_gqa", q, k, k, is_causal=True, enable_gqa=True)
kr = k.repeat_interleave(NH // KV, dim=1)
choice("train_causal_repeated_kv", q, kr, kr, is_causal=True)
mask = torch.ones(B, 1, T, T, device=dev, dtype=torch.bool).tril()
choice("train_bool_mask", q, kr, kr, attn_mask=mask)
R, S = (4, 40) if small else (128, 2304)
qd, kd = mk(R, NH, 1), mk(R, NH, S)
choice("decode_no_mask", qd, kd, kd)
choice("decode_bool_mask", qd, kd, kd, attn_mask=torch.ones(R, 1, 1, S, device=dev, dtype=torch.bool))
print(json.dumps(res))
EOF

# ---------------------------------------------------------------- 6. symbols vs this libtorch
check_symbols() {
  local bin="$1" lib="$2"
  [ -n "$lib" ] || { echo "no torch lib directory" >&2; return 1; }
  nm -D "$bin" >/dev/null || { echo "nm cannot read the dynamic symbols of $bin" >&2; return 1; }
  # Strong undefined symbols only (weak ones, "w"/"v", need not resolve).
  nm -D --undefined-only "$bin" | awk '$1 == "U" {print $2}' | sed 's/@.*//' | sort -u \
    >"$OUT/symbols-undefined.txt"
  : >"$OUT/symbols-torch-defined.txt"
  for so in libtorch_cpu.so libc10.so libtorch_cuda.so libtorch.so libc10_cuda.so; do
    [ -f "$lib/$so" ] && nm -D --defined-only "$lib/$so" | awk '{print $NF}' | sed 's/@.*//' \
      >>"$OUT/symbols-torch-defined.txt"
  done
  sort -u -o "$OUT/symbols-torch-defined.txt" "$OUT/symbols-torch-defined.txt"
  comm -12 "$OUT/symbols-undefined.txt" "$OUT/symbols-torch-defined.txt" >"$OUT/symbols-torch-resolved.txt"
  # Imports that must come from libtorch/c10: mangled names whose outermost namespace is at::,
  # c10::, torch:: or caffe2:: (also their vtables / typeinfo: _ZTVN3c10..).
  grep -E '^_Z(T[VIS])?N?K?(2at|3c10|5torch|6caffe2)[0-9]' "$OUT/symbols-undefined.txt" \
    >"$OUT/symbols-torch-namespaced.txt" || true
  comm -23 "$OUT/symbols-torch-namespaced.txt" "$OUT/symbols-torch-defined.txt" >"$OUT/symbols-missing.txt"
  echo "undefined symbols containing 'torch' (nm -D --undefined-only | grep -c torch): $(nm -D --undefined-only "$bin" | grep -c torch)"
  echo "undefined symbols resolved by this torch's libtorch*/libc10*: $(wc -l <"$OUT/symbols-torch-resolved.txt")"
  echo "at::/c10::/torch::/caffe2:: imports: $(wc -l <"$OUT/symbols-torch-namespaced.txt"), missing from $lib: $(wc -l <"$OUT/symbols-missing.txt")"
  if [ -s "$OUT/symbols-missing.txt" ]; then
    if command -v c++filt >/dev/null; then c++filt <"$OUT/symbols-missing.txt" | head -n 50
    else head -n 50 "$OUT/symbols-missing.txt"; fi
    return 1
  fi
}
want symbols && step symbols check_symbols "$TBRM_BIN" "$TORCH_LIB"

# ---------------------------------------------------------------- summary
"$PY" - "$OUT" "$PEAK_TFLOPS" "$SMOKE" <<'EOF' | tee "$OUT/summary.txt"
import json, os, sys
out, peak, smoke = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1"
status = {}
for line in open(os.path.join(out, "status.tsv")):
    name, rc, secs = line.rstrip("\n").split("\t")
    status[name] = (int(rc), int(secs))
def text(name):
    try:
        return open(os.path.join(out, name)).read()
    except OSError:
        return ""
def last_json(name):
    for line in reversed(text(name + ".out").splitlines()):
        if line.lstrip().startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return {}
def num(x, spec):
    return format(x, spec) if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"
summary = {"smoke_test": smoke, "status": {k: v[0] for k, v in status.items()}}
print("=" * 72)
print("gpu-check summary" + ("  (SMOKE TEST on CPU: numbers are meaningless)" if smoke else ""))
print("=" * 72)
print(text("nvidia-smi-query.out").strip() or "nvidia-smi: not available")
print("torch:", text("torch-version.out").strip() or "-")
print("tbrm:", text("tbrm-version.out").strip() or f"- (exit {status.get('tbrm-version', ('?',))[0]})")
print()
print("log-prob parity vs cpu/f32:")
parity = []
for name in sorted(status):
    if name.startswith("parity-") and "-compare-" in name:
        r = last_json(name)
        parity.append(r)
        verdict = "PASS" if status[name][0] == 0 else "FAIL"
        if name.endswith("-compare-floor") and status[name][0] == 0:
            verdict = "info"
        print(f"  {verdict}  {r.get('case', name)}: max {num(r.get('max_abs_diff'), '.3g')}, "
              f"mean {num(r.get('mean_abs_diff'), '.3g')}, first logit max "
              f"{num(r.get('first_logit_max_abs_diff'), '.3g')} (threshold {r.get('threshold', '-')})")
summary["parity"] = parity
print()
print("TBRM train step (bench train-step --loss tbrm):")
train = {}
for name in ["train-0.5b", "train-0.5b-recompute-off", "train-1.5b"]:
    r = last_json(name)
    train[name] = r
    rc = status.get(name, ("not run",))[0]
    mfu6 = None
    if r.get("params") and r.get("tokens_per_second"):
        mfu6 = 6 * r["params"] * r["tokens_per_second"] / (peak * 1e12)
    print(f"  {name}: exit {rc}, tokens/s {num(r.get('tokens_per_second'), '.0f')}, "
          f"median s {num(r.get('median_seconds'), '.3f')}, mfu {num(r.get('mfu'), '.3f')} "
          f"(6*params*tokens/s / peak: {num(mfu6, '.3f')}), peak allocated GB "
          f"{num(r.get('peak_allocated_gb'), '.2f')}")
    sdp = {k: v for k, v in r.items() if "sdp" in k}
    if sdp:
        print(f"    attention kernel: {json.dumps(sdp)}")
summary["train"] = train
print()
g = last_json("generate")
summary["generate"] = g
print(f"generation (batch {g.get('batch', '-')}, prompt {g.get('prompt_len', '-')}, "
      f"{g.get('new_tokens', '-')} new): exit {status.get('generate', ('not run',))[0]}, "
      f"tokens/s {num(g.get('tokens_per_second'), '.0f')}, median s {num(g.get('median_seconds'), '.2f')}"
      f"{', ' + json.dumps({k: v for k, v in g.items() if 'sdp' in k}) if any('sdp' in k for k in g) else ''}")
r = last_json("rollout")
summary["rollout"] = r
print(f"rollout engine (64 DAPO prompts x 4, <= 512 new): exit "
      f"{status.get('rollout', ('not run',))[0]}, tokens/s {num(r.get('tokens_per_second'), '.0f')}, "
      f"engine {json.dumps(r.get('engine', {}))}")
sdp = last_json("sdp-choice")
summary["sdp_choice_torch"] = sdp
print(f"torch _fused_sdp_choice: {json.dumps(sdp) if sdp else '-'}")
print()
print("symbols:")
print("  " + ((text("symbols.out") + text("symbols.err")).strip().replace("\n", "\n  ") or "-"))
print()
failed = {k: v[0] for k, v in status.items() if v[0] != 0}
summary["failed"] = failed
print("steps:", len(status), "failed:", json.dumps(failed) if failed else "none")
print(f"(all outputs in {out})")
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
EOF
