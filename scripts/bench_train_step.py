#!/usr/bin/env python3
"""PyTorch-eager twin of crates/tbrm-model/examples/bench_train_step.rs: forward + backward of
a next-token cross-entropy loss on a randomly initialised transformers Qwen2ForCausalLM (SDPA
attention) with the same shapes, threads and loss, in tokens per second.

    source scripts/env.sh && python scripts/bench_train_step.py [--hidden 256] [--layers 4] ...
"""

import argparse
import statistics
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def main():
    p = argparse.ArgumentParser()
    for name, default in [
        ("hidden", 256), ("layers", 4), ("heads", 4), ("kv-heads", 2), ("intermediate", 1024),
        ("vocab", 8192), ("seq", 256), ("batch", 8), ("threads", 2), ("steps", 10), ("warmup", 3),
    ]:
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[a.dtype]

    cfg = Qwen2Config(
        vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
        num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
        max_position_embeddings=max(2048, a.seq), tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM._from_config(cfg, attn_implementation="sdpa").to(dtype).train()
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
        f"(min step {min(times):.3f}s)"
    )


if __name__ == "__main__":
    main()
