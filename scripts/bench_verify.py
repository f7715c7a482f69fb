#!/usr/bin/env python3
"""Side-by-side benchmark of tbrm's math verifier and Hugging Face Math-Verify.

Builds a deterministic set of (gold, response) pairs from the shared MATH data (MATH500 gold
answers with correct, reformatted and perturbed predictions, the reference solutions as full
responses, MATH-train solutions matched and mismatched), judges every pair with Math-Verify
(in this process, one core) and with tbrm (a subprocess pinned to one thread), and reports
verdict agreement, throughput and the slowest case of each. Throughput is measured in CPU
time (thread time for Math-Verify, the child's user+system time for tbrm) so that other load
on a shared machine does not distort the ratio. A second, small set of
pathological inputs is timed for tbrm only.

In the same run, a third set of a few hundred pairs in harder answer styles (decimal commas,
percent words, relations, approximation chains, labelled and semicolon tuples, doubled
backslashes, prose after "Final Answer:", gold answers that are whole solutions, lists of
tuples, tuples against sets, thousands separators against lists), built from the DAPO-17k,
OlympiadBench and Minerva answers by `scripts/verify_style_cases.py`, is judged by both and its
agreement reported separately (`--no-styles` skips it).

Run with a Python that has `math-verify` installed (kept out of the project venv), e.g.:

    python3 -m venv /tmp/mv-venv && /tmp/mv-venv/bin/pip install math-verify
    cargo build --release -p tbrm-verify --example verify_jsonl
    /tmp/mv-venv/bin/python scripts/bench_verify.py \
        --ours target/release/examples/verify_jsonl

`--ours` is any command taking `--input IN --output OUT --threads N`, such as the example
above or `"target/release/tbrm verify"`.
"""

import argparse
import json
import random
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from verify_style_cases import build_style_cases  # noqa: E402


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def int_or_none(s):
    s = s.strip()
    return int(s) if re.fullmatch(r"-?\d+", s) else None


FRAC = re.compile(r"^(-?)\\[dt]?frac\{(\d+)\}\{(\d+)\}$")


def variants(gold, rng, other):
    """Predictions for one gold answer: (response, kind)."""
    out = [
        (f"Therefore the answer is $\\boxed{{{gold}}}$.", "same-boxed"),
        (f"The final answer is ${gold}$. I hope it is correct.", "same-final-answer"),
        (f"\\boxed{{{gold.replace(' ', '')}}}", "no-spaces"),
    ]
    if "\\left" in gold:
        bare = gold.replace("\\left", "").replace("\\right", "")
        out.append(("\\boxed{" + bare + "}", "no-left-right"))
    if "\\frac" in gold:
        out.append(("\\boxed{" + gold.replace("\\frac", "\\dfrac") + "}", "dfrac"))
    n = int_or_none(gold)
    if n is not None:
        out += [
            (f"so we get \\boxed{{{n + 1}}}", "off-by-one"),
            (f"so we get \\boxed{{{-n}}}", "sign"),
            (f"so we get \\boxed{{{n * 2}}}", "double"),
            (f"so we get \\boxed{{{n}.0}}", "decimal-form"),
            (f"so $x = {n}$", "assignment"),
            (f"The total is {n}", "plain-number"),
        ]
        if n >= 1000:
            out.append((f"\\boxed{{{n:,}}}", "thousands-commas"))
    m = FRAC.match(gold.strip())
    if m:
        sign = -1 if m.group(1) else 1
        a, b = int(m.group(2)), int(m.group(3))
        if b:
            val = sign * a / b
            out += [
                (f"\\boxed{{{round(val, 6)}}}", "decimal-6"),
                (f"\\boxed{{{round(val, 2)}}}", "decimal-2"),
                (f"\\boxed{{{m.group(1)}{a}/{b}}}", "slash"),
                (f"\\boxed{{{m.group(1)}\\frac{{{b}}}{{{a}}}}}", "reciprocal"),
            ]
    t = re.fullmatch(r"\(([^,()]+),([^,()]+)\)", gold.replace(" ", ""))
    if t:
        out.append((f"\\boxed{{({t.group(2)},{t.group(1)})}}", "swapped-pair"))
    if "\\sqrt" in gold and not gold.strip().startswith("-"):
        out.append((f"\\boxed{{-{gold}}}", "negated-radical"))
    if "pmatrix" in gold:
        out.append(("\\boxed{" + gold.replace("pmatrix", "bmatrix") + "}", "bmatrix"))
    pm = re.fullmatch(r"([^\\]*?)\s*\\pm\s*(.+)", gold)
    if pm:
        a, b = pm.group(1).strip(), pm.group(2).strip()
        out.append((f"\\boxed{{{a}+{b}, {a}-{b}}}", "pm-expanded"))
        out.append((f"\\boxed{{{a}+{b}}}", "pm-one-root"))
    if "," in gold and not re.search(r"[()\[\]{}]", gold) and not re.search(r"\d,\d{3}", gold):
        parts = [p.strip() for p in gold.split(",")]
        out.append(("\\boxed{" + ", ".join(reversed(parts)) + "}", "list-reversed"))
        out.append(("\\boxed{" + ", ".join(parts[:-1]) + "}", "list-missing-item"))
    txt = re.fullmatch(r"\\text\{([A-Za-z ]+)\}", gold)
    if txt:
        out.append((f"The answer is {txt.group(1).lower()}.", "text-lowercase"))
    if n is not None:
        out.append((f"\\boxed{{{n} \\text{{ cm}}}}", "units"))
        out.append((f"\\boxed{{{n}\\%}}", "percent-added"))
    if "^\\circ" in gold:
        out.append(("\\boxed{" + gold.replace("^\\circ", "") + "}", "degrees-dropped"))
    iv = re.fullmatch(r"([(\[])(.+),(.+)([)\]])", gold.replace(" ", ""))
    if iv and "\\cup" not in gold:
        flip = {"(": "[", "[": "(", ")": "]", "]": ")"}
        out.append((f"\\boxed{{{iv.group(1)}{iv.group(2)},{iv.group(3)}{flip[iv.group(4)]}}}", "bracket-flipped"))
    if re.search(r"\\sqrt\{\d\}", gold):
        out.append(("\\boxed{" + re.sub(r"\\sqrt\{(\d)\}", r"\\sqrt\1", gold) + "}", "sqrt-no-braces"))
    sq = re.fullmatch(r"(\d+)\s*\\sqrt\{(\d+)\}", gold)
    if sq:
        k, r = int(sq.group(1)), int(sq.group(2))
        out.append((f"\\boxed{{\\sqrt{{{k * k * r}}}}}", "radical-absorbed"))
        out.append((f"\\boxed{{{k}\\sqrt{{{r + 1}}}}}", "radical-off-by-one"))
    if re.fullmatch(r"[a-z0-9^+\- ]+", gold) and re.search(r"[a-z]", gold) and "+" in gold:
        terms = re.split(r"\s*\+\s*", gold)
        out.append(("\\boxed{" + " + ".join(reversed(terms)) + "}", "terms-reordered"))
    out.append((f"\\boxed{{{rng.choice(other)}}}", "other-answer"))
    return out


def build_cases(data_dir, n_train, seed):
    rng = random.Random(seed)
    m500 = load(data_dir / "math500.jsonl")
    golds = [r["answer"] for r in m500]
    cases = []
    for r in m500:
        for resp, kind in variants(r["answer"], rng, golds):
            cases.append({"gold": r["answer"], "response": resp, "kind": kind})
        cases.append({"gold": r["answer"], "response": r["solution"], "kind": "math500-solution"})
    train = load(data_dir / "math_train.jsonl")
    rng.shuffle(train)
    for i, r in enumerate(train[:n_train]):
        cases.append({"gold": r["answer"], "response": r["solution"], "kind": "train-solution"})
        other = train[(i + 1) % n_train]
        cases.append({"gold": r["answer"], "response": other["solution"], "kind": "train-mismatch"})
    return cases


def pathological():
    big = "All work and no play makes Jack a dull boy. " * 20000 + "The answer is \\boxed{7}."
    return [
        {"gold": "5", "response": "\\boxed{10^{10^{10^{10}}}}", "kind": "power-tower"},
        {"gold": "7", "response": "The answer is " + "$1$ and 2, " * 40000 + "7.", "kind": "long-answer-line"},
        {"gold": "\\frac{1}{5}", "response": "\\\\frac{1}{5} " * 60000 + "\\\\boxed{\\\\frac{1}{5}}", "kind": "doubled-backslashes"},
        {"gold": "5", "response": "\\boxed{(10^{100})!}", "kind": "huge-factorial"},
        {"gold": "7", "response": "\\boxed{" + "{" * 1500 + "1" + "}" * 1500 + "}", "kind": "nested-braces"},
        {"gold": "7", "response": "\\boxed{" + "(" * 1500 + "1" + ")" * 1500 + "}", "kind": "nested-parens"},
        {"gold": "7", "response": "\\boxed{" + "\\frac{1}{" * 300 + "1" + "}" * 300 + "}", "kind": "nested-frac"},
        {"gold": "7", "response": big, "kind": "megabyte-response"},
        {"gold": "7", "response": "$ { \\( \\[ $$ \\boxed{ \\text{ " * 30000, "kind": "unbalanced-junk"},
        {"gold": ",".join(map(str, range(1500))), "response": "\\boxed{" + ",".join(map(str, reversed(range(1500)))) + "}", "kind": "long-set"},
    ]


def run_math_verify(cases):
    from math_verify import parse, verify

    # CPU time of this thread, so that other load on a shared machine does not count.
    clock = time.thread_time
    results, times = [], []
    for c in cases:
        t = clock()
        try:
            # The gold wrapped in `$...$`, or as written when the case says so (a gold that is a
            # whole solution, in the style set).
            gold = parse(c.get("mv_gold", "$" + c["gold"] + "$"))
            pred = parse(c["response"])
            ok = bool(verify(gold, pred))
        except Exception:  # Math-Verify raises on some inputs; count as "not equivalent".
            ok = False
        times.append(clock() - t)
        results.append(ok)
    return results, times


def run_ours(cmd, cases, workdir, repeat=1):
    inp = workdir / "in.jsonl"
    out = workdir / "out.jsonl"
    with open(inp, "w", encoding="utf-8") as f:
        for _ in range(repeat):
            for c in cases:
                f.write(json.dumps({"gold": c["gold"], "response": c["response"]}) + "\n")
    args = shlex.split(cmd) + ["--input", str(inp), "--output", str(out), "--threads", "1"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(args, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds (user + system) of the child: process start, JSON I/O and verification.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        sys.exit(f"{cmd} failed ({proc.returncode}):\n{proc.stderr}")
    rows = load(out)
    slow = re.search(r"slowest (\d+) us \(line (\d+)\)", proc.stderr)
    slowest = (int(slow.group(1)), int(slow.group(2))) if slow else (None, None)
    return rows[: len(cases)], cpu, slowest, proc.stderr.strip()


def main():
    root = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", default=str(root / "target/release/examples/verify_jsonl"))
    ap.add_argument("--data-dir", type=Path, default=root.parent / "shared/data")
    ap.add_argument("--n-train", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=20, help="copies of the set for tbrm's timing run")
    ap.add_argument("--disagreements", type=Path, default=Path("/tmp/bench_verify_disagreements.jsonl"))
    ap.add_argument("--no-styles", action="store_true", help="skip the harder-styles set")
    args = ap.parse_args()

    cases = build_cases(args.data_dir, args.n_train, args.seed)
    styles = [] if args.no_styles else build_style_cases(args.data_dir, args.seed)
    print(f"{len(cases)} MATH cases and {len(styles)} style cases from {args.data_dir}")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        ours, _, slow_ours, _ = run_ours(args.ours, cases, d)
        _, cpu_rep, _, _ = run_ours(args.ours, cases, d, repeat=args.repeat)
        patho_rows, _, slow_patho, _ = run_ours(args.ours, pathological(), d)
        ours_styles = run_ours(args.ours, styles, d)[0] if styles else []
    mv, mv_times = run_math_verify(cases)
    mv_styles = run_math_verify(styles)[0] if styles else []

    agree = sum(o["correct"] == m for o, m in zip(ours, mv))
    n = len(cases)
    mv_total = sum(mv_times)
    mv_rate = n / mv_total
    ours_rate = n * args.repeat / cpu_rep
    worst_mv = max(range(n), key=lambda i: mv_times[i])
    print(f"agreement: {agree}/{n} = {100 * agree / n:.2f}%")
    print(f"tbrm correct: {sum(o['correct'] for o in ours)}, Math-Verify correct: {sum(mv)}")
    print(f"Math-Verify: {mv_rate:.1f} cases/s per CPU second, one thread ({mv_total:.2f} CPU s), slowest {1000 * mv_times[worst_mv]:.1f} ms CPU ({cases[worst_mv]['kind']})")
    print(f"tbrm: {ours_rate:.0f} cases/s per CPU second, one thread ({n * args.repeat} cases in {cpu_rep:.3f} CPU s incl. process start and JSON I/O), slowest {slow_ours[0]} us wall")
    print(f"speed-up: {ours_rate / mv_rate:.0f}x")
    if styles:
        agree_s = sum(o["correct"] == m for o, m in zip(ours_styles, mv_styles))
        print(f"style set agreement: {agree_s}/{len(styles)} = {100 * agree_s / len(styles):.2f}%")
        print(f"  tbrm correct: {sum(o['correct'] for o in ours_styles)}, Math-Verify correct: {sum(mv_styles)}, "
              f"intended correct: {sum(c['want'] for c in styles)}; tbrm = intended on "
              f"{sum(o['correct'] == c['want'] for o, c in zip(ours_styles, styles))}, Math-Verify = intended on "
              f"{sum(m == c['want'] for m, c in zip(mv_styles, styles))}")
        per = {}
        for c, o, m in zip(styles, ours_styles, mv_styles):
            k = c["kind"].split("/")[0]
            total, same = per.get(k, (0, 0))
            per[k] = (total + 1, same + (o["correct"] == m))
        print("  per style: " + ", ".join(f"{k} {same}/{total}" for k, (total, same) in per.items()))
    print(f"pathological set (tbrm only): slowest {slow_patho[0]} us; verdicts:")
    for c, r in zip(pathological(), patho_rows):
        print(f"  {c['kind']}: correct={r['correct']} reason={r['reason'][:90]!r}")
    by_kind = {}
    with open(args.disagreements, "w", encoding="utf-8") as f:
        for c, o, m in zip(cases + styles, ours + ours_styles, mv + mv_styles):
            if o["correct"] != m:
                by_kind.setdefault(c["kind"], []).append(c)
                f.write(json.dumps({**c, "tbrm": o["correct"], "math_verify": m,
                                    "extracted": o["extracted"], "reason": o["reason"]}) + "\n")
    print(f"disagreements by kind (all written to {args.disagreements}):")
    for k, v in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
        print(f"  {k}: {len(v)}")


if __name__ == "__main__":
    main()
