"""GSM-Symbolic: GSM8K questions rewritten as templates, 50 instances each (Mirzadeh et al., 2024).

Three variants, each its own task: ``main`` (task ``gsm_symbolic``), ``p1`` (one clause added
to each template, task ``gsm_symbolic_p1``) and ``p2`` (two clauses, ``gsm_symbolic_p2``).
Sources: the hub's ``apple/GSM-Symbolic`` (configs ``main``, ``p1``, ``p2``, split ``test``;
files ``{config}/test.jsonl``) or the GitHub release ``apple/ml-gsm-symbolic``
(``generated_data/GSM_symbolic.jsonl``, ``GSM_p1.jsonl``, ``GSM_p2.jsonl``). Every variant has
the same columns (``id``, ``instance``, ``question``, ``answer``, ``original_id``,
``original_question``, ``original_answer``, ``canary``), so the variant of a local file is read
from its path (`variant_of`): the release's file names, a ``p1``/``p2``/``main`` word in the
file name, or the hub's ``p1/test.jsonl`` layout. A path that does not say needs ``config``; a
``config`` that contradicts the path is an error.

Items: the gold answer is the number after ``####``; ``group`` is the ``original_id`` of the
GSM8K question the template varies (the template ``id`` where it is missing), so
`Task.sample` draws different templates before a second variant of any; ``meta`` keeps
``template_id`` (``id``), ``instance`` and ``variant``; the item id is ``"{id}-{instance}"``.
Prompts and parsing are GSM8K's (`liref_lens.tasks.gsm8k`). Labelled ``"reasoning"``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .base import REASONING, Item, Task
from .gsm8k import gold_from_solution, gsm_task
from .provenance import describe_source
from .sources import LOCAL_SUFFIXES, load_rows, require_columns, resolve_local

__all__ = ["VARIANTS", "load_gsm_symbolic", "variant_of"]

VARIANTS = ("main", "p1", "p2")
_RELEASE_FILES = {"gsm_symbolic": "main", "gsm_p1": "p1", "gsm_p2": "p2"}


def variant_of(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """``(variant, why)`` if ``path`` says which GSM-Symbolic variant it holds, else ``None``.

    Example:
        >>> variant_of("data/GSM_p2.jsonl")
        ('p2', 'the release file name GSM_p2.jsonl')
        >>> variant_of("exports/gsm_symbolic_p1_test.parquet")[0]
        'p1'
        >>> variant_of("GSM-Symbolic/p1/test.jsonl")
        ('p1', 'its folder p1/ (the hub layout)')
        >>> variant_of("my_questions.jsonl") is None
        True
    """
    path = Path(path)
    name = path.name.lower()
    stem = name[: -len(path.suffix)] if path.suffix.lower() in LOCAL_SUFFIXES else name
    if stem in _RELEASE_FILES:
        return _RELEASE_FILES[stem], f"the release file name {path.name}"
    words = sorted(set(re.split(r"[^a-z0-9]+", stem)) & set(VARIANTS))
    if len(words) > 1:
        raise ValueError(
            f"{path}: the file name names several GSM-Symbolic variants ({', '.join(words)}); "
            "rename it or pass config='main', 'p1' or 'p2'"
        )
    if words:
        return words[0], f"{words[0]!r} in the file name {path.name}"
    if path.parent.name in VARIANTS:
        return path.parent.name, f"its folder {path.parent.name}/ (the hub layout)"
    if path.parent.name == "test" and path.parent.parent.name in VARIANTS:
        return path.parent.parent.name, f"its folder {path.parent.parent.name}/test/"
    return None


def _variant(source: str | os.PathLike[str], config: str | None, split: str) -> tuple[str, str]:
    """The variant to load and how it was chosen."""
    if config is not None and config not in VARIANTS:
        raise ValueError(f"config must be 'main', 'p1' or 'p2', not {config!r}")
    if "{config}" in os.fspath(source):
        if config is None:
            raise ValueError(f"{source}: pass config='main', 'p1' or 'p2' to fill {{config}}")
        return config, "given"
    local = resolve_local(source, config, split)
    if local is None:  # a hub id
        return (config, "given") if config else ("main", "the hub's default configuration")
    found = variant_of(local)
    if found is None:
        if config is None:
            raise ValueError(
                f"{local}: cannot tell which GSM-Symbolic variant this file holds (its path "
                "names none); pass config='main', 'p1' or 'p2' (command line: "
                "gsm_symbolic_main:PATH, gsm_symbolic_p1:PATH or gsm_symbolic_p2:PATH)"
            )
        return config, "given"
    if config is not None and config != found[0]:
        raise ValueError(
            f"{local}: this file holds GSM-Symbolic {found[0]} ({found[1]}), but config="
            f"{config!r} was given; pass config={found[0]!r} or leave config out"
        )
    return found[0], found[1] if config is None else f"given, and {found[1]}"


def load_gsm_symbolic(
    source: str | os.PathLike[str] = "apple/GSM-Symbolic",
    *,
    config: str | None = None,
    split: str = "test",
    n: int | None = None,
    label: str | None = REASONING,
) -> Task:
    """GSM-Symbolic ``main``, ``p1`` or ``p2`` from the hub or a local file/folder.

    Args:
        source: Hub id or local path (see the module docstring).
        config: ``"main"``, ``"p1"`` or ``"p2"``; by default read from a local path (an error
            if the path does not say), ``"main"`` for the hub.
        split: The split (the hub has only ``"test"``).
        n: Keep the first ``n`` rows (the first rows are instances of the first template:
            `Task.sample` draws across templates instead).
        label: Label given to every item.

    Example:
        >>> import json, pathlib, tempfile
        >>> row = {"id": 4, "instance": 0, "question": "1+1?", "answer": "#### 2",
        ...        "original_id": 17}
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder) / "GSM_p2.jsonl"
        ...     _ = path.write_text(json.dumps(row))
        ...     task = load_gsm_symbolic(path)
        >>> task.name, task.items[0].group, task.items[0].meta["template_id"]
        ('gsm_symbolic_p2', '17', 4)
        >>> task.provenance["variant"]
        {'config': 'p2', 'from': 'the release file name GSM_p2.jsonl'}
    """
    variant, why = _variant(source, config, split)
    rows = load_rows(source, config=variant, split=split, n=n)
    require_columns(rows, ["question", "answer"], source)
    items = []
    for i, row in enumerate(rows):
        template = row.get("id", i)
        original = row.get("original_id")
        items.append(
            Item(
                question=row["question"],
                answer=gold_from_solution(row["answer"]),
                label=label,
                group=str(template if original is None else original),
                id=f"{template}-{row.get('instance', 0)}",
                meta={
                    "template_id": template,
                    "instance": row.get("instance"),
                    "variant": variant,
                    "solution": row["answer"],
                    "original_question": row.get("original_question"),
                    "original_answer": row.get("original_answer"),
                },
            )
        )
    provenance = describe_source(source, config=variant, split=split, n=n)
    provenance["variant"] = {"config": variant, "from": why}
    return gsm_task(
        "gsm_symbolic" if variant == "main" else f"gsm_symbolic_{variant}", items, provenance
    )
