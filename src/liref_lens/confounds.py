"""Confound controls: can a trivial feature of the prompt separate the classes as well?

A direction that separates two prompt sets is only interesting if the separation is not
something a trivial reader of the prompt could do. `confound_baselines` scores two such
readers on the same prompts, with the same folds as the layers:

- ``length``: the prompt length in tokens (AUROC of the raw length, oriented towards the
  better side, so the baseline is never weaker than it could be);
- ``bag_of_tokens``: a logistic regression on token counts (no order, no model), scored by
  its out-of-fold decision values under seeded ``StratifiedKFold``.

`layer_cv_auroc` scores each layer's difference-in-means direction the same way: fitted on the
training folds, its projections on the held-out fold pooled into one out-of-fold AUROC. The
in-sample AUROC of `liref_lens.separation` fits the direction on the rows it scores, so it is
not comparable to a held-out baseline. `against_baselines` adds, per layer, the best baseline
and ``beats_baseline``: the layer's interval lower bound is above the best baseline's AUROC.

Memory: the token-count matrix is sparse (``n x vocab``, non-zeros only); the layer scores hold
one float64 copy of one layer's ``[n, d]`` activations at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .cache import Activations
from .model import LensModel
from .scores import _auroc, _boot_pair, _check_boot, _interval

__all__ = [
    "against_baselines",
    "bag_of_tokens_auroc",
    "confound_baselines",
    "layer_cv_auroc",
    "length_auroc",
    "oof_auroc",
]

_COLUMNS = ["feature", "auroc", "ci_low", "ci_high"]


def _folds(y: np.ndarray, cv_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    if cv_folds < 2:
        raise ValueError(f"cv_folds must be >= 2, got {cv_folds}")
    least = int(min((y == 1).sum(), (y == 0).sum()))
    if least < cv_folds:
        raise ValueError(
            f"{cv_folds} folds need >= {cv_folds} rows per class, got {least}; lower cv_folds "
            "or add prompts"
        )
    cv = StratifiedKFold(cv_folds, shuffle=True, random_state=seed)
    return list(cv.split(np.zeros(len(y)), y))


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


def _counts(ids: Sequence[Sequence[int]], vocab: int) -> Any:
    from scipy.sparse import csr_matrix

    rows = np.repeat(np.arange(len(ids)), [len(x) for x in ids])
    cols = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=len(rows))
    if len(cols) and (cols.min() < 0 or cols.max() >= vocab):
        raise ValueError(f"token ids must lie in 0..{vocab - 1}; pass the model's vocab size")
    data = np.ones(len(rows), dtype=np.float64)
    return csr_matrix((data, (rows, cols)), shape=(len(ids), vocab))


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
    from sklearn.linear_model import LogisticRegression

    x = _counts([*pos_ids, *neg_ids], vocab)
    y = np.r_[np.ones(len(pos_ids), int), np.zeros(len(neg_ids), int)]
    oof = np.empty(len(y))
    for train, test in _folds(y, cv_folds, seed):
        clf = LogisticRegression(C=C, max_iter=2000).fit(x[train], y[train])
        oof[test] = clf.decision_function(x[test])
    return oof_auroc(oof[y == 1], oof[y == 0], n_boot=n_boot, ci=ci, seed=seed)


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
    prepends one).

    Example:
        >>> df = confound_baselines(lm, ["w1 w2 w3 w4"] * 5, ["w5"] * 5, n_boot=0)
        >>> df[["feature", "auroc"]].values.tolist()
        [['length', 1.0], ['bag_of_tokens', 1.0]]
    """
    pos_ids, neg_ids = lm.encode(list(pos_prompts)), lm.encode(list(neg_prompts))
    kw: dict[str, Any] = dict(n_boot=n_boot, ci=ci, seed=seed)
    vocab = int(lm.cfg.d_vocab)
    rows = [
        ("length", *length_auroc(pos_ids, neg_ids, **kw)),
        (
            "bag_of_tokens",
            *bag_of_tokens_auroc(pos_ids, neg_ids, vocab, cv_folds=cv_folds, C=C, **kw),
        ),
    ]
    return pd.DataFrame(rows, columns=_COLUMNS)


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

    Per fold the direction is ``mean(pos_train) - mean(neg_train)`` (float64) and the held-out
    rows are scored by their projection onto it; the folds are those of
    `confound_baselines` for the same ``seed`` and class sizes. Returns columns ``layer,
    score ("cv_auroc"), value, ci_low, ci_high``.

    Example:
        >>> from liref_lens import cache_activations
        >>> pos = cache_activations(lm, [f"w1 w{i}" for i in range(5)], layers=[1], progress=False)
        >>> neg = cache_activations(lm, [f"w9 w{i}" for i in range(5)], layers=[1], progress=False)
        >>> df = layer_cv_auroc(pos, neg, n_boot=0, progress=False)
        >>> df[["layer", "score"]].values.tolist(), bool(0.0 <= df["value"][0] <= 1.0)
        ([[1, 'cv_auroc']], True)
    """
    site = site or pos.site
    if pos.layers != neg.layers:
        raise ValueError(f"pos and neg were cached at different layers: {pos.layers}, {neg.layers}")
    y = np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]
    folds = _folds(y, cv_folds, seed)
    rows = []
    for layer in tqdm(pos.layers, desc="held-out AUROC", disable=not progress):
        x = torch.cat([pos.at_layer(layer, site), neg.at_layer(layer, site)]).double().numpy()
        oof = np.empty(len(y))
        for train, test in folds:
            tr = y[train] == 1
            direction = x[train][tr].mean(0) - x[train][~tr].mean(0)
            oof[test] = x[test] @ direction
        rows.append(
            (
                layer,
                "cv_auroc",
                *oof_auroc(oof[y == 1], oof[y == 0], n_boot=n_boot, ci=ci, seed=seed),
            )
        )
    return pd.DataFrame(rows, columns=["layer", "score", "value", "ci_low", "ci_high"])


def against_baselines(layers: pd.DataFrame, baselines: pd.DataFrame) -> pd.DataFrame:
    """Each layer's held-out AUROC next to the best trivial baseline, with the verdict.

    ``beats_baseline`` is True where the layer's ``ci_low`` is above the best baseline's
    AUROC (point value): the direction separates better than any trivial reader could.

    Example:
        >>> lay = pd.DataFrame({"layer": [1, 2], "score": "cv_auroc", "value": [0.9, 0.99],
        ...                     "ci_low": [0.85, 0.97], "ci_high": [0.95, 1.0]})
        >>> base = pd.DataFrame({"feature": ["length", "bag_of_tokens"], "auroc": [0.7, 0.95],
        ...                      "ci_low": [0.6, 0.9], "ci_high": [0.8, 1.0]})
        >>> against_baselines(lay, base)["beats_baseline"].tolist()
        [False, True]
    """
    if baselines.empty:
        raise ValueError("no baselines to compare with; run confound_baselines first")
    best = baselines.loc[baselines["auroc"].idxmax()]
    out = layers.copy()
    out["baseline"] = str(best["feature"])
    out["baseline_auroc"] = float(best["auroc"])
    out["beats_baseline"] = out["ci_low"] > float(best["auroc"])
    return out
