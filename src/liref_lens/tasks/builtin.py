"""The benchmark samples shipped with the package, for machines without network access.

``source="builtin"`` in a loader (or ``load_task(name, source="builtin")``) reads a small,
attributed sample from ``liref_lens/tasks/data`` (see its README.md for sources and licences):

| task | file | items |
|---|---|---|
| ``gsm8k`` | 250 GSM8K test questions | 250 |
| ``mgsm`` | MGSM in ``en``, ``de``, ``fr``, ``zh`` (whole files) | 250 per language |
| ``nq_open`` | 300 NQ-open dev questions | 300 |
| ``mmlu_pro`` | MMLU-Pro test: 150 reasoning-heavy + 150 memory-heavy, by category | 300 |

The samples were drawn by ``scripts/sample_benchmarks.py`` (seed 0) from the full files.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["BUILTIN", "BUILTIN_MGSM_LANGUAGES", "DATA_DIR", "builtin_source", "is_builtin"]

DATA_DIR = Path(__file__).parent / "data"
BUILTIN: dict[str, str] = {
    "gsm8k": "gsm8k_test_sample.jsonl",
    "mgsm": "mgsm/mgsm_{config}.tsv",
    "nq_open": "nq_open_dev_sample.jsonl",
    "mmlu_pro": "mmlu_pro_sample.json",
}
BUILTIN_MGSM_LANGUAGES = ("de", "en", "fr", "zh")


def is_builtin(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` asks for the shipped sample (the string ``"builtin"``)."""
    return isinstance(source, str) and source == "builtin"


def builtin_source(task: str, language: str | None = None) -> Path:
    """The shipped sample file of ``task`` (for ``mgsm``, of ``language``).

    Example:
        >>> builtin_source("gsm8k").name
        'gsm8k_test_sample.jsonl'
        >>> builtin_source("mgsm", "sw")
        Traceback (most recent call last):
        ...
        ValueError: no built-in MGSM sample for 'sw'; built-in languages: de, en, fr, zh
    """
    if task not in BUILTIN:
        raise ValueError(f"no built-in sample for {task!r}; built-in: {', '.join(sorted(BUILTIN))}")
    if task == "mgsm" and language not in BUILTIN_MGSM_LANGUAGES:
        raise ValueError(
            f"no built-in MGSM sample for {language!r}; built-in languages: "
            f"{', '.join(BUILTIN_MGSM_LANGUAGES)}"
        )
    path = DATA_DIR / BUILTIN[task].format(config=language)
    if not path.is_file():
        raise FileNotFoundError(
            f"the built-in sample {path} is missing from this installation; reinstall "
            "liref-lens (the package data includes tasks/data) or pass a source path"
        )
    return path
