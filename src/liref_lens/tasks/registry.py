"""Benchmark loaders by name, for the command line and for configs written as data.

Example:
    >>> sorted(LOADERS)
    ['ceval', 'gsm8k', 'gsm_symbolic', 'mgsm', 'mmlu_pro', 'popqa']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Task
from .ceval import load_ceval
from .gsm8k import load_gsm8k, load_gsm_symbolic
from .mgsm import load_mgsm
from .mmlu_pro import load_mmlu_pro
from .popqa import load_popqa

__all__ = ["LOADERS", "load_task"]

LOADERS: dict[str, Callable[..., Task]] = {
    "gsm8k": load_gsm8k,
    "gsm_symbolic": load_gsm_symbolic,
    "mgsm": load_mgsm,
    "mmlu_pro": load_mmlu_pro,
    "popqa": load_popqa,
    "ceval": load_ceval,
}


def load_task(name: str, **kwargs: Any) -> Task:
    """Load the benchmark ``name`` (a key of `LOADERS`), passing ``kwargs`` to its loader.

    Example:
        >>> load_task("gsm9k")
        Traceback (most recent call last):
        ...
        ValueError: unknown task 'gsm9k'; known: ceval, gsm8k, gsm_symbolic, mgsm, mmlu_pro, popqa
    """
    if name not in LOADERS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(LOADERS))}")
    return LOADERS[name](**kwargs)
