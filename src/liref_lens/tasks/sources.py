"""Reading benchmark rows from the Hugging Face Hub or from local files.

Every loader takes a ``source``: a hub id (``"openai/gsm8k"``) or a local path. A local path is
a file (``.json``, ``.jsonl``/``.ndjson``, ``.csv``, ``.tsv``, ``.parquet``) or a folder written
by ``datasets``' ``save_to_disk`` (a ``Dataset``, or a ``DatasetDict`` whose ``split`` is used).
A path may hold the placeholders ``{config}`` and ``{split}``, e.g.
``"ceval/{split}/{config}_{split}.csv"``; a single file without ``{split}`` is used whatever
the split asked for. Rows come back as a list of dicts; everything is read into memory.

A ``.zip`` archive holding one ``.json`` or ``.jsonl`` file is read like that file (MMLU-Pro's
released results come that way). Rows missing a column a loader needs raise
`MissingColumnError`, naming the file, the column and the columns found (`require_columns`).

A hub source that cannot be reached raises `HubUnavailableError`, which says how to point the
loader at local files instead. A local file that cannot give rows (not UTF-8, empty, truncated)
raises `TaskFileError` (see `liref_lens.tasks.files`, which reads local files).
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .files import LOCAL_SUFFIXES, TaskFileError, read_local

__all__ = [
    "LOCAL_SUFFIXES",
    "HubUnavailableError",
    "MissingColumnError",
    "TaskFileError",
    "as_list",
    "has_splits",
    "load_rows",
    "read_local",
    "require_columns",
    "resolve_local",
]


class HubUnavailableError(ConnectionError):
    """A dataset could not be fetched from the Hugging Face Hub."""


class MissingColumnError(ValueError):
    """Rows of a dataset lack a column a loader needs."""


def require_columns(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str | tuple[str, ...]],
    source: str | os.PathLike[str],
) -> None:
    """Check that every row has each column (a tuple: at least one of its columns).

    Raises:
        MissingColumnError: naming ``source``, the row, the missing column and the columns
            that row has.

    Example:
        >>> try:
        ...     require_columns([{"q": "1+1?", "a": "2"}], ["q", "answer"], "toy.jsonl")
        ... except MissingColumnError as err:
        ...     print(err)
        toy.jsonl: row 0 has no column 'answer' (columns found: 'q', 'a')
    """
    for i, row in enumerate(rows):
        for column in columns:
            options = (column,) if isinstance(column, str) else column
            if not any(c in row for c in options):
                want = " or ".join(repr(c) for c in options)
                found = ", ".join(repr(c) for c in row) or "none"
                raise MissingColumnError(
                    f"{os.fspath(source)}: row {i} has no column {want} (columns found: {found})"
                )


def _format(source: str | os.PathLike[str], config: str | None, split: str) -> str:
    text = os.fspath(source)
    if "{" not in text:
        return text
    try:
        return text.format(config=config, split=split)
    except (KeyError, IndexError) as err:
        raise ValueError(f"{text!r}: only {{config}} and {{split}} may be used") from err


def _looks_local(source: str | os.PathLike[str]) -> bool:
    text = os.fspath(source)
    return (
        isinstance(source, os.PathLike)
        or "{" in text
        or text.startswith((".", "/", "~", "\\"))
        or text.lower().endswith(LOCAL_SUFFIXES)
        or text.count("/") > 1
        or "\\" in text
    )


def resolve_local(
    source: str | os.PathLike[str], config: str | None = None, split: str = "test"
) -> Path | None:
    """The local path ``source`` names (placeholders filled in), or ``None`` for a hub id.

    Raises:
        FileNotFoundError: ``source`` looks like a path but nothing is there.
    """
    path = Path(_format(source, config, split)).expanduser()
    if path.exists():
        return path
    if _looks_local(source):
        raise FileNotFoundError(f"no such file or folder: {path}")
    return None


def has_splits(source: str | os.PathLike[str], config: str | None = None) -> bool:
    """Whether ``source`` can serve more than one split (hub id, ``{split}`` path, DatasetDict)."""
    if "{split}" in os.fspath(source):
        return True
    try:
        path = resolve_local(source, config)
    except FileNotFoundError:
        return False
    return path is None or (path / "dataset_dict.json").is_file()


def load_rows(
    source: str | os.PathLike[str],
    *,
    config: str | None = None,
    split: str = "test",
    n: int | None = None,
) -> list[dict[str, Any]]:
    """The rows of one split of a dataset, from the hub or a local path.

    Args:
        source: A hub id or a local path (see the module docstring).
        config: The hub configuration (subset), e.g. ``"main"``; fills ``{config}``.
        split: The split, e.g. ``"test"``; fills ``{split}``.
        n: Keep only the first ``n`` rows.

    Raises:
        HubUnavailableError: The hub could not be reached (offline, no such dataset, ...).
        FileNotFoundError: A local path does not exist.

    Example:
        >>> import pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = pathlib.Path(tmp) / "toy.jsonl"
        ...     _ = path.write_text('{"question": "1+1?", "answer": "#### 2"}\\n')
        ...     print(load_rows(path))
        [{'question': '1+1?', 'answer': '#### 2'}]
    """
    local = resolve_local(source, config, split)
    if local is not None:
        rows = read_local(local, split=split)
    else:
        rows = _read_hub(os.fspath(source), config, split, n)
    return rows if n is None else rows[:n]


def _hub_errors() -> tuple[type[BaseException], ...]:
    import datasets

    errors: list[type[BaseException]] = [OSError, datasets.exceptions.DatasetsError]
    try:
        import httpx

        errors.append(httpx.HTTPError)
    except ImportError:  # pragma: no cover - older huggingface_hub uses requests (an OSError)
        pass
    return tuple(errors)


def _read_hub(source: str, config: str | None, split: str, n: int | None) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(source, config, split=split)
    except _hub_errors() as err:
        args = ", ".join(repr(a) for a in (source, config) if a is not None)
        raise HubUnavailableError(
            f"could not load {source!r} (config {config!r}, split {split!r}) from the "
            f"Hugging Face Hub: {err}\nIf this machine is offline, download it elsewhere with "
            f"datasets.load_dataset({args}).save_to_disk(DIR) (or export the split as JSONL, "
            "CSV or parquet) and pass source=DIR (or the file's path)."
        ) from err
    if n is not None:
        ds = ds.select(range(min(n, len(ds))))
    return list(ds.to_list())


def as_list(value: Any) -> tuple[str, ...]:
    """A list field as a tuple of strings, whether stored natively or encoded as a string.

    CSV files hold lists as JSON (``'["a", "b"]'``) or as a Python repr (``"['a', 'b']"``, what
    pandas writes); PopQA stores ``possible_answers`` as a JSON string everywhere. A string that
    is not a list is a one-element list; ``None`` is empty.

    Example:
        >>> as_list('["Paris", "City of Light"]')
        ('Paris', 'City of Light')
        >>> as_list("['a', 'b']"), as_list(["x"]), as_list("Rome"), as_list(None)
        (('a', 'b'), ('x',), ('Rome',), ())
    """
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("["):
            return (value,)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError) as err:
                raise ValueError(f"cannot read a list from {text[:80]!r}") from err
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {text[:80]!r}")
    return tuple(str(v) for v in value)
