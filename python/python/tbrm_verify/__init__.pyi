from typing import Any, Callable, List, Optional, Sequence, Tuple, final

__version__: str

@final
class Verdict:
    """The judgement on one (gold, response) pair."""

    @property
    def correct(self) -> bool:
        """Whether the extracted answer is equivalent to the gold answer."""
    @property
    def extracted(self) -> Optional[str]:
        """The answer text extracted from the response, or None."""
    @property
    def reason(self) -> str:
        """Why: which comparison decided, or what failed."""
    def __init__(self, correct: bool, extracted: Optional[str] = None, reason: str = "") -> None: ...
    def __eq__(self, other: object) -> bool: ...
    def __getnewargs__(self) -> Tuple[bool, Optional[str], str]: ...

def verify(gold: str, response: str) -> Verdict:
    """Verifies `response` (a full model response or a bare answer) against `gold`. Releases the
    GIL. Raises TypeError for an argument that is not a str."""

def verify_batch(
    golds: Sequence[str], responses: Sequence[str], threads: Optional[int] = None
) -> List[Verdict]:
    """Verifies responses[i] against golds[i] for every i on `threads` worker threads (None or 0:
    one per core) with the GIL released; verdicts in input order. Raises ValueError when the
    lengths differ and TypeError for an item that is not a str."""

def compute_score(
    data_source: Any,
    solution_str: Any,
    ground_truth: Any,
    extra_info: Any = None,
    **kwargs: Any,
) -> float:
    """verl reward function: 1.0 when `solution_str` holds an answer equivalent to
    `ground_truth` (a str, a number, or a list of acceptable answers), else 0.0."""

def compute_score_batch(
    data_sources: Sequence[Any],
    solution_strs: Sequence[Any],
    ground_truths: Sequence[Any],
    extra_infos: Optional[Sequence[Any]] = None,
    threads: Optional[int] = None,
    **kwargs: Any,
) -> List[float]:
    """verl batch reward function (reward_manager=batch): compute_score for a whole batch."""

def accuracy_reward(
    completions: Sequence[Any], solution: Sequence[Any], **kwargs: Any
) -> List[float]:
    """TRL reward function over the data set column `solution`; completions may be strings or
    conversations (lists of message dicts)."""

def make_trl_reward(
    gold_column: str = "solution",
    threads: Optional[int] = None,
    name: str = "accuracy_reward",
) -> Callable[..., List[float]]:
    """A TRL reward function reading the gold answers from the data set column `gold_column`."""
