"""Checks an installed tbrm_verify: verdicts, batch verification (thread counts, the GIL released),
malformed inputs, the verl and TRL reward functions and the packaged type stubs.

Run by scripts/test_python_wheel.sh in a fresh virtualenv holding only the wheel; plain asserts,
no test runner needed. Prints one line per failed check and closes with "N passed, N failed";
exits non-zero when a check failed.
"""

import pickle
import sys
import threading
import time
import traceback
from pathlib import Path

import tbrm_verify
from tbrm_verify import (
    Verdict,
    accuracy_reward,
    compute_score,
    compute_score_batch,
    make_trl_reward,
    verify,
    verify_batch,
)

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def raises(exc, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc:
        return True
    return False


# (gold, response, correct, extracted)
PAIRS = [
    ("\\frac{1}{2}", "So the probability is $\\boxed{0.5}$.", True, "0.5"),
    ("3", "so \\boxed{4}", False, "4"),
    ("(1,2)", "the answer is $(1, 2)$.", True, "(1, 2)"),
    ("\\frac12", "$0.5$", True, "0.5"),
    ("2\\sqrt{2}", "The final answer is $\\sqrt{8}$. I hope it is correct.", True, None),
    ("x^2+2x+1", "\\boxed{(x+1)^2}", True, None),
    ("10", "\\boxed{11}", False, "11"),
    ("\\{1,2,3\\}", "\\boxed{\\{3,2,1\\}}", True, None),
    ("50\\%", "\\boxed{0.5}", True, None),
]


@check
def version():
    assert isinstance(tbrm_verify.__version__, str) and tbrm_verify.__version__


@check
def verdicts():
    for gold, response, correct, extracted in PAIRS:
        v = verify(gold, response)
        assert isinstance(v, Verdict)
        assert v.correct is correct, (gold, response, v)
        if extracted is not None:
            assert v.extracted == extracted, (gold, response, v)
        assert isinstance(v.reason, str) and v.reason, v
    v = verify("\\frac{1}{2}", "So the probability is $\\boxed{0.5}$.")
    assert v.reason.startswith("equivalent"), v
    v = verify("3", "so \\boxed{4}")
    assert v.reason.startswith("not equivalent"), v


@check
def no_answer():
    v = verify("3", "I do not know.")
    assert v.correct is False and v.reason, v


@check
def verdict_object():
    v = verify("3", "so \\boxed{4}")
    assert repr(v).startswith("Verdict(correct=False, extracted='4', reason="), repr(v)
    assert v == Verdict(False, "4", v.reason)
    assert v != Verdict(True, "4", v.reason)
    assert pickle.loads(pickle.dumps(v)) == v
    assert repr(Verdict(True, None, 'a "b"')) == "Verdict(correct=True, extracted=None, reason='a \"b\"')"
    assert raises(AttributeError, setattr, v, "correct", True)


@check
def malformed_inputs_get_a_clean_false():
    cases = [
        ("\\frac{1}{", "}}}{{\\boxed{"),
        ("1", "\\boxed{" + "(" * 5000 + "}"),
        ("1", "\\boxed{10^{10^{10^{10}}}}"),
        ("1", "x" * 2_000_000),
        ("1" * 100_000, "1"),
        ("1\ud800", "\\boxed{2\udfff}"),
        ("1", "\x00\\boxed{\x00}"),
        ("", ""),
    ]
    for gold, response in cases:
        v = verify(gold, response)
        assert v.correct is False and v.reason, (gold[:40], response[:40], v)
    batch = verify_batch([g for g, _ in cases], [r for _, r in cases], threads=2)
    assert [v.correct for v in batch] == [False] * len(cases)


@check
def wrong_argument_types_raise_type_error():
    assert raises(TypeError, verify, None, "1")
    assert raises(TypeError, verify, "1", 1)
    assert raises(TypeError, verify_batch, "12", "12")
    assert raises(TypeError, verify_batch, ["1", None], ["1", "2"])
    assert raises(ValueError, verify_batch, ["1"], ["1", "2"])


@check
def batch_matches_single():
    golds = [g for g, _, _, _ in PAIRS] * 20
    responses = [r for _, r, _, _ in PAIRS] * 20
    single = [verify(g, r) for g, r in zip(golds, responses)]
    for threads in (1, 2, None, 0):
        batch = verify_batch(golds, responses, threads=threads)
        assert batch == single, threads
    assert verify_batch(tuple(golds), iter(responses)) == single
    assert verify_batch([], []) == []
    assert verify_batch(["1"], ["\\boxed{1}"])[0].correct


@check
def batch_releases_the_gil():
    # While a long verify_batch runs in a worker thread, this thread must keep running: the
    # longest stall it sees has to be far below the call's duration.
    golds = [g for g, _, _, _ in PAIRS] * 2000
    responses = [r for _, r, _, _ in PAIRS] * 2000
    span = {}

    def work():
        t = time.perf_counter()
        verify_batch(golds, responses, threads=1)
        span["call"] = time.perf_counter() - t

    worker = threading.Thread(target=work)
    last = time.perf_counter()
    worst = 0.0
    worker.start()
    while worker.is_alive():
        now = time.perf_counter()
        worst = max(worst, now - last)
        last = now
    worker.join()
    assert span["call"] > 0.05, span
    assert worst < 0.5 * span["call"], (worst, span["call"])


@check
def verl_compute_score():
    good = "Let me think. ... So the answer is $\\boxed{42}$."
    assert compute_score("openai/gsm8k", good, "42") == 1.0
    assert compute_score("openai/gsm8k", good, "41") == 0.0
    assert compute_score("math", good, "42", extra_info={"split": "train", "index": 3}) == 1.0
    assert compute_score("math", good, 42) == 1.0
    assert compute_score("math", good, ["41", "42"]) == 1.0
    assert compute_score("math", good, None) == 0.0
    assert compute_score("math", None, "42") == 0.0
    assert compute_score("math", "\\boxed{" * 1000, "42") == 0.0
    assert isinstance(compute_score("math", good, "42"), float)
    assert compute_score(data_source="math", solution_str=good, ground_truth="42") == 1.0


@check
def verl_compute_score_batch():
    sols = ["\\boxed{1}", "\\boxed{2}", "no idea", None, "\\boxed{\\frac{1}{2}}"]
    gts = ["1", "3", "2", "1", ["0.5"]]
    want = [compute_score("m", s, g) for s, g in zip(sols, gts)]
    assert want == [1.0, 0.0, 0.0, 0.0, 1.0], want
    got = compute_score_batch(
        data_sources=["m"] * 5, solution_strs=sols, ground_truths=gts, extra_infos=[None] * 5
    )
    assert got == want, got
    assert compute_score_batch(["m"] * 5, sols, gts, threads=1) == want
    assert raises(ValueError, compute_score_batch, ["m"], sols, gts)
    assert raises(ValueError, compute_score_batch, ["m"] * 5, sols, gts[:4])


@check
def trl_accuracy_reward():
    completions = ["The answer is \\boxed{4}.", "\\boxed{5}", "I give up"]
    solution = ["4", "4", "4"]
    assert accuracy_reward(completions, solution) == [1.0, 0.0, 0.0]
    # As TRL calls it: keyword arguments, the data set's other columns and TRL's own extras.
    got = accuracy_reward(
        prompts=["p"] * 3,
        completions=completions,
        completion_ids=[[1]] * 3,
        solution=solution,
        trainer_state=None,
        level=["1", "2", "3"],
    )
    assert got == [1.0, 0.0, 0.0], got
    conversational = [
        [{"role": "assistant", "content": "So \\boxed{\\frac{1}{2}}"}],
        [
            {"role": "assistant", "content": "\\boxed{7}"},
            {"role": "tool", "content": "ok"},
            {"role": "assistant", "content": "Final: \\boxed{0.5}"},
        ],
        [{"role": "assistant", "content": [{"type": "text", "text": "\\boxed{0.5}"}]}],
        [{"role": "assistant", "content": "\\boxed{3}"}],
        [],
    ]
    got = accuracy_reward(conversational, ["1/2"] * 5)
    assert got == [1.0, 1.0, 1.0, 0.0, 0.0], got
    assert accuracy_reward([], []) == []


@check
def trl_factory():
    reward = make_trl_reward(gold_column="answer", threads=1, name="math_acc")
    assert reward.__name__ == "math_acc"
    got = reward(completions=["\\boxed{18}", "#### 17"], answer=["18", 18], prompts=["a", "b"])
    assert got == [1.0, 0.0], got
    try:
        reward(completions=["\\boxed{18}"], solution=["18"])
    except KeyError as e:
        assert "answer" in str(e) and "solution" in str(e), e
    else:
        raise AssertionError("missing gold column not reported")
    assert make_trl_reward().__name__ == "accuracy_reward"


@check
def type_stubs_are_packaged():
    pkg = Path(tbrm_verify.__file__).parent
    assert (pkg / "py.typed").is_file()
    stub = (pkg / "__init__.pyi").read_text()
    for name in tbrm_verify.__all__:
        assert name in stub, name


def main():
    failed = 0
    for fn in CHECKS:
        try:
            fn()
        except Exception:
            failed += 1
            print(f"FAILED {fn.__name__}:\n{traceback.format_exc()}", file=sys.stderr)
    print(f"python wheel: {len(CHECKS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
