"""Benchmark loaders by name, for the command line and for configs written as data.

Example:
    >>> sorted(LOADERS)
    ['ceval', 'gsm8k', 'gsm_symbolic', 'mgsm', 'mmlu_pro', 'nq_open', 'popqa']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Task
from .ceval import load_ceval
from .gsm8k import load_gsm8k, load_gsm_symbolic
from .mgsm import load_mgsm
from .mmlu_pro import load_mmlu_pro
from .nq_open import load_nq_open
from .popqa import load_popqa

__all__ = ["LOADERS", "load_task"]

LOADERS: dict[str, Callable[..., Task]] = {
    "gsm8k": load_gsm8k,
    "gsm_symbolic": load_gsm_symbolic,
    "mgsm": load_mgsm,
    "mmlu_pro": load_mmlu_pro,
    "popqa": load_popqa,
    "nq_open": load_nq_open,
    "ceval": load_ceval,
}


def load_task(name: str, **kwargs: Any) -> Task:
    """Load the benchmark ``name`` (a key of `LOADERS`), passing ``kwargs`` to its loader.

    ``source="builtin"`` loads the sample shipped with the package (``gsm8k``, ``mgsm``,
    ``nq_open``, ``mmlu_pro``; see `liref_lens.tasks.builtin`), so a fresh offline machine can
    run the whole pipeline.

    Example:
        >>> load_task("nq_open", source="builtin").labels[:2]
        ('memory', 'memory')
        >>> load_task("gsm9k")
        Traceback (most recent call last):
        ...
        ValueError: unknown task 'gsm9k'; known: ceval, gsm8k, gsm_symbolic, mgsm, ..., popqa
    """
    if name not in LOADERS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(LOADERS))}")
    return LOADERS[name](**kwargs)
