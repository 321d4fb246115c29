"""Cache folders that are checked before use: a manifest written last, an atomic install.

A cache folder (a de-quantized checkpoint, an assembled GGUF file) is built in a temporary
sibling folder. `write_manifest` then records every file in it, with its size, modification
time and SHA-256, in ``liref_lens_manifest.json``, written last and atomically; `install`
renames the folder into place, moving aside a damaged folder that holds the name. `problem`
compares a folder with its manifest and says what is wrong, or returns ``None``.

What `problem` checks on every call: the manifest is there and readable, every file it lists
is there with its recorded size, and no other file is. A file whose size is right but whose
modification time is not is hashed and compared with the recorded SHA-256 (a copy without
``-p`` changes every time; the manifest is then updated, best effort). ``full=True`` hashes
every file: 2.5 s for Gemma 3 270M's 1.1 GB on a busy 2-core machine, a quarter of loading it,
where the default check took 0.8 ms (``docs/how-to/gguf.md``); the full check is there for a
suspected disk fault.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._io import atomic_write_text

__all__ = [
    "MANIFEST",
    "CacheRebuiltWarning",
    "cached_folder",
    "install",
    "problem",
    "read_manifest",
    "sha256",
    "write_manifest",
]

MANIFEST = "liref_lens_manifest.json"
_FORMAT = 1


class CacheRebuiltWarning(UserWarning):
    """A cache folder was damaged (the message says how) and is being built again."""


def sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, in hex.

    Example:
        >>> _ = (tmp / "x").write_bytes(b"abc")
        >>> sha256(tmp / "x")[:16]
        'ba7816bf8f01cfea'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _listed(folder: Path) -> dict[str, Path]:
    """Every file under ``folder`` by its relative POSIX path, the manifest and its temporary
    copies (``.liref_lens_manifest.json.*.tmp``, from a concurrent update) excepted."""
    out = {}
    for path in folder.rglob("*"):
        if path.is_dir():
            continue
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST or rel.startswith(f".{MANIFEST}."):
            continue
        out[rel] = path
    return out


def write_manifest(folder: str | os.PathLike[str], meta: dict[str, Any]) -> dict[str, Any]:
    """Record every file in ``folder`` (size, modification time, SHA-256) and ``meta``; the
    manifest is written last, atomically.

    Example:
        >>> _ = (tmp / "a.txt").write_text("hello")
        >>> write_manifest(tmp, {"made_by": "doctest"})["files"]["a.txt"]["size"]
        5
        >>> problem(tmp) is None
        True
    """
    folder = Path(folder)
    files = {}
    for rel, path in sorted(_listed(folder).items()):
        stat = path.stat()
        files[rel] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256(path)}
    manifest = {**meta, "format": _FORMAT, "files": files}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The folder's manifest, or ``None`` where it is missing, unreadable or of another format."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return None
    if not isinstance(data.get("files"), dict):
        return None
    return data


def problem(folder: str | os.PathLike[str], *, full: bool = False) -> str | None:
    """What is wrong with ``folder`` against its manifest, in a few words; ``None`` if nothing.

    Example:
        >>> _ = (tmp / "a.txt").write_text("hello")
        >>> _ = write_manifest(tmp, {})
        >>> _ = (tmp / "a.txt").write_text("hell")
        >>> problem(tmp)
        'a.txt has 4 bytes, the manifest says 5'
    """
    folder = Path(folder)
    if not folder.is_dir():
        return "it is not a folder" if folder.exists() else "it does not exist"
    manifest = read_manifest(folder)
    if manifest is None:
        if (folder / MANIFEST).exists():
            return f"its manifest {MANIFEST} is unreadable or of another format"
        return f"it has no manifest {MANIFEST} (unfinished, or written by an older liref_lens)"
    on_disk = _listed(folder)
    recorded: dict[str, dict[str, Any]] = manifest["files"]
    missing = sorted(set(recorded) - set(on_disk))
    if missing:
        return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    extra = sorted(set(on_disk) - set(recorded))
    if extra:
        return f"{', '.join(extra)} {'is' if len(extra) == 1 else 'are'} not in the manifest"
    touched = []
    for rel, entry in sorted(recorded.items()):
        stat = on_disk[rel].stat()
        if stat.st_size != entry.get("size"):
            return f"{rel} has {stat.st_size} bytes, the manifest says {entry.get('size')}"
        if full or stat.st_mtime_ns != entry.get("mtime_ns"):
            if sha256(on_disk[rel]) != entry.get("sha256"):
                return f"{rel} differs from the manifest (SHA-256)"
            if stat.st_mtime_ns != entry.get("mtime_ns"):
                touched.append(rel)
    if touched:
        _refresh_times(folder, manifest, touched)
    return None


def _refresh_times(folder: Path, manifest: dict[str, Any], touched: list[str]) -> None:
    """Record the new modification times of files whose content was checked equal, so the next
    check needs no hashing. Best effort: a read-only cache is left as it is."""
    for rel in touched:
        manifest["files"][rel]["mtime_ns"] = (folder / rel).stat().st_mtime_ns
    try:
        atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    except OSError:
        pass


def install(tmp: Path, out: Path, is_whole: Callable[[Path], bool]) -> bool:
    """Rename the finished folder ``tmp`` to ``out``, atomically.

    If ``out`` exists and ``is_whole(out)``, another process finished first: ``tmp`` is
    removed and its folder kept. If ``out`` exists but is damaged, it is renamed aside (an
    atomic step, so two processes never both remove it) and deleted, and the rename retried.

    Returns:
        Whether ``tmp`` became ``out`` (``False``: another process's folder was kept).
    """
    for _ in range(20):
        try:
            os.rename(tmp, out)  # fails if `out` is a folder with files in it (or a file)
            return True
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
        if is_whole(out):
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        aside = out.parent / f".{out.name}.{secrets.token_hex(6)}.old"
        try:
            os.rename(out, aside)
        except FileNotFoundError:  # another process moved it aside first
            continue
        if aside.is_dir():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)
    raise OSError(f"could not put the folder {tmp} in place of {out}: it keeps changing")


def cached_folder(
    out: str | os.PathLike[str],
    build: Callable[[Path], dict[str, Any]],
    *,
    expect: dict[str, Any],
    what: str,
    full: bool = False,
    older: str | None = None,
) -> Path:
    """``out``, checked against its manifest; built (again) by ``build`` if absent or damaged.

    Args:
        out: the cache folder.
        build: writes the folder's files into the temporary folder it is given and returns
            the facts to record in the manifest (``expect`` among them).
        expect: manifest entries ``out`` must have (e.g. the source file's SHA-256).
        what: what the folder is, for the warning, e.g. ``"the de-quantized checkpoint"``.
        full: hash every file, not only those whose modification time changed.
        older: a file that an older liref_lens left in such folders instead of a manifest: a
            folder with it and no manifest is rebuilt without a warning (not damaged, only old).

    Warns:
        CacheRebuiltWarning: ``out`` existed but was damaged (names the folder and the fault);
            warned once the folder is whole again, so a warning turned into an error (as in the
            test suite) does not leave the damaged folder in place.

    Example:
        >>> build = lambda tmp: {"n": (tmp / "x.txt").write_text("hi")}
        >>> folder = cached_folder(tmp / "c", build, expect={"n": 2}, what="a doctest folder")
        >>> (folder / "x.txt").read_text(), problem(folder)
        ('hi', None)
    """
    out = Path(out)

    def fault(folder: Path) -> str | None:
        wrong = problem(folder, full=full)
        if wrong is None:
            manifest = read_manifest(folder) or {}
            differ = [key for key, value in expect.items() if manifest.get(key) != value]
            if differ:
                wrong = f"its manifest records another {', '.join(differ)}"
        return wrong

    wrong = None
    if out.exists() or out.is_symlink():
        wrong = fault(out)
        if wrong is None:
            return out
        if older is not None and (out / older).exists() and not (out / MANIFEST).exists():
            wrong = None  # only old: rebuilt quietly
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        write_manifest(tmp, build(tmp))
        install(tmp, out, lambda folder: fault(folder) is None)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if wrong is not None:
        warnings.warn(f"{what} {out} was damaged ({wrong}); built it again", CacheRebuiltWarning, 2)
    return out
