#!/usr/bin/env python3
"""(gold, response) pairs in the harder answer styles, built from the shared DAPO-17k,
OlympiadBench and Minerva answers, for checking tbrm-verify against Math-Verify.

Each gold answer from the data is rewritten into one of the styles below, once as an equivalent
response and once as a near miss (another value in the same style), deterministically (seeded):

    decimal-comma      `27,39` (plain text) for 27.39, `2,74 $`, `1234,00`; near: last digit
    percent-word       `28 pct`, `28 percentage`, `\\boxed{28 pct}` for `28\\%`; near: 29
    relation           `-x > -1` for `x < 1`, `x != 3` / `x \\ne 3` for `x \\neq 3`; near: flipped
    approx-chain       `x = \\frac{9}{32} \\approx 0.28` for 9/32; near: wrong exact value
    labelled-tuple     `(p,q)=(3,2)` for `(3,2)` and back; near: swapped
    semicolon-tuple    `(0;-2;6)` for `(0,-2,6)` and back; near: one coordinate changed
    doubled-backslash  `\\\\frac{9}{32}` (every backslash doubled) in the response or the gold
    final-answer-prose "Final Answer: The largest $n$ is 34."; near: 35
    gold-solution      the gold is a whole solution (Minerva's, OlympiadBench's with a final
                       sentence, a short synthetic one); near: another problem's answer
    tuple-list-order   lists of tuples reordered, as a set, as separate boxes / spans; near:
                       a tuple dropped or its coordinates swapped
    tuple-vs-set       `(3,1)` against `\\{1,3\\}` (not equal), in order (equal as written)
    thousands-vs-list  `32,349` / `32{,}349` / `32,\\!349` equal 32349, `32, 349` does not
                       (unless the gold is written so)

`build_style_cases(data_dir, seed)` returns dicts with `gold`, `response`, `kind` (style and
variant), `want` (the intended verdict) and `mv_gold`, the gold text as given to Math-Verify's
`parse`: wrapped in `$...$` like the MATH set, except a gold that is a whole solution, which is
passed as written. `python3 scripts/verify_style_cases.py OUT.jsonl` writes the set.
"""

import json
import math
import random
import re
import sys
from pathlib import Path


def load(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def case(gold, response, kind, want, mv_gold=None):
    return {
        "gold": gold,
        "response": response,
        "kind": kind,
        "want": want,
        "mv_gold": mv_gold if mv_gold is not None else "$" + gold + "$",
    }


INT = re.compile(r"-?\d+")
FRAC = re.compile(r"(-?)\\frac\{(\d+)\}\{(\d+)\}")
DEC = re.compile(r"-?\d+\.\d+")
TUPLE = re.compile(r"\((-?\d+(?:,\s*-?\d+)+)\)")
TUPLES = re.compile(r"\(-?\d+(?:,\s*-?\d+)+\)(?:,\s*\(-?\d+(?:,\s*-?\d+)+\))+")


def tup(xs, sep=","):
    return "(" + sep.join(str(x) for x in xs) + ")"


def approx2(v):
    return f"{v:.2f}"


def decimal_comma(rng, decimals, ints):
    out = []
    for d in decimals:
        if d.startswith("-"):
            continue
        ip, fp = d.split(".")
        c = f"{ip},{fp}"
        # `1,325` is a thousands separator, not 1.325 (Math-Verify reads it so too).
        thousands = len(fp) == 3 and ip[0] != "0" and len(ip) <= 3
        last = int(fp[-1])
        near = f"{ip},{fp[:-1]}{(last + 1) % 10}"
        tmpl = rng.choice(
            [
                "The answer is {}.",
                "Final Answer: {}",
                "So the result is approximately {} m.",
                "{} $",
                "Soucis : {} $ a..",
                "The total is {} euros.",
                "Final Answer: The mass of the sample is {} kg.",
            ]
        )
        kind = "decimal-comma/ambiguous-thousands" if thousands else "decimal-comma"
        out.append(case(d, tmpl.format(c), kind, not thousands))
        out.append(case(d, tmpl.format(near), kind + "/near", False))
    for n in ints:
        out.append(case(str(n), f"The answer is {n},00.", "decimal-comma/zero-cents", True))
        out.append(case(str(n), f"The answer is {n},5.", "decimal-comma/near", False))
    return out


def percent_word(rng, ints):
    out = []
    words = ["pct", "percentage", "percent"]
    for i, n in enumerate(ints):
        w = words[i % 3]
        gold = f"{n}\\%"
        form = rng.choice(
            [
                "{n} {w}",
                "The answer is {n} {w}",
                "\\boxed{{{n} {w}}}",
                "${n}$ {w}",
                "so $\\boxed{{{n}}}$ {w}",
                "Final Answer: The price went up by {n} {w}.",
            ]
        )
        out.append(case(gold, form.format(n=n, w=w), "percent-word", True))
        out.append(case(gold, form.format(n=n + 1, w=w), "percent-word/near", False))
        if i % 3 == 0:
            out.append(case(f"0.{n:02d}" if n < 100 else str(n / 100), f"{n} {w}", "percent-word/value", True))
            out.append(case(str(n), f"\\boxed{{{n} {w}}}", "percent-word/bare-gold", True))
    return out


def relation(rng, ints):
    out = []
    for i, n in enumerate(ints):
        m = -n
        k = i % 4
        if k == 0:
            out.append(case(f"x < {n}", f"$-x > {m}$", "relation/negated", True))
            out.append(case(f"x < {n}", f"$x > {m}$", "relation/near", False))
        elif k == 1:
            out.append(case(f"x \\le {n}", f"Thus $-x \\ge {m}$.", "relation/negated", True))
            out.append(case(f"x \\le {n}", f"$x \\ge {n}$", "relation/near", False))
            out.append(case(f"x \\geq {n}", f"$ {n} \\leq x$", "relation/flipped", True))
        elif k == 2:
            out.append(case(f"x \\neq {n}", f"The solution is $x != {n}$", "relation/neq", True))
            out.append(case(f"x \\neq {n}", f"$x \\ne {n + 1}$", "relation/near", False))
        else:
            out.append(case(f"x != {n}", f"We find that $x \\neq {n}$.", "relation/neq", True))
            out.append(case(f"x != {n}", f"We find that $x = {n}$.", "relation/near", False))
    return out


def approx_chain(rng, fracs, radicals):
    out = []
    for sign, a, b in fracs:
        v = (-1 if sign else 1) * a / b
        g = f"{sign}\\frac{{{a}}}{{{b}}}"
        wrong = f"{sign}\\frac{{{a + 1}}}{{{b}}}"
        form = rng.choice(["$x = {} \\approx {}$", "\\boxed{{{} \\approx {}}}", "The answer is ${} \\approx {}$."])
        out.append(case(g, form.format(g, approx2(v)), "approx-chain", True))
        out.append(case(g, form.format(wrong, approx2(v)), "approx-chain/near", False))
        if a % 2:
            exact = abs(round(v, 2) - v) < 5e-7
            out.append(case(g, f"\\boxed{{{approx2(v)}}}", "approx-chain/approx-only", exact))
    for g, v in radicals:
        out.append(case(g, f"$x = {g} \\approx {v:.3f}$", "approx-chain", True))
        out.append(case(g, f"$x = {v:.3f} \\approx {g}$", "approx-chain/near", False))
    return out


LABELS2 = ["(p,q)", "(x, y)", "(a,b)", "(m,n)"]
LABELS3 = ["(a,b,c)", "(x, y, z)", "(p,q,r)"]


def labelled_tuple(rng, tuples):
    out = []
    for i, xs in enumerate(tuples):
        lab = rng.choice(LABELS2 if len(xs) == 2 else LABELS3)
        g = tup(xs)
        sw = list(reversed(xs))
        if i % 2 == 0:
            out.append(case(g, f"Thus ${lab} = {tup(xs, ', ')}$.", "labelled-tuple", True))
            out.append(case(g, f"\\boxed{{{lab}={tup(sw)}}}", "labelled-tuple/near", False))
        else:
            out.append(case(f"{lab}={g}", f"\\boxed{{{g}}}", "labelled-tuple/gold", True))
            out.append(case(f"{lab}={g}", f"\\boxed{{{tup(sw)}}}", "labelled-tuple/gold-near", False))
    return out


def semicolon_tuple(rng, tuples):
    out = []
    for i, xs in enumerate(tuples):
        g = tup(xs)
        j = rng.randrange(len(xs))
        near = list(xs)
        near[j] = near[j] + 1
        if i % 3 == 2:
            out.append(case(tup(xs, ";"), f"\\boxed{{{g}}}", "semicolon-tuple/gold", True))
            out.append(case(tup(xs, ";"), f"\\boxed{{{tup(near)}}}", "semicolon-tuple/gold-near", False))
        else:
            form = rng.choice(["\\boxed{{{}}}", "The point is ${}$."])
            out.append(case(g, form.format(tup(xs, ";")), "semicolon-tuple", True))
            out.append(case(g, form.format(tup(near, "; ")), "semicolon-tuple/near", False))
    return out


def double(s):
    return s.replace("\\", "\\\\")


def doubled_backslash(rng, golds, others):
    out = []
    for i, g in enumerate(golds):
        other = others[i % len(others)]
        if other == g:
            other = others[(i + 1) % len(others)]
        if i % 3 == 2:
            out.append(case(double(g), f"So the answer is $\\boxed{{{g}}}$.", "doubled-backslash/gold", True))
            out.append(case(double(g), f"So the answer is $\\boxed{{{other}}}$.", "doubled-backslash/gold-near", False))
        else:
            form = rng.choice(["So the answer is $\\boxed{{{}}}$.", "The final answer is ${}$. I hope it is correct.", "\\boxed{{{}}}"])
            out.append(case(g, double(form.format(g)), "doubled-backslash", True))
            out.append(case(g, double(form.format(other)), "doubled-backslash/near", False))
    return out


PROSE = [
    "Final Answer: The largest $n$ is {}.",
    "Final Answer: The number of such $k$ is {}.",
    "**Final Answer:** The minimum value of $f(x)$ is {}.",
    "Final Answer: The sum of all such $a_i$ equals {}.",
    "Final Answer: The smallest possible value is {}.",
    "Final Answer: The answer to the question is {}.",
]


def final_answer_prose(rng, ints):
    out = []
    for i, n in enumerate(ints):
        t = PROSE[i % len(PROSE)]
        lead = "We set up the equations and solve them step by step.\n\n"
        out.append(case(str(n), lead + t.format(n), "final-answer-prose", True))
        out.append(case(str(n), lead + t.format(n + 1), "final-answer-prose/near", False))
    # A sentence that names a variable after the number: Math-Verify takes the rightmost
    # candidate (`$k$`); tbrm skips a lone name when a number is there.
    n = ints[0]
    out.append(case(str(n), f"Final Answer: There are {n} ways to choose $k$.", "final-answer-prose/name-last", True))
    return out


def gold_solution(rng, minerva, olymp, ints):
    out = []
    for i, (sol, ans) in enumerate(minerva):
        other = minerva[(i + 1) % len(minerva)][1]
        out.append(case(sol, f"The answer is $\\boxed{{{ans}}}$.", "gold-solution/minerva", True, mv_gold=sol))
        out.append(case(sol, f"The answer is $\\boxed{{{other}}}$.", "gold-solution/minerva-near", False, mv_gold=sol))
    for i, (sol, ans) in enumerate(olymp):
        other = olymp[(i + 1) % len(olymp)][1]
        gold = sol.rstrip() + f"\n\nFinal Answer: The final answer is ${ans}$. I hope it is correct."
        out.append(case(gold, f"\\boxed{{{ans}}}", "gold-solution/olympiad", True, mv_gold=gold))
        out.append(case(gold, f"\\boxed{{{other}}}", "gold-solution/olympiad-near", False, mv_gold=gold))
    for n in ints:
        gold = f"We count the cases one by one and add them up. Hence the answer is {n}."
        out.append(case(gold, f"\\boxed{{{n}}}", "gold-solution/sentence", True, mv_gold=gold))
        out.append(case(gold, f"\\boxed{{{n + 2}}}", "gold-solution/sentence-near", False, mv_gold=gold))
    return out


def parse_tuples(s):
    return [[int(x) for x in m.split(",")] for m in re.findall(r"\(([^()]*)\)", s)]


def tuple_list_order(rng, lists):
    out = []
    for i, ts in enumerate(lists):
        g = ", ".join(tup(t) for t in ts)
        shuffled = ts[:]
        while shuffled == ts:
            rng.shuffle(shuffled)
        k = i % 4
        if k == 0:
            resp = "\\boxed{" + ", ".join(tup(t) for t in shuffled) + "}"
        elif k == 1:
            resp = "\\boxed{\\{" + ", ".join(tup(t) for t in shuffled) + "\\}}"
        elif k == 2 and len(ts) <= 6:
            resp = " and ".join(f"$\\boxed{{{tup(t)}}}$" for t in shuffled)
        else:
            resp = "The solutions are " + ", ".join(f"${tup(t)}$" for t in shuffled[:-1]) + f" and ${tup(shuffled[-1])}$."
            if len(ts) > 6:
                resp = "\\boxed{" + "; ".join(tup(t) for t in shuffled) + "}"
        out.append(case(g, resp, "tuple-list-order", True))
        near = [list(t) for t in shuffled]
        if i % 2 == 0:
            near = near[:-1]
            kind = "tuple-list-order/missing"
        else:
            j = next((j for j, t in enumerate(near) if list(reversed(t)) not in ts), None)
            if j is None:
                near = near[:-1]
            else:
                near[j] = list(reversed(near[j]))
            kind = "tuple-list-order/swapped"
        out.append(case(g, "\\boxed{" + ", ".join(tup(t) for t in near) + "}", kind, False))
    return out


def tuple_vs_set(rng, tuples):
    out = []
    for i, xs in enumerate(tuples):
        g = tup(xs)
        inner = ",".join(str(x) for x in xs)
        srt = sorted(xs)
        if srt != list(xs):
            out.append(case(g, "\\boxed{\\{" + ",".join(str(x) for x in srt) + "\\}}", "tuple-vs-set/sorted-set", False))
        out.append(case(g, "\\boxed{\\{" + inner + "\\}}", "tuple-vs-set/set-as-written", True))
        if i % 2 == 0:
            rev = list(reversed(xs))
            out.append(case(", ".join(str(x) for x in xs), f"\\boxed{{{tup(rev)}}}", "tuple-vs-set/list-gold", True))
            out.append(case("\\{" + inner + "\\}", f"\\boxed{{{tup(rev)}}}", "tuple-vs-set/set-gold", True))
    return out


def thousands_vs_list(rng, ints):
    out = []
    for i, n in enumerate(ints):
        s = str(n)
        head, tail = s[:-3], s[-3:]
        k = i % 4
        if k == 0:
            out.append(case(s, f"is $\\boxed{{{head}, {tail}}}$", "thousands-vs-list/spaced", False))
            out.append(case(s, f"is $\\boxed{{{head},{tail}}}$", "thousands-vs-list/comma", True))
        elif k == 1:
            out.append(case(s, f"is $\\boxed{{{head},\\!{tail}}}$", "thousands-vs-list/thin-space", True))
            out.append(case(s, f"is $\\boxed{{{head}{{,}}{tail}}}$", "thousands-vs-list/braced", True))
        elif k == 2:
            out.append(case(f"{head}, {tail}", f"is $\\boxed{{{head}, {tail}}}$", "thousands-vs-list/gold-list", True))
            out.append(case(f"{head}, {tail}", f"is $\\boxed{{{s}}}$", "thousands-vs-list/gold-list-near", False))
        else:
            out.append(case(s, f"The answer is {head},{tail}.", "thousands-vs-list/plain", True))
            out.append(case(s, f"The answer is {head},{int(tail) + 1:03d}." if int(tail) < 999 else f"The answer is {head},998.", "thousands-vs-list/plain-near", False))
    return out


def build_style_cases(data_dir, seed=0):
    rng = random.Random(seed)
    data_dir = Path(data_dir)
    dapo = load(data_dir / "dapo17k.jsonl")
    olymp = load(data_dir / "olympiadbench.jsonl")
    minerva = load(data_dir / "minerva_math.jsonl")

    d_ints = sorted({int(r["answer"]) for r in dapo if INT.fullmatch(r["answer"].strip())})
    small = [n for n in d_ints if 2 <= n <= 95]
    mid = [n for n in d_ints if -500 <= n <= 500 and n != 0]
    big = [n for n in d_ints if 1000 <= n <= 999999]
    decimals = sorted({r["answer"].strip() for r in minerva + olymp if DEC.fullmatch(r["answer"].strip())})
    o_fracs = []
    for r in olymp:
        m = FRAC.fullmatch(r["answer"].strip())
        if m and m.groups() not in o_fracs:
            o_fracs.append(m.groups())
    o_fracs = [(s, int(a), int(b)) for s, a, b in o_fracs]
    radicals = []
    for r in olymp:
        m = re.fullmatch(r"(\d*)\s*\\sqrt\{(\d+)\}", r["answer"].strip())
        if m:
            k = int(m.group(1) or 1)
            radicals.append((r["answer"].strip(), k * math.sqrt(int(m.group(2)))))
    o_tuples = [[int(x) for x in m.group(1).split(",")] for r in olymp if (m := TUPLE.fullmatch(r["answer"].replace(" ", "")))]
    o_tuples = [t for t in o_tuples if len(t) <= 4]
    o_lists = [parse_tuples(r["answer"]) for r in olymp if TUPLES.fullmatch(r["answer"].replace(" ", ""))]
    latex_golds = [r["answer"].strip() for r in olymp if re.fullmatch(r"[-\\a-z{}0-9^ ]+", r["answer"].strip()) and "\\" in r["answer"] and "$" not in r["answer"]]

    def pick(xs, k):
        xs = list(xs)
        return rng.sample(xs, min(k, len(xs)))

    # Synthesised tuples from DAPO answers (pairs and triples of distinct values).
    dt = pick(mid, 40)
    syn_pairs = [[dt[i], dt[i + 1]] for i in range(0, 16, 2)]
    syn_triples = [[dt[i], dt[i + 1], dt[i + 2]] for i in range(16, 34, 3)]
    syn_lists = [[[dt[i], dt[i + 1]], [dt[i + 2], dt[i + 3]], [dt[i + 1], dt[i]]] for i in range(0, 24, 4)]

    minerva_sol = [
        (r["solution"], r["answer"].strip())
        for r in minerva
        if "\\boxed" in r["solution"] and DEC.fullmatch(r["answer"].strip())
    ]
    olymp_sol = [
        (r["solution"], r["answer"].strip())
        for r in olymp
        if "\\boxed" not in r["solution"] and (INT.fullmatch(r["answer"].strip()) or FRAC.fullmatch(r["answer"].strip()))
    ]

    cases = []
    cases += decimal_comma(rng, pick(decimals, 16), pick(big, 3))
    cases += percent_word(rng, pick(small, 12))
    cases += relation(rng, pick(mid, 14))
    cases += approx_chain(rng, pick(o_fracs, 12), pick(radicals, 4))
    cases += labelled_tuple(rng, o_tuples + syn_pairs[:6] + syn_triples[:4])
    cases += semicolon_tuple(rng, pick(o_tuples, 6) + syn_triples + syn_pairs[4:])
    cases += doubled_backslash(rng, pick(latex_golds, 15), pick(latex_golds, 15))
    cases += final_answer_prose(rng, pick(d_ints, 14))
    cases += gold_solution(rng, pick(minerva_sol, 6), pick(olymp_sol, 6), pick(big, 3))
    cases += tuple_list_order(rng, o_lists + syn_lists)
    cases += tuple_vs_set(rng, pick(o_tuples, 6) + syn_pairs[:6])
    cases += thousands_vs_list(rng, pick(big, 16))
    return cases


def main():
    root = Path(__file__).resolve().parent.parent
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/verify_style_cases.jsonl")
    cases = build_style_cases(root.parent / "shared/data")
    with open(out, "w", encoding="utf-8") as f:
        for c in cases:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    kinds = {}
    for c in cases:
        kinds[c["kind"].split("/")[0]] = kinds.get(c["kind"].split("/")[0], 0) + 1
    print(f"{len(cases)} cases written to {out}: " + ", ".join(f"{k} {v}" for k, v in kinds.items()))


if __name__ == "__main__":
    main()
