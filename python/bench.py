#!/usr/bin/env python3
"""Throughput of the Python binding's `verify`, in-process on one core, against Math-Verify on
the same pairs.

The pairs are the 8,407 MATH cases of `scripts/bench_verify.py` (its builder is reused: MATH500
gold answers with correct, reformatted and perturbed predictions, reference solutions as whole
responses, MATH-train solutions matched and mismatched). Both verifiers run in this process, in
one thread, as a Python caller would use them: one `verify` call per pair (Math-Verify: `parse`
of the gold wrapped in `$...$`, `parse` of the response, `verify`). So that load from other work
on a shared machine falls on both alike, the pairs are split into chunks and the two are
interleaved chunk by chunk; each chunk is timed in CPU time of this thread (`time.thread_time`)
and in wall time. tbrm's `verify` is run `--repeat` times over each chunk (it is ~100x faster,
so a single pass would be too short to time well). Also reports verdict agreement and the
single-threaded `verify_batch` rate.

Needs a Python with both `math-verify` and the tbrm_verify wheel installed, e.g.:

    python3 -m venv /tmp/mv-venv && /tmp/mv-venv/bin/pip install math-verify==0.9.0
    /tmp/mv-venv/bin/pip install ./python
    /tmp/mv-venv/bin/python python/bench.py
"""

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from bench_verify import build_cases  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared/data")
    ap.add_argument("--n-train", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunks", type=int, default=8, help="interleaving rounds")
    ap.add_argument("--repeat", type=int, default=10, help="passes of tbrm over each chunk")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N pairs (0: all)")
    args = ap.parse_args()

    import tbrm_verify
    from math_verify import parse, verify as mv_verify

    cases = build_cases(args.data_dir, args.n_train, args.seed)
    if args.limit:
        cases = cases[: args.limit]
    pairs = [(c["gold"], c["response"]) for c in cases]
    n = len(pairs)
    print(f"{n} MATH pairs from {args.data_dir}; tbrm_verify {tbrm_verify.__version__}")

    # Chunks of shuffled pairs, so that each round holds a mix of kinds.
    order = list(range(n))
    random.Random(args.seed).shuffle(order)
    chunks = [order[i :: args.chunks] for i in range(args.chunks)]

    ours_fn = tbrm_verify.verify
    ours_fn("1", "1")  # builds the verifier's lazily compiled patterns
    mv_ok = [False] * n
    ours_ok = [False] * n
    cpu = {"mv": 0.0, "ours": 0.0, "batch": 0.0}
    wall = {"mv": 0.0, "ours": 0.0, "batch": 0.0}
    for k, chunk in enumerate(chunks):
        sub = [pairs[i] for i in chunk]

        c0, w0 = time.thread_time(), time.perf_counter()
        for i, (g, r) in zip(chunk, sub):
            try:
                mv_ok[i] = bool(mv_verify(parse("$" + g + "$"), parse(r)))
            except Exception:  # Math-Verify raises on some inputs: "not equivalent".
                mv_ok[i] = False
        cpu["mv"] += time.thread_time() - c0
        wall["mv"] += time.perf_counter() - w0

        c0, w0 = time.thread_time(), time.perf_counter()
        for _ in range(args.repeat):
            for g, r in sub:
                ours_fn(g, r)
        cpu["ours"] += time.thread_time() - c0
        wall["ours"] += time.perf_counter() - w0

        # verify_batch on one thread runs in this thread (GIL released), so thread_time counts it.
        c0, w0 = time.thread_time(), time.perf_counter()
        for _ in range(args.repeat):
            verdicts = tbrm_verify.verify_batch([g for g, _ in sub], [r for _, r in sub], threads=1)
        cpu["batch"] += time.thread_time() - c0
        wall["batch"] += time.perf_counter() - w0
        for i, v in zip(chunk, verdicts):
            ours_ok[i] = v.correct
        print(
            f"  round {k + 1}/{len(chunks)}: {len(chunk)} pairs; so far Math-Verify "
            f"{cpu['mv']:.1f} CPU s, tbrm verify {cpu['ours']:.2f} CPU s ({args.repeat} passes)",
            flush=True,
        )

    rates = {
        key: {
            "cpu": n * (1 if key == "mv" else args.repeat) / cpu[key],
            "wall": n * (1 if key == "mv" else args.repeat) / wall[key],
        }
        for key in cpu
    }
    agree = sum(a == b for a, b in zip(ours_ok, mv_ok))
    print(f"agreement with Math-Verify: {agree}/{n} = {100 * agree / n:.2f}%")
    print(f"{'':34}{'cases/CPU s':>14}{'cases/wall s':>14}")
    print(f"{'Math-Verify 0.9 (parse+verify)':34}{rates['mv']['cpu']:>14.0f}{rates['mv']['wall']:>14.0f}")
    print(f"{'tbrm_verify.verify':34}{rates['ours']['cpu']:>14.0f}{rates['ours']['wall']:>14.0f}")
    print(f"{'tbrm_verify.verify_batch(threads=1)':34}{rates['batch']['cpu']:>14.0f}{rates['batch']['wall']:>14.0f}")
    print(
        f"speed-up of verify: {rates['ours']['cpu'] / rates['mv']['cpu']:.0f}x (CPU time), "
        f"{rates['ours']['wall'] / rates['mv']['wall']:.0f}x (wall time); "
        f"verify_batch(threads=1): {rates['batch']['cpu'] / rates['mv']['cpu']:.0f}x (CPU time)"
    )


if __name__ == "__main__":
    main()
