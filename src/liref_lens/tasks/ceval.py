"""C-Eval and C-Eval-H: Chinese four-option exam questions (Huang et al., 2023).

Source: ``ceval/ceval-exam``, one configuration per subject, splits dev (5 exemplars with
explanations), val and test (test has no answers, so the default split is val). C-Eval-H is
the hard subset, `CEVAL_HARD` (8 maths, physics and chemistry subjects). A local ``source``
either holds ``{config}`` (replaced by each subject, e.g. ``"ceval/{split}/{config}_{split}.csv"``
for the official CSV release) or is one file/folder whose rows carry a ``subject`` column.
Items are unlabelled by default.

Prompts:

- zero-shot (reading activations): ``"Q: {question}\\nOptions:\\nA. {A}\\n...D. {D}\\nA: "``;
- few-shot (evaluation), the C-Eval chain-of-thought prompt with the first ``n_shot`` (5) dev
  questions of the same subject, exactly::

    以下是中国关于{科目}考试的单项选择题，请选出其中的正确答案。\\n\\n
    {question}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\n
    答案：让我们一步一步思考，\\n{explanation}\\n所以答案是{answer}。\\n\\n
    ... (one such block per exemplar)
    {question}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\n答案：让我们一步一步思考，\\n

  where ``{科目}`` is the subject's Chinese name (`SUBJECT_NAMES`), and each exemplar block is
  one string (shown here over two lines, broken after ``D. {D}\\n``).

Generations are parsed with `parse_choice` (letters A-D; ``答案是C``, ``answer is (C)``, ...),
first answer statement wins; no answer statement is a parse failure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from typing import Any

from .base import Item, Task
from .parsers import letters_equal, parse_choice
from .prompts import format_options, mc_qa_prompt
from .provenance import describe_source
from .sources import has_splits, load_rows, require_columns, resolve_local

__all__ = ["CEVAL_HARD", "SUBJECT_NAMES", "few_shot_prompt", "load_ceval"]

CEVAL_HARD = (
    "advanced_mathematics",
    "discrete_mathematics",
    "probability_and_statistics",
    "college_chemistry",
    "college_physics",
    "high_school_mathematics",
    "high_school_chemistry",
    "high_school_physics",
)
SUBJECT_NAMES = {
    "advanced_mathematics": "高等数学",
    "discrete_mathematics": "离散数学",
    "probability_and_statistics": "概率统计",
    "college_chemistry": "大学化学",
    "college_physics": "大学物理",
    "high_school_mathematics": "高中数学",
    "high_school_chemistry": "高中化学",
    "high_school_physics": "高中物理",
}
"""Chinese names of the C-Eval-H subjects; other subjects appear under their English id."""

LETTERS = "ABCD"
THINK = "答案：让我们一步一步思考，\n"


def _block(item: Item) -> str:
    return f"{item.question}\n{format_options(item.options)}{THINK}"


def few_shot_prompt(item: Item, exemplars: Sequence[Item], n_shot: int = 5) -> str:
    """The C-Eval chain-of-thought prompt (format in the module docstring).

    Example:
        >>> meta = {"subject": "college_physics", "explanation": "1. 由定义可知。"}
        >>> shot = Item("题一", "B", options=("甲", "乙", "丙", "丁"), meta=meta)
        >>> test = Item("题二", "A", options=("1", "2", "3", "4"), meta=meta)
        >>> print(few_shot_prompt(test, [shot]))
        以下是中国关于大学物理考试的单项选择题，请选出其中的正确答案。
        <BLANKLINE>
        题一
        A. 甲
        B. 乙
        C. 丙
        D. 丁
        答案：让我们一步一步思考，
        1. 由定义可知。
        所以答案是B。
        <BLANKLINE>
        题二
        A. 1
        B. 2
        C. 3
        D. 4
        答案：让我们一步一步思考，
        <BLANKLINE>
    """
    subject = item.meta.get("subject")
    shots = [e for e in exemplars if e.meta.get("subject") == subject][:n_shot]
    if not shots and n_shot > 0:
        raise ValueError(f"no few-shot exemplars for subject {subject!r}")
    name = SUBJECT_NAMES.get(str(subject), str(subject))
    header = f"以下是中国关于{name}考试的单项选择题，请选出其中的正确答案。\n\n"
    blocks = "".join(
        f"{_block(e)}{str(e.meta.get('explanation') or '').strip()}\n所以答案是{e.answer}。\n\n"
        for e in shots
    )
    return header + blocks + _block(item)


def _rows(
    source: str | os.PathLike[str], subjects: Sequence[str], split: str, n: int | None
) -> list[tuple[str, dict[str, Any]]]:
    """(subject, row) pairs, at most ``n`` per subject."""
    if _per_subject(source, split):
        return [
            (subject, row)
            for subject in subjects
            for row in load_rows(source, config=subject, split=split, n=n)
        ]
    rows = load_rows(source, split=split)
    if rows and "subject" not in rows[0] and len(subjects) != 1:
        raise ValueError(
            f"{source}: rows have no 'subject' column; put {{config}} in the path to read one "
            "file per subject, or pass a single subject"
        )
    counts: dict[str, int] = {}
    pairs = []
    for row in rows:
        subject = str(row.get("subject", subjects[0]))
        if subject in subjects and counts.get(subject, 0) < (n if n is not None else len(rows)):
            counts[subject] = counts.get(subject, 0) + 1
            pairs.append((subject, row))
    if not pairs:
        found = sorted({str(row.get("subject")) for row in rows})
        raise ValueError(
            f"{source}: no questions of the subjects {list(subjects)}; the subjects there are "
            f"{found}"
        )
    return pairs


def _per_subject(source: str | os.PathLike[str], split: str) -> bool:
    """Whether ``source`` is read once per subject (a hub id or a ``{config}`` path)."""
    return "{config}" in os.fspath(source) or resolve_local(source, split=split) is None


def _provenance(
    source: str | os.PathLike[str], subjects: Sequence[str], split: str, n: int | None
) -> dict[str, Any]:
    if _per_subject(source, split):
        record = describe_source(source, configs=subjects, split=split)
    else:
        record = describe_source(source, split=split)
        record["config"] = list(subjects)
    if n is not None:
        record["selection"].append({"first_per_subject": n})
    return record


def _items(pairs: Sequence[tuple[str, dict[str, Any]]], label: str | None) -> list[Item]:
    items = []
    for i, (subject, row) in enumerate(pairs):
        answer = str(row.get("answer") or "").strip().upper()
        if len(answer) != 1 or answer not in LETTERS:
            raise ValueError(
                f"C-Eval {subject} row {row.get('id', i)!r} has no answer letter (the test "
                "split has none; use split='val')"
            )
        items.append(
            Item(
                question=str(row["question"]),
                answer=answer,
                label=label,
                id=f"{subject}-{row.get('id', i)}",
                options=tuple(str(row[k]) for k in LETTERS),
                meta={"subject": subject, "explanation": row.get("explanation")},
            )
        )
    return items


def load_ceval(
    source: str | os.PathLike[str] = "ceval/ceval-exam",
    *,
    subjects: Sequence[str] = CEVAL_HARD,
    split: str = "val",
    n: int | None = None,
    label: str | None = None,
    exemplar_source: str | os.PathLike[str] | None = None,
    exemplar_split: str = "dev",
    n_shot: int = 5,
) -> Task:
    """C-Eval questions of ``subjects`` (C-Eval-H by default) from the hub or local files.

    Args:
        source: Hub id or local path (see the module docstring).
        subjects: The subjects (hub configurations) to load.
        split: ``"val"`` or ``"dev"`` (``"test"`` has no answers).
        n: Keep the first ``n`` questions of each subject (`Task.sample` draws a random
            sample instead).
        label: Label given to every item.
        exemplar_source: Where the few-shot exemplars come from; by default ``source`` when it
            has splits. A single local file has none: the task then has no few-shot prompt.
        exemplar_split: The split holding the exemplars.
        n_shot: Exemplars per prompt.
    """
    subjects = tuple(subjects)
    pairs = _rows(source, subjects, split, n)
    require_columns([row for _, row in pairs], ["question", *LETTERS], source)
    items = _items(pairs, label)
    provenance = _provenance(source, subjects, split, n)
    if exemplar_source is None and has_splits(source, config=subjects[0]):
        exemplar_source = source
    few_shot = None
    if exemplar_source is not None:
        exemplars = _items(_rows(exemplar_source, subjects, exemplar_split, None), None)
        few_shot = partial(few_shot_prompt, exemplars=tuple(exemplars), n_shot=n_shot)
        provenance["exemplars"] = _provenance(exemplar_source, subjects, exemplar_split, None)
    return Task(
        name="ceval_h" if set(subjects) == set(CEVAL_HARD) else "ceval",
        items=tuple(items),
        parser=partial(parse_choice, letters=LETTERS),
        matcher=letters_equal,
        zero_shot=mc_qa_prompt,
        few_shot=few_shot,
        stop=(),
        provenance=provenance,
    )
