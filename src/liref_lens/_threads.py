"""How many CPU threads torch uses for a run: ``auto`` (one for small models) or a number.

A small model's matrices are too small to split across threads; on a busy machine torch's
default thread count then mostly waits on the other threads (the offline demo, on a 2-core
machine with one other busy process: 476 s with torch's default 2 threads, 54.5 s with one;
quiet: 40.5 s and 55 s). The thread count is
process-wide state of torch; `torch_threads` sets it and restores the previous count.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch

__all__ = [
    "SMALL_MODEL_PARAMETERS",
    "ThreadSpec",
    "choose_threads",
    "n_parameters",
    "torch_threads",
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


def choose_threads(spec: ThreadSpec, n_params: int) -> tuple[int, str]:
    """The thread count for ``spec`` and a model of ``n_params`` parameters, and why.

    ``auto``: one thread below `SMALL_MODEL_PARAMETERS`, torch's current count otherwise; a
    number is used as given.

    Example:
        >>> choose_threads("auto", 400_000)
        (1, 'auto: small model, 0.4M parameters')
        >>> choose_threads(3, 400_000)
        (3, '--threads 3')
    """
    if spec == "auto":
        size = f"{n_params / 1e6:.1f}M parameters"
        if n_params < SMALL_MODEL_PARAMETERS:
            return 1, f"auto: small model, {size}"
        return torch.get_num_threads(), f"auto: torch's default, {size}"
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
