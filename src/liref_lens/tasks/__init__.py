"""Benchmarks as `Task` objects: items, prompts, answer parsers, reasoning/memory labels.

One module per benchmark (`gsm8k`, `gsm_symbolic`, `mgsm`, `mmlu_pro`, `popqa`, `ceval`,
`nq_open`), each with a loader that reads the Hugging Face Hub, local files (`sources`,
`files`) or the samples shipped with the package (``source="builtin"``, `builtin`), the prompt
formats of Hong et al. (2025), and a parser that counts failures instead of guessing. Every
loaded task records its source and the SHA-256 of its files (`provenance`); `Task.sample` draws
a seeded random sample, one template at a time (`sampling`).
"""

from . import (
    builtin,
    ceval,
    files,
    gsm8k,
    gsm_symbolic,
    labels,
    mgsm,
    mmlu_pro,
    nq_open,
    parsers,
    popqa,
    prompts,
    provenance,
    sampling,
    sources,
)
from .base import MEMORY, REASONING, Answer, Item, NoAnswersError, Parsed, Task, label_from_value
from .ceval import CEVAL_HARD, load_ceval
from .evaluation import EvalResult
from .files import TaskFileError
from .gsm8k import WEI_EXEMPLARS, load_gsm8k
from .gsm_symbolic import load_gsm_symbolic
from .mgsm import load_mgsm
from .mmlu_pro import CATEGORY_LABELS, load_mmlu_pro
from .nq_open import load_nq_open
from .parsers import (
    exact_match_any,
    letters_equal,
    matches_any,
    normalize_answer,
    normalize_text,
    numbers_equal,
    parse_choice,
    parse_number,
    parse_text,
)
from .popqa import load_popqa
from .prompts import mc_qa_prompt, qa_prompt
from .registry import LOADERS, load_task
from .sources import HubUnavailableError, MissingColumnError, load_rows, read_local

__all__ = [
    "CATEGORY_LABELS",
    "CEVAL_HARD",
    "LOADERS",
    "MEMORY",
    "REASONING",
    "WEI_EXEMPLARS",
    "Answer",
    "EvalResult",
    "HubUnavailableError",
    "Item",
    "MissingColumnError",
    "NoAnswersError",
    "Parsed",
    "Task",
    "TaskFileError",
    "builtin",
    "ceval",
    "files",
    "gsm8k",
    "gsm_symbolic",
    "exact_match_any",
    "label_from_value",
    "labels",
    "letters_equal",
    "load_ceval",
    "load_gsm8k",
    "load_gsm_symbolic",
    "load_mgsm",
    "load_mmlu_pro",
    "load_nq_open",
    "load_popqa",
    "load_rows",
    "load_task",
    "matches_any",
    "mc_qa_prompt",
    "mgsm",
    "mmlu_pro",
    "normalize_answer",
    "normalize_text",
    "nq_open",
    "numbers_equal",
    "parse_choice",
    "parse_number",
    "parse_text",
    "parsers",
    "popqa",
    "prompts",
    "provenance",
    "qa_prompt",
    "read_local",
    "sampling",
    "sources",
]
