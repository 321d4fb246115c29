"""Where a task's questions came from: the source, the SHA-256 of every local file, the selection.

Every loader records a `Task.provenance` dict, plain JSON, so a run can store exactly what data
it used (`Task.source` and `Task.source_sha256` read the first two entries below):

- ``source``: the absolute path of a local file or folder (for a shipped sample, the file in the
  package), or the hub id; ``hub``: whether it is a hub id; ``builtin``: a shipped sample;
- ``config`` and ``split`` as asked;
- ``sha256``: for one local file, its SHA-256 (what ``sha256sum FILE`` prints); for a folder or
  several files, the SHA-256 of their manifest (`manifest_sha256`: one ``"{sha256}  {name}\\n"``
  line per file, sorted, names relative to the folder the files share, so a moved copy hashes
  the same); ``None`` for a hub id (the hub's revision is not recorded);
- ``files``: ``{path: sha256}`` of every local file read;
- ``selection``: what was kept, in order: ``{"first": n}`` (a loader's ``n``, `Task.take`),
  ``{"first_per_subject": n}`` (C-Eval), ``{"categories": [...]}`` (MMLU-Pro),
  ``{"sample": n, "seed": s, "per_group": bool}`` (`Task.sample`), ``{"label": x}``
  (`Task.split`, `Task.by_label`), ``{"filter": "custom"}`` (`Task.filter`);
- loader-specific entries: ``variant`` (GSM-Symbolic), ``exemplars`` (the few-shot source),
  ``labels`` (a labels file, `Task.with_labels`), ``answers`` (``False`` for question-only
  files).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .sources import resolve_local

__all__ = ["describe_source", "file_sha256", "manifest_sha256", "with_selection"]

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, in hex (as ``sha256sum`` prints it).

    Example:
        >>> import pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder) / "a.txt"
        ...     _ = path.write_bytes(b"abc")
        ...     file_sha256(path)[:16]
        'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_sha256(files: Mapping[str, str]) -> str:
    """The SHA-256 of ``{path: sha256}`` written as sorted ``"{sha256}  {name}\\n"`` lines,
    each name relative to the folder all the files share (``/``-separated).

    Example:
        >>> a = manifest_sha256({"/x/data/a.csv": "11", "/x/data/sub/b.csv": "22"})
        >>> a == manifest_sha256({"/y/a.csv": "11", "/y/sub/b.csv": "22"})
        True
    """
    base = os.path.commonpath([os.path.dirname(p) for p in files]) if files else ""
    lines = sorted(
        f"{sha}  {Path(os.path.relpath(p, base)).as_posix()}\n" for p, sha in files.items()
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _hash_paths(paths: Iterable[Path]) -> dict[str, str]:
    files: dict[str, str] = {}
    for path in paths:
        path = path.resolve()
        inside = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in inside:
            files[str(file)] = file_sha256(file)
    return files


def describe_source(
    source: str | os.PathLike[str],
    *,
    config: str | None = None,
    split: str = "test",
    configs: Iterable[str] | None = None,
    builtin: bool = False,
    n: int | None = None,
) -> dict[str, Any]:
    """The provenance record of ``source`` (keys in the module docstring), hashing local files.

    Args:
        source: A hub id or a local path, as a loader takes it (``{config}``/``{split}`` allowed).
        config: The configuration filled into ``{config}``.
        split: The split filled into ``{split}``.
        configs: Several configurations read from one ``{config}`` path (C-Eval subjects).
        builtin: ``source`` is a sample shipped with the package.
        n: The loader kept the first ``n`` rows (recorded as ``{"first": n}`` in ``selection``).

    Example:
        >>> import pathlib, tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder) / "q.jsonl"
        ...     _ = path.write_bytes(b"abc")
        ...     record = describe_source(path)
        ...     record["source"] == str(path.resolve()), record["sha256"][:16]
        (True, 'ba7816bf8f01cfea')
        >>> describe_source("openai/gsm8k", config="main")["sha256"] is None
        True
    """
    names = [config] if configs is None else list(configs)
    local = [resolve_local(source, c, split) for c in names]
    record: dict[str, Any] = {
        "source": os.fspath(source),
        "hub": local[0] is None,
        "builtin": builtin,
        "config": config if configs is None else names,
        "split": split,
        "sha256": None,
        "files": {},
        "selection": [] if n is None else [{"first": n}],
    }
    paths = [p for p in local if p is not None]
    if not paths:
        return record
    files = _hash_paths(paths)
    single = len(paths) == 1 and not paths[0].is_dir()
    record["source"] = str(paths[0].resolve()) if len(paths) == 1 else os.fspath(source)
    record["files"] = files
    record["sha256"] = next(iter(files.values())) if single else manifest_sha256(files)
    return record


def with_selection(provenance: Mapping[str, Any], step: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``provenance`` with ``step`` appended to its ``selection`` list."""
    record = dict(provenance)
    record["selection"] = [*record.get("selection", []), dict(step)]
    return record
