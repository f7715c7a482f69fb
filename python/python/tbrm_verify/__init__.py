"""Math answer verification, compatible with Hugging Face Math-Verify and far faster.

``verify(gold, response)`` extracts the final answer from a model response (``\\boxed{}``,
"The final answer is", the last LaTeX span or number) and decides whether it is equivalent to
the gold answer. ``verify_batch`` does the same for many pairs on several cores without holding
the GIL. ``compute_score`` / ``compute_score_batch`` are reward functions for verl, and
``accuracy_reward`` / ``make_trl_reward`` for TRL's GRPOTrainer.

Every verification runs under a time and size budget (100 ms, bounded input sizes), so a
malformed or adversarial input gets an incorrect verdict with a reason, never a hang. The reward
functions also accept what a data set may hold instead of text (a number, None, a list of
acceptable gold answers) and score it instead of raising.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Iterable, List, Optional, Sequence

from ._tbrm_verify import Verdict, __version__, verify, verify_batch

__all__ = [
    "Verdict",
    "__version__",
    "verify",
    "verify_batch",
    "compute_score",
    "compute_score_batch",
    "accuracy_reward",
    "make_trl_reward",
]


def _text(x: Any) -> Optional[str]:
    """A gold answer or response as text; None when there is none."""
    if isinstance(x, str):
        return x
    if x is None or isinstance(x, bool):
        return None
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    if isinstance(x, numbers.Number):
        return str(x)
    return None


def _golds(x: Any) -> List[str]:
    """The acceptable gold answers: one, or several given as a list or tuple (any may match)."""
    if isinstance(x, (list, tuple)) or type(x).__name__ == "ndarray":
        return [t for t in (_text(g) for g in x) if t is not None]
    t = _text(x)
    return [] if t is None else [t]


def _completion_text(c: Any) -> Optional[str]:
    """The text of a completion: a string, or a conversation (a list of message dicts, whose
    last assistant message is taken), or one message dict. Multimodal contents (a list of
    ``{"type": "text", "text": ...}`` parts) are joined."""
    if isinstance(c, str):
        return c
    if isinstance(c, dict):
        return _content_text(c.get("content"))
    if isinstance(c, (list, tuple)):
        messages = [m for m in c if isinstance(m, dict)]
        if not messages:
            return None
        assistant = [m for m in messages if m.get("role") == "assistant"]
        return _content_text((assistant or messages)[-1].get("content"))
    return _text(c)


def _content_text(content: Any) -> Optional[str]:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and isinstance(p.get("text"), str):
                parts.append(p["text"])
        return "".join(parts)
    return None


def _scores(
    golds: Iterable[Any], responses: Iterable[Any], threads: Optional[int]
) -> List[float]:
    """1.0 or 0.0 per (gold, response): 1.0 when the response matches any acceptable gold
    answer. Pairs without text on either side score 0.0. One `verify_batch` call for all."""
    flat_golds: List[str] = []
    flat_responses: List[str] = []
    owner: List[int] = []
    n = 0
    for i, (gold, response) in enumerate(zip(golds, responses)):
        n = i + 1
        r = _text(response)
        if r is None:
            continue
        for g in _golds(gold):
            flat_golds.append(g)
            flat_responses.append(r)
            owner.append(i)
    out = [0.0] * n
    for i, v in zip(owner, verify_batch(flat_golds, flat_responses, threads)):
        if v.correct:
            out[i] = 1.0
    return out


def _check_lengths(what: str, a: Sequence[Any], b: Sequence[Any]) -> None:
    if len(a) != len(b):
        raise ValueError(f"{what}: {len(a)} and {len(b)} items")


# --- verl -------------------------------------------------------------------------------------


def compute_score(
    data_source: Any,
    solution_str: Any,
    ground_truth: Any,
    extra_info: Any = None,
    **kwargs: Any,
) -> float:
    """verl reward function (``custom_reward_function``): 1.0 when ``solution_str`` holds an
    answer equivalent to ``ground_truth``, else 0.0. ``data_source`` and ``extra_info`` are not
    used. ``ground_truth`` may be a list of acceptable answers."""
    response = _text(solution_str)
    if response is None:
        return 0.0
    for gold in _golds(ground_truth):
        if verify(gold, response).correct:
            return 1.0
    return 0.0


def compute_score_batch(
    data_sources: Sequence[Any],
    solution_strs: Sequence[Any],
    ground_truths: Sequence[Any],
    extra_infos: Optional[Sequence[Any]] = None,
    threads: Optional[int] = None,
    **kwargs: Any,
) -> List[float]:
    """verl batch reward function (``reward_model.reward_manager=batch``): the scores of
    :func:`compute_score` for a whole batch, verified on ``threads`` cores (None: all)."""
    _check_lengths("solution_strs and ground_truths differ in length", solution_strs, ground_truths)
    _check_lengths("data_sources and solution_strs differ in length", data_sources, solution_strs)
    return _scores(ground_truths, solution_strs, threads)


# --- TRL --------------------------------------------------------------------------------------


def make_trl_reward(
    gold_column: str = "solution",
    threads: Optional[int] = None,
    name: str = "accuracy_reward",
) -> Callable[..., List[float]]:
    """A TRL reward function (``GRPOTrainer(reward_funcs=...)``) that reads the gold answers from
    the data set column ``gold_column`` (TRL passes every column as a keyword argument) and
    scores each completion 1.0 (equivalent) or 0.0. Completions may be strings or conversations
    (the last assistant message is verified). ``name`` is the function's ``__name__``, which TRL
    uses in its logs (``rewards/<name>``)."""

    def reward(completions: Sequence[Any], **kwargs: Any) -> List[float]:
        if gold_column not in kwargs:
            raise KeyError(
                f"the reward needs the data set column {gold_column!r}; got columns "
                f"{sorted(k for k in kwargs if k not in ('prompts', 'completion_ids', 'trainer_state'))}"
            )
        golds = kwargs[gold_column]
        _check_lengths(f"completions and {gold_column!r} differ in length", completions, golds)
        return _scores(golds, [_completion_text(c) for c in completions], threads)

    reward.__name__ = name
    reward.__qualname__ = name
    return reward


_accuracy = make_trl_reward("solution")


def accuracy_reward(completions: Sequence[Any], solution: Sequence[Any], **kwargs: Any) -> List[float]:
    """TRL reward function over the data set column ``solution`` (as TRL's own
    ``accuracy_reward``): 1.0 per completion equivalent to its gold answer, else 0.0. For another
    column name use :func:`make_trl_reward`."""
    return _accuracy(completions, solution=solution)
