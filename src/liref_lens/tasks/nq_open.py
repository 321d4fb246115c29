"""NQ-open: short factoid questions from Google search queries, a memory-heavy benchmark.

Natural Questions, open-domain version (Kwiatkowski et al., 2019; Lee et al., 2019). Source:
``google-research-datasets/nq_open`` (splits train and validation; the released
``NQ-open.dev.jsonl`` is the validation split), or a local ``.jsonl`` with ``question`` and
``answer`` (a list of accepted answers); ``source="builtin"`` is the 300-question sample shipped
with the package. Items are labelled ``"memory"`` by default. It stands in for PopQA when PopQA
is not at hand.

Question-only files (no ``answer`` column, nor any column whose name holds "answer", in any
row; e.g. the EfficientQA test questions, ``{"question": ...}`` per line) load too, with
``answer=None`` on every item and ``provenance["answers"] = False``: such a task is for reading
activations; parsing or scoring generations with it raises `NoAnswersError`. A file in which
only some rows have an answer is an error naming the first row without one.

Prompt: zero-shot only, ``"Q: {question}\\nA: "`` (also for evaluation). A generation is cut at
its first line break (after leading whitespace), then matched with `exact_match_any`, the
standard NQ-open exact match (lower case, punctuation and articles removed); ``match="contains"``
uses PopQA's looser rule instead (`matches_any`: some accepted answer occurs in the text).
"""

from __future__ import annotations

import os
from typing import Literal

from .base import MEMORY, Item, Task
from .builtin import builtin_source, is_builtin
from .parsers import exact_match_any, matches_any, parse_text
from .provenance import describe_source
from .sources import as_list, load_rows, require_columns

__all__ = ["load_nq_open"]

STOP = ("\n",)


def load_nq_open(
    source: str | os.PathLike[str] = "google-research-datasets/nq_open",
    *,
    split: str = "validation",
    n: int | None = None,
    label: str | None = MEMORY,
    match: Literal["exact", "contains"] = "exact",
) -> Task:
    """NQ-open from the hub, a local file, or the shipped sample (``source="builtin"``).

    Args:
        source: Hub id, local path, or ``"builtin"``.
        split: The split (``"validation"`` is the dev set).
        n: Keep the first ``n`` questions (`Task.sample` draws a random sample instead).
        label: Label given to every item.
        match: ``"exact"`` (normalised exact match, the benchmark's rule) or ``"contains"``.

    Example:
        >>> task = load_nq_open("builtin", n=2)
        >>> task.prompt(task.items[0])
        "Q: who won last year's ncaa women's basketball\\nA: "
        >>> task.items[0].answer
        ('South Carolina',)
        >>> task.evaluate([" south Carolina.\\nQ: ...", "No idea"]).accuracy
        0.5

        A question-only file:

        >>> import json, pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder) / "efficientqa_test.jsonl"
        ...     _ = path.write_text(json.dumps({"question": "who wrote hamlet"}))
        ...     questions = load_nq_open(path)
        >>> questions.items[0].answer is None, questions.has_answers
        (True, False)
        >>> questions.evaluate(["Shakespeare"])
        Traceback (most recent call last):
        ...
        liref_lens.tasks.base.NoAnswersError: nq_open (...): this task has no answers: ...
    """
    if match not in ("exact", "contains"):
        raise ValueError(f"match must be 'exact' or 'contains', not {match!r}")
    builtin = is_builtin(source)
    if builtin:
        source = builtin_source("nq_open")
    rows = load_rows(source, split=split, n=n)
    # question-only: no row has an answer, nor a column that looks like a misnamed one
    answered = any("answer" in str(column).lower() for row in rows for column in row)
    require_columns(rows, ["question", "answer"] if answered else ["question"], source)
    items = []
    for i, row in enumerate(rows):
        answers = as_list(row["answer"]) if answered else None
        if answers == ():
            raise ValueError(f"{os.fspath(source)}: row {i} has an empty answer list")
        items.append(
            Item(
                question=str(row["question"]),
                answer=answers,
                label=label,
                id=str(row.get("id", i)),
            )
        )
    provenance = describe_source(source, split=split, builtin=builtin, n=n)
    provenance["answers"] = answered
    return Task(
        name="nq_open",
        items=tuple(items),
        parser=parse_text,
        matcher=exact_match_any if match == "exact" else matches_any,
        stop=STOP,
        provenance=provenance,
    )
