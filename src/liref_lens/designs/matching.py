"""Matched sampling: draw both classes so that a nuisance variable has the same distribution.

`match_classes` bins the nuisance variable (exact values by default: a category, or each
token length; or ``bins`` quantile bins / explicit edges of a numeric one) and keeps, in every
bin, ``min(count_pos, count_neg)`` items of each class, drawn at random with ``seed``. The
matched classes then have exactly the same histogram over the bins: with exact values, a
reader of that variable alone scores AUROC 0.5.

The overlap is reported per bin (items per class before and kept) and overall (items per
class before and after, the share kept, the total-variation distance between the classes'
binned distributions, for a numeric variable also the Wasserstein distance and the
variable's own AUROC). Below ``warn_share`` of the smaller class kept it warns; with fewer
than ``min_items`` per class it raises, saying how many survived and what to do.

`matched` runs the held-out design (`liref_lens.designs.heldout`) on the matched items.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ..scores import _auroc
from .contrast import Contrast, DesignResult, heldout

__all__ = ["MatchedSample", "match_classes", "matched"]


@dataclass(frozen=True, eq=False)
class MatchedSample:
    """Which items `match_classes` kept, and the overlap it found.

    ``pos`` / ``neg``: kept indices within each class (sorted). ``bins``: per bin ``bin,
    n_pos, n_neg, kept`` (``kept`` items of each class). ``overlap``: two rows (``before``,
    ``after``) of ``stage, n_pos, n_neg, share_kept, tv_distance, wasserstein,
    nuisance_auroc``.
    """

    on: str
    pos: np.ndarray
    neg: np.ndarray
    bins: pd.DataFrame
    overlap: pd.DataFrame


def _numeric(x: np.ndarray) -> bool:
    return x.dtype.kind in "biuf"


def _bin_labels(
    pos: np.ndarray, neg: np.ndarray, bins: int | Sequence[float] | None
) -> tuple[np.ndarray, np.ndarray]:
    if bins is None:
        return pos, neg
    if not (_numeric(pos) and _numeric(neg)):
        raise ValueError("bins apply to a numeric variable; a categorical one matches exactly")
    pooled = np.r_[pos, neg].astype(np.float64)
    if isinstance(bins, int):
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        edges = np.unique(np.quantile(pooled, np.linspace(0, 1, bins + 1)))
    else:
        edges = np.unique(np.asarray(bins, dtype=np.float64))
    inner = edges[1:-1]  # values beyond the outer edges join the first or last bin
    return np.searchsorted(inner, pos, side="right"), np.searchsorted(inner, neg, side="right")


def _stage(stage: str, p: np.ndarray, n: np.ndarray, bp: np.ndarray, bn: np.ndarray,
           smaller: int) -> tuple:  # fmt: skip
    from scipy.stats import wasserstein_distance

    keys = np.unique(np.r_[bp, bn])
    fp = np.array([(bp == k).mean() for k in keys]) if len(bp) else np.zeros(len(keys))
    fn = np.array([(bn == k).mean() for k in keys]) if len(bn) else np.zeros(len(keys))
    tv = float(np.abs(fp - fn).sum() / 2)
    numeric = _numeric(p) and _numeric(n) and len(p) and len(n)
    w = float(wasserstein_distance(p, n)) if numeric else float("nan")
    a = float(_auroc(p.astype(float), n.astype(float))) if numeric else float("nan")
    return (stage, len(p), len(n), min(len(p), len(n)) / smaller, tv, w, a)


def _describe(bins: int | Sequence[float] | None) -> str:
    """How the values are binned, in a few words (not a list of a thousand edges).

    Example:
        >>> _describe(None), _describe(5), _describe(range(0, 4097, 4)), _describe([0, 3, 10])
        ('exact values', '5 quantile bins', 'bins 4 wide from 0 to 4096', 'bin edges [0, 3, 10]')
    """
    if bins is None:
        return "exact values"
    if isinstance(bins, int):
        return f"{bins} quantile bins"
    edges = np.asarray(list(bins), dtype=np.float64)
    steps = np.diff(edges)
    if len(edges) > 3 and np.allclose(steps, steps[0]):
        return f"bins {steps[0]:g} wide from {edges[0]:g} to {edges[-1]:g}"
    return f"bin edges [{', '.join(f'{e:g}' for e in edges)}]"


def match_classes(
    pos_values: Any,
    neg_values: Any,
    *,
    on: str = "token_length",
    bins: int | Sequence[float] | None = None,
    seed: int = 0,
    min_items: int = 10,
    warn_share: float = 0.5,
) -> MatchedSample:
    """Keep, per bin of a nuisance variable, as many items of each class (seeded draw).

    Args:
        pos_values: the variable of each positive item (numbers or categories).
        neg_values: the same for the negative items.
        on: the variable's name, for the messages.
        bins: ``None``: exact values; an int: that many quantile bins of the pooled values;
            a sequence: bin edges (values beyond them join the outer bins).
        seed: seeds which items a bin keeps when one class has more there.
        min_items: fewer kept items per class than this is an error.
        warn_share: keeping less than this share of the smaller class warns.

    Example:
        >>> m = match_classes([3, 3, 4, 9], [3, 4, 4, 5], min_items=1)
        >>> m.pos.tolist(), m.neg.tolist(), m.bins["kept"].tolist()
        ([0, 2], [0, 1], [1, 1, 0, 0])
    """
    p, n = np.asarray(pos_values), np.asarray(neg_values)
    if p.ndim != 1 or n.ndim != 1 or not len(p) or not len(n):
        raise ValueError(f"{on}: need one value per item in each class, got {p.shape}, {n.shape}")
    for x in (p, n):
        if _numeric(x) and not np.isfinite(x.astype(float)).all():
            raise ValueError(f"{on} has NaN or inf values; fill or drop those items first")
    bp, bn = _bin_labels(p, n, bins)
    rng = np.random.default_rng(seed)
    keep_p: list[int] = []
    keep_n: list[int] = []
    rows = []
    for key in sorted(set(bp.tolist()) | set(bn.tolist()), key=lambda k: (str(type(k)), k)):
        ip, ineg = np.flatnonzero(bp == key), np.flatnonzero(bn == key)
        k = min(len(ip), len(ineg))
        keep_p += rng.permutation(ip)[:k].tolist()
        keep_n += rng.permutation(ineg)[:k].tolist()
        rows.append((key, len(ip), len(ineg), k))
    kp, kn = np.sort(np.array(keep_p, int)), np.sort(np.array(keep_n, int))
    smaller = min(len(p), len(n))
    overlap = pd.DataFrame(
        [_stage("before", p, n, bp, bn, smaller),
         _stage("after", p[kp], n[kn], bp[kp], bn[kn], smaller)],
        columns=["stage", "n_pos", "n_neg", "share_kept", "tv_distance", "wasserstein",
                 "nuisance_auroc"],
    )  # fmt: skip
    how = _describe(bins)
    if _numeric(p) and _numeric(n):
        ranges = f"positive {p.min():g}-{p.max():g}, negative {n.min():g}-{n.max():g}"
    else:
        ranges = f"{len(set(p.tolist()) & set(n.tolist()))} shared values"
    if len(kp) < min_items:
        raise ValueError(
            f"matching on {on} ({how}) keeps {len(kp)} items per class, fewer than "
            f"min_items={min_items}: the classes barely overlap ({ranges}); use coarser bins, "
            "draw more items from the overlapping range, or residualise instead"
        )
    if len(kp) < warn_share * smaller:
        warnings.warn(
            f"matching on {on} ({how}) keeps {len(kp)} of {smaller} items per class "
            f"({len(kp) / smaller:.0%}; {ranges}): the matched result speaks for the "
            "overlapping range only",
            UserWarning,
            stacklevel=2,
        )
    bins_df = pd.DataFrame(rows, columns=["bin", "n_pos", "n_neg", "kept"])
    return MatchedSample(on, kp, kn, bins_df, overlap)


def matched(
    c: Contrast,
    *,
    on: str = "token_length",
    bins: int | Sequence[float] | None = None,
    seed: int = 0,
    min_items: int = 10,
    warn_share: float = 0.5,
    **kwargs: Any,
) -> DesignResult:
    """The held-out design on items matched on ``c.meta[on]`` (`match_classes`).

    ``kwargs`` go to `heldout` (``cv_folds``, ``n_boot``, ``ci``, ``margin``); ``seed``
    seeds both the draw and the folds. ``info`` holds ``"bins"``, ``"overlap"`` and
    ``"kept"`` (per row of the matched design: its ``label`` and ``item``, the index within
    its class in ``c``).
    """
    if on not in c.meta.columns:
        raise ValueError(f"{c.name} has no item column {on!r}; its meta holds {list(c.meta)}")
    values = c.meta[on].to_numpy()
    m = match_classes(
        values[: c.n_pos], values[c.n_pos :], on=on, bins=bins, seed=seed,
        min_items=min_items, warn_share=warn_share,
    )  # fmt: skip
    r = heldout(c.take(m.pos.tolist(), m.neg.tolist()), seed=seed, **kwargs)
    design = f"matched on {on}" + ("" if bins is None else f" ({_describe(bins)})")
    kept = pd.DataFrame({"label": [1] * len(m.pos) + [0] * len(m.neg), "item": [*m.pos, *m.neg]})
    return replace(r, design=design, info={"bins": m.bins, "overlap": m.overlap, "kept": kept})
