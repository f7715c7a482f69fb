#!/usr/bin/env python3
"""Builds the Hugging Face parity fixtures of crates/tbrm-model/tests/parity.rs.

Run by hand (not by CI), from the repository root, in the project venv with transformers:
    source scripts/env.sh && python scripts/make_fixtures.py

For each tiny random model it writes a complete Hugging Face model folder under
crates/tbrm-model/tests/fixtures/<name>/ (config.json, safetensors weights, tokenizer.json,
tokenizer_config.json with Qwen2.5's chat template, generation_config.json) plus expected.json:
per-token log-probs of unpadded prompts, logits at a few positions, log-probs of a left-padded
batch (positions from the mask, as generate() derives them) and greedy continuations of a
left-padded batch by transformers' generate(). Everything is float32 and seeded, so rerunning
gives the same files for the same library versions.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import torch
import transformers
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LlamaConfig,
    AutoTokenizer,
    Qwen2Config,
    Qwen3Config,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/tbrm-model/tests/fixtures"
TEMPLATE = ROOT / "crates/tbrm-model/tests/resources/chat_templates/qwen2_5.jinja"

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's pre-tokenizer split (tokenizer.json of Qwen/Qwen2.5-0.5B).
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog. A fox is quick; a dog is lazy.",
    "Let x be a real number such that 2x + 3 = 11. Then 2x = 8, so x = 4. "
    "The answer is \\boxed{4}.",
    "Compute the sum of the first 10 positive integers: 1 + 2 + ... + 10 = 55. "
    "In general the sum of the first n integers is n(n+1)/2.",
    "A train leaves the station at 3 pm and travels 120 miles at 40 miles per hour. "
    "It arrives 3 hours later, at 6 pm.",
    "If a triangle has sides 3, 4 and 5, it is a right triangle because 9 + 16 = 25. "
    "Its area is 3 * 4 / 2 = 6.",
    "Reasoning step by step helps: first understand the problem, then make a plan, "
    "carry it out, and finally check the answer.",
    "The probability of rolling a 6 on a fair die is 1/6; of rolling two sixes, 1/36.",
    "Hello world! This is a tiny tokenizer for tests, with numbers 0 1 2 3 4 5 6 7 8 9.",
]
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Let x be a real number such that 2x + 3 = 11.",
    "Hello world!",
]


def build_tokenizer(vocab_size=320):
    """A byte-level BPE shaped like Qwen2.5's tokenizer.json (NFC, regex split, byte-level)."""
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.ByteLevel(
        add_prefix_space=False, trim_offsets=False, use_regex=False
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    for t in SPECIAL:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False)])
    return tok


def write_tokenizer(tok, out):
    """tokenizer.json from the tokenizers library, tokenizer_config.json in Qwen2.5's own
    (transformers 4) layout with the chat template inline, as real checkpoints ship it."""
    tok.save(str(out / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIAL}
    cfg = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(ids[t]): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for t in SPECIAL
        },
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": TEMPLATE.read_text(),
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def randomize(model, seed):
    """Replaces HF's near-zero init (std 0.02 gives almost uniform logits, which would make a
    log-prob comparison vacuous) by larger random weights, incl. non-unit norm weights and
    non-zero biases, so every parameter visibly affects the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1] if "embed_tokens" not in name else 1
                std = 1.0 if fan_in == 1 else 1.5 / fan_in**0.5
                p.copy_(std * torch.randn(p.shape, generator=g))


def left_pad(rows, pad_id):
    width = max(len(r) for r in rows)
    ids = [[pad_id] * (width - len(r)) + r for r in rows]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    return torch.tensor(ids), torch.tensor(mask)


def token_logprobs(logits, ids):
    lp = logits.float().log_softmax(-1)
    return lp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]


def make(name, cfg, tok, seed, shard_size=None):
    """Tries seeds from `seed` on until greedy decoding has no near-ties (see below)."""
    for attempt in range(20):
        try:
            return make_once(name, cfg, tok, seed + 1000 * attempt, shard_size)
        except NearTie as e:
            print(f"{name}: {e}; next seed")
    raise RuntimeError(f"{name}: no seed without near-ties")


class NearTie(Exception):
    pass


def make_once(name, cfg, tok, seed, shard_size):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float().eval()
    randomize(model, seed)
    if cfg.tie_word_embeddings:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(out, **kwargs)
    write_tokenizer(tok, out)
    pad, eos = tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>")
    GenerationConfig(
        bos_token_id=pad, pad_token_id=pad, eos_token_id=[eos, pad], do_sample=False
    ).save_pretrained(out)

    hf_tok = AutoTokenizer.from_pretrained(out)
    chat = hf_tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    assert chat.startswith("<|im_start|>system\nYou are Qwen"), chat
    prompts = [hf_tok.encode(t) for t in TEXTS] + [hf_tok.encode(chat)]
    assert prompts[-1][0] == tok.token_to_id("<|im_start|>"), prompts[-1]
    exp = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "seed": seed,
        "texts": TEXTS + [chat],
    }

    with torch.no_grad():
        singles = []
        logits_at = []
        for row, ids in enumerate(prompts):
            x = torch.tensor([ids])
            logits = model(x).logits
            singles.append(token_logprobs(logits, x)[0].tolist())
            for pos in (0, len(ids) - 1):
                logits_at.append({"prompt": row, "pos": pos, "logits": logits[0, pos].tolist()})
        spread = torch.tensor(logits_at[0]["logits"]).std().item()
        assert spread > 0.5, f"{name}: logits too flat for a meaningful test ({spread})"
        exp["prompts"] = prompts
        exp["token_logprobs"] = singles
        exp["logits"] = logits_at

        ids, mask = left_pad(prompts, pad)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        lp = token_logprobs(model(ids, attention_mask=mask, position_ids=pos).logits, ids)
        exp["padded"] = {
            "input_ids": ids.tolist(),
            "attention_mask": mask.tolist(),
            "token_logprobs": lp.tolist(),
        }

        new = 12
        gen = model.generate(
            ids,
            attention_mask=mask,
            max_new_tokens=new,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=pad,
            output_scores=True,
            return_dict_in_generate=True,
        )
        seqs = gen.sequences[:, ids.shape[1]:]
        assert seqs.shape[1] == new, f"{name}: generate stopped early"
        # A near-tie could flip under a different float summation order; require a clear
        # argmax at every step so token-for-token reproduction is a fair test.
        margin = min(
            s.float().topk(2, -1).values.diff(dim=-1).abs().min().item() for s in gen.scores
        )
        if margin < 1e-2:
            raise NearTie(f"greedy margin {margin:.2e}")
        exp["greedy"] = {
            "input_ids": ids.tolist(),
            "attention_mask": mask.tolist(),
            "max_new_tokens": new,
            "new_tokens": seqs.tolist(),
            "min_margin": margin,
        }
    (out / "expected.json").write_text(json.dumps(exp) + "\n")
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"{name} (seed {seed}): {size / 1024:.0f} KiB, {sorted(f.name for f in out.iterdir())}")


def main():
    print("torch", torch.__version__, "transformers", transformers.__version__)
    torch.set_num_threads(1)
    tok = build_tokenizer()
    vocab = (tok.get_vocab_size() + 15) // 16 * 16
    common = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
    )
    # Qwen2.5-like: tied embeddings, q/k/v bias, rope_theta 1e6, wider hidden size.
    make(
        "qwen2",
        Qwen2Config(**{**common, "hidden_size": 64, "intermediate_size": 128},
                    rope_theta=1000000.0, tie_word_embeddings=True),
        tok,
        seed=1,
    )
    # Llama 3.1-like: untied, llama3 RoPE scaling with a short original context so that all
    # three frequency bands occur at head_dim 8.
    make(
        "llama",
        LlamaConfig(
            **common,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            tie_word_embeddings=False,
        ),
        tok,
        seed=2,
    )
    # Qwen3: q/k norm, head_dim (16) != hidden / heads (8).
    make("qwen3", Qwen3Config(**common, head_dim=16, tie_word_embeddings=False), tok, seed=3)
    # Sharded weights (model.safetensors.index.json + shards) of a Qwen2 model.
    make(
        "qwen2_sharded",
        Qwen2Config(**common, rope_theta=10000.0, tie_word_embeddings=False),
        tok,
        seed=4,
        shard_size="40KB",
    )
    total = sum(f.stat().st_size for f in OUT.rglob("*") if f.is_file())
    print(f"total {total / 1024:.0f} KiB")
    assert total < 2 * 1024 * 1024, "fixtures must stay under 2 MB"


if __name__ == "__main__":
    sys.exit(main())
