"""GSM8K: grade-school math word problems with a numeric answer (GSM-Symbolic: `gsm_symbolic`).

Source: ``openai/gsm8k`` (config ``"main"``, splits train/test). Rows store a worked solution
ending in ``#### N``; the gold answer is N as a float. Items are labelled ``"reasoning"`` by
default.

Prompts:

- zero-shot (reading activations): ``"Q: {question}\\nA: "``;
- few-shot (evaluation): the 8 chain-of-thought exemplars of Wei et al. (2022), each written
  ``"Q: {question}\\nA: {chain of thought} The answer is {n}.\\n\\n"``, then
  ``"Q: {question}\\nA:"`` (no space after the last colon).

Generations are cut at ``"\\nQ:"`` (the model starting a new question) and parsed with
`parse_number`: ``#### N``, ``The (final) answer is N``, ``\\boxed{N}``, else the last number
(flagged as a fallback).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .base import REASONING, Item, Task
from .builtin import builtin_source, is_builtin
from .parsers import NUMBER, numbers_equal, parse_number, to_number
from .provenance import describe_source
from .sources import load_rows, require_columns

__all__ = [
    "WEI_EXEMPLARS",
    "few_shot_prompt",
    "gold_from_solution",
    "gsm_task",
    "load_gsm8k",
]

WEI_EXEMPLARS: tuple[tuple[str, str, int], ...] = (
    (
        "There are 15 trees in the grove. Grove workers will plant trees in the grove today. "
        "After they are done, there will be 21 trees. How many trees did the grove workers "
        "plant today?",
        "There are 15 trees originally. Then there were 21 trees after some more were planted. "
        "So there must have been 21 - 15 = 6.",
        6,
    ),
    (
        "If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in "
        "the parking lot?",
        "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5.",
        5,
    ),
    (
        "Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do "
        "they have left in total?",
        "Originally, Leah had 32 chocolates. Her sister had 42. So in total they had "
        "32 + 42 = 74. After eating 35, they had 74 - 35 = 39.",
        39,
    ),
    (
        "Jason had 20 lollipops. He gave Denny some lollipops. Now Jason has 12 lollipops. "
        "How many lollipops did Jason give to Denny?",
        "Jason started with 20 lollipops. Then he had 12 after giving some to Denny. So he "
        "gave Denny 20 - 12 = 8.",
        8,
    ),
    (
        "Shawn has five toys. For Christmas, he got two toys each from his mom and dad. How "
        "many toys does he have now?",
        "Shawn started with 5 toys. If he got 2 toys each from his mom and dad, then that is "
        "4 more toys. 5 + 4 = 9.",
        9,
    ),
    (
        "There were nine computers in the server room. Five more computers were installed "
        "each day, from monday to thursday. How many computers are now in the server room?",
        "There were originally 9 computers. For each of 4 days, 5 more computers were added. "
        "So 5 * 4 = 20 computers were added. 9 + 20 is 29.",
        29,
    ),
    (
        "Michael had 58 golf balls. On tuesday, he lost 23 golf balls. On wednesday, he lost "
        "2 more. How many golf balls did he have at the end of wednesday?",
        "Michael started with 58 golf balls. After losing 23 on tuesday, he had 58 - 23 = 35. "
        "After losing 2 more, he had 35 - 2 = 33 golf balls.",
        33,
    ),
    (
        "Olivia has $23. She bought five bagels for $3 each. How much money does she have left?",
        "Olivia had 23 dollars. 5 bagels for 3 dollars each will be 5 x 3 = 15 dollars. So she "
        "has 23 - 15 dollars left. 23 - 15 is 8.",
        8,
    ),
)
"""The GSM8K chain-of-thought exemplars of Wei et al. (2022): (question, reasoning, answer)."""

STOP = ("\nQ:",)
_GOLD = re.compile(rf"####\s*({NUMBER})")


def few_shot_prompt(
    item: Item, exemplars: Sequence[tuple[str, str, int | float]] = WEI_EXEMPLARS
) -> str:
    """The 8-shot chain-of-thought prompt (format in the module docstring).

    Example:
        >>> prompt = few_shot_prompt(Item("What is 2 + 3?", 5.0))
        >>> print(prompt[:60])
        Q: There are 15 trees in the grove. Grove workers will plant
        >>> prompt.count("The answer is"), prompt[-27:]
        (8, 'is 8.\\n\\nQ: What is 2 + 3?\\nA:')
    """
    shots = "".join(f"Q: {q}\nA: {cot} The answer is {n}.\n\n" for q, cot, n in exemplars)
    return f"{shots}Q: {item.question}\nA:"


def gold_from_solution(solution: str) -> float:
    """The number after ``####`` in a GSM-style solution.

    Example:
        >>> gold_from_solution("She pays 10 * 100 = 1000 dollars.\\n#### 1,000")
        1000.0
    """
    match = _GOLD.search(solution)
    if match is None:
        raise ValueError(f"no '#### N' answer line in solution {solution[-80:]!r}")
    return to_number(match.group(1))


def gsm_task(name: str, items: Sequence[Item], provenance: Mapping[str, Any] | None = None) -> Task:
    """A GSM-family task: numeric answers, Wei et al. 8-shot chain-of-thought prompts."""
    return Task(
        name=name,
        items=tuple(items),
        parser=parse_number,
        matcher=numbers_equal,
        few_shot=few_shot_prompt,
        stop=STOP,
        provenance=provenance or {},
    )


def load_gsm8k(
    source: str | os.PathLike[str] = "openai/gsm8k",
    *,
    config: str = "main",
    split: str = "test",
    n: int | None = None,
    label: str | None = REASONING,
) -> Task:
    """GSM8K from the hub, a local file/folder (see `liref_lens.tasks.sources`), or the shipped
    sample of 250 test questions (``source="builtin"``).

    Args:
        source: Hub id, local path, or ``"builtin"``.
        config: Hub configuration.
        split: ``"test"`` or ``"train"``.
        n: Keep the first ``n`` questions (`Task.sample` draws a random sample instead).
        label: Label given to every item.

    Example:
        >>> task = load_gsm8k("builtin")
        >>> len(task), task.items[0].answer, task.labels[0]
        (250, 18.0, 'reasoning')
        >>> task.source.endswith("gsm8k_test_sample.jsonl"), len(task.source_sha256)
        (True, 64)
    """
    builtin = is_builtin(source)
    if builtin:
        source = builtin_source("gsm8k")
    rows = load_rows(source, config=config, split=split, n=n)
    require_columns(rows, ["question", "answer"], source)
    provenance = describe_source(source, config=config, split=split, builtin=builtin, n=n)
    items = [
        Item(
            question=row["question"],
            answer=gold_from_solution(row["answer"]),
            label=label,
            id=str(row.get("id", i)),
            meta={"solution": row["answer"]},
        )
        for i, row in enumerate(rows)
    ]
    return gsm_task("gsm8k", items, provenance)
