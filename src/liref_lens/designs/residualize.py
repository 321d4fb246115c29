"""Residualisation: remove nuisance features from the activations linearly, then score.

The nuisance features of each item (`nuisance_matrix`: numeric columns as they are,
categorical ones one-hot) are removed from the features a reader sees, **fitted on the
training folds only** and applied to the held-out fold, so a held-out score never sees its
own rows' nuisance fit:

- ``"lstsq"``: ordinary least squares; with ``Z`` the nuisance features plus an intercept,
  ``B = argmin ||X_train - Z_train B||`` and ``X - Z B`` for both folds (the part of the
  activations a linear function of the nuisance explains is gone);
- ``"leace"``: LEACE concept erasure (the ``concept-erasure`` package, ``LeaceEraser``, with
  its default covariance shrinkage) fitted on the training fold: the smallest affine change of
  ``X`` after which no linear classifier predicts the nuisance better than a constant (it
  uses ``X`` alone at test time). It erases every direction that co-varies with the
  nuisance, so where the label itself co-varies with the nuisance (longer reasoning
  questions) it removes label information too; ``lstsq`` keeps the part of a signal the
  nuisance does not predict. The two answer different questions; both are conservative.

The trivial readers are residualised the same way: the length reader reads its residualised
length (0 when the length is a nuisance column: it then scores 0.5), the bag of tokens its
residualised token counts (dense, over the tokens that occur). `residualized` returns the
held-out design on those features. Entries whose magnitude is below ``1e-9`` times the
largest input value are set to 0, so a feature removed exactly does not rank by rounding.

Memory: ``lstsq`` solves one ``[n_train, k]`` least-squares problem per fold and layer;
``leace`` eigendecomposes a ``d x d`` covariance per fold and layer (``d = d_model``, or the
number of distinct tokens for the bag of tokens).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._oof import Prep, _baseline_oof, _folds, _layer_oof
from ..scores import _auroc
from .contrast import Contrast, DesignResult, _evaluate

__all__ = ["METHODS", "nuisance_matrix", "residualizer", "residualized"]

METHODS = ("lstsq", "leace")


def nuisance_matrix(meta: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """The ``[n, k]`` float64 nuisance features: numeric columns as they are, every other
    column one-hot (one indicator per value; the intercept is added by the residualiser).

    Example:
        >>> meta = pd.DataFrame({"token_length": [3, 5, 4], "source": ["a", "b", "a"]})
        >>> nuisance_matrix(meta, ["token_length", "source"]).tolist()
        [[3.0, 1.0, 0.0], [5.0, 0.0, 1.0], [4.0, 1.0, 0.0]]
    """
    if not columns:
        raise ValueError("name at least one nuisance column to residualise on")
    missing = [c for c in columns if c not in meta.columns]
    if missing:
        raise ValueError(f"no item columns {missing}; the metadata holds {list(meta.columns)}")
    parts = []
    for col in columns:
        x = meta[col]
        if pd.api.types.is_bool_dtype(x) or not pd.api.types.is_numeric_dtype(x):
            parts.append(pd.get_dummies(x.astype(str)).to_numpy(np.float64))
        else:
            v = x.to_numpy(np.float64)
            if not np.isfinite(v).all():
                raise ValueError(f"nuisance column {col!r} has NaN or inf; fill or drop them")
            parts.append(v[:, None])
    return np.concatenate(parts, axis=1)


def _tidy(out: np.ndarray, x: np.ndarray) -> np.ndarray:
    scale = float(np.abs(x).max()) if x.size else 0.0
    out[np.abs(out) <= 1e-9 * scale] = 0.0
    return out


def _leace() -> Any:
    try:
        with warnings.catch_warnings():
            # concept-erasure 0.2 decorates helpers we do not use (groupby, optimal
            # transport) with torch.jit.script, which torch 2.10+ deprecates at import
            warnings.filterwarnings(
                "ignore", r"`torch.jit.script` is deprecated", DeprecationWarning
            )
            from concept_erasure import LeaceEraser
    except ImportError as err:
        raise ImportError(
            "method='leace' needs the concept-erasure package: pip install concept-erasure "
            "(or use method='lstsq', which needs nothing more)"
        ) from err
    return LeaceEraser


def residualizer(z: np.ndarray, method: str = "lstsq") -> Prep:
    """A fold-wise residualiser of features ``x`` on nuisance features ``z`` (rows as ``x``):
    ``prep(x, train, test) -> (x_train, x_test)``, fitted on the ``train`` rows only.

    Example:
        >>> z = np.array([[1.0], [2.0], [3.0], [4.0]])
        >>> x = np.c_[2 * z[:, 0] + 1, [1.0, -1.0, 1.0, -1.0]]  # column 0 is all nuisance
        >>> xtr, xte = residualizer(z)(x, np.array([0, 1, 2]), np.array([3]))
        >>> xte[:, 0].tolist()
        [0.0]
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    z = np.asarray(z, dtype=np.float64)
    if method == "lstsq":
        design = np.c_[np.ones(len(z)), z]

        def prep(x: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple:
            coef = np.linalg.lstsq(design[train], x[train], rcond=None)[0]
            return _tidy(x[train] - design[train] @ coef, x), _tidy(
                x[test] - design[test] @ coef, x
            )

        return prep
    eraser_cls = _leace()

    def prep_leace(x: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple:
        import torch

        xt, zt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(z)
        # the package's covariance shrinkage degenerates for one feature (the length
        # reader): it then returns the identity; a single column is erased unshrunk
        eraser = eraser_cls.fit(xt[train], zt[train], shrinkage=x.shape[1] > 1)
        mean = eraser.bias  # centre on the training mean, so an erased column reads 0
        out = [(eraser(xt[rows]) - mean).numpy() for rows in (train, test)]
        return _tidy(out[0], x), _tidy(out[1], x)

    return prep_leace


def _warn_if_separating(c: Contrast, on: Sequence[str]) -> None:
    """Warn when a nuisance column alone separates the classes: removing it linearly then
    extrapolates between ranges no item shares (and matching is impossible)."""
    for col in on:
        if col not in c.meta.columns:
            continue  # nuisance_matrix names the missing column
        x = c.meta[col]
        pos, neg = x.iloc[: c.n_pos], x.iloc[c.n_pos :]
        if pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x):
            a = float(_auroc(pos.to_numpy(float), neg.to_numpy(float)))
            separates = a in (0.0, 1.0)
            what = f"AUROC {a:.3f}; positive {pos.min():g}-{pos.max():g}, negative " + (
                f"{neg.min():g}-{neg.max():g}"
            )
        else:
            separates = not set(pos.astype(str)) & set(neg.astype(str))
            what = "no value in common"
        if separates:
            warnings.warn(
                f"{c.name}: {col} alone separates the classes ({what}); residualising on it "
                "extrapolates a linear fit between ranges no item shares, so read the result "
                "as a model-based adjustment, not a comparison of like items",
                UserWarning,
                stacklevel=3,
            )


def residualized(
    c: Contrast,
    on: Sequence[str] = ("token_length",),
    *,
    method: str = "lstsq",
    cv_folds: int = 5,
    C: float = 1.0,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
    margin: float = 0.0,
) -> DesignResult:
    """The held-out design after removing the item columns ``on`` from every reader's
    features, fold by fold (see the module docstring for ``method``).

    Example:
        >>> pos = [f"Q: w{i} A:" for i in range(12)]  # as long as the negatives, in tokens
        >>> c = Contrast.read(lm, "toy", pos, [f"w{i} w{i + 1} w9" for i in range(12)], layers=[1])
        >>> r = residualized(c, ["token_length"], cv_folds=3, n_boot=0)
        >>> r.design, float(r.baselines.set_index("feature").loc["length", "auroc"])
        ('residualized on token_length (lstsq)', 0.5)
    """
    _warn_if_separating(c, on)
    prep = residualizer(nuisance_matrix(c.meta, list(on)), method)
    folds = _folds(c.labels, cv_folds, seed)
    lay = _layer_oof(c.pos, c.neg, None, folds, prep)
    base = _baseline_oof(c.pos_ids, c.neg_ids, c.vocab, folds, C, prep)
    design = f"residualized on {', '.join(on)} ({method})"
    return _evaluate(design, c.name, lay, base, n_boot=n_boot, ci=ci, seed=seed, margin=margin)
