"""MGSM: 250 GSM8K questions translated into ten languages (Shi et al., 2022).

Source: ``juletxara/mgsm``, one configuration per language (``"en"``, ``"zh"``, ``"de"``, ...),
splits train (the 8 exemplars) and test; or the released TSV files, ``question<TAB>answer_number``
without a header (``"mgsm/mgsm_{config}.tsv"``, read as such when the first line is not a
header); ``source="builtin"`` reads the copies shipped for ``en``, ``de``, ``fr`` and ``zh``.
The gold answer is ``answer_number``; when a row lacks
it, the number after ``The answer is`` in ``answer`` is used. Items are labelled
``"reasoning"`` by default.

Prompts are those of the GSM family (see `liref_lens.tasks.gsm8k`): zero-shot
``"Q: {question}\\nA: "``; few-shot, the 8 English chain-of-thought exemplars of Wei et al.
(2022) whatever the question's language (the "English CoT" setting of Shi et al.), then
``"Q: {question}\\nA:"``.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

from .base import REASONING, Item, Task
from .builtin import builtin_source, is_builtin
from .files import TaskFileError, read_text
from .gsm8k import gsm_task
from .parsers import parse_number, to_number
from .provenance import describe_source
from .sources import load_rows, require_columns, resolve_local

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


def _read_headerless_tsv(text: str, path: Path) -> list[dict[str, Any]]:
    lines = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    last = max(i for i, fields in enumerate(lines) if fields)
    rows = []
    for number, fields in enumerate(lines, 1):
        if not fields:
            continue
        if len(fields) != 2:
            if number - 1 == last and len(fields) < 2 and not text.endswith("\n"):
                raise TaskFileError(
                    f"{path}, line {number}: the last line has no answer_number (the file looks "
                    "truncated); download it again"
                )
            raise TaskFileError(
                f"{path}, line {number}: expected 'question<TAB>answer_number' (the MGSM "
                f"TSV format), found {len(fields)} fields"
            )
        rows.append({"question": fields[0], "answer_number": fields[1]})
    return rows


def _rows(
    source: str | os.PathLike[str], language: str, split: str, n: int | None
) -> list[dict[str, Any]]:
    local = resolve_local(source, config=language, split=split)
    if local is not None and local.is_file() and local.suffix.lower() == ".tsv":
        text = read_text(local, nonempty=True)
        if "question" not in text.split("\n", 1)[0].rstrip("\r").split("\t"):
            rows = _read_headerless_tsv(text, local)  # the released files have no header line
            return rows if n is None else rows[:n]
    return load_rows(source, config=language, split=split, n=n)


def load_mgsm(
    source: str | os.PathLike[str] = "juletxara/mgsm",
    *,
    language: str = "en",
    split: str = "test",
    n: int | None = None,
    label: str | None = REASONING,
) -> Task:
    """MGSM in one language from the hub, a local file/folder, or the shipped files.

    Args:
        source: Hub id, local path (``{config}`` in a path is replaced by ``language``), or
            ``"builtin"``.
        language: The hub configuration, e.g. ``"zh"``.
        split: ``"test"`` (or ``"train"``, the 8 exemplars).
        n: Keep the first ``n`` questions (`Task.sample` draws a random sample instead).
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
    builtin = is_builtin(source)
    if builtin:
        source = builtin_source("mgsm", language)
    rows = _rows(source, language, split, n)
    require_columns(rows, ["question", ("answer_number", "answer")], source)
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
    provenance = describe_source(source, config=language, split=split, builtin=builtin, n=n)
    return gsm_task(f"mgsm_{language}", items, provenance)
