"""Zero-shot prompt templates shared by the benchmarks.

The zero-shot prompt, used to read activations (Hong et al. 2025), is ``"Q: {question}\\nA: "``
(`qa_prompt`). A multiple-choice question lists its options inside the question part
(`mc_qa_prompt`)::

    Q: {question}
    Options:
    A. {option A}
    B. {option B}
    A:{space}

The few-shot templates belong to each benchmark's module.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from .base import Item, qa_prompt

__all__ = ["LETTERS", "format_options", "mc_qa_prompt", "qa_prompt"]

LETTERS = string.ascii_uppercase


def format_options(options: Sequence[str]) -> str:
    """One ``"X. option\\n"`` line per option, lettered from A.

    Example:
        >>> format_options(["4", "5"])
        'A. 4\\nB. 5\\n'
    """
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options, got {len(options)}")
    return "".join(f"{LETTERS[i]}. {option}\n" for i, option in enumerate(options))


def mc_qa_prompt(item: Item) -> str:
    """The zero-shot prompt of a multiple-choice item.

    Example:
        >>> mc_qa_prompt(Item("2+2?", "A", options=("4", "5")))
        'Q: 2+2?\\nOptions:\\nA. 4\\nB. 5\\nA: '
    """
    return f"Q: {item.question}\nOptions:\n{format_options(item.options)}A: "
