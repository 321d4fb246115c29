"""PopQA: entity-centric factual questions, a memory-heavy benchmark (Mallen et al., 2023).

Source: ``akariasai/PopQA`` (split test). ``possible_answers`` is a JSON-encoded list of
accepted answers; an answer is correct if any of them occurs in the prediction (case-insensitive,
whitespace-normalised substring, `matches_any`). Items are labelled ``"memory"`` by default;
``s_pop`` (subject popularity), ``prop`` (relation), ``subj``, ``obj`` and ``o_pop`` are kept
in ``meta``.

Prompt: zero-shot only, ``"Q: {question}\\nA: "`` (for reading activations and for
evaluation). A generation is cut at its first line break (after leading whitespace) before
matching, so a model that goes on to invent the next question is not credited for it.
"""

from __future__ import annotations

import os

from .base import MEMORY, Item, Task
from .parsers import matches_any, parse_text
from .provenance import describe_source
from .sources import as_list, load_rows, require_columns

__all__ = ["load_popqa"]

STOP = ("\n",)


def load_popqa(
    source: str | os.PathLike[str] = "akariasai/PopQA",
    *,
    split: str = "test",
    n: int | None = None,
    label: str | None = MEMORY,
) -> Task:
    """PopQA from the hub or a local file/folder.

    Args:
        source: Hub id or local path.
        split: The split (the hub dataset has only ``"test"``).
        n: Keep the first ``n`` questions (`Task.sample` draws a random sample instead).
        label: Label given to every item.

    Example:
        >>> import json, pathlib, tempfile
        >>> row = {"question": "In what country is Paris?", "possible_answers": '["France"]'}
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "popqa.jsonl"
        ...     _ = path.write_text(json.dumps(row))
        ...     task = load_popqa(path)
        >>> task.prompt(task.items[0])
        'Q: In what country is Paris?\\nA: '
        >>> task.evaluate([" france\\nQ: In what country is Rome?"]).accuracy
        1.0
    """
    rows = load_rows(source, split=split, n=n)
    require_columns(rows, ["question", "possible_answers"], source)
    items = []
    for i, row in enumerate(rows):
        answers = as_list(row["possible_answers"])
        if not answers:
            raise ValueError(f"PopQA row {row.get('id', i)!r} has no possible answers")
        items.append(
            Item(
                question=str(row["question"]),
                answer=answers,
                label=label,
                id=str(row.get("id", i)),
                meta={k: row.get(k) for k in ("subj", "prop", "obj", "s_pop", "o_pop")},
            )
        )
    return Task(
        name="popqa",
        items=tuple(items),
        parser=parse_text,
        matcher=matches_any,
        stop=STOP,
        provenance=describe_source(source, split=split, n=n),
    )
