"""Layer-wise scores of a `DirectionSet`: how each layer's direction separates the classes.

`projection` reads each row's coordinate along the unit direction of every layer.
`separation` scores the two classes per layer (AUROC, cross-validated probe accuracy, Cohen's
d), `correlation` relates projections to a continuous label (Pearson, Spearman; the paper's
reasoning score), each with percentile-bootstrap intervals, as a tidy ``pandas.DataFrame``
with columns ``layer, score, value, ci_low, ci_high``. `cosine_matrix` and `cosine_per_layer`
compare directions across layers and across sets (the paper's cross-dataset comparison).

Memory: projections are computed one layer at a time in float64 (result ``[n, layer]``); the
probe fits scikit-learn on a float64 NumPy copy of one layer's ``[n, d]`` activations; the
bootstrap holds ``[n_boot, n]`` index and value arrays (rank and AUROC work in chunks of about
4M values).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from .cache import Activations
from .directions import DirectionSet

__all__ = [
    "auroc",
    "cohens_d",
    "correlation",
    "cosine_matrix",
    "cosine_per_layer",
    "default_probe",
    "projection",
    "separation",
]

_COLUMNS = ["layer", "score", "value", "ci_low", "ci_high"]
_CHUNK = 4_000_000  # values per bootstrap block


def _layer_cols(
    acts: Activations | Tensor, directions: DirectionSet, allow_transfer: bool
) -> tuple[Tensor, list[int]]:
    """The ``[n, layer, d]`` tensor and, per direction layer, its index on the layer axis."""
    if isinstance(acts, Activations):
        site = directions.site if directions.site in acts.sites else acts.site
        if directions.site and site != directions.site:
            raise ValueError(
                f"activations are from site {site!r} but the directions from "
                f"{directions.site!r}; cache {directions.site!r} or fit directions on {site!r}"
            )
        fps = (acts.model_fingerprint, directions.model_fingerprint)
        if not allow_transfer and all(fps) and fps[0] != fps[1]:
            raise ValueError(
                f"activations come from model {fps[0]} but the directions from {fps[1]}; use "
                "the same model, or pass allow_transfer=True to apply them deliberately"
            )
        missing = [layer for layer in directions.layers if layer not in acts.layers]
        if missing:
            raise ValueError(
                f"directions need layers {missing}, which were not cached (cached: "
                f"{acts.layers}); cache them or use directions.select_layers([...])"
            )
        x, cols = acts[site], [acts.layers.index(layer) for layer in directions.layers]
    else:
        x = acts[:, None] if acts.ndim == 2 else acts
        if x.ndim != 3 or x.shape[1] != len(directions):
            raise ValueError(
                f"a raw tensor must be [n, layer, d] with {len(directions)} layers (one per "
                f"direction), got shape {tuple(acts.shape)}"
            )
        cols = list(range(x.shape[1]))
    if x.shape[-1] != directions.d_model:
        raise ValueError(
            f"activations have width {x.shape[-1]} but the directions have d_model "
            f"{directions.d_model}; use activations from the model and site they were fitted on"
        )
    return x, cols


def projection(
    acts: Activations | Float[Tensor, "n *layer d"],
    directions: DirectionSet,
    *,
    allow_transfer: bool = False,
) -> Float[Tensor, "n layer"]:
    """Float64 coordinate of each row along each layer's unit direction.

    Example:
        >>> ds = DirectionSet(torch.tensor([[0.0, 2.0]]), layers=(0,))
        >>> projection(torch.tensor([[[1.0, 3.0]], [[5.0, -1.0]]]), ds).tolist()
        [[3.0], [-1.0]]
    """
    x, cols = _layer_cols(acts, directions, allow_transfer)
    unit = directions.unit()
    out = torch.empty((x.shape[0], len(cols)), dtype=torch.float64)
    for i, col in enumerate(cols):
        out[:, i] = x[:, col].to("cpu", torch.float64) @ unit[i]
    if not bool(torch.isfinite(out).all()):
        raise ValueError("activations contain NaN or inf; recache with dtype=torch.float32")
    return out


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks along the last axis; tied values share their average rank."""
    n = x.shape[-1]
    order = np.argsort(x, axis=-1, kind="stable")
    xs = np.take_along_axis(x, order, -1)
    idx = np.broadcast_to(np.arange(n), xs.shape)
    starts = np.ones(xs.shape, bool)
    starts[..., 1:] = xs[..., 1:] != xs[..., :-1]
    ends = np.ones(xs.shape, bool)
    ends[..., :-1] = starts[..., 1:]
    first = np.maximum.accumulate(np.where(starts, idx, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, idx, n), -1), axis=-1), -1)
    ranks = np.empty(xs.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, -1)
    return ranks


def _auroc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC along the last axis: P(pos > neg) + P(pos = neg) / 2."""
    n_p, n_n = pos.shape[-1], neg.shape[-1]
    rank_sum = _ranks(np.concatenate([pos, neg], axis=-1))[..., :n_p].sum(-1)
    return (rank_sum - n_p * (n_p + 1) / 2) / (n_p * n_n)


def _cohens_d(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Mean difference over the pooled (n-1 weighted) standard deviation, along the last axis."""
    n_p, n_n = pos.shape[-1], neg.shape[-1]
    mp, mn = pos.mean(-1), neg.mean(-1)
    ss = ((pos - mp[..., None]) ** 2).sum(-1) + ((neg - mn[..., None]) ** 2).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (mp - mn) / np.sqrt(ss / (n_p + n_n - 2))


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc, yc = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (xc * yc).sum(-1) / np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))


def _scores(x: Any, name: str, min_n: int = 1) -> np.ndarray:
    out = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    if out.ndim != 1 or out.shape[0] < min_n:
        raise ValueError(f"{name} must be 1-D with at least {min_n} values, got {out.shape}")
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or inf; drop those rows first")
    return out


def auroc(pos_scores: Any, neg_scores: Any) -> float:
    """Area under the ROC curve of ``pos`` vs ``neg`` scores (rank-based, ties count half).

    Example:
        >>> auroc([3.0, 2.0, 1.0], [1.0, 0.0])
        0.9166666666666666
    """
    return float(_auroc(_scores(pos_scores, "pos_scores"), _scores(neg_scores, "neg_scores")))


def cohens_d(pos_scores: Any, neg_scores: Any) -> float:
    """Cohen's d: ``(mean_pos - mean_neg) / pooled_sd`` (``nan``/``inf`` when the sd is 0).

    Example:
        >>> cohens_d([2.0, 4.0, 6.0], [0.0, 2.0, 4.0])
        1.0
    """
    p, n = _scores(pos_scores, "pos_scores"), _scores(neg_scores, "neg_scores")
    if len(p) + len(n) < 3:
        raise ValueError("Cohen's d needs at least 3 values in all; add rows")
    return float(_cohens_d(p, n))


def _interval(samples: np.ndarray, ci: float) -> tuple[float, float]:
    """Percentile interval of the finite bootstrap replicates (nan if there are none)."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(finite, [(1 - ci) / 2, (1 + ci) / 2])
    return float(lo), float(hi)


def _blocks(n_boot: int, width: int) -> Iterator[slice]:
    step = max(1, _CHUNK // max(width, 1))
    for start in range(0, n_boot, step):
        yield slice(start, min(start + step, n_boot))


def _boot_pair(fn: Any, a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """``fn`` of every bootstrap replicate ``(a[ia[k]], b[ib[k]])``, computed in blocks."""
    out = np.empty(len(ia))
    for s in _blocks(len(ia), ia.shape[1] + ib.shape[1]):
        out[s] = fn(a[ia[s]], b[ib[s]])
    return out


def _row_ranks(x: np.ndarray) -> np.ndarray:
    """`_ranks` of each row of ``[n_boot, n]``, computed in blocks."""
    out = np.empty(x.shape)
    for s in _blocks(x.shape[0], x.shape[1]):
        out[s] = _ranks(x[s])
    return out


def _check_boot(n_boot: int, ci: float) -> None:
    if n_boot < 0 or not 0 < ci < 1:
        raise ValueError(f"need n_boot >= 0 and 0 < ci < 1, got n_boot={n_boot}, ci={ci}")


def _probe_accuracy(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int, probe: Any
) -> tuple[float, np.ndarray]:
    """Mean fold accuracy (as ``cross_val_score(...).mean()``) and out-of-fold correctness."""
    from sklearn.base import clone
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    if groups is not None:
        cv: Any = GroupKFold(folds)
    else:
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    correct, accs = np.zeros(len(y), bool), []
    for train, test in cv.split(x, y, groups):
        hit = clone(probe).fit(x[train], y[train]).predict(x[test]) == y[test]
        correct[test] = hit
        accs.append(hit.mean())
    return float(np.mean(accs)), correct


def default_probe(C: float = 1.0) -> Any:
    """The probe `separation` uses by default: standardise, then logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))


def separation(
    pos: Activations | Float[Tensor, "n *layer d"],
    neg: Activations | Float[Tensor, "m *layer d"],
    directions: DirectionSet,
    *,
    scores: Sequence[str] = ("auroc", "probe_acc", "cohens_d"),
    n_boot: int = 200,
    ci: float = 0.95,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
    cv_folds: int = 5,
    probe: Any = None,
    allow_transfer: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """How well each layer separates ``pos`` from ``neg``, with bootstrap intervals.

    ``auroc`` and ``cohens_d`` score the projections onto the direction (positive means
    ``pos`` projects higher); their intervals resample rows within each class. ``probe_acc``
    is the mean fold accuracy of ``probe`` (default `default_probe`) on the layer's full
    activations, ``GroupKFold`` when ``groups`` (one id per row, ``pos`` rows first) keeps
    related prompts together, else seeded ``StratifiedKFold``; its interval resamples the
    out-of-fold predictions within class, so it covers test-set noise, not refit variance.

    Example:
        >>> ds = DirectionSet(torch.tensor([[1.0]]), layers=(0,))
        >>> pos, neg = torch.tensor([[[2.0]], [[3.0]]]), torch.tensor([[[0.0]], [[1.0]]])
        >>> df = separation(pos, neg, ds, scores=["auroc"], n_boot=10, progress=False)
        >>> df[["layer", "score", "value"]].values.tolist()
        [[0, 'auroc', 1.0]]
    """
    _check_boot(n_boot, ci)
    unknown = sorted(set(scores) - {"auroc", "probe_acc", "cohens_d"})
    if unknown:
        raise ValueError(f"unknown scores {unknown}; choose from auroc, probe_acc, cohens_d")
    pp = projection(pos, directions, allow_transfer=allow_transfer).numpy()
    pn = projection(neg, directions, allow_transfer=allow_transfer).numpy()
    n_p, n_n = len(pp), len(pn)
    if n_p == 0 or n_n == 0:
        raise ValueError(f"both classes need rows, got {n_p} positive and {n_n} negative")
    rng = np.random.default_rng(seed)
    idx_p, idx_n = rng.integers(0, n_p, (n_boot, n_p)), rng.integers(0, n_n, (n_boot, n_n))
    gid = None
    if "probe_acc" in scores:
        gid = _check_cv(n_p, n_n, groups, cv_folds)
        xp, cols_p = _layer_cols(pos, directions, allow_transfer)
        xn, cols_n = _layer_cols(neg, directions, allow_transfer)
        probe = probe if probe is not None else default_probe()
    y = np.r_[np.ones(n_p, int), np.zeros(n_n, int)]
    rows = []
    for i, layer in enumerate(tqdm(directions.layers, desc="scoring", disable=not progress)):
        a, b = pp[:, i], pn[:, i]
        for score in scores:
            if score == "probe_acc":
                x = torch.cat([xp[:, cols_p[i]], xn[:, cols_n[i]]]).to(torch.float64).numpy()
                value, hit = _probe_accuracy(x, y, gid, cv_folds, seed, probe)
                boot = (hit[idx_p].sum(1) + hit[n_p + idx_n].sum(1)) / (n_p + n_n)
            else:
                fn = _auroc if score == "auroc" else _cohens_d
                value = float(fn(a, b))
                boot = _boot_pair(fn, a, b, idx_p, idx_n)
            rows.append((layer, score, value, *_interval(boot, ci)))
    return pd.DataFrame(rows, columns=_COLUMNS)


def _check_cv(n_p: int, n_n: int, groups: Sequence[Any] | None, folds: int) -> np.ndarray | None:
    if folds < 2:
        raise ValueError(f"cv_folds must be >= 2, got {folds}")
    if groups is None:
        if min(n_p, n_n) < folds:
            raise ValueError(
                f"probe_acc with {folds} folds needs >= {folds} rows per class, got {n_p} and "
                f"{n_n}; lower cv_folds or add rows"
            )
        return None
    gid = np.asarray(groups)
    if gid.shape != (n_p + n_n,):
        raise ValueError(f"groups needs one id per row (pos rows first): {n_p + n_n} ids")
    if len(np.unique(gid)) < folds:
        raise ValueError(f"{len(np.unique(gid))} groups cannot fill {folds} folds; lower cv_folds")
    return gid


def cosine_matrix(
    a: DirectionSet, b: DirectionSet | None = None, *, allow_transfer: bool = False
) -> Float[Tensor, "layer_a layer_b"]:
    """Cosine between every layer of ``a`` and every layer of ``b`` (default ``a``).

    Example:
        >>> ds = DirectionSet(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), layers=(0, 1))
        >>> cosine_matrix(ds).round(decimals=4).tolist()
        [[1.0, 0.7071], [0.7071, 1.0]]
    """
    b = a if b is None else b
    _same_space(a, b, allow_transfer)
    return a.unit() @ b.unit().T


def cosine_per_layer(
    a: DirectionSet, b: DirectionSet, *, allow_transfer: bool = False
) -> Float[Tensor, " layer"]:
    """Cosine between the two sets' directions at each shared layer (same layers required).

    Example:
        >>> a = DirectionSet(torch.tensor([[1.0, 0.0]]), layers=(3,))
        >>> b = DirectionSet(torch.tensor([[0.0, 2.0]]), layers=(3,))
        >>> cosine_per_layer(a, b).tolist()
        [0.0]
    """
    _same_space(a, b, allow_transfer)
    if a.layers != b.layers:
        raise ValueError(
            f"the sets have layers {a.layers} and {b.layers}; restrict both to the same "
            "layers with .select_layers([...])"
        )
    return (a.unit() * b.unit()).sum(1)


def _same_space(a: DirectionSet, b: DirectionSet, allow_transfer: bool) -> None:
    if a.d_model != b.d_model:
        raise ValueError(f"the sets have d_model {a.d_model} and {b.d_model}; compare like sets")
    fps = (a.model_fingerprint, b.model_fingerprint)
    if not allow_transfer and all(fps) and fps[0] != fps[1]:
        raise ValueError(
            f"the sets come from different models ({fps[0]}, {fps[1]}); pass "
            "allow_transfer=True to compare them deliberately"
        )


def correlation(
    acts: Activations | Float[Tensor, "n *layer d"],
    directions: DirectionSet,
    label: Any,
    *,
    n_boot: int = 200,
    ci: float = 0.95,
    seed: int = 0,
    allow_transfer: bool = False,
) -> pd.DataFrame:
    """Pearson and Spearman correlation of each layer's projection with a continuous label.

    Intervals resample rows (projection and label together). Spearman is the Pearson
    correlation of average ranks; a constant input gives ``nan``.

    Example:
        >>> ds = DirectionSet(torch.tensor([[1.0]]), layers=(0,))
        >>> x = torch.tensor([[[1.0]], [[2.0]], [[3.0]], [[5.0]]])
        >>> df = correlation(x, ds, [1.0, 2.0, 3.0, 4.0], n_boot=10)
        >>> df["value"].round(4).tolist()
        [0.9827, 1.0]
    """
    _check_boot(n_boot, ci)
    proj = projection(acts, directions, allow_transfer=allow_transfer).numpy()
    y = _scores(label, "label", min_n=3)
    if len(y) != len(proj):
        raise ValueError(f"got {len(y)} labels for {len(proj)} rows; pass one label per row")
    idx = np.random.default_rng(seed).integers(0, len(y), (n_boot, len(y)))
    y_boot = y[idx]
    y_rank_boot = _row_ranks(y_boot)
    rows = []
    for i, layer in enumerate(directions.layers):
        x, x_boot = proj[:, i], proj[idx, i]
        rows.append(
            (layer, "pearson", float(_pearson(x, y)), *_interval(_pearson(x_boot, y_boot), ci))
        )
        x_rank_boot = _row_ranks(x_boot)
        value = float(_pearson(_ranks(x), _ranks(y)))
        rows.append((layer, "spearman", value, *_interval(_pearson(x_rank_boot, y_rank_boot), ci)))
    return pd.DataFrame(rows, columns=_COLUMNS)
