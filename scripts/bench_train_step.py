#!/usr/bin/env python3
"""PyTorch-eager twin of tbrm's training-step benchmarks, on a randomly initialised transformers
Qwen2ForCausalLM (SDPA attention) with the same shapes and threads.

Two losses (`--loss`):

- `next-token` (default; twin of crates/tbrm-model/examples/bench_train_step.rs): forward +
  backward of next-token cross-entropy (log-softmax in f32), no optimizer step. Prints one
  human-readable line on stdout, in tokens per second.
- `tbrm` (twin of `tbrm bench train-step --loss tbrm`): one TBRM update as tbrm's trainer runs
  it, written the way a plain transformers user would:
    * a policy and a frozen reference copy of it (same init);
    * input: `--batch` rows of `--seq` random token ids, the first `--prompt-len` of them prompt,
      the rest response;
    * reference log-probs of the response tokens under torch.no_grad();
    * policy forward with grad, f32 log-softmax of the logits (only the positions that predict
      response tokens are projected, via `logits_to_keep`, as TRL does), per-token log-probs of
      the response tokens and the raw logit of the first response token;
    * residual f = first_logit + sum_{h>=2} logp_h - sum_{h>=1} ref_logp_h - r/beta with random
      0/1 rewards, beta = 0.002; loss = mean f^2; backward; torch.optim.AdamW step (lr 1e-6).
      bf16: by default AdamW runs on the bf16 parameters directly (moments in bf16, what a plain
      transformers user gets); `--master-weights f32` keeps f32 master weights and f32 moments
      instead (bf16 gradients are upcast into the master's .grad, the bf16 weights are copied
      back after the step), which is what tbrm does.
  Prints ONE JSON line on stdout (peak RSS of this process, median step seconds, tokens/s) and a
  human-readable line on stderr. Peak RSS (ru_maxrss) is per process: run one configuration per
  invocation.

    source scripts/env.sh
    python scripts/bench_train_step.py [--hidden 256] [--layers 4] ...                # next-token
    python scripts/bench_train_step.py --loss tbrm --preset qwen2.5-0.5b --layers 4 \\
        --batch 2 --seq 2048 --dtype bf16 --threads 2 --steps 1 --warmup 1 [--grad-checkpointing]
"""

import argparse
import copy
import json
import resource
import statistics
import sys
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

# Widths of released checkpoints (config.json of the Hugging Face repositories). `--layers` and
# the other shape flags given explicitly override a preset.
PRESETS = {
    "qwen2.5-0.5b": dict(
        vocab=151936, hidden=896, heads=14, kv_heads=2, intermediate=4864, layers=24,
        tie=True, rope_theta=1e6,
    ),
}
SHAPE_DEFAULTS = dict(
    hidden=256, layers=4, heads=4, kv_heads=2, intermediate=1024, vocab=8192, tie=False,
    rope_theta=1e6,
)
BETA = 0.002
LR = 1e-6


def peak_rss_bytes():
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Shape flags default to None so that an explicit value overrides --preset.
    for name in ["hidden", "layers", "heads", "kv-heads", "intermediate", "vocab"]:
        p.add_argument(f"--{name}", type=int, default=None)
    for name, default in [("seq", 256), ("batch", 8), ("threads", 2), ("steps", 10),
                          ("warmup", 3), ("prompt-len", 256), ("seed", 0)]:
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    p.add_argument("--loss", choices=["next-token", "tbrm"], default="next-token")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="widths of a released model (tied embeddings and rope_theta included)")
    p.add_argument("--grad-checkpointing", action="store_true",
                   help="policy.gradient_checkpointing_enable(use_reentrant=False)")
    p.add_argument("--master-weights", choices=["none", "f32"], default="none",
                   help="tbrm loss with bf16: AdamW on the bf16 params (none) or on f32 masters")
    a = p.parse_args()
    shape = dict(SHAPE_DEFAULTS)
    if a.preset:
        shape.update(PRESETS[a.preset])
    for key in ["hidden", "layers", "heads", "kv_heads", "intermediate", "vocab"]:
        if getattr(a, key) is not None:
            shape[key] = getattr(a, key)
    for key, value in shape.items():
        setattr(a, key, value)
    if a.loss == "tbrm" and not 1 <= a.prompt_len < a.seq:
        p.error(f"--prompt-len must be in [1, --seq) for --loss tbrm, got {a.prompt_len}")
    if a.steps < 1:
        p.error("--steps must be at least 1")
    return a


def build_model(a, dtype):
    cfg = Qwen2Config(
        vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
        num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
        max_position_embeddings=max(2048, a.seq), tie_word_embeddings=a.tie,
        rope_parameters={"rope_type": "default", "rope_theta": a.rope_theta},
        use_cache=False,
    )
    torch.manual_seed(a.seed)
    # Initialised directly in the benchmark dtype (no f32 copy of the whole model on the way).
    model = Qwen2ForCausalLM._from_config(cfg, attn_implementation="sdpa", dtype=dtype)
    return model.to(dtype).train()


def run_next_token(a, dtype):
    model = build_model(a, dtype)
    ids = torch.randint(a.vocab, (a.batch, a.seq + 1))
    inputs, targets = ids[:, :-1], ids[:, 1:]

    times = []
    for step in range(a.warmup + a.steps):
        start = time.perf_counter()
        logits = model(input_ids=inputs, use_cache=False).logits.float()
        loss = -logits.log_softmax(-1).gather(-1, targets[..., None]).mean()
        loss.backward()
        model.zero_grad(set_to_none=False)
        secs = time.perf_counter() - start
        if step >= a.warmup:
            times.append(secs)
    median = statistics.median(times)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"pytorch eager (torch {torch.__version__}, transformers Qwen2ForCausalLM sdpa): "
        f"params {n_params / 1e6:.2f}M, batch {a.batch} x seq {a.seq}, {a.threads} threads, "
        f"{a.dtype}: median step {median:.3f}s, {a.batch * a.seq / median:.0f} tokens/s "
        f"(min step {min(times):.3f}s, peak RSS {peak_rss_bytes() / 1e9:.2f} GB)"
    )


def response_scores(model, ids, prompt_len, with_first_logit):
    """Per-token log-probs (B, L) f32 of the response tokens ids[:, prompt_len:], and the raw
    logit (B,) f32 of the first response token when asked. Only the L positions that predict a
    response token (prompt_len-1 .. T-2) go through the head: logits_to_keep = L + 1 keeps
    positions prompt_len-1 .. T-1 and the last one is dropped."""
    resp = ids[:, prompt_len:]
    n_resp = resp.shape[1]
    logits = model(input_ids=ids, use_cache=False, logits_to_keep=n_resp + 1).logits[:, :-1]
    first_logit = None
    if with_first_logit:
        first_logit = logits[:, 0].float().gather(-1, resp[:, :1]).squeeze(-1)
    logp = logits.float().log_softmax(-1).gather(-1, resp[..., None]).squeeze(-1)
    return logp, first_logit


def run_tbrm(a, dtype):
    policy = build_model(a, dtype)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    if a.grad_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = [p for p in policy.parameters() if p.requires_grad]
    use_master = a.master_weights == "f32" and dtype != torch.float32
    if use_master:
        master = [p.detach().float().clone().requires_grad_(True) for p in params]
        opt = torch.optim.AdamW(master, lr=LR)
        optimizer = "adamw-f32-master"
    else:
        master = None
        opt = torch.optim.AdamW(params, lr=LR)
        optimizer = "adamw-bf16-params" if dtype == torch.bfloat16 else "adamw-f32"

    gen = torch.Generator().manual_seed(a.seed)
    ids = torch.randint(a.vocab, (a.batch, a.seq), generator=gen)
    rewards = torch.randint(2, (a.batch,), generator=gen).float()

    def step():
        with torch.no_grad():
            ref_logp, _ = response_scores(reference, ids, a.prompt_len, False)
        logp, first_logit = response_scores(policy, ids, a.prompt_len, True)
        f = first_logit + logp[:, 1:].sum(-1) - ref_logp.sum(-1) - rewards / BETA
        loss = f.pow(2).mean()
        loss.backward()
        if use_master:
            for p, m in zip(params, master):
                m.grad = p.grad.float()
                p.grad = None
        opt.step()
        opt.zero_grad(set_to_none=True)
        if use_master:
            with torch.no_grad():
                for p, m in zip(params, master):
                    p.copy_(m)
        else:
            policy.zero_grad(set_to_none=True)
        value = loss.item()
        if not torch.isfinite(torch.tensor(value)):
            raise SystemExit(f"non-finite loss {value}")
        return value

    times = []
    for i in range(a.warmup + a.steps):
        start = time.perf_counter()
        loss = step()
        secs = time.perf_counter() - start
        if i >= a.warmup:
            times.append(secs)
    median = statistics.median(times)
    n_params = sum(p.numel() for p in policy.parameters())
    tokens = a.batch * a.seq
    rss = peak_rss_bytes()
    out = {
        "bench": "train-step", "impl": "pytorch-eager", "loss": "tbrm",
        "grad_checkpointing": a.grad_checkpointing, "preset": a.preset,
        "layers": a.layers, "batch": a.batch, "seq_len": a.seq, "prompt_len": a.prompt_len,
        "dtype": a.dtype, "threads": torch.get_num_threads(), "optimizer": optimizer,
        "peak_rss_gb": round(rss / 1e9, 3), "peak_rss_bytes": rss,
        "median_seconds": median, "seconds": times,
        "tokens_per_second": tokens / median, "params": n_params, "loss_value": loss,
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
    }
    print(json.dumps(out), flush=True)
    print(
        f"pytorch eager tbrm step (torch {torch.__version__}, Qwen2ForCausalLM sdpa, "
        f"{optimizer}{', grad checkpointing' if a.grad_checkpointing else ''}): "
        f"params {n_params / 1e6:.2f}M, {a.layers} layers, batch {a.batch} x seq {a.seq} "
        f"(prompt {a.prompt_len}), {a.threads} threads, {a.dtype}: median step {median:.2f}s, "
        f"{tokens / median:.0f} tokens/s, peak RSS {rss / 1e9:.2f} GB",
        file=sys.stderr,
    )


def main():
    a = parse_args()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]
    if a.loss == "tbrm":
        run_tbrm(a, dtype)
    else:
        run_next_token(a, dtype)


if __name__ == "__main__":
    main()
