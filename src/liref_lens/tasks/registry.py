"""Benchmark loaders by name, for the command line and for configs written as data.

``gsm_symbolic`` reads the GSM-Symbolic variant from a local file's path (or loads ``main``
from the hub); ``gsm_symbolic_main``, ``gsm_symbolic_p1`` and ``gsm_symbolic_p2`` name the
variant (`liref_lens.tasks.gsm_symbolic`).

Example:
    >>> sorted(LOADERS)  # doctest: +NORMALIZE_WHITESPACE
    ['ceval', 'gsm8k', 'gsm_symbolic', 'gsm_symbolic_main', 'gsm_symbolic_p1', 'gsm_symbolic_p2',
     'mgsm', 'mmlu_pro', 'nq_open', 'popqa']
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from .base import Task
from .ceval import load_ceval
from .gsm8k import load_gsm8k
from .gsm_symbolic import load_gsm_symbolic
from .mgsm import load_mgsm
from .mmlu_pro import load_mmlu_pro
from .nq_open import load_nq_open
from .popqa import load_popqa

__all__ = ["LOADERS", "load_task"]

LOADERS: dict[str, Callable[..., Task]] = {
    "gsm8k": load_gsm8k,
    "gsm_symbolic": load_gsm_symbolic,
    "gsm_symbolic_main": partial(load_gsm_symbolic, config="main"),
    "gsm_symbolic_p1": partial(load_gsm_symbolic, config="p1"),
    "gsm_symbolic_p2": partial(load_gsm_symbolic, config="p2"),
    "mgsm": load_mgsm,
    "mmlu_pro": load_mmlu_pro,
    "popqa": load_popqa,
    "nq_open": load_nq_open,
    "ceval": load_ceval,
}


def load_task(name: str, *, sample: int | None = None, seed: int = 0, **kwargs: Any) -> Task:
    """Load the benchmark ``name`` (a key of `LOADERS`), passing ``kwargs`` to its loader.

    ``n=`` (passed to the loader) keeps the **first** ``n`` items, in file order: for
    GSM-Symbolic that is ``n`` instances of the first template. ``sample=`` instead loads the
    whole task and draws ``sample`` items at random with ``seed`` (`Task.sample`: seeded,
    round-robin over templates where items have a group, so ``sample=20`` from GSM-Symbolic
    gives 20 different templates). Give one or the other, not both.

    ``source="builtin"`` loads the sample shipped with the package (``gsm8k``, ``mgsm``,
    ``nq_open``, ``mmlu_pro``; see `liref_lens.tasks.builtin`), so a fresh offline machine can
    run the whole pipeline. The task's `Task.provenance` records the source, the SHA-256 of the
    files read and the selection (``n``, or ``sample`` and ``seed``).

    Example:
        >>> load_task("nq_open", source="builtin").labels[:2]
        ('memory', 'memory')
        >>> task = load_task("gsm8k", source="builtin", sample=3, seed=1)
        >>> len(task), task.provenance["selection"]
        (3, [{'sample': 3, 'seed': 1, 'per_group': True}])
        >>> load_task("gsm9k")
        Traceback (most recent call last):
        ...
        ValueError: unknown task 'gsm9k'; known: ceval, gsm8k, gsm_symbolic, ..., popqa
    """
    if name not in LOADERS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(LOADERS))}")
    if sample is not None and kwargs.get("n") is not None:
        raise ValueError(
            f"load_task({name!r}): give n= (the first n items) or sample= (a random sample), "
            "not both"
        )
    task = LOADERS[name](**kwargs)
    return task if sample is None else task.sample(sample, seed)
