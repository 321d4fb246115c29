"""Atomic file writes: write to a temporary file in the target folder, then rename over.

The temporary file is created with mode ``0o666`` less the process umask, as ``open(path,
"w")`` would create it (not the ``0o600`` of `tempfile.mkstemp`); a file that already exists
keeps its mode when it is replaced.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text"]


def _create_temp(path: Path) -> Path:
    """A new empty file next to ``path``, created with the umask applied by the kernel."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a temporary file next to {path}")


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` only if it succeeded.

    Example:
        >>> p = atomic_write(tmp / "a.txt", lambda t: t.write_text("hello"))
        >>> p.read_text(), sorted(x.name for x in tmp.iterdir())
        ('hello', ['a.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    # the mode a plain open() would give: the kernel applied the umask when creating tmp
    mode = stat.S_IMODE(tmp.stat().st_mode)
    try:
        write(tmp)  # writers may recreate the file with their own mode (safetensors: 0o600)
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))
