"""Switch rates: how often an intervention turns the memorized answer into the rule answer.

The testbed's behavioural readout. For borderline memory-mode items (answered from the table
at baseline), a push toward reasoning should make the model answer by the rule; for borderline
reasoning-mode items, a push toward memory should make it recall the table. `switch_rate`
counts, among the items answered with the ``source`` answer at baseline, the share whose
argmax over the whole vocabulary becomes the ``target`` answer (``switched``) and the share
still giving the source answer (``kept``); the rest answer something else (damage).

Memory: one forward over the items per call, logits of the last position only kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor

from ..interventions import Op, intervene
from ..model import LensModel
from .world import TestbedItem, TestbedWorld

__all__ = ["SwitchRate", "answers", "switch_rate"]

Answer = Literal["rule", "memorized"]


@dataclass(frozen=True)
class SwitchRate:
    """Of ``n`` items answered with the source answer at baseline: shares switched and kept."""

    n: int
    switched: float
    kept: float


@torch.no_grad()
def answers(
    model: LensModel,
    world: TestbedWorld,
    items: Sequence[TestbedItem],
    ops: Sequence[Op] = (),
    batch_size: int = 256,
) -> Int[Tensor, " n"]:
    """The number each item's prompt is answered with (argmax over the vocabulary; -1 when
    the argmax is not a number), under ``ops`` if given."""
    out = []
    for i in range(0, len(items), batch_size):
        batch = model.tokenize([it.prompt for it in items[i : i + batch_size]])
        if ops:
            with intervene(model, *ops):
                logits = model.forward(batch)[:, -1]
        else:
            logits = model.forward(batch)[:, -1]
        out.append(logits.argmax(-1).cpu() - world.number_offset)
    pred = torch.cat(out)
    return torch.where((pred >= 0) & (pred < world.modulus), pred, -1)


def _answer_of(item: TestbedItem, which: Answer) -> int:
    value = item.rule_answer if which == "rule" else item.memorized_answer
    if value is None:
        raise ValueError(f"item {item.prompt!r} has no memorized answer; use memorized pairs")
    return value


def switch_rate(
    model: LensModel,
    world: TestbedWorld,
    items: Sequence[TestbedItem],
    ops: Op | Sequence[Op],
    *,
    source: Answer = "memorized",
    target: Answer = "rule",
    baseline: Tensor | None = None,
) -> SwitchRate:
    """Share of ``items`` answered ``source`` at baseline that answer ``target`` under ``ops``.

    Args:
        ops: one op or several, applied together.
        source, target: ``"memorized"`` -> ``"rule"`` for a push toward reasoning (the
            default), ``"rule"`` -> ``"memorized"`` for a push toward memory.
        baseline: the items' baseline `answers`, to skip recomputing them.

    Example:
        >>> from liref_lens.testbed import make_testbed
        >>> tb = make_testbed(n_fit=2, n_borderline=2, n_heldout=1)
        >>> len(tb.borderline("memory"))
        2
        >>> op = Add(layers=[1], direction=ds, alpha=1.5, positions=last())  # doctest: +SKIP
        >>> switch_rate(lm, tb.world, tb.borderline("memory"), op).switched  # doctest: +SKIP
        0.86
    """
    if source == target:
        raise ValueError("source and target must differ ('memorized' and 'rule')")
    op_list = [ops] if isinstance(ops, Op) else list(ops)
    base = baseline if baseline is not None else answers(model, world, items)
    src = torch.tensor([_answer_of(it, source) for it in items])
    tgt = torch.tensor([_answer_of(it, target) for it in items])
    ok = base == src
    n = int(ok.sum())
    if n == 0:
        return SwitchRate(0, float("nan"), float("nan"))
    steered = answers(model, world, items, op_list)
    return SwitchRate(
        n=n,
        switched=float((steered[ok] == tgt[ok]).float().mean()),
        kept=float((steered[ok] == src[ok]).float().mean()),
    )
