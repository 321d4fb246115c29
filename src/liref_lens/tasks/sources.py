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
loader at local files instead.
"""

from __future__ import annotations

import ast
import io
import json
import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "LOCAL_SUFFIXES",
    "HubUnavailableError",
    "MissingColumnError",
    "as_list",
    "has_splits",
    "load_rows",
    "read_local",
    "require_columns",
    "resolve_local",
]

LOCAL_SUFFIXES = (".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet", ".zip")
_DISK_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")


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


def read_local(path: str | os.PathLike[str], split: str = "test") -> list[dict[str, Any]]:
    """The rows of a local file, or of a ``save_to_disk`` folder (``split`` of a DatasetDict)."""
    path = Path(path)
    if path.is_dir():
        return _read_disk(path, split)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _read_json(path.read_text(encoding="utf-8"), path)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path.read_text(encoding="utf-8"), path)
    if suffix == ".zip":
        return _read_zip(path)
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_table(path).to_pylist())
    raise ValueError(
        f"{path}: unsupported file type {suffix!r}; use one of {', '.join(LOCAL_SUFFIXES)} "
        "or a datasets save_to_disk folder"
    )


def _read_disk(path: Path, split: str) -> list[dict[str, Any]]:
    if not any((path / marker).is_file() for marker in _DISK_MARKERS):
        raise ValueError(
            f"{path} is a folder but not a datasets save_to_disk folder; pass one of its data "
            f"files ({', '.join(LOCAL_SUFFIXES)}) instead, using {{split}} in the path if needed"
        )
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"{path} has no split {split!r}; it has {sorted(ds)}")
        ds = ds[split]
    return list(ds.to_list())


def _read_zip(path: Path) -> list[dict[str, Any]]:
    with zipfile.ZipFile(path) as archive:
        members = [
            m
            for m in archive.namelist()
            if m.lower().endswith((".json", ".jsonl", ".ndjson")) and not m.startswith("__MACOSX")
        ]
        if len(members) != 1:
            raise ValueError(
                f"{path}: a zip archive must hold exactly one .json or .jsonl file; it holds "
                f"{members or archive.namelist()}"
            )
        text = io.TextIOWrapper(archive.open(members[0]), encoding="utf-8").read()
    inner = Path(f"{path}!{members[0]}")
    if members[0].lower().endswith(".json"):
        return _read_json(text, inner)
    return _read_jsonl(text, inner)


def _read_json(text: str, path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # JSON Lines named .json (datasets' to_json writes these)
        return _read_jsonl(text, path)
    if isinstance(data, dict):
        values = list(data.values())
        if len(values) == 1 and isinstance(values[0], list):  # {"data": [records]}
            data = values[0]
        elif values and all(isinstance(v, list) for v in values):  # {"column": [values]}
            data = [dict(zip(data, row, strict=True)) for row in zip(*values, strict=True)]
        else:  # a single record
            data = [data]
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise ValueError(f"{path}: expected a list of records (JSON objects)")
    return data


def _read_jsonl(text: str, path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not valid JSON ({err})") from err
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {number}: expected a JSON object")
            rows.append(row)
    return rows


def _read_csv(path: Path, sep: str) -> list[dict[str, Any]]:
    import pandas as pd

    frame = pd.read_csv(path, sep=sep, keep_default_na=False, na_values=[""])
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


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
