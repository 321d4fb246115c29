"""MGSM: 250 GSM8K questions translated into ten languages (Shi et al., 2022).

Source: ``juletxara/mgsm``, one configuration per language (``"en"``, ``"zh"``, ``"de"``, ...),
splits train (the 8 exemplars) and test. The gold answer is ``answer_number``; when a row lacks
it, the number after ``The answer is`` in ``answer`` is used. Items are labelled
``"reasoning"`` by default.

Prompts are those of the GSM family (see `liref_lens.tasks.gsm8k`): zero-shot
``"Q: {question}\\nA: "``; few-shot, the 8 English chain-of-thought exemplars of Wei et al.
(2022) whatever the question's language (the "English CoT" setting of Shi et al.), then
``"Q: {question}\\nA:"``.
"""

from __future__ import annotations

import os

from .base import REASONING, Item, Task
from .gsm8k import gsm_task
from .parsers import parse_number, to_number
from .sources import load_rows

__all__ = ["MGSM_LANGUAGES", "load_mgsm"]

MGSM_LANGUAGES = ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")


def _gold(row: dict[str, object]) -> float:
    number = row.get("answer_number")
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        return float(number)
    if isinstance(number, str) and number.strip():
        return to_number(number)
    answer = row.get("answer")
    parsed = parse_number(answer, fallback=False) if isinstance(answer, str) else None
    if parsed is None or not isinstance(parsed.value, float):
        raise ValueError(f"MGSM row without a gold answer: {str(row.get('question'))[:80]!r}")
    return parsed.value


def load_mgsm(
    source: str | os.PathLike[str] = "juletxara/mgsm",
    *,
    language: str = "en",
    split: str = "test",
    n: int | None = None,
    label: str | None = REASONING,
) -> Task:
    """MGSM in one language from the hub or a local file/folder.

    Args:
        source: Hub id or local path; ``{config}`` in a path is replaced by ``language``.
        language: The hub configuration, e.g. ``"zh"``.
        split: ``"test"`` (or ``"train"``, the 8 exemplars).
        n: Keep the first ``n`` questions.
        label: Label given to every item.

    Example:
        >>> import json, pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "mgsm_zh.jsonl"
        ...     _ = path.write_text(json.dumps({"question": "3+5=?", "answer_number": 8}))
        ...     task = load_mgsm(path, language="zh")
        >>> task.name, task.items[0].answer, task.parse("答案是 8。The answer is 8.")
        ('mgsm_zh', 8.0, 8.0)
    """
    rows = load_rows(source, config=language, split=split, n=n)
    items = [
        Item(
            question=str(row["question"]),
            answer=_gold(row),
            label=label,
            id=str(row.get("id", i)),
            meta={
                "language": language,
                "equation_solution": row.get("equation_solution"),
                "solution": row.get("answer"),
            },
        )
        for i, row in enumerate(rows)
    ]
    return gsm_task(f"mgsm_{language}", items)
