"""MMLU-Pro: ten-option multiple-choice questions in 14 categories, split by reasoning vs memory.

Source: ``TIGER-Lab/MMLU-Pro`` (splits test and validation). Padding options ``"N/A"`` are
dropped. Hong et al. (2025) annotate each question with ``memory_reason_score`` in [0, 1]; a
question is ``"reasoning"`` if its score is above ``threshold`` (0.5), else ``"memory"``. Load
their annotated file as ``source`` to get the labels, or attach labels later with
`Task.with_labels`. Without the annotation, ``category_labels`` gives a coarse split by
category; `CATEGORY_LABELS` labels math, physics, engineering and chemistry ``"reasoning"`` and
history, law, psychology and health ``"memory"`` (other categories stay unlabelled).

Local sources include MMLU-Pro's released results archive (a ``.zip`` holding one JSON list of
all 12,032 test questions) and ``source="builtin"``, the 300-question sample shipped with the
package (150 per side of `CATEGORY_LABELS`, labelled by it by default).

Prompts:

- zero-shot (reading activations): ``"Q: {question}\\nOptions:\\nA. {option}\\n...A: "``;
- few-shot (evaluation), the MMLU-Pro chain-of-thought prompt with the first ``n_shot`` (5)
  validation questions of the same category, exactly::

    The following are multiple choice questions (with answers) about {category}. Think step by
    step and then finish your answer with "the answer is (X)" where X is the correct letter
    choice.\\n\\n
    Question:\\n{question}\\nOptions:\\nA. {option}\\nB. {option}\\n...Answer: {cot}\\n\\n
    ... (one such block per exemplar)
    Question:\\n{question}\\nOptions:\\nA. {option}\\n...Answer: Let's think step by step.

  The header is one line (wrapped here), and ``{cot}`` is the exemplar's ``cot_content``
  without its leading ``"A: "``.

Generations are cut at ``"\\nQuestion:"`` and parsed with `parse_choice` (letters A-J): a text
without an answer statement is a parse failure, never a random letter.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from .base import MEMORY, REASONING, Item, Task, label_from_value
from .builtin import builtin_source, is_builtin
from .parsers import letters_equal, parse_choice
from .prompts import LETTERS, format_options, mc_qa_prompt
from .provenance import describe_source
from .sources import as_list, has_splits, load_rows, require_columns

__all__ = [
    "CATEGORY_LABELS",
    "HEADER",
    "MEMORY_CATEGORIES",
    "REASONING_CATEGORIES",
    "few_shot_prompt",
    "items_from_rows",
    "load_mmlu_pro",
]

REASONING_CATEGORIES = ("math", "physics", "engineering", "chemistry")
MEMORY_CATEGORIES = ("history", "law", "psychology", "health")
CATEGORY_LABELS: dict[str, str] = {
    **{c: REASONING for c in REASONING_CATEGORIES},
    **{c: MEMORY for c in MEMORY_CATEGORIES},
}
"""A coarse reasoning/memory split of MMLU-Pro by category (used when no score is given)."""
_COLUMNS: list[str | tuple[str, ...]] = ["question", "options", ("answer", "answer_index")]

HEADER = (
    "The following are multiple choice questions (with answers) about {category}. Think step "
    'by step and then finish your answer with "the answer is (X)" where X is the correct '
    "letter choice.\n\n"
)
STOP = ("\nQuestion:",)


def _question_block(item: Item) -> str:
    return f"Question:\n{item.question}\nOptions:\n{format_options(item.options)}"


def _cot(item: Item) -> str:
    cot = str(item.meta.get("cot_content") or "").strip()
    if not cot:
        raise ValueError(f"exemplar {item.id!r} has no cot_content")
    return cot[3:] if cot.startswith("A: ") else cot


def few_shot_prompt(item: Item, exemplars: Sequence[Item], n_shot: int = 5) -> str:
    """The MMLU-Pro chain-of-thought prompt (format in the module docstring).

    Example:
        >>> shot = Item("1+1?", "B", options=("1", "2"), meta={"category": "math",
        ...     "cot_content": "A: Let's think step by step. 1+1=2. The answer is (B)."})
        >>> test = Item("2+2?", "A", options=("4", "5"), meta={"category": "math"})
        >>> print(few_shot_prompt(test, [shot]))  # doctest: +NORMALIZE_WHITESPACE
        The following are multiple choice questions (with answers) about math. Think step by
        step and then finish your answer with "the answer is (X)" where X is the correct letter
        choice.
        <BLANKLINE>
        Question:
        1+1?
        Options:
        A. 1
        B. 2
        Answer: Let's think step by step. 1+1=2. The answer is (B).
        <BLANKLINE>
        Question:
        2+2?
        Options:
        A. 4
        B. 5
        Answer: Let's think step by step.
    """
    category = item.meta.get("category")
    shots = [e for e in exemplars if e.meta.get("category") == category][:n_shot]
    if not shots and n_shot > 0:
        raise ValueError(f"no few-shot exemplars for category {category!r}")
    blocks = "".join(f"{_question_block(e)}Answer: {_cot(e)}\n\n" for e in shots)
    return (
        HEADER.format(category=category)
        + blocks
        + f"{_question_block(item)}Answer: Let's think step by step."
    )


def _answer(row: dict[str, Any], n_options: int) -> str:
    letter = row.get("answer")
    if isinstance(letter, str) and letter.strip():
        letter = letter.strip().upper()
    else:
        letter = LETTERS[int(row["answer_index"])]
    if len(letter) != 1 or letter not in LETTERS[:n_options]:
        raise ValueError(
            f"MMLU-Pro question {row.get('question_id')!r}: answer {letter!r} is not one of its "
            f"{n_options} options"
        )
    return letter


def items_from_rows(
    rows: Sequence[dict[str, Any]],
    score_field: str | None = "memory_reason_score",
    threshold: float = 0.5,
    category_labels: Mapping[str, str] | None = None,
) -> list[Item]:
    """MMLU-Pro rows as items; ``score_field`` (if present in a row) sets label and score,
    else ``category_labels[category]`` (if given) sets the label."""
    items = []
    for i, row in enumerate(rows):
        label, score = label_from_value(row.get(score_field) if score_field else None, threshold)
        if label is None and category_labels is not None:
            label = category_labels.get(str(row.get("category")))
        options = tuple(o for o in as_list(row["options"]) if o != "N/A")
        items.append(
            Item(
                question=str(row["question"]),
                answer=_answer(row, len(options)),
                label=label,
                score=score,
                id=str(row.get("question_id", i)),
                options=options,
                meta={
                    "category": row.get("category"),
                    "cot_content": row.get("cot_content"),
                    "src": row.get("src"),
                },
            )
        )
    return items


def load_mmlu_pro(
    source: str | os.PathLike[str] = "TIGER-Lab/MMLU-Pro",
    *,
    split: str = "test",
    n: int | None = None,
    categories: Sequence[str] | None = None,
    score_field: str | None = "memory_reason_score",
    threshold: float = 0.5,
    exemplar_source: str | os.PathLike[str] | None = None,
    exemplar_split: str = "validation",
    n_shot: int = 5,
    category_labels: Mapping[str, str] | None = None,
) -> Task:
    """MMLU-Pro from the hub, a local file/folder/zip or the shipped sample, with labels.

    Args:
        source: Hub id, local path (e.g. the annotated file of Hong et al., or the released
            results ``.zip``), or ``"builtin"``.
        split: The split of the questions.
        n: Keep the first ``n`` questions (after filtering by category; `Task.sample` draws a
            random sample instead).
        categories: Keep only these categories (an error if none of them is in the source).
        score_field: The annotation column; ``None`` to leave items unlabelled.
        threshold: A score above it means ``"reasoning"``.
        exemplar_source: Where the few-shot exemplars come from. By default ``source`` itself
            when it has splits (hub id, ``{split}`` path, DatasetDict folder); a single local
            file has none, and the task then has no few-shot prompt unless this is given.
        exemplar_split: The split holding the exemplars.
        n_shot: Exemplars per prompt.
        category_labels: ``{category: label}`` for questions without a score, e.g.
            `CATEGORY_LABELS` (the default for ``source="builtin"``).

    Example:
        >>> task = load_mmlu_pro("builtin")
        >>> reasoning, memory = task.split()
        >>> len(task), len(reasoning), len(memory)
        (300, 150, 150)
        >>> sorted({item.meta["category"] for item in memory})
        ['health', 'history', 'law', 'psychology']
    """
    builtin = is_builtin(source)
    if builtin:
        source = builtin_source("mmlu_pro")
        if category_labels is None:
            category_labels = CATEGORY_LABELS
    rows = load_rows(source, split=split)
    require_columns(rows, _COLUMNS, source)
    provenance = describe_source(source, split=split, builtin=builtin)
    if categories is not None:
        found = sorted({str(row.get("category")) for row in rows})
        rows = [row for row in rows if row.get("category") in set(categories)]
        if not rows:
            raise ValueError(
                f"{source}: no questions in the categories {sorted(categories)}; the categories "
                f"there are {found}"
            )
        provenance["selection"].append({"categories": sorted(categories)})
    if n is not None:
        provenance["selection"].append({"first": n})
    items = items_from_rows(
        rows[:n] if n is not None else rows, score_field, threshold, category_labels
    )
    if exemplar_source is None and has_splits(source):
        exemplar_source = source
    few_shot = None
    if exemplar_source is not None:
        exemplar_rows = load_rows(exemplar_source, split=exemplar_split)
        require_columns(exemplar_rows, _COLUMNS, exemplar_source)
        provenance["exemplars"] = describe_source(exemplar_source, split=exemplar_split)
        exemplars = items_from_rows(exemplar_rows, None)
        few_shot = partial(few_shot_prompt, exemplars=tuple(exemplars), n_shot=n_shot)
    return Task(
        name="mmlu_pro",
        items=tuple(items),
        parser=parse_choice,
        matcher=letters_equal,
        zero_shot=mc_qa_prompt,
        few_shot=few_shot,
        stop=STOP,
        provenance=provenance,
    )
