"""Paired verdicts: does a reader beat a baseline on the same rows, beyond resampling noise?

Two readers (a layer's direction, a trivial reader of the prompt) that scored the same rows
out of fold are compared by the **difference of their AUROCs**, resampled together: each
bootstrap replicate draws rows with replacement within each class (stratified, so both
classes keep their sizes), and both readers are scored on those same rows. A reader *beats*
a baseline only when the percentile interval of that difference lies above ``margin``
(default 0). Two readers that are both perfect on every resample differ by exactly 0 and
never beat each other; a reader at 1.000 against a baseline at 0.998 whose few misordered
pairs drop out of many resamples does not beat it either.

The resamples are those of `liref_lens.confounds.oof_auroc` for the same ``seed`` (positive
rows drawn first, then negative ones, from ``numpy.random.default_rng(seed)``), so a
reader's own AUROC interval and its paired difference come from the same replicates; it is
also the draw order of ``scipy.stats.bootstrap`` given the two classes as two samples, which
the tests use as the independent reference.

A limit of every bootstrap at the ceiling: a reader that is perfect on the rows at hand is
perfect on every resample, so the interval of the difference reflects only the baseline's
errors. With many rows and a baseline that misorders a handful of scattered pairs, a margin
of a few thousandths can come out "beaten"; read ``diff`` next to ``beats`` (or pass a
``margin``).

Memory: one ``[n_boot]`` float64 vector of replicate AUROCs per reader, computed in blocks of
about 4M values (``[n_boot, n]`` index and score arrays per block).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .scores import _auroc, _blocks, _check_boot, _interval

__all__ = [
    "best_verdicts",
    "boot_aurocs",
    "paired_auroc_difference",
    "paired_verdicts",
    "stratified_resamples",
]

VERDICT_COLUMNS = [
    "baseline", "auroc", "baseline_auroc", "diff", "diff_low", "diff_high", "beats",
]  # fmt: skip


def stratified_resamples(
    n_pos: int, n_neg: int, n_boot: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap row indices drawn within each class: ``[n_boot, n_pos]`` then ``[n_boot,
    n_neg]`` from ``numpy.random.default_rng(seed)``, in that order.

    Example:
        >>> ip, ineg = stratified_resamples(3, 2, n_boot=4, seed=0)
        >>> ip.shape, ineg.shape, bool(ip.max() < 3 and ineg.max() < 2)
        ((4, 3), (4, 2), True)
    """
    if n_pos < 1 or n_neg < 1:
        raise ValueError(f"both classes need rows, got {n_pos} positive and {n_neg} negative")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_pos, (n_boot, n_pos)), rng.integers(0, n_neg, (n_boot, n_neg))


def boot_aurocs(
    pos_scores: np.ndarray, neg_scores: np.ndarray, idx_pos: np.ndarray, idx_neg: np.ndarray
) -> np.ndarray:
    """The AUROC of every resample ``(pos_scores[idx_pos[k]], neg_scores[idx_neg[k]])``.

    Example:
        >>> ip, ineg = np.array([[0, 1], [1, 1]]), np.array([[0], [0]])
        >>> boot_aurocs(np.array([2.0, 0.0]), np.array([1.0]), ip, ineg).tolist()
        [0.5, 0.0]
    """
    out = np.empty(len(idx_pos))
    for s in _blocks(len(idx_pos), idx_pos.shape[1] + idx_neg.shape[1]):
        out[s] = _auroc(pos_scores[idx_pos[s]], neg_scores[idx_neg[s]])
    return out


def _vector(x: Any, name: str) -> np.ndarray:
    out = np.asarray(x, dtype=np.float64)
    if out.ndim != 1 or not len(out):
        raise ValueError(f"{name} must be a non-empty 1-D list of scores, got shape {out.shape}")
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or inf; drop those rows first")
    return out


def paired_auroc_difference(
    pos_a: Any,
    neg_a: Any,
    pos_b: Any,
    neg_b: Any,
    *,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """AUROC of reader ``a`` minus that of reader ``b`` on the same rows, with the percentile
    interval of the paired, class-stratified bootstrap.

    ``pos_a[i]`` and ``pos_b[i]`` are the two readers' scores of the same positive row (and
    likewise for the negatives).

    Example:
        >>> perfect = ([3.0, 4.0], [1.0, 2.0])
        >>> paired_auroc_difference(*perfect, *perfect, n_boot=100)  # never beats itself
        (0.0, 0.0, 0.0)
    """
    _check_boot(n_boot, ci)
    pa, na = _vector(pos_a, "pos_a"), _vector(neg_a, "neg_a")
    pb, nb = _vector(pos_b, "pos_b"), _vector(neg_b, "neg_b")
    if pa.shape != pb.shape or na.shape != nb.shape:
        raise ValueError(
            f"the readers must score the same rows: a has {len(pa)} + {len(na)}, b has "
            f"{len(pb)} + {len(nb)} (positive + negative)"
        )
    diff = float(_auroc(pa, na) - _auroc(pb, nb))
    if n_boot == 0:
        return diff, float("nan"), float("nan")
    ip, ineg = stratified_resamples(len(pa), len(na), n_boot, seed)
    boot = boot_aurocs(pa, na, ip, ineg) - boot_aurocs(pb, nb, ip, ineg)
    return (diff, *_interval(boot, ci))


def _matrix(oof: pd.DataFrame, key: str) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray]:
    """Readers (values of ``key``), the ``[reader, row]`` score matrix, row ids and labels."""
    missing = {key, "row", "label", "score"} - set(oof.columns)
    if missing:
        raise ValueError(
            f"an out-of-fold score frame needs columns {key}, row, label, score (missing "
            f"{sorted(missing)}); make it with layer_oof / baseline_oof"
        )
    wide = oof.pivot(index="row", columns=key, values="score").sort_index()
    if wide.isna().any().any():
        raise ValueError(f"not every {key} scored every row; score all readers on the same rows")
    labels = oof.drop_duplicates("row").set_index("row")["label"].reindex(wide.index)
    if len(oof.drop_duplicates(["row", "label"])) != len(wide):
        raise ValueError("a row carries two labels; rows must be the same items for every reader")
    readers = list(wide.columns)
    return readers, wide.to_numpy(np.float64).T, wide.index.to_numpy(), labels.to_numpy(int)


def paired_verdicts(
    readers: pd.DataFrame,
    baselines: pd.DataFrame,
    *,
    by: str = "layer",
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    margin: float = 0.0,
) -> pd.DataFrame:
    """Every reader against every baseline, and against the best one, on the same resamples.

    Args:
        readers: out-of-fold scores with columns ``<by>, row, label, score`` (e.g.
            `liref_lens.confounds.layer_oof`).
        baselines: the same rows scored by the trivial readers, columns ``feature, row,
            label, score`` (`liref_lens.confounds.baseline_oof`).
        by: the column that names a reader in ``readers``.
        margin: a reader beats a baseline when the difference's lower bound exceeds it.

    Returns:
        One row per reader and baseline: ``<by>, baseline, auroc, baseline_auroc, diff,
        diff_low, diff_high, beats``. The baseline ``"best"`` is, in every resample (and for
        the point value), the best of the baselines on those rows, so beating it means
        beating each of them on the same rows.

    Example:
        >>> rows = dict(row=[0, 1, 2, 3], label=[1, 1, 0, 0])
        >>> lay = pd.DataFrame({"layer": 5, "score": [4.0, 3.0, 1.0, 2.0], **rows})
        >>> base = pd.DataFrame({"feature": "length", "score": [9.0, 8.0, 7.0, 6.0], **rows})
        >>> paired_verdicts(lay, base, n_boot=200)[["baseline", "diff", "beats"]].values.tolist()
        [['length', 0.0, False], ['best', 0.0, False]]
    """
    _check_boot(n_boot, ci)
    names, s, rows, y = _matrix(readers, by)
    bnames, b, brows, yb = _matrix(baselines, "feature")
    if not (np.array_equal(rows, brows) and np.array_equal(y, yb)):
        raise ValueError(
            "the readers and the baselines scored different rows (or labels); score both on "
            "the same items, in the same folds"
        )
    pos, neg = y == 1, y == 0
    ip, ineg = stratified_resamples(int(pos.sum()), int(neg.sum()), n_boot, seed)

    def point_and_boot(x: np.ndarray) -> tuple[float, np.ndarray]:
        value = float(_auroc(x[pos], x[neg]))
        return value, boot_aurocs(x[pos], x[neg], ip, ineg) if n_boot else np.empty(0)

    base = [point_and_boot(row) for row in b]
    best = (max(v for v, _ in base), np.max([bt for _, bt in base], axis=0))
    out = []
    for name, row in zip(names, s, strict=True):
        value, boot = point_and_boot(row)
        for bname, (bvalue, bboot) in zip([*bnames, "best"], [*base, best], strict=True):
            lo, hi = _interval(boot - bboot, ci) if n_boot else (float("nan"),) * 2
            out.append((name, bname, value, bvalue, value - bvalue, lo, hi, bool(lo > margin)))
    return pd.DataFrame(out, columns=[by, *VERDICT_COLUMNS])


def best_verdicts(verdicts: pd.DataFrame, *, by: str = "layer") -> pd.DataFrame:
    """The ``"best"`` rows of `paired_verdicts`, one per reader, renamed for a layer table:
    ``<by>, best_baseline_auroc, diff, diff_low, diff_high, beats_baseline``."""
    rows = verdicts[verdicts["baseline"] == "best"]
    return rows[[by, "baseline_auroc", "diff", "diff_low", "diff_high", "beats"]].rename(
        columns={"beats": "beats_baseline"}
    )
