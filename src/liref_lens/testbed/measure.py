"""Switch rates: how often an intervention turns the memorized answer into the rule answer.

The testbed's behavioural readout. For borderline memory-mode items (answered from the table
at baseline), a push toward reasoning should make the model answer by the rule; for borderline
reasoning-mode items, a push toward memory should make it recall the table. `switch_rate`
counts, among the items answered with the ``source`` answer at baseline, the share whose
argmax over the whole vocabulary becomes the ``target`` answer (``switched``) and the share
still giving the source answer (``kept``); the rest answer something else (damage).

`neuron_shift_vs_random` compares a top-k `NeuronShift` (per-neuron mean differences at
``mlp_post`` between the modes) with random-neuron shifts of the same size on the borderline
prompts, with bootstrap intervals.

Memory: one forward over the items per call, logits of the last position only kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor

from ..cache import cache_activations
from ..interventions import Op, intervene
from ..metrics import mean_ci
from ..model import LensModel
from ..neurons import neuron_shift, neuron_table, random_neuron_shift, top_neurons
from ..positions import last
from .world import Mode, Testbed, TestbedItem, TestbedWorld

__all__ = ["SwitchRate", "answers", "neuron_shift_vs_random", "switch_rate"]

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
        source: the answer the items give at baseline: ``"memorized"`` (the default, for a
            push toward reasoning) or ``"rule"`` (for a push toward memory).
        target: the answer a switch moves to: ``"rule"`` (the default) or ``"memorized"``.
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


def _ci(rate: float, n: int, seed: int) -> tuple[float, float, float]:
    """`mean_ci` of ``n`` 0/1 outcomes with mean ``rate`` (the order of outcomes is immaterial
    to the bootstrap, so the counts are enough)."""
    ones = round(rate * n)
    return mean_ci(np.r_[np.ones(ones), np.zeros(n - ones)], seed=seed)


@torch.no_grad()
def neuron_shift_vs_random(
    model: LensModel,
    testbed: Testbed,
    *,
    layers: Sequence[int] = (0, 1, 2),
    ks: Sequence[int] = (8, 32, 128),
    alphas: Sequence[float] = (1.0, 2.0, 4.0),
    positions: Sequence[str] = ("last", "all"),
    n_random: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Switch rates of a top-k `NeuronShift` and of random-neuron shifts of the same size.

    Per-neuron mean differences ``mean(reasoning) - mean(memory)`` of ``mlp_post`` at the last
    token are fitted on ``testbed.fit`` (`neuron_table`); for each layer (alone) and ``k``,
    the ``k`` neurons of largest ``|mean_diff|`` get ``alpha * mean_diff`` (`neuron_shift`)
    at the last token (``"last"``) or at every position (``"all"``, `NeuronShift`'s default),
    and ``n_random`` controls (`random_neuron_shift`, one generator seeded ``seed`` for the
    whole grid) shift as many other neurons of the layer by the same deltas. ``+alpha`` is
    applied to ``testbed.borderline("memory")`` (memorized -> rule), ``-alpha`` to
    ``testbed.borderline("reasoning")`` (rule -> memorized); rates are `switch_rate`'s.

    Returns:
        One row per (positions, layer, k, alpha, direction): ``n``, ``switched``/``kept`` of
        the top-k shift with a 95% bootstrap interval of ``switched`` over items
        (``lo``/``hi``), and the random shifts' mean switch with a bootstrap interval over the draws
        (``random_lo``/``random_hi``), their max and mean kept.

    Example:
        >>> from liref_lens import load_model
        >>> from liref_lens.testbed import make_testbed, shipped_checkpoint
        >>> tb = make_testbed(0, n_fit=8, n_borderline=8, n_heldout=1)
        >>> df = neuron_shift_vs_random(load_model(str(shipped_checkpoint())), tb, layers=[1],
        ...     ks=[4], alphas=[1.0], positions=["last"], n_random=2, progress=False)
        >>> df[["positions", "layer", "k", "alpha", "direction"]].values.tolist()
        [['last', 1, 4, 1.0, 'memorized->rule'], ['last', 1, 4, -1.0, 'rule->memorized']]
    """
    from tqdm.auto import tqdm

    if n_random < 1:
        raise ValueError(f"n_random must be >= 1, got {n_random}")
    rules: dict[str, Any] = {"last": last(), "all": "all"}
    if not positions or any(p not in rules for p in positions):
        raise ValueError(f"positions must be some of 'last', 'all', got {list(positions)}")
    world, layer_list = testbed.world, model.resolve_layers(list(layers))
    kwargs: dict[str, Any] = dict(
        layers=layer_list, sites="mlp_post", position=last(), progress=False
    )
    table = neuron_table(
        cache_activations(model, testbed.reasoning_prompts(), **kwargs),
        cache_activations(model, testbed.memory_prompts(), **kwargs),
    )
    cases: list[tuple[str, Mode, Answer, Answer, float]] = [
        ("memorized->rule", "memory", "memorized", "rule", 1.0),
        ("rule->memorized", "reasoning", "rule", "memorized", -1.0),
    ]
    items = {mode: testbed.borderline(mode) for _, mode, *_ in cases}
    base = {mode: answers(model, world, its) for mode, its in items.items()}
    gen = torch.Generator().manual_seed(seed)
    grid = [(p, la, k, a) for p in positions for la in layer_list for k in ks for a in alphas]
    rows = []
    for pos, layer, k, alpha in tqdm(grid, desc="neuron shifts", disable=not progress):
        top = top_neurons(table[table["layer"] == layer], k)
        for name, mode, src, tgt, sign in cases:
            shift = neuron_shift(top, sign * alpha, positions=rules[pos])
            rand = [random_neuron_shift(shift, model, generator=gen) for _ in range(n_random)]
            ops = [shift, *rand]
            fitted, *controls = [
                switch_rate(
                    model, world, items[mode], op, source=src, target=tgt, baseline=base[mode]
                )
                for op in ops
            ]
            r_switch = [c.switched for c in controls]
            lo_hi = _ci(fitted.switched, fitted.n, seed)
            r_ci = mean_ci(r_switch, seed=seed)
            rows.append(
                dict(
                    positions=pos,
                    layer=layer,
                    k=k,
                    alpha=sign * alpha,
                    direction=name,
                    n=fitted.n,
                    switched=fitted.switched,
                    lo=lo_hi[1],
                    hi=lo_hi[2],
                    kept=fitted.kept,
                    random=r_ci[0],
                    random_lo=r_ci[1],
                    random_hi=r_ci[2],
                    random_max=max(r_switch),
                    random_kept=float(np.mean([c.kept for c in controls])),
                )
            )
    return pd.DataFrame(rows)
