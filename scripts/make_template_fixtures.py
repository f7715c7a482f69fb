#!/usr/bin/env python3
"""Write the expected chat-template renders that tbrm-model's tokenizer tests compare against.

Run by hand (not by CI) after changing a template or a conversation below:

    .venv/bin/pip install transformers   # once
    .venv/bin/python scripts/make_template_fixtures.py

Reads the real chat templates in crates/tbrm-model/tests/resources/chat_templates/*.jinja
(Qwen2.5-Instruct, Llama-3.1-Instruct, Qwen3-Thinking-2507, copied from their
tokenizer_config.json) and renders each conversation with transformers'
`apply_chat_template(..., tokenize=False)`, which uses Jinja2 with trim_blocks and
lstrip_blocks. The result goes to renders.json next to the templates.

It also writes three tiny tokenizer folders under tests/resources/ (a byte-level BPE
trained here on a few sentences): `tok_qwen` (string template, AddedToken eos,
generation_config with a list of eos ids), `tok_named` (list-of-named-templates form,
no generation_config) and `tok_plain` (no chat template), plus `encodings.json` with
the ids transformers produces for a few strings and rendered chats.
"""

import json
import pathlib

import transformers
from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers.models import BPE, WordLevel
from transformers import PreTrainedTokenizerFast

ROOT = pathlib.Path(__file__).resolve().parent.parent
DIR = ROOT / "crates/tbrm-model/tests/resources/chat_templates"

TEMPLATES = {
    "qwen2_5.jinja": {"bos_token": None, "eos_token": "<|im_end|>"},
    "llama3_1.jinja": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "qwen3_thinking_2507.jinja": {"bos_token": None, "eos_token": "<|im_end|>"},
}

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2+3?"}],
    [
        {"role": "system", "content": "Please reason step by step, and put your final answer within \\boxed{}."},
        {"role": "user", "content": "Find x if 2x = 10."},
    ],
    [
        {"role": "system", "content": "  You are terse.  \n"},
        {"role": "user", "content": "  Hi there!\n"},
        {"role": "assistant", "content": "Hello. "},
        {"role": "user", "content": "Unicode: déjà vu — 数学 ∑ \"quotes\" 'single' {{ not a tag }}"},
    ],
    [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n2"},
        {"role": "user", "content": "and 2+2?"},
        {"role": "assistant", "content": "<think>\n\nstill easy\n\n</think>\n\n4"},
    ],
]


def tokenizer(bos, eos):
    vocab = {"<unk>": 0, eos: 1}
    if bos:
        vocab[bos] = 2
    inner = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=inner, bos_token=bos, eos_token=eos, unk_token="<unk>")


def main():
    cases = []
    for name, special in TEMPLATES.items():
        template = (DIR / name).read_text()
        tok = tokenizer(special["bos_token"], special["eos_token"])
        for messages in CONVERSATIONS:
            for add_generation_prompt in (True, False):
                text = tok.apply_chat_template(
                    messages,
                    chat_template=template,
                    tokenize=False,
                    add_generation_prompt=add_generation_prompt,
                )
                cases.append(
                    {
                        "template": name,
                        "bos_token": special["bos_token"],
                        "eos_token": special["eos_token"],
                        "messages": messages,
                        "add_generation_prompt": add_generation_prompt,
                        "expected": text,
                    }
                )
    out = {"generator": f"transformers {transformers.__version__} apply_chat_template", "cases": cases}
    (DIR / "renders.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} renders to {DIR / 'renders.json'}")


SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "What is 2+3? The answer is 5.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "user assistant system You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    "Find x if 2x = 10. So x = 5. Unicode: déjà vu — 数学 ∑",
] * 20


def write_tokenizer_folders():
    res = DIR.parent
    bpe = Tokenizer(BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer)
    qwen_template = (DIR / "qwen2_5.jinja").read_text()
    im_end = bpe.token_to_id("<|im_end|>")
    eot = bpe.token_to_id("<|endoftext|>")
    folders = {
        "tok_qwen": (
            {
                "chat_template": qwen_template,
                "eos_token": {"__type": "AddedToken", "content": "<|im_end|>", "lstrip": False,
                              "normalized": False, "rstrip": False, "single_word": False},
                "pad_token": "<|endoftext|>",
                "bos_token": None,
            },
            {"eos_token_id": [im_end, eot], "pad_token_id": eot},
        ),
        "tok_named": (
            {
                "chat_template": [
                    {"name": "tool_use", "template": "{{ 'tools' }}"},
                    {"name": "default", "template": qwen_template},
                ],
                "eos_token": "<|endoftext|>",
            },
            None,
        ),
        "tok_plain": ({"eos_token": "<|endoftext|>"}, None),
    }
    for name, (cfg, gen) in folders.items():
        d = res / name
        d.mkdir(parents=True, exist_ok=True)
        bpe.save(str(d / "tokenizer.json"))
        (d / "tokenizer_config.json").write_text(json.dumps(cfg, indent=1, ensure_ascii=False) + "\n")
        if gen is not None:
            (d / "generation_config.json").write_text(json.dumps(gen, indent=1) + "\n")

    tok = transformers.AutoTokenizer.from_pretrained(str(res / "tok_qwen"))
    texts = ["What is 2+3?", "  leading spaces and déjà vu 数学\n\nnew lines", "<|im_start|>user\nhi<|im_end|>"]
    chats = [c for c in CONVERSATIONS[:3]]
    out = {
        "encode": [{"text": t, "ids": tok.encode(t, add_special_tokens=False)} for t in texts],
        "chat": [
            {"messages": m, "ids": list(tok.apply_chat_template(m, tokenize=True, add_generation_prompt=True, return_dict=False))}
            for m in chats
        ],
        "eos_token_ids": [im_end, eot],
        "pad_token_id": tok.pad_token_id,
    }
    (res / "tok_qwen" / "encodings.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote tokenizer folders under {res}")


if __name__ == "__main__":
    main()
    write_tokenizer_folders()
