#!/usr/bin/env python3
"""Generation throughput, tbrm against transformers' generate(), same model and shapes.

Builds one random Qwen2-architecture model with transformers (seeded), saves it as a
Hugging Face folder with the tiny tokenizer from tbrm-model's tests, then in one run:

  1. transformers: model.generate() on B prompts of P tokens, N new tokens each, sampling at
     temperature 1 with top-k/top-p off, EOS ignored (eos_token_id=None) so every row runs the
     full length; torch.set_num_threads(T); KV cache on (transformers' default).
  2. tbrm: `tbrm bench generate` on the same folder with the same shapes and threads.

Both report the median over --repeats runs after one warm-up run, in new tokens per second.

    source scripts/env.sh
    cargo build -p tbrm-cli            # or --release; pass the binary with --tbrm
    .venv/bin/python scripts/bench_generate.py --threads 2
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import tempfile
import time

import torch
import transformers
from transformers import Qwen2Config, Qwen2ForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "crates/tbrm-model/tests/resources/tok_qwen"


def bench_prompt(row, length, vocab):
    """Same formula as `bench_prompt` in crates/tbrm-cli/src/cmd/bench.rs."""
    return [((row * 31 + j * 7) % (min(vocab, 1000) - 3) + 3) for j in range(length)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--intermediate", type=int, default=768)
    ap.add_argument("--tbrm", default=str(ROOT / "target/debug/tbrm"))
    ap.add_argument("--model-dir", default=None, help="where to write the model (default: a temp dir)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(cfg).eval()
    n_params = sum(p.numel() for p in model.parameters())

    tmp = None
    if args.model_dir:
        out = pathlib.Path(args.model_dir)
    else:
        tmp = tempfile.mkdtemp(prefix="tbrm-bench-")
        out = pathlib.Path(tmp)
    model.save_pretrained(out, safe_serialization=True)
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]:
        shutil.copy(TOKENIZER / f, out / f)

    ids = torch.tensor([bench_prompt(i, args.prompt_len, args.vocab) for i in range(args.batch)])
    mask = torch.ones_like(ids)

    def hf_run():
        with torch.inference_mode():
            res = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=args.new_tokens,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                eos_token_id=None,
                pad_token_id=0,
                use_cache=True,
            )
        assert res.shape == (args.batch, args.prompt_len + args.new_tokens), res.shape

    hf_run()
    secs = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        hf_run()
        secs.append(time.perf_counter() - t)
    hf_med = statistics.median(secs)
    hf = {
        "impl": f"transformers {transformers.__version__} generate (torch {torch.__version__})",
        "threads": torch.get_num_threads(),
        "params": n_params,
        "seconds": secs,
        "median_seconds": hf_med,
        "tokens_per_second": args.batch * args.new_tokens / hf_med,
    }
    print(json.dumps(hf))

    cmd = [
        args.tbrm, "bench", "generate", "--model", str(out),
        "--batch", str(args.batch), "--prompt-len", str(args.prompt_len),
        "--new-tokens", str(args.new_tokens), "--threads", str(args.threads),
        "--repeats", str(args.repeats), "--device", "cpu", "--dtype", "f32",
    ]
    def tbrm_run(stock_mkl):
        env = dict(os.environ)
        env["TBRM_MKL_STOCK_DISPATCH"] = "1" if stock_mkl else "0"
        res = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        ours = json.loads(res.stdout.strip().splitlines()[-1])
        ours["stock_mkl_dispatch"] = stock_mkl
        print(json.dumps(ours))
        return ours

    # tbrm as shipped, then with MKL's stock vendor dispatch (the kernels transformers gets on
    # this CPU; see crates/tbrm-cli/src/mkl.rs), so the engine and the kernel choice show apart.
    ours = tbrm_run(False)
    stock = tbrm_run(True)
    hf_tps = hf["tokens_per_second"]
    print(
        f"batch {args.batch}, prompt {args.prompt_len}, new {args.new_tokens}, threads {args.threads}, "
        f"{n_params / 1e6:.1f}M params: transformers {hf_tps:.0f} tok/s, "
        f"tbrm {ours['tokens_per_second']:.0f} tok/s, ratio {ours['tokens_per_second'] / hf_tps:.2f}x "
        f"(MKL code path {ours.get('mkl_code_path')}); "
        f"tbrm with stock MKL dispatch {stock['tokens_per_second']:.0f} tok/s, "
        f"ratio {stock['tokens_per_second'] / hf_tps:.2f}x (MKL code path {stock.get('mkl_code_path')})"
    )
    if tmp:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
