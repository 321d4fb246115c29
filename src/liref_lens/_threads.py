"""How many CPU threads torch uses for a run: ``auto`` or a number.

Threads that fight for cores are far slower than fewer threads: on this project's 2-core
machine the SmolLM2 demo took 46 s quiet but 26 min 35 s with torch's default 2 threads beside
one other busy process. ``auto`` therefore never asks for more threads than there are free
CPUs: the CPUs this process may run on (its affinity mask, capped by a cgroup CPU quota)
minus those other processes keep busy right now (runnable tasks counted in ``/proc/stat``),
at least one. A small model's matrices are too small to split across threads at all: below
`SMALL_MODEL_PARAMETERS` it is one thread. The thread count is process-wide state of torch;
`torch_threads` sets it and restores the previous count.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch

__all__ = [
    "SMALL_MODEL_PARAMETERS",
    "ThreadSpec",
    "busy_cpus",
    "choose_threads",
    "n_parameters",
    "torch_threads",
    "usable_cpus",
]

#: Models with fewer parameters than this run on one thread under ``auto``.
SMALL_MODEL_PARAMETERS = 100_000_000

ThreadSpec = int | Literal["auto"]


def n_parameters(module: torch.nn.Module) -> int:
    """The number of parameters of a torch module (shared tensors counted once).

    Example:
        >>> n_parameters(torch.nn.Linear(3, 2))
        8
    """
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def usable_cpus(cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota.

    Example:
        >>> 1 <= usable_cpus() <= (os.cpu_count() or 1)
        True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(Path(cgroup_root))
    return max(1, min(cpus, math.ceil(quota)) if quota is not None else cpus)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs' worth of time the cgroup may use (v2 ``cpu.max``, v1 ``cpu.cfs_*``), or None."""
    try:
        text = (root / "cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def busy_cpus(samples: int = 5, interval: float = 0.02, stat: str = "/proc/stat") -> int:
    """CPUs other processes keep busy now: runnable tasks (``procs_running`` in
    ``/proc/stat``, the median of a few readings) minus this one; 0 where unknown.

    Example:
        >>> busy_cpus(samples=1) >= 0
        True
    """
    counts = []
    for i in range(samples):
        try:
            with open(stat) as f:
                line = next(x for x in f if x.startswith("procs_running"))
            counts.append(int(line.split()[1]))
        except (OSError, StopIteration, ValueError, IndexError):
            return 0
        if i + 1 < samples:
            time.sleep(interval)
    return max(0, int(statistics.median(counts)) - 1)  # minus this process


def choose_threads(
    spec: ThreadSpec, n_params: int, *, cpus: int | None = None, busy: int | None = None
) -> tuple[int, str]:
    """The thread count for ``spec`` and a model of ``n_params`` parameters, and why.

    ``auto``: one thread below `SMALL_MODEL_PARAMETERS`; otherwise the free CPUs, ``cpus``
    (default `usable_cpus`) minus ``busy`` (default `busy_cpus`), at least one. A number is used
    as given.

    Example:
        >>> choose_threads("auto", 400_000)
        (1, 'auto: small model, 0.4M parameters')
        >>> choose_threads("auto", 135_000_000, cpus=2, busy=1)
        (1, 'auto: 2 usable CPUs, 1 busy with other work, 135.0M parameters')
        >>> choose_threads(3, 400_000)
        (3, '--threads 3')
    """
    if spec == "auto":
        size = f"{n_params / 1e6:.1f}M parameters"
        if n_params < SMALL_MODEL_PARAMETERS:
            return 1, f"auto: small model, {size}"
        cpus = usable_cpus() if cpus is None else cpus
        busy = busy_cpus() if busy is None else busy
        return max(1, cpus - busy), f"auto: {cpus} usable CPUs, {busy} busy with other work, {size}"
    if isinstance(spec, bool) or not isinstance(spec, int) or spec < 1:
        raise ValueError(f"threads must be 'auto' or a whole number >= 1, got {spec!r}")
    return spec, f"--threads {spec}"


@contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(n)``; restore the previous count after.

    Example:
        >>> before = torch.get_num_threads()
        >>> with torch_threads(1) as n:
        ...     torch.get_num_threads() == n == 1
        True
        >>> torch.get_num_threads() == before
        True
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(prev)
