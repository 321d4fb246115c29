"""Seeded random sampling of items, one group at a time (`Task.sample`).

Items that share a group (the variants of one GSM-Symbolic template) are drawn round-robin:
the groups are put in a seeded random order, and each round takes one not-yet-drawn item of
every group, in that order, until ``n`` items are drawn. So ``n`` at most the number of groups
gives ``n`` different groups, and groups never differ by more than one item. An item without a
group is a group of its own, so a task without groups gets a plain random sample (every subset
of size ``n`` equally likely). Only Python's `random.Random` is used: the same seed gives the
same sample on every platform and Python version.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence

__all__ = ["round_robin"]


def round_robin(groups: Sequence[Hashable | None], n: int, seed: int = 0) -> list[int]:
    """The indices of ``n`` items (all if fewer) drawn round-robin over ``groups``, sorted.

    Args:
        groups: The group of each item; ``None`` puts an item in a group of its own.
        n: How many items to draw.
        seed: The random seed.

    Example:
        >>> groups = ["a"] * 50 + ["b"] * 50 + ["c"] * 50  # three templates, 50 variants each
        >>> picked = round_robin(groups, 3, seed=0)
        >>> sorted(groups[i] for i in picked)
        ['a', 'b', 'c']
        >>> picked == round_robin(groups, 3, seed=0), picked == round_robin(groups, 3, seed=1)
        (True, False)
        >>> round_robin([None] * 5, 9)  # fewer items than asked: all of them
        [0, 1, 2, 3, 4]
    """
    if n < 0:
        raise ValueError(f"cannot sample {n} items; n must be 0 or more")
    members: dict[object, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(("item", i) if group is None else ("group", group), []).append(i)
    rng = random.Random(seed)
    order = list(members.values())
    rng.shuffle(order)
    for indices in order:
        rng.shuffle(indices)
    picked: list[int] = []
    depth = 0
    while len(picked) < min(n, len(groups)):
        picked.extend(ix[depth] for ix in order if depth < len(ix))
        depth += 1
    return sorted(picked[:n])
