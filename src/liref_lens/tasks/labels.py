"""Reasoning/memory labels: reading an annotation as a label, attaching labels from a file.

`label_from_value` turns a score or a string into a label; `attach_labels` (what
`Task.with_labels` runs) matches a mapping or a user's file to the items, and records the file's
path and SHA-256 under ``provenance["labels"]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .base import Task

__all__ = ["MEMORY", "REASONING", "attach_labels", "label_from_value"]

REASONING = "reasoning"
MEMORY = "memory"


def label_from_value(value: Any, threshold: float = 0.5) -> tuple[str | None, float | None]:
    """Turn an annotation into ``(label, score)``.

    A number (or numeric string) is a reasoning score: the label is ``"reasoning"`` if it is
    strictly greater than ``threshold``, else ``"memory"``. Any other string is the label itself.

    Example:
        >>> label_from_value(0.8)
        ('reasoning', 0.8)
        >>> label_from_value("0.5")
        ('memory', 0.5)
        >>> label_from_value("memory")
        ('memory', None)
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, None
    if isinstance(value, bool):
        raise TypeError(f"a label must be a string or a number, not the boolean {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return (value.strip() or None), None
    score = float(value)
    return (REASONING if score > threshold else MEMORY), score


def attach_labels(
    task: Task,
    source: Mapping[str, Any] | str | Path,
    *,
    id_field: str = "id",
    label_field: str = "label",
    threshold: float = 0.5,
    key: Literal["id", "question"] = "id",
    missing: Literal["error", "keep", "drop"] = "error",
) -> Task:
    """``task`` with labels from ``source`` (the arguments of `Task.with_labels`).

    Example:
        >>> from liref_lens.tasks import Item, Task, numbers_equal, parse_number
        >>> task = Task("toy", (Item("a", 1.0, id="1"),), parser=parse_number,
        ...             matcher=numbers_equal)
        >>> attach_labels(task, {"1": 0.2}).provenance["labels"]["source"]
        'mapping'
    """
    if missing not in ("error", "keep", "drop") or key not in ("id", "question"):
        raise ValueError(f"bad missing={missing!r} or key={key!r}")
    if isinstance(source, Mapping):
        mapping = {str(k): v for k, v in source.items()}
        record: dict[str, Any] = {"source": "mapping"}
    else:
        from .provenance import describe_source
        from .sources import read_local

        rows = read_local(Path(source))
        described = describe_source(Path(source))
        record = {"source": described["source"], "sha256": described["sha256"]}
        absent = [f for f in (id_field, label_field) if rows and f not in rows[0]]
        if absent:
            raise KeyError(f"{source}: no column {absent[0]!r}; columns: {list(rows[0])}")
        mapping = {str(row[id_field]): row[label_field] for row in rows}
    items = []
    for item in task.items:
        k = item.id if key == "id" else item.question
        if k is None or str(k) not in mapping:
            if missing == "error":
                raise KeyError(
                    f"{task.name}: item {k!r} has no label in the source; pass "
                    "missing='drop' or missing='keep' to allow unlabelled items"
                )
            if missing == "keep":
                items.append(item)
            continue
        label, score = label_from_value(mapping[str(k)], threshold)
        items.append(replace(item, label=label, score=item.score if score is None else score))
    record.update(id_field=id_field, label_field=label_field, threshold=threshold, key=key)
    return replace(task, items=tuple(items), provenance={**task.provenance, "labels": record})
