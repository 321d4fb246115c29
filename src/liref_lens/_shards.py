"""How `liref_lens.distributed` splits the batches over ranks, and how long a rank waits.

A batch costs about its padded tokens (rows x longest row). `balance` deals batches to ranks
so that the largest rank's total is small; `windows` does so within consecutive windows of
batches (for `liref_lens.distributed.stream_activations`, which merges summaries window by
window). Every rank computes the same split from the same token ids.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

SLACK = 4.0  # how many times slower per token a peer may be before a gather gives up
WINDOW_BYTES = 64 * 2**20  # summaries gathered per window of stream_activations, at most
WINDOW_BATCHES = 64  # batches per rank and window, at most


def balance(costs: Sequence[int], world: int) -> list[list[int]]:
    """Indices of ``costs`` dealt to ``world`` ranks so that the largest rank total is small.

    Longest processing time first: in decreasing cost (ties: lower index first), each item
    goes to the rank with the smallest total so far (ties: lower rank). Then, while it helps,
    one item moves, or two items swap, between the largest and the smallest total, choosing
    the exchange that brings the two closest to even. Deterministic, so every rank computes
    the same split; the largest total is at most 4/3 of the best possible (Graham, 1969), and
    at most the mean total plus the largest item. Each rank's indices are in increasing order.

    Example:
        >>> balance([8, 7, 6, 5, 4], 2)  # totals 15 and 15 (first dealt: 17 and 13)
        [[2, 3, 4], [0, 1]]
    """
    if world < 1:
        raise ValueError(f"world must be at least 1, got {world}")
    shares: list[list[int]] = [[] for _ in range(world)]
    loads = [0] * world
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        r = min(range(world), key=lambda r: (loads[r], r))
        shares[r].append(i)
        loads[r] += costs[i]
    for _ in range(4 * len(costs)):  # each exchange lowers the sum of squared totals
        high = max(range(world), key=lambda r: (loads[r], -r))
        low = min(range(world), key=lambda r: (loads[r], r))
        exchange = _best_exchange(costs, shares[high], shares[low], loads[high] - loads[low])
        if exchange is None:
            break
        give, take = exchange
        shares[high].remove(give)
        shares[low].append(give)
        moved = costs[give]
        if take is not None:
            shares[low].remove(take)
            shares[high].append(take)
            moved -= costs[take]
        loads[high] -= moved
        loads[low] += moved
    return [sorted(share) for share in shares]


def _best_exchange(
    costs: Sequence[int], high: list[int], low: list[int], gap: int
) -> tuple[int, int | None] | None:
    """The move (``(item, None)``) or swap (``(item, other)``) from ``high`` to ``low`` whose
    cost shift is in ``(0, gap)`` and nearest ``gap / 2``; None if none narrows the gap."""
    best: tuple[float, int, int] | None = None  # (distance from gap/2, item, other or -1)
    ranked = sorted(low, key=lambda j: (costs[j], j))
    values = [costs[j] for j in ranked]
    for i in sorted(high):
        candidates = [(costs[i], -1)]
        k = bisect.bisect_left(values, costs[i] - gap / 2)
        candidates += [
            (costs[i] - values[m], ranked[m]) for m in (k - 1, k) if 0 <= m < len(values)
        ]
        for shift, other in candidates:
            if 0 < shift < gap:
                key = (abs(gap / 2 - shift), i, other)
                if best is None or key < best:
                    best = key
    if best is None:
        return None
    return best[1], (None if best[2] < 0 else best[2])


def batch_costs(batches: Sequence[Sequence[int]], ids: Sequence[Sequence[int]]) -> list[int]:
    """Padded tokens of each batch (lists of prompt indices into ``ids``): rows x longest row."""
    return [len(b) * max(len(ids[i]) for i in b) for b in batches]


def window_batches(summary_bytes: int, world: int) -> int:
    """Batches per rank in one window: at most `WINDOW_BATCHES`, and few enough that the
    ``world x batches`` summaries gathered stay within `WINDOW_BYTES` (at least 1)."""
    return max(1, min(WINDOW_BATCHES, WINDOW_BYTES // (world * summary_bytes)))


def windows(costs: Sequence[int], world: int, per_rank: int) -> list[list[list[int]]]:
    """Consecutive windows of ``world * per_rank`` batches, each split by `balance`: for each
    window, every rank's share as global batch indices."""
    size = world * per_rank
    out = []
    for start in range(0, len(costs), size):
        shares = balance(costs[start : start + size], world)
        out.append([[start + i for i in share] for share in shares])
    return out


def deadline(timeout: float, elapsed: float, own: int, largest: int) -> float:
    """Seconds a rank waits at a gather after ``elapsed`` seconds on its ``own`` padded tokens,
    when the largest share is ``largest``: ``timeout`` plus `SLACK` times the time the largest
    share takes at this rank's speed (just ``timeout`` for a rank without work)."""
    return timeout + (SLACK * elapsed * largest / own if own else 0.0)
