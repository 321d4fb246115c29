"""Out-of-fold scoring shared by the confound readers, the layers and the designs.

Every reader is fitted on the training folds and scores the held-out fold; a `Prep` (e.g. a
fold-wise residualisation, `liref_lens.designs.residualize`) may transform the features of
both, fitted on the training rows only. The frames have one row per reader and item:
``<key>, row, label, fold, score, threshold`` (``row``: positive items first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .cache import Activations
from .scores import _auroc

Folds = list[tuple[np.ndarray, np.ndarray]]
#: fold-wise preparation of a feature matrix: (x, train rows, test rows) -> (x_train, x_test)
Prep = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _folds(y: np.ndarray, cv_folds: int, seed: int) -> Folds:
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


def _labels(n_pos: int, n_neg: int) -> np.ndarray:
    return np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]


def _midpoint(score: np.ndarray, y: np.ndarray) -> float:
    """The cut between the two classes: the midpoint of their mean scores."""
    return float((score[y == 1].mean() + score[y == 0].mean()) / 2)


def _counts(ids: Sequence[Sequence[int]], vocab: int) -> Any:
    from scipy.sparse import csr_matrix

    rows = np.repeat(np.arange(len(ids)), [len(x) for x in ids])
    cols = np.fromiter((t for x in ids for t in x), dtype=np.int64, count=len(rows))
    if len(cols) and (cols.min() < 0 or cols.max() >= vocab):
        raise ValueError(f"token ids must lie in 0..{vocab - 1}; pass the model's vocab size")
    data = np.ones(len(rows), dtype=np.float64)
    return csr_matrix((data, (rows, cols)), shape=(len(ids), vocab))


def _frame(key: str, name: Any, y: np.ndarray, fold: np.ndarray, score: np.ndarray,
           threshold: np.ndarray) -> pd.DataFrame:  # fmt: skip
    return pd.DataFrame({key: [name] * len(y), "row": np.arange(len(y)), "label": y,
                         "fold": fold, "score": score, "threshold": threshold})  # fmt: skip


def _oof_length(lengths: np.ndarray, y: np.ndarray, folds: Folds, prep: Prep | None) -> tuple:
    score, fold, cut = np.empty(len(y)), np.empty(len(y), int), np.empty(len(y))
    for k, (train, test) in enumerate(folds):
        xtr, xte = (
            prep(lengths[:, None], train, test)
            if prep
            else (lengths[train, None], lengths[test, None])
        )
        score[test], fold[test] = xte[:, 0], k
        cut[test] = _midpoint(xtr[:, 0], y[train])
    sign = 1.0 if _auroc(score[y == 1], score[y == 0]) >= 0.5 else -1.0
    return fold, sign * score, sign * cut


def _oof_bag(ids: Sequence[Sequence[int]], vocab: int, y: np.ndarray, folds: Folds, C: float,
             prep: Prep | None) -> tuple:  # fmt: skip
    from sklearn.linear_model import LogisticRegression

    x = _counts(ids, vocab)
    if prep is not None:  # dense, on the tokens that occur (an absent token's column stays 0)
        x = x[:, np.unique(x.nonzero()[1])].toarray()
    score, fold, cut = np.empty(len(y)), np.empty(len(y), int), np.empty(len(y))
    for k, (train, test) in enumerate(folds):
        xtr, xte = prep(x, train, test) if prep else (x[train], x[test])
        clf = LogisticRegression(C=C, max_iter=2000).fit(xtr, y[train])
        score[test], fold[test] = clf.decision_function(xte), k
        cut[test] = _midpoint(clf.decision_function(xtr), y[train])
    return fold, score, cut


def _baseline_oof(pos_ids: Sequence[Sequence[int]], neg_ids: Sequence[Sequence[int]], vocab: int,
                  folds: Folds, C: float, prep: Prep | None = None) -> pd.DataFrame:  # fmt: skip
    ids = [*pos_ids, *neg_ids]
    y = _labels(len(pos_ids), len(neg_ids))
    lengths = np.array([len(x) for x in ids], dtype=np.float64)
    return pd.concat(
        [
            _frame("feature", "length", y, *_oof_length(lengths, y, folds, prep)),
            _frame("feature", "bag_of_tokens", y, *_oof_bag(ids, vocab, y, folds, C, prep)),
        ],
        ignore_index=True,
    )


def _layer_oof(pos: Activations, neg: Activations, site: str | None, folds: Folds,
               prep: Prep | None = None, progress: bool = False) -> pd.DataFrame:  # fmt: skip
    site = site or pos.site
    if pos.layers != neg.layers:
        raise ValueError(f"pos and neg were cached at different layers: {pos.layers}, {neg.layers}")
    y = _labels(len(pos), len(neg))
    frames = []
    for layer in tqdm(pos.layers, desc="held-out scores", disable=not progress):
        x = torch.cat([pos.at_layer(layer, site), neg.at_layer(layer, site)]).double().numpy()
        score, fold, cut = np.empty(len(y)), np.empty(len(y), int), np.empty(len(y))
        for k, (train, test) in enumerate(folds):
            xtr, xte = prep(x, train, test) if prep else (x[train], x[test])
            tr = y[train] == 1
            direction = xtr[tr].mean(0) - xtr[~tr].mean(0)
            score[test], fold[test] = xte @ direction, k
            cut[test] = _midpoint(xtr @ direction, y[train])
        frames.append(_frame("layer", layer, y, fold, score, cut))
    return pd.concat(frames, ignore_index=True)
