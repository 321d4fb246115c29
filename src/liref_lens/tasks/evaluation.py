"""`EvalResult`: the per-item outcome of evaluating a task, with its parse failures.

Accuracy is over all items: a generation that could not be parsed is wrong, and its index is
kept in ``failures`` so that the failure rate is always reported next to the accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from .base import Answer

__all__ = ["EvalResult"]


@dataclass(frozen=True)
class EvalResult:
    """Per-item outcome of `Task.evaluate`.

    Attributes:
        task: The task name.
        predictions: The parsed answer of each generation (``None`` where parsing failed).
        correct: Whether each item was answered correctly; a parse failure is wrong.
        failures: Indices of the generations that could not be parsed.
        fallbacks: Indices parsed by a fallback rule (counted as failures if ``strict``).
        labels: The label of each item.

    Example:
        >>> result = EvalResult("toy", predictions=(4.0, None), correct=(True, False),
        ...                     failures=(1,), fallbacks=(), labels=("reasoning", None))
        >>> result.accuracy, result.n_failures, result.per_label
        (0.5, 1, {'reasoning': 1.0})
    """

    task: str
    predictions: tuple[Answer | None, ...]
    correct: tuple[bool, ...]
    failures: tuple[int, ...]
    fallbacks: tuple[int, ...]
    labels: tuple[str | None, ...]

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def n_correct(self) -> int:
        return sum(self.correct)

    @property
    def n_failures(self) -> int:
        return len(self.failures)

    @property
    def accuracy(self) -> float:
        """Fraction correct over all items (parse failures count as wrong); NaN if empty."""
        return self.n_correct / self.n if self.n else math.nan

    @property
    def failure_rate(self) -> float:
        return self.n_failures / self.n if self.n else math.nan

    @property
    def per_label(self) -> dict[str, float]:
        """Accuracy within each label (unlabelled items are left out)."""
        totals: dict[str, list[int]] = {}
        for ok, label in zip(self.correct, self.labels, strict=True):
            if label is not None:
                totals.setdefault(label, [0, 0])
                totals[label][0] += ok
                totals[label][1] += 1
        return {label: hit / total for label, (hit, total) in sorted(totals.items())}

    def to_frame(self) -> pd.DataFrame:
        """One row per item: index, label, prediction, correct, parse status."""
        import pandas as pd

        failed, fallback = set(self.failures), set(self.fallbacks)
        return pd.DataFrame(
            {
                "label": list(self.labels),
                "prediction": list(self.predictions),
                "correct": list(self.correct),
                "parse_failed": [i in failed for i in range(self.n)],
                "fallback": [i in fallback for i in range(self.n)],
            }
        )

    def __str__(self) -> str:
        text = (
            f"{self.task}: {self.n_correct}/{self.n} correct ({self.accuracy:.1%}), "
            f"{self.n_failures} parse failures, {len(self.fallbacks)} fallback parses"
        )
        per_label = ", ".join(f"{k} {v:.1%}" for k, v in self.per_label.items())
        return f"{text}; {per_label}" if per_label else text
