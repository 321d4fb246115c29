"""The paper's protocol on a real language model, with the controls that tell a reasoning
feature from a dataset detector.

`run_real_demo` (``liref-lens demo --model smollm2-135m``) reads several contrasts of
reasoning-heavy vs memory-heavy questions (`default_contrasts`: GSM8K vs NQ-open, MMLU-Pro
categories, MGSM in German vs NQ-open, the testbed's prompts; or your own `ContrastSpec`),
fits a difference-in-means direction per layer and scores it in sample, held out, matched on
length, residualised and transferred, each next to trivial readers of the prompt (length, bag
of tokens) scored the same way, with paired verdicts; then it steers with the first
contrast's direction next to control directions of three kinds and reads each question's
change. It writes ``report.html``, CSVs of every table, ``run.json`` (model, versions, data
sources and hashes) and the fitted directions. See docs/how-to/real-model.md for what it
measured on SmolLM2-135M and Gemma 3 270M.
"""

from .data import (
    MEMORY_CATEGORIES,
    REASONING_CATEGORIES,
    ContrastSpec,
    default_contrasts,
    pick_questions,
    prompt,
)
from .report import summary, survival
from .run import ALPHAS, CONTROLS, RealDemoResult, run_real_demo
from .steering import best_layer, steer_evalset, steer_table

__all__ = [
    "ALPHAS",
    "CONTROLS",
    "MEMORY_CATEGORIES",
    "REASONING_CATEGORIES",
    "ContrastSpec",
    "RealDemoResult",
    "best_layer",
    "default_contrasts",
    "pick_questions",
    "prompt",
    "run_real_demo",
    "steer_evalset",
    "steer_table",
    "summary",
    "survival",
]
