"""Reading the rows of a local task file, with one clear line for every way a file can be bad.

`read_local` reads ``.json`` (a list of records, ``{"data": [...]}``, columns, or JSON Lines),
``.jsonl``/``.ndjson``, ``.csv``/``.tsv``, ``.parquet``, a ``.zip`` holding one JSON(L) file, and
``datasets``' ``save_to_disk`` folders. Text is UTF-8 (a leading byte-order mark is allowed).

A file that cannot give rows raises `TaskFileError` (a `ValueError`) naming the file and the
fix: text that is not UTF-8 (with the byte offset and line, and an ``iconv`` command), an empty
file or one without rows, a JSON(L) record cut off at the end (a truncated download), a line
that is not JSON, an unreadable parquet file or zip archive. Everything is read into memory.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
import zlib
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["LOCAL_SUFFIXES", "TaskFileError", "decode_text", "read_local", "read_text"]

LOCAL_SUFFIXES = (".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet", ".zip")
_DISK_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")
_BOM = b"\xef\xbb\xbf"
_AGAIN = "download or export it again"


class TaskFileError(ValueError):
    """A local task (or labels) file cannot be read: not UTF-8, empty, truncated or malformed."""


def decode_text(data: bytes, name: str | Path) -> str:
    """``data`` decoded as UTF-8 (a leading byte-order mark is dropped).

    Raises:
        TaskFileError: the bytes are not UTF-8; the message names ``name``, the offset and
            line of the first bad byte, and how to convert the file.

    Example:
        >>> decode_text("naïve".encode(), "a.csv")
        'naïve'
        >>> try:
        ...     decode_text(b"id,label\\n7,caf\\xe9\\n", "labels.csv")
        ... except TaskFileError as err:
        ...     print(err)  # doctest: +NORMALIZE_WHITESPACE
        labels.csv: not UTF-8 text (byte 0xe9 at offset 14, line 2); convert it to UTF-8
        from the encoding it was saved in, e.g. for Latin-1: iconv -f latin1 -t utf-8
        labels.csv > labels.utf8.csv
    """
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = skip + err.start
        line = data.count(b"\n", 0, offset) + 1
        path = Path(name)
        fixed = path.with_name(f"{path.stem}.utf8{path.suffix}")
        byte = f"byte 0x{data[offset]:02x} at offset {offset}, line {line}"
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise TaskFileError(
                f"{name}: not UTF-8 text ({byte}, a UTF-16 byte-order mark); convert it to "
                f"UTF-8, e.g. iconv -f utf-16 -t utf-8 {name} > {fixed}"
            ) from None
        raise TaskFileError(
            f"{name}: not UTF-8 text ({byte}); convert it to UTF-8 from the encoding it was "
            f"saved in, e.g. for Latin-1: iconv -f latin1 -t utf-8 {name} > {fixed}"
        ) from None


def read_text(path: str | Path, *, nonempty: bool = False) -> str:
    """The text of a UTF-8 file (see `decode_text` for the error when it is not UTF-8).

    Raises:
        TaskFileError: not UTF-8; or, with ``nonempty``, empty or only blank lines.
    """
    data = Path(path).read_bytes()
    text = decode_text(data, path)
    if nonempty and not text.strip():
        _empty(path, len(data))
    return text


def _empty(path: str | Path, size: int) -> NoReturn:
    what = "0 bytes" if size == 0 else "only blank lines"
    raise TaskFileError(f"{path} is empty ({what}): there are no rows to load; {_AGAIN}")


def read_local(path: str | Path, split: str = "test") -> list[dict[str, Any]]:
    """The rows of a local file, or of a ``save_to_disk`` folder (``split`` of a DatasetDict).

    Raises:
        TaskFileError: the file is not UTF-8, holds no rows, is truncated or malformed.

    Example:
        >>> import pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder) / "q.jsonl"
        ...     _ = path.write_text('{"question": "1+1?"}\\n{"question": "2+')
        ...     try:
        ...         read_local(path)
        ...     except TaskFileError as err:
        ...         print(str(err).replace(folder, "DIR"))  # doctest: +NORMALIZE_WHITESPACE
        DIR/q.jsonl, line 2: the last record is cut off (the file looks truncated); download
        or export it again
    """
    path = Path(path)
    if path.is_dir():
        return _nonempty(_read_disk(path, split), path, "the dataset has no rows")
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return _read_zip(path)
    if suffix == ".parquet":
        return _nonempty(_read_parquet(path), path, "the table has no rows")
    if suffix not in LOCAL_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported file type {suffix!r}; use one of {', '.join(LOCAL_SUFFIXES)} "
            "or a datasets save_to_disk folder"
        )
    data = path.read_bytes()
    return _read_text_rows(decode_text(data, path), path, suffix, len(data))


def _read_text_rows(text: str, path: Path, suffix: str, size: int) -> list[dict[str, Any]]:
    if not text.strip():
        _empty(path, size)
    if suffix == ".json":
        rows = _read_json(text, path)
    elif suffix in (".csv", ".tsv"):
        rows = _read_csv(text, path, sep="\t" if suffix == ".tsv" else ",")
    else:
        rows = _read_jsonl(text, path)
    return _nonempty(rows, path, "no records in it")


def _nonempty(rows: list[dict[str, Any]], path: Path, why: str) -> list[dict[str, Any]]:
    if not rows:
        raise TaskFileError(f"{path} holds no rows ({why}); {_AGAIN}")
    return rows


def _read_disk(path: Path, split: str) -> list[dict[str, Any]]:
    if not any((path / marker).is_file() for marker in _DISK_MARKERS):
        raise ValueError(
            f"{path} is a folder but not a datasets save_to_disk folder; pass one of its data "
            f"files ({', '.join(LOCAL_SUFFIXES)}) instead, using {{split}} in the path if needed"
        )
    folder = path / split if (path / "dataset_dict.json").is_file() else path
    if _no_shards(folder):  # datasets itself fails on these with an IndexError
        raise TaskFileError(f"{folder} holds no rows (a saved dataset of 0 rows); {_AGAIN}")
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"{path} has no split {split!r}; it has {sorted(ds)}")
        ds = ds[split]
    return list(ds.to_list())


def _no_shards(folder: Path) -> bool:
    """Whether ``folder`` is a saved ``Dataset`` without data files (0 rows)."""
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and state.get("_data_files") == []


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(pq.read_table(path).to_pylist())
    except (pa.ArrowException, OSError) as err:
        reason = " ".join(str(err).split())
        raise TaskFileError(
            f"{path}: not a readable parquet file ({reason}); it may be truncated: {_AGAIN}"
        ) from err


def _read_zip(path: Path) -> list[dict[str, Any]]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = [
                m
                for m in archive.namelist()
                if m.lower().endswith((".json", ".jsonl", ".ndjson"))
                and not m.startswith("__MACOSX")
            ]
            if len(members) != 1:
                raise ValueError(
                    f"{path}: a zip archive must hold exactly one .json or .jsonl file; it "
                    f"holds {members or archive.namelist()}"
                )
            data = archive.read(members[0])
    except (zipfile.BadZipFile, EOFError, zlib.error) as err:
        raise TaskFileError(
            f"{path}: not a readable zip archive ({err}); it may be truncated: {_AGAIN}"
        ) from err
    inner = Path(f"{path}!{members[0]}")
    suffix = ".json" if members[0].lower().endswith(".json") else ".jsonl"
    return _read_text_rows(decode_text(data, inner), inner, suffix, len(data))


def _cut_off(err: json.JSONDecodeError, text: str) -> bool:
    """Whether parsing failed because the text ended inside a value (a truncated file)."""
    return err.msg.startswith("Unterminated string") or err.pos >= len(text.rstrip())


def _read_json(text: str, path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # JSON Lines named .json (datasets' to_json writes these)
            return _read_jsonl(text, path)
        if _cut_off(err, text):
            raise TaskFileError(
                f"{path}: the JSON ends before it is complete (line {err.lineno}): the file "
                f"looks truncated; {_AGAIN}"
            ) from None
        raise TaskFileError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
            "fix the file or export it again"
        ) from None
    if isinstance(data, dict):
        values = list(data.values())
        if len(values) == 1 and isinstance(values[0], list):  # {"data": [records]}
            data = values[0]
        elif values and all(isinstance(v, list) for v in values):  # {"column": [values]}
            data = [dict(zip(data, row, strict=True)) for row in zip(*values, strict=True)]
        else:  # a single record
            data = [data]
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise TaskFileError(f"{path}: expected a list of records (JSON objects)")
    return data


def _read_jsonl(text: str, path: Path) -> list[dict[str, Any]]:
    # split on "\n" only: str.splitlines would also split inside a record at U+2028 and friends
    lines = text.split("\n")
    last = max(i for i, line in enumerate(lines) if line.strip())
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if number - 1 == last and _cut_off(err, line):
                raise TaskFileError(
                    f"{path}, line {number}: the last record is cut off (the file looks "
                    f"truncated); {_AGAIN}"
                ) from None
            raise TaskFileError(
                f"{path}, line {number}: not valid JSON ({err.msg} at column {err.colno}); "
                "fix or delete that line"
            ) from None
        if not isinstance(row, dict):
            raise TaskFileError(
                f"{path}, line {number}: expected a JSON object, found {type(row).__name__}"
            )
        rows.append(row)
    return rows


def _read_csv(text: str, path: Path, sep: str) -> list[dict[str, Any]]:
    import pandas as pd

    kind = "TSV" if sep == "\t" else "CSV"
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, keep_default_na=False, na_values=[""])
    except pd.errors.ParserError as err:
        reason = " ".join(str(err).split())
        raise TaskFileError(
            f"{path}: not a valid {kind} file ({reason}); it may be truncated: {_AGAIN}"
        ) from err
    if not text.endswith("\n") and len(frame):
        records = list(csv.reader(io.StringIO(text), delimiter=sep))
        if len(records[-1]) < len(records[0]):
            raise TaskFileError(
                f"{path}, line {text.count(chr(10)) + 1}: the last row has "
                f"{len(records[-1])} of {len(records[0])} fields (the file looks truncated); "
                f"{_AGAIN}"
            )
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        for row in frame.to_dict("records")
    ]
