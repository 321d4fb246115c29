"""What the real-model demo reads: contrasts of reasoning-heavy vs memory-heavy questions.

A `ContrastSpec` names two tasks (reasoning, memory) and the item columns a design may
residualise on besides token length. `default_contrasts` gives the four the demo runs by
default, from the samples shipped with the package or, where a folder holds them, the full
public files:

- ``gsm8k_vs_nq``: GSM8K vs NQ-open (one half of NQ-open, seeded); the contrast the paper's
  method is usually shown on, and the one the demo steers with;
- ``mmlu_pro_categories``: MMLU-Pro math/physics/chemistry/engineering vs
  history/law/psychology/health, question text only (one source, one format); residualised
  also on the MMLU-Pro ``src`` family;
- ``mgsm_de_vs_nq``: MGSM in German vs the other half of NQ-open (another language: a
  transfer test of what the GSM8K direction reads);
- ``testbed_cues``: the offline testbed's prompts (two numbers and cue words), reasoning mode
  vs memory mode, read as text.

`pick_questions` draws the questions a run uses (seeded, under a token cap).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model import LensModel
from ..tasks import Item, Task, load_task
from ..tasks.mmlu_pro import MEMORY_CATEGORIES, REASONING_CATEGORIES  # the loader's split

__all__ = [
    "MEMORY_CATEGORIES",
    "REASONING_CATEGORIES",
    "ContrastSpec",
    "default_contrasts",
    "pick_questions",
    "prompt",
]


#: The full public files a ``data_dir`` may hold (the layout of the project's shared data).
FILES = {
    "gsm8k": "gsm8k_test.jsonl",
    "nq_open": "nq_open_dev.jsonl",
    "mmlu_pro": "mmlu_pro_questions_with_llama3_8b_outputs.zip",
    "mgsm": "mgsm/mgsm_de.tsv",
}


@dataclass(frozen=True)
class ContrastSpec:
    """Two tasks to contrast: ``reasoning`` (the positive class) and ``memory``.

    ``columns``: item ``meta`` keys the residualised design removes besides token length.
    ``max_tokens``: the longest question (in the model's tokens) the run picks; None: the
    run's ``max_tokens``.
    """

    name: str
    reasoning: Task
    memory: Task
    columns: tuple[str, ...] = ()
    max_tokens: int | None = None

    @classmethod
    def of(cls, reasoning: Task, memory: Task, name: str | None = None) -> ContrastSpec:
        """A contrast of two tasks, named ``<reasoning>_vs_<memory>`` unless ``name``."""
        return cls(name or f"{reasoning.name}_vs_{memory.name}", reasoning, memory)


def prompt(question: str) -> str:
    """The zero-shot prompt every contrast uses: ``"Q: {question}\\nA: "``."""
    return f"Q: {question}\nA: "


def _source(data_dir: Path | None, name: str) -> tuple[str | Path, str]:
    """Where task ``name`` comes from: the full file in ``data_dir`` if there, else builtin."""
    if data_dir is not None and (data_dir / FILES[name]).is_file():
        return data_dir / FILES[name], str(data_dir / FILES[name])
    return "builtin", f"{name}: the sample shipped with the package"


def _text_task(name: str, prompts: Sequence[str], label: str) -> Task:
    from ..tasks import numbers_equal, parse_number

    items = tuple(Item(p, None, label=label) for p in prompts)
    return Task(name, items, parser=parse_number, matcher=numbers_equal)


def default_contrasts(
    data_dir: str | os.PathLike[str] | None = None, *, seed: int = 0
) -> tuple[list[ContrastSpec], list[str]]:
    """The demo's four contrasts, and a line per task saying which file it came from.

    ``data_dir``: a folder with any of the full files of `FILES`; each task missing there
    comes from the sample shipped with the package (said in the returned lines).

    Example:
        >>> specs, sources = default_contrasts()
        >>> [s.name for s in specs]
        ['gsm8k_vs_nq', 'mmlu_pro_categories', 'mgsm_de_vs_nq', 'testbed_cues']
    """
    from ..testbed import make_testbed

    root = None if data_dir is None else Path(data_dir)
    if root is not None and not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (it should hold the question files)")
    sources = {name: _source(root, name) for name in FILES}
    gsm = load_task("gsm8k", source=sources["gsm8k"][0])
    nq = load_task("nq_open", source=sources["nq_open"][0])
    mgsm = load_task("mgsm", source=sources["mgsm"][0], language="de")
    mmlu = load_task("mmlu_pro", source=sources["mmlu_pro"][0])
    # two disjoint halves of NQ-open, seeded (by identity: two items may ask the same)
    order = np.random.default_rng(seed).permutation(len(nq))
    first = {id(nq.items[int(i)]) for i in order[: len(nq) // 2]}
    nq_a, nq_b = nq.filter(lambda it: id(it) in first), nq.filter(lambda it: id(it) not in first)
    reason = mmlu.filter(lambda it: it.meta.get("category") in REASONING_CATEGORIES)
    memory = mmlu.filter(lambda it: it.meta.get("category") in MEMORY_CATEGORIES)
    tb = make_testbed(seed)
    specs = [
        ContrastSpec("gsm8k_vs_nq", gsm, nq_a),
        ContrastSpec("mmlu_pro_categories", reason, memory, columns=("source",)),
        # German questions take about twice GSM8K's tokens (median 99 for SmolLM2)
        ContrastSpec("mgsm_de_vs_nq", mgsm, nq_b, max_tokens=128),
        ContrastSpec(
            "testbed_cues",
            _text_task("testbed_reasoning", tb.reasoning_prompts(), "reasoning"),
            _text_task("testbed_memory", tb.memory_prompts(), "memory"),
        ),
    ]
    return specs, [line for _, line in sources.values()]


def item_meta(item: Item, columns: Sequence[str]) -> dict[str, object]:
    """The residualisation columns of one item (MMLU-Pro's ``source``: its ``src`` family)."""
    out: dict[str, object] = {}
    for col in columns:
        if col == "source":
            out[col] = str(item.meta.get("src", "")).split("-")[0]
        else:
            out[col] = item.meta.get(col)
    return out


def pick_questions(
    lm: LensModel,
    items: Sequence[Item],
    n: int,
    rng: np.random.Generator,
    max_tokens: int,
) -> list[Item]:
    """``n`` items in seeded random order whose question is at most ``max_tokens`` tokens.

    Example:
        >>> rows = [Item(" ".join(["w1"] * k), 1.0) for k in range(1, 30)]
        >>> picked = pick_questions(lm, rows, 3, np.random.default_rng(0), max_tokens=10)
        >>> len(picked), all(len(r.question.split()) <= 10 for r in picked)
        (3, True)
    """
    out: list[Item] = []
    for i in rng.permutation(len(items)):
        item = items[int(i)]
        if len(lm.tokenizer(item.question)["input_ids"]) > max_tokens:
            continue
        out.append(item)
        if len(out) == n:
            return out
    raise ValueError(
        f"only {len(out)} of {len(items)} questions have at most {max_tokens} tokens, {n} "
        "needed; lower n or n_eval, or raise max_tokens"
    )
