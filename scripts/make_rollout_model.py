#!/usr/bin/env python3
"""Builds the random Qwen2 model of the rollout-throughput benchmark (scripts/bench_rollout.py).

    /work/venvs/hf/bin/python scripts/make_rollout_model.py --out /work/rollout-model [--seed 0]

What it writes to --out (a Hugging Face folder that transformers, vLLM and tbrm all load):

- config.json, generation_config.json, model.safetensors (float32): a Qwen2ForCausalLM with
  hidden 768, 12 layers, 12 heads (head_dim 64), 2 KV heads, intermediate 2304, vocab 32000,
  untied lm_head, initialised by transformers from --seed (about 129.4M parameters; printed).
- tokenizer.json, tokenizer_config.json: a byte-level BPE with Qwen2's exact pre-tokenizer
  (regex, NFC, ByteLevel) trained with the `tokenizers` library to exactly 32000 tokens on the
  problems and solutions of shared/data/math_train.jsonl plus the problems of
  shared/data/dapo17k.jsonl after its first 64 rows (see QWEN2_SPLIT for why); ids 0-2 are
  `<|endoftext|>` (pad), `<|im_start|>`, `<|im_end|>` (eos). Like Qwen's, it adds no special
  tokens on encode. AutoTokenizer, vLLM and the Rust `tokenizers` crate give the same ids.

Realistic response lengths: a random model almost never samples one given token, so every
rollout would run to the cap. The weights are edited so that the EOS logit is (nearly) the same
constant L at every position, making the response length geometric-ish: a hazard p per token,
mean (1 - (1-p)^512) / p near 200 at a cap of 512 (p ~ 1/222).

Qwen2 has no lm_head bias, and the final RMSNorm output x / rms(x) * w has fixed norm but no
fixed coordinate. So the residual stream gets one coordinate (index 0) that holds a large
constant C at the final norm, and the EOS row of lm_head reads only that coordinate:

1. Nothing writes residual coordinate 0 before the last attention: embed_tokens[:, 0] = 0 and
   row 0 of every o_proj and down_proj is 0.
2. The last layer's attention writes exactly C there, whatever the input: one value channel
   (kv head 0, dim 0) has zero v_proj weights and v_proj bias 1, so its attention output is
   exactly 1 (the softmax weights sum to 1); o_proj reads that channel (in each of the query
   heads sharing kv head 0) only into coordinate 0, with total weight C.
3. At the final norm x_0 = C and the other coordinates r are the ordinary random-model residual,
   so x_0 / rms(x) = sqrt(H) * C / sqrt(C^2 + |r|^2) ~ sqrt(H) once C >> |r| (C is set to
   GAP * the RMS of |r| measured on DAPO prompts). lm_head[eos] = (a, 0, ..., 0), so the EOS
   logit is a * sqrt(H) * (1 - O(|r|^2 / C^2)): constant to a few 1e-3 nats.
4. Compensation, so that the rest stays an ordinary random model: the other coordinates now see
   rms(x) ~ sqrt(C^2 + |r|^2) / sqrt(H) instead of |r| / sqrt(H), so the final norm keeps weight
   1 on coordinate 0 and multiplies the others by sqrt(C^2 + |r|^2) / |r| (measured |r|): the
   non-EOS logits keep the spread of a plain random init. The last MLP's input norm gets weight
   0 on coordinate 0 and the same kind of factor on the others. lm_head column 0 is 0 for every
   token but EOS and the two other specials.
5. `<|endoftext|>` and `<|im_start|>` get a logit of -30 through the same coordinate, so
   sampling never emits them (a real model would not either).

The EOS scale a is calibrated, not guessed: the model samples 16 DAPO prompts x 4 with EOS
disabled, the final-norm coordinate 0 and the non-EOS partition sum Z_t are collected at every
position, and a is solved by bisection so that the mean hazard p(a) = mean_t 1/(1 + Z_t
exp(-a h0_t)) gives the target mean capped length. Then it is verified by sampling 16 DAPO
prompts x 4 rollouts with transformers at temperature 1 and max 512 new tokens, EOS on.

Everything is seeded by --seed (torch init, sampling); BPE training is deterministic.
"""

import argparse
import json
import math
import pathlib
import time

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import processors
from transformers import AutoTokenizer, GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

DATA = pathlib.Path("/work/shared/data")
VOCAB = 32000
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD_ID, IM_START_ID, EOS_ID = 0, 1, 2
# Qwen2's pre-tokenizer split (digits one by one). It must be exactly this: transformers >= 5
# loads any model_type "qwen2" folder through Qwen2Tokenizer, which rebuilds the pipeline with
# this regex (and NFC, ByteLevel) whatever tokenizer.json says, so any other split would make
# AutoTokenizer (and vLLM) tokenize differently from tokenizer.json (and the Rust crate).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# With that split, math_train.jsonl alone yields at most about 22300 tokens (every pair merged),
# so the corpus adds the DAPO-17k problems after the first BENCH_ROWS (the benchmark's prompts
# are not trained on); with pairs seen at least twice this reaches about 34000.
BENCH_ROWS = 64
GAP = 12.0  # C / RMS(|r|) at the final norm


def build_tokenizer(out: pathlib.Path) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=2,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def corpus():
        with open(DATA / "math_train.jsonl", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                yield row["problem"]
                yield row["solution"]
        with open(DATA / "dapo17k.jsonl", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= BENCH_ROWS:
                    yield json.loads(line)["problem"]

    tok.train_from_iterator(corpus(), trainer=trainer)
    got = tok.get_vocab_size()
    if got != VOCAB:
        raise SystemExit(f"BPE training gave {got} tokens, not {VOCAB}: corpus too small")
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        model_max_length=4096,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(out)
    # Pin the class name: the folder must load with AutoTokenizer without a model-type lookup.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["eos_token"] = "<|im_end|>"
    cfg["pad_token"] = "<|endoftext|>"
    cfg["bos_token"] = None
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    return fast


def dapo_prompts(k):
    out = []
    with open(DATA / "dapo17k.jsonl", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line)["problem"])
            if len(out) == k:
                break
    return out


def left_pad(tok, texts):
    ids = [tok(t, add_special_tokens=True)["input_ids"] for t in texts]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return input_ids, mask


def capped_mean(p, cap):
    return (1.0 - (1.0 - p) ** cap) / p


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target-mean", type=float, default=200.0, help="mean response length (tokens, EOS included) at the cap")
    ap.add_argument("--cap", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--verify-prompts", type=int, default=16)
    ap.add_argument("--verify-n", type=int, default=4)
    ap.add_argument("--no-verify", action="store_true", help="skip the sampling check (for quick determinism checks only)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    tok = build_tokenizer(out)
    print(f"tokenizer: byte-level BPE, {len(tok)} tokens, trained on math_train.jsonl problems+solutions + dapo17k problems[64:] "
          f"in {time.time() - t0:.0f}s; pad {tok.pad_token!r}={tok.pad_token_id}, eos {tok.eos_token!r}={tok.eos_token_id}")

    cfg = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=768,
        intermediate_size=2304,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        hidden_act="silu",
        initializer_range=0.02,
        tie_word_embeddings=False,
        use_sliding_window=False,
        bos_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    torch.manual_seed(args.seed)
    model = Qwen2ForCausalLM(cfg).to(torch.float32).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen2ForCausalLM hidden 768, 12 layers, 12 heads x 64, 2 kv heads, intermediate 2304, "
          f"vocab {VOCAB}, untied head: {n_params:,} parameters ({n_params / 1e6:.1f}M)")

    H = cfg.hidden_size
    hd = H // cfg.num_attention_heads
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    layers = model.model.layers
    last = layers[-1]
    prompts = dapo_prompts(max(16, args.verify_prompts))

    with torch.no_grad():
        # 1. Keep residual coordinate 0 empty.
        model.model.embed_tokens.weight[:, 0] = 0
        for layer in layers:
            layer.self_attn.o_proj.weight[0, :] = 0
            layer.mlp.down_proj.weight[0, :] = 0
        model.lm_head.weight[:, 0] = 0

        # Measure |r| (coordinates 1..) at the input of the final norm, and at the input of the
        # last post-attention norm, on the plain model (coordinate 0 is 0 there).
        ids, mask = left_pad(tok, prompts[:16])
        seen = {}

        def grab(name):
            def hook(mod, inp):
                x = inp[0]
                m = mask.bool()
                seen[name] = x[m][:, 1:].pow(2).sum(-1).mean().sqrt().item()
            return hook

        h1 = model.model.norm.register_forward_pre_hook(grab("final"))
        h2 = last.post_attention_layernorm.register_forward_pre_hook(grab("post_attn"))
        model(input_ids=ids, attention_mask=mask)
        h1.remove()
        h2.remove()
        r_final, r_post = seen["final"], seen["post_attn"]
        C = GAP * r_final

        # 2. The last attention writes exactly C to coordinate 0 through a bias-only value channel.
        last.self_attn.v_proj.weight[0, :] = 0
        last.self_attn.v_proj.bias[0] = 1.0
        o = last.self_attn.o_proj.weight
        for h in range(group):  # query heads reading kv head 0
            o[:, h * hd] = 0
            o[0, h * hd] = C / group

        # 4. Norm compensation: the other coordinates see rms(x) ~ sqrt(C^2 + |r|^2) / sqrt(H)
        # instead of |r| / sqrt(H). Scale them back (computed from the measured |r|).
        def factor(r):
            return math.sqrt(C * C + r * r) / r

        last.post_attention_layernorm.weight[0] = 0
        last.post_attention_layernorm.weight[1:] *= factor(r_post)
        model.model.norm.weight[0] = 1.0
        model.model.norm.weight[1:] *= factor(r_final)

        # 5. Specials other than EOS: logit -30 through coordinate 0 (h0 ~ sqrt(H)).
        model.lm_head.weight[PAD_ID, :] = 0
        model.lm_head.weight[IM_START_ID, :] = 0
        model.lm_head.weight[PAD_ID, 0] = -30.0 / math.sqrt(H)
        model.lm_head.weight[IM_START_ID, 0] = -30.0 / math.sqrt(H)
        model.lm_head.weight[EOS_ID, :] = 0  # a = 0 while calibrating

    print(f"EOS construction: |r| at final norm {r_final:.3f} (post-attn of last layer {r_post:.3f}), "
          f"C = {GAP:g} x |r| = {C:.3f}; norm compensation x{factor(r_final):.2f} (final), x{factor(r_post):.2f} (last MLP)")

    # Calibration: sample with EOS off, collect h0 and the non-EOS partition sum at each position.
    gen_kw = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=PAD_ID)
    torch.manual_seed(args.seed + 1)
    with torch.no_grad():
        ids, mask = left_pad(tok, prompts[:16])
        seqs = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=128,
                              num_return_sequences=4, eos_token_id=None, **gen_kw)
        full_mask = torch.cat([mask.repeat_interleave(4, 0), torch.ones(seqs.shape[0], seqs.shape[1] - ids.shape[1], dtype=torch.long)], 1)
        h0s = []
        hook = model.model.norm.register_forward_hook(lambda m, i, o: h0s.append(o[..., 0].clone()))
        logits = model(input_ids=seqs, attention_mask=full_mask).logits
        hook.remove()
        gen = slice(ids.shape[1] - 1, seqs.shape[1] - 1)  # positions that predict a response token
        lg = logits[:, gen].double()
        h0 = h0s[0][:, gen].double().reshape(-1)
        z = (torch.logsumexp(lg, -1).exp() - lg[..., EOS_ID].exp()).reshape(-1)
        nonspecial = lg[..., 3:]
        print(f"calibration: {h0.numel()} positions; h0 = {h0.mean():.4f} +- {h0.std():.4f} (sqrt(H) = {math.sqrt(H):.4f}); "
              f"non-EOS logits std {nonspecial.std():.3f}; log Z = {z.log().mean():.4f} +- {z.log().std():.4f}")

    target = args.target_mean

    def mean_len(a):
        p = (1.0 / (1.0 + z * torch.exp(-a * h0))).mean().item()
        return capped_mean(p, args.cap), p

    lo, hi = 0.0, 2.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if mean_len(mid)[0] > target:
            lo = mid
        else:
            hi = mid
    a = (lo + hi) / 2
    m, p = mean_len(a)
    with torch.no_grad():
        model.lm_head.weight[EOS_ID, 0] = a
    eos_logit = a * h0
    print(f"EOS row: lm_head[{EOS_ID}] = ({a:.6f}, 0, ..., 0): EOS logit {eos_logit.mean():.4f} +- {eos_logit.std():.4f} "
          f"(ln((V-1)/{1 / p - 1:.0f}) = {math.log(z.mean().item() * p / (1 - p)):.4f}), hazard p = 1/{1 / p:.1f}, "
          f"predicted mean length {m:.1f} (cap {args.cap})")

    # Verification: real sampling with EOS on.
    lens, mean = [], float("nan")
    if not args.no_verify:
        torch.manual_seed(args.seed + 2)
        k, n = args.verify_prompts, args.verify_n
        t0 = time.time()
        ids, mask = left_pad(tok, prompts[:k])
        with torch.no_grad():
            seqs = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.cap,
                                  num_return_sequences=n, eos_token_id=EOS_ID, **gen_kw)
        resp = seqs[:, ids.shape[1]:].tolist()
        lens = [row.index(EOS_ID) + 1 if EOS_ID in row else len(row) for row in resp]
        capped = sum(1 for row in resp if EOS_ID not in row)
        mean = sum(lens) / len(lens)
        print(f"verify: transformers generate(), {k} DAPO prompts x {n}, temperature 1, max {args.cap} new tokens: "
              f"mean response length {mean:.1f} tokens (EOS included; min {min(lens)}, max {max(lens)}, "
              f"{capped} hit the cap) in {time.time() - t0:.0f}s")
        if not 150 <= mean <= 250:
            raise SystemExit(f"mean response length {mean:.1f} outside 150-250")

    model.config.eos_token_id = EOS_ID
    model.config.pad_token_id = PAD_ID
    model.config.bos_token_id = PAD_ID
    model.generation_config = GenerationConfig(bos_token_id=PAD_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    model.save_pretrained(out, safe_serialization=True)
    info = {
        "seed": args.seed,
        "parameters": n_params,
        "C": C,
        "eos_scale": a,
        "predicted_mean_len": m,
        "verify_mean_len": mean,
        "verify_lens": lens,
    }
    (out / "rollout_model_info.json").write_text(json.dumps(info, indent=1) + "\n")

    # The folder must tokenize the same through AutoTokenizer (transformers >= 5 picks
    # Qwen2Tokenizer for model_type qwen2), tokenizer.json read by `tokenizers` (as the Rust crate
    # reads it), and add nothing on encode.
    auto = AutoTokenizer.from_pretrained(out)
    raw = Tokenizer.from_file(str(out / "tokenizer.json"))
    texts = dapo_prompts(256)
    same = sum(auto(t, add_special_tokens=True)["input_ids"] == raw.encode(t, add_special_tokens=True).ids for t in texts)
    n_tok = [len(raw.encode(t).ids) for t in texts[:BENCH_ROWS]]
    print(f"tokenizer check: AutoTokenizer ({type(auto).__name__}) == tokenizer.json on {same}/{len(texts)} DAPO prompts; "
          f"first {BENCH_ROWS} prompts: {min(n_tok)}-{max(n_tok)} tokens, mean {sum(n_tok) / len(n_tok):.1f}")
    if same != len(texts) or auto.eos_token_id != EOS_ID or auto.pad_token_id != PAD_ID:
        raise SystemExit("AutoTokenizer and tokenizer.json disagree")
    print(f"saved to {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))


if __name__ == "__main__":
    main()
