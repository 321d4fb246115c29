"""Benchmarks as `Task` objects: items, prompts, answer parsers, reasoning/memory labels.

One module per benchmark (`gsm8k` with GSM-Symbolic, `mgsm`, `mmlu_pro`, `popqa`, `ceval`),
each with a loader that reads the Hugging Face Hub or local files (`sources`), the prompt
formats of Hong et al. (2025), and a parser that counts failures instead of guessing.
"""

from . import ceval, gsm8k, mgsm, mmlu_pro, parsers, popqa, prompts, sources
from .base import MEMORY, REASONING, Answer, Item, Parsed, Task, label_from_value
from .ceval import CEVAL_HARD, load_ceval
from .evaluation import EvalResult
from .gsm8k import WEI_EXEMPLARS, load_gsm8k, load_gsm_symbolic
from .mgsm import load_mgsm
from .mmlu_pro import load_mmlu_pro
from .parsers import (
    letters_equal,
    matches_any,
    normalize_text,
    numbers_equal,
    parse_choice,
    parse_number,
    parse_text,
)
from .popqa import load_popqa
from .prompts import mc_qa_prompt, qa_prompt
from .registry import LOADERS, load_task
from .sources import HubUnavailableError, load_rows, read_local

__all__ = [
    "CEVAL_HARD",
    "LOADERS",
    "MEMORY",
    "REASONING",
    "WEI_EXEMPLARS",
    "Answer",
    "EvalResult",
    "HubUnavailableError",
    "Item",
    "Parsed",
    "Task",
    "ceval",
    "gsm8k",
    "label_from_value",
    "letters_equal",
    "load_ceval",
    "load_gsm8k",
    "load_gsm_symbolic",
    "load_mgsm",
    "load_mmlu_pro",
    "load_popqa",
    "load_rows",
    "load_task",
    "matches_any",
    "mc_qa_prompt",
    "mgsm",
    "mmlu_pro",
    "normalize_text",
    "numbers_equal",
    "parse_choice",
    "parse_number",
    "parse_text",
    "parsers",
    "popqa",
    "prompts",
    "qa_prompt",
    "read_local",
    "sources",
]
