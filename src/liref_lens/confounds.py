"""Confound controls: can a trivial feature of the prompt separate the classes as well?

A direction that separates two prompt sets is only interesting if the separation is not
something a trivial reader of the prompt could do. Two such readers score the same prompts,
with the same folds as the layers:

- ``length``: the prompt length in tokens (oriented towards the better side over all rows,
  so the baseline is never weaker than it could be);
- ``bag_of_tokens``: a logistic regression on token counts (no order, no model), scored by
  its out-of-fold decision values under seeded ``StratifiedKFold``.

Each layer's difference-in-means direction is scored the same way: fitted on the training
folds, its projections on the held-out fold pooled into one out-of-fold AUROC. The
in-sample AUROC of `liref_lens.separation` fits the direction on the rows it scores, so it is
not comparable to a held-out baseline.

`layer_oof` and `baseline_oof` keep the out-of-fold **scores** (one row per reader and item:
``row, label, fold, score, threshold``); `auroc_table` turns them into AUROCs with intervals
(`layer_cv_auroc` and `confound_baselines` are the two in one call), and `against_baselines`
compares each layer with the baselines by a paired bootstrap of the AUROC difference on the
same resampled rows (`liref_lens.verdicts`). ``threshold`` is the midpoint of the training
folds' class means of the reader's score, the cut a transfer or accuracy is read at.

Memory: the token-count matrix is sparse (``n x vocab``, non-zeros only); the layer scores hold
one float64 copy of one layer's ``[n, d]`` activations at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._oof import _baseline_oof, _folds, _labels, _layer_oof, _oof_bag
from .cache import Activations
from .model import LensModel
from .scores import _auroc, _boot_pair, _check_boot, _interval
from .verdicts import best_verdicts, paired_verdicts

__all__ = [
    "against_baselines",
    "auroc_table",
    "bag_of_tokens_auroc",
    "baseline_oof",
    "confound_baselines",
    "layer_cv_auroc",
    "layer_oof",
    "length_auroc",
    "oof_auroc",
]

_COLUMNS = ["feature", "auroc", "ci_low", "ci_high"]


def oof_auroc(
    pos_scores: Any, neg_scores: Any, *, n_boot: int = 500, ci: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """AUROC of ``pos`` vs ``neg`` scores and its percentile-bootstrap interval (rows
    resampled within each class).

    Example:
        >>> oof_auroc([3.0, 2.0, 1.0], [1.0, 0.0], n_boot=0)
        (0.9166666666666666, nan, nan)
    """
    _check_boot(n_boot, ci)
    a = np.asarray(pos_scores, dtype=np.float64)
    b = np.asarray(neg_scores, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or not len(a) or not len(b):
        raise ValueError(f"need two non-empty 1-D score lists, got shapes {a.shape}, {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores contain NaN or inf; drop those rows first")
    rng = np.random.default_rng(seed)
    ia, ib = rng.integers(0, len(a), (n_boot, len(a))), rng.integers(0, len(b), (n_boot, len(b)))
    value = float(_auroc(a, b))
    if n_boot == 0:
        return value, float("nan"), float("nan")
    return (value, *_interval(_boot_pair(_auroc, a, b, ia, ib), ci))


def baseline_oof(
    pos_ids: Sequence[Sequence[int]],
    neg_ids: Sequence[Sequence[int]],
    vocab: int,
    *,
    cv_folds: int = 5,
    C: float = 1.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Out-of-fold scores of the trivial readers, one row per reader and item.

    Columns ``feature, row, label, fold, score, threshold``; ``row`` counts the positive
    items first, then the negative ones (``label`` 1 and 0). The folds are those of
    `layer_oof` for the same ``seed`` and class sizes.

    Example:
        >>> df = baseline_oof([[1, 2, 3]] * 5, [[1]] * 5, vocab=4)
        >>> df.groupby("feature")["score"].size().to_dict()
        {'bag_of_tokens': 10, 'length': 10}
    """
    y = _labels(len(pos_ids), len(neg_ids))
    return _baseline_oof(pos_ids, neg_ids, vocab, _folds(y, cv_folds, seed), C)


def length_auroc(
    pos_ids: Sequence[Sequence[int]],
    neg_ids: Sequence[Sequence[int]],
    *,
    n_boot: int = 500,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """AUROC of prompt length in tokens, oriented to the better side (``max(a, 1 - a)``).

    Orienting after looking makes the baseline slightly optimistic, which is the safe side
    for a control; the interval is of the oriented score.

    Example:
        >>> length_auroc([[1, 2, 3], [1, 2]], [[1]], n_boot=0)[0]
        1.0
        >>> length_auroc([[1]], [[1, 2, 3], [1, 2]], n_boot=0)[0]  # shorter is as telling
        1.0
    """
    lp = np.array([len(x) for x in pos_ids], dtype=np.float64)
    ln = np.array([len(x) for x in neg_ids], dtype=np.float64)
    sign = 1.0 if _auroc(lp, ln) >= 0.5 else -1.0
    return oof_auroc(sign * lp, sign * ln, n_boot=n_boot, ci=ci, seed=seed)


def bag_of_tokens_auroc(
    pos_ids: Sequence[Sequence[int]],
    neg_ids: Sequence[Sequence[int]],
    vocab: int,
    *,
    cv_folds: int = 5,
    C: float = 1.0,
    n_boot: int = 500,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Out-of-fold AUROC of a logistic regression on token counts (seeded stratified folds).

    Example:
        >>> pos = [[1, 1, 2]] * 5 + [[1, 2, 2]] * 5  # token 3 never in pos
        >>> neg = [[3, 2]] * 10
        >>> bag_of_tokens_auroc(pos, neg, vocab=4, n_boot=0)[0]
        1.0
    """
    y = _labels(len(pos_ids), len(neg_ids))
    folds = _folds(y, cv_folds, seed)
    _, oof, _ = _oof_bag([*pos_ids, *neg_ids], vocab, y, folds, C, None)
    return oof_auroc(oof[y == 1], oof[y == 0], n_boot=n_boot, ci=ci, seed=seed)


def auroc_table(
    oof: pd.DataFrame, *, n_boot: int = 500, ci: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """AUROC and bootstrap interval of each reader of an out-of-fold score frame.

    A frame of `layer_oof` gives ``layer, score ("cv_auroc"), value, ci_low, ci_high`` (the
    table of `layer_cv_auroc`); one of `baseline_oof` gives ``feature, auroc, ci_low,
    ci_high`` (that of `confound_baselines`).

    Example:
        >>> auroc_table(baseline_oof([[1, 2, 3]] * 5, [[1]] * 5, vocab=4), n_boot=0)
        ...     # doctest: +NORMALIZE_WHITESPACE
                 feature  auroc  ci_low  ci_high
        0         length    1.0     NaN      NaN
        1  bag_of_tokens    1.0     NaN      NaN
    """
    key = "layer" if "layer" in oof.columns else "feature"
    rows = []
    for name, g in oof.groupby(key, sort=False):
        g = g.sort_values("row")
        pos, neg = g["score"][g["label"] == 1], g["score"][g["label"] == 0]
        rows.append((name, *oof_auroc(pos, neg, n_boot=n_boot, ci=ci, seed=seed)))
    if key == "layer":
        df = pd.DataFrame(rows, columns=["layer", "value", "ci_low", "ci_high"])
        df.insert(1, "score", "cv_auroc")
        return df
    return pd.DataFrame(rows, columns=_COLUMNS)


def confound_baselines(
    lm: LensModel,
    pos_prompts: Sequence[str],
    neg_prompts: Sequence[str],
    *,
    cv_folds: int = 5,
    C: float = 1.0,
    n_boot: int = 500,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """AUROC of the trivial readers (``length``, ``bag_of_tokens``) on the model's tokens.

    Returns a DataFrame with columns ``feature, auroc, ci_low, ci_high``. Prompts are
    tokenized as the model reads them (`LensModel.encode`, BOS included where the model
    prepends one). `baseline_oof` keeps the scores behind it.

    Example:
        >>> df = confound_baselines(lm, ["w1 w2 w3 w4"] * 5, ["w5"] * 5, n_boot=0)
        >>> df[["feature", "auroc"]].values.tolist()
        [['length', 1.0], ['bag_of_tokens', 1.0]]
    """
    pos_ids, neg_ids = lm.encode(list(pos_prompts)), lm.encode(list(neg_prompts))
    oof = baseline_oof(pos_ids, neg_ids, int(lm.cfg.d_vocab), cv_folds=cv_folds, C=C, seed=seed)
    return auroc_table(oof, n_boot=n_boot, ci=ci, seed=seed)


def layer_oof(
    pos: Activations,
    neg: Activations,
    *,
    site: str | None = None,
    cv_folds: int = 5,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Out-of-fold scores of each layer's difference-in-means direction.

    Per fold the direction is ``mean(pos_train) - mean(neg_train)`` (float64) and the held-out
    rows are scored by their projection onto it. Columns ``layer, row, label, fold, score,
    threshold`` (``row``: positive items first); the folds are those of `baseline_oof` for
    the same ``seed`` and class sizes.

    Example:
        >>> from liref_lens import cache_activations
        >>> pos = cache_activations(lm, [f"w1 w{i}" for i in range(5)], layers=[1], progress=False)
        >>> neg = cache_activations(lm, [f"w9 w{i}" for i in range(5)], layers=[1], progress=False)
        >>> layer_oof(pos, neg, progress=False).shape
        (10, 6)
    """
    y = _labels(len(pos), len(neg))
    return _layer_oof(pos, neg, site, _folds(y, cv_folds, seed), progress=progress)


def layer_cv_auroc(
    pos: Activations,
    neg: Activations,
    *,
    site: str | None = None,
    cv_folds: int = 5,
    n_boot: int = 500,
    ci: float = 0.95,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Out-of-fold AUROC of each layer's difference-in-means direction.

    The AUROC of `layer_oof`'s scores: columns ``layer, score ("cv_auroc"), value, ci_low,
    ci_high``.

    Example:
        >>> from liref_lens import cache_activations
        >>> pos = cache_activations(lm, [f"w1 w{i}" for i in range(5)], layers=[1], progress=False)
        >>> neg = cache_activations(lm, [f"w9 w{i}" for i in range(5)], layers=[1], progress=False)
        >>> df = layer_cv_auroc(pos, neg, n_boot=0, progress=False)
        >>> df[["layer", "score"]].values.tolist(), bool(0.0 <= df["value"][0] <= 1.0)
        ([[1, 'cv_auroc']], True)
    """
    oof = layer_oof(pos, neg, site=site, cv_folds=cv_folds, seed=seed, progress=progress)
    return auroc_table(oof, n_boot=n_boot, ci=ci, seed=seed)


def against_baselines(
    layers: pd.DataFrame,
    baselines: pd.DataFrame,
    *,
    n_boot: int = 500,
    ci: float = 0.95,
    seed: int = 0,
    margin: float = 0.0,
) -> pd.DataFrame:
    """Each layer's held-out AUROC next to the best trivial baseline, with a paired verdict.

    Args:
        layers: out-of-fold scores of the layers (`layer_oof`).
        baselines: out-of-fold scores of the trivial readers on the same rows and folds
            (`baseline_oof`).

    Returns:
        Per layer ``layer, score ("cv_auroc"), value, ci_low, ci_high`` (as `layer_cv_auroc`)
        and ``baseline`` (the best baseline by AUROC), ``baseline_auroc``, ``diff``,
        ``diff_low``, ``diff_high`` (layer minus the best baseline, paired bootstrap: the
        best baseline is taken in every resample) and ``beats_baseline`` (``diff_low >
        margin``). `liref_lens.verdicts.paired_verdicts` has the comparison with each
        baseline.

    Example:
        >>> rows = dict(row=[0, 1, 2, 3], label=[1, 1, 0, 0], fold=0, threshold=0.0)
        >>> lay = pd.DataFrame({"layer": 5, "score": [4.0, 3.0, 1.0, 2.0], **rows})
        >>> base = pd.DataFrame({"feature": "length", "score": [9.0, 8.0, 7.0, 6.0], **rows})
        >>> against_baselines(lay, base, n_boot=100)[["layer", "value", "beats_baseline"]]
           layer  value  beats_baseline
        0      5    1.0           False
    """
    for name, frame, key in (("layers", layers, "layer"), ("baselines", baselines, "feature")):
        if "score" not in frame.columns or "row" not in frame.columns:
            raise ValueError(
                f"{name} must hold out-of-fold scores (columns {key}, row, label, score), not "
                "AUROCs: a paired verdict resamples the scores; make them with layer_oof and "
                "baseline_oof"
            )
    if baselines.empty:
        raise ValueError("no baselines to compare with; run baseline_oof first")
    kw: dict[str, Any] = dict(n_boot=n_boot, ci=ci, seed=seed)
    table = auroc_table(layers, **kw)
    base = auroc_table(baselines, **kw)
    best = base.loc[base["auroc"].idxmax(), "feature"]
    verdicts = best_verdicts(paired_verdicts(layers, baselines, margin=margin, **kw))
    out = table.merge(verdicts, on="layer", how="left")
    out.insert(5, "baseline", str(best))
    return out.rename(columns={"best_baseline_auroc": "baseline_auroc"})
